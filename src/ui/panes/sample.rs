//! The sample: the question and the documents, wrapped and scrollable. The source under focus
//! in the attribution pane is highlighted in its attribution colour, and scrolled into view.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

use super::super::app::{App, Pane};
use super::super::theme::{contrast_fg, Theme};
use super::attribution::source_color;
use super::scroll::Scroll;
use super::{frame, words, wrap_items};
use crate::prompt::Document;

/// The sample pane's state: it follows the focused source until scrolled by hand.
#[derive(Clone, Debug)]
pub struct SampleState {
    pub scroll: Scroll,
    /// The pane scrolls to the focused source until the user scrolls it by hand.
    pub follow: bool,
}

impl Default for SampleState {
    fn default() -> Self {
        SampleState {
            scroll: Scroll::default(),
            follow: true,
        }
    }
}

pub fn render(app: &App, t: &Theme, area: Rect, buf: &mut Buffer) {
    let n_docs = app.sample.docs.len();
    let title = vec![Span::styled(format!("· {n_docs} documents "), t.muted())];
    let block = frame(app, t, Pane::Sample, title);
    let inner = block.inner(area);
    block.render(area, buf);
    if inner.height == 0 || inner.width < 4 {
        return;
    }
    let focus = focus(app, t);
    let (lines, focus_line) = sample_lines(app, t, focus.as_ref(), inner.width as usize);
    let height = inner.height as usize;
    let max_first = lines.len().saturating_sub(height);
    let scroll = &app.panes.sample.scroll;
    scroll.set_max(max_first);
    let first = if app.panes.sample.follow {
        // Scroll only as far as needed to show the focused source's first lines.
        focus_line
            .map_or(0, |l| (l + 4).saturating_sub(height))
            .min(max_first)
    } else {
        scroll.top()
    };
    for (row, line) in lines.into_iter().skip(first).take(height).enumerate() {
        line.render(
            Rect::new(inner.x, inner.y + row as u16, inner.width, 1),
            buf,
        );
    }
    if max_first > 0 {
        // A one-column scroll position on the right border.
        let pos = (first * (area.height.saturating_sub(3)) as usize) / max_first.max(1);
        let y = area.y + 1 + pos as u16;
        if y < area.bottom() - 1 {
            buf.set_string(area.right() - 1, y, "┃", t.accent());
        }
    }
}

/// The source under focus in the attribution pane: which document, which part of its text (a
/// sentence, at sentence granularity), in which colour.
struct Focus {
    doc: usize,
    sentence: Option<String>,
    color: Color,
}

fn focus(app: &App, t: &Theme) -> Option<Focus> {
    let a = &app.panes.attribution;
    let n_docs = app.sample.docs.len();
    let from_report = app.attribution_report().and_then(|r| {
        let i = a.cursor.min(r.sources.len().checked_sub(1)?);
        let src = r.sources.get(i)?;
        let color = app
            .attribution()
            .and_then(|s| source_color(t, s, i))
            .unwrap_or(t.selection);
        Some(Focus {
            doc: src.document,
            sentence: a.sentences.then(|| src.text.trim().to_string()),
            color,
        })
    });
    from_report.or_else(|| {
        (!a.sentences && n_docs > 0).then(|| Focus {
            doc: a.cursor.min(n_docs - 1),
            sentence: None,
            color: t.selection,
        })
    })
}

/// The question and the documents wrapped to `width`, and the line to keep in view.
fn sample_lines(
    app: &App,
    t: &Theme,
    focus: Option<&Focus>,
    width: usize,
) -> (Vec<Line<'static>>, Option<usize>) {
    let mut lines: Vec<Line> = Vec::new();
    let mut focus_line = None;
    let mut q_items = vec![Span::styled("Q ", t.accent().add_modifier(Modifier::BOLD))];
    q_items.extend(words(
        &app.sample.question,
        Style::new().fg(t.fg).add_modifier(Modifier::BOLD),
    ));
    push_wrapped(&mut lines, q_items, width);
    let gold = app.sample.gold();
    for (d, doc) in app.sample.docs.iter().enumerate() {
        let focused = focus.filter(|f| f.doc == d);
        let at = push_document(&mut lines, t, d, doc, gold == Some(d), focused, width);
        focus_line = at.or(focus_line);
    }
    (lines, focus_line)
}

/// Document `d`'s title and text, the focused part highlighted. Returns the line to keep in
/// view when it is the focused document.
fn push_document(
    lines: &mut Vec<Line<'static>>,
    t: &Theme,
    d: usize,
    doc: &Document,
    gold: bool,
    focused: Option<&Focus>,
    width: usize,
) -> Option<usize> {
    lines.push(Line::raw(""));
    let hl = focused.map(|f| Style::new().bg(f.color).fg(contrast_fg(f.color)));
    let mut focus_line = focused.map(|_| lines.len());
    let mut title_style = Style::new().fg(t.title).add_modifier(Modifier::BOLD);
    if let (Some(h), Some(None)) = (hl, focused.map(|f| &f.sentence)) {
        title_style = title_style.patch(h);
    }
    let mut title = vec![Span::styled(format!("[{}] ", d + 1), t.accent())];
    title.extend(words(&doc.title, title_style));
    if gold {
        title.push(Span::styled(" ★ gold", Style::new().fg(t.warning)));
    }
    push_wrapped(lines, title, width);

    let plain = Style::new().fg(t.fg);
    let items = match (focused.map(|f| &f.sentence), hl) {
        (Some(None), Some(h)) => words(&doc.text, h),
        (Some(Some(sentence)), Some(h)) => match doc.text.find(sentence.as_str()) {
            Some(at) if !sentence.is_empty() => {
                let mut v = words(&doc.text[..at], plain);
                v.extend(words(sentence, h));
                v.extend(words(&doc.text[at + sentence.len()..], plain));
                // The sentence's line, not the document's, is the one to show.
                let before: usize = doc.text[..at].chars().count();
                focus_line = Some(lines.len() + before / width.max(1));
                v
            }
            _ => words(&doc.text, plain),
        },
        _ => words(&doc.text, plain),
    };
    push_wrapped(lines, items, width);
    focus_line
}

fn push_wrapped(lines: &mut Vec<Line<'static>>, items: Vec<Span<'static>>, width: usize) {
    for l in wrap_items(items, width) {
        lines.push(Line::from(
            l.into_iter().map(|(_, s)| s).collect::<Vec<_>>(),
        ));
    }
}
