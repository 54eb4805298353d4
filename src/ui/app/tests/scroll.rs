//! Scrolling clamps on input: the panes record their bound when drawn, so pressing `↓` far past
//! the end and then `↑` once moves the view up one line at once.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::widgets::Widget;

use super::*;
use crate::ui::demo::demo_app;
use crate::ui::keys::KeyMap;
use crate::ui::panes::scroll::Scroll;
use crate::ui::panes::{render_pane, Screen, MIN_HEIGHT, MIN_WIDTH};
use crate::ui::theme::Theme;

/// The text of `rect`'s rows.
fn rows(buf: &Buffer, rect: Rect) -> Vec<String> {
    (rect.y..rect.bottom())
        .map(|y| {
            (rect.x..rect.right())
                .map(|x| buf[(x, y)].symbol())
                .collect()
        })
        .collect()
}

/// Presses `↓` far past the end, then `↑` once, drawing with `draw` after each press as the
/// event loop does; the view must end one line above the bottom, its rows shifted down by one.
fn down_past_the_end_then_up(
    app: &mut App,
    scroll: impl Fn(&App) -> &Scroll,
    draw: impl Fn(&App) -> Vec<String>,
) {
    draw(app);
    let max = scroll(app).max();
    assert!(max >= 2, "the content must be longer than the view ({max})");
    for _ in 0..max + 100 {
        cmd(app, Command::Down);
        draw(app);
    }
    assert_eq!(scroll(app).top(), max);
    let bottom = draw(app);
    cmd(app, Command::Up);
    let up = draw(app);
    assert_eq!(scroll(app).top(), max - 1, "one ↑ moves the view");
    assert_eq!(up[1..], bottom[..bottom.len() - 1], "down by one line");
    // Home and end jump at once.
    cmd(app, Command::End);
    assert_eq!(scroll(app).top(), max);
    cmd(app, Command::Home);
    assert_eq!(scroll(app).top(), 0);
}

#[test]
fn the_sample_scrolls_back_at_the_first_up() {
    let mut app = demo_app(6, 8, 24);
    app.focus = Pane::Sample;
    let area = Rect::new(0, 0, 44, 10);
    // The inner rows, without the scroll mark on the right border.
    let inner = Rect::new(1, 1, 42, 8);
    let draw = |a: &App| {
        let mut buf = Buffer::empty(area);
        render_pane(Pane::Sample, a, &Theme::builtin_default(), area, &mut buf);
        rows(&buf, inner)
    };
    down_past_the_end_then_up(&mut app, |a| &a.panes.sample.scroll, draw);
    assert!(!app.panes.sample.follow, "scrolled by hand");
}

#[test]
fn the_ablation_text_scrolls_back_at_the_first_up() {
    let mut app = demo_app(6, 8, 24);
    app.focus = Pane::Ablation;
    let area = Rect::new(0, 0, 90, 6);
    let text = Rect::new(1, 1, 44, 4);
    let draw = |a: &App| {
        let mut buf = Buffer::empty(area);
        render_pane(Pane::Ablation, a, &Theme::builtin_default(), area, &mut buf);
        rows(&buf, text)
    };
    down_past_the_end_then_up(&mut app, |a| &a.panes.ablation.scroll, draw);
}

#[test]
fn the_help_scrolls_back_at_the_first_up() {
    let mut app = demo_app(6, 8, 24);
    cmd(&mut app, Command::Help);
    // At the smallest size the keys take one long column.
    let area = Rect::new(0, 0, MIN_WIDTH, MIN_HEIGHT);
    let draw = |a: &App| {
        let mut buf = Buffer::empty(area);
        Screen::new(a, &Theme::builtin_default(), &KeyMap::default()).render(area, &mut buf);
        rows(&buf, area)
    };
    draw(&app);
    let max = help(&app).max();
    assert!(max >= 2, "the help must be longer than the view ({max})");
    for _ in 0..max + 100 {
        cmd(&mut app, Command::Down);
        draw(&app);
    }
    assert_eq!(help(&app).top(), max);
    cmd(&mut app, Command::Up);
    draw(&app);
    assert_eq!(help(&app).top(), max - 1, "one ↑ moves the list");
    cmd(&mut app, Command::Help);
    cmd(&mut app, Command::Help);
    assert_eq!(help(&app).top(), 0, "the help opens at the top");
}

fn help(app: &App) -> &Scroll {
    &app.panes.help.scroll
}
