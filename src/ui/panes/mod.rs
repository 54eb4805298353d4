//! Rendering: one file per pane, each a function of `(&App, &Theme)` into a buffer area. Nothing
//! here computes a model result; it draws what the worker delivered.

pub mod ablation;
pub mod answer;
pub mod attribution;
pub mod header;
pub mod heatmap;
pub mod help;
pub mod lens;
pub mod sample;
pub mod scroll;

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Paragraph, Widget, Wrap};

use super::app::{App, Pane};
use super::keys::KeyMap;
use super::theme::Theme;

/// Each pane's own cursor and scroll state, kept beside its renderer (as ratatui's demo2 keeps
/// each tab's state with the tab).
#[derive(Clone, Debug, Default)]
pub struct PaneStates {
    pub answer: answer::AnswerState,
    pub sample: sample::SampleState,
    pub heatmap: heatmap::HeatmapState,
    pub lens: lens::LensState,
    pub attribution: attribution::AttributionState,
    pub ablation: ablation::AblationState,
    pub help: help::HelpState,
}

/// The smallest terminal the layout fits.
pub const MIN_WIDTH: u16 = 90;
pub const MIN_HEIGHT: u16 = 26;

/// The whole screen.
pub struct Screen<'a> {
    pub app: &'a App,
    pub theme: &'a Theme,
    pub keys: &'a KeyMap,
}

impl<'a> Screen<'a> {
    pub fn new(app: &'a App, theme: &'a Theme, keys: &'a KeyMap) -> Self {
        Screen { app, theme, keys }
    }
}

/// Where each pane goes on a screen of `area`.
#[derive(Clone, Copy, Debug)]
pub struct Areas {
    pub header: Rect,
    pub answer: Rect,
    pub sample: Rect,
    pub heatmap: Rect,
    pub lens: Rect,
    pub attribution: Rect,
    pub ablation: Rect,
    pub footer: Rect,
}

impl Areas {
    pub fn new(area: Rect, app: &App) -> Areas {
        let [header, answer, top, bottom, footer] = area.layout(&Layout::vertical([
            Constraint::Length(2),
            Constraint::Length(answer::height(app)),
            Constraint::Percentage(58),
            Constraint::Min(8),
            Constraint::Length(1),
        ]));
        let heat_w = heatmap::preferred_width(app).min(top.width * 45 / 100);
        let [sample, heatmap, lens] = top.layout(&Layout::horizontal([
            Constraint::Percentage(27),
            Constraint::Length(heat_w),
            Constraint::Fill(1),
        ]));
        let [attribution, ablation] = bottom.layout(&Layout::horizontal([
            Constraint::Percentage(45),
            Constraint::Fill(1),
        ]));
        Areas {
            header,
            answer,
            sample,
            heatmap,
            lens,
            attribution,
            ablation,
            footer,
        }
    }

    pub fn of(&self, pane: Pane) -> Rect {
        match pane {
            Pane::Answer => self.answer,
            Pane::Sample => self.sample,
            Pane::Heatmap => self.heatmap,
            Pane::Lens => self.lens,
            Pane::Attribution => self.attribution,
            Pane::Ablation => self.ablation,
        }
    }
}

impl Widget for Screen<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let (app, t) = (self.app, self.theme);
        buf.set_style(area, t.base());
        if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
            too_small(area, buf, t);
            return;
        }
        let a = Areas::new(area, app);
        header::render(app, t, a.header, buf);
        answer::render(app, t, a.answer, buf);
        sample::render(app, t, a.sample, buf);
        heatmap::render(app, t, a.heatmap, buf);
        lens::render(app, t, a.lens, buf);
        attribution::render(app, t, a.attribution, buf);
        ablation::render(app, t, a.ablation, buf);
        footer(app, t, self.keys, a.footer, buf);
        if app.show_help {
            help::render(app, t, self.keys, area, buf);
        }
    }
}

/// Renders one pane alone into `area` (snapshot tests of a single pane).
pub fn render_pane(pane: Pane, app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    buf.set_style(area, theme.base());
    match pane {
        Pane::Answer => answer::render(app, theme, area, buf),
        Pane::Sample => sample::render(app, theme, area, buf),
        Pane::Heatmap => heatmap::render(app, theme, area, buf),
        Pane::Lens => lens::render(app, theme, area, buf),
        Pane::Attribution => attribution::render(app, theme, area, buf),
        Pane::Ablation => ablation::render(app, theme, area, buf),
    }
}

pub fn too_small(area: Rect, buf: &mut Buffer, t: &Theme) {
    let text = vec![
        Line::styled("headscope: the terminal is too small", t.error()),
        Line::raw(""),
        Line::raw(format!(
            "It is {}×{}; the explorer needs at least {MIN_WIDTH}×{MIN_HEIGHT}.",
            area.width, area.height
        )),
        Line::raw("Enlarge the window (or the font smaller), or press q to quit."),
    ];
    let h = (text.len() as u16).min(area.height);
    let y = area.y + area.height.saturating_sub(h) / 2;
    Paragraph::new(text)
        .wrap(Wrap { trim: true })
        .centered()
        .render(Rect::new(area.x, y, area.width, h.max(1)), buf);
}

fn footer(app: &App, t: &Theme, keys: &KeyMap, area: Rect, buf: &mut Buffer) {
    use super::app::Command as C;
    let hint = |c: C, what: &str| -> Vec<Span<'static>> {
        vec![
            Span::styled(format!(" {}", keys.keys_of(c)), t.key()),
            Span::styled(format!(" {what} "), t.muted()),
        ]
    };
    let mut spans = Vec::new();
    for (c, what) in [
        (C::Help, "keys"),
        (C::Quit, "quit"),
        (C::NextPane, "pane"),
        (C::CycleHeadScore, "score"),
        (C::CycleAttribution, "method"),
        (C::ToggleAblation, "ablate"),
        (C::AblateTopK, "top-k"),
        (C::Rerun, "re-run"),
        (C::Cancel, "cancel"),
        (C::Export, "export"),
    ] {
        spans.extend(hint(c, what));
    }
    let _ = app;
    Line::from(spans).render(area, buf);
}

/// A pane's frame (see [`pane_block`]).
pub fn frame<'a>(app: &App, t: &Theme, pane: Pane, title: Vec<Span<'a>>) -> Block<'a> {
    let focused = app.focus == pane && !app.show_help;
    pane_block(t, focused, pane.number(), pane.title(), title)
}

/// The frame every pane draws in, the explorer's and the study view's: `n name` and `title` on
/// top, rounded borders, thick ones in the focus colour when focused.
pub fn pane_block<'a>(
    t: &Theme,
    focused: bool,
    number: usize,
    name: &str,
    title: Vec<Span<'a>>,
) -> Block<'a> {
    let mut spans = vec![Span::styled(format!(" {number} {name} "), t.title(focused))];
    spans.extend(title);
    Block::default()
        .borders(Borders::ALL)
        .border_type(if focused {
            BorderType::Thick
        } else {
            BorderType::Rounded
        })
        .border_style(t.border(focused))
        .title(Line::from(spans))
}

/// A token as one line of text: newlines and tabs made visible.
pub fn show_token(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push('⏎'),
            '\t' => out.push('⇥'),
            '\r' => {}
            c if c.is_control() => out.push('·'),
            c => out.push(c),
        }
    }
    out
}

/// [`show_token`], and a token of spaces only as `␣`s (so a lens cell is never blank).
pub fn show_lens_token(s: &str) -> String {
    let t = show_token(s);
    if !t.is_empty() && t.trim().is_empty() {
        t.replace(' ', "␣")
    } else {
        t
    }
}

/// The first `width` columns of `s` (one column per char is close enough for tokens; wider
/// glyphs are cut by the buffer).
pub fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A number in a few columns: `0.123`, `-1.23`, `1.2e-5`.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(0.001..1000.0).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A probability in three columns: `.82`, `1.0`, `<.01`.
pub fn prob(p: f64) -> String {
    if !p.is_finite() {
        "—".into()
    } else if p >= 0.995 {
        "1.0".into()
    } else if p < 0.005 {
        ".00".into()
    } else {
        format!(".{:02}", (p * 100.0).round() as u32)
    }
}

/// Lays out atomic items left to right, breaking before one that does not fit; an item wider
/// than a line is split. Returns the lines with, per span, the index of its item.
pub fn wrap_items<'a>(items: Vec<Span<'a>>, width: usize) -> Vec<Vec<(usize, Span<'a>)>> {
    let mut lines: Vec<Vec<(usize, Span<'a>)>> = vec![Vec::new()];
    let mut used = 0usize;
    let width = width.max(1);
    for (i, item) in items.into_iter().enumerate() {
        let w = item.width();
        if used + w <= width {
            used += w;
            if let Some(l) = lines.last_mut() {
                l.push((i, item));
            }
            continue;
        }
        if w <= width {
            lines.push(vec![(i, item)]);
            used = w;
            continue;
        }
        // Split a long item across lines, by characters.
        let style = item.style;
        let mut rest: Vec<char> = item.content.chars().collect();
        while !rest.is_empty() {
            let room = width - used;
            if room == 0 {
                lines.push(Vec::new());
                used = 0;
                continue;
            }
            let take = room.min(rest.len());
            let piece: String = rest.drain(..take).collect();
            used += take;
            if let Some(l) = lines.last_mut() {
                l.push((i, Span::styled(piece, style)));
            }
        }
    }
    lines
}

/// Splits text into words with their trailing spaces (items for [`wrap_items`]).
pub fn words(text: &str, style: Style) -> Vec<Span<'static>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_space = false;
    for c in text.chars() {
        if c == ' ' {
            in_space = true;
            cur.push(c);
        } else {
            if in_space {
                out.push(Span::styled(std::mem::take(&mut cur), style));
                in_space = false;
            }
            // Text from files and models must not reach the terminal as control characters.
            cur.push(if c.is_control() { ' ' } else { c });
        }
    }
    if !cur.is_empty() {
        out.push(Span::styled(cur, style));
    }
    out
}

/// The first line to show so that line `cursor` of `total` is visible in `height` lines.
pub fn scroll_to(cursor: usize, total: usize, height: usize) -> usize {
    if height == 0 || total <= height {
        return 0;
    }
    cursor.saturating_sub(height - 1).min(total - height)
}

/// A message in the middle of an empty pane.
pub fn placeholder(t: &Theme, area: Rect, buf: &mut Buffer, text: &str) {
    if area.height == 0 {
        return;
    }
    let y = area.y + area.height / 2;
    Paragraph::new(Line::styled(
        text.to_string(),
        t.muted().add_modifier(Modifier::ITALIC),
    ))
    .wrap(Wrap { trim: true })
    .centered()
    .render(
        Rect::new(
            area.x,
            y.min(area.bottom().saturating_sub(1)),
            area.width,
            area.bottom() - y,
        ),
        buf,
    );
}

/// "stage N is running" / "cancelled" / "failed", for a pane waiting on a result.
pub fn waiting_for(app: &App, stage: usize, what: &str) -> String {
    if app.jobs.open_failed {
        return format!("{what}: no model (see the status line)");
    }
    if app.view.failed_stages.contains(&(stage.saturating_sub(1))) {
        return format!("{what} failed (see the status line)");
    }
    let running_stage = app.jobs.running.as_ref().and_then(|r| match r.spec {
        super::app::JobSpec::Analyze { stage, .. } => Some(stage + 1),
        _ => None,
    });
    if running_stage == Some(stage) {
        format!("{what}: computing (stage {stage})…")
    } else if app.jobs.paused {
        format!("{what}: paused (enter resumes)")
    } else {
        format!("{what}: waiting for stage {stage}")
    }
}
