//! The head heatmap: layers × heads of the selected head score (plus each layer's MLP in the
//! last column, where the method scores MLPs), a colour legend with the value range, the cursor's
//! head id and value, and ablated heads marked `✕`.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

use super::super::app::{App, HeadScore, Pane};
use super::super::theme::{contrast_fg, Theme};
use super::{frame, num, placeholder, scroll_to, waiting_for};

/// The heatmap's state: the head score shown (`m` cycles) and the cursor.
#[derive(Clone, Debug)]
pub struct HeatmapState {
    pub score: HeadScore,
    /// `(layer, head)`; `head == heads` is the layer's MLP.
    pub cursor: (usize, usize),
}

impl Default for HeatmapState {
    fn default() -> Self {
        HeatmapState {
            score: HeadScore::ArcJsd,
            cursor: (0, 0),
        }
    }
}

impl HeatmapState {
    /// Moves the cursor `dl` layers and `dh` heads on a `(layers, heads)` model; the column
    /// after the last head is the layer's MLP.
    pub fn move_by(&mut self, dl: isize, dh: isize, (layers, heads): (usize, usize)) {
        if layers == 0 || heads == 0 {
            return;
        }
        let (l, h) = self.cursor;
        let l = (l as isize + dl).clamp(0, layers as isize - 1) as usize;
        let h = (h as isize + dh).clamp(0, heads as isize) as usize;
        self.cursor = (l, h);
    }

    /// To the first head, or (`last`) to the MLP column.
    pub fn jump_to_column(&mut self, last: bool, (layers, heads): (usize, usize)) {
        if layers == 0 || heads == 0 {
            return;
        }
        let l = self.cursor.0.min(layers - 1);
        self.cursor = (l, if last { heads } else { 0 });
    }
}

/// Columns the pane would like: a label, three columns per head, a gap and the MLP column.
pub fn preferred_width(app: &App) -> u16 {
    let heads = match app.dims().1 {
        0 => 12,
        h => h,
    };
    (10 + 3 * heads as u16).max(40)
}

/// `(lo, hi)` of the finite values, or `None`.
pub fn range<'a>(values: impl Iterator<Item = &'a f64>) -> Option<(f64, f64)> {
    let mut r: Option<(f64, f64)> = None;
    for &v in values.filter(|v| v.is_finite()) {
        r = Some(match r {
            None => (v, v),
            Some((a, b)) => (a.min(v), b.max(v)),
        });
    }
    r
}

/// A value's position on the scale: `[lo, hi] → [0, 1]`, or centred on zero for signed scores.
pub fn position(v: f64, lo: f64, hi: f64, signed: bool) -> f64 {
    if signed {
        let m = lo.abs().max(hi.abs());
        if m == 0.0 {
            0.5
        } else {
            0.5 + v / (2.0 * m)
        }
    } else if hi > lo {
        (v - lo) / (hi - lo)
    } else {
        0.5
    }
}

pub fn render(app: &App, t: &Theme, area: Rect, buf: &mut Buffer) {
    let score = app.panes.heatmap.score;
    let ablated = app.editor.set.len();
    let mut title = vec![Span::styled(format!("· {} ", score.label()), t.accent())];
    if let Some(kind) = app.ablation_map_kind() {
        title.push(Span::styled(format!("· {kind} "), t.muted()));
    }
    if ablated > 0 {
        title.push(Span::styled(
            format!("· ✕ {ablated} ablated "),
            Style::new().fg(t.ablated),
        ));
    }
    let block = frame(app, t, Pane::Heatmap, title);
    let inner = block.inner(area);
    block.render(area, buf);
    let (layers, heads) = app.dims();
    if layers == 0 || heads == 0 || inner.height < 4 || inner.width < 12 {
        placeholder(t, inner, buf, "waiting for the model…");
        return;
    }
    let matrix = app.head_matrix();
    let mlp = app.mlp_scores();
    let set = &app.editor.set;
    let mark = |l: usize, h: usize| {
        let ablated = if h >= heads {
            set.mlps.contains(&l)
        } else {
            set.heads.contains(&(l, h))
        };
        ablated.then_some(Mark {
            glyph: "✕",
            color: t.ablated,
        })
    };
    let grid = Grid {
        dims: (layers, heads),
        matrix: matrix.map(Vec::as_slice),
        mlp: Some(mlp.map_or(&[][..], Vec::as_slice)),
        signed: score.signed(),
        cursor: app.panes.heatmap.cursor,
        mark: &mark,
    };
    let grid_rows = grid.render(t, inner, buf);
    readout(app, t, matrix, mlp)
        .render(Rect::new(inner.x, inner.bottom() - 1, inner.width, 1), buf);
    if matrix.is_none() && grid_rows > 2 {
        // The ablation map's first estimate (AtP) comes stages before the exact sweep.
        let stage = match score {
            HeadScore::Ablation => HeadScore::Atp.stage(),
            _ => score.stage(),
        };
        let msg = waiting_for(app, stage, score.label());
        let y = inner.y + 1 + (grid_rows as u16).min(layers as u16) / 2;
        let w = (msg.chars().count() as u16 + 2).min(inner.width);
        let x = inner.x + (inner.width - w) / 2;
        buf.set_stringn(x, y, format!(" {msg} "), w as usize, t.base().fg(t.muted));
    }
}

/// A glyph drawn in a grid cell over its colour (an ablated head's `✕`, a top head's `•`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub glyph: &'static str,
    pub color: Color,
}

/// The layers × heads grid of one score: head numbers on top, a row per layer (scrolled to keep
/// the cursor in view), each head's value as a colour, an optional MLP column, and the colour
/// legend under the grid. The explorer's heatmap and the study's heads pane both draw it; the
/// caller owns the frame and the line under the legend (`inner`'s last row).
pub struct Grid<'a> {
    /// `(layers, heads)`.
    pub dims: (usize, usize),
    /// `[layers][heads]`, when computed.
    pub matrix: Option<&'a [Vec<f64>]>,
    /// Per-layer MLP values; `Some` draws the MLP column (empty: the column without values).
    pub mlp: Option<&'a [f64]>,
    /// Centre the scale on zero.
    pub signed: bool,
    /// `(layer, head)`; `head == heads` is the MLP column.
    pub cursor: (usize, usize),
    /// The mark of `(layer, head)` (`head == heads`: the layer's MLP), if any.
    pub mark: &'a dyn Fn(usize, usize) -> Option<Mark>,
}

impl Grid<'_> {
    /// Draws the grid and the legend into `inner` (its last row is left to the caller); returns
    /// the rows the grid had for layers.
    pub fn render(&self, t: &Theme, inner: Rect, buf: &mut Buffer) -> usize {
        let (layers, heads) = self.dims;
        let head_range = self.matrix.and_then(|m| range(m.iter().flatten()));
        let mlp_range = self.mlp.and_then(|m| range(m.iter()));
        let with_mlp = self.mlp.is_some();
        let label_w = 4u16;
        let avail = inner.width.saturating_sub(label_w + 1);
        let columns = heads as u16 + u16::from(with_mlp);
        let cw = (avail / columns.max(1)).clamp(1, 3);
        let grid_rows = inner.height.saturating_sub(3) as usize;
        let (cl, ch) = self.cursor;
        let first = scroll_to(cl, layers, grid_rows);
        let mlp_x = inner.x + label_w + heads as u16 * cw + 1;

        // Column numbers (every other when cells are narrow).
        let step = if cw >= 2 { 1 } else { 4 };
        for h in (0..heads).step_by(step) {
            let x = inner.x + label_w + h as u16 * cw;
            let s = format!("{h:>w$}", w = cw as usize);
            let style = if h == ch { t.accent() } else { t.muted() };
            buf.set_stringn(x, inner.y, s, (inner.right() - x) as usize, style);
        }
        if with_mlp && mlp_x + cw <= inner.right() {
            let style = if ch >= heads { t.accent() } else { t.muted() };
            buf.set_stringn(
                mlp_x,
                inner.y,
                format!("{:>w$}", "M", w = cw as usize),
                cw as usize,
                style,
            );
        }

        let last = if with_mlp {
            heads
        } else {
            heads.saturating_sub(1)
        };
        for (row, l) in (first..layers).take(grid_rows).enumerate() {
            let y = inner.y + 1 + row as u16;
            let style = if l == cl { t.accent() } else { t.muted() };
            buf.set_stringn(inner.x, y, format!("L{l:<3}"), label_w as usize, style);
            for h in 0..=last {
                let is_mlp = h == heads;
                let x = if is_mlp {
                    mlp_x
                } else {
                    inner.x + label_w + h as u16 * cw
                };
                if x + cw > inner.right() {
                    continue;
                }
                let value = if is_mlp {
                    self.mlp.and_then(|m| m.get(l)).copied()
                } else {
                    self.matrix
                        .and_then(|m| m.get(l))
                        .and_then(|r| r.get(h))
                        .copied()
                };
                let range = if is_mlp { mlp_range } else { head_range };
                let bg = match (value, range) {
                    (Some(v), Some((lo, hi))) if v.is_finite() => {
                        Some(scale(t, self.signed).at(position(v, lo, hi, self.signed)))
                    }
                    _ => None,
                };
                let cursor = (l, h.min(heads)) == (cl, ch.min(heads));
                draw_cell(buf, t, x, y, cw, bg, (self.mark)(l, h), cursor);
            }
        }

        legend(
            t,
            self.signed,
            head_range,
            Rect::new(inner.x, inner.bottom() - 2, inner.width, 1),
            buf,
        );
        grid_rows
    }
}

fn scale(t: &Theme, signed: bool) -> &super::super::theme::Scale {
    if signed {
        &t.diverging
    } else {
        &t.heatmap
    }
}

#[allow(clippy::too_many_arguments)]
fn draw_cell(
    buf: &mut Buffer,
    t: &Theme,
    x: u16,
    y: u16,
    cw: u16,
    bg: Option<Color>,
    marked: Option<Mark>,
    cursor: bool,
) {
    let (bg, fg) = match bg {
        Some(c) => (c, contrast_fg(c)),
        None => (t.bg, t.muted),
    };
    let mark = match marked {
        Some(m) => m.glyph,
        None if bg == t.bg => "·",
        None => " ",
    };
    let text = match (cw, cursor) {
        (3, true) => format!("[{mark}]"),
        (3, false) => format!(" {mark} "),
        (2, true) => format!("[{mark}"),
        (2, false) => format!("{mark} "),
        _ => mark.to_string(),
    };
    let mut style = Style::new().bg(bg).fg(marked.map_or(fg, |m| m.color));
    if marked.is_some() {
        style = style.add_modifier(Modifier::BOLD);
    }
    if cursor && cw < 2 {
        style = style.add_modifier(Modifier::REVERSED);
    }
    buf.set_stringn(x, y, &text, cw as usize, style);
    if cursor && cw >= 2 {
        // Brackets in the cursor colour, the mark keeps its own.
        let bracket = Style::new()
            .bg(bg)
            .fg(t.cursor)
            .add_modifier(Modifier::BOLD);
        buf.set_stringn(x, y, "[", 1, bracket);
        if cw == 3 {
            buf.set_stringn(x + 2, y, "]", 1, bracket);
        }
    }
}

fn legend(t: &Theme, signed: bool, range: Option<(f64, f64)>, area: Rect, buf: &mut Buffer) {
    let Some((lo, hi)) = range else {
        buf.set_stringn(
            area.x,
            area.y,
            "no values yet",
            area.width as usize,
            t.muted(),
        );
        return;
    };
    let (lo, hi) = if signed {
        let m = lo.abs().max(hi.abs());
        (-m, m)
    } else {
        (lo, hi)
    };
    let left = num(lo);
    let right = num(hi);
    let bar_w = area
        .width
        .saturating_sub(left.chars().count() as u16 + right.chars().count() as u16 + 2)
        .min(24);
    let mut spans = vec![Span::styled(format!("{left} "), t.muted())];
    let s = scale(t, signed);
    for i in 0..bar_w {
        let x = if bar_w > 1 {
            i as f64 / (bar_w - 1) as f64
        } else {
            0.5
        };
        spans.push(Span::styled(" ", Style::new().bg(s.at(x))));
    }
    spans.push(Span::styled(format!(" {right}"), t.muted()));
    Line::from(spans).render(area, buf);
}

fn readout<'a>(
    app: &App,
    t: &Theme,
    matrix: Option<&Vec<Vec<f64>>>,
    mlp: Option<&Vec<f64>>,
) -> Line<'a> {
    let (_, heads) = app.dims();
    let (l, h) = app.panes.heatmap.cursor;
    let (id, value, ablated) = if h >= heads {
        (
            format!("L{l} MLP"),
            mlp.and_then(|m| m.get(l)).copied(),
            app.editor.set.mlps.contains(&l),
        )
    } else {
        (
            format!("L{l}H{h}"),
            matrix
                .and_then(|m| m.get(l))
                .and_then(|r| r.get(h))
                .copied(),
            app.editor.set.heads.contains(&(l, h)),
        )
    };
    let mut spans = vec![
        Span::styled(id, Style::new().fg(t.cursor).add_modifier(Modifier::BOLD)),
        Span::raw(" "),
        Span::raw(value.map_or("—".to_string(), num)),
    ];
    if let (Some(v), Some(m), true) = (value, matrix, h < heads) {
        let imp = app.panes.heatmap.score.importance(&[vec![v]])[0][0];
        let better = app
            .panes
            .heatmap
            .score
            .importance(m)
            .iter()
            .flatten()
            .filter(|x| x.is_finite() && **x > imp)
            .count();
        spans.push(Span::styled(
            format!(
                "  rank {}/{}",
                better + 1,
                m.iter().map(Vec::len).sum::<usize>()
            ),
            t.muted(),
        ));
    }
    if ablated {
        spans.push(Span::styled("  ✕ ablated", Style::new().fg(t.ablated)));
    }
    Line::from(spans)
}
