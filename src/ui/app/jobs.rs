//! The scheduler's room: the analysis stages, the jobs sent to the worker, the one in flight, and
//! which job goes next. One job runs at a time; a newer one supersedes it (the worker sees the
//! cancel flag within a progress step).

use super::{AblationSet, Effect};
use crate::analysis::report::{Attribution, Method};

/// The analysis runs in stages so the panes fill progressively ([`Method::STAGES`]).
pub const STAGES: [&[Method]; 4] = Method::STAGES;

/// Attributions at sentence granularity, run when the user first asks for sentences.
pub const SENTENCE_METHODS: &[Method] = &[
    Method::Attr(Attribution::Attention),
    Method::Attr(Attribution::ArcJsd),
    Method::Attr(Attribution::Marginal),
    Method::Attr(Attribution::ContextCite),
    Method::Attr(Attribution::Mirage),
];

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

/// The worker's side of the state: whether the subject is open, the job in flight and the last
/// one, and the ids that tell a current job's messages from a superseded one's.
#[derive(Clone, Debug)]
pub struct Scheduler {
    pub opened: bool,
    pub open_failed: bool,
    /// Esc stopped the work; enter resumes it.
    pub paused: bool,
    pub running: Option<Running>,
    pub last_job: Option<(String, f64)>,
    next_job_id: u64,
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler {
            opened: false,
            open_failed: false,
            paused: false,
            running: None,
            last_job: None,
            next_job_id: 1,
        }
    }
}

impl Scheduler {
    /// Nothing runs and nothing stops a new job from starting.
    pub fn is_free(&self) -> bool {
        !self.paused && self.running.is_none() && !self.open_failed
    }

    /// Makes `spec` the job in flight (superseding any) and says so to the loop.
    pub fn submit(&mut self, spec: JobSpec) -> Effect {
        let id = self.next_job_id;
        self.next_job_id += 1;
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

    pub fn running_is(&self, f: impl Fn(&JobSpec) -> bool) -> bool {
        self.running.as_ref().is_some_and(|r| f(&r.spec))
    }

    /// Is `id` the job in flight (whose messages count)?
    pub fn is_current(&self, id: u64) -> bool {
        self.running.as_ref().is_some_and(|r| r.id == id)
    }

    /// The spec of job `id`, if it is the one in flight.
    pub fn current(&self, id: u64) -> Option<&JobSpec> {
        self.running
            .as_ref()
            .filter(|r| r.id == id)
            .map(|r| &r.spec)
    }

    pub fn progress(&mut self, id: u64, step: String, done: usize, total: usize, elapsed_s: f64) {
        if let Some(r) = self.running.as_mut().filter(|r| r.id == id) {
            r.step = step;
            r.done = done;
            r.total = total;
            r.elapsed_s = elapsed_s;
        }
    }

    /// Job `id` ended after `seconds`: no longer in flight. `None` for a superseded job.
    pub fn finish(&mut self, id: u64, seconds: f64) -> Option<Running> {
        let r = self.running.take_if(|r| r.id == id)?;
        self.last_job = Some((r.spec.label(), seconds));
        Some(r)
    }

    /// Drops the job in flight when it is work for an ablated model (moot once nothing is
    /// ablated). True when the loop must cancel it.
    pub fn drop_ablated_work(&mut self) -> bool {
        let moot = self.running_is(|s| match s {
            JobSpec::Live(_) => true,
            JobSpec::Analyze { under, .. } | JobSpec::Sentences { under } => !under.is_empty(),
            JobSpec::Open => false,
        });
        if moot {
            self.running = None;
        }
        moot
    }
}
