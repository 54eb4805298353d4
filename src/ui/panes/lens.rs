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
use crate::analysis::logit_lens::{LensCell, LensRow, LogitLens};

/// Which residual-stream points the logit lens shows (`p` cycles).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LensPoint {
    #[default]
    Post,
    Mid,
    Pre,
    All,
}

impl LensPoint {
    pub const ALL: [LensPoint; 4] = [
        LensPoint::Post,
        LensPoint::Mid,
        LensPoint::Pre,
        LensPoint::All,
    ];

    pub fn label(self) -> &'static str {
        match self {
            LensPoint::Post => "post",
            LensPoint::Mid => "mid",
            LensPoint::Pre => "pre",
            LensPoint::All => "all",
        }
    }

    /// Does a lens row at `point` (`pre`, `mid`, `post`) show?
    pub fn shows(self, point: &str) -> bool {
        self == LensPoint::All || self.label() == point
    }
}

/// The lens pane's state: which points, top token or answer rank (`n`), and the row cursor.
#[derive(Clone, Debug, Default)]
pub struct LensState {
    pub point: LensPoint,
    pub rank: bool,
    pub row: usize,
}

impl LensState {
    /// Moves the row cursor by `by` within `rows` rows.
    pub fn move_row(&mut self, by: isize, rows: usize) {
        if rows == 0 {
            self.row = 0;
            return;
        }
        self.row = (self.row as isize + by).clamp(0, rows as isize - 1) as usize;
    }

    /// Keeps the row cursor within `rows` rows.
    pub fn clamp_row(&mut self, rows: usize) {
        self.row = self.row.min(rows.saturating_sub(1));
    }
}

const LABEL_W: u16 = 10;

pub fn render(app: &App, t: &Theme, area: Rect, buf: &mut Buffer) {
    let block = frame(app, t, Pane::Lens, title(app, t));
    let inner = block.inner(area);
    block.render(area, buf);
    let Some(lens) = app.view.report.as_ref().and_then(|r| r.logit_lens.as_ref()) else {
        placeholder(t, inner, buf, &waiting_for(app, 1, "logit lens"));
        return;
    };
    if inner.height < 3 || inner.width < LABEL_W + 6 {
        return;
    }
    let grid = Grid::new(app, lens, inner);
    grid.header(t, buf);
    for (ri, row) in grid
        .rows
        .iter()
        .enumerate()
        .skip(grid.first_row)
        .take(grid.grid_rows)
    {
        grid.row(app, t, ri, row, buf);
    }
    grid.selected_cell(t, buf);
}

fn title<'a>(app: &App, t: &Theme) -> Vec<Span<'a>> {
    vec![
        Span::styled(format!("· {} ", app.panes.lens.point.label()), t.accent()),
        Span::styled(
            if app.panes.lens.rank {
                "· answer rank (n) "
            } else {
                "· top token (n: rank) "
            },
            t.muted(),
        ),
    ]
}

/// The grid's geometry: which rows and answer columns show, and how wide a cell is.
struct Grid<'a> {
    lens: &'a LogitLens,
    rows: Vec<&'a LensRow>,
    inner: Rect,
    ncols: usize,
    cw: u16,
    visible_cols: usize,
    /// The answer token under the cursor (a column).
    token: usize,
    first_col: usize,
    grid_rows: usize,
    first_row: usize,
    /// The row under the cursor.
    row: usize,
}

impl<'a> Grid<'a> {
    fn new(app: &App, lens: &'a LogitLens, inner: Rect) -> Grid<'a> {
        let point = app.panes.lens.point;
        let rows: Vec<&LensRow> = lens.rows.iter().filter(|r| point.shows(&r.point)).collect();
        let ncols = lens.answer_tokens.len();
        let cw: u16 = if inner.width >= LABEL_W + 4 * 10 {
            10
        } else {
            8
        };
        let visible_cols = ((inner.width - LABEL_W) / cw).max(1) as usize;
        let token = app.token().min(ncols.saturating_sub(1));
        let grid_rows = inner.height.saturating_sub(2) as usize;
        let row = app.panes.lens.row;
        Grid {
            lens,
            first_row: scroll_to(row, rows.len(), grid_rows),
            rows,
            inner,
            ncols,
            cw,
            visible_cols,
            token,
            first_col: scroll_to(token, ncols, visible_cols),
            grid_rows,
            row,
        }
    }

    /// `(k, c)`: the k-th visible column shows answer token c.
    fn columns(&self) -> impl Iterator<Item = (usize, usize)> {
        (self.first_col..self.ncols)
            .take(self.visible_cols)
            .enumerate()
    }

    fn x_of(&self, k: usize) -> u16 {
        self.inner.x + LABEL_W + k as u16 * self.cw
    }

    /// The answer tokens over the columns.
    fn header(&self, t: &Theme, buf: &mut Buffer) {
        let w = self.cw as usize - 1;
        for (k, c) in self.columns() {
            let text = clip(&show_lens_token(&self.lens.answer_tokens[c]), w);
            let style = if c == self.token {
                Style::new()
                    .fg(t.fg)
                    .bg(t.selection)
                    .add_modifier(Modifier::BOLD)
            } else {
                t.muted()
            };
            buf.set_stringn(self.x_of(k), self.inner.y, &text, w, style);
        }
    }

    /// Row `ri` (`L3 post`) and its cells.
    fn row(&self, app: &App, t: &Theme, ri: usize, row: &LensRow, buf: &mut Buffer) {
        let y = self.inner.y + 1 + (ri - self.first_row) as u16;
        let selected = ri == self.row;
        let label = format!(
            "{}L{} {}",
            if selected { "▸" } else { " " },
            row.layer,
            row.point
        );
        let style = if selected { t.accent() } else { t.muted() };
        buf.set_stringn(self.inner.x, y, &label, LABEL_W as usize - 1, style);
        for (k, c) in self.columns() {
            let Some(cell) = row.cells.get(c) else {
                continue;
            };
            let (text, p, matches) = self.cell_text(app.panes.lens.rank, cell, c);
            let bg = t.heatmap.at(p.sqrt());
            let mut style = Style::new().bg(bg).fg(contrast_fg(bg));
            if matches {
                style = style.add_modifier(Modifier::BOLD);
            }
            if c == self.token {
                style = style.add_modifier(Modifier::UNDERLINED);
            }
            let w = self.cw as usize - 1;
            let text = format!("{:<w$}", text, w = w);
            buf.set_stringn(self.x_of(k), y, &text, w, style);
        }
    }

    /// A cell's text, the probability that colours it, and whether it is the answer's token.
    fn cell_text(&self, rank: bool, cell: &LensCell, c: usize) -> (String, f64, bool) {
        if rank {
            return (
                format!("#{} {}", cell.answer_rank, prob(cell.answer_prob)),
                cell.answer_prob,
                cell.answer_rank == 0,
            );
        }
        match cell.top.first() {
            Some(top) => (
                format!(
                    "{} {}",
                    clip(&show_lens_token(&top.token), self.cw as usize - 5),
                    prob(top.prob)
                ),
                top.prob,
                top.token == self.lens.answer_tokens[c],
            ),
            None => ("—".into(), f64::NAN, false),
        }
    }

    /// The selected cell in full, on the last line.
    fn selected_cell(&self, t: &Theme, buf: &mut Buffer) {
        let y = self.inner.bottom() - 1;
        let Some(row) = self.rows.get(self.row) else {
            return;
        };
        let Some(cell) = row.cells.get(self.token) else {
            return;
        };
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
                show_lens_token(&self.lens.answer_tokens[self.token]),
                prob(cell.answer_prob),
                cell.answer_rank
            ),
            t.muted(),
        ));
        Line::from(spans).render(Rect::new(self.inner.x, y, self.inner.width, 1), buf);
    }
}
