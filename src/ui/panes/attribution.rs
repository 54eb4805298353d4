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

/// The attribution pane's state: the method shown (`M` cycles), documents or sentences (`s`),
/// and the source cursor.
#[derive(Clone, Debug)]
pub struct AttributionState {
    pub method: Attribution,
    pub sentences: bool,
    pub cursor: usize,
    /// Until the user moves it, the source cursor sits on the top source of the method shown.
    pub moved: bool,
}

impl Default for AttributionState {
    fn default() -> Self {
        AttributionState {
            method: Attribution::ArcJsd,
            sentences: false,
            cursor: 0,
            moved: false,
        }
    }
}

impl AttributionState {
    /// Moves the cursor by `by` within `n` sources (by hand: it stops following the top
    /// source). False when there is nothing to move over.
    pub fn move_by(&mut self, by: isize, n: usize) -> bool {
        if n == 0 {
            self.cursor = 0;
            return false;
        }
        self.cursor = (self.cursor as isize + by).clamp(0, n as isize - 1) as usize;
        self.moved = true;
        true
    }

    /// Puts the cursor on `top` (the method's top source) unless the user moved it.
    pub fn follow(&mut self, top: Option<usize>) {
        if let (false, Some(top)) = (self.moved, top) {
            self.cursor = top;
        }
    }

    /// Documents ⇄ sentences, the cursor back on the top source; the new granularity.
    pub fn toggle_sentences(&mut self) -> bool {
        self.sentences = !self.sentences;
        self.cursor = 0;
        self.moved = false;
        self.sentences
    }
}

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
    let gran = granularity(app);
    let method = app.panes.attribution.method;
    let title = vec![
        Span::styled(format!("· {} ", method.label()), t.accent()),
        Span::styled(format!("· {gran} (s) "), t.muted()),
    ];
    let block = frame(app, t, Pane::Attribution, title);
    let inner = block.inner(area);
    block.render(area, buf);
    let (Some(report), Some(scores)) = (app.attribution_report(), app.attribution()) else {
        placeholder(t, inner, buf, &pending_message(app));
        return;
    };
    if inner.height < 2 || inner.width < 30 {
        return;
    }
    let per_token = at_token(report, method, app.token());
    let cols = Columns::new(report, per_token.is_some(), inner.width as usize);
    let list_rows = inner.height.saturating_sub(2) as usize;
    let n = report.sources.len();
    let cursor = app.panes.attribution.cursor.min(n.saturating_sub(1));
    let first = scroll_to(cursor, n, list_rows);
    buf.set_stringn(
        inner.x,
        inner.y,
        cols.head(app, per_token.is_some()),
        inner.width as usize,
        t.muted(),
    );
    let max_abs = scores
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f64, |m, v| m.max(v.abs()));
    let row = RowCtx {
        app,
        t,
        report,
        scores,
        per_token: per_token.as_deref(),
        cols: &cols,
        max_abs,
        cursor,
    };
    for (r, i) in (first..n).take(list_rows).enumerate() {
        row.draw(
            i,
            Rect::new(inner.x, inner.y + 1 + r as u16, inner.width, 1),
            buf,
        );
    }
    let fy = inner.bottom() - 1;
    footer(app, t, report).render(Rect::new(inner.x, fy, inner.width, 1), buf);
}

fn granularity(app: &App) -> &'static str {
    if app.panes.attribution.sentences {
        "sentences"
    } else {
        "documents"
    }
}

/// What the pane says while its method's scores are not there.
fn pending_message(app: &App) -> String {
    let method = app.panes.attribution.method;
    let what = format!("{} ({})", method.label(), granularity(app));
    if app.panes.attribution.sentences && app.view.sentence_report.is_none() {
        if app.view.sentences_failed {
            format!("{what} failed (see the status line)")
        } else {
            format!("{what}: computing…")
        }
    } else {
        waiting_for(app, method.stage(), &what)
    }
}

/// Column widths: label, bar, score, the value at the cursor's token (when the method has one)
/// and the source's text.
struct Columns {
    label: usize,
    bar: usize,
    value: usize,
    tok: usize,
    text: usize,
}

impl Columns {
    fn new(report: &AnalysisReport, per_token: bool, width: usize) -> Columns {
        let label = report
            .sources
            .iter()
            .map(|s| s.label.len())
            .max()
            .unwrap_or(2)
            + 2;
        let value = 8usize;
        let tok = if per_token { 8usize } else { 0 };
        let bar = (width.saturating_sub(label + value + tok + 2) * 2 / 5).max(4);
        let text = width.saturating_sub(label + bar + value + tok + 2);
        Columns {
            label,
            bar,
            value,
            tok,
            text,
        }
    }

    /// The column heads.
    fn head(&self, app: &App, per_token: bool) -> String {
        let (label_w, bar_w, value_w, tok_w) = (self.label, self.bar, self.value, self.tok);
        let mut head = format!("{:<label_w$}{:<bar_w$}{:>value_w$}", "", "", "score");
        if per_token {
            head.push_str(&format!("{:>tok_w$}", format!("@{}", app.token() + 1)));
        }
        head
    }
}

/// What every source's row is drawn from.
struct RowCtx<'a> {
    app: &'a App,
    t: &'a Theme,
    report: &'a AnalysisReport,
    scores: &'a [f64],
    per_token: Option<&'a [f64]>,
    cols: &'a Columns,
    max_abs: f64,
    cursor: usize,
}

impl RowCtx<'_> {
    /// Source `i`'s row: label, bar, score, the value at the token, a snippet of its text.
    fn draw(&self, i: usize, line: Rect, buf: &mut Buffer) {
        let (t, c) = (self.t, self.cols);
        let y = line.y;
        let src = &self.report.sources[i];
        let v = self.scores.get(i).copied().unwrap_or(f64::NAN);
        let selected = i == self.cursor;
        let base = if selected { t.selected() } else { Style::new() };
        buf.set_style(line, base);
        let gold = self.report.gold == Some(src.document)
            && (!self.app.panes.attribution.sentences || selected);
        let label = format!(
            "{}{}{}",
            if selected { "▸" } else { " " },
            src.label,
            if gold { "★" } else { "" }
        );
        let mut x = line.x;
        let label_fg = if selected { t.accent } else { t.fg };
        buf.set_stringn(x, y, &label, c.label, base.fg(label_fg));
        x += c.label as u16;
        // The bar, in the source's colour; eighths for a smooth end.
        let frac = if self.max_abs > 0.0 && v.is_finite() {
            v.abs() / self.max_abs
        } else {
            0.0
        };
        let color = if v < 0.0 {
            t.bar_negative
        } else {
            source_color(t, self.scores, i).unwrap_or(t.bar)
        };
        buf.set_stringn(x, y, bar_string(frac, c.bar), c.bar, base.fg(color));
        x += c.bar as u16;
        let value = format!("{:>w$}", num(v), w = c.value);
        buf.set_stringn(x, y, value, c.value, base.fg(t.fg));
        x += c.value as u16;
        if let Some(pt) = self.per_token {
            let tv = pt.get(i).copied().unwrap_or(f64::NAN);
            let value = format!("{:>w$}", num(tv), w = c.tok);
            buf.set_stringn(x, y, value, c.tok, base.fg(t.accent));
            x += c.tok as u16;
        }
        let snippet = show_token(&src.text);
        buf.set_stringn(x + 2, y, clip(&snippet, c.text), c.text, base.fg(t.muted));
    }
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
    let spans = match app.panes.attribution.method {
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
