//! AblationSet: the heads and MLPs knocked out, how, the answer they leave and its Δ log-prob, and
//! the top-k vs random ablation curve with the live set as a point on it.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph, Widget, Wrap};

use super::super::app::{App, JobSpec, Pane};
use super::super::theme::Theme;
use super::answer::signed;
use super::scroll::Scroll;
use super::{frame, num, show_token, waiting_for};
use crate::analysis::report::Method;

/// The ablation pane's state: how far its text is scrolled.
#[derive(Clone, Debug, Default)]
pub struct AblationState {
    pub scroll: Scroll,
}

pub fn render(app: &App, t: &Theme, area: Rect, buf: &mut Buffer) {
    let a = &app.editor.set;
    let title = vec![
        Span::styled(format!("· {} ", a.mode.label()), t.accent()),
        Span::styled(format!("· k {} ", app.editor.top_k), t.muted()),
    ];
    let block = frame(app, t, Pane::Ablation, title);
    let inner = block.inner(area);
    block.render(area, buf);
    if inner.height < 3 || inner.width < 20 {
        return;
    }
    let [text_area, chart_area] = if inner.width >= 70 {
        let [t, _, c] = inner.layout(&Layout::horizontal([
            Constraint::Percentage(50),
            Constraint::Length(2),
            Constraint::Fill(1),
        ]));
        [t, c]
    } else {
        inner.layout(&Layout::vertical([
            Constraint::Percentage(55),
            Constraint::Fill(1),
        ]))
    };
    let text = Paragraph::new(text(app, t)).wrap(Wrap { trim: false });
    let scroll = &app.panes.ablation.scroll;
    let rows = text.line_count(text_area.width);
    scroll.set_max(rows.saturating_sub(text_area.height as usize));
    let top = scroll.top().min(u16::MAX as usize) as u16;
    text.scroll((top, 0)).render(text_area, buf);
    chart(app, t, chart_area, buf);
}

fn text(app: &App, t: &Theme) -> Vec<Line<'static>> {
    let a = &app.editor.set;
    let muted = t.muted();
    let mut lines = Vec::new();
    let mut set_line = vec![Span::styled(
        format!(
            "{} head{}, {} MLP{}",
            a.heads.len(),
            if a.heads.len() == 1 { "" } else { "s" },
            a.mlps.len(),
            if a.mlps.len() == 1 { "" } else { "s" }
        ),
        Style::new().fg(t.fg).add_modifier(Modifier::BOLD),
    )];
    set_line.push(Span::styled(
        format!(" · {} (t) · k {} (+/-)", a.mode.label(), app.editor.top_k),
        muted,
    ));
    lines.push(Line::from(set_line));
    if a.is_empty() {
        lines.push(Line::styled(
            "nothing ablated: space toggles the head under the cursor, a the top-k, R k random",
            muted,
        ));
        return lines;
    }
    let mut ids = vec![Span::styled("✕ ", Style::new().fg(t.ablated))];
    for (i, label) in a.item_labels().into_iter().enumerate() {
        if i > 0 {
            ids.push(Span::raw(" "));
        }
        ids.push(Span::styled(label, Style::new().fg(t.ablated)));
    }
    lines.push(Line::from(ids));

    let running_live = app
        .jobs
        .running
        .as_ref()
        .is_some_and(|r| matches!(r.spec, JobSpec::Live(_)));
    let state = if running_live {
        Some(Span::styled("re-running…", Style::new().fg(t.warning)))
    } else if app.editor.dirty {
        Some(Span::styled(
            "re-run pending (enter runs now)",
            Style::new().fg(t.warning),
        ))
    } else {
        None
    };
    match &app.editor.live {
        Some(live) => {
            let stale = live.set() != a;
            lines.push(Line::from(vec![
                Span::styled("answer ", muted),
                Span::styled(
                    show_token(&live.run.answer_text),
                    Style::new().fg(t.fg).add_modifier(Modifier::BOLD),
                ),
                Span::styled(
                    match live.run.first_change {
                        Some(i) => format!("  (departs at token {})", i + 1),
                        None => "  (unchanged)".into(),
                    },
                    muted,
                ),
            ]));
            let delta_style = Style::new()
                .fg(if live.run.delta_logprob < 0.0 {
                    t.ablated
                } else {
                    t.ok
                })
                .add_modifier(Modifier::BOLD);
            lines.push(Line::from(vec![
                Span::styled("Δ log p ", muted),
                Span::styled(signed(live.run.delta_logprob), delta_style),
                Span::styled(
                    format!(
                        "  ({} → {})",
                        num(live.clean_logprob()),
                        num(live.run.original_answer_logprob)
                    ),
                    muted,
                ),
            ]));
            lines.push(Line::styled(
                format!(
                    "{} · {} forward{} · {}s{}",
                    live.run
                        .recomputed_from_layer
                        .map_or("nothing recomputed".to_string(), |l| format!(
                            "from layer {l}"
                        )),
                    live.run.forwards,
                    if live.run.forwards == 1 { "" } else { "s" },
                    num(live.run.seconds),
                    if stale {
                        " · for the previous set"
                    } else {
                        ""
                    }
                ),
                muted,
            ));
        }
        None if state.is_none() => lines.push(Line::styled("not run yet (enter runs it)", muted)),
        None => {}
    }
    if let Some(s) = state {
        lines.push(Line::from(s));
    }
    lines
}

fn chart(app: &App, t: &Theme, area: Rect, buf: &mut Buffer) {
    // The unablated model's curve: the live set is a point on it.
    let Some(curve) = app.clean_report().and_then(|r| r.ablation_curve.as_ref()) else {
        let stage = Method::AblationCurve.stage();
        let msg = waiting_for(app, stage, "ablation curve");
        Paragraph::new(Line::styled(msg, t.muted()))
            .wrap(Wrap { trim: true })
            .centered()
            .render(
                Rect::new(area.x, area.y + area.height / 2, area.width, 1),
                buf,
            );
        return;
    };
    if area.height < 4 || area.width < 16 {
        return;
    }
    let top: Vec<(f64, f64)> = curve
        .points
        .iter()
        .map(|p| (p.k as f64, p.top_logprob))
        .collect();
    let random: Vec<(f64, f64)> = curve
        .points
        .iter()
        .filter_map(|p| Some((p.k as f64, p.random_logprob_mean?)))
        .collect();
    // The explorer draws the top-k line first and the random band a stage later.
    let random_name = if curve.config.draws == 0 {
        format!("random k (stage {})", Method::CURVE_BAND_STAGE)
    } else {
        "random k".to_string()
    };
    let live: Vec<(f64, f64)> = app
        .editor
        .live
        .as_ref()
        .filter(|l| l.set().mlps.is_empty())
        .map(|l| vec![(l.set().heads.len() as f64, l.run.original_answer_logprob)])
        .unwrap_or_default();
    let all = top.iter().chain(&random).chain(&live);
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut x1: f64 = 1.0;
    for &(x, y) in all {
        if y.is_finite() {
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        x1 = x1.max(x);
    }
    if !y0.is_finite() {
        (y0, y1) = (-1.0, 0.0);
    }
    let pad = ((y1 - y0) * 0.08).max(1e-3);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let mut sets = vec![
        Dataset::default()
            .name(format!("top-k {}", curve.score))
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(t.curve_top))
            .data(&top),
        Dataset::default()
            .name(random_name)
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(t.curve_random))
            .data(&random),
    ];
    if !live.is_empty() {
        sets.push(
            Dataset::default()
                .name("live set")
                .marker(Marker::Block)
                .graph_type(GraphType::Scatter)
                .style(Style::new().fg(t.ablated))
                .data(&live),
        );
    }
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
                .title(Span::styled("log p", t.muted()))
                .style(t.muted())
                .bounds([y0, y1])
                .labels([Span::raw(num(y0)), Span::raw(num(y1))]),
        )
        .render(area, buf);
}
