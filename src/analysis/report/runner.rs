//! The plan and the steps of [`super::analyze`].
//!
//! [`plan`] turns the asked methods into steps (the ablation curve brings its head score along);
//! [`Runner::run`] runs one step. What several steps share is built by [`Shared`] on first use:
//! the attention on every source and document (one forward), the target document it picks, the
//! teacher-forced re-scorer, and ARC-JSD's source attribution (whose top source the ARC-JSD head
//! lens leaves out). Each step's result is cached on disk and its cost recorded.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::{
    AnalysisReport, AnalyzeOptions, AnalyzeProgress, Attribution, HeadScore, Method, MethodCost,
};
use crate::analysis::ablation::{ablation_curve, head_ablation_sweep};
use crate::analysis::arc_jsd::ArcJsdAttribution;
use crate::analysis::atp::attribution_patching;
use crate::analysis::attention::{
    attention_attribution, source_token_spans, span_attention, summed_attention, target_document,
    SpanAttention, TargetDocument,
};
use crate::analysis::cache::{CacheKey, ResultCache};
use crate::analysis::faithfulness::HeldOut;
use crate::analysis::scoring::PrefixScorer;
use crate::analysis::{Progress, Subject};
use crate::engine::Engine;
use crate::prompt::Granularity;
use crate::Result;

/// One unit of work of an analysis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    LogitLens,
    HeadScore(HeadScore),
    Attribution(Attribution),
    /// Top-k vs random ablation, ranked by `AnalyzeOptions::curve_score`.
    AblationCurve,
    /// Top-k drop, LDS and top-1 accuracy of every attribution computed.
    Faithfulness,
}

/// The steps for `opts`, each once, in the order `opts.methods` lists them (the CLI sorts its
/// list; the explorer lists each stage's methods cheapest first, so the panes fill soonest): a
/// method's own step, the ablation curve after the head score that ranks it, and faithfulness
/// after every attribution.
pub(super) fn plan(opts: &AnalyzeOptions) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut add = |s: Step| {
        if !steps.contains(&s) {
            steps.push(s);
        }
    };
    for &m in &opts.methods {
        match m {
            Method::LogitLens => add(Step::LogitLens),
            Method::Heads(h) => add(Step::HeadScore(h)),
            Method::Attr(a) => add(Step::Attribution(a)),
            Method::AblationCurve => {
                add(Step::HeadScore(opts.curve_score));
                add(Step::AblationCurve);
            }
        }
    }
    if opts.faithfulness && steps.iter().any(|s| matches!(s, Step::Attribution(_))) {
        steps.push(Step::Faithfulness);
    }
    steps
}

/// Runs a step with caching, timing and progress, and records what it cost.
struct Steps<'a, 'p> {
    engine: &'a Engine,
    subject: &'a Subject,
    cache: &'a ResultCache,
    progress: AnalyzeProgress<'p>,
    costs: BTreeMap<String, MethodCost>,
}

impl<'a, 'p> Steps<'a, 'p> {
    /// The cached result of step `name` with `params`, or `compute` (timed, stored).
    fn cached<T, P>(
        &mut self,
        name: &str,
        params: P,
        compute: impl FnOnce(&Engine, &Subject, Progress) -> Result<T>,
    ) -> Result<T>
    where
        T: Serialize + serde::de::DeserializeOwned,
        P: Serialize,
    {
        let key = CacheKey::new(self.engine, self.subject, name, params)?;
        let (t, before) = (Instant::now(), self.engine.forward_count());
        let progress = &mut self.progress;
        let (value, hit) = self.cache.get_or_compute(&key, || {
            compute(self.engine, self.subject, &mut |d, n| progress(name, d, n))
        })?;
        self.record(name, t, before, hit);
        Ok(value)
    }

    /// `compute` timed and recorded, uncached here (it caches what it wants itself); it says
    /// whether its result came from a cache.
    fn timed<T>(
        &mut self,
        name: &str,
        compute: impl FnOnce(&mut Self) -> Result<(T, bool)>,
    ) -> Result<T> {
        let (t, before) = (Instant::now(), self.engine.forward_count());
        let (value, cached) = compute(self)?;
        self.record(name, t, before, cached);
        Ok(value)
    }

    fn record(&mut self, name: &str, t: Instant, forwards_before: usize, cached: bool) {
        let cost = MethodCost {
            seconds: t.elapsed().as_secs_f64(),
            forwards: self.engine.forward_count() - forwards_before,
            cached,
        };
        self.costs.insert(name.to_string(), cost);
    }

    /// A method's own progress callback, reporting under `name`.
    fn progress_of<'s>(
        &'s mut self,
        name: &'s str,
    ) -> impl FnMut(usize, usize) -> bool + use<'s, 'a, 'p> {
        move |d, n| (self.progress)(name, d, n)
    }
}

/// What several steps use, built on first use.
#[derive(Default)]
struct Shared<'a> {
    attention: Option<Attended>,
    scorer: Option<PrefixScorer<'a>>,
    arc_jsd: Option<ArcJsdAttribution>,
}

/// The answer's attention on every source, then on every document (one forward), and the target
/// document it picks.
struct Attended {
    spans: SpanAttention,
    /// Mean attention mass per span: the sources', then the documents'.
    mass: Vec<f64>,
    n_sources: usize,
    target: TargetDocument,
}

impl<'a> Shared<'a> {
    /// The answer's attention on every source and document, and the target document.
    fn attention(&mut self, run: &mut Steps<'a, '_>, opts: &AnalyzeOptions) -> Result<&Attended> {
        let attended = match self.attention.take() {
            Some(attended) => attended,
            None => {
                let g = opts.granularity;
                let mut spans = source_token_spans(run.subject, g);
                let n_sources = spans.len();
                spans.extend(source_token_spans(run.subject, Granularity::Document));
                let att = run.cached("attention", (g, opts.attention_from_answer), |e, s, _| {
                    span_attention(e, s, &spans)
                })?;
                let mass = attention_attribution(&att, spans.len());
                let target = target_document(run.subject, &mass[n_sources..]);
                Attended {
                    spans: att,
                    mass,
                    n_sources,
                    target,
                }
            }
        };
        Ok(self.attention.insert(attended))
    }

    /// The document head scores look at: `gold`, else the one the answer attends to most.
    fn target(&mut self, run: &mut Steps<'a, '_>, opts: &AnalyzeOptions) -> Result<usize> {
        Ok(self.attention(run, opts)?.target.index)
    }

    /// The teacher-forced re-scorer, from the answer pass's keys and values (no forward when the
    /// subject kept them).
    fn scorer(&mut self, run: &mut Steps<'a, '_>) -> Result<&PrefixScorer<'a>> {
        let scorer = match self.scorer.take() {
            Some(scorer) => scorer,
            None => {
                let (engine, subject) = (run.engine, run.subject);
                run.timed("scorer", |_| {
                    Ok((PrefixScorer::for_subject(engine, subject)?, false))
                })?
            }
        };
        Ok(self.scorer.insert(scorer))
    }

    /// ARC-JSD's source attribution (`attr:arc-jsd`).
    fn arc_jsd(
        &mut self,
        run: &mut Steps<'a, '_>,
        opts: &AnalyzeOptions,
    ) -> Result<&ArcJsdAttribution> {
        let attr = match self.arc_jsd.take() {
            Some(attr) => attr,
            None => {
                let (g, d) = (opts.granularity, opts.divergence);
                let scorer = self.scorer(run)?;
                run.cached("attr:arc-jsd", (g, d), |e, s, p| {
                    crate::analysis::arc_jsd::attribution(e, s, g, d, scorer, p)
                })?
            }
        };
        Ok(self.arc_jsd.insert(attr))
    }
}

/// Runs the steps of one analysis into its report.
pub(super) struct Runner<'a, 'p> {
    opts: &'a AnalyzeOptions,
    steps: Steps<'a, 'p>,
    shared: Shared<'a>,
    report: AnalysisReport,
}

impl<'a, 'p> Runner<'a, 'p> {
    pub(super) fn new(
        engine: &'a Engine,
        subject: &'a Subject,
        opts: &'a AnalyzeOptions,
        cache: &'a ResultCache,
        progress: AnalyzeProgress<'p>,
        report: AnalysisReport,
    ) -> Self {
        let steps = Steps {
            engine,
            subject,
            cache,
            progress,
            costs: BTreeMap::new(),
        };
        Runner {
            opts,
            steps,
            shared: Shared::default(),
            report,
        }
    }

    pub(super) fn run(&mut self, step: Step) -> Result<()> {
        match step {
            Step::LogitLens => self.logit_lens(),
            Step::HeadScore(h) => self.head_score(h),
            Step::Attribution(a) => self.attribution(a),
            Step::AblationCurve => self.ablation_curve(),
            Step::Faithfulness => self.faithfulness(),
        }
    }

    /// The report so far, with what the shared steps found until now (as [`Self::finish`]).
    pub(super) fn snapshot(&self) -> AnalysisReport {
        let mut report = self.report.clone();
        report.target_document = self.shared.attention.as_ref().map(|a| a.target.clone());
        report.details.arc_jsd = self.shared.arc_jsd.clone();
        report.costs = self.steps.costs.clone();
        report
    }

    /// The report with what the shared steps found (the target document, ARC-JSD's details).
    pub(super) fn finish(mut self) -> AnalysisReport {
        self.report.target_document = self.shared.attention.take().map(|a| a.target);
        self.report.details.arc_jsd = self.shared.arc_jsd.take();
        self.report.costs = std::mem::take(&mut self.steps.costs);
        self.report
    }

    fn logit_lens(&mut self) -> Result<()> {
        let k = self.opts.lens_top_k;
        let lens = self.steps.cached("logit-lens", (), |e, s, p| {
            crate::analysis::logit_lens::logit_lens(e, s, k, p)
        })?;
        self.report.logit_lens = Some(lens);
        Ok(())
    }

    fn head_score(&mut self, h: HeadScore) -> Result<()> {
        if self.report.head_scores.contains_key(&h) {
            return Ok(());
        }
        let matrix = match h {
            HeadScore::ArcJsd => self.arc_jsd_heads()?,
            HeadScore::SummedAttention => self.summed_attention()?,
            HeadScore::Retrieval => self.retrieval()?,
            HeadScore::QrHead => self.qrhead()?,
            HeadScore::Ablation => self.ablation_sweep()?,
            HeadScore::Patching => self.patching()?,
            HeadScore::Atp => self.atp()?,
        };
        self.report.head_scores.insert(h, matrix);
        Ok(())
    }

    /// ARC-JSD's head lens, leaving out the top source of `attr:arc-jsd` (and its MLP scores).
    fn arc_jsd_heads(&mut self) -> Result<Vec<Vec<f64>>> {
        let (g, d) = (self.opts.granularity, self.opts.divergence);
        let top = self.shared.arc_jsd(&mut self.steps, self.opts)?.top;
        let heads = self.steps.cached("heads:arc-jsd", (g, d, top), |e, s, p| {
            crate::analysis::arc_jsd::heads(e, s, g, top, d, p)
        })?;
        let matrix = heads.heads.clone();
        self.report
            .mlp_scores
            .insert(HeadScore::ArcJsd, heads.mlp.clone());
        self.report.details.arc_jsd_heads = Some(heads);
        Ok(matrix)
    }

    fn summed_attention(&mut self) -> Result<Vec<Vec<f64>>> {
        let a = self.shared.attention(&mut self.steps, self.opts)?;
        let target_span = a.n_sources + a.target.index;
        Ok(summed_attention(
            &a.spans,
            target_span,
            self.opts.attention_from_answer,
        ))
    }

    fn retrieval(&mut self) -> Result<Vec<Vec<f64>>> {
        let target = self.shared.target(&mut self.steps, self.opts)?;
        let (needle, from) = crate::analysis::retrieval::needle_span(self.steps.subject, target);
        let r = self
            .steps
            .cached("heads:retrieval", (&needle, &from), |e, s, p| {
                crate::analysis::retrieval::retrieval_scores(e, s, needle.clone(), from.clone(), p)
            })?;
        let matrix = r.scores.clone();
        self.report.details.retrieval = Some(r);
        Ok(matrix)
    }

    fn qrhead(&mut self) -> Result<Vec<Vec<f64>>> {
        let target = self.shared.target(&mut self.steps, self.opts)?;
        let q = self.steps.cached("heads:qrhead", target, |e, s, p| {
            crate::analysis::qrhead::qrhead(e, s, target, p)
        })?;
        let matrix = q.scores.clone();
        self.report.details.qrhead = Some(q);
        Ok(matrix)
    }

    fn ablation_sweep(&mut self) -> Result<Vec<Vec<f64>>> {
        let batch = self.opts.batch;
        let sweep = self.steps.cached("heads:ablation", (), |e, s, p| {
            head_ablation_sweep(e, &s.prompt.ids, s.answer_ids(), batch, p)
        })?;
        let matrix = sweep.delta_logprob.clone();
        self.report.details.ablation = Some(sweep);
        Ok(matrix)
    }

    /// Attribution patching of the ablation the options name (zero by default, as the sweep).
    fn atp(&mut self) -> Result<Vec<Vec<f64>>> {
        let mode = self.opts.atp_ablation;
        let atp = self.steps.cached("heads:atp", mode, |e, s, p| {
            attribution_patching(e, &s.prompt.ids, s.answer_ids(), mode, p)
        })?;
        let matrix = atp.delta_logprob.clone();
        self.report.details.atp = Some(atp);
        Ok(matrix)
    }

    fn patching(&mut self) -> Result<Vec<Vec<f64>>> {
        let target = self.shared.target(&mut self.steps, self.opts)?;
        let batch = self.opts.batch;
        let pt = self.steps.cached("heads:patching", target, |e, s, p| {
            crate::analysis::patching::patching(e, s, target, batch, p)
        })?;
        let matrix = pt.effect.clone();
        self.report.details.patching = Some(pt);
        Ok(matrix)
    }

    fn attribution(&mut self, a: Attribution) -> Result<()> {
        let scores = match a {
            Attribution::ArcJsd => self
                .shared
                .arc_jsd(&mut self.steps, self.opts)?
                .scores
                .clone(),
            Attribution::ContextCite => self.context_cite()?,
            Attribution::Mirage => self.mirage()?,
            Attribution::Marginal => self.marginal()?,
            Attribution::Attention => self.attention_attribution()?,
        };
        self.report.attribution.insert(a, scores);
        Ok(())
    }

    fn attention_attribution(&mut self) -> Result<Vec<f64>> {
        let a = self.shared.attention(&mut self.steps, self.opts)?;
        Ok(a.mass[..a.n_sources].to_vec())
    }

    /// ContextCite: its mask log-probs are cached on their own, so sub-span refits are free.
    fn context_cite(&mut self) -> Result<Vec<f64>> {
        let opts = self.opts;
        let scorer = self.shared.scorer(&mut self.steps)?;
        let cc = self.steps.timed("attr:context-cite", |run| {
            let (engine, subject, cache) = (run.engine, run.subject, run.cache);
            let before = engine.forward_count();
            let mut progress = run.progress_of("attr:context-cite");
            let (ablations, _) = crate::analysis::context_cite::cached_ablations(
                engine,
                subject,
                opts.granularity,
                &opts.context_cite,
                scorer,
                cache,
                &mut progress,
            )?;
            let span = match opts.answer_span {
                Some((a, b)) => a..b,
                None => 0..ablations.answer_len(),
            };
            let cc = crate::analysis::context_cite::fit(
                &ablations,
                span,
                opts.context_cite.lasso_alpha,
            )?;
            Ok((cc, engine.forward_count() == before))
        })?;
        let scores = cc.scores.clone();
        self.report.details.context_cite = Some(cc);
        Ok(scores)
    }

    fn mirage(&mut self) -> Result<Vec<f64>> {
        let opts = self.opts;
        let m = self.steps.timed("attr:mirage", |run| {
            let (engine, subject, cache) = (run.engine, run.subject, run.cache);
            let before = engine.forward_count();
            let mut progress = run.progress_of("attr:mirage");
            let m = crate::analysis::mirage::mirage(
                engine,
                subject,
                opts.granularity,
                &opts.mirage,
                cache,
                &mut progress,
            )?;
            Ok((m, engine.forward_count() == before))
        })?;
        let scores = m.scores.clone();
        self.report.details.mirage = Some(m);
        Ok(scores)
    }

    fn marginal(&mut self) -> Result<Vec<f64>> {
        let g = self.opts.granularity;
        let scorer = self.shared.scorer(&mut self.steps)?;
        let m = self.steps.cached("attr:marginal", g, |e, s, p| {
            crate::analysis::marginal::marginal(e, s, g, scorer, p)
        })?;
        let scores = m.posterior.clone();
        self.report.details.marginal = Some(m);
        Ok(scores)
    }

    /// Ranks heads by the curve's score as importance (see [`HeadScore::importance`]).
    fn ablation_curve(&mut self) -> Result<()> {
        let score = self.opts.curve_score;
        self.head_score(score)?;
        let importance = score.importance(&self.report.head_scores[&score]);
        let (name, cfg) = (score.key().to_string(), &self.opts.curve);
        let curve = self
            .steps
            .cached("ablation-curve", (&name, cfg, &importance), |e, s, p| {
                ablation_curve(e, s, &importance, &name, cfg, p)
            })?;
        self.report.ablation_curve = Some(curve);
        Ok(())
    }

    /// Top-k drop, LDS (against held-out random masks) and top-1 accuracy of every attribution.
    fn faithfulness(&mut self) -> Result<()> {
        let (g, opts) = (self.opts.granularity, self.opts);
        let scorer = self.shared.scorer(&mut self.steps)?;
        let heldout = self
            .steps
            .cached("faithfulness:heldout", (g, &opts.lds), |e, s, p| {
                HeldOut::compute(e, s, g, scorer, &opts.lds, p)
            })?;
        let report = &mut self.report;
        self.steps.timed("faithfulness", |run| {
            for (&a, scores) in &report.attribution {
                let intercept = match (a, &report.details.context_cite) {
                    (Attribution::ContextCite, Some(cc)) => cc.intercept,
                    _ => 0.0,
                };
                let f = crate::analysis::faithfulness::faithfulness(
                    run.engine,
                    run.subject,
                    g,
                    scorer,
                    scores,
                    intercept,
                    Some(&heldout),
                    opts.drop_max_k,
                )?;
                report.faithfulness.insert(a, f);
            }
            Ok(((), false))
        })
    }
}
