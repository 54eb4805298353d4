//! Detection (issue 11, item 4): every head's score on each training sample, from the query and
//! answer rows of the attention (`|rows| × T` per head, never `T × T`) that the answer's own
//! generation records ([`detection_recording`]; a teacher-forced forward gives the same rows, see
//! [`RowSource`]), then the mean, sd and top list per category.
//!
//! The scores are the analysis functions of `analyze` applied to that shared forward:
//! * `summed_attention` ([`attention::summed_attention`]): the last prompt token's attention mass
//!   on the gold document; `summed_attention_answer`: on the answer's tokens inside it;
//! * `retrieval` ([`retrieval::copy_paste_scores`], Wu et al.): the needle is the answer's span in
//!   the gold document; the mean is over correctly answered samples only, as the paper
//!   accumulates it; `retrieval_all` is the same score averaged over every sample;
//! * `qrhead` ([`qrhead::calibrated`]): query → gold document, calibrated by the null query "N/A"
//!   (run from the shared prefix's cache), outlier tokens dropped;
//! * any other head score of `analyze` (`arc_jsd`, `ablation`, `patching`, `atp`) through its runner,
//!   with the gold document as target.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use super::summary::RankedHead;
use crate::analysis::attention::{summed_attention, SpanAttention};
use crate::analysis::report::{analyze, AnalyzeOptions, HeadScore, Method};
use crate::analysis::{qrhead, retrieval, Subject};
use crate::engine::generate::Recorded;
use crate::engine::{Capture, Engine, Hooks, KvCache, Positions, Recording, Start, Trace};
use crate::prompt::RagPrompt;
use crate::{Error, Result};

/// A head-finding method of the study.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DetectMethod {
    /// A head score of `analyze`, computed with the gold document as target.
    Score(HeadScore),
    /// Summed attention from the last prompt token to the answer's tokens in the gold document.
    SummedAttentionAnswer,
    /// Wu et al.'s retrieval score averaged over every sample, not only correct answers.
    RetrievalAllSamples,
}

impl DetectMethod {
    /// The plan's three methods.
    pub const DEFAULT: [DetectMethod; 3] = [
        DetectMethod::Score(HeadScore::SummedAttention),
        DetectMethod::Score(HeadScore::Retrieval),
        DetectMethod::Score(HeadScore::QrHead),
    ];

    /// Its name in files, tables and `--methods`.
    pub fn key(self) -> &'static str {
        match self {
            DetectMethod::Score(h) => h.key(),
            DetectMethod::SummedAttentionAnswer => "summed_attention_answer",
            DetectMethod::RetrievalAllSamples => "retrieval_all",
        }
    }

    /// The per-sample score it averages (two methods share the retrieval score).
    pub fn sample_score(self) -> &'static str {
        match self {
            DetectMethod::RetrievalAllSamples => HeadScore::Retrieval.key(),
            m => m.key(),
        }
    }

    /// Whether a sample counts towards the mean: Wu et al. accumulate only successful retrievals.
    pub fn counts(self, correct: bool) -> bool {
        correct || self != DetectMethod::Score(HeadScore::Retrieval)
    }

    /// Turns a mean score into importance (higher = the answer needs the head more).
    pub fn importance_sign(self) -> f64 {
        match self {
            DetectMethod::Score(h) => h.importance_sign(),
            _ => 1.0,
        }
    }

    /// Scores computed by the shared forward (the rest go through `analyze`'s runner).
    fn shares_forward(self) -> bool {
        !matches!(
            self,
            DetectMethod::Score(
                HeadScore::ArcJsd | HeadScore::Ablation | HeadScore::Patching | HeadScore::Atp
            )
        )
    }
}

impl fmt::Display for DetectMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

impl FromStr for DetectMethod {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let key = s.trim().trim_start_matches("heads:").replace('-', "_");
        let known = HeadScore::ALL.map(DetectMethod::Score).into_iter().chain([
            DetectMethod::SummedAttentionAnswer,
            DetectMethod::RetrievalAllSamples,
        ]);
        let all: Vec<DetectMethod> = known.collect();
        all.iter().copied().find(|m| m.key() == key).ok_or_else(|| {
            let names: Vec<String> = all.iter().map(|m| m.key().replace('_', "-")).collect();
            format!("unknown method `{s}` (known: {})", names.join(", "))
        })
    }
}

impl Serialize for DetectMethod {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.key())
    }
}

impl<'de> Deserialize<'de> for DetectMethod {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One training sample's detection: `detect/<model>/<sample>.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectUnit {
    pub sample: String,
    pub category: String,
    /// The model's own (greedy) answer, which the scores are computed on.
    pub answer: String,
    pub correct: bool,
    /// Token range of the answer inside the gold document (the retrieval needle).
    pub needle: Range<usize>,
    /// Per [`DetectMethod::sample_score`] key, `[layers][heads]`.
    pub scores: BTreeMap<String, Vec<Vec<f64>>>,
    /// Why the sample has no scores (the model gave an empty answer); left out of every mean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// The token span of the first accepted answer form found in the gold document's text (the
/// earliest occurrence; case-insensitive), else the whole document.
pub fn answer_needle(subject: &Subject, gold: usize) -> Range<usize> {
    let doc = &subject.prompt.docs[gold];
    let text = subject.prompt.text[doc.chars.clone()].to_lowercase();
    let found = subject
        .sample
        .answers()
        .iter()
        .filter(|a| !a.trim().is_empty())
        .filter_map(|a| {
            let a = a.trim().to_lowercase();
            text.find(&a).map(|at| (at, a.len()))
        })
        .min();
    match found {
        Some((at, len)) => {
            let start = doc.chars.start + at;
            let span = subject.prompt.span_of(start..start + len);
            if span.is_empty() {
                doc.tokens.clone()
            } else {
                span.tokens
            }
        }
        None => doc.tokens.clone(),
    }
}

/// What detection asks the generation of a training sample to record (see
/// [`Subject::generate_recording`]): the attention rows from the question's first token on, which
/// the scores of the shared pass read; nothing when no method needs them.
pub fn detection_recording(prompt: &RagPrompt, methods: &[DetectMethod]) -> Result<Recording> {
    if !methods.iter().any(|m| m.shares_forward()) {
        return Ok(Recording::default());
    }
    let (q_start, _) = qrhead::query_span(prompt)?;
    Ok(Recording {
        attn_from: Some(q_start),
        ..Recording::default()
    })
}

/// Where the attention rows of the shared scores come from.
#[derive(Clone, Copy)]
pub enum RowSource<'a> {
    /// A teacher-forced forward of `prompt ++ answer[..A−1]` run for them.
    TeacherForced,
    /// The answer's own generation ([`detection_recording`]): no second pass over the prompt.
    Recorded(&'a Recorded),
}

/// The scores of `methods` for one prepared sample, keyed by [`DetectMethod::sample_score`], from
/// a teacher-forced forward (see [`detect_with`]).
pub fn detect_sample(
    engine: &Engine,
    subject: &Subject,
    gold: usize,
    needle: &Range<usize>,
    methods: &[DetectMethod],
) -> Result<BTreeMap<String, Vec<Vec<f64>>>> {
    detect_with(
        engine,
        subject,
        gold,
        needle,
        methods,
        RowSource::TeacherForced,
    )
}

/// The scores of `methods` for one prepared sample, keyed by [`DetectMethod::sample_score`]. The
/// scores of the shared pass read the attention rows from `rows`; the two sources give the same
/// scores up to rounding (the same tokens at the same positions), the recorded one without a
/// second forward over the prompt.
pub fn detect_with(
    engine: &Engine,
    subject: &Subject,
    gold: usize,
    needle: &Range<usize>,
    methods: &[DetectMethod],
    rows: RowSource,
) -> Result<BTreeMap<String, Vec<Vec<f64>>>> {
    let mut scores = BTreeMap::new();
    if methods.iter().any(|m| m.shares_forward()) {
        let with_qrhead = methods.contains(&DetectMethod::Score(HeadScore::QrHead));
        scores = shared_scores(engine, subject, gold, needle, with_qrhead, rows)?;
        scores.retain(|k, _| methods.iter().any(|m| m.sample_score() == k));
    }
    for m in methods.iter().filter(|m| !m.shares_forward()) {
        let DetectMethod::Score(h) = *m else { continue };
        scores.insert(
            m.sample_score().to_string(),
            analyze_score(engine, subject, h)?,
        );
    }
    Ok(scores)
}

/// A head score through `analyze`'s runner (its own forwards), the gold document as target.
fn analyze_score(engine: &Engine, subject: &Subject, h: HeadScore) -> Result<Vec<Vec<f64>>> {
    let opts = AnalyzeOptions {
        methods: vec![Method::Heads(h)],
        faithfulness: false,
        ..AnalyzeOptions::default()
    };
    let cache = crate::analysis::cache::ResultCache::disabled();
    let mut report = analyze(engine, subject, &opts, &cache, &mut |_, _, _| true)?;
    report
        .head_scores
        .remove(&h)
        .ok_or_else(|| Error::Analysis(format!("analyze produced no `{}` scores", h.key())))
}

/// Attention rows `q_start..p − 1 + A` of `prompt ++ answer[..A−1]` as
/// `blocks.{l}.attn.hook_pattern` `[1, H, rows, T]`, and (`with_cache`) that input's keys and values
/// (at least its first `q_start` positions, for QRHead's null query).
fn attention_rows(
    engine: &Engine,
    subject: &Subject,
    q_start: usize,
    with_cache: bool,
    source: RowSource,
) -> Result<(Trace, Option<KvCache>)> {
    let ids = subject.teacher_forced_ids();
    match source {
        RowSource::TeacherForced => {
            let p = subject.prompt.ids.len();
            let rows = q_start..p - 1 + subject.answer_ids().len();
            let mut trace = engine.forward(
                Start::Tokens(&engine.ids_tensor(&ids)?),
                None,
                &Hooks {
                    capture: Capture {
                        attn_rows: Some(Positions::Range(rows)),
                        kv_cache: with_cache,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )?;
            let cache = match with_cache {
                true => Some(trace.take_kv_cache()?),
                false => None,
            };
            Ok((trace, cache))
        }
        RowSource::Recorded(rec) => {
            let mut trace = Trace::default();
            for l in 0..engine.arch().num_layers {
                let name = format!("blocks.{l}.attn.hook_pattern");
                trace
                    .activations
                    .insert(name, rec.attention_rows(l, ids.len())?);
            }
            Ok((trace, with_cache.then(|| rec.cache.clone())))
        }
    }
}

/// Summed attention (gold document, answer tokens), retrieval and QRHead from the attention rows
/// from the question's first token to the last answer-predicting one, plus (`with_qrhead`) the
/// null query's few tokens after the shared prefix.
fn shared_scores(
    engine: &Engine,
    subject: &Subject,
    gold: usize,
    needle: &Range<usize>,
    with_qrhead: bool,
    source: RowSource,
) -> Result<BTreeMap<String, Vec<Vec<f64>>>> {
    let prompt = &subject.prompt;
    let (q_start, p) = qrhead::query_span(prompt)?;
    let answer = subject.answer_ids();
    let ids = subject.teacher_forced_ids();
    let null = match with_qrhead {
        true => Some(qrhead::null_query_prompt(engine, subject)?),
        false => None,
    };
    let (trace, cache) = attention_rows(engine, subject, q_start, with_qrhead, source)?;
    let gold_span = prompt.docs[gold].tokens.clone();
    let last = p - 1 - q_start; // the last prompt token's row among the captured ones
    let mut mass = Vec::new();
    let mut retrieval_scores = Vec::new();
    for l in 0..engine.arch().num_layers {
        // [H][rows][T]
        let pattern = trace
            .get(&format!("blocks.{l}.attn.hook_pattern"))?
            .squeeze(0)?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .to_vec3::<f32>()?;
        let span_sum = |row: &[f32], r: &Range<usize>| -> f64 {
            row[r.clone()].iter().map(|&v| v as f64).sum()
        };
        mass.push(
            pattern
                .iter()
                .map(|head| {
                    vec![vec![
                        span_sum(&head[last], &gold_span),
                        span_sum(&head[last], needle),
                    ]]
                })
                .collect::<Vec<_>>(),
        );
        let answer_rows: Vec<Vec<Vec<f32>>> = pattern
            .into_iter()
            .map(|head| head[last..].to_vec())
            .collect();
        retrieval_scores.push(retrieval::copy_paste_scores(
            &answer_rows,
            &ids,
            answer,
            needle,
        ));
    }
    let att = SpanAttention { mass };
    let mut scores = BTreeMap::from([
        (
            "summed_attention".to_string(),
            summed_attention(&att, 0, false),
        ),
        (
            "summed_attention_answer".to_string(),
            summed_attention(&att, 1, false),
        ),
        ("retrieval".to_string(), retrieval_scores),
    ]);
    if let (Some(null), Some(cache)) = (null, cache) {
        let s = qrhead::mean_query_attention(engine, &trace, 0..p - q_start, q_start)?;
        let s_null = qrhead::null_query_attention(engine, &null, &cache, q_start)?;
        let qr = qrhead::calibrated(prompt, &s, &s_null, gold);
        scores.insert("qrhead".to_string(), qr.scores);
    }
    Ok(scores)
}

/// Every head's mean, sd and count over the units that count for a method.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadStats {
    pub method: DetectMethod,
    pub category: String,
    /// Samples the statistics are over.
    pub n: usize,
    /// `[layers][heads]`.
    pub mean: Vec<Vec<f64>>,
    /// Sample standard deviation (n − 1); 0 for fewer than two samples.
    pub sd: Vec<Vec<f64>>,
}

impl HeadStats {
    /// Over the units of `category` that count for `method` (their order does not matter up to
    /// rounding; callers pass them sorted by sample key).
    pub fn over(
        method: DetectMethod,
        category: &str,
        units: &[&DetectUnit],
        shape: (usize, usize),
    ) -> Result<HeadStats> {
        let key = method.sample_score();
        let used: Vec<&Vec<Vec<f64>>> = units
            .iter()
            .filter(|u| u.category == category && method.counts(u.correct))
            .map(|u| {
                u.scores.get(key).ok_or_else(|| {
                    Error::Analysis(format!("detection of `{}` has no `{key}` score", u.sample))
                })
            })
            .collect::<Result<_>>()?;
        let (layers, heads) = shape;
        let n = used.len();
        let mut mean = vec![vec![0.0; heads]; layers];
        let mut sd = vec![vec![0.0; heads]; layers];
        for l in 0..layers {
            for h in 0..heads {
                let xs: Vec<f64> = used.iter().map(|m| m[l][h]).collect();
                let (m, s) = mean_sd(&xs);
                mean[l][h] = m;
                sd[l][h] = s;
            }
        }
        Ok(HeadStats {
            method,
            category: category.to_string(),
            n,
            mean,
            sd,
        })
    }

    /// The `top_n` most important heads, best first; ties go to the lower (layer, head).
    pub fn top(&self, top_n: usize) -> Vec<RankedHead> {
        let sign = self.method.importance_sign();
        let mut all: Vec<(usize, usize)> = (0..self.mean.len())
            .flat_map(|l| (0..self.mean[l].len()).map(move |h| (l, h)))
            .collect();
        all.sort_by(|&(l1, h1), &(l2, h2)| {
            (sign * self.mean[l2][h2])
                .total_cmp(&(sign * self.mean[l1][h1]))
                .then((l1, h1).cmp(&(l2, h2)))
        });
        all.into_iter()
            .take(top_n)
            .map(|(layer, head)| RankedHead {
                layer,
                head,
                mean: self.mean[layer][head],
                sd: self.sd[layer][head],
                n: self.n,
            })
            .collect()
    }

    /// Fraction of heads whose mean importance exceeds 0.1.
    pub fn fraction_above(&self, threshold: f64) -> f64 {
        let sign = self.method.importance_sign();
        let all: Vec<f64> = self.mean.iter().flatten().map(|v| sign * v).collect();
        all.iter().filter(|&&v| v > threshold).count() as f64 / all.len().max(1) as f64
    }
}

/// Mean and sample standard deviation (0 for fewer than two values; 0/0 mean is 0).
pub fn mean_sd(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (0.0, 0.0);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let sd = if xs.len() > 1 {
        (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (mean, sd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_parse_from_their_names_and_keys() {
        for m in [
            "summed-attention",
            "heads:retrieval",
            "qrhead",
            "retrieval-all",
            "summed_attention_answer",
            "arc-jsd",
        ] {
            let parsed: DetectMethod = m.parse().unwrap();
            assert_eq!(
                parsed.key(),
                m.trim_start_matches("heads:").replace('-', "_")
            );
        }
        let err = "attention".parse::<DetectMethod>().unwrap_err();
        assert!(err.contains("unknown method `attention`") && err.contains("qrhead"));
    }

    fn unit(cat: &str, correct: bool, v: f64) -> DetectUnit {
        DetectUnit {
            sample: format!("{cat}-{v}"),
            category: cat.into(),
            answer: String::new(),
            correct,
            needle: 0..1,
            scores: BTreeMap::from([("retrieval".to_string(), vec![vec![v, 1.0 - v]])]),
            skipped: None,
        }
    }

    #[test]
    fn retrieval_counts_only_correct_answers_and_the_all_samples_variant_counts_all() {
        let units = [
            unit("a", true, 0.2),
            unit("a", false, 0.8),
            unit("b", true, 0.5),
        ];
        let refs: Vec<&DetectUnit> = units.iter().collect();
        let wu = HeadStats::over(
            DetectMethod::Score(HeadScore::Retrieval),
            "a",
            &refs,
            (1, 2),
        )
        .unwrap();
        assert_eq!((wu.n, wu.mean[0][0], wu.sd[0][0]), (1, 0.2, 0.0));
        let all = HeadStats::over(DetectMethod::RetrievalAllSamples, "a", &refs, (1, 2)).unwrap();
        assert_eq!(all.n, 2);
        assert!((all.mean[0][0] - 0.5).abs() < 1e-12);
        // sd of {0.2, 0.8} with n − 1: sqrt(0.18) ≈ 0.4243.
        assert!((all.sd[0][0] - 0.18f64.sqrt()).abs() < 1e-12);
        let top = all.top(2);
        assert_eq!((top[0].layer, top[0].head), (0, 0)); // a tie at 0.5 goes to the lower head
        assert_eq!(all.fraction_above(0.1), 1.0);
    }
}
