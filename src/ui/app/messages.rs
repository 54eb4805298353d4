//! The messages in and out of [`update`](super::update): the user's commands, the worker's reports,
//! and the effects the loop carries out.

use std::path::PathBuf;

use super::{AnswerView, Job, LiveResult, Outcome};
use crate::analysis::report::AnalysisReport;
use crate::engine::ModelInfo;

/// What the worker reports. Every message names its job; messages of jobs that are no longer
/// current are ignored.
#[derive(Clone, Debug)]
pub enum WorkerMsg {
    Progress {
        id: u64,
        step: String,
        done: usize,
        total: usize,
        elapsed_s: f64,
    },
    ModelLoaded {
        id: u64,
        info: ModelInfo,
        seconds: f64,
    },
    Token {
        id: u64,
        text: String,
    },
    Answer {
        id: u64,
        answer: AnswerView,
    },
    Report {
        id: u64,
        report: Box<AnalysisReport>,
    },
    Live {
        id: u64,
        result: Box<LiveResult>,
    },
    Finished {
        id: u64,
        seconds: f64,
        outcome: Outcome,
    },
}

/// Every user-level action; keys map to these (see `keys.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Command {
    Quit,
    Help,
    NextPane,
    PrevPane,
    FocusAnswer,
    FocusSample,
    FocusHeatmap,
    FocusLens,
    FocusAttribution,
    FocusAblation,
    Left,
    Right,
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    PrevToken,
    NextToken,
    CycleHeadScore,
    CycleAttribution,
    ToggleSentences,
    CycleLensPoint,
    ToggleRank,
    ToggleAblation,
    AblateTopK,
    AblateRandom,
    ResetAblation,
    MoreK,
    FewerK,
    CycleAblationKind,
    Rerun,
    Cancel,
    Export,
    /// Study view: highlight the heads shared with another category, method or model.
    CycleShared,
    /// Study view: compare with the next category, method or model.
    NextShared,
    /// Study view: only the samples broken by the top-k but not by random heads.
    ToggleBroken,
}

impl Command {
    /// Commands only the study view has (the single-sample explorer's `?` leaves them out).
    pub const STUDY_ONLY: [Command; 3] = [
        Command::CycleShared,
        Command::NextShared,
        Command::ToggleBroken,
    ];
}

#[derive(Clone, Debug)]
pub enum Action {
    /// The loop has started: open the sample.
    Start,
    Command(Command),
    Worker(WorkerMsg),
    /// The quiet time after an ablation change has passed.
    DebounceElapsed,
    /// The screenshot was written (paths) or not (why).
    Exported(Result<Vec<PathBuf>, String>),
}

/// What `update` asks the event loop to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Send a job to the worker; it supersedes the job in flight.
    Submit(Job),
    /// Cancel the job in flight.
    Cancel,
    /// (Re)start the debounce timer; [`Action::DebounceElapsed`] follows.
    Debounce,
    /// Write the current screen to the export directory.
    Export,
    Quit,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    pub text: String,
    pub error: bool,
}
