//! The explorer: a keyboard-driven TUI over the engine and the analyses (ARCHITECTURE.md).
//!
//! Elm-like and split by concern: [`app`] holds the state, the actions and `update` (no drawing,
//! no I/O); [`panes`] render it; [`event`] runs the loop; [`worker`] owns the engine on its own
//! thread; [`keys`] and [`theme`] read the user's configuration; [`terminal`] keeps the terminal
//! sane; [`screenshot`] drives the same loop headless, through the same effect interpreter
//! ([`effects`]); [`export`] turns a frame into files.

pub mod app;
pub mod bench;
pub mod bench_tui;
pub mod demo;
pub mod effects;
pub mod event;
pub mod export;
pub mod keys;
pub mod panes;
pub mod screenshot;
pub mod study;
pub mod terminal;
pub mod theme;
pub mod worker;

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use ratatui::crossterm::event::EventStream;

use self::app::App;
use self::event::Context;
use self::worker::{Session, Worker};
use crate::prompt::Sample;

/// The sample opened when none is given (`samples/question.json`).
pub const DEFAULT_SAMPLE: &str = include_str!("../../samples/question.json");

/// The built-in default sample.
pub fn default_sample() -> Result<Sample> {
    serde_json::from_str(DEFAULT_SAMPLE).context("the built-in sample does not parse")
}

/// Everything `headscope --model M [SAMPLE]` opens.
pub struct ExploreOptions {
    pub session: Session,
    /// How the header names the sample.
    pub sample_label: String,
    pub context: Context,
}

/// A tokio current-thread runtime with timers (all the loop needs).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .context("cannot start the event loop")
}

/// Runs the explorer in this terminal until the user quits. The terminal is restored before
/// this returns, whatever happened.
pub fn explore(opts: ExploreOptions) -> Result<()> {
    let rt = runtime()?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut app = App::new(
        opts.session.load.model.clone(),
        opts.sample_label.clone(),
        opts.session.sample.clone(),
    );
    let mut worker = Worker::spawn(opts.session, tx)?;
    let mut guard = terminal::enter()?;
    let result = rt.block_on(event::run_loop(
        &mut guard.terminal,
        &mut app,
        &opts.context,
        &mut worker,
        &mut rx,
        EventStream::new(),
    ));
    drop(guard);
    drop(worker);
    result
}

/// `headscope-<timestamp>` files go here unless `--export-dir` says otherwise.
pub fn default_export_dir() -> PathBuf {
    PathBuf::from(".")
}
