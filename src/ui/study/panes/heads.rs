//! The selected experiment's head scores (each head's mean over the category's training
//! samples) as the explorer's layers × heads heatmap, its top list marked `•`, and, when a
//! comparison is on, the heads it shares with another category, method or model marked `◆`.

use std::collections::BTreeSet;

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

use super::super::data::{Cell, StudyData};
use super::super::{StudyApp, StudyPane};
use super::frame;
use crate::ui::app::cycle;
use crate::ui::panes::heatmap::{Grid, Mark};
use crate::ui::panes::{num, placeholder};
use crate::ui::theme::Theme;

/// What the top list is compared with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SharedAxis {
    #[default]
    Off,
    Category,
    Method,
    Model,
}

impl SharedAxis {
    pub const ALL: [SharedAxis; 4] = [
        SharedAxis::Off,
        SharedAxis::Category,
        SharedAxis::Method,
        SharedAxis::Model,
    ];
}

/// The cursor, the comparison axis, and how far along it the other experiment is.
#[derive(Clone, Debug)]
pub struct HeadsState {
    /// `(layer, head)`.
    pub cursor: (usize, usize),
    pub axis: SharedAxis,
    /// The other experiment is this many steps along the axis (1: the next one).
    pub offset: usize,
}

impl Default for HeadsState {
    fn default() -> Self {
        HeadsState {
            cursor: (0, 0),
            axis: SharedAxis::Off,
            offset: 1,
        }
    }
}

impl HeadsState {
    pub fn move_by(&mut self, dl: isize, dh: isize, (layers, heads): (usize, usize)) {
        if layers == 0 || heads == 0 {
            return;
        }
        let (l, h) = self.cursor;
        self.cursor = (
            (l as isize + dl).clamp(0, layers as isize - 1) as usize,
            (h as isize + dh).clamp(0, heads as isize - 1) as usize,
        );
    }

    pub fn clamp(&mut self, (layers, heads): (usize, usize)) {
        self.cursor = (
            self.cursor.0.min(layers.saturating_sub(1)),
            self.cursor.1.min(heads.saturating_sub(1)),
        );
    }

    pub fn cycle_axis(&mut self) {
        self.axis = cycle(&SharedAxis::ALL, self.axis);
        self.offset = 1;
    }

    pub fn next_other(&mut self) {
        if self.axis == SharedAxis::Off {
            self.axis = SharedAxis::Category;
        } else {
            self.offset += 1;
        }
    }

    /// The experiment compared with `cell`, `offset` steps along the axis (wrapping, never
    /// `cell` itself); none when the axis is off or has one entry.
    pub fn other(&self, cell: Cell, data: &StudyData) -> Option<Cell> {
        let along = |i: usize, n: usize| -> Option<usize> {
            if n < 2 {
                return None;
            }
            let step = 1 + (self.offset.max(1) - 1) % (n - 1);
            Some((i + step) % n)
        };
        let mut other = cell;
        match self.axis {
            SharedAxis::Off => return None,
            SharedAxis::Category => other.category = along(cell.category, data.categories.len())?,
            SharedAxis::Method => other.method = along(cell.method, data.methods.len())?,
            SharedAxis::Model => other.model = along(cell.model, data.models.len())?,
        }
        Some(other)
    }
}

/// `model · method · category`.
pub fn cell_label(data: &StudyData, cell: Cell) -> String {
    format!(
        "{} · {} · {}",
        data.model(cell).map_or("", |m| m.label.as_str()),
        data.method(cell).map_or("", |m| m.key()),
        data.category(cell).unwrap_or("")
    )
}

pub fn render(app: &StudyApp, t: &Theme, area: Rect, buf: &mut Buffer) {
    let d = &app.data;
    let cell = app.cell();
    let top = d.top_set(cell);
    let other = app.other();
    let shared: BTreeSet<(usize, usize)> = match other {
        Some(o) => top.intersection(&d.top_set(o)).copied().collect(),
        None => BTreeSet::new(),
    };
    let mut title = vec![Span::styled(
        format!("· • top-{} ", d.record.study.top_n),
        t.accent(),
    )];
    match other {
        Some(o) => title.push(Span::styled(
            format!("· ◆ {} shared with {} ", shared.len(), cell_label(d, o)),
            Style::new().fg(t.ablated),
        )),
        None if app.panes.heads.axis != SharedAxis::Off => {
            title.push(Span::styled("· nothing to compare with ", t.muted()))
        }
        None => {}
    }
    let block = frame(app, t, StudyPane::Heads, title);
    let inner = block.inner(area);
    block.render(area, buf);
    let model = d.model(cell);
    let stats = match (model, d.method(cell), d.category(cell)) {
        (Some(m), Some(method), Some(cat)) => m.stats.get(&(method, cat.to_string())),
        _ => None,
    };
    let (Some(shape), Some(stats)) = (model.and_then(|m| m.shape), stats) else {
        placeholder(
            t,
            inner,
            buf,
            "no detection statistics for this experiment yet",
        );
        return;
    };
    if inner.height < 4 || inner.width < 12 {
        return;
    }
    let mark = |l: usize, h: usize| {
        if shared.contains(&(l, h)) {
            Some(Mark {
                glyph: "◆",
                color: t.ablated,
            })
        } else if top.contains(&(l, h)) {
            Some(Mark {
                glyph: "•",
                color: t.cursor,
            })
        } else {
            None
        }
    };
    let signed = stats.mean.iter().flatten().any(|&v| v < 0.0);
    Grid {
        dims: shape,
        matrix: Some(&stats.mean),
        mlp: None,
        signed,
        cursor: app.panes.heads.cursor,
        mark: &mark,
    }
    .render(t, inner, buf);
    readout(app, t, stats, &top, &shared)
        .render(Rect::new(inner.x, inner.bottom() - 1, inner.width, 1), buf);
}

fn readout(
    app: &StudyApp,
    t: &Theme,
    stats: &crate::study::detect::HeadStats,
    top: &BTreeSet<(usize, usize)>,
    shared: &BTreeSet<(usize, usize)>,
) -> Line<'static> {
    let (l, h) = app.panes.heads.cursor;
    let Some(&v) = stats.mean.get(l).and_then(|r| r.get(h)) else {
        return Line::raw("");
    };
    let sign = stats.method.importance_sign();
    let better = stats
        .mean
        .iter()
        .flatten()
        .filter(|&&x| sign * x > sign * v)
        .count();
    let total: usize = stats.mean.iter().map(Vec::len).sum();
    let mut spans = vec![
        Span::styled(
            format!("L{l}H{h}"),
            Style::new().fg(t.cursor).add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(" {}", num(v))),
        Span::styled(
            format!("  rank {}/{total} · n {}", better + 1, stats.n),
            t.muted(),
        ),
    ];
    if shared.contains(&(l, h)) {
        spans.push(Span::styled("  ◆ shared", Style::new().fg(t.ablated)));
    } else if top.contains(&(l, h)) {
        spans.push(Span::styled("  • top list", Style::new().fg(t.cursor)));
    }
    Line::from(spans)
}
