//! The answer, token by token, coloured by probability, with MIRAGE's citations inline; the
//! token under the cursor is what every other pane looks at. Under a live ablation the pane shows
//! the ablated model's answer (which every other pane then explains) with the clean one below.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

use super::super::app::{App, JobSpec, Pane};
use super::super::theme::Theme;
use super::{frame, num, placeholder, scroll_to, show_token, wrap_items};
use crate::analysis::AnswerSource;

/// The answer pane's cursor: the answer position every pane looks at.
#[derive(Clone, Debug, Default)]
pub struct AnswerState {
    pub token: usize,
}

impl AnswerState {
    /// Moves by `by` tokens within an answer of `n`.
    pub fn move_by(&mut self, by: isize, n: usize) {
        if n == 0 {
            self.token = 0;
            return;
        }
        self.token = (self.token as isize)
            .saturating_add(by)
            .clamp(0, n as isize - 1) as usize;
    }

    /// Keeps the cursor within an answer of `n` tokens.
    pub fn clamp(&mut self, n: usize) {
        self.token = self.token.min(n.saturating_sub(1));
    }
}

/// Rows the pane takes (borders included).
pub fn height(_app: &App) -> u16 {
    7
}

pub fn render(app: &App, t: &Theme, area: Rect, buf: &mut Buffer) {
    let block = frame(app, t, Pane::Answer, title(app, t));
    let inner = block.inner(area);
    block.render(area, buf);
    if inner.height == 0 || inner.width == 0 {
        return;
    }
    if app.view.answer.tokens.is_empty() {
        placeholder(t, inner, buf, empty_message(app));
        return;
    }
    // Under an ablation the pane shows the ablated model's answer; one more row compares.
    let compare = compare(app);
    let live_rows = if compare.is_some() { 1 } else { 0 };
    let token_rows = inner.height.saturating_sub(1 + live_rows).max(1) as usize;
    draw_tokens(app, t, inner, token_rows, buf);
    let mut y = inner.y + token_rows as u16;
    if let Some((label, tokens, logprobs)) = compare {
        if y < inner.bottom() {
            compare_line(app, t, label, tokens, logprobs)
                .render(Rect::new(inner.x, y, inner.width, 1), buf);
            y += 1;
        }
    }
    if y < inner.bottom() {
        info_line(app, t).render(Rect::new(inner.x, y, inner.width, 1), buf);
    }
}

/// Where the answer comes from, its length and log-prob, and whether it is the expected one.
fn title<'a>(app: &App, t: &Theme) -> Vec<Span<'a>> {
    let mut title = Vec::new();
    let answer = &app.view.answer;
    if !answer.tokens.is_empty() {
        let src = match answer.source {
            Some(AnswerSource::Given) => "given",
            Some(AnswerSource::Generated) => "generated",
            None => "generating",
        };
        if !app.view.is_clean() {
            title.push(Span::styled(
                "ablated model · ",
                Style::new().fg(t.ablated).add_modifier(Modifier::BOLD),
            ));
        }
        title.push(Span::styled(
            format!(
                "{src} · {} tokens · log p {} ",
                answer.tokens.len(),
                num(answer.total_logprob())
            ),
            t.muted(),
        ));
    }
    if let Some(c) = app.view.report.as_ref().and_then(|r| r.answer_correct) {
        title.push(if c {
            Span::styled("✓ correct ", Style::new().fg(t.ok))
        } else {
            Span::styled("✗ not the expected answer ", Style::new().fg(t.warning))
        });
    }
    title
}

fn empty_message(app: &App) -> &'static str {
    match &app.jobs.running {
        Some(r) if r.spec == JobSpec::Open && app.info.is_none() => "loading the model…",
        Some(r) if r.spec == JobSpec::Open => "generating…",
        _ if app.jobs.open_failed => "no answer (see the status line)",
        _ => "no answer yet",
    }
}

/// The other answer to compare with: the clean one under an ablation, or the live re-run's.
fn compare(app: &App) -> Option<(&'static str, &[String], &[f32])> {
    match (app.clean_answer(), &app.editor.live) {
        (Some(clean), _) => Some(("clean ▸ ", &clean.tokens, &clean.logprobs)),
        (None, Some(live)) => Some(("ablated ▸ ", &live.tokens, &live.run.answer_logprobs)),
        (None, None) => None,
    }
}

/// `[i]` citation marks before each cited MIRAGE sentence: `(first token, marks)`.
fn citations(app: &App) -> Vec<(usize, String)> {
    app.view
        .report
        .as_ref()
        .and_then(|r| r.details.mirage.as_ref())
        .map(|m| {
            m.sentences
                .iter()
                .filter(|s| !s.cited.is_empty())
                .map(|s| {
                    let mut marks: String =
                        s.cited.iter().map(|d| format!("[{}]", d + 1)).collect();
                    marks.push(' ');
                    (s.tokens.start, marks)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The answer as items to wrap, coloured by probability, and per item its token.
fn token_items(app: &App, t: &Theme) -> (Vec<Span<'static>>, Vec<usize>) {
    let citations = citations(app);
    let answer = &app.view.answer;
    let mut items = Vec::with_capacity(answer.tokens.len() + citations.len());
    let mut item_token = Vec::with_capacity(items.capacity());
    for (i, tok) in answer.tokens.iter().enumerate() {
        for (_, marks) in citations.iter().filter(|(start, _)| *start == i) {
            items.push(Span::styled(
                marks.clone(),
                Style::new().fg(t.accent).add_modifier(Modifier::BOLD),
            ));
            item_token.push(i);
        }
        let p = answer
            .logprobs
            .get(i)
            .map_or(f64::NAN, |&lp| (lp as f64).exp());
        let mut style = Style::new().fg(t.probability.at(p));
        if i == app.token() {
            style = style
                .bg(t.selection)
                .add_modifier(Modifier::BOLD | Modifier::UNDERLINED);
        }
        items.push(Span::styled(show_token(tok), style));
        item_token.push(i);
    }
    if !answer.complete {
        items.push(Span::styled("▌", Style::new().fg(t.accent)));
        item_token.push(answer.tokens.len());
    }
    (items, item_token)
}

/// The answer's tokens, wrapped, scrolled so that the cursor's line shows.
fn draw_tokens(app: &App, t: &Theme, inner: Rect, token_rows: usize, buf: &mut Buffer) {
    let (items, item_token) = token_items(app, t);
    let lines = wrap_items(items, inner.width as usize);
    let cursor_line = lines
        .iter()
        .position(|l| {
            l.iter()
                .any(|(i, _)| item_token.get(*i) == Some(&app.token()))
        })
        .unwrap_or(0);
    let first = scroll_to(cursor_line, lines.len(), token_rows);
    for (row, line) in lines.into_iter().skip(first).take(token_rows).enumerate() {
        let spans: Vec<Span> = line.into_iter().map(|(_, s)| s).collect();
        Line::from(spans).render(
            Rect::new(inner.x, inner.y + row as u16, inner.width, 1),
            buf,
        );
    }
}

/// `clean ▸ The capital …  Δ log p −2.375`.
fn compare_line<'a>(
    app: &App,
    t: &Theme,
    label: &'a str,
    tokens: &[String],
    logprobs: &[f32],
) -> Line<'a> {
    let mut spans = vec![Span::styled(
        label,
        Style::new().fg(t.ablated).add_modifier(Modifier::BOLD),
    )];
    for (i, tok) in tokens.iter().enumerate() {
        let p = logprobs.get(i).map_or(f64::NAN, |&lp| (lp as f64).exp());
        spans.push(Span::styled(
            show_token(tok),
            Style::new().fg(t.probability.at(p)),
        ));
    }
    if let Some(live) = &app.editor.live {
        spans.push(Span::styled(
            format!("  Δ log p {}", signed(live.run.delta_logprob)),
            Style::new().fg(t.ablated),
        ));
    }
    Line::from(spans)
}

/// `#7 " Bren"  p 0.153  log p −1.877 │ CTI 0.42 ≥ 0.31`.
fn info_line(app: &App, t: &Theme) -> Line<'static> {
    let i = app.token();
    let Some(tok) = app.view.answer.tokens.get(i) else {
        return Line::raw("");
    };
    let lp = app.view.answer.logprobs.get(i).copied().unwrap_or(f32::NAN) as f64;
    let mut spans = vec![
        Span::styled(
            format!("token {}/{} ", i + 1, app.view.answer.tokens.len()),
            t.muted(),
        ),
        Span::styled(
            format!("{:?}", show_token(tok)),
            Style::new().fg(t.fg).add_modifier(Modifier::BOLD),
        ),
        Span::styled("  p ", t.muted()),
        Span::styled(num(lp.exp()), Style::new().fg(t.probability.at(lp.exp()))),
        Span::styled("  log p ", t.muted()),
        Span::raw(num(lp)),
    ];
    if let Some(m) = app
        .view
        .report
        .as_ref()
        .and_then(|r| r.details.mirage.as_ref())
    {
        if let Some(cti) = m.cti.get(i) {
            let cites = *cti >= m.cti_threshold;
            spans.push(Span::styled("  │ CTI ", t.muted()));
            spans.push(Span::styled(
                num(*cti),
                if cites {
                    Style::new().fg(t.accent).add_modifier(Modifier::BOLD)
                } else {
                    Style::new().fg(t.fg)
                },
            ));
            spans.push(Span::styled(
                format!(
                    " {} {}",
                    if cites { "≥" } else { "<" },
                    num(m.cti_threshold)
                ),
                t.muted(),
            ));
        }
    }
    Line::from(spans)
}

pub fn signed(v: f64) -> String {
    if v.is_finite() && v > 0.0 {
        format!("+{}", num(v))
    } else {
        num(v)
    }
}
