//! The header: what is loaded (model, architecture, device, dtype, sample), what runs (with a
//! gauge), how long the last job took, and the status message.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

use super::super::app::App;
use super::super::theme::Theme;
use super::{clip, num};

const GAUGE: usize = 16;

pub fn render(app: &App, t: &Theme, area: Rect, buf: &mut Buffer) {
    if area.height == 0 {
        return;
    }
    buf.set_style(area, t.header());
    let sep = || Span::styled(" │ ", Style::new().fg(t.muted).bg(t.header_bg));
    let strong = t.header().add_modifier(Modifier::BOLD);

    let model = short_name(&app.model_name);
    let mut l1 = vec![
        Span::styled(" headscope", strong.fg(t.accent)),
        sep(),
        Span::styled(clip(&model, 40), strong),
    ];
    match &app.info {
        Some(i) => {
            l1.push(sep());
            l1.push(Span::styled(
                format!(
                    "{} · {} · {} · {}L×{}H",
                    i.arch, i.device, i.dtype, i.layers, i.heads
                ),
                t.header(),
            ));
        }
        None => {
            l1.push(sep());
            l1.push(Span::styled("loading…", t.header().fg(t.muted)));
        }
    }
    if !app.view.is_clean() {
        l1.push(sep());
        l1.push(Span::styled(
            format!("✕ ablated model: {}", ablation_summary(app)),
            t.header().fg(t.ablated).add_modifier(Modifier::BOLD),
        ));
    }
    l1.push(sep());
    l1.push(Span::styled("sample ", t.header().fg(t.muted)));
    l1.push(Span::styled(clip(&app.sample_label, 48), t.header()));
    Line::from(l1).render(Rect { height: 1, ..area }, buf);

    if area.height < 2 {
        return;
    }
    let mut l2 = vec![Span::raw(" ")];
    match &app.jobs.running {
        Some(r) => {
            l2.push(Span::styled("⟳ ", t.header().fg(t.warning)));
            l2.push(Span::styled(r.spec.label(), strong));
            if !r.step.is_empty() {
                l2.push(Span::styled(format!(" · {}", r.step), t.header()));
            }
            if r.total > 0 {
                let filled = (r.ratio() * GAUGE as f64).round() as usize;
                l2.push(Span::raw(" "));
                l2.push(Span::styled(
                    "█".repeat(filled),
                    Style::new().fg(t.accent).bg(t.header_bg),
                ));
                l2.push(Span::styled(
                    "░".repeat(GAUGE - filled.min(GAUGE)),
                    Style::new().fg(t.muted).bg(t.header_bg),
                ));
                l2.push(Span::styled(
                    format!(" {}/{} {:.0}%", r.done, r.total, r.ratio() * 100.0),
                    t.header(),
                ));
            }
            if r.elapsed_s > 0.0 {
                l2.push(Span::styled(format!(" {:.1}s", r.elapsed_s), t.header()));
            }
        }
        None if app.jobs.open_failed => l2.push(Span::styled("✗ not loaded", t.error())),
        None if app.jobs.paused => l2.push(Span::styled(
            "⏸ paused (enter resumes)",
            t.header().fg(t.warning),
        )),
        None if app.jobs.opened && app.view.stages_done() => {
            l2.push(Span::styled("✓ idle", t.header().fg(t.ok)))
        }
        None => l2.push(Span::styled("idle", t.header().fg(t.muted))),
    }
    if let Some((label, secs)) = &app.jobs.last_job {
        l2.push(sep());
        l2.push(Span::styled("last ", t.header().fg(t.muted)));
        l2.push(Span::styled(format!("{label} {}s", num(*secs)), t.header()));
    }
    if let Some(s) = &app.status {
        l2.push(sep());
        let style = if s.error {
            Style::new()
                .fg(t.error)
                .bg(t.header_bg)
                .add_modifier(Modifier::BOLD)
        } else {
            t.header()
        };
        l2.push(Span::styled(s.text.clone(), style));
    }
    Line::from(l2).render(
        Rect {
            y: area.y + 1,
            height: 1,
            ..area
        },
        buf,
    );
}

/// `L0H1, L3 MLP (zero)`, or `7 heads, 1 MLP (mean)` when longer.
fn ablation_summary(app: &App) -> String {
    let v = &app.view.under;
    let labels = v.item_labels();
    let items = if labels.len() <= 3 {
        labels.join(", ")
    } else {
        let mut parts = Vec::new();
        for (n, what) in [(v.heads.len(), "head"), (v.mlps.len(), "MLP")] {
            if n > 0 {
                parts.push(format!("{n} {what}{}", if n == 1 { "" } else { "s" }));
            }
        }
        parts.join(", ")
    };
    format!("{items} ({})", v.mode.label())
}

/// The last path component of a model path (hub ids stay whole).
fn short_name(model: &str) -> String {
    let p = std::path::Path::new(model);
    if p.is_absolute() || model.starts_with('.') || model.ends_with(".gguf") {
        if let Some(n) = p.file_name() {
            return n.to_string_lossy().into_owned();
        }
    }
    model.to_string()
}
