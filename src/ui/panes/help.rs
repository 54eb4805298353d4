//! `?`: every key, as bound now (defaults or the user's keys.toml).

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Clear, Widget};

use super::super::app::App;
use super::super::keys::KeyMap;
use super::super::theme::Theme;
use super::clip;
use super::scroll::Scroll;

/// The help overlay's state: how far its list is scrolled.
#[derive(Clone, Debug, Default)]
pub struct HelpState {
    pub scroll: Scroll,
}

pub fn render(app: &App, t: &Theme, keys: &KeyMap, area: Rect, buf: &mut Buffer) {
    render_entries(&keys.help(), &app.panes.help.scroll, t, area, buf);
}

/// The overlay of `(keys, help)` entries, in one or two columns, scrolled by `scroll` (the study
/// view shows its own entries with it).
pub fn render_entries(
    entries: &[(String, &'static str)],
    scroll: &Scroll,
    t: &Theme,
    area: Rect,
    buf: &mut Buffer,
) {
    let key_w = entries
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(4)
        + 2;
    let text_w = entries
        .iter()
        .map(|(_, h)| h.chars().count())
        .max()
        .unwrap_or(10);
    let col_w = key_w + text_w + 3;
    let two = area.width as usize >= 2 * col_w + 4;
    let cols = if two { 2 } else { 1 };
    let rows = entries.len().div_ceil(cols);
    let w = ((cols * col_w + 2) as u16).min(area.width);
    let h = ((rows + 4) as u16).min(area.height);
    let popup = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    Clear.render(popup, buf);
    buf.set_style(popup, t.base());
    let block = Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Double)
        .border_style(t.border(true))
        .title(Line::from(vec![Span::styled(
            " Keys — ? or esc closes · ~/.config/headscope/keys.toml rebinds ",
            t.title(true),
        )]));
    let inner = block.inner(popup);
    block.render(popup, buf);
    let visible = inner.height as usize;
    scroll.set_max(rows.saturating_sub(visible));
    let first = scroll.top();
    for r in 0..visible.min(rows - first.min(rows)) {
        for c in 0..cols {
            let Some((k, help)) = entries.get(c * rows + first + r) else {
                continue;
            };
            let x = inner.x + (c * col_w) as u16;
            let y = inner.y + r as u16;
            let line = Line::from(vec![
                Span::styled(format!("{:>key_w$} ", clip(k, key_w)), t.key()),
                Span::styled(help.to_string(), t.base().remove_modifier(Modifier::BOLD)),
            ]);
            line.render(
                Rect::new(x, y, (col_w as u16).min(inner.right() - x), 1),
                buf,
            );
        }
    }
}
