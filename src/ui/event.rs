//! The event loop: a tokio current-thread `select!` over terminal input (crossterm's
//! `EventStream`), worker messages, the ablation debounce timer and a slow tick that notices
//! termination signals. Each input becomes an [`Action`], `update` applies it, the returned
//! effects are carried out, and the screen is redrawn only when something changed.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Result};
use futures::{Stream, StreamExt};
use ratatui::backend::Backend;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::Event;
use ratatui::layout::Rect;
use ratatui::widgets::Widget;
use ratatui::Terminal;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{Instant, MissedTickBehavior};

use super::app::{Action, App, Command, Job, WorkerMsg, DEBOUNCE_MS};
use super::effects::{drain, Carrier};
use super::export::{write_screenshot, ExportFormat, Palette};
use super::keys::KeyMap;
use super::panes::Screen;
use super::terminal::signalled;
use super::theme::Theme;
use super::worker::Worker;

/// What the loop needs besides the state: how to draw, which keys, where screenshots go.
#[derive(Clone, Debug)]
pub struct Context {
    pub theme: Theme,
    pub keys: KeyMap,
    pub export_dir: PathBuf,
    pub export_formats: Vec<ExportFormat>,
}

impl Context {
    pub fn palette(&self) -> Palette {
        Palette::from_theme(self.theme.fg, self.theme.bg)
    }
}

/// The screen as it is drawn, into a fresh buffer of `width × height`.
pub fn render_buffer(app: &App, ctx: &Context, width: u16, height: u16) -> Buffer {
    let area = Rect::new(0, 0, width, height);
    let mut buf = Buffer::empty(area);
    Screen::new(app, &ctx.theme, &ctx.keys).render(area, &mut buf);
    buf
}

/// Writes the current screen (the same render the terminal shows) to the export directory.
pub fn export_screen(
    app: &App,
    ctx: &Context,
    width: u16,
    height: u16,
) -> Result<Vec<PathBuf>, String> {
    let buf = render_buffer(app, ctx, width, height);
    write_screenshot(
        &buf,
        &ctx.palette(),
        &ctx.export_dir,
        &ctx.export_formats,
        &super::export::timestamp_stem(),
    )
    .map_err(|e| e.to_string())
}

/// Effects as the terminal carries them out: the debounce is a wall-clock timer (re-armed once
/// the queue is drained), an export is the terminal's size.
struct TerminalSide<'a, B: Backend> {
    terminal: &'a Terminal<B>,
    ctx: &'a Context,
    worker: &'a mut Worker,
    rearm: bool,
}

impl<B: Backend> Carrier for TerminalSide<'_, B> {
    fn submit(&mut self, job: Job) {
        self.worker.submit(job);
    }

    fn cancel(&mut self) {
        self.worker.cancel();
    }

    fn debounce(&mut self) -> Option<Action> {
        self.rearm = true;
        None
    }

    fn export(&mut self, app: &App) -> Result<Result<Vec<PathBuf>, String>> {
        let size = self
            .terminal
            .size()
            .map_err(|e| anyhow!("terminal size: {e}"))?;
        Ok(export_screen(app, self.ctx, size.width, size.height))
    }
}

/// Runs until the user quits (or a signal arrives, or input ends).
pub async fn run_loop<B, S>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    ctx: &Context,
    worker: &mut Worker,
    rx: &mut UnboundedReceiver<WorkerMsg>,
    mut events: S,
) -> Result<()>
where
    B: Backend,
    S: Stream<Item = std::io::Result<Event>> + Unpin,
{
    let debounce = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(debounce);
    let mut debounce_armed = false;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut pending: VecDeque<Action> = VecDeque::from([Action::Start]);
    let mut dirty = true;
    loop {
        let mut side = TerminalSide {
            terminal,
            ctx,
            worker,
            rearm: false,
        };
        if drain(app, &mut pending, &mut side)? > 0 {
            dirty = true;
        }
        if side.rearm {
            debounce
                .as_mut()
                .reset(Instant::now() + Duration::from_millis(DEBOUNCE_MS));
            debounce_armed = true;
        }
        if app.quit {
            return Ok(());
        }
        if dirty {
            terminal
                .draw(|f| f.render_widget(Screen::new(app, &ctx.theme, &ctx.keys), f.area()))
                .map_err(|e| anyhow!("cannot draw: {e}"))?;
            dirty = false;
        }
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(Event::Key(key))) => {
                    if let Some(c) = ctx.keys.command(&key) {
                        pending.push_back(Action::Command(c));
                    }
                }
                // Re-layout at once; `draw` resizes the buffers to the new size.
                Some(Ok(Event::Resize(..))) => dirty = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(anyhow!("terminal input: {e}")),
                None => return Ok(()),
            },
            msg = rx.recv() => match msg {
                Some(m) => {
                    pending.push_back(Action::Worker(m));
                    // Take everything queued, then draw once.
                    while let Ok(m) = rx.try_recv() {
                        pending.push_back(Action::Worker(m));
                    }
                }
                None => return Err(anyhow!("the worker thread stopped")),
            },
            _ = &mut debounce, if debounce_armed => {
                debounce_armed = false;
                pending.push_back(Action::DebounceElapsed);
            }
            _ = tick.tick() => {
                if signalled() {
                    pending.push_back(Action::Command(Command::Quit));
                }
            }
        }
    }
}
