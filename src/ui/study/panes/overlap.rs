//! Overlap of top lists (Jaccard), beside what two random lists of the same sizes give: the
//! category × category matrix of the selected model and method, the method × method matrix of
//! its model and category, and the selected method and category across models.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

use super::super::data::{Cell, StudyData};
use super::super::{StudyApp, StudyPane};
use super::frame;
use crate::study::stats::jaccard;
use crate::ui::panes::{clip, placeholder};
use crate::ui::theme::{contrast_fg, Theme};

const LABEL_W: usize = 20;
const CELL_W: usize = 6;

pub fn render(app: &StudyApp, t: &Theme, area: Rect, buf: &mut Buffer) {
    let block = frame(
        app,
        t,
        StudyPane::Overlap,
        vec![Span::styled("· Jaccard of top lists ", t.accent())],
    );
    let inner = block.inner(area);
    block.render(area, buf);
    let d = &app.data;
    let cell = app.cell();
    if d.top_set(cell).is_empty() {
        placeholder(t, inner, buf, "no top lists yet");
        return;
    }
    let mut lines = Vec::new();
    let cats: Vec<Cell> = (0..d.categories.len())
        .map(|c| Cell {
            category: c,
            ..cell
        })
        .collect();
    lines.extend(matrix(
        d,
        t,
        &format!("categories · {}", d.method(cell).map_or("", |m| m.key())),
        &cats,
        &d.categories,
        cell.category,
    ));
    lines.push(Line::raw(""));
    let methods: Vec<Cell> = (0..d.methods.len())
        .map(|m| Cell { method: m, ..cell })
        .collect();
    let names: Vec<String> = d.methods.iter().map(|m| m.key().to_string()).collect();
    lines.extend(matrix(
        d,
        t,
        &format!("methods · {}", d.category(cell).unwrap_or("")),
        &methods,
        &names,
        cell.method,
    ));
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        "models (same method and category)",
        t.muted().add_modifier(Modifier::BOLD),
    ));
    for m in (0..d.models.len()).filter(|&m| m != cell.model) {
        let other = Cell { model: m, ..cell };
        let text = match d.jaccard(cell, other) {
            Some((j, r)) => format!("{:.2}  (random {r:.2})", j),
            None => "— (another shape, or no top list yet)".to_string(),
        };
        lines.push(Line::from(vec![
            Span::styled(
                format!("{:<LABEL_W$}", clip(&d.models[m].label, LABEL_W - 1)),
                t.muted(),
            ),
            Span::raw(text),
        ]));
    }
    for (i, line) in lines.into_iter().take(inner.height as usize).enumerate() {
        line.render(Rect::new(inner.x, inner.y + i as u16, inner.width, 1), buf);
    }
}

/// One Jaccard matrix over `cells` named `names`, the selected row and column highlighted, the
/// random expectation in its heading.
fn matrix<'a>(
    d: &StudyData,
    t: &Theme,
    title: &str,
    cells: &[Cell],
    names: &[String],
    selected: usize,
) -> Vec<Line<'a>> {
    // Each top list once, and the random expectation once (one model: one shape, one size).
    let sets: Vec<_> = cells.iter().map(|&c| d.top_set(c)).collect();
    let values: Vec<Vec<Option<f64>>> = sets
        .iter()
        .map(|a| {
            sets.iter()
                .map(|b| (!a.is_empty() && !b.is_empty()).then(|| jaccard(a, b)))
                .collect()
        })
        .collect();
    let random = (1..cells.len()).find_map(|j| d.jaccard(cells[0], cells[j]).map(|(_, r)| r));
    let mut out = vec![Line::from(vec![
        Span::styled(title.to_string(), t.muted().add_modifier(Modifier::BOLD)),
        Span::styled(
            match random {
                Some(r) => format!("  · random ≈ {r:.2}"),
                None => String::new(),
            },
            t.muted(),
        ),
    ])];
    let mut head = vec![Span::raw(" ".repeat(LABEL_W))];
    for (j, n) in names.iter().enumerate() {
        let style = if j == selected { t.accent() } else { t.muted() };
        head.push(Span::styled(
            format!("{:<CELL_W$}", clip(n, CELL_W - 1)),
            style,
        ));
    }
    out.push(Line::from(head));
    for (i, row) in values.iter().enumerate() {
        let style = if i == selected { t.accent() } else { t.muted() };
        let mut spans = vec![Span::styled(
            format!("{:<LABEL_W$}", clip(&names[i], LABEL_W - 1)),
            style,
        )];
        for v in row {
            spans.push(match v {
                Some(j) => {
                    let bg = t.heatmap.at(*j);
                    Span::styled(
                        format!("{:^w$}", format!("{j:.2}"), w = CELL_W - 1),
                        Style::new().bg(bg).fg(contrast_fg(bg)),
                    )
                }
                None => Span::styled(format!("{:^w$}", "·", w = CELL_W - 1), t.muted()),
            });
            spans.push(Span::raw(" "));
        }
        out.push(Line::from(spans));
    }
    out
}
