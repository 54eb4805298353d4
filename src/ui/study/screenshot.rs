//! `headscope screenshot DIR` for a study: the study view off-screen at `--size`, the key script
//! played through the same `update` as the terminal. A key that opens a sample drives the
//! explorer headless on that sample's model (the explorer's own screenshot driver) with the keys
//! that follow, until esc comes back; the last screen, study or sample, is exported.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};

use super::data::StudyData;
use super::panes::StudyScreen;
use super::run::{export_screen, SessionBase};
use super::{update, StudyAction, StudyApp, StudyEffect};
use crate::ui::app::App;
use crate::ui::event::Context;
use crate::ui::panes::Screen;
use crate::ui::screenshot::{commands_of, drive, final_frame, format_of, write_out};

pub struct StudyScreenshotOptions {
    pub dir: PathBuf,
    pub context: Context,
    pub base: SessionBase,
    pub model_overrides: Vec<String>,
    /// Keys as in keys.toml, separated by spaces.
    pub keys: String,
    pub size: (u16, u16),
    /// The file to write; its extension picks the format.
    pub out: PathBuf,
    /// How long to wait for the explorer's worker at each step.
    pub timeout: Duration,
}

/// Plays the keys and exports the last screen. Returns the files written (the `--out` file last).
pub fn study_screenshot(opts: StudyScreenshotOptions) -> Result<Vec<PathBuf>> {
    let format = format_of(&opts.out)?;
    let commands = commands_of(&opts.context, &opts.keys)?;
    let data = StudyData::load(&opts.dir)
        .with_context(|| format!("cannot read the study in {}", opts.dir.display()))?;
    let mut app = StudyApp::new(data);
    app.model_overrides = opts.model_overrides.clone();
    let mut written = Vec::new();
    let mut sample: Option<App> = None;
    let mut i = 0;
    'keys: while i < commands.len() {
        let effects = update(&mut app, StudyAction::Command(commands[i]));
        i += 1;
        for effect in effects {
            match effect {
                StudyEffect::Quit => break 'keys,
                StudyEffect::Export => {
                    let r = export_screen(&app, &opts.context, opts.size);
                    if let Ok(paths) = &r {
                        written.extend(paths.iter().cloned());
                    }
                    update(&mut app, StudyAction::Exported(r));
                }
                StudyEffect::Open(drill) => {
                    let session = opts.base.session(&app.data, &drill)?;
                    let driven = drive(
                        drill.explorer(),
                        session,
                        &opts.context,
                        opts.size,
                        opts.timeout,
                        &commands[i..],
                    )?;
                    i += driven.used;
                    written.extend(driven.exported);
                    if !driven.app.back {
                        sample = Some(driven.app);
                        break 'keys;
                    }
                    update(&mut app, StudyAction::Returned);
                }
            }
        }
    }
    let ctx = &opts.context;
    let buf = final_frame(opts.size, |f| match &sample {
        Some(s) => f.render_widget(Screen::new(s, &ctx.theme, &ctx.keys), f.area()),
        None => f.render_widget(
            StudyScreen {
                app: &app,
                theme: &ctx.theme,
                keys: &ctx.keys,
            },
            f.area(),
        ),
    })
    .map_err(|e| anyhow!("{e:#}"))?;
    written.extend(write_out(&buf, ctx, &opts.out, format)?);
    Ok(written)
}
