//! `headscope screenshot`: the explorer off-screen. The same state, worker and `update` as the
//! terminal, drawn into a `TestBackend` of `--size`; the key script is played one key at a time,
//! each after the worker has gone idle (so the result does not depend on timing) and drawn, as
//! the terminal draws after each key, and the final frame is exported. Effects go through the
//! same interpreter as the terminal's (`effects`).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use tokio::sync::mpsc::UnboundedReceiver;

use super::app::{Action, App, Command, Job, WorkerMsg};
use super::effects::{drain, Carrier};
use super::event::{export_screen, render_buffer, Context};
use super::export::{write_screenshot, ExportFormat};
use super::keys::KeyCombo;
use super::panes::Screen;
use super::worker::{Session, Worker};

pub struct ScreenshotOptions {
    pub session: Session,
    pub sample_label: String,
    pub context: Context,
    /// Keys as in keys.toml, separated by spaces: `"l l space enter M e"`.
    pub keys: String,
    pub width: u16,
    pub height: u16,
    /// The file to write; its extension picks the format.
    pub out: PathBuf,
    /// How long to wait for the worker at each step.
    pub timeout: Duration,
}

/// Parses `160x48`.
pub fn parse_size(s: &str) -> std::result::Result<(u16, u16), String> {
    let (w, h) = s
        .split_once(['x', 'X', '×'])
        .ok_or_else(|| format!("`{s}`: write the size as COLUMNSxROWS, e.g. 160x48"))?;
    let w: u16 = w
        .trim()
        .parse()
        .map_err(|_| format!("`{w}` is not a number of columns"))?;
    let h: u16 = h
        .trim()
        .parse()
        .map_err(|_| format!("`{h}` is not a number of rows"))?;
    if w == 0 || h == 0 || w > 1000 || h > 1000 {
        return Err(format!("`{s}`: columns and rows must be 1…1000"));
    }
    Ok((w, h))
}

/// Parses a key script into keys.
pub fn parse_keys(script: &str) -> Result<Vec<KeyCombo>> {
    script
        .split_whitespace()
        .map(|k| KeyCombo::parse(k).with_context(|| format!("--keys: `{k}`")))
        .collect()
}

/// The format of `path` by its extension.
pub fn format_of(path: &Path) -> Result<ExportFormat> {
    let ext = path.extension().and_then(|e| e.to_str()).ok_or_else(|| {
        anyhow!(
            "--out {}: give a file ending in .svg, .png, .html or .txt",
            path.display()
        )
    })?;
    ext.parse::<ExportFormat>()
        .map_err(|e| anyhow!("--out {}: {e}", path.display()))
}

struct Driver<'a> {
    app: App,
    ctx: &'a Context,
    worker: Worker,
    rx: UnboundedReceiver<WorkerMsg>,
    rt: tokio::runtime::Runtime,
    size: (u16, u16),
    timeout: Duration,
    /// Files the script's own `e` presses wrote.
    exported: Vec<PathBuf>,
}

/// Effects as the headless driver carries them out: no wall clock (the quiet time is over at
/// once), the export at the `--size` given.
struct Headless<'a> {
    worker: &'a mut Worker,
    ctx: &'a Context,
    size: (u16, u16),
    exported: &'a mut Vec<PathBuf>,
}

impl Carrier for Headless<'_> {
    fn submit(&mut self, job: Job) {
        self.worker.submit(job);
    }

    fn cancel(&mut self) {
        self.worker.cancel();
    }

    fn debounce(&mut self) -> Option<Action> {
        Some(Action::DebounceElapsed)
    }

    fn export(&mut self, app: &App) -> Result<Result<Vec<PathBuf>, String>> {
        let r = export_screen(app, self.ctx, self.size.0, self.size.1);
        if let Ok(paths) = &r {
            self.exported.extend(paths.iter().cloned());
        }
        Ok(r)
    }
}

impl Driver<'_> {
    fn apply(&mut self, action: Action) -> Result<()> {
        let mut side = Headless {
            worker: &mut self.worker,
            ctx: self.ctx,
            size: self.size,
            exported: &mut self.exported,
        };
        drain(&mut self.app, &mut VecDeque::from([action]), &mut side)?;
        Ok(())
    }

    /// Draws the frame the terminal would show now (the panes learn their scroll bounds from it).
    fn draw(&self) {
        let _ = render_buffer(&self.app, self.ctx, self.size.0, self.size.1);
    }

    /// Feeds worker messages to `update` until nothing runs and nothing is left to schedule.
    fn wait_idle(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        while !self.app.is_idle() {
            let left = deadline.saturating_duration_since(Instant::now());
            let (rt, rx) = (&self.rt, &mut self.rx);
            let msg = rt.block_on(async { tokio::time::timeout(left, rx.recv()).await });
            match msg {
                Ok(Some(m)) => self.apply(Action::Worker(m))?,
                Ok(None) => bail!("the worker thread stopped"),
                Err(_) => bail!(
                    "the worker did not finish within {}s (running: {})",
                    self.timeout.as_secs(),
                    self.app
                        .jobs
                        .running
                        .as_ref()
                        .map_or("nothing".into(), |r| format!(
                            "{} {}",
                            r.spec.label(),
                            r.step
                        ))
                ),
            }
        }
        Ok(())
    }
}

/// The commands of a key script, each key bound in `ctx`.
pub fn commands_of(ctx: &Context, script: &str) -> Result<Vec<Command>> {
    parse_keys(script)?
        .iter()
        .map(|k| {
            ctx.keys
                .command_of(k)
                .ok_or_else(|| anyhow!("--keys: `{}` is not bound to any command", k.display()))
        })
        .collect()
}

/// The explorer after a headless run: its state, the files its own `e` presses wrote, and how
/// many commands it took (it stops early when a command quits or goes back to the study).
pub struct Driven {
    pub app: App,
    pub exported: Vec<PathBuf>,
    pub used: usize,
}

/// Opens `app`'s sample on a worker for `session`, waits for every analysis, then plays
/// `commands`, each after the worker has gone idle, until one quits (or goes back).
pub fn drive(
    app: App,
    session: Session,
    ctx: &Context,
    size: (u16, u16),
    timeout: Duration,
    commands: &[Command],
) -> Result<Driven> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = Worker::spawn(session, tx)?;
    let mut d = Driver {
        app,
        ctx,
        worker,
        rx,
        rt: super::runtime()?,
        size,
        timeout,
        exported: Vec::new(),
    };
    d.apply(Action::Start)?;
    d.wait_idle()?;
    d.draw();
    if d.app.jobs.open_failed {
        let why = d
            .app
            .status
            .as_ref()
            .map_or("unknown error".into(), |s| s.text.clone());
        bail!("{why}");
    }
    let mut used = 0;
    for &c in commands {
        used += 1;
        d.apply(Action::Command(c))?;
        if d.app.quit {
            break;
        }
        d.wait_idle()?;
        d.draw();
    }
    Ok(Driven {
        app: d.app,
        exported: d.exported,
        used,
    })
}

/// Renders, plays the keys, waits, exports. Returns the files written (the `--out` file last).
pub fn screenshot(opts: ScreenshotOptions) -> Result<Vec<PathBuf>> {
    let format = format_of(&opts.out)?;
    let commands = commands_of(&opts.context, &opts.keys)?;
    let app = App::new(
        opts.session.load.model.clone(),
        opts.sample_label.clone(),
        opts.session.sample.clone(),
    );
    let size = (opts.width, opts.height);
    let driven = drive(
        app,
        opts.session,
        &opts.context,
        size,
        opts.timeout,
        &commands,
    )?;
    // Draw through a real `Terminal` (as the explorer does), then export its buffer.
    let (ctx, app) = (&opts.context, &driven.app);
    let buf = final_frame(size, |f| {
        f.render_widget(Screen::new(app, &ctx.theme, &ctx.keys), f.area())
    })?;
    let mut written = driven.exported;
    written.extend(write_out(&buf, &opts.context, &opts.out, format)?);
    Ok(written)
}

/// The last frame, drawn through a real `Terminal` of `size` as the terminal draws it.
pub fn final_frame(
    (width, height): (u16, u16),
    draw: impl FnOnce(&mut ratatui::Frame),
) -> Result<ratatui::buffer::Buffer> {
    let mut terminal =
        Terminal::new(TestBackend::new(width, height)).map_err(|e| anyhow!("{e}"))?;
    terminal.draw(draw).map_err(|e| anyhow!("{e}"))?;
    Ok(terminal.backend().buffer().clone())
}

/// Writes `buf` to `out` in `format`.
pub fn write_out(
    buf: &ratatui::buffer::Buffer,
    ctx: &Context,
    out: &Path,
    format: ExportFormat,
) -> Result<Vec<PathBuf>> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let stem = out
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| anyhow!("--out {}: not a file name", out.display()))?;
    Ok(write_screenshot(
        buf,
        &ctx.palette(),
        &dir,
        &[format],
        stem,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_scripts_parse() {
        assert_eq!(parse_size("160x48"), Ok((160, 48)));
        assert!(parse_size("160").is_err());
        assert!(parse_size("0x10").is_err());
        assert_eq!(parse_keys("l l space enter M e").unwrap().len(), 6);
        assert!(parse_keys("l nokey").is_err());
        assert_eq!(
            format_of(Path::new("a/shot.svg")).unwrap(),
            ExportFormat::Svg
        );
        assert!(format_of(Path::new("shot.jpg")).is_err());
    }
}
