//! A vertical scroll position that knows how far it can go. Only the pane's renderer knows how
//! many rows its content wraps to, so it records the bound each time it draws (as gitui's
//! vertical scroll does); key presses then clamp at once, and `↑` after scrolling far past the
//! end moves the view at the first press.

use std::cell::Cell;

/// The first row shown, and the largest first row that still fills the view.
#[derive(Clone, Debug, Default)]
pub struct Scroll {
    top: usize,
    /// Set by the renderer (content rows less visible rows); 0 until the pane is first drawn.
    max: Cell<usize>,
}

impl Scroll {
    /// The first row to show, within the bound.
    pub fn top(&self) -> usize {
        self.top.min(self.max.get())
    }

    /// How far the content can scroll, as last drawn.
    pub fn max(&self) -> usize {
        self.max.get()
    }

    /// The renderer's part: the content is `max` rows longer than the view.
    pub fn set_max(&self, max: usize) {
        self.max.set(max);
    }

    /// Scrolls by `rows` (negative: up), stopping at either end.
    pub fn by(&mut self, rows: isize) {
        let top = self.top() as isize + rows;
        self.top = top.clamp(0, self.max.get() as isize) as usize;
    }

    pub fn home(&mut self) {
        self.top = 0;
    }

    pub fn end(&mut self) {
        self.top = self.max.get();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrolling_clamps_to_the_drawn_bound() {
        let mut s = Scroll::default();
        s.by(3);
        assert_eq!(s.top(), 0, "nothing to scroll before the first draw");
        s.set_max(5);
        for _ in 0..100 {
            s.by(1);
        }
        assert_eq!(s.top(), 5);
        s.by(-1);
        assert_eq!(s.top(), 4);
        s.end();
        assert_eq!(s.top(), 5);
        s.home();
        assert_eq!(s.top(), 0);
        // A larger view shrinks the bound; the position follows.
        s.end();
        s.set_max(2);
        assert_eq!(s.top(), 2);
        s.by(-1);
        assert_eq!(s.top(), 1);
    }
}
