//! Arrow keys and friends: each moves the focused pane's own cursor or scroll position (or the
//! help overlay's), within bounds at once.

use super::{App, Command, Effect, Pane};

/// An arrow-like command as `(dx, dy)`; home and end are jumps, handled apart.
fn step(c: Command) -> (isize, isize) {
    match c {
        Command::Left => (-1, 0),
        Command::Right => (1, 0),
        Command::Up => (0, -1),
        Command::Down => (0, 1),
        Command::PageUp => (0, -10),
        Command::PageDown => (0, 10),
        _ => (0, 0),
    }
}

impl App {
    pub(super) fn movement(&mut self, c: Command) -> Vec<Effect> {
        let (dx, dy) = step(c);
        if self.show_help {
            self.panes.help.scroll.by(dy);
            return vec![];
        }
        match self.focus {
            Pane::Answer => self.token_step(c, if dx != 0 { dx } else { dy }),
            Pane::Heatmap => self.heatmap_step(c, dx, dy),
            Pane::Lens => {
                self.token_step(c, dx);
                let rows = self.lens_rows();
                self.panes.lens.move_row(dy, rows);
            }
            Pane::Sample => {
                let s = &mut self.panes.sample;
                s.follow = false;
                match c {
                    Command::Home => s.scroll.home(),
                    Command::End => s.scroll.end(),
                    _ => s.scroll.by(dy),
                }
            }
            Pane::Attribution => {
                self.token_step(c, dx);
                self.move_source(dy);
            }
            Pane::Ablation => {
                let s = &mut self.panes.ablation.scroll;
                match c {
                    Command::Home => s.home(),
                    Command::End => s.end(),
                    _ => s.by(dy),
                }
            }
        }
        vec![]
    }

    pub(super) fn move_token(&mut self, by: isize) -> Vec<Effect> {
        let n = self.view.answer.tokens.len();
        self.panes.answer.move_by(by, n);
        vec![]
    }

    /// Home and end jump to the first and last answer token; other keys move by `by`.
    fn token_step(&mut self, c: Command, by: isize) {
        let n = self.view.answer.tokens.len();
        let a = &mut self.panes.answer;
        match c {
            Command::Home => a.move_by(isize::MIN, n),
            Command::End => a.move_by(isize::MAX, n),
            _ => a.move_by(by, n),
        }
    }

    /// Up/down move a layer (page: five), left/right a head; home and end jump to the first
    /// head and to the MLP column.
    fn heatmap_step(&mut self, c: Command, dx: isize, dy: isize) {
        let dims = self.dims();
        let h = &mut self.panes.heatmap;
        match c {
            Command::Home | Command::End => h.jump_to_column(c == Command::End, dims),
            Command::PageUp => h.move_by(-5, 0, dims),
            Command::PageDown => h.move_by(5, 0, dims),
            _ => h.move_by(dy, dx, dims),
        }
    }

    fn move_source(&mut self, by: isize) {
        let n = self.source_count();
        if self.panes.attribution.move_by(by, n) {
            self.panes.sample.follow = true;
        }
    }
}
