//! The study view (`headscope study view DIR`, issue 13): a study's matrix of experiments, the
//! selected experiment's curve, head scores, top-list overlaps and test samples, and from any
//! test sample one key into the single-sample explorer with the experiment's top-k heads
//! ablated. Elm-like as the explorer: [`StudyApp`] is the state, [`update`] applies a
//! [`StudyAction`] and returns [`StudyEffect`]s (no I/O here); [`data`] reads the folder,
//! [`panes`] draw, [`run`] is the terminal's loop and [`screenshot`] the headless one.

pub mod data;
pub mod panes;
pub mod run;
pub mod screenshot;

use std::path::PathBuf;

use self::data::{Cell, StudyData};
use self::panes::StudyPanes;
use super::app::{App, Command, Pane, Status};
use super::panes::help::HelpState;
use crate::engine::AblationSet;
use crate::prompt::Sample;
use crate::study::config::AblatedPositions;

/// The study view's panes, in focus order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StudyPane {
    Matrix,
    Curve,
    Heads,
    Overlap,
    Samples,
}

impl StudyPane {
    pub const ALL: [StudyPane; 5] = [
        StudyPane::Matrix,
        StudyPane::Curve,
        StudyPane::Heads,
        StudyPane::Overlap,
        StudyPane::Samples,
    ];

    pub fn title(self) -> &'static str {
        match self {
            StudyPane::Matrix => "Experiments",
            StudyPane::Curve => "Accuracy vs k",
            StudyPane::Heads => "Heads",
            StudyPane::Overlap => "Overlap",
            StudyPane::Samples => "Test samples",
        }
    }

    /// The digit that focuses it (the explorer's focus keys 1…5).
    pub fn number(self) -> usize {
        StudyPane::ALL.iter().position(|&p| p == self).unwrap_or(0) + 1
    }

    fn step(self, by: isize) -> StudyPane {
        let n = StudyPane::ALL.len() as isize;
        let i = self.number() as isize - 1;
        StudyPane::ALL[(i + by).rem_euclid(n) as usize]
    }

    /// The study pane a focus key names (the explorer's digits 1…5).
    fn focused_by(c: Command) -> Option<StudyPane> {
        Some(match c {
            Command::FocusAnswer => StudyPane::Matrix,
            Command::FocusSample => StudyPane::Curve,
            Command::FocusHeatmap => StudyPane::Heads,
            Command::FocusLens => StudyPane::Overlap,
            Command::FocusAttribution => StudyPane::Samples,
            _ => return None,
        })
    }
}

/// What the study view's `?` lists: the commands it has, with what they do here.
pub const HELP: &[(Command, &str)] = &[
    (Command::Help, "show / hide this help"),
    (Command::Quit, "quit (ctrl-c always quits)"),
    (Command::NextPane, "focus the next pane"),
    (Command::PrevPane, "focus the previous pane"),
    (Command::FocusAnswer, "focus the experiments"),
    (Command::FocusSample, "focus the curve"),
    (Command::FocusHeatmap, "focus the heads"),
    (Command::FocusLens, "focus the overlaps"),
    (Command::FocusAttribution, "focus the test samples"),
    (Command::Left, "experiments: category · curve: k · heads"),
    (Command::Right, "experiments: category · curve: k · heads"),
    (Command::Up, "experiments: model × method · heads · sample"),
    (
        Command::Down,
        "experiments: model × method · heads · sample",
    ),
    (Command::PageUp, "up a page"),
    (Command::PageDown, "down a page"),
    (Command::Home, "first (category, k, head, sample)"),
    (Command::End, "last (category, k, head, sample)"),
    (Command::MoreK, "the next k"),
    (Command::FewerK, "the previous k"),
    (
        Command::CycleShared,
        "heads shared with: off / category / method / model",
    ),
    (
        Command::NextShared,
        "compare with the next category / method / model",
    ),
    (
        Command::ToggleBroken,
        "samples: all / broken by the top-k, not by random",
    ),
    (
        Command::Rerun,
        "open the sample with the top-k heads ablated",
    ),
    (Command::Cancel, "close the help (in a sample: back here)"),
    (Command::Export, "export a screenshot"),
];

/// A test sample opened in the single-sample explorer from an experiment.
#[derive(Clone, Debug, PartialEq)]
pub struct Drill {
    pub cell: Cell,
    pub k: usize,
    /// The model's index in the study and where to load it from.
    pub model: usize,
    pub model_path: String,
    pub sample: Sample,
    /// `model · method · category · top-k · sample`, for the header.
    pub label: String,
    /// The experiment's top-k heads in the study's ablation mode.
    pub set: AblationSet,
    /// What the explorer does differently from the study, said on its status line.
    pub note: Option<String>,
}

impl Drill {
    /// The explorer's state for the sample: the study's heads already in force as the live
    /// ablation (run as soon as the model is open), and esc coming back to the study.
    pub fn explorer(&self) -> App {
        let mut app = App::new(
            self.model_path.clone(),
            self.label.clone(),
            self.sample.clone(),
        );
        app.editor.set = self.set.clone();
        app.editor.top_k = self.k.max(1);
        app.editor.dirty = !self.set.is_empty();
        app.returns_to_study = true;
        app.focus = Pane::Ablation;
        app.status = self.note.clone().map(|text| Status { text, error: false });
        app
    }
}

#[derive(Clone, Debug)]
pub enum StudyAction {
    Command(Command),
    /// The folder was read again.
    Loaded(Box<StudyData>),
    LoadFailed(String),
    /// The screenshot was written (paths) or not (why).
    Exported(Result<Vec<PathBuf>, String>),
    /// Back from a sample opened in the explorer.
    Returned,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StudyEffect {
    Export,
    Quit,
    /// Open a test sample in the explorer.
    Open(Box<Drill>),
}

/// The study view's state.
#[derive(Clone, Debug)]
pub struct StudyApp {
    pub data: StudyData,
    pub focus: StudyPane,
    pub panes: StudyPanes,
    pub show_help: bool,
    pub help: HelpState,
    pub status: Option<Status>,
    /// Models given on the command line, by position, in place of the study's own paths.
    pub model_overrides: Vec<String>,
    pub quit: bool,
}

impl StudyApp {
    pub fn new(data: StudyData) -> StudyApp {
        let mut app = StudyApp {
            panes: StudyPanes::new(&data),
            data,
            focus: StudyPane::Matrix,
            show_help: false,
            help: HelpState::default(),
            status: None,
            model_overrides: Vec::new(),
            quit: false,
        };
        app.clamp();
        app
    }

    /// The experiment under the matrix cursor.
    pub fn cell(&self) -> Cell {
        let (row, col) = self.panes.matrix.cursor;
        self.data.cell(row, col)
    }

    /// The k selected on the curve.
    pub fn k(&self) -> usize {
        self.data.ks.get(self.panes.curve.k).copied().unwrap_or(0)
    }

    /// The experiment the heads pane compares with, when a comparison is on.
    pub fn other(&self) -> Option<Cell> {
        self.panes.heads.other(self.cell(), &self.data)
    }

    /// The samples pane's rows: the category's test samples, or only those the top-k broke.
    pub fn sample_rows(&self) -> Vec<usize> {
        let (cell, k) = (self.cell(), self.k());
        let cat = self.data.category(cell).unwrap_or("");
        (0..self.data.samples.len())
            .filter(|&i| self.data.samples[i].category == cat)
            .filter(|&i| {
                !self.panes.samples.broken_only
                    || self
                        .data
                        .outcome(cell, &self.data.samples[i].key, k)
                        .broken_by_top_only()
            })
            .collect()
    }

    fn set_status(&mut self, text: impl Into<String>, error: bool) {
        self.status = Some(Status {
            text: text.into(),
            error,
        });
    }

    /// Every cursor within what the data has now.
    fn clamp(&mut self) {
        let (rows, cols) = (self.data.rows(), self.data.categories.len());
        self.panes.matrix.clamp(rows, cols);
        self.panes.curve.clamp(self.data.ks.len());
        let shape = self.data.model(self.cell()).and_then(|m| m.shape);
        self.panes.heads.clamp(shape.unwrap_or((0, 0)));
        let n = self.sample_rows().len();
        self.panes.samples.clamp(n);
    }

    fn command(&mut self, c: Command) -> Vec<StudyEffect> {
        use Command::*;
        if self.show_help {
            match c {
                Help | Cancel => self.show_help = false,
                Quit => return self.quit(),
                Up | Down | PageUp | PageDown => {
                    let by = match c {
                        Up => -1,
                        Down => 1,
                        PageUp => -10,
                        _ => 10,
                    };
                    self.help.scroll.by(by);
                }
                _ => {}
            }
            return vec![];
        }
        match c {
            Quit => return self.quit(),
            Help => {
                self.show_help = true;
                self.help.scroll.home();
            }
            NextPane => self.focus = self.focus.step(1),
            PrevPane => self.focus = self.focus.step(-1),
            FocusAnswer | FocusSample | FocusHeatmap | FocusLens | FocusAttribution => {
                if let Some(p) = StudyPane::focused_by(c) {
                    self.focus = p;
                }
            }
            Left | Right | Up | Down | PageUp | PageDown | Home | End => self.movement(c),
            MoreK => self.panes.curve.step(1, self.data.ks.len()),
            FewerK => self.panes.curve.step(-1, self.data.ks.len()),
            CycleShared => self.panes.heads.cycle_axis(),
            NextShared => self.panes.heads.next_other(),
            ToggleBroken => {
                let s = &mut self.panes.samples;
                s.broken_only = !s.broken_only;
                s.cursor = 0;
            }
            Rerun => return self.open(),
            Export => return vec![StudyEffect::Export],
            Cancel => self.status = None,
            FocusAblation | PrevToken | NextToken | CycleHeadScore | CycleAttribution
            | ToggleSentences | CycleLensPoint | ToggleRank | ToggleAblation | AblateTopK
            | AblateRandom | ResetAblation | CycleAblationKind => {}
        }
        self.clamp();
        vec![]
    }

    fn quit(&mut self) -> Vec<StudyEffect> {
        self.quit = true;
        vec![StudyEffect::Quit]
    }

    /// The arrows move the focused pane's cursor; home and end jump to the first and last
    /// category, k, head or sample.
    fn movement(&mut self, c: Command) {
        use Command::*;
        const FAR: isize = isize::MAX / 4;
        let (dx, dy): (isize, isize) = match c {
            Left => (-1, 0),
            Right => (1, 0),
            Up => (0, -1),
            Down => (0, 1),
            PageUp => (0, -10),
            PageDown => (0, 10),
            Home => (-FAR, -FAR),
            _ => (FAR, FAR),
        };
        let jump = matches!(c, Home | End);
        let rows = self.sample_rows().len();
        let shape = self.data.model(self.cell()).and_then(|m| m.shape);
        let dims = (self.data.rows(), self.data.categories.len());
        let p = &mut self.panes;
        match self.focus {
            StudyPane::Matrix => p.matrix.move_by(if jump { 0 } else { dy }, dx, dims),
            StudyPane::Curve => p.curve.step(dx, self.data.ks.len()),
            StudyPane::Heads => {
                p.heads
                    .move_by(if jump { 0 } else { dy }, dx, shape.unwrap_or((0, 0)))
            }
            StudyPane::Overlap => {}
            StudyPane::Samples => p.samples.move_by(dy, rows),
        }
    }

    /// Enter: the sample under the samples cursor in the explorer, with the experiment's top-k
    /// heads ablated (at k = 0, the unablated model).
    fn open(&mut self) -> Vec<StudyEffect> {
        let rows = self.sample_rows();
        let Some(&i) = rows.get(self.panes.samples.cursor) else {
            self.set_status("no test sample to open here", true);
            return vec![];
        };
        let (cell, k) = (self.cell(), self.k());
        let set = match self.data.ablation_set(cell, k) {
            Some(set) => set,
            None if k == 0 => AblationSet {
                mode: self.data.record.study.ablation,
                ..AblationSet::default()
            },
            None => {
                self.set_status(
                    format!("no ablation plan for this model yet (k = {k}): wait for the ablation phase"),
                    true,
                );
                return vec![];
            }
        };
        let sample = &self.data.samples[i];
        let model = cell.model;
        let model_path = match self.model_overrides.get(model) {
            Some(p) => p.clone(),
            None => self.data.model_path(model).unwrap_or_default(),
        };
        let label = format!(
            "{} · {} · {} · top-{k} · {}",
            self.data.model(cell).map_or("", |m| m.label.as_str()),
            self.data.method(cell).map_or("", |m| m.key()),
            sample.category,
            sample.key
        );
        // The live ablation runs at every position; a decode-only study ablated the answer only.
        let note = (self.data.ablation().1 == AblatedPositions::DecodeOnly).then(|| {
            "the study ablated the answer positions only; the explorer ablates every position"
                .to_string()
        });
        vec![StudyEffect::Open(Box::new(Drill {
            cell,
            k,
            model,
            model_path,
            sample: sample.sample.clone(),
            label,
            set,
            note,
        }))]
    }
}

/// Elm's `update` for the study view.
pub fn update(app: &mut StudyApp, action: StudyAction) -> Vec<StudyEffect> {
    match action {
        StudyAction::Command(c) => app.command(c),
        StudyAction::Loaded(data) => {
            app.data = *data;
            app.clamp();
            vec![]
        }
        StudyAction::LoadFailed(e) => {
            app.set_status(format!("cannot read the study: {e}"), true);
            vec![]
        }
        StudyAction::Exported(Ok(paths)) => {
            let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            app.set_status(format!("screenshot written: {}", names.join(", ")), false);
            vec![]
        }
        StudyAction::Exported(Err(e)) => {
            app.set_status(format!("export failed: {e}"), true);
            vec![]
        }
        StudyAction::Returned => {
            app.status = None;
            vec![]
        }
    }
}
