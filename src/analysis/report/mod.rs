//! `analyze`: runs a chosen set of methods on one subject and gathers their results in one serde
//! report (the JSON contract of `headscope analyze --json`, documented in the README). The CLI
//! and the TUI both call [`analyze`].
//!
//! Methods depend on each other only through their results: `heads:arc-jsd` leaves out the top
//! source of `attr:arc-jsd`; head scores look at the target document (`gold`, else the top of
//! `attr:attention`); the ablation curve ranks heads by a head score. Each dependency is computed
//! once. Every method's result is cached on disk (see [`super::cache`]).

mod runner;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ablation::{AblationCurve, CurveConfig, HeadSweep};
use super::arc_jsd::{ArcJsdAttribution, ArcJsdHeads};
use super::atp::AtpScores;
use super::attention::TargetDocument;
use super::cache::ResultCache;
use super::context_cite::{ContextCiteConfig, ContextCiteResult};
use super::divergence::Divergence;
use super::faithfulness::{Faithfulness, LdsConfig};
use super::logit_lens::LogitLens;
use super::marginal::Marginal;
use super::mirage::{MirageConfig, MirageResult};
use super::patching::PatchingScores;
use super::qrhead::QrHeadScores;
use super::retrieval::RetrievalScores;
use super::{ranking, Subject};
use crate::engine::{AblationMode, AblationSet, Engine, ModelInfo};
use crate::prompt::Granularity;
use crate::Result;

pub use super::method::{Attribution, HeadScore, Method};

/// Everything `analyze` can be asked.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AnalyzeOptions {
    pub methods: Vec<Method>,
    pub granularity: Granularity,
    pub divergence: Divergence,
    /// Logit-lens tokens per cell.
    pub lens_top_k: usize,
    /// Summed attention from every answer position instead of the last prompt token.
    pub attention_from_answer: bool,
    pub context_cite: ContextCiteConfig,
    pub mirage: MirageConfig,
    pub curve: CurveConfig,
    /// The head score that ranks heads for the curve.
    pub curve_score: HeadScore,
    /// Top-k drop, LDS and top-1 accuracy for every attribution computed.
    pub faithfulness: bool,
    pub lds: LdsConfig,
    /// Largest k of the top-k log-prob drop.
    pub drop_max_k: usize,
    /// Variants per forward in head sweeps.
    pub batch: usize,
    /// The ablation `heads:atp` linearises: zero (as `heads:ablation`) or mean.
    #[serde(default)]
    pub atp_ablation: AblationMode,
    /// ContextCite explains only these answer tokens `[start, end)` (default: all).
    pub answer_span: Option<(usize, usize)>,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        AnalyzeOptions {
            methods: Method::ALL.to_vec(),
            granularity: Granularity::Document,
            divergence: Divergence::Jsd,
            lens_top_k: 5,
            attention_from_answer: false,
            context_cite: ContextCiteConfig::default(),
            mirage: MirageConfig::default(),
            curve: CurveConfig::default(),
            curve_score: HeadScore::ArcJsd,
            faithfulness: true,
            lds: LdsConfig::default(),
            drop_max_k: 3,
            batch: 16,
            atp_ablation: AblationMode::Zero,
            answer_span: None,
        }
    }
}

/// One source as the report lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SourceInfo {
    pub label: String,
    pub text: String,
    /// Token range in the prompt.
    pub tokens: [usize; 2],
    /// The document the source belongs to (0-based).
    pub document: usize,
}

/// What one method cost.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MethodCost {
    pub seconds: f64,
    /// Forward calls through the engine (a decoding step counts as one); 0 when cached.
    pub forwards: usize,
    pub cached: bool,
}

/// Method outputs beyond the plain score vectors.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Details {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arc_jsd: Option<ArcJsdAttribution>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arc_jsd_heads: Option<ArcJsdHeads>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_cite: Option<ContextCiteResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirage: Option<MirageResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marginal: Option<Marginal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<RetrievalScores>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qrhead: Option<QrHeadScores>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ablation: Option<HeadSweep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub atp: Option<AtpScores>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patching: Option<PatchingScores>,
}

/// The result of [`analyze`]; field order is the JSON's.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AnalysisReport {
    pub model: ModelInfo,
    pub sample_id: Option<String>,
    pub prompt_style: String,
    /// The instruction written before the question (`--instruction`); absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instruction: Option<String>,
    /// The source of the user-message template (`--prompt-template`); absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_template: Option<String>,
    pub granularity: Granularity,
    pub prompt_ids: Vec<u32>,
    pub answer_ids: Vec<u32>,
    pub answer_text: String,
    pub answer_tokens: Vec<String>,
    pub answer_logprob: f64,
    /// `generated` or `given` (the sample's `output`).
    pub answer_source: super::AnswerSource,
    /// Does the answer contain one of the sample's `answers`? `None` without answers.
    pub answer_correct: Option<bool>,
    /// The ablation in force on the engine during the analysis (the explorer's live ablation
    /// set, as [`AblationSet::label`]); absent for the unablated model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ablation: Option<String>,
    pub gold: Option<usize>,
    pub sources: Vec<SourceInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_document: Option<TargetDocument>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logit_lens: Option<LogitLens>,
    /// `[layers][heads]` per head score.
    pub head_scores: BTreeMap<HeadScore, Vec<Vec<f64>>>,
    /// `[layers]` per MLP score (ARC-JSD's MLP localisation, under `arc_jsd`).
    pub mlp_scores: BTreeMap<HeadScore, Vec<f64>>,
    /// One score per source, in source order, per attribution method.
    pub attribution: BTreeMap<Attribution, Vec<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ablation_curve: Option<AblationCurve>,
    /// Per attribution method.
    pub faithfulness: BTreeMap<Attribution, Faithfulness>,
    pub details: Details,
    pub costs: BTreeMap<String, MethodCost>,
    pub options: AnalyzeOptions,
}

/// Progress of `analyze`: `(method, done, total)`; return `false` to cancel.
pub type AnalyzeProgress<'a> = &'a mut dyn FnMut(&str, usize, usize) -> bool;

/// Runs `opts.methods` (and what they need) on `subject`: [`runner::plan`] lists the steps,
/// and the runner computes what they share (attention, the target document, the re-scorer, ARC-JSD's
/// top source) on first use.
pub fn analyze(
    engine: &Engine,
    subject: &Subject,
    opts: &AnalyzeOptions,
    cache: &ResultCache,
    progress: AnalyzeProgress,
) -> Result<AnalysisReport> {
    analyze_stepwise(
        engine,
        subject,
        opts,
        cache,
        &BTreeMap::new(),
        progress,
        &mut |_| {},
    )
}

/// [`analyze`], handing `on_step` the report as it stands after each step (everything computed
/// so far), so a caller can show each method's result as soon as it exists instead of at the
/// end (the explorer's panes fill step by step within a stage). Merging the snapshots in order,
/// or only the last, gives the same report. `known`: head scores an earlier call computed for
/// this subject and options (the explorer's earlier stages), taken as they are instead of
/// recomputed when a method needs them (the curve's ranking), also without a result cache.
pub fn analyze_stepwise(
    engine: &Engine,
    subject: &Subject,
    opts: &AnalyzeOptions,
    cache: &ResultCache,
    known: &BTreeMap<HeadScore, Vec<Vec<f64>>>,
    progress: AnalyzeProgress,
    on_step: &mut dyn FnMut(AnalysisReport),
) -> Result<AnalysisReport> {
    let mut report = AnalysisReport::header(engine, subject, opts)?;
    report.head_scores.clone_from(known);
    let mut run = runner::Runner::new(engine, subject, opts, cache, progress, report);
    let steps = runner::plan(opts);
    let last = steps.len().saturating_sub(1);
    for (i, step) in steps.into_iter().enumerate() {
        run.run(step)?;
        if i < last {
            on_step(run.snapshot());
        }
    }
    Ok(run.finish())
}

impl AnalysisReport {
    /// The report before any method ran: the model, the subject, its answer and its sources.
    fn header(engine: &Engine, subject: &Subject, opts: &AnalyzeOptions) -> Result<AnalysisReport> {
        let g = opts.granularity;
        let answer_text = engine.decode(subject.answer_ids())?;
        let labels = subject.prompt.source_labels(g);
        let sources = subject
            .sources(g)
            .iter()
            .zip(labels)
            .enumerate()
            .map(|(i, (s, label))| SourceInfo {
                label,
                text: subject.prompt.span_text(s).to_string(),
                tokens: [s.tokens.start, s.tokens.end],
                document: document_of(subject, g, i),
            })
            .collect();
        Ok(AnalysisReport {
            model: engine.info().clone(),
            sample_id: subject.sample.id(),
            prompt_style: subject.prompt.format.style.name().into(),
            instruction: subject.prompt.format.instruction().map(str::to_string),
            prompt_template: subject
                .prompt
                .format
                .template
                .as_ref()
                .map(|t| t.source.clone()),
            granularity: g,
            prompt_ids: subject.prompt.ids.clone(),
            answer_ids: subject.answer_ids().to_vec(),
            answer_tokens: engine.token_texts(subject.answer_ids()),
            answer_logprob: subject.answer.total_logprob(),
            answer_source: subject.answer_source,
            answer_correct: subject.is_correct(&answer_text),
            ablation: engine.ablation().map(AblationSet::label),
            answer_text,
            gold: subject.sample.gold(),
            sources,
            target_document: None,
            logit_lens: None,
            head_scores: BTreeMap::new(),
            mlp_scores: BTreeMap::new(),
            attribution: BTreeMap::new(),
            ablation_curve: None,
            faithfulness: BTreeMap::new(),
            details: Details::default(),
            costs: BTreeMap::new(),
            options: opts.clone(),
        })
    }

    /// Folds a later report on the same subject (another stage of the explorer) into this one:
    /// its results are added, replacing this one's where both have them. Every field is named, so
    /// a new one cannot be forgotten.
    pub fn merge(&mut self, later: AnalysisReport) {
        let AnalysisReport {
            // The subject and its header are the same in both.
            model: _,
            sample_id: _,
            prompt_style: _,
            instruction: _,
            prompt_template: _,
            granularity: _,
            prompt_ids: _,
            answer_ids: _,
            answer_text: _,
            answer_tokens: _,
            answer_logprob: _,
            answer_source: _,
            answer_correct: _,
            ablation: _,
            gold: _,
            sources: _,
            options: _,
            target_document,
            logit_lens,
            head_scores,
            mlp_scores,
            attribution,
            ablation_curve,
            faithfulness,
            details,
            costs,
        } = later;
        replace_if_some(&mut self.target_document, target_document);
        replace_if_some(&mut self.logit_lens, logit_lens);
        replace_if_some(&mut self.ablation_curve, ablation_curve);
        self.head_scores.extend(head_scores);
        self.mlp_scores.extend(mlp_scores);
        self.attribution.extend(attribution);
        self.faithfulness.extend(faithfulness);
        self.costs.extend(costs);
        self.details.merge(details);
    }
}

impl Details {
    /// Takes every detail `later` has (see [`AnalysisReport::merge`]).
    pub fn merge(&mut self, later: Details) {
        let Details {
            arc_jsd,
            arc_jsd_heads,
            context_cite,
            mirage,
            marginal,
            retrieval,
            qrhead,
            ablation,
            atp,
            patching,
        } = later;
        replace_if_some(&mut self.arc_jsd, arc_jsd);
        replace_if_some(&mut self.arc_jsd_heads, arc_jsd_heads);
        replace_if_some(&mut self.context_cite, context_cite);
        replace_if_some(&mut self.mirage, mirage);
        replace_if_some(&mut self.marginal, marginal);
        replace_if_some(&mut self.retrieval, retrieval);
        replace_if_some(&mut self.qrhead, qrhead);
        replace_if_some(&mut self.ablation, ablation);
        replace_if_some(&mut self.atp, atp);
        replace_if_some(&mut self.patching, patching);
    }
}

fn replace_if_some<T>(dst: &mut Option<T>, src: Option<T>) {
    if src.is_some() {
        *dst = src;
    }
}

/// The document (0-based) source `i` belongs to.
fn document_of(subject: &Subject, g: Granularity, i: usize) -> usize {
    match g {
        Granularity::Document => i,
        Granularity::Sentence => {
            let mut rest = i;
            for (d, s) in subject.prompt.sentences.iter().enumerate() {
                if rest < s.len() {
                    return d;
                }
                rest -= s.len();
            }
            subject.prompt.docs.len().saturating_sub(1)
        }
    }
}

/// The top `k` sources of an attribution, best first.
pub fn top_sources(scores: &[f64], k: usize) -> Vec<usize> {
    ranking(scores).into_iter().take(k).collect()
}
