//! The render benchmark (`headscope bench render`): full frames of the demo state through a
//! ratatui `Terminal<TestBackend>` (our render plus ratatui's diff), the cursor moving every frame
//! so no frame is a no-op. `--study DIR` times the study view's frames on a study's folder
//! instead, the experiment, k, head and sample changing every frame.

use std::time::Instant;

use anyhow::{anyhow, Result};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use serde::Serialize;

use super::app::{update, Action, Command, Pane};
use super::demo::demo_app;
use super::keys::KeyMap;
use super::panes::Screen;
use super::theme::Theme;

#[derive(Clone, Debug, Serialize)]
pub struct RenderBench {
    pub width: u16,
    pub height: u16,
    pub layers: usize,
    pub heads: usize,
    pub answer_tokens: usize,
    pub frames: usize,
    pub median_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
}

pub fn render_benchmark(
    width: u16,
    height: u16,
    layers: usize,
    heads: usize,
    answer_tokens: usize,
    frames: usize,
) -> Result<RenderBench> {
    if layers == 0 || heads == 0 || answer_tokens == 0 || frames == 0 {
        return Err(anyhow!("layers, heads, tokens and frames must be positive"));
    }
    let mut app = demo_app(layers, heads, answer_tokens);
    let theme = Theme::builtin_default();
    let keys = KeyMap::default();
    let mut terminal =
        Terminal::new(TestBackend::new(width, height)).map_err(|e| anyhow!("{e}"))?;
    let moves = [
        Command::Right,
        Command::Down,
        Command::NextToken,
        Command::Left,
        Command::Up,
    ];
    let mut times = Vec::with_capacity(frames);
    for i in 0..frames + 10 {
        // Move the head cursor and the answer token: every pane changes.
        app.focus = Pane::Heatmap;
        let _ = update(&mut app, Action::Command(moves[i % moves.len()]));
        if app.token() + 1 >= answer_tokens {
            app.panes.answer.token = 0;
        }
        let t = Instant::now();
        terminal
            .draw(|f| f.render_widget(Screen::new(&app, &theme, &keys), f.area()))
            .map_err(|e| anyhow!("{e}"))?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if i >= 10 {
            times.push(ms); // the first frames warm caches and the layout cache
        }
    }
    times.sort_by(f64::total_cmp);
    let pick = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Ok(RenderBench {
        width,
        height,
        layers,
        heads,
        answer_tokens,
        frames,
        median_ms: pick(0.5),
        p95_ms: pick(0.95),
        max_ms: *times.last().unwrap_or(&0.0),
    })
}

/// The study view's frame time on the study in `dir`: every frame moves to another experiment
/// (and, in turn, another k, head and sample), so the matrix, the curve, the heads and the
/// samples are all drawn anew.
pub fn study_render_benchmark(
    dir: &std::path::Path,
    width: u16,
    height: u16,
    frames: usize,
) -> Result<StudyRenderBench> {
    use super::study::data::StudyData;
    use super::study::panes::StudyScreen;
    use super::study::{update as study_update, StudyAction, StudyApp, StudyPane};
    if frames == 0 {
        return Err(anyhow!("frames must be positive"));
    }
    let data = StudyData::load(dir).map_err(|e| anyhow!("{e}"))?;
    let shape = (data.models.len(), data.methods.len(), data.categories.len());
    let mut app = StudyApp::new(data);
    let theme = Theme::builtin_default();
    let keys = KeyMap::default();
    let mut terminal =
        Terminal::new(TestBackend::new(width, height)).map_err(|e| anyhow!("{e}"))?;
    let moves = [
        (StudyPane::Matrix, Command::Right),
        (StudyPane::Heads, Command::Down),
        (StudyPane::Matrix, Command::Down),
        (StudyPane::Curve, Command::Left),
        (StudyPane::Samples, Command::Down),
        (StudyPane::Matrix, Command::Left),
        (StudyPane::Heads, Command::Right),
        (StudyPane::Curve, Command::Right),
    ];
    let mut times = Vec::with_capacity(frames);
    for i in 0..frames + 10 {
        let (pane, c) = moves[i % moves.len()];
        app.focus = pane;
        study_update(&mut app, StudyAction::Command(c));
        if i % 40 == 39 {
            app.panes.matrix.cursor = (0, 0);
        }
        let t = Instant::now();
        terminal
            .draw(|f| {
                let screen = StudyScreen {
                    app: &app,
                    theme: &theme,
                    keys: &keys,
                };
                f.render_widget(screen, f.area())
            })
            .map_err(|e| anyhow!("{e}"))?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if i >= 10 {
            times.push(ms);
        }
    }
    times.sort_by(f64::total_cmp);
    let pick = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Ok(StudyRenderBench {
        study: dir.display().to_string(),
        models: shape.0,
        methods: shape.1,
        categories: shape.2,
        width,
        height,
        frames,
        median_ms: pick(0.5),
        p95_ms: pick(0.95),
        max_ms: *times.last().unwrap_or(&0.0),
    })
}

#[derive(Clone, Debug, Serialize)]
pub struct StudyRenderBench {
    pub study: String,
    pub models: usize,
    pub methods: usize,
    pub categories: usize,
    pub width: u16,
    pub height: u16,
    pub frames: usize,
    pub median_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
}
