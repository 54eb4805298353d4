//! MIRAGE (Qi, Sarti, Fernández, Bisazza, "Model Internals-based Answer Attribution for Trustworthy
//! Retrieval-Augmented Generation", EMNLP 2024), built on inseq's `attribute-context` (PECoRe):
//!
//! 1. **CTI** — context-sensitive tokens: `cti_t = KL(P_noctx,t ‖ P_ctx,t)` between the answer's
//!    teacher-forced next-token distributions without and with the documents.
//! 2. **CCI** — contextual cues: for every token with `cti_t ≥ mean(cti)`, the gradient of
//!    `f_t = log P(a_t | ctx) − log P(c_t | ctx)` (`log P(a_t | ctx)` when `c_t = a_t`) w.r.t. the
//!    input embeddings, one L2 norm per input token.
//! 3. **Citation** ([`cite`], no model call) — per answer sentence, the filtered CCI scores of its
//!    tokens with `cti_t ≥ mean + CTI·std` summed per document; the best documents are cited.
//!
//! ANALYSES.md (`attr:mirage`) has the exact definitions. Deliberate differences from the released
//! code:
//! * the contrast token `c_t` is the greedy `argmax P_noctx,t`, not a sample (deterministic);
//! * prompt tokens are mapped to documents and sentences by the character offsets of
//!   [`RagPrompt`](crate::prompt::RagPrompt)'s spans, not by the `'<0x0A>'` token string (which
//!   BPE vocabularies never produce); whitespace-only separator tokens between documents belong to
//!   none;
//! * the answer ids (generated or given) are kept, never re-tokenised; answer tokens are mapped to
//!   [`split_sentences`] sentences by decoding prefixes, not by re-tokenising each sentence;
//! * the cited answer keeps the answer text between sentences as it is (MIRAGE re-joins sentences
//!   with spaces) and a sentence without citations gets no prefix.

use std::ops::Range;

use candle_core::{DType, Device, IndexOp, D};
use serde::{Deserialize, Serialize};

use super::cache::{CacheKey, ResultCache};
use super::divergence::Divergence;
use super::scoring::PrefixScorer;
use super::{ranking, Progress, Subject};
use crate::engine::Engine;
use crate::prompt::{split_sentences, Granularity};
use crate::{Error, Result};

/// MIRAGE's citation thresholds (`--CTI`, `--CCI`, `--at_most_citations`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MirageConfig {
    /// Answer tokens cite when `cti_t ≥ mean(cti) + cti·std(cti)` (population std).
    pub cti: f64,
    /// Filter of each token's document scores: `< 0` keeps scores within `|cci|` % of the range
    /// below the maximum, `0` keeps scores ≥ the mean, `> 0` keeps the `cci` largest.
    pub cci: f64,
    pub at_most_citations: usize,
}

impl Default for MirageConfig {
    fn default() -> Self {
        MirageConfig {
            cti: 1.0,
            cci: -5.0,
            at_most_citations: 3,
        }
    }
}

/// The model-dependent part of MIRAGE (cacheable; [`cite`] re-thresholds it without the model).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MirageScores {
    /// Per answer token, `KL(P_noctx ‖ P_ctx)`.
    pub cti: Vec<f64>,
    /// Per answer token, `argmax P_noctx` (first index on ties).
    pub contrast_ids: Vec<u32>,
    /// Answer tokens with `cti ≥ mean(cti)`, ascending: those with CCI scores.
    pub selected: Vec<usize>,
    /// Per selected token `t`, the value of `f_t` (from the differentiable forward).
    pub objective: Vec<f64>,
    /// Per selected token `t`, `‖∂f_t/∂e_j‖₂` for **every** input position `j` of
    /// `prompt ++ a_0 … a_{t−1}` (length `P + t`): the prompt, documents included, then the answer
    /// prefix. `e_j` is the embedding-table row (before Gemma 2's scale).
    pub cci: Vec<Vec<f64>>,
    /// Model work done: teacher-forced and differentiable forwards, backward passes (zero when the
    /// scores came from the cache).
    #[serde(default, skip_deserializing)]
    pub forwards: usize,
    #[serde(default, skip_deserializing)]
    pub backwards: usize,
}

/// One answer sentence and the documents it cites.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MirageSentence {
    pub text: String,
    /// Byte range in [`MirageResult::answer`].
    pub chars: Range<usize>,
    /// The answer tokens whose first non-whitespace byte lies in the sentence (whitespace-only
    /// tokens between sentences belong to none).
    pub tokens: Range<usize>,
    /// Per document, the summed filtered CCI scores of the sentence's cited tokens.
    pub doc_scores: Vec<f64>,
    /// Cited documents (0-based), best first; written 1-based in the cited answer.
    pub cited: Vec<usize>,
}

/// MIRAGE's citations and per-source attribution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MirageResult {
    pub granularity: Granularity,
    pub config: MirageConfig,
    /// One score per source, in source order: the summed filtered CCI scores of the source's
    /// tokens over all answer sentences.
    pub scores: Vec<f64>,
    /// The answer decoded from its ids.
    pub answer: String,
    /// The answer with `[i][j] ` before each sentence that cites documents i, j (1-based).
    pub cited_answer: String,
    pub sentences: Vec<MirageSentence>,
    /// Per answer token, its CTI score and the greedy contextless contrast token.
    pub cti: Vec<f64>,
    pub contrast_ids: Vec<u32>,
    /// Tokens with `cti ≥ mean(cti)` (those with CCI scores).
    pub selected: Vec<usize>,
    /// `mean(cti) + CTI·std(cti)`; selected tokens at or above it cite.
    pub cti_threshold: f64,
    pub forwards: usize,
    pub backwards: usize,
    /// Whether the scores came from the cache.
    pub cached: bool,
}

/// Computes CTI and CCI: 2 teacher-forced runs (the full prompt, taken from the subject's answer
/// state when it has one, and the prompt with every document removed, reusing the shared
/// prefix), then one differentiable forward + backward per selected token. Progress counts the
/// selected tokens.
pub fn scores(engine: &Engine, subject: &Subject, progress: Progress) -> Result<MirageScores> {
    let n_docs = subject.prompt.docs.len();
    if n_docs == 0 {
        return Err(Error::Analysis(
            "MIRAGE needs a sample with documents".into(),
        ));
    }
    let answer = subject.answer_ids();
    let prompt = &subject.prompt.ids;
    let scorer = PrefixScorer::for_subject(engine, subject)?;
    let noctx = subject.leave_out(engine, &vec![false; n_docs], Granularity::Document)?;
    let noctx_logits = scorer.score(&noctx.ids)?;
    let mut cti = Vec::with_capacity(answer.len());
    let mut contrast_ids = Vec::with_capacity(answer.len());
    for (p, q) in noctx_logits.rows.iter().zip(&scorer.base().rows) {
        cti.push(Divergence::Kl.between(p, q));
        contrast_ids.push(argmax(p));
    }
    let mean = mean(&cti);
    let selected: Vec<usize> = (0..cti.len()).filter(|&t| cti[t] >= mean).collect();

    let n = selected.len();
    if !progress(0, n) {
        return Err(Error::Cancelled);
    }
    let mut objective = Vec::with_capacity(n);
    let mut cci = Vec::with_capacity(n);
    for (i, &t) in selected.iter().enumerate() {
        let mut ids = prompt.clone();
        ids.extend_from_slice(&answer[..t]);
        let (a, c) = (answer[t] as usize, contrast_ids[t] as usize);
        let g = engine.embedding_gradient(&engine.ids_tensor(&ids)?, |logits| {
            let lp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
            // When the contrast is the answer token itself, inseq's second term comes from
            // the contextless run and has no gradient: only log P(a_t | ctx) remains.
            Ok(if a == c {
                lp.i((0, a))?
            } else {
                (lp.i((0, a))? - lp.i((0, c))?)?
            })
        })?;
        let norms = g
            .grad
            .to_dtype(DType::F64)?
            .sqr()?
            .sum(D::Minus1)?
            .sqrt()?
            .i(0)?
            .to_device(&Device::Cpu)?
            .to_vec1::<f64>()?;
        objective.push(g.value);
        cci.push(norms);
        if !progress(i + 1, n) {
            return Err(Error::Cancelled);
        }
    }
    Ok(MirageScores {
        cti,
        contrast_ids,
        selected,
        objective,
        cci,
        forwards: scorer.stats().forwards + n,
        backwards: n,
    })
}

/// [`scores`] through `cache` (they depend on nothing but the model, the sample and the answer).
/// Returns whether it was a cache hit.
pub fn cached_scores(
    engine: &Engine,
    subject: &Subject,
    cache: &ResultCache,
    progress: Progress,
) -> Result<(MirageScores, bool)> {
    let params = serde_json::json!({ "contrast": "greedy", "selection": "mean" });
    let key = CacheKey::new(engine, subject, "mirage.scores", params)?;
    cache.get_or_compute(&key, || scores(engine, subject, progress))
}

/// Turns scores into citations and per-source attributions (MIRAGE's `--only_cite`): no model
/// call, the engine is used for its tokenizer only.
pub fn cite(
    scores: &MirageScores,
    subject: &Subject,
    engine: &Engine,
    granularity: Granularity,
    cfg: &MirageConfig,
) -> Result<MirageResult> {
    let answer_ids = subject.answer_ids();
    let prompt = &subject.prompt;
    let p = prompt.ids.len();
    check_scores(scores, answer_ids.len(), p)?;
    let cti_threshold = mean(&scores.cti) + cfg.cti * std(&scores.cti);

    // Every document token, in order: the positions the CCI filter looks at.
    let doc_tokens: Vec<usize> = prompt
        .docs
        .iter()
        .flat_map(|s| s.tokens.clone())
        .filter(|&j| j < p)
        .collect();
    // Per selected token that cites, its filtered scores over the prompt positions.
    let filtered: Vec<Option<Vec<f64>>> = scores
        .selected
        .iter()
        .zip(&scores.cci)
        .map(|(&t, row)| {
            (scores.cti[t] >= cti_threshold).then(|| filter_scores(row, &doc_tokens, cfg.cci, p))
        })
        .collect();

    let answer = engine.decode(answer_ids)?;
    let anchors = token_anchors(engine, answer_ids, &answer)?;
    let mut total = vec![0.0; p];
    let mut sentences = Vec::new();
    for chars in split_sentences(&answer) {
        let tokens = anchors.partition_point(|&a| a < chars.start)
            ..anchors.partition_point(|&a| a < chars.end);
        let mut acc = vec![0.0; p];
        for (i, &t) in scores.selected.iter().enumerate() {
            if let (true, Some(s)) = (tokens.contains(&t), &filtered[i]) {
                acc.iter_mut().zip(s).for_each(|(a, x)| *a += x);
            }
        }
        let doc_scores: Vec<f64> = prompt
            .docs
            .iter()
            .map(|d| acc.get(d.tokens.clone()).map_or(0.0, |v| v.iter().sum()))
            .collect();
        let mut cited: Vec<usize> = ranking(&doc_scores)
            .into_iter()
            .filter(|&d| doc_scores[d] > 0.0)
            .collect();
        cited.truncate(cfg.at_most_citations);
        total.iter_mut().zip(&acc).for_each(|(t, a)| *t += a);
        sentences.push(MirageSentence {
            text: answer[chars.clone()].to_string(),
            chars,
            tokens,
            doc_scores,
            cited,
        });
    }

    let scores_per_source = prompt
        .sources(granularity)
        .iter()
        .map(|s| total.get(s.tokens.clone()).map_or(0.0, |v| v.iter().sum()))
        .collect();
    Ok(MirageResult {
        granularity,
        config: *cfg,
        scores: scores_per_source,
        cited_answer: cited_answer(&answer, &sentences),
        answer,
        sentences,
        cti: scores.cti.clone(),
        contrast_ids: scores.contrast_ids.clone(),
        selected: scores.selected.clone(),
        cti_threshold,
        forwards: scores.forwards,
        backwards: scores.backwards,
        cached: false,
    })
}

/// MIRAGE: the (cached) scores, then [`cite`].
pub fn mirage(
    engine: &Engine,
    subject: &Subject,
    granularity: Granularity,
    cfg: &MirageConfig,
    cache: &ResultCache,
    progress: Progress,
) -> Result<MirageResult> {
    let (scores, cached) = cached_scores(engine, subject, cache, progress)?;
    let mut result = cite(&scores, subject, engine, granularity, cfg)?;
    result.cached = cached;
    Ok(result)
}

/// Scores that do not fit the subject (a stale or foreign cache entry) are an error, not a panic.
fn check_scores(s: &MirageScores, answer_len: usize, prompt_len: usize) -> Result<()> {
    let ok = s.cti.len() == answer_len
        && s.contrast_ids.len() == answer_len
        && s.cci.len() == s.selected.len()
        && s.selected
            .iter()
            .zip(&s.cci)
            .all(|(&t, row)| t < answer_len && row.len() >= prompt_len);
    if ok {
        Ok(())
    } else {
        Err(Error::Analysis(
            "MIRAGE scores do not match this prompt and answer".into(),
        ))
    }
}

/// MIRAGE's CCI filter on the document tokens' scores `s`: scores below the threshold become 0.
/// Returned over all `p` prompt positions (0 outside documents).
fn filter_scores(row: &[f64], doc_tokens: &[usize], cci: f64, p: usize) -> Vec<f64> {
    let mut out = vec![0.0; p];
    let s: Vec<f64> = doc_tokens.iter().map(|&j| row[j]).collect();
    if s.is_empty() {
        return out;
    }
    let (min, max) = s
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
    let thr = if cci < 0.0 {
        max - (cci.abs() / 100.0) * (max - min)
    } else if cci == 0.0 {
        mean(&s)
    } else {
        let mut sorted = s.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let k = (cci.round() as usize).clamp(1, sorted.len());
        sorted[k - 1]
    };
    for (&j, &x) in doc_tokens.iter().zip(&s) {
        out[j] = if x < thr { 0.0 } else { x };
    }
    out
}

/// Per answer token, the byte offset in `answer` of its first non-whitespace byte (its start when
/// it is all whitespace), from the lengths of decoded prefixes; non-decreasing.
fn token_anchors(engine: &Engine, ids: &[u32], answer: &str) -> Result<Vec<usize>> {
    let mut starts = Vec::with_capacity(ids.len() + 1);
    let mut prev = 0;
    for t in 0..=ids.len() {
        // A prefix that ends inside a multi-byte character decodes to a replacement character:
        // clamp to the full text and keep the offsets monotone.
        let len = if t == ids.len() {
            answer.len()
        } else {
            engine.decode(&ids[..t])?.len().min(answer.len())
        };
        prev = len.max(prev);
        starts.push(prev);
    }
    Ok(starts
        .windows(2)
        .map(|w| {
            let piece = answer.get(w[0]..w[1]).unwrap_or("");
            w[0] + piece.find(|c: char| !c.is_whitespace()).unwrap_or(0)
        })
        .collect())
}

/// The answer with `[i][j] ` (1-based) inserted before each sentence that cites documents.
fn cited_answer(answer: &str, sentences: &[MirageSentence]) -> String {
    let mut out = String::with_capacity(answer.len() + 8 * sentences.len());
    let mut at = 0;
    for s in sentences.iter().filter(|s| !s.cited.is_empty()) {
        out.push_str(&answer[at..s.chars.start]);
        for d in &s.cited {
            out.push_str(&format!("[{}]", d + 1));
        }
        out.push(' ');
        at = s.chars.start;
    }
    out.push_str(&answer[at..]);
    out
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

fn mean(x: &[f64]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    x.iter().sum::<f64>() / x.len() as f64
}

/// Population standard deviation (numpy's default, as MIRAGE uses).
fn std(x: &[f64]) -> f64 {
    let m = mean(x);
    mean(&x.iter().map(|v| (v - m).powi(2)).collect::<Vec<_>>()).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cci_filter_follows_mirage() {
        let row = [9.0, 1.0, 2.0, 3.0, 10.0, 4.0];
        let docs = [1, 2, 3, 4, 5]; // position 0 is outside every document
                                    // Top 50 % of the range [1, 10]: ≥ 5.5.
        assert_eq!(
            filter_scores(&row, &docs, -50.0, 6),
            vec![0.0, 0.0, 0.0, 0.0, 10.0, 0.0]
        );
        // Mean 4: ≥ 4.
        assert_eq!(
            filter_scores(&row, &docs, 0.0, 6),
            vec![0.0, 0.0, 0.0, 0.0, 10.0, 4.0]
        );
        // The two largest.
        assert_eq!(
            filter_scores(&row, &docs, 2.0, 6),
            vec![0.0, 0.0, 0.0, 0.0, 10.0, 4.0]
        );
        assert_eq!(filter_scores(&row, &[], -5.0, 6), vec![0.0; 6]);
    }

    #[test]
    fn cited_answer_inserts_markers_before_sentences() {
        let answer = "Paris is big.  It has rivers.\nThe end.";
        let mut sentences: Vec<MirageSentence> = split_sentences(answer)
            .into_iter()
            .map(|chars| MirageSentence {
                text: answer[chars.clone()].into(),
                chars,
                tokens: 0..0,
                doc_scores: vec![],
                cited: vec![],
            })
            .collect();
        sentences[0].cited = vec![1, 0];
        sentences[2].cited = vec![2];
        assert_eq!(
            cited_answer(answer, &sentences),
            "[2][1] Paris is big.  It has rivers.\n[3] The end."
        );
    }

    #[test]
    fn population_std() {
        assert!((std(&[1.0, 3.0]) - 1.0).abs() < 1e-12);
        assert_eq!(std(&[]), 0.0);
    }
}
