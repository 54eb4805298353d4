//! The study view in the terminal: a loop over key presses, a slow reload of the folder while the
//! study is still running, and the drill-down — enter hands the terminal to the single-sample
//! explorer (its own worker on the sample's model) until esc brings it back, with the study's
//! cursors where they were.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use futures::{Stream, StreamExt};
use ratatui::backend::Backend;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{Event, EventStream};
use ratatui::layout::Rect;
use ratatui::widgets::Widget;
use ratatui::Terminal;
use tokio::time::MissedTickBehavior;

use super::data::{stamp, StudyData};
use super::panes::StudyScreen;
use super::{update, Drill, StudyAction, StudyApp, StudyEffect};
use crate::analysis::cache::ResultCache;
use crate::analysis::report::AnalyzeOptions;
use crate::engine::generate::GenerationConfig;
use crate::engine::{DeviceChoice, LoadOptions};
use crate::ui::event::{run_loop, Context};
use crate::ui::export::{timestamp_stem, write_screenshot};
use crate::ui::terminal::{self, signalled};
use crate::ui::worker::{Session, Worker};

/// How often a running study's folder is checked for new units (and read again when it has).
const RELOAD_EVERY: Duration = Duration::from_millis(1500);

/// What a sample's explorer session takes from the command line (the rest is the study's).
#[derive(Clone, Debug)]
pub struct SessionBase {
    pub offline: bool,
    pub device: DeviceChoice,
    pub dtype: Option<candle_core::DType>,
    pub cache: ResultCache,
}

impl SessionBase {
    /// The explorer's session for a drilled sample: the study's prompt format and answer length,
    /// the answer generated as the study generated it.
    pub fn session(&self, data: &StudyData, drill: &Drill) -> Result<Session> {
        let cfg = &data.record.study;
        Ok(Session {
            load: LoadOptions {
                model: drill.model_path.clone(),
                offline: self.offline,
                device: self.device,
                dtype: self.dtype,
                pruning: None,
            },
            sample: drill.sample.clone(),
            format: cfg.format().context("the study's prompt format")?,
            generation: GenerationConfig {
                max_new_tokens: cfg.max_new_tokens,
                ..GenerationConfig::default()
            },
            force_generate: true,
            analyze: AnalyzeOptions::default(),
            cache: self.cache.clone(),
        })
    }
}

/// Everything `headscope study view DIR` opens.
pub struct StudyOptions {
    pub dir: PathBuf,
    pub context: Context,
    pub base: SessionBase,
    /// Models in place of the study's own paths, by position.
    pub model_overrides: Vec<String>,
}

/// The screen as drawn, into a fresh buffer.
pub fn render_buffer(app: &StudyApp, ctx: &Context, width: u16, height: u16) -> Buffer {
    let area = Rect::new(0, 0, width, height);
    let mut buf = Buffer::empty(area);
    StudyScreen {
        app,
        theme: &ctx.theme,
        keys: &ctx.keys,
    }
    .render(area, &mut buf);
    buf
}

/// Writes the study view's screen to the export directory.
pub fn export_screen(
    app: &StudyApp,
    ctx: &Context,
    size: (u16, u16),
) -> Result<Vec<PathBuf>, String> {
    let buf = render_buffer(app, ctx, size.0, size.1);
    write_screenshot(
        &buf,
        &ctx.palette(),
        &ctx.export_dir,
        &ctx.export_formats,
        &timestamp_stem(),
    )
    .map_err(|e| e.to_string())
}

/// How the study's loop ended.
enum Exit {
    Quit,
    Open(Box<Drill>),
}

/// Runs the study view in this terminal until the user quits; the terminal is restored before
/// this returns, whatever happened.
pub fn view(opts: StudyOptions) -> Result<()> {
    let rt = crate::ui::runtime()?;
    let data = StudyData::load(&opts.dir)
        .with_context(|| format!("cannot read the study in {}", opts.dir.display()))?;
    let mut app = StudyApp::new(data);
    app.model_overrides = opts.model_overrides.clone();
    let mut guard = terminal::enter()?;
    loop {
        let exit = rt.block_on(study_loop(
            &mut guard.terminal,
            &mut app,
            &opts,
            EventStream::new(),
        ))?;
        let drill = match exit {
            Exit::Quit => return Ok(()),
            Exit::Open(d) => d,
        };
        if !explore_sample(&rt, &mut guard.terminal, &opts, &mut app, &drill)? {
            return Ok(());
        }
    }
}

/// The sample in the explorer on this terminal. `Ok(true)`: esc came back to the study.
fn explore_sample<B: Backend>(
    rt: &tokio::runtime::Runtime,
    terminal: &mut Terminal<B>,
    opts: &StudyOptions,
    app: &mut StudyApp,
    drill: &Drill,
) -> Result<bool> {
    let session = match opts.base.session(&app.data, drill) {
        Ok(s) => s,
        Err(e) => {
            update(app, StudyAction::LoadFailed(format!("{e:#}")));
            return Ok(true);
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut explorer = drill.explorer();
    let mut worker = Worker::spawn(session, tx)?;
    rt.block_on(run_loop(
        terminal,
        &mut explorer,
        &opts.context,
        &mut worker,
        &mut rx,
        EventStream::new(),
    ))?;
    drop(worker);
    if !explorer.back {
        return Ok(false);
    }
    update(app, StudyAction::Returned);
    Ok(true)
}

async fn study_loop<B, S>(
    terminal: &mut Terminal<B>,
    app: &mut StudyApp,
    opts: &StudyOptions,
    mut events: S,
) -> Result<Exit>
where
    B: Backend,
    S: Stream<Item = std::io::Result<Event>> + Unpin,
{
    let ctx = &opts.context;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut reload = tokio::time::interval(RELOAD_EVERY);
    reload.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut pending: VecDeque<StudyAction> = VecDeque::new();
    let mut dirty = true;
    let mut last_stamp = stamp(&opts.dir);
    loop {
        while let Some(action) = pending.pop_front() {
            dirty = true;
            for effect in update(app, action) {
                match effect {
                    StudyEffect::Quit => return Ok(Exit::Quit),
                    StudyEffect::Open(d) => return Ok(Exit::Open(d)),
                    StudyEffect::Export => {
                        let size = terminal.size().map_err(|e| anyhow!("terminal size: {e}"))?;
                        let written = export_screen(app, ctx, (size.width, size.height));
                        pending.push_back(StudyAction::Exported(written));
                    }
                }
            }
        }
        if dirty {
            terminal
                .draw(|f| {
                    let screen = StudyScreen {
                        app,
                        theme: &ctx.theme,
                        keys: &ctx.keys,
                    };
                    f.render_widget(screen, f.area())
                })
                .map_err(|e| anyhow!("cannot draw: {e}"))?;
            dirty = false;
        }
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(Event::Key(key))) => {
                    if let Some(c) = ctx.keys.command(&key) {
                        pending.push_back(StudyAction::Command(c));
                    }
                }
                Some(Ok(Event::Resize(..))) => dirty = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(anyhow!("terminal input: {e}")),
                None => return Ok(Exit::Quit),
            },
            _ = reload.tick(), if !app.data.is_final() => {
                let now = stamp(&opts.dir);
                if now != last_stamp {
                    last_stamp = now;
                    pending.push_back(match StudyData::load(&opts.dir) {
                        Ok(d) => StudyAction::Loaded(Box::new(d)),
                        Err(e) => StudyAction::LoadFailed(format!("{e:#}")),
                    });
                }
            }
            _ = tick.tick() => {
                if signalled() {
                    return Ok(Exit::Quit);
                }
            }
        }
    }
}
