//! The engine's thread. One `std::thread` owns the [`Engine`] and the prepared [`Subject`]; jobs
//! come in over a channel, progress and results go out on the UI's unbounded channel. Submitting
//! a job raises the cancel flag of the one in flight, which the analyses see through their
//! progress callbacks, so a newer job supersedes an older one within one progress step.
//!
//! Under a live ablation the panes look at the ablated model: a `Live` job re-runs the answer
//! from the cached clean prefix and keeps the ablated model's own answer as the subject for that
//! set; an analysis job for the set (`under`) runs on `engine.ablate(set)`, a guard that puts the
//! set in force for that job only. A job for a set no live job ran for re-runs it first.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use tokio::sync::mpsc::UnboundedSender;

use super::app::{
    AnswerView, Job, JobSpec, LiveResult, Outcome, WorkerMsg, SENTENCE_METHODS, STAGES,
};
use crate::analysis::cache::ResultCache;
use crate::analysis::live::{ablated_subject, rerun, LiveBase, LiveRun};
use crate::analysis::report::{analyze_stepwise, AnalyzeOptions, HeadScore, Method};
use crate::analysis::Subject;
use crate::engine::generate::GenerationConfig;
use crate::engine::{Ablated, AblationSet, Engine, LoadOptions};
use crate::prompt::{Granularity, PromptFormat, Sample};

/// The worker thread's name; the panic hook leaves the terminal alone for panics on it (they
/// become a failed job instead).
pub const THREAD_NAME: &str = "headscope-worker";

/// Progress messages at most this often (plus every step's first and last).
const PROGRESS_EVERY_MS: u128 = 40;

/// Everything the worker needs to open the sample and analyse it.
#[derive(Clone, Debug)]
pub struct Session {
    pub load: LoadOptions,
    pub sample: Sample,
    /// How the prompt is written (style, instruction, user template).
    pub format: PromptFormat,
    /// Greedy by default; `max_new_tokens` also bounds live re-runs.
    pub generation: GenerationConfig,
    /// Generate even when the sample has an `output`.
    pub force_generate: bool,
    /// Method settings; `methods`, `granularity` and `faithfulness` are set per stage.
    pub analyze: AnalyzeOptions,
    pub cache: ResultCache,
}

struct Envelope {
    job: Job,
    cancel: Arc<AtomicBool>,
}

/// The UI's handle on the worker thread.
pub struct Worker {
    tx: Sender<Envelope>,
    current: Arc<AtomicBool>,
    _thread: JoinHandle<()>,
}

impl Worker {
    pub fn spawn(session: Session, out: UnboundedSender<WorkerMsg>) -> Result<Worker> {
        let (tx, rx) = channel();
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || run(session, rx, out))
            .context("cannot start the worker thread")?;
        Ok(Worker {
            tx,
            current: Arc::new(AtomicBool::new(false)),
            _thread: thread,
        })
    }

    /// Queues `job`, cancelling the one in flight (and any queued before it).
    pub fn submit(&mut self, job: Job) {
        self.current.store(true, Ordering::SeqCst);
        let cancel = Arc::new(AtomicBool::new(false));
        self.current = cancel.clone();
        // A closed channel means the thread is gone; the UI learns nothing more, which the
        // headless driver reports as a timeout.
        let _ = self.tx.send(Envelope { job, cancel });
    }

    pub fn cancel(&self) {
        self.current.store(true, Ordering::SeqCst);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Stop the job in flight; the thread ends when it sees the channel closed. It is not
        // joined: a forward in progress should not hold up quitting.
        self.cancel();
    }
}

/// One job's link back to the UI.
struct JobCtx<'a> {
    id: u64,
    cancel: &'a AtomicBool,
    out: &'a UnboundedSender<WorkerMsg>,
    started: Instant,
    last: Cell<Option<Instant>>,
    last_step: RefCell<String>,
}

impl JobCtx<'_> {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    fn send(&self, msg: WorkerMsg) {
        let _ = self.out.send(msg);
    }

    /// Reports progress, throttled; returns `false` when the job should stop.
    fn progress(&self, step: &str, done: usize, total: usize) -> bool {
        let now = Instant::now();
        let new_step = *self.last_step.borrow() != step;
        let due = self
            .last
            .get()
            .is_none_or(|t| now.duration_since(t).as_millis() >= PROGRESS_EVERY_MS);
        if new_step || due || done >= total {
            self.last.set(Some(now));
            if new_step {
                *self.last_step.borrow_mut() = step.to_string();
            }
            self.send(WorkerMsg::Progress {
                id: self.id,
                step: step.to_string(),
                done,
                total,
                elapsed_s: self.started.elapsed().as_secs_f64(),
            });
        }
        !self.cancelled()
    }
}

/// What the thread keeps between jobs.
struct State {
    session: Session,
    engine: Option<Engine>,
    /// The unablated model's subject.
    subject: Option<Subject>,
    live_base: Option<LiveBase>,
    /// The last ablation set entered and the ablated model's subject for it.
    ablated: Option<(AblationSet, Subject)>,
    /// The unablated subject's head scores from earlier stages (the curve's random band, a stage
    /// after its top-k line, ranks by them again).
    clean_head_scores: BTreeMap<HeadScore, Vec<Vec<f64>>>,
}

fn run(session: Session, rx: Receiver<Envelope>, out: UnboundedSender<WorkerMsg>) {
    let mut state = State {
        session,
        engine: None,
        subject: None,
        live_base: None,
        ablated: None,
        clean_head_scores: BTreeMap::new(),
    };
    while let Ok(env) = rx.recv() {
        let id = env.job.id;
        let ctx = JobCtx {
            id,
            cancel: &env.cancel,
            out: &out,
            started: Instant::now(),
            last: Cell::new(None),
            last_step: RefCell::new(String::new()),
        };
        let outcome = if ctx.cancelled() {
            Outcome::Cancelled
        } else {
            match std::panic::catch_unwind(AssertUnwindSafe(|| state.run(&env.job.spec, &ctx))) {
                Ok(Ok(())) => Outcome::Done,
                Ok(Err(e)) => {
                    let cancelled = matches!(
                        e.downcast_ref::<crate::Error>(),
                        Some(crate::Error::Cancelled)
                    );
                    if cancelled || ctx.cancelled() {
                        Outcome::Cancelled
                    } else {
                        Outcome::Failed(format!("{e:#}"))
                    }
                }
                Err(panic) => {
                    // The state may be half-updated: start over from the model.
                    state.subject = None;
                    state.live_base = None;
                    state.ablated = None;
                    Outcome::Failed(format!("internal error: {}", panic_message(&*panic)))
                }
            }
        };
        let seconds = ctx.started.elapsed().as_secs_f64();
        if out
            .send(WorkerMsg::Finished {
                id,
                seconds,
                outcome,
            })
            .is_err()
        {
            break; // the UI is gone
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic".into()
    }
}

impl State {
    fn run(&mut self, spec: &JobSpec, ctx: &JobCtx) -> Result<()> {
        match spec {
            JobSpec::Open => self.open(ctx),
            JobSpec::Analyze { stage, under } => {
                let mut methods = STAGES
                    .get(*stage)
                    .ok_or_else(|| anyhow!("no analysis stage {stage}"))?
                    .to_vec();
                // The curve's top-k line in its own stage, the random band in a later one.
                let stage = stage + 1;
                let draws = if stage == Method::AblationCurve.stage() {
                    0
                } else {
                    if stage == Method::CURVE_BAND_STAGE {
                        methods.push(Method::AblationCurve);
                    }
                    self.session.analyze.curve.draws
                };
                self.analyze(ctx, &methods, Granularity::Document, under, draws)
            }
            JobSpec::Sentences { under } => {
                let draws = self.session.analyze.curve.draws;
                self.analyze(ctx, SENTENCE_METHODS, Granularity::Sentence, under, draws)
            }
            JobSpec::Live(a) => self.live(ctx, a),
        }
    }

    fn open(&mut self, ctx: &JobCtx) -> Result<()> {
        if self.engine.is_none() {
            ctx.progress("loading the model", 0, 0);
            let t = Instant::now();
            let name = &self.session.load.model;
            let engine = Engine::load(&self.session.load)
                .with_context(|| format!("cannot load model `{name}`"))?;
            ctx.send(WorkerMsg::ModelLoaded {
                id: ctx.id,
                info: engine.info().clone(),
                seconds: t.elapsed().as_secs_f64(),
            });
            self.engine = Some(engine);
        } else if let Some(e) = &self.engine {
            ctx.send(WorkerMsg::ModelLoaded {
                id: ctx.id,
                info: e.info().clone(),
                seconds: 0.0,
            });
        }
        let engine = self.engine.as_ref().ok_or_else(|| anyhow!("no model"))?;
        self.subject = None;
        self.live_base = None;
        self.ablated = None;
        self.clean_head_scores.clear();
        let s = &self.session;
        let max = s.generation.max_new_tokens;
        let mut n = 0usize;
        ctx.progress("answering", 0, max);
        let subject = Subject::prepare(
            engine,
            s.sample.clone(),
            &s.format,
            &s.generation,
            s.force_generate,
            |id| {
                n += 1;
                let text = engine.token_texts(&[id]).pop().unwrap_or_default();
                ctx.send(WorkerMsg::Token { id: ctx.id, text });
                ctx.progress("answering", n, max)
            },
        )?;
        if ctx.cancelled() {
            return Err(crate::Error::Cancelled.into());
        }
        ctx.send(WorkerMsg::Answer {
            id: ctx.id,
            answer: answer_view(engine, &subject)?,
        });
        self.subject = Some(subject);
        Ok(())
    }

    fn ready(&self) -> Result<(&Engine, &Subject)> {
        match (&self.engine, &self.subject) {
            (Some(e), Some(s)) => Ok((e, s)),
            _ => Err(anyhow!("no sample is open")),
        }
    }

    fn analyze(
        &mut self,
        ctx: &JobCtx,
        methods: &[Method],
        granularity: Granularity,
        under: &AblationSet,
        curve_draws: usize,
    ) -> Result<()> {
        self.enter(ctx, under)?;
        let mut methods = methods.to_vec();
        if !under.is_empty() {
            // The ablation pane places the live set on the clean model's curve.
            methods.retain(|m| *m != Method::AblationCurve);
        }
        let base = &self.session.analyze;
        let opts = AnalyzeOptions {
            methods,
            granularity,
            // Faithfulness re-scores every attribution; the explorer does not show it.
            faithfulness: false,
            // The ablation pane draws the curve's log-probs only; regenerating the answer under
            // every ablated set is most of the curve's cost and nothing shows it.
            curve: crate::analysis::ablation::CurveConfig {
                regenerate: false,
                draws: curve_draws,
                ..base.curve.clone()
            },
            ..base.clone()
        };
        let State {
            session,
            engine,
            subject,
            live_base,
            ablated,
            clean_head_scores,
        } = self;
        let clean = under.is_empty() && granularity == Granularity::Document;
        let no_scores = BTreeMap::new();
        let known = if clean {
            &*clean_head_scores
        } else {
            &no_scores
        };
        let engine = engine.as_mut().ok_or_else(|| anyhow!("no model"))?;
        let subject = if under.is_empty() {
            subject
                .as_ref()
                .ok_or_else(|| anyhow!("no sample is open"))?
        } else {
            ablated
                .as_ref()
                .map(|(_, s)| s)
                .ok_or_else(|| anyhow!("no ablated subject"))?
        };
        let model = ablated_model(engine, live_base.as_ref(), under)?;
        // Each method's result goes out as soon as it exists, so the panes fill within a stage.
        let report = analyze_stepwise(
            &model,
            subject,
            &opts,
            &session.cache,
            known,
            &mut |step, done, total| ctx.progress(step, done, total),
            &mut |partial| {
                ctx.send(WorkerMsg::Report {
                    id: ctx.id,
                    report: Box::new(partial),
                })
            },
        )?;
        if clean {
            clean_head_scores.extend(report.head_scores.clone());
        }
        ctx.send(WorkerMsg::Report {
            id: ctx.id,
            report: Box::new(report),
        });
        Ok(())
    }

    /// Re-runs the answer under `a` from the clean prefix, reports it, and enters `a`.
    fn live(&mut self, ctx: &JobCtx, a: &AblationSet) -> Result<()> {
        let run = self.rerun(ctx, a)?;
        self.report_live(ctx, &run)?;
        self.enter_run(ctx, a, &run)
    }

    /// Makes sure the ablated model's subject for `a` is at hand (re-running the answer first
    /// when `a` is not the set last entered); nothing to do for the empty set.
    fn enter(&mut self, ctx: &JobCtx, a: &AblationSet) -> Result<()> {
        if a.is_empty() || self.ablated.as_ref().is_some_and(|(b, _)| b == a) {
            return Ok(());
        }
        let run = self.rerun(ctx, a)?;
        self.enter_run(ctx, a, &run)
    }

    /// The answer under `a`, from the unablated model's cached prefix.
    fn rerun(&mut self, ctx: &JobCtx, a: &AblationSet) -> Result<LiveRun> {
        if self.live_base.is_none() {
            ctx.progress("caching the clean run", 0, 1);
            let (engine, subject) = self.ready()?;
            self.live_base = Some(LiveBase::new(engine, subject)?);
        }
        ctx.progress("re-running", 0, 1);
        let (engine, subject) = self.ready()?;
        let base = self
            .live_base
            .as_ref()
            .ok_or_else(|| anyhow!("no live base"))?;
        let max_new = self.session.generation.max_new_tokens;
        Ok(rerun(engine, subject, base, a, max_new, &|| {
            ctx.cancelled()
        })?)
    }

    /// Makes `run`'s answer, scored on the model with `a` ablated, the subject of the analyses
    /// under `a`.
    fn enter_run(&mut self, ctx: &JobCtx, a: &AblationSet, run: &LiveRun) -> Result<()> {
        self.ablated = None;
        ctx.progress("scoring the ablated answer", 0, 1);
        let top_k = self.session.generation.top_k_alternatives;
        let engine = self.engine.as_mut().ok_or_else(|| anyhow!("no model"))?;
        let subject = self
            .subject
            .as_ref()
            .ok_or_else(|| anyhow!("no sample is open"))?;
        let model = ablated_model(engine, self.live_base.as_ref(), a)?;
        let ablated = ablated_subject(&model, subject, run, top_k)?;
        ctx.send(WorkerMsg::Answer {
            id: ctx.id,
            answer: answer_view(&model, &ablated)?,
        });
        drop(model);
        self.ablated = Some((a.clone(), ablated));
        Ok(())
    }

    fn report_live(&self, ctx: &JobCtx, run: &LiveRun) -> Result<()> {
        let (engine, _) = self.ready()?;
        let tokens = engine.token_texts(&run.answer_ids);
        let run = run.clone();
        ctx.send(WorkerMsg::Live {
            id: ctx.id,
            result: Box::new(LiveResult { run, tokens }),
        });
        Ok(())
    }
}

/// A subject's answer as the answer pane shows it.
fn answer_view(engine: &Engine, subject: &Subject) -> Result<AnswerView> {
    let ids = subject.answer_ids();
    Ok(AnswerView {
        tokens: engine.token_texts(ids),
        logprobs: subject.answer.logprobs.clone(),
        text: engine.decode(ids)?,
        source: Some(subject.answer_source),
        complete: true,
    })
}

/// `engine` with `set` in force for one job (a mean ablation uses the clean run's means);
/// the guard restores the unablated model when the job ends, however it ends.
fn ablated_model<'e>(
    engine: &'e mut Engine,
    base: Option<&LiveBase>,
    set: &AblationSet,
) -> Result<Ablated<'e>> {
    Ok(match base {
        Some(base) => base.ablate(engine, set)?,
        None => engine.ablate(set, || {
            Err(crate::Error::Analysis(
                "no clean run to take mean values from".into(),
            ))
        })?,
    })
}
