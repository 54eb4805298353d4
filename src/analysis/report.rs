//! `analyze`: runs a chosen set of methods on one subject and gathers their results in one serde
//! report (the JSON contract of `headscope analyze --json`, documented in the README). The CLI
//! and the TUI both call [`analyze`].
//!
//! Methods depend on each other only through their results: `heads:arc-jsd` leaves out the top
//! source of `attr:arc-jsd`; head scores look at the target document (`gold`, else the top of
//! `attr:attention`); the ablation curve ranks heads by a head score. Each dependency is computed
//! once. Every method's result is cached on disk (see [`super::cache`]).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::ablation::{ablation_curve, head_ablation_sweep, AblationCurve, CurveConfig, HeadSweep};
use super::arc_jsd::{ArcJsdAttribution, ArcJsdHeads};
use super::attention::{
    attention_attribution, source_token_spans, span_attention, summed_attention, TargetDocument,
};
use super::cache::{CacheKey, ResultCache};
use super::context_cite::{ContextCiteConfig, ContextCiteResult};
use super::divergence::Divergence;
use super::faithfulness::{Faithfulness, HeldOut, LdsConfig};
use super::logit_lens::LogitLens;
use super::marginal::Marginal;
use super::mirage::{MirageConfig, MirageResult};
use super::patching::PatchingScores;
use super::qrhead::QrHeadScores;
use super::retrieval::RetrievalScores;
use super::scoring::PrefixScorer;
use super::{ranking, Subject};
use crate::engine::{Engine, ModelInfo};
use crate::prompt::Granularity;
use crate::{Error, Result};

/// One method of `analyze --method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Method {
    LogitLens,
    HeadsArcJsd,
    HeadsSummedAttention,
    HeadsRetrieval,
    HeadsQrHead,
    HeadsAblation,
    HeadsPatching,
    AttrArcJsd,
    AttrContextCite,
    AttrMirage,
    AttrMarginal,
    AttrAttention,
    AblationCurve,
}

impl Method {
    pub const ALL: [Method; 13] = [
        Method::LogitLens,
        Method::HeadsArcJsd,
        Method::HeadsSummedAttention,
        Method::HeadsRetrieval,
        Method::HeadsQrHead,
        Method::HeadsAblation,
        Method::HeadsPatching,
        Method::AttrArcJsd,
        Method::AttrContextCite,
        Method::AttrMirage,
        Method::AttrMarginal,
        Method::AttrAttention,
        Method::AblationCurve,
    ];

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Method::LogitLens => "logit-lens",
            Method::HeadsArcJsd => "heads:arc-jsd",
            Method::HeadsSummedAttention => "heads:summed-attention",
            Method::HeadsRetrieval => "heads:retrieval",
            Method::HeadsQrHead => "heads:qrhead",
            Method::HeadsAblation => "heads:ablation",
            Method::HeadsPatching => "heads:patching",
            Method::AttrArcJsd => "attr:arc-jsd",
            Method::AttrContextCite => "attr:context-cite",
            Method::AttrMirage => "attr:mirage",
            Method::AttrMarginal => "attr:marginal",
            Method::AttrAttention => "attr:attention",
            Method::AblationCurve => "ablation-curve",
        }
    }

    /// The key under `head_scores` / `attribution` in the JSON (`arc_jsd`, `context_cite`, ...).
    pub fn key(self) -> &'static str {
        let name = self.name();
        let bare = name.split_once(':').map_or(name, |(_, b)| b);
        match bare {
            "arc-jsd" => "arc_jsd",
            "summed-attention" => "summed_attention",
            "context-cite" => "context_cite",
            "logit-lens" => "logit_lens",
            "ablation-curve" => "ablation_curve",
            other => other,
        }
    }

    /// Parses `a,b,c` (or `all`).
    pub fn parse_list(s: &str) -> std::result::Result<Vec<Method>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "all" {
                out.extend(Method::ALL);
            } else {
                out.push(part.parse()?);
            }
        }
        if out.is_empty() {
            return Err("no method given".into());
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim().to_ascii_lowercase().replace('_', "-");
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown method `{s}`; use one or more of: {}, or all",
                    Method::ALL.map(Method::name).join(", ")
                )
            })
    }
}

/// The head score names `ablation-curve --curve-score` accepts (the `head_scores` keys).
pub const HEAD_SCORES: [&str; 6] = [
    "arc_jsd",
    "summed_attention",
    "retrieval",
    "qrhead",
    "ablation",
    "patching",
];

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
    /// The head score that ranks heads for the curve (a `head_scores` key).
    pub curve_score: String,
    /// Top-k drop, LDS and top-1 accuracy for every attribution computed.
    pub faithfulness: bool,
    pub lds: LdsConfig,
    /// Largest k of the top-k log-prob drop.
    pub drop_max_k: usize,
    /// Variants per forward in head sweeps.
    pub batch: usize,
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
            curve_score: "arc_jsd".into(),
            faithfulness: true,
            lds: LdsConfig::default(),
            drop_max_k: 3,
            batch: 16,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patching: Option<PatchingScores>,
}

/// The result of [`analyze`]; field order is the JSON's.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AnalysisReport {
    pub model: ModelInfo,
    pub sample_id: Option<String>,
    pub prompt_style: String,
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
    /// The engine's standing ablation during the analysis (the explorer's live ablation set, as
    /// [`crate::engine::StandingAblation::label`]); absent for the unablated model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ablation: Option<String>,
    pub gold: Option<usize>,
    pub sources: Vec<SourceInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_document: Option<TargetDocument>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logit_lens: Option<LogitLens>,
    /// `[layers][heads]` per head score.
    pub head_scores: BTreeMap<String, Vec<Vec<f64>>>,
    /// `[layers]` per MLP score (ARC-JSD's MLP localisation).
    pub mlp_scores: BTreeMap<String, Vec<f64>>,
    /// One score per source, in source order, per attribution method.
    pub attribution: BTreeMap<String, Vec<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ablation_curve: Option<AblationCurve>,
    /// Per attribution method.
    pub faithfulness: BTreeMap<String, Faithfulness>,
    pub details: Details,
    pub costs: BTreeMap<String, MethodCost>,
    pub options: AnalyzeOptions,
}

/// Progress of `analyze`: `(method, done, total)`; return `false` to cancel.
pub type AnalyzeProgress<'a> = &'a mut dyn FnMut(&str, usize, usize) -> bool;

/// Runs `opts.methods` (and what they need) on `subject`.
pub fn analyze(
    engine: &Engine,
    subject: &Subject,
    opts: &AnalyzeOptions,
    cache: &ResultCache,
    progress: AnalyzeProgress,
) -> Result<AnalysisReport> {
    if !HEAD_SCORES.contains(&opts.curve_score.as_str()) {
        return Err(Error::Analysis(format!(
            "unknown head score `{}` for the ablation curve (use one of {})",
            opts.curve_score,
            HEAD_SCORES.join(", ")
        )));
    }
    let mut run = Runner {
        engine,
        subject,
        opts,
        cache,
        progress,
        costs: BTreeMap::new(),
    };
    let want = |m: Method| opts.methods.contains(&m);
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
    let mut report = AnalysisReport {
        model: engine.info.clone(),
        sample_id: subject.sample.id(),
        prompt_style: subject.prompt.style.name().into(),
        granularity: g,
        prompt_ids: subject.prompt.ids.clone(),
        answer_ids: subject.answer_ids().to_vec(),
        answer_tokens: engine.token_texts(subject.answer_ids()),
        answer_logprob: subject.answer.total_logprob(),
        answer_source: subject.answer_source,
        answer_correct: subject.is_correct(&answer_text),
        ablation: engine.model.standing_ablation().map(|a| a.label()),
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
    };

    if want(Method::LogitLens) {
        report.logit_lens = Some(run.step("logit-lens", (), |e, s, p| {
            super::logit_lens::logit_lens(e, s, opts.lens_top_k, p)
        })?);
    }

    // One forward gives attention mass on every source and on the documents.
    let needs_heads = [
        Method::HeadsSummedAttention,
        Method::HeadsRetrieval,
        Method::HeadsQrHead,
        Method::HeadsPatching,
    ]
    .iter()
    .any(|&m| want(m))
        || (want(Method::AblationCurve)
            && ["summed_attention", "retrieval", "qrhead", "patching"]
                .contains(&opts.curve_score.as_str()));
    let needs_attention = want(Method::AttrAttention) || needs_heads;
    let doc_spans = source_token_spans(subject, Granularity::Document);
    let src_spans = source_token_spans(subject, g);
    let mut spans = src_spans.clone();
    spans.extend(doc_spans.iter().cloned());
    let attention = if needs_attention {
        Some(
            run.step("attention", (g, opts.attention_from_answer), |e, s, _| {
                span_attention(e, s, &spans)
            })?,
        )
    } else {
        None
    };
    let n_src = src_spans.len();
    let target = attention.as_ref().map(|att| {
        // Document mass = the document spans appended after the sources.
        let doc_att: Vec<f64> = attention_attribution(att, spans.len())[n_src..].to_vec();
        super::attention::target_document(subject, &doc_att)
    });
    report.target_document = target.clone();
    if want(Method::AttrAttention) {
        let att = attention.as_ref().expect("computed above");
        report.attribution.insert(
            "attention".into(),
            attention_attribution(att, spans.len())[..n_src].to_vec(),
        );
    }
    let target_index = target.as_ref().map(|t| t.index);

    if want(Method::HeadsSummedAttention)
        || opts.curve_score == "summed_attention" && want(Method::AblationCurve)
    {
        let att = attention.as_ref().expect("computed above");
        let t = n_src + target_index.expect("target computed with attention");
        report.head_scores.insert(
            "summed_attention".into(),
            summed_attention(att, t, opts.attention_from_answer),
        );
    }

    // The teacher-forced scorer for every leave-out method, built on first use.
    let perturbs = [
        Method::AttrArcJsd,
        Method::HeadsArcJsd,
        Method::AttrContextCite,
        Method::AttrMarginal,
    ]
    .iter()
    .any(|&m| want(m))
        || opts.faithfulness
        || (want(Method::AblationCurve) && opts.curve_score == "arc_jsd");
    let scorer = if perturbs {
        // Built from the answer pass's keys and values: no forward when the subject kept them.
        let t = Instant::now();
        let before = engine.forward_count();
        let s = PrefixScorer::for_subject(engine, subject)?;
        run.record("scorer", t, before, false);
        Some(s)
    } else {
        None
    };

    let wants_arc_heads =
        want(Method::HeadsArcJsd) || (want(Method::AblationCurve) && opts.curve_score == "arc_jsd");
    if want(Method::AttrArcJsd) || wants_arc_heads {
        let scorer = scorer.as_ref().expect("built above");
        let attr = run.step("attr:arc-jsd", (g, opts.divergence), |e, s, p| {
            super::arc_jsd::attribution(e, s, g, opts.divergence, scorer, p)
        })?;
        if want(Method::AttrArcJsd) {
            report
                .attribution
                .insert("arc_jsd".into(), attr.scores.clone());
        }
        if wants_arc_heads {
            let top = attr.top;
            let heads = run.step("heads:arc-jsd", (g, opts.divergence, top), |e, s, p| {
                super::arc_jsd::heads(e, s, g, top, opts.divergence, p)
            })?;
            report
                .head_scores
                .insert("arc_jsd".into(), heads.heads.clone());
            report
                .mlp_scores
                .insert("arc_jsd".into(), heads.mlp.clone());
            report.details.arc_jsd_heads = Some(heads);
        }
        report.details.arc_jsd = Some(attr);
    }

    let target_needed = |name: &str| -> Result<usize> {
        target_index.ok_or_else(|| Error::Analysis(format!("{name} needs a target document")))
    };
    if want(Method::HeadsRetrieval)
        || (want(Method::AblationCurve) && opts.curve_score == "retrieval")
    {
        let t = target_needed("heads:retrieval")?;
        let (needle, from) = super::retrieval::needle_span(subject, t);
        let r = run.step("heads:retrieval", (&needle, &from), |e, s, p| {
            super::retrieval::retrieval_scores(e, s, needle.clone(), from.clone(), p)
        })?;
        report
            .head_scores
            .insert("retrieval".into(), r.scores.clone());
        report.details.retrieval = Some(r);
    }
    if want(Method::HeadsQrHead) || (want(Method::AblationCurve) && opts.curve_score == "qrhead") {
        let t = target_needed("heads:qrhead")?;
        let q = run.step("heads:qrhead", t, |e, s, p| {
            super::qrhead::qrhead(e, s, t, p)
        })?;
        report.head_scores.insert("qrhead".into(), q.scores.clone());
        report.details.qrhead = Some(q);
    }
    if want(Method::HeadsAblation)
        || (want(Method::AblationCurve) && opts.curve_score == "ablation")
    {
        let sweep = run.step("heads:ablation", (), |e, s, p| {
            head_ablation_sweep(e, &s.prompt.ids, s.answer_ids(), opts.batch, p)
        })?;
        report
            .head_scores
            .insert("ablation".into(), sweep.delta_logprob.clone());
        report.details.ablation = Some(sweep);
    }
    if want(Method::HeadsPatching)
        || (want(Method::AblationCurve) && opts.curve_score == "patching")
    {
        let t = target_needed("heads:patching")?;
        let pt = run.step("heads:patching", t, |e, s, p| {
            super::patching::patching(e, s, t, opts.batch, p)
        })?;
        report
            .head_scores
            .insert("patching".into(), pt.effect.clone());
        report.details.patching = Some(pt);
    }

    if want(Method::AttrContextCite) {
        let scorer = scorer.as_ref().expect("built above");
        // ContextCite caches its own mask log-probs (so sub-span refits are free).
        let t = Instant::now();
        let before = engine.forward_count();
        let (ablations, _) = super::context_cite::cached_ablations(
            engine,
            subject,
            g,
            &opts.context_cite,
            scorer,
            cache,
            &mut |d, n| (run.progress)("attr:context-cite", d, n),
        )?;
        let span = match opts.answer_span {
            Some((a, b)) => a..b,
            None => 0..ablations.answer_len(),
        };
        let cc = super::context_cite::fit(&ablations, span, opts.context_cite.lasso_alpha)?;
        run.record(
            "attr:context-cite",
            t,
            before,
            engine.forward_count() == before,
        );
        report
            .attribution
            .insert("context_cite".into(), cc.scores.clone());
        report.details.context_cite = Some(cc);
    }
    if want(Method::AttrMirage) {
        let t = Instant::now();
        let before = engine.forward_count();
        let m = super::mirage::mirage(engine, subject, g, &opts.mirage, cache, &mut |d, n| {
            (run.progress)("attr:mirage", d, n)
        })?;
        run.record("attr:mirage", t, before, engine.forward_count() == before);
        report.attribution.insert("mirage".into(), m.scores.clone());
        report.details.mirage = Some(m);
    }
    if want(Method::AttrMarginal) {
        let scorer = scorer.as_ref().expect("built above");
        let m = run.step("attr:marginal", g, |e, s, p| {
            super::marginal::marginal(e, s, g, scorer, p)
        })?;
        report
            .attribution
            .insert("marginal".into(), m.posterior.clone());
        report.details.marginal = Some(m);
    }

    if want(Method::AblationCurve) {
        let scores = report.head_scores.get(&opts.curve_score).ok_or_else(|| {
            Error::Analysis(format!(
                "head score `{}` was not computed",
                opts.curve_score
            ))
        })?;
        // Higher = more important; an ablation Δ is negative for heads the answer needs.
        let importance: Vec<Vec<f64>> = if opts.curve_score == "ablation" {
            scores
                .iter()
                .map(|r| r.iter().map(|v| -v).collect())
                .collect()
        } else {
            scores.clone()
        };
        let name = opts.curve_score.clone();
        let curve = run.step(
            "ablation-curve",
            (&name, &opts.curve, &importance),
            |e, s, p| ablation_curve(e, s, &importance, &name, &opts.curve, p),
        )?;
        report.ablation_curve = Some(curve);
    }

    if opts.faithfulness && !report.attribution.is_empty() {
        let scorer = scorer.as_ref().expect("built above");
        let heldout = run.step("faithfulness:heldout", (g, &opts.lds), |e, s, p| {
            HeldOut::compute(e, s, g, scorer, &opts.lds, p)
        })?;
        let t = Instant::now();
        let before = engine.forward_count();
        for (name, scores) in &report.attribution {
            let intercept = match (name.as_str(), &report.details.context_cite) {
                ("context_cite", Some(cc)) => cc.intercept,
                _ => 0.0,
            };
            let f = super::faithfulness::faithfulness(
                engine,
                subject,
                g,
                scorer,
                scores,
                intercept,
                Some(&heldout),
                opts.drop_max_k,
            )?;
            report.faithfulness.insert(name.clone(), f);
        }
        run.record("faithfulness", t, before, false);
    }
    report.costs = run.costs;
    Ok(report)
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

/// Runs steps with caching, timing and progress.
struct Runner<'a, 'p> {
    engine: &'a Engine,
    subject: &'a Subject,
    opts: &'a AnalyzeOptions,
    cache: &'a ResultCache,
    progress: AnalyzeProgress<'p>,
    costs: BTreeMap<String, MethodCost>,
}

impl Runner<'_, '_> {
    /// The cached result of step `name` with `params`, or `compute` (timed, stored).
    fn step<T, P>(
        &mut self,
        name: &str,
        params: P,
        compute: impl FnOnce(&Engine, &Subject, super::Progress) -> Result<T>,
    ) -> Result<T>
    where
        T: Serialize + serde::de::DeserializeOwned,
        P: Serialize,
    {
        let _ = self.opts;
        let key = CacheKey::new(self.engine, self.subject, name, params)?;
        let t = Instant::now();
        let before = self.engine.forward_count();
        let progress = &mut self.progress;
        let (value, hit) = self.cache.get_or_compute(&key, || {
            compute(self.engine, self.subject, &mut |d, n| progress(name, d, n))
        })?;
        self.record(name, t, before, hit);
        Ok(value)
    }

    fn record(&mut self, name: &str, t: Instant, forwards_before: usize, cached: bool) {
        self.costs.insert(
            name.to_string(),
            MethodCost {
                seconds: t.elapsed().as_secs_f64(),
                forwards: self.engine.forward_count() - forwards_before,
                cached,
            },
        );
    }
}

/// The top `k` sources of an attribution, best first.
pub fn top_sources(scores: &[f64], k: usize) -> Vec<usize> {
    ranking(scores).into_iter().take(k).collect()
}
