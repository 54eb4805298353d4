//! The explorer's state, the actions that change it, and [`update`]. No drawing and no I/O here:
//! `update` returns [`Effect`]s (jobs for the worker, a debounce timer, an export) that the event
//! loop carries out. The state holds plain vectors and serde report structs, never tensors, so the
//! panes and the tests need no model.

use std::path::PathBuf;

use crate::analysis::report::{AnalysisReport, Method};
pub use crate::analysis::report::{Attribution, HeadScore};
use crate::analysis::rng::SplitMix64;
use crate::analysis::{top_heads, AnswerSource};
use crate::engine::ModelInfo;
pub use crate::engine::{AblationMode, AblationSet};
use crate::prompt::Sample;

/// The analysis runs in stages so the panes fill progressively ([`Method::STAGES`]).
pub const STAGES: [&[Method]; 3] = Method::STAGES;

/// Attributions at sentence granularity, run when the user first asks for sentences.
pub const SENTENCE_METHODS: &[Method] = &[
    Method::Attr(Attribution::Attention),
    Method::Attr(Attribution::ArcJsd),
    Method::Attr(Attribution::Marginal),
    Method::Attr(Attribution::ContextCite),
    Method::Attr(Attribution::Mirage),
];

/// Quiet time after an ablation toggle before the live re-run starts.
pub const DEBOUNCE_MS: u64 = 300;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pane {
    Answer,
    Sample,
    Heatmap,
    Lens,
    Attribution,
    Ablation,
}

impl Pane {
    pub const ALL: [Pane; 6] = [
        Pane::Answer,
        Pane::Sample,
        Pane::Heatmap,
        Pane::Lens,
        Pane::Attribution,
        Pane::Ablation,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Pane::Answer => "Answer",
            Pane::Sample => "Sample",
            Pane::Heatmap => "Heads",
            Pane::Lens => "Logit lens",
            Pane::Attribution => "Attribution",
            Pane::Ablation => "Ablation",
        }
    }

    /// The digit that focuses it.
    pub fn number(self) -> usize {
        Pane::ALL.iter().position(|&p| p == self).unwrap_or(0) + 1
    }

    fn step(self, by: isize) -> Pane {
        let n = Pane::ALL.len() as isize;
        let i = Pane::ALL.iter().position(|&p| p == self).unwrap_or(0) as isize;
        Pane::ALL[((i + by).rem_euclid(n)) as usize]
    }
}

/// Which residual-stream points the logit lens shows (`p` cycles).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LensPoint {
    Post,
    Mid,
    Pre,
    All,
}

impl LensPoint {
    pub const ALL: [LensPoint; 4] = [
        LensPoint::Post,
        LensPoint::Mid,
        LensPoint::Pre,
        LensPoint::All,
    ];

    pub fn label(self) -> &'static str {
        match self {
            LensPoint::Post => "post",
            LensPoint::Mid => "mid",
            LensPoint::Pre => "pre",
            LensPoint::All => "all",
        }
    }

    /// Does a lens row at `point` (`pre`, `mid`, `post`) show?
    pub fn shows(self, point: &str) -> bool {
        self == LensPoint::All || self.label() == point
    }
}

fn cycle<T: Copy + PartialEq>(all: &[T], x: T) -> T {
    let i = all.iter().position(|&y| y == x).unwrap_or(0);
    all[(i + 1) % all.len()]
}

/// How the current ablation set was made, so `+`/`-` can redo it with a new k.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AblationOrigin {
    ByHand,
    TopK(HeadScore),
    Random,
}

/// The answer as the panes show it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AnswerView {
    pub tokens: Vec<String>,
    pub logprobs: Vec<f32>,
    pub text: String,
    pub source: Option<AnswerSource>,
    /// False while tokens are still streaming in.
    pub complete: bool,
}

impl AnswerView {
    pub fn total_logprob(&self) -> f64 {
        self.logprobs.iter().map(|&x| x as f64).sum()
    }
}

/// One live ablation re-run, copied out of the worker's result.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveResult {
    pub ablation: AblationSet,
    pub answer_text: String,
    pub tokens: Vec<String>,
    pub logprobs: Vec<f32>,
    /// The original answer's log-prob without ablation, and its change under the ablation.
    pub original_logprob: f64,
    pub delta_logprob: f64,
    /// The first answer position where the new answer departs from the original.
    pub first_change: Option<usize>,
    pub recomputed_from_layer: Option<usize>,
    pub forwards: usize,
    pub seconds: f64,
}

/// What the worker is asked to do.
#[derive(Clone, Debug, PartialEq)]
pub enum JobSpec {
    /// Load the model (once) and prepare the subject: the prompt and the answer.
    Open,
    /// Run stage `stage` (0-based) of [`STAGES`] at document granularity, on the model with
    /// `under` ablated (empty: the unablated model).
    Analyze { stage: usize, under: AblationSet },
    /// [`SENTENCE_METHODS`] at sentence granularity, on the model with `under` ablated.
    Sentences { under: AblationSet },
    /// Re-run the answer with these heads and MLPs ablated.
    Live(AblationSet),
}

impl JobSpec {
    pub fn label(&self) -> String {
        match self {
            JobSpec::Open => "load".into(),
            JobSpec::Analyze { stage, under } => format!(
                "stage {}/{}{}",
                stage + 1,
                STAGES.len(),
                ablated_suffix(under)
            ),
            JobSpec::Sentences { under } => format!("sentences{}", ablated_suffix(under)),
            JobSpec::Live(a) => format!("ablation ({})", a.len()),
        }
    }
}

fn ablated_suffix(under: &AblationSet) -> &'static str {
    if under.is_empty() {
        ""
    } else {
        " (ablated)"
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: u64,
    pub spec: JobSpec,
}

/// How a job ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Done,
    Cancelled,
    Failed(String),
}

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

/// The job in flight.
#[derive(Clone, Debug, PartialEq)]
pub struct Running {
    pub id: u64,
    pub spec: JobSpec,
    /// The step within the job (an analysis method), once the worker says.
    pub step: String,
    pub done: usize,
    pub total: usize,
    pub elapsed_s: f64,
}

impl Running {
    pub fn ratio(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            (self.done as f64 / self.total as f64).clamp(0.0, 1.0)
        }
    }
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

/// The unablated model's answer and results, kept while the panes show an ablated model so that
/// resetting the ablation brings them back at once.
#[derive(Clone, Debug, Default)]
pub struct CleanView {
    pub answer: AnswerView,
    pub report: Option<AnalysisReport>,
    pub sentence_report: Option<AnalysisReport>,
    pub next_stage: usize,
    pub failed_stages: Vec<usize>,
    pub sentences_failed: bool,
}

/// The explorer's whole state.
#[derive(Clone, Debug)]
pub struct App {
    pub model_name: String,
    pub info: Option<ModelInfo>,
    pub sample_label: String,
    pub sample: Sample,
    pub answer: AnswerView,
    /// Document-granularity results, merged stage by stage.
    pub report: Option<AnalysisReport>,
    /// Sentence-granularity attributions, once asked for.
    pub sentence_report: Option<AnalysisReport>,

    pub focus: Pane,
    pub show_help: bool,
    pub help_scroll: usize,
    /// The answer position every pane looks at.
    pub token: usize,
    /// `(layer, head)`; `head == heads` is the layer's MLP.
    pub head_cursor: (usize, usize),
    pub head_score: HeadScore,
    pub attr_method: Attribution,
    pub sentences: bool,
    pub source_cursor: usize,
    /// Until the user moves it, the source cursor sits on the top source of the method shown.
    pub source_moved: bool,
    pub sample_scroll: usize,
    /// The sample pane scrolls to the focused source until the user scrolls it by hand.
    pub sample_follow: bool,
    pub lens_point: LensPoint,
    pub lens_rank: bool,
    pub lens_row: usize,
    pub ablation_scroll: usize,

    pub ablation: AblationSet,
    pub ablation_origin: AblationOrigin,
    pub top_k: usize,
    random_draws: u64,
    pub live: Option<LiveResult>,
    /// The ablation set changed since the last live run was sent.
    pub live_dirty: bool,
    /// The ablation the answer and every report are for (empty: the unablated model). It follows
    /// `ablation` once a live re-run for it has come back.
    pub view: AblationSet,
    /// The unablated model's results while `view` is not empty.
    pub clean: Option<Box<CleanView>>,

    pub opened: bool,
    pub open_failed: bool,
    pub next_stage: usize,
    pub failed_stages: Vec<usize>,
    pub sentences_failed: bool,
    /// Esc stopped the work; enter resumes it.
    pub paused: bool,
    pub running: Option<Running>,
    pub last_job: Option<(String, f64)>,
    pub status: Option<Status>,
    next_job_id: u64,
    pub quit: bool,
}

impl App {
    pub fn new(
        model_name: impl Into<String>,
        sample_label: impl Into<String>,
        sample: Sample,
    ) -> App {
        App {
            model_name: model_name.into(),
            info: None,
            sample_label: sample_label.into(),
            sample,
            answer: AnswerView::default(),
            report: None,
            sentence_report: None,
            focus: Pane::Heatmap,
            show_help: false,
            help_scroll: 0,
            token: 0,
            head_cursor: (0, 0),
            head_score: HeadScore::ArcJsd,
            attr_method: Attribution::ArcJsd,
            sentences: false,
            source_cursor: 0,
            source_moved: false,
            sample_scroll: 0,
            sample_follow: true,
            lens_point: LensPoint::Post,
            lens_rank: false,
            lens_row: 0,
            ablation_scroll: 0,
            ablation: AblationSet::default(),
            ablation_origin: AblationOrigin::ByHand,
            top_k: 5,
            random_draws: 0,
            live: None,
            live_dirty: false,
            view: AblationSet::default(),
            clean: None,
            opened: false,
            open_failed: false,
            next_stage: 0,
            failed_stages: Vec::new(),
            sentences_failed: false,
            paused: false,
            running: None,
            last_job: None,
            status: None,
            next_job_id: 1,
            quit: false,
        }
    }

    /// `(layers, heads)` of the model, once known.
    pub fn dims(&self) -> (usize, usize) {
        if let Some(i) = &self.info {
            return (i.layers, i.heads);
        }
        if let Some(r) = &self.report {
            return (r.model.layers, r.model.heads);
        }
        (0, 0)
    }

    /// The unablated model's report (the current one when nothing is ablated).
    pub fn clean_report(&self) -> Option<&AnalysisReport> {
        match &self.clean {
            Some(c) => c.report.as_ref(),
            None => self.report.as_ref(),
        }
    }

    /// The unablated model's answer while the panes show an ablated one.
    pub fn clean_answer(&self) -> Option<&AnswerView> {
        self.clean.as_ref().map(|c| &c.answer)
    }

    /// The panes now show the model with `set` ablated: keep the unablated results (when leaving
    /// them) and start the analyses over. The answer is the re-run's until the worker sends the
    /// ablated model's own scores for it.
    pub(crate) fn enter_view(&mut self, set: AblationSet, answer: AnswerView) {
        if set == self.view {
            return;
        }
        let previous = CleanView {
            answer: std::mem::replace(&mut self.answer, answer),
            report: self.report.take(),
            sentence_report: self.sentence_report.take(),
            next_stage: std::mem::take(&mut self.next_stage),
            failed_stages: std::mem::take(&mut self.failed_stages),
            sentences_failed: std::mem::take(&mut self.sentences_failed),
        };
        if self.view.is_empty() {
            self.clean = Some(Box::new(previous));
        }
        self.view = set;
        self.token = self.token.min(self.answer.tokens.len().saturating_sub(1));
        self.follow_top_source();
    }

    /// Back to the unablated model's answer and results.
    fn leave_view(&mut self) {
        let Some(clean) = self.clean.take() else {
            return;
        };
        let c = *clean;
        self.answer = c.answer;
        self.report = c.report;
        self.sentence_report = c.sentence_report;
        self.next_stage = c.next_stage;
        self.failed_stages = c.failed_stages;
        self.sentences_failed = c.sentences_failed;
        self.view = AblationSet::default();
        self.token = self.token.min(self.answer.tokens.len().saturating_sub(1));
        self.follow_top_source();
    }

    /// The selected head score's `[layers][heads]` matrix, when computed.
    pub fn head_matrix(&self) -> Option<&Vec<Vec<f64>>> {
        self.report.as_ref()?.head_scores.get(&self.head_score)
    }

    /// The selected head score's per-layer MLP scores, when the method has them.
    pub fn mlp_scores(&self) -> Option<&Vec<f64>> {
        self.report.as_ref()?.mlp_scores.get(&self.head_score)
    }

    /// The report the attribution pane shows (document or sentence granularity).
    pub fn attribution_report(&self) -> Option<&AnalysisReport> {
        if self.sentences {
            self.sentence_report.as_ref()
        } else {
            self.report.as_ref()
        }
    }

    /// The selected attribution's scores, one per source.
    pub fn attribution(&self) -> Option<&Vec<f64>> {
        self.attribution_report()?
            .attribution
            .get(&self.attr_method)
    }

    pub fn source_count(&self) -> usize {
        match self.attribution_report() {
            Some(r) => r.sources.len(),
            None if self.sentences => 0,
            None => self.sample.docs.len(),
        }
    }

    pub fn is_busy(&self) -> bool {
        self.running.is_some()
    }

    /// Nothing running and nothing left to schedule (the headless screenshot waits for this).
    pub fn is_idle(&self) -> bool {
        self.running.is_none()
            && !self.live_dirty
            && (self.open_failed
                || self.paused
                || (self.opened
                    && self.next_stage >= STAGES.len()
                    && (!self.sentences
                        || self.sentence_report.is_some()
                        || self.sentences_failed)))
    }

    fn set_status(&mut self, text: impl Into<String>) {
        self.status = Some(Status {
            text: text.into(),
            error: false,
        });
    }

    fn set_error(&mut self, text: impl Into<String>) {
        self.status = Some(Status {
            text: text.into(),
            error: true,
        });
    }

    fn submit(&mut self, spec: JobSpec) -> Effect {
        let id = self.next_job_id;
        self.next_job_id += 1;
        if matches!(spec, JobSpec::Live(_)) {
            self.live_dirty = false;
        }
        self.running = Some(Running {
            id,
            spec: spec.clone(),
            step: String::new(),
            done: 0,
            total: 0,
            elapsed_s: 0.0,
        });
        Effect::Submit(Job { id, spec })
    }

    /// The next job when the worker is free: open, a pending live re-run, sentence attributions
    /// when asked, then the remaining analysis stages.
    fn schedule(&mut self) -> Vec<Effect> {
        if self.quit || self.paused || self.running.is_some() || self.open_failed {
            return vec![];
        }
        if !self.opened {
            return vec![self.submit(JobSpec::Open)];
        }
        if self.live_dirty {
            if self.ablation.is_empty() {
                self.live_dirty = false;
                self.live = None;
            } else {
                let a = self.ablation.clone();
                return vec![self.submit(JobSpec::Live(a))];
            }
        }
        if self.sentences && self.sentence_report.is_none() && !self.sentences_failed {
            let under = self.view.clone();
            return vec![self.submit(JobSpec::Sentences { under })];
        }
        if self.next_stage < STAGES.len() {
            let stage = self.next_stage;
            let under = self.view.clone();
            return vec![self.submit(JobSpec::Analyze { stage, under })];
        }
        vec![]
    }

    fn running_is(&self, f: impl Fn(&JobSpec) -> bool) -> bool {
        self.running.as_ref().is_some_and(|r| f(&r.spec))
    }

    /// After the ablation set changed: debounce a re-run, or drop the result when nothing is
    /// ablated any more.
    fn ablation_changed(&mut self) -> Vec<Effect> {
        if self.ablation.is_empty() {
            self.live = None;
            self.live_dirty = false;
            self.leave_view();
            // Work for an ablated model is now moot.
            let moot = self.running_is(|s| match s {
                JobSpec::Live(_) => true,
                JobSpec::Analyze { under, .. } | JobSpec::Sentences { under } => !under.is_empty(),
                JobSpec::Open => false,
            });
            if moot {
                self.running = None;
                let mut e = vec![Effect::Cancel];
                e.extend(self.schedule());
                return e;
            }
            return self.schedule();
        }
        self.live_dirty = true;
        vec![Effect::Debounce]
    }

    /// Starts the live re-run now (superseding whatever analysis runs), if it can run.
    fn run_live_now(&mut self) -> Vec<Effect> {
        if !self.opened || self.ablation.is_empty() {
            return vec![];
        }
        if self.running_is(|s| matches!(s, JobSpec::Open)) {
            self.live_dirty = true;
            return vec![];
        }
        let a = self.ablation.clone();
        vec![self.submit(JobSpec::Live(a))]
    }

    fn move_token(&mut self, by: isize) {
        let n = self.answer.tokens.len();
        if n == 0 {
            self.token = 0;
            return;
        }
        self.token = (self.token as isize + by).clamp(0, n as isize - 1) as usize;
    }

    fn move_head(&mut self, dl: isize, dh: isize) {
        let (layers, heads) = self.dims();
        if layers == 0 || heads == 0 {
            return;
        }
        let (l, h) = self.head_cursor;
        // The column after the last head is the layer's MLP.
        let l = (l as isize + dl).clamp(0, layers as isize - 1) as usize;
        let h = (h as isize + dh).clamp(0, heads as isize) as usize;
        self.head_cursor = (l, h);
    }

    fn move_source(&mut self, by: isize) {
        let n = self.source_count();
        if n == 0 {
            self.source_cursor = 0;
            return;
        }
        self.source_cursor = (self.source_cursor as isize + by).clamp(0, n as isize - 1) as usize;
        self.sample_follow = true;
        self.source_moved = true;
    }

    /// Puts the source cursor on the top source of the method shown, unless the user moved it.
    fn follow_top_source(&mut self) {
        if self.source_moved {
            return;
        }
        if let Some(top) = self
            .attribution()
            .and_then(|s| crate::analysis::ranking(s).first().copied())
        {
            self.source_cursor = top;
        }
    }

    pub fn lens_rows(&self) -> usize {
        self.report
            .as_ref()
            .and_then(|r| r.logit_lens.as_ref())
            .map_or(0, |l| {
                l.rows
                    .iter()
                    .filter(|r| self.lens_point.shows(&r.point))
                    .count()
            })
    }

    fn move_lens_row(&mut self, by: isize) {
        let n = self.lens_rows();
        if n == 0 {
            self.lens_row = 0;
            return;
        }
        self.lens_row = (self.lens_row as isize + by).clamp(0, n as isize - 1) as usize;
    }

    /// Arrow keys and friends act on the focused pane. `(dx, dy)`; `page` moves by a page.
    fn movement(&mut self, c: Command) {
        let (dx, dy): (isize, isize) = match c {
            Command::Left => (-1, 0),
            Command::Right => (1, 0),
            Command::Up => (0, -1),
            Command::Down => (0, 1),
            Command::PageUp => (0, -10),
            Command::PageDown => (0, 10),
            Command::Home => (-100_000, 0),
            Command::End => (100_000, 0),
            _ => (0, 0),
        };
        if self.show_help {
            self.help_scroll = (self.help_scroll as isize + dy).max(0) as usize;
            return;
        }
        match self.focus {
            Pane::Answer => self.move_token(if dx != 0 { dx } else { dy }),
            Pane::Heatmap => {
                let dl = match c {
                    Command::PageUp => -5,
                    Command::PageDown => 5,
                    _ => dy,
                };
                self.move_head(dl, dx);
            }
            Pane::Lens => {
                self.move_token(dx);
                self.move_lens_row(dy);
            }
            Pane::Sample => {
                self.sample_follow = false;
                self.sample_scroll = (self.sample_scroll as isize + dy).clamp(0, 10_000) as usize;
                if matches!(c, Command::Home) {
                    self.sample_scroll = 0;
                }
            }
            Pane::Attribution => {
                self.move_token(dx);
                self.move_source(dy);
            }
            Pane::Ablation => {
                if dx != 0 && dx.abs() == 1 {
                    // Left/right here adjust k, as `-`/`+` do.
                    return;
                }
                self.ablation_scroll =
                    (self.ablation_scroll as isize + dy).clamp(0, 10_000) as usize;
            }
        }
    }

    /// Ablates the top k heads of `score` on the unablated model (so `+`/`-` grow and shrink one
    /// ranking, whatever is ablated now).
    fn set_top_k(&mut self, score: HeadScore) -> Vec<Effect> {
        let Some(matrix) = self.clean_report().and_then(|r| r.head_scores.get(&score)) else {
            self.set_error(format!(
                "{} is not computed yet (stage {}): cannot pick its top heads",
                score.label(),
                score.stage()
            ));
            return vec![];
        };
        let importance = score.importance(matrix);
        let top = top_heads(&importance, self.top_k);
        self.ablation.heads = top.iter().map(|&(l, h, _)| (l, h)).collect();
        self.ablation.mlps.clear();
        self.ablation_origin = AblationOrigin::TopK(score);
        self.set_status(format!(
            "ablating the top {} heads by {}",
            self.ablation.heads.len(),
            score.label()
        ));
        self.ablation_changed()
    }

    fn set_random(&mut self) -> Vec<Effect> {
        let (layers, heads) = self.dims();
        if layers * heads == 0 {
            return vec![];
        }
        let pool: Vec<(usize, usize)> = (0..layers)
            .flat_map(|l| (0..heads).map(move |h| (l, h)))
            .collect();
        let mut rng = SplitMix64::new(0x5eed_0000 + self.random_draws);
        self.random_draws += 1;
        self.ablation.heads = rng.choose(&pool, self.top_k).into_iter().collect();
        self.ablation.mlps.clear();
        self.ablation_origin = AblationOrigin::Random;
        self.set_status(format!(
            "ablating {} random heads",
            self.ablation.heads.len()
        ));
        self.ablation_changed()
    }

    fn change_k(&mut self, by: isize) -> Vec<Effect> {
        let (layers, heads) = self.dims();
        let max = (layers * heads).max(1);
        self.top_k = (self.top_k as isize + by).clamp(1, max as isize) as usize;
        match self.ablation_origin {
            AblationOrigin::TopK(score) if !self.ablation.is_empty() => self.set_top_k(score),
            AblationOrigin::Random if !self.ablation.is_empty() => self.set_random(),
            _ => {
                self.set_status(format!("k = {}", self.top_k));
                vec![]
            }
        }
    }

    fn command(&mut self, c: Command) -> Vec<Effect> {
        use Command::*;
        if self.show_help && !matches!(c, Help | Cancel | Quit | Up | Down | PageUp | PageDown) {
            return vec![];
        }
        match c {
            Quit => {
                self.quit = true;
                vec![Effect::Cancel, Effect::Quit]
            }
            Help => {
                self.show_help = !self.show_help;
                self.help_scroll = 0;
                vec![]
            }
            NextPane => {
                self.focus = self.focus.step(1);
                vec![]
            }
            PrevPane => {
                self.focus = self.focus.step(-1);
                vec![]
            }
            FocusAnswer | FocusSample | FocusHeatmap | FocusLens | FocusAttribution
            | FocusAblation => {
                self.focus = match c {
                    FocusAnswer => Pane::Answer,
                    FocusSample => Pane::Sample,
                    FocusHeatmap => Pane::Heatmap,
                    FocusLens => Pane::Lens,
                    FocusAttribution => Pane::Attribution,
                    _ => Pane::Ablation,
                };
                vec![]
            }
            Left | Right if self.focus == Pane::Ablation && !self.show_help => {
                self.change_k(if c == Left { -1 } else { 1 })
            }
            Left | Right | Up | Down | PageUp | PageDown | Home | End => {
                self.movement(c);
                vec![]
            }
            PrevToken => {
                self.move_token(-1);
                vec![]
            }
            NextToken => {
                self.move_token(1);
                vec![]
            }
            CycleHeadScore => {
                self.head_score = cycle(&HeadScore::ALL, self.head_score);
                vec![]
            }
            CycleAttribution => {
                self.attr_method = cycle(&Attribution::ALL, self.attr_method);
                self.follow_top_source();
                vec![]
            }
            ToggleSentences => {
                self.sentences = !self.sentences;
                self.source_cursor = 0;
                self.source_moved = false;
                self.follow_top_source();
                self.sample_follow = true;
                if !self.sentences || self.sentence_report.is_some() || !self.opened {
                    return vec![];
                }
                // Asked for now: it goes before the remaining analysis stages.
                if self.running_is(|s| matches!(s, JobSpec::Analyze { .. })) {
                    let under = self.view.clone();
                    return vec![self.submit(JobSpec::Sentences { under })];
                }
                self.schedule()
            }
            CycleLensPoint => {
                self.lens_point = cycle(&LensPoint::ALL, self.lens_point);
                self.lens_row = self.lens_row.min(self.lens_rows().saturating_sub(1));
                vec![]
            }
            ToggleRank => {
                self.lens_rank = !self.lens_rank;
                vec![]
            }
            ToggleAblation => {
                let (layers, heads) = self.dims();
                if layers == 0 {
                    return vec![];
                }
                let (l, h) = self.head_cursor;
                if h >= heads {
                    if !self.ablation.mlps.remove(&l) {
                        self.ablation.mlps.insert(l);
                    }
                } else if !self.ablation.heads.remove(&(l, h)) {
                    self.ablation.heads.insert((l, h));
                }
                self.ablation_origin = AblationOrigin::ByHand;
                self.ablation_changed()
            }
            AblateTopK => self.set_top_k(self.head_score),
            AblateRandom => self.set_random(),
            ResetAblation => {
                self.ablation.heads.clear();
                self.ablation.mlps.clear();
                self.ablation_origin = AblationOrigin::ByHand;
                self.set_status("ablation reset");
                self.ablation_changed()
            }
            MoreK => self.change_k(1),
            FewerK => self.change_k(-1),
            CycleAblationKind => {
                self.ablation.mode = match self.ablation.mode {
                    AblationMode::Zero => AblationMode::Mean,
                    AblationMode::Mean => AblationMode::Uniform,
                    AblationMode::Uniform => AblationMode::Zero,
                };
                if self.ablation.is_empty() {
                    vec![]
                } else {
                    self.ablation_changed()
                }
            }
            Rerun => {
                self.paused = false;
                if !self.ablation.is_empty() {
                    let e = self.run_live_now();
                    if !e.is_empty() {
                        return e;
                    }
                }
                self.schedule()
            }
            Cancel => {
                if self.show_help {
                    self.show_help = false;
                    return vec![];
                }
                match self.running.take() {
                    Some(r) => {
                        self.paused = true;
                        self.live_dirty = false;
                        self.set_status(format!("cancelled {}; enter resumes", r.spec.label()));
                        vec![Effect::Cancel]
                    }
                    None => vec![],
                }
            }
            Export => vec![Effect::Export],
        }
    }

    fn worker(&mut self, msg: WorkerMsg) -> Vec<Effect> {
        let current = self.running.as_ref().map(|r| r.id);
        match msg {
            WorkerMsg::Progress {
                id,
                step,
                done,
                total,
                elapsed_s,
            } => {
                if let Some(r) = self.running.as_mut().filter(|r| r.id == id) {
                    r.step = step;
                    r.done = done;
                    r.total = total;
                    r.elapsed_s = elapsed_s;
                }
                vec![]
            }
            WorkerMsg::ModelLoaded { id, info, seconds } => {
                if current == Some(id) {
                    self.info = Some(info);
                    self.last_job = Some(("load model".into(), seconds));
                }
                vec![]
            }
            WorkerMsg::Token { id, text } => {
                if current == Some(id) {
                    self.answer.text.push_str(&text);
                    self.answer.tokens.push(text);
                    self.answer.complete = false;
                }
                vec![]
            }
            WorkerMsg::Answer { id, answer } => {
                if current == Some(id) {
                    self.answer = answer;
                    self.token = self.token.min(self.answer.tokens.len().saturating_sub(1));
                }
                vec![]
            }
            WorkerMsg::Report { id, report } => {
                let Some(r) = self.running.as_ref().filter(|r| r.id == id) else {
                    return vec![];
                };
                let slot = match r.spec {
                    JobSpec::Sentences { .. } => &mut self.sentence_report,
                    _ => &mut self.report,
                };
                match slot {
                    Some(existing) => existing.merge(*report),
                    None => *slot = Some(*report),
                }
                self.follow_top_source();
                vec![]
            }
            WorkerMsg::Live { id, result } => {
                if current == Some(id) {
                    let answer = AnswerView {
                        tokens: result.tokens.clone(),
                        logprobs: result.logprobs.clone(),
                        text: result.answer_text.clone(),
                        source: Some(AnswerSource::Generated),
                        complete: true,
                    };
                    // The re-run is for the set as it was when sent; a set emptied since then
                    // stays unablated.
                    if !self.ablation.is_empty() {
                        self.enter_view(result.ablation.clone(), answer);
                    }
                    self.live = Some(*result);
                }
                vec![]
            }
            WorkerMsg::Finished {
                id,
                seconds,
                outcome,
            } => {
                let Some(r) = self.running.take_if(|r| r.id == id) else {
                    return vec![];
                };
                self.last_job = Some((r.spec.label(), seconds));
                match (&r.spec, outcome) {
                    (JobSpec::Open, Outcome::Done) => {
                        self.opened = true;
                        self.answer.complete = true;
                    }
                    (JobSpec::Analyze { stage, .. }, Outcome::Done) => {
                        self.next_stage = self.next_stage.max(stage + 1);
                    }
                    (_, Outcome::Done) | (_, Outcome::Cancelled) => {}
                    (spec, Outcome::Failed(msg)) => {
                        self.set_error(format!("{} failed: {msg}", spec.label()));
                        match spec {
                            JobSpec::Open => self.open_failed = true,
                            JobSpec::Analyze { stage, .. } => {
                                self.failed_stages.push(*stage);
                                self.next_stage = self.next_stage.max(stage + 1);
                            }
                            JobSpec::Sentences { .. } => self.sentences_failed = true,
                            JobSpec::Live(_) => {}
                        }
                    }
                }
                self.schedule()
            }
        }
    }
}

/// Elm's `update`: applies `action` to `app` and says what the loop must do.
pub fn update(app: &mut App, action: Action) -> Vec<Effect> {
    match action {
        Action::Start => app.schedule(),
        Action::Command(c) => app.command(c),
        Action::Worker(msg) => app.worker(msg),
        Action::DebounceElapsed => {
            if app.live_dirty && !app.paused {
                app.run_live_now()
            } else {
                vec![]
            }
        }
        Action::Exported(Ok(paths)) => {
            let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            app.set_status(format!("screenshot written: {}", names.join(", ")));
            vec![]
        }
        Action::Exported(Err(e)) => {
            app.set_error(format!("export failed: {e}"));
            vec![]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::demo::demo_app;

    fn cmd(app: &mut App, c: Command) -> Vec<Effect> {
        update(app, Action::Command(c))
    }

    fn submitted(effects: &[Effect]) -> Vec<JobSpec> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Submit(j) => Some(j.spec.clone()),
                _ => None,
            })
            .collect()
    }

    fn finish(app: &mut App, outcome: Outcome) -> Vec<Effect> {
        let id = app.running.as_ref().expect("a job runs").id;
        update(
            app,
            Action::Worker(WorkerMsg::Finished {
                id,
                seconds: 0.5,
                outcome,
            }),
        )
    }

    /// A stage on the unablated model.
    fn analyze(stage: usize) -> JobSpec {
        JobSpec::Analyze {
            stage,
            under: AblationSet::default(),
        }
    }

    fn fresh() -> App {
        App::new("m", "s", crate::ui::default_sample().unwrap())
    }

    #[test]
    fn start_opens_then_runs_the_stages_in_order() {
        let mut app = fresh();
        assert_eq!(
            submitted(&update(&mut app, Action::Start)),
            vec![JobSpec::Open]
        );
        assert!(!app.is_idle());
        let e = finish(&mut app, Outcome::Done);
        assert!(app.opened);
        assert_eq!(submitted(&e), vec![analyze(0)]);
        let e = finish(&mut app, Outcome::Done);
        assert_eq!(submitted(&e), vec![analyze(1)]);
        // A failed stage is reported and skipped.
        let e = finish(&mut app, Outcome::Failed("boom".into()));
        assert_eq!(submitted(&e), vec![analyze(2)]);
        assert!(app.status.as_ref().unwrap().error);
        assert_eq!(app.failed_stages, vec![1]);
        let e = finish(&mut app, Outcome::Done);
        assert!(e.is_empty());
        assert!(app.is_idle());
        assert_eq!(app.last_job.as_ref().unwrap().0, "stage 3/3");
    }

    #[test]
    fn a_failed_open_stops_everything() {
        let mut app = fresh();
        update(&mut app, Action::Start);
        let e = finish(&mut app, Outcome::Failed("no such model".into()));
        assert!(e.is_empty());
        assert!(app.open_failed && app.is_idle());
        assert!(app.status.as_ref().unwrap().text.contains("no such model"));
    }

    #[test]
    fn toggling_debounces_then_supersedes_the_running_stage() {
        let mut app = demo_app(4, 4, 10);
        app.ablation = AblationSet::default();
        app.live = None;
        app.next_stage = 1;
        let e = update(&mut app, Action::Start);
        assert_eq!(submitted(&e), vec![analyze(1)]);
        let stage_id = app.running.as_ref().unwrap().id;
        app.head_cursor = (2, 3);
        assert_eq!(
            cmd(&mut app, Command::ToggleAblation),
            vec![Effect::Debounce]
        );
        assert!(app.ablation.heads.contains(&(2, 3)) && app.live_dirty);
        // A second toggle inside the quiet time only restarts the timer.
        app.head_cursor = (0, 0);
        assert_eq!(
            cmd(&mut app, Command::ToggleAblation),
            vec![Effect::Debounce]
        );
        let e = update(&mut app, Action::DebounceElapsed);
        let want = AblationSet {
            heads: [(0, 0), (2, 3)].into_iter().collect(),
            ..AblationSet::default()
        };
        assert_eq!(submitted(&e), vec![JobSpec::Live(want.clone())]);
        assert!(!app.live_dirty);
        // The superseded stage's end is stale and ignored.
        let e = update(
            &mut app,
            Action::Worker(WorkerMsg::Finished {
                id: stage_id,
                seconds: 1.0,
                outcome: Outcome::Cancelled,
            }),
        );
        assert!(e.is_empty());
        assert!(matches!(
            app.running.as_ref().unwrap().spec,
            JobSpec::Live(_)
        ));
        // The live result lands, then the interrupted stage runs again.
        let id = app.running.as_ref().unwrap().id;
        let result = LiveResult {
            ablation: want.clone(),
            answer_text: "x".into(),
            tokens: vec!["x".into()],
            logprobs: vec![-1.0],
            original_logprob: -2.0,
            delta_logprob: -0.5,
            first_change: Some(0),
            recomputed_from_layer: Some(0),
            forwards: 2,
            seconds: 0.1,
        };
        update(
            &mut app,
            Action::Worker(WorkerMsg::Live {
                id,
                result: Box::new(result),
            }),
        );
        assert_eq!(app.live.as_ref().unwrap().delta_logprob, -0.5);
        // The panes now show the ablated model: its answer, and every analysis from the start.
        assert_eq!(app.view, want);
        assert_eq!(app.answer.text, "x");
        assert!(app.report.is_none() && app.next_stage == 0);
        let clean = app.clean.as_ref().expect("the clean results are kept");
        assert!(clean.report.is_some() && clean.next_stage == 1);
        let e = finish(&mut app, Outcome::Done);
        assert_eq!(
            submitted(&e),
            vec![JobSpec::Analyze {
                stage: 0,
                under: want.clone()
            }]
        );
        assert_eq!(
            app.running.as_ref().unwrap().spec.label(),
            "stage 1/3 (ablated)"
        );
        // Resetting brings the clean results back at once and drops the ablated model's work.
        let e = cmd(&mut app, Command::ResetAblation);
        assert_eq!(e[0], Effect::Cancel);
        assert_eq!(submitted(&e), vec![analyze(1)]);
        assert!(app.view.is_empty() && app.clean.is_none());
        assert!(app.report.is_some() && app.answer.text != "x");
    }

    #[test]
    fn a_new_set_replaces_the_ablated_view_but_keeps_the_clean_one() {
        let mut app = demo_app(3, 3, 4);
        app.ablation = AblationSet::default();
        app.live = None;
        let clean_answer = app.answer.clone();
        let live = |app: &mut App, heads: &[(usize, usize)]| {
            let set = AblationSet {
                heads: heads.iter().copied().collect(),
                ..AblationSet::default()
            };
            app.ablation = set.clone();
            let e = cmd(app, Command::Rerun);
            assert_eq!(submitted(&e), vec![JobSpec::Live(set.clone())]);
            let id = app.running.as_ref().unwrap().id;
            update(
                app,
                Action::Worker(WorkerMsg::Live {
                    id,
                    result: Box::new(LiveResult {
                        ablation: set,
                        answer_text: "y".into(),
                        tokens: vec!["y".into(), "z".into()],
                        logprobs: vec![-0.1, -0.2],
                        original_logprob: -1.0,
                        delta_logprob: -0.3,
                        first_change: Some(0),
                        recomputed_from_layer: Some(heads[0].0),
                        forwards: 2,
                        seconds: 0.01,
                    }),
                }),
            );
            finish(app, Outcome::Done)
        };
        live(&mut app, &[(1, 1)]);
        let id = app.running.as_ref().unwrap().id;
        let mut r = app.clean_report().unwrap().clone();
        r.head_scores.clear();
        update(
            &mut app,
            Action::Worker(WorkerMsg::Report {
                id,
                report: Box::new(r),
            }),
        );
        assert!(app.report.as_ref().unwrap().head_scores.is_empty());
        let e = live(&mut app, &[(1, 1), (2, 0)]);
        assert!(matches!(
            &submitted(&e)[..],
            [JobSpec::Analyze { stage: 0, under }] if under.heads.len() == 2
        ));
        assert!(app.report.is_none(), "the first set's results are gone");
        // The curve and top-k still come from the unablated model.
        assert!(app.clean_report().unwrap().ablation_curve.is_some());
        assert_eq!(app.clean_answer(), Some(&clean_answer));
        // Toggling the heads off one by one returns to the clean view with the last.
        app.head_cursor = (1, 1);
        cmd(&mut app, Command::ToggleAblation);
        assert!(!app.view.is_empty());
        app.head_cursor = (2, 0);
        cmd(&mut app, Command::ToggleAblation);
        assert!(app.view.is_empty());
        assert_eq!(app.answer, clean_answer);
        assert!(!app.report.as_ref().unwrap().head_scores.is_empty());
    }

    #[test]
    fn mlp_column_toggles_the_layer_mlp() {
        let mut app = demo_app(3, 4, 5);
        app.ablation = AblationSet::default();
        app.focus = Pane::Heatmap;
        app.head_cursor = (1, 0);
        cmd(&mut app, Command::End);
        assert_eq!(
            app.head_cursor,
            (1, 4),
            "the column after the heads is the MLP"
        );
        cmd(&mut app, Command::ToggleAblation);
        assert!(app.ablation.mlps.contains(&1) && app.ablation.heads.is_empty());
        assert_eq!(app.ablation.item_labels(), vec!["L1 MLP"]);
        cmd(&mut app, Command::ToggleAblation);
        assert!(app.ablation.is_empty() && !app.live_dirty);
    }

    #[test]
    fn top_k_random_k_and_reset() {
        let mut app = demo_app(4, 6, 5);
        app.ablation = AblationSet::default();
        app.live = None;
        app.top_k = 3;
        let e = cmd(&mut app, Command::AblateTopK);
        assert_eq!(e, vec![Effect::Debounce]);
        let m = app.report.as_ref().unwrap().head_scores[&HeadScore::ArcJsd].clone();
        let want: std::collections::BTreeSet<(usize, usize)> = top_heads(&m, 3)
            .into_iter()
            .map(|(l, h, _)| (l, h))
            .collect();
        assert_eq!(app.ablation.heads, want);
        // `+` redoes the top-k with k + 1.
        cmd(&mut app, Command::MoreK);
        assert_eq!(app.top_k, 4);
        assert_eq!(app.ablation.heads.len(), 4);
        // The ablation Δ ranks the most negative heads first.
        app.head_score = HeadScore::Ablation;
        cmd(&mut app, Command::AblateTopK);
        let d = &app.report.as_ref().unwrap().head_scores[&HeadScore::Ablation];
        let worst = d
            .iter()
            .enumerate()
            .flat_map(|(l, r)| r.iter().enumerate().map(move |(h, v)| (l, h, *v)))
            .min_by(|a, b| a.2.total_cmp(&b.2))
            .unwrap();
        assert!(app.ablation.heads.contains(&(worst.0, worst.1)));
        cmd(&mut app, Command::AblateRandom);
        assert_eq!(app.ablation.heads.len(), 4);
        let first = app.ablation.heads.clone();
        cmd(&mut app, Command::AblateRandom);
        assert_ne!(app.ablation.heads, first, "each R draws anew");
        cmd(&mut app, Command::ResetAblation);
        assert!(app.ablation.is_empty() && app.live.is_none() && !app.live_dirty);
        // k stays within 1..=layers×heads.
        for _ in 0..50 {
            cmd(&mut app, Command::FewerK);
        }
        assert_eq!(app.top_k, 1);
    }

    #[test]
    fn top_k_of_a_missing_score_is_an_error_message() {
        let mut app = demo_app(2, 2, 3);
        app.report
            .as_mut()
            .unwrap()
            .head_scores
            .remove(&HeadScore::QrHead);
        app.head_score = HeadScore::QrHead;
        assert!(cmd(&mut app, Command::AblateTopK).is_empty());
        assert!(app.status.as_ref().unwrap().error);
    }

    #[test]
    fn methods_cycle_and_wrap() {
        let mut app = demo_app(2, 2, 3);
        let mut seen = vec![app.head_score];
        for _ in 0..HeadScore::ALL.len() {
            cmd(&mut app, Command::CycleHeadScore);
            seen.push(app.head_score);
        }
        assert_eq!(seen[..6], HeadScore::ALL);
        assert_eq!(seen[6], HeadScore::ArcJsd);
        cmd(&mut app, Command::CycleAttribution);
        assert_eq!(app.attr_method, Attribution::ContextCite);
        for _ in 0..4 {
            cmd(&mut app, Command::CycleAttribution);
        }
        assert_eq!(app.attr_method, Attribution::ArcJsd);
        cmd(&mut app, Command::CycleLensPoint);
        assert_eq!(app.lens_point, LensPoint::Mid);
    }

    #[test]
    fn cursors_stay_in_bounds() {
        let mut app = demo_app(3, 4, 5);
        app.focus = Pane::Heatmap;
        app.head_cursor = (0, 0);
        for _ in 0..10 {
            cmd(&mut app, Command::Up);
            cmd(&mut app, Command::Left);
        }
        assert_eq!(app.head_cursor, (0, 0));
        for _ in 0..10 {
            cmd(&mut app, Command::Down);
            cmd(&mut app, Command::Right);
        }
        assert_eq!(app.head_cursor, (2, 4));
        app.focus = Pane::Answer;
        for _ in 0..10 {
            cmd(&mut app, Command::Right);
        }
        assert_eq!(app.token, 4);
        cmd(&mut app, Command::Home);
        assert_eq!(app.token, 0);
        cmd(&mut app, Command::PrevToken);
        assert_eq!(app.token, 0);
        app.focus = Pane::Attribution;
        for _ in 0..10 {
            cmd(&mut app, Command::Down);
        }
        assert_eq!(app.source_cursor, 2);
        app.focus = Pane::Lens;
        for _ in 0..100 {
            cmd(&mut app, Command::Down);
        }
        assert_eq!(app.lens_row, 2, "three layers of post rows");
        // Panes cycle both ways.
        app.focus = Pane::Answer;
        cmd(&mut app, Command::PrevPane);
        assert_eq!(app.focus, Pane::Ablation);
        cmd(&mut app, Command::NextPane);
        assert_eq!(app.focus, Pane::Answer);
        // Nothing moves on an empty state.
        let mut empty = fresh();
        cmd(&mut empty, Command::Right);
        cmd(&mut empty, Command::ToggleAblation);
        assert_eq!(empty.token, 0);
        assert!(empty.ablation.is_empty());
    }

    #[test]
    fn escape_pauses_and_enter_resumes() {
        let mut app = fresh();
        update(&mut app, Action::Start);
        finish(&mut app, Outcome::Done);
        assert!(matches!(
            app.running.as_ref().unwrap().spec,
            JobSpec::Analyze { stage: 0, .. }
        ));
        assert_eq!(cmd(&mut app, Command::Cancel), vec![Effect::Cancel]);
        assert!(app.paused && app.running.is_none() && app.is_idle());
        let e = cmd(&mut app, Command::Rerun);
        assert_eq!(submitted(&e), vec![analyze(0)]);
        // Help swallows other keys; esc closes it without cancelling.
        cmd(&mut app, Command::Help);
        assert!(cmd(&mut app, Command::AblateRandom).is_empty());
        assert!(cmd(&mut app, Command::Cancel).is_empty());
        assert!(!app.show_help && app.running.is_some());
        assert_eq!(
            cmd(&mut app, Command::Quit),
            vec![Effect::Cancel, Effect::Quit]
        );
        assert!(app.quit);
    }

    #[test]
    fn enter_forces_a_live_rerun_and_sentences_jump_the_queue() {
        let mut app = demo_app(3, 3, 4);
        app.next_stage = 2;
        update(&mut app, Action::Start);
        let e = cmd(&mut app, Command::Rerun);
        assert!(matches!(submitted(&e)[..], [JobSpec::Live(_)]));
        finish(&mut app, Outcome::Done);
        assert!(matches!(
            app.running.as_ref().unwrap().spec,
            JobSpec::Analyze { stage: 2, .. }
        ));
        let e = cmd(&mut app, Command::ToggleSentences);
        assert_eq!(
            submitted(&e),
            vec![JobSpec::Sentences {
                under: AblationSet::default()
            }]
        );
        let id = app.running.as_ref().unwrap().id;
        let mut r = app.report.clone().unwrap();
        r.granularity = crate::prompt::Granularity::Sentence;
        update(
            &mut app,
            Action::Worker(WorkerMsg::Report {
                id,
                report: Box::new(r),
            }),
        );
        assert!(app.sentence_report.is_some());
        let e = finish(&mut app, Outcome::Done);
        assert_eq!(submitted(&e), vec![analyze(2)]);
    }

    #[test]
    fn reports_merge_stage_by_stage() {
        let full = demo_app(2, 2, 3).report.unwrap();
        let mut a = full.clone();
        a.head_scores.retain(|k, _| *k == HeadScore::ArcJsd);
        a.ablation_curve = None;
        let mut b = full.clone();
        b.head_scores.retain(|k, _| *k == HeadScore::Ablation);
        b.logit_lens = None;
        a.merge(b);
        assert_eq!(a.head_scores.len(), 2);
        assert!(a.logit_lens.is_some() && a.ablation_curve.is_some());
    }

    #[test]
    fn streamed_tokens_build_the_answer() {
        let mut app = fresh();
        update(&mut app, Action::Start);
        let id = app.running.as_ref().unwrap().id;
        for t in ["The", " answer"] {
            update(
                &mut app,
                Action::Worker(WorkerMsg::Token { id, text: t.into() }),
            );
        }
        assert_eq!(app.answer.text, "The answer");
        assert!(!app.answer.complete);
        // Messages of other jobs are ignored.
        update(
            &mut app,
            Action::Worker(WorkerMsg::Token {
                id: id + 7,
                text: "x".into(),
            }),
        );
        assert_eq!(app.answer.tokens.len(), 2);
    }

    #[test]
    fn the_source_cursor_starts_on_the_top_source() {
        let mut app = fresh();
        update(&mut app, Action::Start);
        finish(&mut app, Outcome::Done);
        let id = app.running.as_ref().unwrap().id;
        let mut report = demo_app(2, 2, 3).report.unwrap();
        report
            .attribution
            .insert(Attribution::ArcJsd, vec![0.1, 0.2, 0.9]);
        update(
            &mut app,
            Action::Worker(WorkerMsg::Report {
                id,
                report: Box::new(report),
            }),
        );
        assert_eq!(app.source_cursor, 2);
        app.focus = Pane::Attribution;
        cmd(&mut app, Command::Up);
        assert_eq!(app.source_cursor, 1);
        cmd(&mut app, Command::CycleAttribution);
        assert_eq!(app.source_cursor, 1, "a source chosen by hand stays");
    }
}
