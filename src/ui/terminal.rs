//! Terminal hygiene: raw mode and the alternate screen on entry, and always restored on the way
//! out — on quit, on error (the [`TerminalGuard`] drops), on panic (the hook), and on SIGTERM,
//! SIGINT or SIGHUP (a flag the event loop polls, so it exits through the same path).

use std::io::{stdout, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use anyhow::{Context, Result};
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::cursor::{Hide, Show};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::Terminal;

use super::worker::THREAD_NAME;

pub type Tui = Terminal<CrosstermBackend<Stdout>>;

/// Whether the terminal is in raw mode on the alternate screen now.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static SIGNALLED: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

/// Restores the terminal when dropped.
pub struct TerminalGuard {
    pub terminal: Tui,
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Raw mode, the alternate screen, a hidden cursor; the panic hook and signal handlers installed.
pub fn enter() -> Result<TerminalGuard> {
    install_panic_hook();
    install_signal_handlers();
    enable_raw_mode().context("cannot switch the terminal to raw mode")?;
    ACTIVE.store(true, Ordering::SeqCst);
    let setup = execute!(stdout(), EnterAlternateScreen, Hide)
        .context("cannot enter the alternate screen")
        .and_then(|_| {
            Terminal::new(CrosstermBackend::new(stdout())).context("cannot open the terminal")
        });
    match setup {
        Ok(mut terminal) => {
            let _ = terminal.clear();
            Ok(TerminalGuard { terminal })
        }
        Err(e) => {
            restore();
            Err(e)
        }
    }
}

/// Leaves raw mode and the alternate screen and shows the cursor; safe to call twice.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = execute!(stdout(), LeaveAlternateScreen, Show);
        let _ = disable_raw_mode();
    }
}

/// Restore the terminal before the default hook prints the panic, so it is readable. Panics on
/// the worker thread are caught there and shown as a failed job, so they leave the screen alone.
fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some(THREAD_NAME) && ACTIVE.load(Ordering::SeqCst) {
                return;
            }
            restore();
            previous(info);
        }));
    });
}

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    SIGNALLED.store(true, Ordering::SeqCst);
}

/// SIGTERM, SIGINT and SIGHUP set a flag the event loop polls; it then quits normally.
pub fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGHUP, handler);
    }
}

/// Has a termination signal arrived?
pub fn signalled() -> bool {
    SIGNALLED.load(Ordering::SeqCst)
}
