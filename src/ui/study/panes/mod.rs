//! The study view's screen: one file per pane, each with its own state beside its renderer, a
//! header with the study's progress per phase, and the footer of keys.

pub mod curve;
pub mod heads;
pub mod matrix;
pub mod overlap;
pub mod samples;

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Widget};

use super::data::StudyData;
use super::{StudyApp, StudyPane, HELP};
use crate::ui::app::Command;
use crate::ui::keys::KeyMap;
use crate::ui::panes::{clip, help, pane_block, too_small, MIN_HEIGHT, MIN_WIDTH};
use crate::ui::theme::Theme;

/// Each pane's cursor and toggles.
#[derive(Clone, Debug, Default)]
pub struct StudyPanes {
    pub matrix: matrix::MatrixState,
    pub curve: curve::CurveState,
    pub heads: heads::HeadsState,
    pub samples: samples::SamplesState,
}

impl StudyPanes {
    /// The first experiment, at the largest k.
    pub fn new(data: &StudyData) -> StudyPanes {
        StudyPanes {
            curve: curve::CurveState {
                k: data.ks.len().saturating_sub(1),
            },
            ..StudyPanes::default()
        }
    }
}

/// Where each pane goes.
#[derive(Clone, Copy, Debug)]
pub struct StudyAreas {
    pub header: Rect,
    pub matrix: Rect,
    pub curve: Rect,
    pub heads: Rect,
    pub overlap: Rect,
    pub samples: Rect,
    pub footer: Rect,
}

impl StudyAreas {
    pub fn new(area: Rect, app: &StudyApp) -> StudyAreas {
        let matrix_h = (app.data.rows() as u16 + 5).clamp(8, area.height / 3);
        let [header, top, middle, samples, footer] = area.layout(&Layout::vertical([
            Constraint::Length(2),
            Constraint::Length(matrix_h.max(12)),
            Constraint::Fill(1),
            Constraint::Percentage(24),
            Constraint::Length(1),
        ]));
        let [matrix, curve] = top.layout(&Layout::horizontal([
            Constraint::Percentage(50),
            Constraint::Fill(1),
        ]));
        let [heads, overlap] = middle.layout(&Layout::horizontal([
            Constraint::Percentage(45),
            Constraint::Fill(1),
        ]));
        StudyAreas {
            header,
            matrix,
            curve,
            heads,
            overlap,
            samples,
            footer,
        }
    }

    pub fn of(&self, pane: StudyPane) -> Rect {
        match pane {
            StudyPane::Matrix => self.matrix,
            StudyPane::Curve => self.curve,
            StudyPane::Heads => self.heads,
            StudyPane::Overlap => self.overlap,
            StudyPane::Samples => self.samples,
        }
    }
}

/// The study view's whole screen.
pub struct StudyScreen<'a> {
    pub app: &'a StudyApp,
    pub theme: &'a Theme,
    pub keys: &'a KeyMap,
}

impl Widget for StudyScreen<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let (app, t) = (self.app, self.theme);
        buf.set_style(area, t.base());
        if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
            too_small(area, buf, t);
            return;
        }
        let a = StudyAreas::new(area, app);
        header(app, t, a.header, buf);
        for pane in StudyPane::ALL {
            render_pane(pane, app, t, a.of(pane), buf);
        }
        footer(t, self.keys, a.footer, buf);
        if app.show_help {
            help::render_entries(&self.keys.help_of(HELP), &app.help.scroll, t, area, buf);
        }
    }
}

/// One pane alone into `area` (the snapshot tests).
pub fn render_pane(pane: StudyPane, app: &StudyApp, t: &Theme, area: Rect, buf: &mut Buffer) {
    buf.set_style(area, t.base());
    match pane {
        StudyPane::Matrix => matrix::render(app, t, area, buf),
        StudyPane::Curve => curve::render(app, t, area, buf),
        StudyPane::Heads => heads::render(app, t, area, buf),
        StudyPane::Overlap => overlap::render(app, t, area, buf),
        StudyPane::Samples => samples::render(app, t, area, buf),
    }
}

/// A pane's frame, as the explorer's ([`pane_block`]).
pub fn frame<'a>(app: &StudyApp, t: &Theme, pane: StudyPane, title: Vec<Span<'a>>) -> Block<'a> {
    let focused = app.focus == pane && !app.show_help;
    pane_block(t, focused, pane.number(), pane.title(), title)
}

/// The study, the selected experiment, each phase's progress and the status message.
fn header(app: &StudyApp, t: &Theme, area: Rect, buf: &mut Buffer) {
    buf.set_style(area, t.header());
    let sep = || Span::styled(" │ ", Style::new().fg(t.muted).bg(t.header_bg));
    let strong = t.header().add_modifier(Modifier::BOLD);
    let d = &app.data;
    let cell = app.cell();
    let (mode, positions) = d.ablation();
    let l1 = vec![
        Span::styled(" headscope study", strong.fg(t.accent)),
        sep(),
        Span::styled(
            format!(
                "{} · {} · {}",
                d.model(cell).map_or("—", |m| m.label.as_str()),
                d.method(cell).map_or("—", |m| m.key()),
                d.category(cell).unwrap_or("—"),
            ),
            strong,
        ),
        sep(),
        Span::styled(clip(&d.dir.display().to_string(), 40), t.header()),
        sep(),
        Span::styled(
            format!(
                "{} models × {} methods × {} categories · k {} · {} ablation, {} positions",
                d.models.len(),
                d.methods.len(),
                d.categories.len(),
                d.ks.iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join("/"),
                mode.label(),
                positions.label()
            ),
            t.header(),
        ),
    ];
    Line::from(l1).render(Rect { height: 1, ..area }, buf);
    if area.height < 2 {
        return;
    }
    let mut l2 = vec![Span::raw(" ")];
    if let Some(s) = &app.status {
        l2.push(Span::styled(
            s.text.clone(),
            if s.error { t.error() } else { t.header() },
        ));
    } else if d.is_complete() {
        let reported = if d.summary.is_some() {
            "✓ complete · the report's numbers"
        } else {
            "✓ every unit done · no summary.json yet (run `headscope study report`): partial means"
        };
        l2.push(Span::styled(reported, t.header().fg(t.ok)));
    } else {
        l2.push(Span::styled("⟳ running · ", t.header().fg(t.warning)));
        for p in &d.progress {
            l2.push(Span::styled(
                format!(
                    "{} {} {}/{}  ",
                    p.phase,
                    clip(&p.model, 24),
                    p.done,
                    p.total
                ),
                t.header(),
            ));
        }
    }
    Line::from(l2).render(Rect::new(area.x, area.y + 1, area.width, 1), buf);
}

fn footer(t: &Theme, keys: &KeyMap, area: Rect, buf: &mut Buffer) {
    use Command as C;
    let mut spans = Vec::new();
    for (c, what) in [
        (C::Help, "keys"),
        (C::Quit, "quit"),
        (C::NextPane, "pane"),
        (C::MoreK, "k"),
        (C::CycleShared, "shared heads"),
        (C::ToggleBroken, "broken only"),
        (C::Rerun, "open sample"),
        (C::Export, "export"),
    ] {
        spans.push(Span::styled(format!(" {}", keys.keys_of(c)), t.key()));
        spans.push(Span::styled(format!(" {what} "), t.muted()));
    }
    Line::from(spans).render(area, buf);
}

/// Percentage points with a sign: `+33`, `−8`.
pub fn pp(x: f64) -> String {
    let v = (100.0 * x).round() as i64;
    match v {
        0 => "0".into(),
        v if v > 0 => format!("+{v}"),
        v => format!("−{}", -v),
    }
}

/// A proportion as a percentage: `67 %`.
pub fn pct(x: f64) -> String {
    format!("{:.0} %", 100.0 * x)
}
