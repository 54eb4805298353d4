//! Source attribution: one bar per document (or sentence) for the selected method, and what the
//! method says about the answer token under the cursor (ARC-JSD's per-token divergence, the
//! scores of the MIRAGE sentence holding the token).

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

use super::super::app::{App, Attribution, Pane};
use super::super::theme::Theme;
use super::heatmap::{position, range};
use super::{clip, frame, num, placeholder, scroll_to, show_token, waiting_for};
use crate::analysis::report::AnalysisReport;

/// The colour of source `i`'s score: the heatmap scale over the sources' range (used by the
/// sample pane too, so a source looks the same in both).
pub fn source_color(t: &Theme, scores: &[f64], i: usize) -> Option<Color> {
    let v = *scores.get(i)?;
    let (lo, hi) = range(scores.iter())?;
    if !v.is_finite() {
        return None;
    }
    let signed = lo < 0.0;
    let s = if signed { &t.diverging } else { &t.heatmap };
    Some(s.at(position(v, lo.min(0.0), hi, signed)))
}

/// Per source, the method's value at answer token `token`, where it has one.
fn at_token(report: &AnalysisReport, method: Attribution, token: usize) -> Option<Vec<f64>> {
    match method {
        Attribution::ArcJsd => {
            let a = report.details.arc_jsd.as_ref()?;
            Some(
                a.per_token
                    .iter()
                    .map(|row| row.get(token).copied().unwrap_or(f64::NAN))
                    .collect(),
            )
        }
        Attribution::Mirage => {
            let m = report.details.mirage.as_ref()?;
            let s = m.sentences.iter().find(|s| s.tokens.contains(&token))?;
            // Per document; at sentence granularity map each source to its document.
            Some(
                report
                    .sources
                    .iter()
                    .map(|src| s.doc_scores.get(src.document).copied().unwrap_or(f64::NAN))
                    .collect(),
            )
        }
        _ => None,
    }
}

pub fn render(app: &App, t: &Theme, area: Rect, buf: &mut Buffer) {
    let gran = if app.sentences {
        "sentences"
    } else {
        "documents"
    };
    let title = vec![
        Span::styled(format!("· {} ", app.attr_method.label()), t.accent()),
        Span::styled(format!("· {gran} (s) "), t.muted()),
    ];
    let block = frame(app, t, Pane::Attribution, title);
    let inner = block.inner(area);
    block.render(area, buf);
    let report = app.attribution_report();
    let scores = app.attribution();
    let (Some(report), Some(scores)) = (report, scores) else {
        let what = format!("{} ({gran})", app.attr_method.label());
        let msg = if app.sentences && app.sentence_report.is_none() {
            if app.sentences_failed {
                format!("{what} failed (see the status line)")
            } else {
                format!("{what}: computing…")
            }
        } else {
            waiting_for(app, app.attr_method.stage(), &what)
        };
        placeholder(t, inner, buf, &msg);
        return;
    };
    if inner.height < 2 || inner.width < 30 {
        return;
    }
    let per_token = at_token(report, app.attr_method, app.token);
    let footer_rows = 1u16;
    let list_rows = inner.height.saturating_sub(footer_rows + 1) as usize;
    let n = report.sources.len();
    let cursor = app.source_cursor.min(n.saturating_sub(1));
    let first = scroll_to(cursor, n, list_rows);

    let label_w = report
        .sources
        .iter()
        .map(|s| s.label.len())
        .max()
        .unwrap_or(2)
        + 2;
    let value_w = 8usize;
    let tok_w = if per_token.is_some() { 8usize } else { 0 };
    let bar_w =
        ((inner.width as usize).saturating_sub(label_w + value_w + tok_w + 2) * 2 / 5).max(4);
    let text_w = (inner.width as usize).saturating_sub(label_w + bar_w + value_w + tok_w + 2);
    let max_abs = scores
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f64, |m, v| m.max(v.abs()));

    // Column heads.
    let mut head = format!("{:<label_w$}{:<bar_w$}{:>value_w$}", "", "", "score");
    if per_token.is_some() {
        head.push_str(&format!("{:>tok_w$}", format!("@{}", app.token + 1)));
    }
    buf.set_stringn(inner.x, inner.y, &head, inner.width as usize, t.muted());

    for (row, i) in (first..n).take(list_rows).enumerate() {
        let y = inner.y + 1 + row as u16;
        let src = &report.sources[i];
        let v = scores.get(i).copied().unwrap_or(f64::NAN);
        let selected = i == cursor;
        let base = if selected { t.selected() } else { Style::new() };
        buf.set_style(Rect::new(inner.x, y, inner.width, 1), base);
        let gold = report.gold == Some(src.document) && (!app.sentences || selected);
        let label = format!(
            "{}{}{}",
            if selected { "▸" } else { " " },
            src.label,
            if gold { "★" } else { "" }
        );
        let mut x = inner.x;
        buf.set_stringn(
            x,
            y,
            &label,
            label_w,
            base.fg(if selected { t.accent } else { t.fg }),
        );
        x += label_w as u16;
        // The bar, in the source's colour; eighths for a smooth end.
        let frac = if max_abs > 0.0 && v.is_finite() {
            v.abs() / max_abs
        } else {
            0.0
        };
        let color = if v < 0.0 {
            t.bar_negative
        } else {
            source_color(t, scores, i).unwrap_or(t.bar)
        };
        let bar = bar_string(frac, bar_w);
        buf.set_stringn(x, y, &bar, bar_w, base.fg(color));
        x += bar_w as u16;
        buf.set_stringn(
            x,
            y,
            format!("{:>value_w$}", num(v)),
            value_w,
            base.fg(t.fg),
        );
        x += value_w as u16;
        if let Some(pt) = &per_token {
            let tv = pt.get(i).copied().unwrap_or(f64::NAN);
            buf.set_stringn(
                x,
                y,
                format!("{:>tok_w$}", num(tv)),
                tok_w,
                base.fg(t.accent),
            );
            x += tok_w as u16;
        }
        let snippet = show_token(&src.text);
        buf.set_stringn(x + 2, y, clip(&snippet, text_w), text_w, base.fg(t.muted));
    }

    let fy = inner.bottom() - 1;
    footer(app, t, report).render(Rect::new(inner.x, fy, inner.width, 1), buf);
}

/// `frac` of `width` cells as a bar with an eighth-block end.
pub fn bar_string(frac: f64, width: usize) -> String {
    const EIGHTHS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let total = (frac.clamp(0.0, 1.0) * width as f64 * 8.0).round() as usize;
    let full = total / 8;
    let mut s: String = "█".repeat(full.min(width));
    if full < width {
        s.push(EIGHTHS[total % 8]);
        s.extend(std::iter::repeat_n(' ', width - full - 1));
    }
    s
}

/// One line on what the method adds: MIRAGE's cited answer, marginal's no-document baseline...
fn footer(app: &App, t: &Theme, report: &AnalysisReport) -> Line<'static> {
    let d = &report.details;
    let muted = t.muted();
    let spans = match app.attr_method {
        Attribution::Mirage => match &d.mirage {
            Some(m) => vec![
                Span::styled("cited: ", muted),
                Span::styled(show_token(&m.cited_answer), Style::new().fg(t.fg)),
            ],
            None => vec![],
        },
        Attribution::ArcJsd => match &d.arc_jsd {
            Some(a) => vec![
                Span::styled("top ", muted),
                Span::styled(
                    report
                        .sources
                        .get(a.top)
                        .map_or("?".into(), |s| s.label.clone()),
                    t.accent().add_modifier(Modifier::BOLD),
                ),
                Span::styled(" · @t: divergence at the cursor's token", muted),
            ],
            None => vec![],
        },
        Attribution::Marginal => match &d.marginal {
            Some(m) => vec![Span::styled(
                format!(
                    "posterior p(source | answer) · log p(answer | no documents) {}",
                    num(m.loglik_no_documents)
                ),
                muted,
            )],
            None => vec![],
        },
        Attribution::ContextCite => match &d.context_cite {
            Some(c) => vec![Span::styled(
                format!(
                    "Lasso surrogate over tokens {}..{} · intercept {}{}",
                    c.span.start,
                    c.span.end,
                    num(c.intercept),
                    if c.converged { "" } else { " · not converged" }
                ),
                muted,
            )],
            None => vec![],
        },
        Attribution::Attention => vec![Span::styled(
            "mean attention mass over all layers, heads and answer positions",
            muted,
        )],
    };
    Line::from(spans)
}
