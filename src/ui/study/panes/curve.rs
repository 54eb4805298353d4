//! The selected experiment's accuracy against k: the top-k heads ablated, the random-k band (the
//! lowest and highest single draw around the pooled mean) and the layer-matched control, with a
//! table of the numbers under the chart and the selected k marked (the samples pane shows the
//! answers at that k).

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Widget};

use super::super::data::{Curve, CurvePoint};
use super::super::{StudyApp, StudyPane};
use super::{frame, pct};
use crate::study::summary::Estimate;
use crate::ui::panes::placeholder;
use crate::ui::theme::Theme;

/// The selected k, as an index into the study's k grid.
#[derive(Clone, Debug, Default)]
pub struct CurveState {
    pub k: usize,
}

impl CurveState {
    pub fn step(&mut self, by: isize, ks: usize) {
        if ks == 0 {
            return;
        }
        self.k = (self.k as isize + by).clamp(0, ks as isize - 1) as usize;
    }

    pub fn clamp(&mut self, ks: usize) {
        self.k = self.k.min(ks.saturating_sub(1));
    }
}

pub fn render(app: &StudyApp, t: &Theme, area: Rect, buf: &mut Buffer) {
    let curve = app.data.curve(app.cell());
    let mut title = vec![Span::styled(format!("· k = {} ", app.k()), t.accent())];
    if let Some(c) = &curve {
        let what = if c.complete {
            format!("· n {} · 95 % intervals ", c.n)
        } else {
            format!("· means of {} samples so far, no intervals yet ", c.n)
        };
        title.push(Span::styled(what, t.muted()));
    }
    let block = frame(app, t, StudyPane::Curve, title);
    let inner = block.inner(area);
    block.render(area, buf);
    let Some(curve) = curve else {
        placeholder(t, inner, buf, "no ablation results for this experiment yet");
        return;
    };
    let table_h = (curve.points.len() as u16 + 1).min(inner.height / 2);
    let chart = Rect::new(inner.x, inner.y, inner.width, inner.height - table_h - 1);
    chart_of(app, t, curve, chart, buf);
    legend(t).render(Rect::new(inner.x, chart.bottom(), inner.width, 1), buf);
    table(
        app,
        t,
        curve,
        Rect::new(inner.x, chart.bottom() + 1, inner.width, table_h),
        buf,
    );
}

fn chart_of(app: &StudyApp, t: &Theme, curve: &Curve, area: Rect, buf: &mut Buffer) {
    let series = |f: fn(&CurvePoint) -> f64| -> Vec<(f64, f64)> {
        curve.points.iter().map(|p| (p.k as f64, f(p))).collect()
    };
    let top = series(|p| p.top.value);
    let random = series(|p| p.random.value);
    let lo = series(|p| p.band.0);
    let hi = series(|p| p.band.1);
    let matched = series(|p| p.layer_matched.value);
    let k = app.k() as f64;
    let selected: Vec<(f64, f64)> = (0..=20).map(|i| (k, i as f64 / 20.0)).collect();
    let x1 = curve.points.last().map_or(1.0, |p| p.k as f64).max(1.0);
    let line = |name: &'static str, data, color, marker| {
        Dataset::default()
            .name(name)
            .marker(marker)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(color))
            .data(data)
    };
    let sets = vec![
        Dataset::default()
            .marker(Marker::Dot)
            .graph_type(GraphType::Scatter)
            .style(t.muted())
            .data(&selected),
        line("random band", &lo, t.muted, Marker::Braille),
        line("", &hi, t.muted, Marker::Braille),
        line("layer-matched", &matched, t.accent, Marker::Braille),
        line("random k", &random, t.curve_random, Marker::Braille),
        line("top-k", &top, t.curve_top, Marker::Braille),
    ];
    Chart::new(sets)
        .style(Style::new().fg(t.fg))
        .x_axis(
            Axis::default()
                .title(Span::styled("k", t.muted()))
                .style(t.muted())
                .bounds([0.0, x1])
                .labels([Span::raw("0"), Span::raw(format!("{x1:.0}"))]),
        )
        .y_axis(
            Axis::default()
                .style(t.muted())
                .bounds([0.0, 1.0])
                .labels([Span::raw("0"), Span::raw("1")]),
        )
        .render(area, buf);
}

/// Which line is which (the chart's own legend would cover the lines in a small pane).
fn legend(t: &Theme) -> Line<'static> {
    let key = |c, name: &str| {
        vec![
            Span::styled("━━ ", Style::new().fg(c)),
            Span::styled(format!("{name}   "), t.muted()),
        ]
    };
    let mut spans = Vec::new();
    spans.extend(key(t.curve_top, "top-k accuracy"));
    spans.extend(key(t.curve_random, "random k"));
    spans.extend(key(t.muted, "lowest / highest draw"));
    spans.extend(key(t.accent, "layer-matched"));
    Line::from(spans)
}

/// `k │ top │ random [band] │ layer-matched`, one row per k, the selected one highlighted.
fn table(app: &StudyApp, t: &Theme, curve: &Curve, area: Rect, buf: &mut Buffer) {
    let est = |e: &Estimate| -> String {
        if curve.complete {
            format!(
                "{} [{:.0}, {:.0}]",
                pct(e.value),
                100.0 * e.lo,
                100.0 * e.hi
            )
        } else {
            pct(e.value)
        }
    };
    let head = Line::styled(
        format!(
            "{:>5}  {:<18} {:<28} {}",
            "k", "top-k", "random k (draws)", "layer-matched"
        ),
        t.muted().add_modifier(Modifier::BOLD),
    );
    head.render(Rect { height: 1, ..area }, buf);
    for (i, p) in curve
        .points
        .iter()
        .enumerate()
        .take(area.height.saturating_sub(1) as usize)
    {
        let random = format!(
            "{} ({:.0}–{:.0})",
            est(&p.random),
            100.0 * p.band.0,
            100.0 * p.band.1
        );
        let text = format!(
            "{:>5}  {:<18} {:<28} {}",
            p.k,
            est(&p.top),
            random,
            est(&p.layer_matched)
        );
        let style = if p.k == app.k() {
            t.selected().fg(t.fg).add_modifier(Modifier::BOLD)
        } else {
            t.base()
        };
        buf.set_stringn(
            area.x,
            area.y + 1 + i as u16,
            text,
            area.width as usize,
            style,
        );
    }
}
