//! Enters the explorer's terminal mode (raw mode, alternate screen) and panics, keeping the guard
//! alive so that only the panic hook can put the terminal back. `tests/suite/tui_tmux.rs` runs it in
//! tmux and checks the terminal is restored and the panic message readable on the main screen.

fn main() {
    let guard = headscope::ui::terminal::enter().expect("a terminal");
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::mem::forget(guard);
    panic!("deliberate panic inside the explorer's terminal");
}
