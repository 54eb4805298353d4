//! The selected category's test samples with their answers in the selected experiment at the
//! selected k: the clean answer, the answer with the top-k heads ablated, and how many random
//! draws left it right; `b` keeps only those the top-k broke and random heads did not. Enter
//! opens the sample under the cursor in the explorer.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

use super::super::{StudyApp, StudyPane};
use super::frame;
use crate::ui::panes::{clip, placeholder, scroll_to, show_token};
use crate::ui::theme::Theme;

/// Columns of the gold answers.
const GOLD_W: usize = 18;

/// The cursor (an index into the rows shown) and the filter.
#[derive(Clone, Debug, Default)]
pub struct SamplesState {
    pub cursor: usize,
    pub broken_only: bool,
}

impl SamplesState {
    pub fn move_by(&mut self, by: isize, rows: usize) {
        if rows == 0 {
            return;
        }
        self.cursor = (self.cursor as isize + by).clamp(0, rows as isize - 1) as usize;
    }

    pub fn clamp(&mut self, rows: usize) {
        self.cursor = self.cursor.min(rows.saturating_sub(1));
    }
}

pub fn render(app: &StudyApp, t: &Theme, area: Rect, buf: &mut Buffer) {
    let rows = app.sample_rows();
    let d = &app.data;
    let (cell, k) = (app.cell(), app.k());
    let filter = if app.panes.samples.broken_only {
        "broken by the top-k, not by random"
    } else {
        "all"
    };
    let title = vec![
        Span::styled(
            format!("· {} · k = {k} · {filter} ", d.category(cell).unwrap_or("")),
            t.accent(),
        ),
        Span::styled(format!("· {} shown ", rows.len()), t.muted()),
    ];
    let block = frame(app, t, StudyPane::Samples, title);
    let inner = block.inner(area);
    block.render(area, buf);
    if rows.is_empty() {
        let msg = if app.panes.samples.broken_only {
            "no sample here was broken by the top-k heads and spared by random ones"
        } else {
            "no test samples in this category"
        };
        placeholder(t, inner, buf, msg);
        return;
    }
    let w = inner.width as usize;
    // The key, the gold answers, the random count and the flag keep their widths; the two
    // answers share the rest.
    let answer_w = (w.saturating_sub(2 + 25 + GOLD_W + 1 + 8 + 18) / 2).max(8);
    let head = format!(
        "  {:<24} {:<GOLD_W$} {:<answer_w$}{:<answer_w$}random",
        "sample",
        "gold",
        "clean answer",
        format!("top-{k} answer"),
    );
    buf.set_stringn(
        inner.x,
        inner.y,
        head,
        w,
        t.muted().add_modifier(Modifier::BOLD),
    );
    let visible = inner.height.saturating_sub(1) as usize;
    let cursor = app.panes.samples.cursor;
    let first = scroll_to(cursor, rows.len(), visible);
    for (i, &s) in rows.iter().enumerate().skip(first).take(visible) {
        let sample = &d.samples[s];
        let o = d.outcome(cell, &sample.key, k);
        let y = inner.y + 1 + (i - first) as u16;
        let selected = i == cursor;
        let base = if selected {
            t.selected().fg(t.fg)
        } else {
            t.base()
        };
        let answer = |a: &Option<(String, bool)>| -> Span<'static> {
            match a {
                Some((text, ok)) => Span::styled(
                    format!(
                        "{} {:<aw$}",
                        if *ok { "✓" } else { "✗" },
                        clip(&show_token(text.trim()), answer_w - 3),
                        aw = answer_w - 2
                    ),
                    base.fg(if *ok { t.ok } else { t.error }),
                ),
                None => Span::styled(format!("{:<answer_w$}", "—"), base.fg(t.muted)),
            }
        };
        let mut spans = vec![
            Span::styled(
                if selected { "▸ " } else { "  " },
                base.fg(t.cursor).add_modifier(Modifier::BOLD),
            ),
            Span::styled(format!("{:<24} ", clip(&sample.key, 23)), base),
            Span::styled(
                format!(
                    "{:<GOLD_W$} ",
                    clip(&sample.sample.answers().join(" / "), GOLD_W - 1)
                ),
                base.fg(t.muted),
            ),
        ];
        if let Some(why) = &o.skipped {
            spans.push(Span::styled(format!("skipped: {why}"), base.fg(t.muted)));
        } else {
            spans.push(answer(&o.clean));
            spans.push(answer(&o.top));
            let (right, draws) = o.random_correct;
            spans.push(Span::styled(
                if draws == 0 {
                    "—".to_string()
                } else {
                    format!("{right}/{draws} ✓ ")
                },
                base,
            ));
            if o.broken_by_top_only() {
                spans.push(Span::styled(
                    "  broken by top-k",
                    Style::new().fg(t.ablated).add_modifier(Modifier::BOLD),
                ));
            }
        }
        buf.set_style(Rect::new(inner.x, y, inner.width, 1), base);
        Line::from(spans).render(Rect::new(inner.x, y, inner.width, 1), buf);
    }
}
