//! How faithful a source attribution is to the model (ANALYSES.md "Faithfulness"; the LDS is
//! ContextCite's): the log-probability drop when the top-k sources are removed, the linear datamodeling
//! score (LDS) on held-out random masks, and whether the top source is the gold document.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::context_cite::{ablations, check_masks, random_masks, span_target};
use super::lasso::spearman;
use super::scoring::PrefixScorer;
use super::{ranking, Progress, Subject};
use crate::engine::Engine;
use crate::prompt::{Granularity, RagPrompt};
use crate::{Error, Result};

/// The faithfulness of one attribution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Faithfulness {
    /// `log p(answer) − log p(answer | without the k top sources)` for k = 1, 2, ...
    pub topk_drop: Vec<f64>,
    /// `None` when not computed, or undefined (a constant side).
    pub lds: Option<f64>,
    /// `None` without a gold document.
    pub top1_correct: Option<bool>,
}

/// Held-out masks for LDS (defaults: 32 masks, SplitMix64 seed 1, keep-prob 0.5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LdsConfig {
    pub num_masks: usize,
    pub seed: u64,
    pub keep_prob: f64,
}

impl Default for LdsConfig {
    fn default() -> Self {
        LdsConfig {
            num_masks: 32,
            seed: 1,
            keep_prob: 0.5,
        }
    }
}

impl LdsConfig {
    pub fn masks(&self, n: usize) -> Result<Vec<Vec<bool>>> {
        random_masks(n, self.num_masks, self.keep_prob, self.seed)
    }
}

/// The summed log-probability of the answer after `prompt_ids`.
fn answer_logprob(scorer: &PrefixScorer, prompt_ids: &[u32]) -> Result<f64> {
    Ok(scorer
        .score(prompt_ids)?
        .token_logprobs(scorer.answer())
        .iter()
        .sum())
}

/// `log p(answer) − log p(answer | prompt without the k best-scored sources)` for
/// k = 1 … min(max_k, n − 1). Both terms go through `scorer`, so they share numerics.
pub fn topk_logprob_drop(
    engine: &Engine,
    subject: &Subject,
    scores: &[f64],
    granularity: Granularity,
    scorer: &PrefixScorer,
    max_k: usize,
) -> Result<Vec<f64>> {
    let n = subject.sources(granularity).len();
    if scores.len() != n {
        return Err(Error::Analysis(format!(
            "{} scores for {n} sources",
            scores.len()
        )));
    }
    let order = ranking(scores);
    let k_max = max_k.min(n.saturating_sub(1));
    if k_max == 0 {
        return Ok(Vec::new());
    }
    let full = answer_logprob(scorer, &subject.prompt.ids)?;
    let mut keep = vec![true; n];
    let mut drops = Vec::with_capacity(k_max);
    for &i in &order[..k_max] {
        keep[i] = false;
        let prompt = subject.leave_out(engine, &keep, granularity)?;
        drops.push(full - answer_logprob(scorer, &prompt.ids)?);
    }
    Ok(drops)
}

/// The span targets `y_k = logit(P_k(answer[span]))` under each held-out mask (the quantity
/// ContextCite's surrogate predicts). Progress counts masks.
pub fn heldout_targets(
    engine: &Engine,
    subject: &Subject,
    granularity: Granularity,
    scorer: &PrefixScorer,
    masks: &[Vec<bool>],
    span: Range<usize>,
    progress: Progress,
) -> Result<Vec<f64>> {
    if span.start >= span.end || span.end > subject.answer_ids().len() {
        return Err(Error::Analysis(format!(
            "answer span {span:?} is empty or outside the answer's {} tokens",
            subject.answer_ids().len()
        )));
    }
    let abl = ablations(engine, subject, granularity, masks, scorer, progress)?;
    abl.logit_probs
        .iter()
        .map(|row| span_target(row, span.clone()))
        .collect()
}

/// LDS: Spearman correlation between the linear predictions `Σ_j v_kj score_j + intercept` and the
/// held-out targets. The intercept (ContextCite's; 0 for other methods) does not change a rank
/// correlation and is kept only so the predictions are ContextCite's. NaN when either side is
/// constant (e.g. all scores equal, or every mask alike on the scored sources), as scipy.
pub fn lds(scores: &[f64], intercept: f64, masks: &[Vec<bool>], targets: &[f64]) -> Result<f64> {
    check_masks(masks, scores.len())?;
    if targets.len() != masks.len() {
        return Err(Error::Analysis(format!(
            "{} held-out targets for {} masks",
            targets.len(),
            masks.len()
        )));
    }
    let preds: Vec<f64> = masks
        .iter()
        .map(|m| {
            intercept
                + m.iter()
                    .zip(scores)
                    .filter(|(&v, _)| v)
                    .map(|(_, s)| s)
                    .sum::<f64>()
        })
        .collect();
    Ok(spearman(&preds, targets))
}

/// The document each source belongs to.
fn source_documents(prompt: &RagPrompt, granularity: Granularity) -> Vec<usize> {
    match granularity {
        Granularity::Document => (0..prompt.docs.len()).collect(),
        Granularity::Sentence => prompt
            .sentences
            .iter()
            .enumerate()
            .flat_map(|(d, s)| std::iter::repeat_n(d, s.len()))
            .collect(),
    }
}

/// Is the top-scored source the gold document (or, for sentences, inside it)? `None` without a
/// gold document, without scores, when every score is NaN, or when the scores do not match the
/// prompt's sources.
pub fn top1_correct(
    scores: &[f64],
    granularity: Granularity,
    prompt: &RagPrompt,
    gold: Option<usize>,
) -> Option<bool> {
    let gold = gold?;
    let docs = source_documents(prompt, granularity);
    if scores.len() != docs.len() || scores.iter().all(|s| s.is_nan()) {
        return None;
    }
    let top = *ranking(scores).first()?;
    Some(docs[top] == gold)
}

/// Held-out masks and their targets, computed once and shared by every attribution's LDS.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeldOut {
    pub masks: Vec<Vec<bool>>,
    pub targets: Vec<f64>,
}

impl HeldOut {
    /// `cfg`'s masks over the subject's sources and their targets for the whole answer.
    pub fn compute(
        engine: &Engine,
        subject: &Subject,
        granularity: Granularity,
        scorer: &PrefixScorer,
        cfg: &LdsConfig,
        progress: Progress,
    ) -> Result<HeldOut> {
        let masks = cfg.masks(subject.sources(granularity).len())?;
        let span = 0..subject.answer_ids().len();
        let targets =
            heldout_targets(engine, subject, granularity, scorer, &masks, span, progress)?;
        Ok(HeldOut { masks, targets })
    }
}

/// All three measures for one attribution (`intercept` 0 for methods without one).
#[allow(clippy::too_many_arguments)]
pub fn faithfulness(
    engine: &Engine,
    subject: &Subject,
    granularity: Granularity,
    scorer: &PrefixScorer,
    scores: &[f64],
    intercept: f64,
    heldout: Option<&HeldOut>,
    max_k: usize,
) -> Result<Faithfulness> {
    let topk_drop = topk_logprob_drop(engine, subject, scores, granularity, scorer, max_k)?;
    let lds = match heldout {
        Some(h) => Some(lds(scores, intercept, &h.masks, &h.targets)?).filter(|v| !v.is_nan()),
        None => None,
    };
    let top1_correct = top1_correct(scores, granularity, &subject.prompt, subject.sample.gold());
    Ok(Faithfulness {
        topk_drop,
        lds,
        top1_correct,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::{PromptStyle, Span};

    #[test]
    fn lds_ranks_linear_predictions() {
        let masks = vec![
            vec![true, false, true],
            vec![false, false, true],
            vec![true, true, true],
            vec![false, true, false],
        ];
        let scores = [2.0, -1.0, 0.5];
        // Predictions 2.5, 0.5, 1.5, -1: targets in the same order give 1, reversed −1.
        assert!((lds(&scores, 7.0, &masks, &[9.0, 1.0, 3.0, 0.0]).unwrap() - 1.0).abs() < 1e-12);
        assert!((lds(&scores, 0.0, &masks, &[-9.0, -1.0, -3.0, 0.0]).unwrap() + 1.0).abs() < 1e-12);
        // Constant predictions: undefined.
        assert!(lds(&[0.0; 3], 1.0, &masks, &[1.0, 2.0, 3.0, 4.0])
            .unwrap()
            .is_nan());
        assert!(lds(&scores, 0.0, &masks, &[1.0]).is_err());
        assert!(lds(&[1.0], 0.0, &masks, &[1.0; 4]).is_err());
    }

    fn span() -> Span {
        Span::default()
    }

    /// A prompt whose only structure is 2 documents with 2 and 3 sentences.
    fn prompt() -> RagPrompt {
        RagPrompt {
            format: PromptStyle::Mirage.into(),
            text: String::new(),
            ids: Vec::new(),
            token_offsets: Vec::new(),
            docs: vec![span(), span()],
            sentences: vec![vec![span(), span()], vec![span(), span(), span()]],
            question: span(),
            user_message: String::new(),
            user_message_start: 0,
        }
    }

    #[test]
    fn top1_maps_sentences_to_documents() {
        let p = prompt();
        assert_eq!(
            top1_correct(&[0.1, 0.9], Granularity::Document, &p, Some(1)),
            Some(true)
        );
        assert_eq!(
            top1_correct(&[0.1, 0.9], Granularity::Document, &p, Some(0)),
            Some(false)
        );
        assert_eq!(
            top1_correct(&[0.1, 0.9], Granularity::Document, &p, None),
            None
        );
        let s = [0.0, 0.2, 0.1, 0.5, 0.3];
        assert_eq!(
            top1_correct(&s, Granularity::Sentence, &p, Some(1)),
            Some(true)
        );
        let s = [0.0, 0.7, 0.1, 0.5, 0.3];
        assert_eq!(
            top1_correct(&s, Granularity::Sentence, &p, Some(1)),
            Some(false)
        );
        // NaN ranks last; all-NaN and mismatched lengths are undefined.
        let s = [f64::NAN, 0.0, 0.1, f64::NAN, -1.0];
        assert_eq!(
            top1_correct(&s, Granularity::Sentence, &p, Some(1)),
            Some(true)
        );
        assert_eq!(
            top1_correct(&[f64::NAN; 2], Granularity::Document, &p, Some(1)),
            None
        );
        assert_eq!(
            top1_correct(&[1.0; 3], Granularity::Document, &p, Some(1)),
            None
        );
    }

    #[test]
    fn lds_config_defaults_to_seed_one() {
        let m = LdsConfig::default().masks(4).unwrap();
        assert_eq!(m.len(), 32);
        assert_eq!(m, random_masks(4, 32, 0.5, 1).unwrap());
        assert_ne!(m, random_masks(4, 32, 0.5, 0).unwrap());
    }
}
