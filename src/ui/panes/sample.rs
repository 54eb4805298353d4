//! The sample: the question and the documents, wrapped and scrollable. The source under focus
//! in the attribution pane is highlighted in its attribution colour, and scrolled into view.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

use super::super::app::{App, Pane};
use super::super::theme::{contrast_fg, Theme};
use super::attribution::source_color;
use super::scroll::Scroll;
use super::{frame, words, wrap_items};

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
    let width = inner.width as usize;

    // The focused source: which document, which part of its text, in which colour.
    let report = app.attribution_report();
    let focus = report.and_then(|r| {
        let i = app
            .panes
            .attribution
            .cursor
            .min(r.sources.len().checked_sub(1)?);
        let src = r.sources.get(i)?;
        let color = app
            .attribution()
            .and_then(|s| source_color(t, s, i))
            .unwrap_or(t.selection);
        Some((
            src.document,
            app.panes
                .attribution
                .sentences
                .then(|| src.text.trim().to_string()),
            color,
        ))
    });
    let focus = focus.or_else(|| {
        (!app.panes.attribution.sentences && n_docs > 0).then(|| {
            (
                app.panes.attribution.cursor.min(n_docs - 1),
                None,
                t.selection,
            )
        })
    });

    let mut lines: Vec<Line> = Vec::new();
    let mut focus_line = None;
    let q_items = {
        let mut v = vec![Span::styled("Q ", t.accent().add_modifier(Modifier::BOLD))];
        v.extend(words(
            &app.sample.question,
            Style::new().fg(t.fg).add_modifier(Modifier::BOLD),
        ));
        v
    };
    push_wrapped(&mut lines, q_items, width);
    let gold = app.sample.gold();
    for (d, doc) in app.sample.docs.iter().enumerate() {
        lines.push(Line::raw(""));
        let focused_doc = focus.as_ref().filter(|f| f.0 == d);
        let hl = focused_doc.map(|f| Style::new().bg(f.2).fg(contrast_fg(f.2)));
        if focused_doc.is_some() {
            focus_line = Some(lines.len());
        }
        let mut title_style = Style::new().fg(t.title).add_modifier(Modifier::BOLD);
        if let (Some(h), Some(None)) = (hl, focused_doc.map(|f| &f.1)) {
            title_style = title_style.patch(h);
        }
        let mut title = vec![Span::styled(format!("[{}] ", d + 1), t.accent())];
        title.extend(words(&doc.title, title_style));
        if gold == Some(d) {
            title.push(Span::styled(" ★ gold", Style::new().fg(t.warning)));
        }
        push_wrapped(&mut lines, title, width);

        let plain = Style::new().fg(t.fg);
        let items = match (focused_doc, hl) {
            (Some((_, None, _)), Some(h)) => words(&doc.text, h),
            (Some((_, Some(sentence), _)), Some(h)) => match doc.text.find(sentence.as_str()) {
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
        push_wrapped(&mut lines, items, width);
    }

    let height = inner.height as usize;
    let max_first = lines.len().saturating_sub(height);
    let first = if app.panes.sample.follow {
        // Scroll only as far as needed to show the focused source's first lines.
        focus_line
            .map_or(0, |l| (l + 4).saturating_sub(height))
            .min(max_first)
    } else {
        {
            app.panes.sample.scroll.set_max(max_first);
            app.panes.sample.scroll.top()
        }
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

fn push_wrapped(lines: &mut Vec<Line<'static>>, items: Vec<Span<'static>>, width: usize) {
    for l in wrap_items(items, width) {
        lines.push(Line::from(
            l.into_iter().map(|(_, s)| s).collect::<Vec<_>>(),
        ));
    }
}
