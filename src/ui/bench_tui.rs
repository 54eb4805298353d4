//! The explorer's time-to-panes benchmark (`headscope bench tui`): the explorer's own state,
//! worker and scheduler driven headless from the start, as the terminal would run them with
//! nobody pressing a key, timing when each job ends and when each pane first has something to
//! show. Nothing is cached (the session should carry a disabled cache), so the times are a cold
//! start's.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use serde::Serialize;

use super::app::{Action, App, HeadScore, Job, WorkerMsg};
use super::effects::{drain, Carrier};
use super::worker::{Session, Worker};
use crate::analysis::report::MethodCost;

/// One job of the pipeline as it ended.
#[derive(Clone, Debug, Serialize)]
pub struct JobTime {
    /// As the status line names it (`load`, `stage 2/4`).
    pub job: String,
    /// Seconds from the start to its end.
    pub done_s: f64,
    /// Its own seconds.
    pub seconds: f64,
    /// The methods the job reported steps for, in order, each with the seconds from the start
    /// when its first progress arrived.
    pub steps: Vec<(String, f64)>,
    pub outcome: String,
}

/// When a pane first had something to show.
#[derive(Clone, Debug, Serialize)]
pub struct PaneTime {
    pub pane: String,
    /// Seconds from the start; `None`: never within the run.
    pub filled_s: Option<f64>,
    /// The job whose result filled it (`load`, `stage 2/4`).
    pub filled_by: Option<String>,
}

/// The run's timeline.
#[derive(Clone, Debug, Serialize)]
pub struct TuiStageBench {
    pub model: String,
    pub sample: String,
    pub cpu: String,
    pub threads: usize,
    /// `/proc/loadavg`'s 1, 5 and 15 minute averages at the start and at the end.
    pub loadavg_start: Option<[f64; 3]>,
    pub loadavg_end: Option<[f64; 3]>,
    pub prompt_tokens: usize,
    pub answer_tokens: usize,
    pub layers: usize,
    pub heads: usize,
    pub jobs: Vec<JobTime>,
    pub panes: Vec<PaneTime>,
    /// The latest of the panes' first fills (the ablation map counts with its first estimate, the
    /// curve with its top-k line).
    pub all_panes_s: Option<f64>,
    /// Every stage done; `None` when `--timeout` stopped the run first (the times above are
    /// those reached by then).
    pub total_s: Option<f64>,
    /// Seconds the run was given.
    pub timeout_s: f64,
    /// Each method's cost as the merged report recorded it.
    pub costs: BTreeMap<String, MethodCost>,
}

/// The panes the benchmark waits for, and what fills each (the explorer's default selections:
/// the heatmap's and the attribution pane's first method).
/// The ablation curve counts with its top-k line; its random band comes a stage later.
const PANES: [&str; 8] = [
    "answer",
    "logit lens",
    "heads (default score)",
    "attribution (default method)",
    "ablation map (first: AtP estimate or exact)",
    "ablation map (exact)",
    "ablation curve (first: top-k line)",
    "ablation curve (random band)",
];

/// Which of [`PANES`] `app` can show now.
fn filled(app: &App) -> [bool; 8] {
    let report = app.clean_report();
    let has = |h: HeadScore| report.is_some_and(|r| r.head_scores.contains_key(&h));
    let exact = has(HeadScore::Ablation);
    [
        app.view.answer.complete && !app.view.answer.tokens.is_empty(),
        report.is_some_and(|r| r.logit_lens.is_some()),
        app.head_matrix().is_some(),
        app.attribution().is_some(),
        exact || has(HeadScore::Atp),
        exact,
        report.is_some_and(|r| r.ablation_curve.is_some()),
        report
            .and_then(|r| r.ablation_curve.as_ref())
            .is_some_and(|c| c.config.draws > 0),
    ]
}

/// Jobs go straight to the worker; no clock, no screen.
struct Bare<'a> {
    worker: &'a mut Worker,
}

impl Carrier for Bare<'_> {
    fn submit(&mut self, job: Job) {
        self.worker.submit(job);
    }

    fn cancel(&mut self) {
        self.worker.cancel();
    }

    fn debounce(&mut self) -> Option<Action> {
        Some(Action::DebounceElapsed)
    }

    fn export(&mut self, _app: &App) -> Result<Result<Vec<PathBuf>, String>> {
        Ok(Err("no export in the benchmark".into()))
    }
}

/// What the run collects as the messages arrive.
struct Timeline {
    start: Instant,
    jobs: Vec<JobTime>,
    steps: Vec<(String, f64)>,
    panes: [Option<(f64, String)>; 8],
}

impl Timeline {
    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Notes a message before the app sees it (the job's label is gone after `Finished`).
    fn before(&mut self, app: &App, msg: &WorkerMsg) {
        match msg {
            WorkerMsg::Progress { id, step, .. }
                if app.jobs.is_current(*id) && self.steps.last().is_none_or(|(s, _)| s != step) =>
            {
                self.steps.push((step.clone(), self.now()));
            }
            WorkerMsg::Finished {
                id,
                seconds,
                outcome,
            } => {
                if let Some(spec) = app.jobs.current(*id) {
                    self.jobs.push(JobTime {
                        job: spec.label(),
                        done_s: self.now(),
                        seconds: *seconds,
                        steps: std::mem::take(&mut self.steps),
                        outcome: format!("{outcome:?}"),
                    });
                }
            }
            _ => {}
        }
    }

    /// Notes the panes the message filled; `job` is the job that was current when it came.
    fn after(&mut self, app: &App, job: &str) {
        let now = self.now();
        for (slot, is) in self.panes.iter_mut().zip(filled(app)) {
            if is && slot.is_none() {
                *slot = Some((now, job.to_string()));
            }
        }
    }
}

/// Opens `session`'s sample in a headless explorer and times it until every stage is done, or
/// until `timeout` passes (then the timeline so far, without a total).
pub fn stage_timeline(
    session: Session,
    sample_label: &str,
    timeout: Duration,
) -> Result<TuiStageBench> {
    let threads = candle_core::utils::get_num_threads();
    let loadavg_start = loadavg();
    let mut app = App::new(
        session.load.model.clone(),
        sample_label.to_string(),
        session.sample.clone(),
    );
    let model = session.load.model.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let rt = super::runtime()?;
    let mut t = Timeline {
        start: Instant::now(),
        jobs: Vec::new(),
        steps: Vec::new(),
        panes: Default::default(),
    };
    let mut worker = Worker::spawn(session, tx)?;
    let apply = |app: &mut App, worker: &mut Worker, a: Action| {
        drain(app, &mut VecDeque::from([a]), &mut Bare { worker })
    };
    apply(&mut app, &mut worker, Action::Start)?;
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    while !app.is_idle() {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = rt.block_on(async { tokio::time::timeout(left, rx.recv()).await });
        let msg = match msg {
            Ok(Some(m)) => m,
            Ok(None) => bail!("the worker thread stopped"),
            Err(_) => {
                timed_out = true;
                break;
            }
        };
        let job = app
            .jobs
            .running
            .as_ref()
            .map_or(String::new(), |r| r.spec.label());
        t.before(&app, &msg);
        apply(&mut app, &mut worker, Action::Worker(msg))?;
        t.after(&app, &job);
    }
    if app.jobs.open_failed {
        let why = app.status.as_ref().map_or("unknown error", |s| &s.text);
        return Err(anyhow!("the sample did not open: {why}"));
    }
    let total_s = (!timed_out).then(|| t.now());
    let report = app.clean_report();
    let (layers, heads) = app.dims();
    let all_panes_s = [0, 1, 2, 3, 4, 6]
        .iter()
        .try_fold(0.0f64, |m, &i| t.panes[i].as_ref().map(|(s, _)| m.max(*s)));
    Ok(TuiStageBench {
        model,
        sample: sample_label.to_string(),
        cpu: cpu_model(),
        threads,
        loadavg_start,
        loadavg_end: loadavg(),
        prompt_tokens: report.map_or(0, |r| r.prompt_ids.len()),
        answer_tokens: app.view.answer.tokens.len(),
        layers,
        heads,
        jobs: t.jobs,
        panes: PANES
            .iter()
            .zip(t.panes)
            .map(|(p, s)| PaneTime {
                pane: p.to_string(),
                filled_s: s.as_ref().map(|(s, _)| *s),
                filled_by: s.map(|(_, j)| j),
            })
            .collect(),
        all_panes_s,
        total_s,
        timeout_s: timeout.as_secs_f64(),
        costs: report.map(|r| r.costs.clone()).unwrap_or_default(),
    })
}

/// The CPU's model name (`/proc/cpuinfo`), or the architecture.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn loadavg() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = s.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// The timeline as a Markdown table: each job's end, then each pane's first fill.
pub fn markdown(b: &TuiStageBench) -> String {
    let secs = |s: Option<f64>| s.map_or("—".to_string(), |s| format!("{s:.1}"));
    let mut out = format!(
        "`{}` on `{}` ({} prompt + {} answer tokens, {}×{} heads); CPU {}, {} threads; \
         load average {} at the start, {} at the end.\n\n",
        b.model,
        b.sample,
        b.prompt_tokens,
        b.answer_tokens,
        b.layers,
        b.heads,
        b.cpu,
        b.threads,
        fmt_load(b.loadavg_start),
        fmt_load(b.loadavg_end),
    );
    out.push_str(
        "| job | done at (s) | its own (s) | steps (started at, s) |\n|---|---|---|---|\n",
    );
    for j in &b.jobs {
        let steps: Vec<String> = j
            .steps
            .iter()
            .map(|(s, at)| format!("{s} ({at:.1})"))
            .collect();
        out.push_str(&format!(
            "| {} | {:.1} | {:.1} | {} |\n",
            j.job,
            j.done_s,
            j.seconds,
            steps.join(", ")
        ));
    }
    out.push_str("\n| pane | first filled at (s) | by |\n|---|---|---|\n");
    for p in &b.panes {
        let by = p.filled_by.as_deref().unwrap_or("—");
        out.push_str(&format!("| {} | {} | {by} |\n", p.pane, secs(p.filled_s)));
    }
    out.push_str(&format!(
        "| **all panes** | **{}** | |\n| every stage done | {} | |\n",
        secs(b.all_panes_s),
        b.total_s
            .map_or(format!("not within {:.0} s", b.timeout_s), |s| format!(
                "{s:.1}"
            ))
    ));
    out
}

fn fmt_load(l: Option<[f64; 3]>) -> String {
    l.map_or("unknown".into(), |[a, b, c]| {
        format!("{a:.2} {b:.2} {c:.2}")
    })
}
