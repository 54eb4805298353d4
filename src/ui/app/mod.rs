//! The explorer's state, the actions that change it, and [`update`]. No drawing and no I/O here:
//! `update` returns [`Effect`]s (jobs for the worker, a debounce timer, an export) that the event
//! loop carries out. The state holds plain vectors and serde report structs, never tensors, so the
//! panes and the tests need no model.
//!
//! The state is kept in rooms: the [`ModelView`] the panes show (with the unablated model's kept
//! aside whole while an ablated model is shown), the [`Scheduler`] of the worker's jobs, the
//! [`AblationEditor`], and each pane's cursor and scroll state next to its renderer
//! ([`PaneStates`]). `update` dispatches to small methods of each room: `commands` for the
//! user's keys, `navigate` for the arrows, `ablate` for the ablation set, `receive` for the
//! worker's messages.

mod ablate;
mod commands;
mod editor;
mod jobs;
mod messages;
mod navigate;
mod receive;
mod view;

#[cfg(test)]
mod tests;

pub use super::panes::lens::LensPoint;
pub use super::panes::PaneStates;
pub use crate::analysis::report::{Attribution, HeadScore};
pub use crate::engine::{AblationMode, AblationSet};
pub use editor::{AblationEditor, AblationOrigin, LiveResult, DEBOUNCE_MS};
pub use jobs::{Job, JobSpec, Outcome, Running, Scheduler, SENTENCE_METHODS, STAGES};
pub use messages::{Action, Command, Effect, Status, WorkerMsg};
pub use view::{AnswerView, ModelView};

use crate::analysis::report::AnalysisReport;
use crate::engine::ModelInfo;
use crate::prompt::Sample;

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

    /// The pane a focus command moves to.
    fn focused_by(c: Command) -> Option<Pane> {
        Some(match c {
            Command::FocusAnswer => Pane::Answer,
            Command::FocusSample => Pane::Sample,
            Command::FocusHeatmap => Pane::Heatmap,
            Command::FocusLens => Pane::Lens,
            Command::FocusAttribution => Pane::Attribution,
            Command::FocusAblation => Pane::Ablation,
            _ => return None,
        })
    }
}

/// The item after `x` in `all`, wrapping.
pub(crate) fn cycle<T: Copy + PartialEq>(all: &[T], x: T) -> T {
    let i = all.iter().position(|&y| y == x).unwrap_or(0);
    all[(i + 1) % all.len()]
}

/// The explorer's whole state, in rooms.
#[derive(Clone, Debug)]
pub struct App {
    pub model_name: String,
    pub info: Option<ModelInfo>,
    pub sample_label: String,
    pub sample: Sample,
    /// What the panes show: the answer and results of the model under `view.under`.
    pub view: ModelView,
    /// The unablated model's view, kept whole while `view` is an ablated model's.
    pub clean: Option<Box<ModelView>>,
    pub editor: AblationEditor,
    pub jobs: Scheduler,
    pub focus: Pane,
    pub show_help: bool,
    /// Each pane's cursor and scroll position.
    pub panes: PaneStates,
    pub status: Option<Status>,
    pub quit: bool,
    /// Opened from the study view: esc goes back to it.
    pub returns_to_study: bool,
    /// Esc asked to go back to the study (the loop ends as for quit).
    pub back: bool,
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
            view: ModelView::default(),
            clean: None,
            editor: AblationEditor::default(),
            jobs: Scheduler::default(),
            focus: Pane::Heatmap,
            show_help: false,
            panes: PaneStates::default(),
            status: None,
            quit: false,
            returns_to_study: false,
            back: false,
        }
    }

    /// `(layers, heads)` of the model, once known.
    pub fn dims(&self) -> (usize, usize) {
        if let Some(i) = &self.info {
            return (i.layers, i.heads);
        }
        if let Some(r) = &self.view.report {
            return (r.model.layers, r.model.heads);
        }
        (0, 0)
    }

    /// The answer position every pane looks at.
    pub fn token(&self) -> usize {
        self.panes.answer.token
    }

    /// The unablated model's report (the current one when nothing is ablated).
    pub fn clean_report(&self) -> Option<&AnalysisReport> {
        match &self.clean {
            Some(c) => c.report.as_ref(),
            None => self.view.report.as_ref(),
        }
    }

    /// The unablated model's answer while the panes show an ablated one.
    pub fn clean_answer(&self) -> Option<&AnswerView> {
        self.clean.as_ref().map(|c| &c.answer)
    }

    /// The head score whose matrix the heatmap draws: the selected one, except that the exact
    /// ablation map (`heads:ablation`, the last stage) is stood in for by its first-order
    /// estimate, attribution patching (`heads:atp`, Nanda 2023; an earlier stage), until the
    /// exact sweep has run.
    pub fn shown_head_score(&self) -> HeadScore {
        let score = self.panes.heatmap.score;
        let has = |h| {
            self.view
                .report
                .as_ref()
                .is_some_and(|r| r.head_scores.contains_key(&h))
        };
        if score == HeadScore::Ablation && !has(HeadScore::Ablation) && has(HeadScore::Atp) {
            HeadScore::Atp
        } else {
            score
        }
    }

    /// For the ablation map, which one the heatmap shows: `AtP estimate` or `exact` (`None` for
    /// other scores, or before either exists).
    pub fn ablation_map_kind(&self) -> Option<&'static str> {
        if self.panes.heatmap.score != HeadScore::Ablation {
            return None;
        }
        self.head_matrix()?;
        Some(match self.shown_head_score() {
            HeadScore::Atp => "AtP estimate",
            _ => "exact",
        })
    }

    /// The shown head score's `[layers][heads]` matrix, when computed.
    pub fn head_matrix(&self) -> Option<&Vec<Vec<f64>>> {
        let score = self.shown_head_score();
        self.view.report.as_ref()?.head_scores.get(&score)
    }

    /// The shown head score's per-layer MLP scores, when the method has them.
    pub fn mlp_scores(&self) -> Option<&Vec<f64>> {
        let score = self.shown_head_score();
        self.view.report.as_ref()?.mlp_scores.get(&score)
    }

    /// The report the attribution pane shows (document or sentence granularity).
    pub fn attribution_report(&self) -> Option<&AnalysisReport> {
        if self.panes.attribution.sentences {
            self.view.sentence_report.as_ref()
        } else {
            self.view.report.as_ref()
        }
    }

    /// The selected attribution's scores, one per source.
    pub fn attribution(&self) -> Option<&Vec<f64>> {
        self.attribution_report()?
            .attribution
            .get(&self.panes.attribution.method)
    }

    pub fn source_count(&self) -> usize {
        match self.attribution_report() {
            Some(r) => r.sources.len(),
            None if self.panes.attribution.sentences => 0,
            None => self.sample.docs.len(),
        }
    }

    /// Logit-lens rows at the lens point shown.
    pub fn lens_rows(&self) -> usize {
        let point = self.panes.lens.point;
        self.view
            .report
            .as_ref()
            .and_then(|r| r.logit_lens.as_ref())
            .map_or(0, |l| {
                l.rows.iter().filter(|r| point.shows(&r.point)).count()
            })
    }

    pub fn is_busy(&self) -> bool {
        self.jobs.running.is_some()
    }

    /// Nothing running and nothing left to schedule (the headless screenshot waits for this).
    pub fn is_idle(&self) -> bool {
        let j = &self.jobs;
        let sentences_done = !self.panes.attribution.sentences || !self.view.sentences_pending();
        j.running.is_none()
            && !self.editor.dirty
            && (j.open_failed
                || j.paused
                || (j.opened && self.view.stages_done() && sentences_done))
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

    /// Sends `spec` to the worker, superseding the job in flight.
    fn submit(&mut self, spec: JobSpec) -> Effect {
        if matches!(spec, JobSpec::Live(_)) {
            self.editor.dirty = false;
        }
        self.jobs.submit(spec)
    }

    /// The next job when the worker is free: open, a pending live re-run, sentence attributions
    /// when asked, then the remaining analysis stages.
    fn schedule(&mut self) -> Vec<Effect> {
        if self.quit || !self.jobs.is_free() {
            return vec![];
        }
        match self.next_job() {
            Some(spec) => vec![self.submit(spec)],
            None => vec![],
        }
    }

    fn next_job(&mut self) -> Option<JobSpec> {
        if !self.jobs.opened {
            return Some(JobSpec::Open);
        }
        if let Some(set) = self.editor.pending() {
            return Some(JobSpec::Live(set));
        }
        self.view.next_job(self.panes.attribution.sentences)
    }

    /// Keeps the answer cursor on the answer shown.
    fn clamp_token(&mut self) {
        let n = self.view.answer.tokens.len();
        self.panes.answer.clamp(n);
    }

    /// Puts the source cursor on the top source of the method shown, unless the user moved it.
    fn follow_top_source(&mut self) {
        let top = self
            .attribution()
            .and_then(|s| crate::analysis::ranking(s).first().copied());
        self.panes.attribution.follow(top);
    }
}

/// Elm's `update`: applies `action` to `app` and says what the loop must do.
pub fn update(app: &mut App, action: Action) -> Vec<Effect> {
    match action {
        Action::Start => app.schedule(),
        Action::Command(c) => app.command(c),
        Action::Worker(msg) => app.receive(msg),
        Action::DebounceElapsed => {
            if app.editor.dirty && !app.jobs.paused {
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
