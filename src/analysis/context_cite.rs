//! ContextCite (Cohen-Wang, Shah, Georgiev, Mądry, "ContextCite: Attributing Model Generation to
//! Context", NeurIPS 2024; `MadryLab/context-cite`): score the answer under random source
//! ablations and fit a sparse linear surrogate of the answer span's logit-probability on the
//! keep-masks. ANALYSES.md `attr:context-cite` gives the exact definition.
//!
//! The expensive part, one teacher-forced re-score per mask ([`ablations`]), is cached; a fit for
//! any answer sub-span ([`fit`]) needs no model call.
//!
//! Deliberate differences from the released code:
//! * the Lasso is solved to 1e-12 instead of sklearn's default tol 1e-4 (same objective);
//! * masks come from SplitMix64(seed), row by row, instead of numpy `RandomState(i)` per row
//!   (pass explicit masks to reproduce another implementation);
//! * the answer is the fixed generated (or given) ids, never re-tokenised text;
//! * sources are headscope's documents or sentences ([`Granularity`]), in a Mirage-style prompt by
//!   default.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::cache::{CacheKey, ResultCache};
use super::divergence::span_logit;
use super::lasso::lasso_standardized;
use super::rng::SplitMix64;
use super::scoring::{PrefixScorer, ScoringStats};
use super::{Progress, Subject};
use crate::engine::Engine;
use crate::prompt::Granularity;
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContextCiteConfig {
    pub num_ablations: usize,
    /// Probability that a source is kept in a random mask.
    pub keep_prob: f64,
    pub seed: u64,
    pub lasso_alpha: f64,
    /// Explicit keep-masks (`[N][sources]`), used instead of the seeded ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masks: Option<Vec<Vec<bool>>>,
}

impl Default for ContextCiteConfig {
    fn default() -> Self {
        ContextCiteConfig {
            num_ablations: 64,
            keep_prob: 0.5,
            seed: 0,
            lasso_alpha: 0.01,
            masks: None,
        }
    }
}

impl ContextCiteConfig {
    /// The keep-masks over `n` sources: the explicit ones (checked), else `num_ablations` drawn
    /// from SplitMix64(seed).
    pub fn masks(&self, n: usize) -> Result<Vec<Vec<bool>>> {
        match &self.masks {
            Some(m) => {
                check_masks(m, n)?;
                Ok(m.clone())
            }
            None => random_masks(n, self.num_ablations, self.keep_prob, self.seed),
        }
    }
}

/// `rows` masks over `n` sources, each entry kept with probability `keep_prob` (ANALYSES.md:
/// `keep = u < keep_prob`, row by row).
pub fn random_masks(n: usize, rows: usize, keep_prob: f64, seed: u64) -> Result<Vec<Vec<bool>>> {
    if !(0.0..=1.0).contains(&keep_prob) {
        return Err(Error::Analysis(format!(
            "keep probability must be in [0, 1], got {keep_prob}"
        )));
    }
    if rows == 0 {
        return Err(Error::Analysis(
            "at least one ablation mask is needed".into(),
        ));
    }
    Ok(SplitMix64::new(seed).masks(rows, n, keep_prob))
}

/// Checks there is at least one mask and every mask has one entry per source.
pub fn check_masks(masks: &[Vec<bool>], n: usize) -> Result<()> {
    if masks.is_empty() {
        return Err(Error::Analysis(
            "at least one ablation mask is needed".into(),
        ));
    }
    if let Some((k, m)) = masks.iter().enumerate().find(|(_, m)| m.len() != n) {
        return Err(Error::Analysis(format!(
            "mask {k} has {} entries for {n} sources",
            m.len()
        )));
    }
    Ok(())
}

/// The answer's token logit-probabilities under every mask.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContextCiteAblations {
    pub granularity: Granularity,
    /// `[N][sources]`, `true` = kept.
    pub masks: Vec<Vec<bool>>,
    /// `[N][A]`: `ℓ_{k,t} = z_{a_t} − logsumexp_{v≠a_t} z_v` under mask `k`.
    pub logit_probs: Vec<Vec<f64>>,
    /// Model work done (zero when the ablations came from the cache).
    #[serde(skip_deserializing)]
    pub stats: ScoringStats,
}

impl ContextCiteAblations {
    pub fn answer_len(&self) -> usize {
        self.logit_probs.first().map_or(0, Vec::len)
    }
}

/// Scores the answer after the prompt with each mask's sources (one [`PrefixScorer::score`] per
/// mask, reusing the keys and values `scorer` holds up to the first changed token). `scorer`
/// must score `subject`'s answer. Progress counts masks.
pub fn ablations(
    engine: &Engine,
    subject: &Subject,
    granularity: Granularity,
    masks: &[Vec<bool>],
    scorer: &PrefixScorer,
    progress: Progress,
) -> Result<ContextCiteAblations> {
    let n = subject.sources(granularity).len();
    if n == 0 {
        return Err(Error::Analysis(
            "the sample has no sources to attribute".into(),
        ));
    }
    check_masks(masks, n)?;
    let answer = subject.answer_ids();
    if scorer.answer() != answer {
        return Err(Error::Analysis(
            "the scorer was built for a different answer than the subject's".into(),
        ));
    }
    let before = scorer.stats();
    let mut logit_probs = Vec::with_capacity(masks.len());
    for (k, keep) in masks.iter().enumerate() {
        let prompt = subject.leave_out(engine, keep, granularity)?;
        logit_probs.push(scorer.score(&prompt.ids)?.logit_probs(answer));
        if !progress(k + 1, masks.len()) {
            return Err(Error::Cancelled);
        }
    }
    let after = scorer.stats();
    Ok(ContextCiteAblations {
        granularity,
        masks: masks.to_vec(),
        logit_probs,
        stats: ScoringStats {
            forwards: after.forwards - before.forwards,
            tokens: after.tokens - before.tokens,
        },
    })
}

/// [`ablations`] for `cfg`'s masks through `cache` (keyed by the masks themselves, so explicit
/// and seeded masks share entries). Returns whether it was a cache hit.
pub fn cached_ablations(
    engine: &Engine,
    subject: &Subject,
    granularity: Granularity,
    cfg: &ContextCiteConfig,
    scorer: &PrefixScorer,
    cache: &ResultCache,
    progress: Progress,
) -> Result<(ContextCiteAblations, bool)> {
    let masks = cfg.masks(subject.sources(granularity).len())?;
    let params = serde_json::json!({ "granularity": granularity, "masks": masks });
    let key = CacheKey::new(engine, subject, "context-cite.ablations", params)?;
    cache.get_or_compute(&key, || {
        ablations(engine, subject, granularity, &masks, scorer, progress)
    })
}

/// A ContextCite attribution for one answer span.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContextCiteResult {
    /// One score per source, in source order: the surrogate's change in the span's logit
    /// `y = log P − log(1 − P)` when the source is kept.
    pub scores: Vec<f64>,
    /// The surrogate's prediction with every source removed.
    pub intercept: f64,
    /// Answer tokens `[s, e)` the fit explains.
    pub span: Range<usize>,
    pub alpha: f64,
    /// Whether the Lasso met its 1e-12 stopping rule.
    pub converged: bool,
}

/// `log σ(ℓ)`, stable for large |ℓ|.
pub fn log_sigmoid(l: f64) -> f64 {
    if l >= 0.0 {
        -(-l).exp().ln_1p()
    } else {
        l - l.exp().ln_1p()
    }
}

/// The regression target of a span: `y = logit(Π_t p_t)` from the token logit-probabilities
/// (ContextCite's `aggregate_logit_probs`).
pub fn span_target(logit_probs: &[f64], span: Range<usize>) -> Result<f64> {
    let row = logit_probs.get(span.clone()).ok_or_else(|| {
        Error::Analysis(format!(
            "answer span {span:?} is outside the answer's {} tokens",
            logit_probs.len()
        ))
    })?;
    Ok(span_logit(row.iter().map(|&l| log_sigmoid(l)).sum()))
}

/// Fits the surrogate on the answer tokens `span` (ANALYSES.md): `Y_k = y_k/(e − s)` on the
/// standardised masks, scores and intercept mapped back to the mask scale and multiplied by
/// `e − s`. No model call.
pub fn fit(
    ablations: &ContextCiteAblations,
    span: Range<usize>,
    alpha: f64,
) -> Result<ContextCiteResult> {
    let len = span.end.saturating_sub(span.start);
    if len == 0 || span.end > ablations.answer_len() {
        return Err(Error::Analysis(format!(
            "answer span {span:?} is empty or outside the answer's {} tokens",
            ablations.answer_len()
        )));
    }
    if ablations.logit_probs.len() != ablations.masks.len() {
        return Err(Error::Analysis(
            "ablations: masks and scores differ in count".into(),
        ));
    }
    let y = ablations
        .logit_probs
        .iter()
        .map(|row| Ok(span_target(row, span.clone())? / len as f64))
        .collect::<Result<Vec<f64>>>()?;
    let x: Vec<Vec<f64>> = ablations
        .masks
        .iter()
        .map(|m| m.iter().map(|&b| f64::from(u8::from(b))).collect())
        .collect();
    let lasso = lasso_standardized(&x, &y, alpha)?;
    let scale = len as f64;
    Ok(ContextCiteResult {
        scores: lasso.weights.iter().map(|w| w * scale).collect(),
        intercept: lasso.intercept * scale,
        span,
        alpha,
        converged: lasso.converged,
    })
}

/// ContextCite over the whole answer: the (cached) ablations, then [`fit`].
pub fn context_cite(
    engine: &Engine,
    subject: &Subject,
    granularity: Granularity,
    cfg: &ContextCiteConfig,
    scorer: &PrefixScorer,
    cache: &ResultCache,
    progress: Progress,
) -> Result<ContextCiteResult> {
    let (abl, _) = cached_ablations(engine, subject, granularity, cfg, scorer, cache, progress)?;
    fit(&abl, 0..abl.answer_len(), cfg.lasso_alpha)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ablations_of(masks: Vec<Vec<bool>>, logit_probs: Vec<Vec<f64>>) -> ContextCiteAblations {
        ContextCiteAblations {
            granularity: Granularity::Document,
            masks,
            logit_probs,
            stats: ScoringStats::default(),
        }
    }

    #[test]
    fn log_sigmoid_is_stable() {
        for l in [-800.0, -30.0, -1.0, 0.0, 0.5, 30.0, 800.0] {
            let want = -(1.0 + f64::exp(-l)).ln();
            let got = log_sigmoid(l);
            assert!(got.is_finite() && got <= 0.0);
            if want.is_finite() {
                assert!((got - want).abs() <= 1e-12 * want.abs().max(1.0), "{l}");
            }
        }
        assert_eq!(log_sigmoid(-800.0), -800.0);
    }

    /// One token: the span target is the token's logit-probability itself.
    #[test]
    fn one_token_target_is_its_logit_prob() {
        for l in [-5.0, -0.3, 0.0, 2.0, 9.0] {
            let y = span_target(&[1.0, l, 3.0], 1..2).unwrap();
            assert!((y - l).abs() < 1e-9, "{l}: {y}");
        }
        assert!(span_target(&[1.0], 0..2).is_err());
    }

    /// Targets exactly linear in the masks are recovered (α = 0): the scores are the per-source
    /// effects on the span logit and the intercept the all-removed value, in the span's scale.
    #[test]
    fn recovers_a_linear_model() {
        let effects = [1.5, -0.5, 0.0, 2.0];
        let base = -1.0;
        let masks = random_masks(4, 40, 0.5, 3).unwrap();
        // Two tokens whose span logit is y = base + Σ v_j e_j: make token 0 certain (ℓ huge) so
        // that y equals token 1's logit-probability.
        let lp: Vec<Vec<f64>> = masks
            .iter()
            .map(|m| {
                let y = base
                    + m.iter()
                        .zip(&effects)
                        .map(|(&v, e)| if v { *e } else { 0.0 })
                        .sum::<f64>();
                vec![60.0, y]
            })
            .collect();
        let abl = ablations_of(masks, lp);
        let r = fit(&abl, 1..2, 0.0).unwrap();
        assert!(r.converged);
        for (s, e) in r.scores.iter().zip(&effects) {
            assert!((s - e).abs() < 1e-9, "{s} vs {e}");
        }
        assert!((r.intercept - base).abs() < 1e-9);
        // The whole answer has almost the same target (token 0 is nearly certain), now spread
        // over two tokens and multiplied back by 2.
        let r2 = fit(&abl, 0..2, 0.0).unwrap();
        for (s, e) in r2.scores.iter().zip(&effects) {
            assert!((s - e).abs() < 1e-6);
        }
    }

    /// The fit is sklearn's pipeline on `Y = y/(e−s)`, scaled back by `e − s`.
    #[test]
    fn fit_is_the_scaled_lasso() {
        let masks = random_masks(3, 16, 0.5, 0).unwrap();
        let lp: Vec<Vec<f64>> = (0..16)
            .map(|k| vec![0.3 * k as f64 - 2.0, ((k * 7) % 5) as f64 - 1.0, 0.5])
            .collect();
        let abl = ablations_of(masks.clone(), lp.clone());
        let r = fit(&abl, 0..3, 0.01).unwrap();
        let x: Vec<Vec<f64>> = masks
            .iter()
            .map(|m| m.iter().map(|&b| b as u8 as f64).collect())
            .collect();
        let y: Vec<f64> = lp
            .iter()
            .map(|row| span_target(row, 0..3).unwrap() / 3.0)
            .collect();
        let l = lasso_standardized(&x, &y, 0.01).unwrap();
        for (s, w) in r.scores.iter().zip(&l.weights) {
            assert!((s - 3.0 * w).abs() < 1e-12);
        }
        assert!((r.intercept - 3.0 * l.intercept).abs() < 1e-12);
        assert_eq!(r.span, 0..3);
    }

    #[test]
    fn rejects_bad_spans_and_masks() {
        let abl = ablations_of(
            vec![vec![true], vec![false]],
            vec![vec![1.0, 2.0], vec![0.0, 1.0]],
        );
        assert!(fit(&abl, 1..1, 0.01).is_err());
        assert!(fit(&abl, 0..3, 0.01).is_err());
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = 2..1;
        assert!(fit(&abl, backwards, 0.01).is_err());
        assert!(fit(&abl, 0..2, -1.0).is_err());
        assert!(check_masks(&[], 2).is_err());
        assert!(check_masks(&[vec![true, false], vec![true]], 2).is_err());
        assert!(random_masks(3, 4, 1.5, 0).is_err());
        assert!(random_masks(3, 0, 0.5, 0).is_err());
        let cfg = ContextCiteConfig {
            masks: Some(vec![vec![true; 3]]),
            ..Default::default()
        };
        assert!(cfg.masks(2).is_err());
        assert_eq!(cfg.masks(3).unwrap(), vec![vec![true; 3]]);
    }

    #[test]
    fn seeded_masks_follow_splitmix64() {
        let m = ContextCiteConfig::default().masks(5).unwrap();
        assert_eq!(m.len(), 64);
        let mut r = SplitMix64::new(0);
        for row in &m {
            for &keep in row {
                assert_eq!(keep, r.next_f64() < 0.5);
            }
        }
        // Roughly half kept.
        let kept = m.iter().flatten().filter(|&&b| b).count();
        assert!((100..220).contains(&kept), "{kept}");
    }
}
