//! The logit lens: layers × answer tokens, each cell the lens's top token and its probability
//! (or, with `n`, the rank and probability of the token the model produced), the cursor's
//! column following the answer cursor.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

use super::super::app::{App, Pane};
use super::super::theme::{contrast_fg, Theme};
use super::{clip, frame, placeholder, prob, scroll_to, show_lens_token, waiting_for};
use crate::analysis::logit_lens::LensRow;

const LABEL_W: u16 = 10;

pub fn render(app: &App, t: &Theme, area: Rect, buf: &mut Buffer) {
    let title = vec![
        Span::styled(format!("· {} ", app.lens_point.label()), t.accent()),
        Span::styled(
            if app.lens_rank {
                "· answer rank (n) "
            } else {
                "· top token (n: rank) "
            },
            t.muted(),
        ),
    ];
    let block = frame(app, t, Pane::Lens, title);
    let inner = block.inner(area);
    block.render(area, buf);
    let Some(lens) = app.report.as_ref().and_then(|r| r.logit_lens.as_ref()) else {
        placeholder(t, inner, buf, &waiting_for(app, 1, "logit lens"));
        return;
    };
    if inner.height < 3 || inner.width < LABEL_W + 6 {
        return;
    }
    let rows: Vec<&LensRow> = lens
        .rows
        .iter()
        .filter(|r| app.lens_point.shows(&r.point))
        .collect();
    let ncols = lens.answer_tokens.len();
    let cw: u16 = if inner.width >= LABEL_W + 4 * 10 {
        10
    } else {
        8
    };
    let visible_cols = ((inner.width - LABEL_W) / cw).max(1) as usize;
    let token = app.token.min(ncols.saturating_sub(1));
    let first_col = scroll_to(token, ncols, visible_cols);
    let grid_rows = inner.height.saturating_sub(2) as usize;
    let first_row = scroll_to(app.lens_row, rows.len(), grid_rows);

    // Header: the answer tokens.
    for (k, c) in (first_col..ncols).take(visible_cols).enumerate() {
        let x = inner.x + LABEL_W + k as u16 * cw;
        let text = clip(&show_lens_token(&lens.answer_tokens[c]), cw as usize - 1);
        let style = if c == token {
            Style::new()
                .fg(t.fg)
                .bg(t.selection)
                .add_modifier(Modifier::BOLD)
        } else {
            t.muted()
        };
        buf.set_stringn(x, inner.y, &text, cw as usize - 1, style);
    }

    for (ri, row) in rows.iter().enumerate().skip(first_row).take(grid_rows) {
        let y = inner.y + 1 + (ri - first_row) as u16;
        let selected = ri == app.lens_row;
        let label = format!(
            "{}L{} {}",
            if selected { "▸" } else { " " },
            row.layer,
            row.point
        );
        let style = if selected { t.accent() } else { t.muted() };
        buf.set_stringn(inner.x, y, &label, LABEL_W as usize - 1, style);
        for (k, c) in (first_col..ncols).take(visible_cols).enumerate() {
            let Some(cell) = row.cells.get(c) else {
                continue;
            };
            let x = inner.x + LABEL_W + k as u16 * cw;
            let (text, p, matches) = if app.lens_rank {
                (
                    format!("#{} {}", cell.answer_rank, prob(cell.answer_prob)),
                    cell.answer_prob,
                    cell.answer_rank == 0,
                )
            } else {
                match cell.top.first() {
                    Some(top) => (
                        format!(
                            "{} {}",
                            clip(&show_lens_token(&top.token), cw as usize - 5),
                            prob(top.prob)
                        ),
                        top.prob,
                        top.token == lens.answer_tokens[c],
                    ),
                    None => ("—".into(), f64::NAN, false),
                }
            };
            let bg = t.heatmap.at(p.sqrt());
            let mut style = Style::new().bg(bg).fg(contrast_fg(bg));
            if matches {
                style = style.add_modifier(Modifier::BOLD);
            }
            if c == token {
                style = style.add_modifier(Modifier::UNDERLINED);
            }
            let text = format!("{:<w$}", text, w = cw as usize - 1);
            buf.set_stringn(x, y, &text, cw as usize - 1, style);
        }
    }

    // The selected cell in full.
    let y = inner.bottom() - 1;
    if let Some(row) = rows.get(app.lens_row) {
        if let Some(cell) = row.cells.get(token) {
            let mut spans = vec![Span::styled(
                format!("L{} {} ▸ ", row.layer, row.point),
                t.accent(),
            )];
            for (n, top) in cell.top.iter().enumerate() {
                if n > 0 {
                    spans.push(Span::styled(", ", t.muted()));
                }
                spans.push(Span::raw(format!("{:?}", show_lens_token(&top.token))));
                spans.push(Span::styled(format!(" {}", prob(top.prob)), t.muted()));
            }
            spans.push(Span::styled(
                format!(
                    "  │ answer {:?} p {} rank {}",
                    show_lens_token(&lens.answer_tokens[token]),
                    prob(cell.answer_prob),
                    cell.answer_rank
                ),
                t.muted(),
            ));
            Line::from(spans).render(Rect::new(inner.x, y, inner.width, 1), buf);
        }
    }
}
