//! The matrix of experiments: a row per model × method, a column per category, each cell
//! coloured by its effect at the largest k (top-k minus random-k accuracy), and the effect's
//! interval for the cell under the cursor.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

use super::super::{StudyApp, StudyPane};
use super::{frame, pp};
use crate::ui::panes::heatmap::position;
use crate::ui::panes::{clip, placeholder};
use crate::ui::theme::{contrast_fg, Theme};

/// The cursor: `(row, category)`.
#[derive(Clone, Debug, Default)]
pub struct MatrixState {
    pub cursor: (usize, usize),
}

impl MatrixState {
    pub fn move_by(&mut self, dr: isize, dc: isize, (rows, cols): (usize, usize)) {
        if rows == 0 || cols == 0 {
            return;
        }
        let (r, c) = self.cursor;
        self.cursor = (
            (r as isize + dr).clamp(0, rows as isize - 1) as usize,
            (c as isize + dc).clamp(0, cols as isize - 1) as usize,
        );
    }

    pub fn clamp(&mut self, rows: usize, cols: usize) {
        self.cursor = (
            self.cursor.0.min(rows.saturating_sub(1)),
            self.cursor.1.min(cols.saturating_sub(1)),
        );
    }
}

const LABEL_W: u16 = 36;
const MODEL_W: usize = 18;

pub fn render(app: &StudyApp, t: &Theme, area: Rect, buf: &mut Buffer) {
    let d = &app.data;
    let k = d.ks.last().copied().unwrap_or(0);
    let title = vec![Span::styled(
        format!("· top-{k} − random-{k} accuracy, pp "),
        t.accent(),
    )];
    let block = frame(app, t, StudyPane::Matrix, title);
    let inner = block.inner(area);
    block.render(area, buf);
    if d.rows() == 0 || d.categories.is_empty() || inner.height < 4 {
        placeholder(t, inner, buf, "no experiments in this study");
        return;
    }
    let cols = d.categories.len() as u16;
    let cw = ((inner.width.saturating_sub(LABEL_W)) / cols).clamp(5, 20);
    let effects: Vec<Vec<Option<f64>>> = (0..d.rows())
        .map(|r| {
            (0..d.categories.len())
                .map(|c| {
                    d.curve(d.cell(r, c))
                        .and_then(|cv| cv.effect())
                        .map(|e| e.value)
                })
                .collect()
        })
        .collect();
    let m = effects
        .iter()
        .flatten()
        .flatten()
        .fold(0.05f64, |m, v| m.max(v.abs()));
    let (cr, cc) = app.panes.matrix.cursor;
    for (c, cat) in d.categories.iter().enumerate() {
        let x = inner.x + LABEL_W + c as u16 * cw;
        let style = if c == cc { t.accent() } else { t.muted() };
        buf.set_stringn(
            x,
            inner.y,
            clip(cat, cw as usize - 1),
            cw as usize - 1,
            style,
        );
    }
    let grid_rows = inner.height.saturating_sub(3) as usize;
    let first = crate::ui::panes::scroll_to(cr, d.rows(), grid_rows);
    for (i, r) in (first..d.rows()).take(grid_rows).enumerate() {
        let y = inner.y + 1 + i as u16;
        let cell = d.cell(r, 0);
        // The model once, on its first method's row.
        let model = match d.model(cell) {
            Some(m) if cell.method == 0 => clip(&m.label, MODEL_W - 1),
            _ => String::new(),
        };
        let label = format!(
            "{model:<MODEL_W$}{}",
            d.method(cell).map_or("", |m| m.key())
        );
        let style = if r == cr { t.accent() } else { t.muted() };
        buf.set_stringn(
            inner.x,
            y,
            clip(&label, LABEL_W as usize - 1),
            LABEL_W as usize - 1,
            style,
        );
        for (c, e) in effects[r].iter().enumerate() {
            let x = inner.x + LABEL_W + c as u16 * cw;
            if x + cw > inner.right() {
                break;
            }
            let cursor = (r, c) == (cr, cc);
            draw_cell(t, *e, m, cursor, Rect::new(x, y, cw - 1, 1), buf);
        }
    }
    readout(app, t).render(Rect::new(inner.x, inner.bottom() - 1, inner.width, 1), buf);
    let legend = Line::from(vec![
        Span::styled(format!("−{:.0} ", 100.0 * m), t.muted()),
        Span::styled("   ", Style::new().bg(t.diverging.at(0.0))),
        Span::styled("   ", Style::new().bg(t.diverging.at(0.5))),
        Span::styled("   ", Style::new().bg(t.diverging.at(1.0))),
        Span::styled(format!(" +{:.0} pp", 100.0 * m), t.muted()),
        Span::styled(
            "  (below 0: the method's heads matter more than random ones)",
            t.muted(),
        ),
    ]);
    legend.render(Rect::new(inner.x, inner.bottom() - 2, inner.width, 1), buf);
}

fn draw_cell(t: &Theme, effect: Option<f64>, m: f64, cursor: bool, area: Rect, buf: &mut Buffer) {
    let w = area.width as usize;
    let (text, style) = match effect {
        Some(v) => {
            let bg = t.diverging.at(position(v, -m, m, true));
            (pp(v), Style::new().bg(bg).fg(contrast_fg(bg)))
        }
        None => ("·".to_string(), t.muted()),
    };
    let text = if cursor {
        format!("[{text:^w$}]", w = w.saturating_sub(2))
    } else {
        format!("{text:^w$}")
    };
    buf.set_stringn(area.x, area.y, &text, w, style);
    if cursor {
        let bracket = style.fg(t.cursor).add_modifier(Modifier::BOLD);
        buf.set_stringn(area.x, area.y, "[", 1, bracket);
        buf.set_stringn(area.x + area.width - 1, area.y, "]", 1, bracket);
    }
}

/// The cursor's experiment: its effect with the interval, and the clean accuracy.
fn readout(app: &StudyApp, t: &Theme) -> Line<'static> {
    let d = &app.data;
    let curve = d.curve(app.cell());
    let Some(e) = curve.as_ref().and_then(|c| c.effect()) else {
        return Line::styled("no ablation results for this experiment yet", t.muted());
    };
    let interval = match e.interval {
        Some((lo, hi)) => format!(" [{}, {}]", pp(lo), pp(hi)),
        None => " (partial: no interval yet)".to_string(),
    };
    let clean = curve
        .as_ref()
        .and_then(|c| c.at(0))
        .map_or(String::new(), |p| {
            format!(" · clean {:.0} %", 100.0 * p.top.value)
        });
    Line::from(vec![
        Span::styled(
            format!("k={} effect {} pp", e.k, pp(e.value)),
            Style::new().fg(t.cursor).add_modifier(Modifier::BOLD),
        ),
        Span::raw(interval),
        Span::styled(format!(" · n {}{clean}", e.n), t.muted()),
    ])
}
