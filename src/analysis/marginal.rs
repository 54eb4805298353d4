//! Document-alone RAG marginals (Lewis et al. 2020, RAG-Sequence; ANALYSES.md `attr:marginal`): the answer's
//! log-likelihood with each source alone in the prompt, `ℓ_k = log p(answer | question, source k)`,
//! and the posterior `p(k | question, answer) ∝ π_k e^{ℓ_k}` under a uniform prior or the sample's
//! `prior` (one weight per source). Leave-one-out methods measure necessity; this measures
//! sufficiency.

use serde::{Deserialize, Serialize};

use super::scoring::PrefixScorer;
use super::{Progress, Subject};
use crate::engine::Engine;
use crate::prompt::Granularity;
use crate::{Error, Result};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Marginal {
    /// Posterior `p(source | question, answer)`, in source order.
    pub posterior: Vec<f64>,
    /// `log p(answer | question, source k alone)`.
    pub loglik: Vec<f64>,
    /// `log p(answer | question, no documents)`.
    pub loglik_no_documents: f64,
    /// The normalised prior used.
    pub prior: Vec<f64>,
}

/// The sample's `prior` field normalised, or uniform.
fn prior(subject: &Subject, n: usize) -> Result<Vec<f64>> {
    let Some(field) = subject.sample.extra.get("prior") else {
        return Ok(vec![1.0 / n as f64; n]);
    };
    let weights: Option<Vec<f64>> = field
        .as_array()
        .map(|a| a.iter().map(|v| v.as_f64()).collect::<Option<Vec<_>>>())
        .unwrap_or(None);
    match weights {
        Some(w)
            if w.len() == n
                && w.iter().all(|x| *x >= 0.0 && x.is_finite())
                && w.iter().sum::<f64>() > 0.0 =>
        {
            let total: f64 = w.iter().sum();
            Ok(w.iter().map(|x| x / total).collect())
        }
        _ => Err(Error::Analysis(format!(
            "the sample's `prior` must be a list of {n} non-negative numbers with a positive sum \
             (one per source)"
        ))),
    }
}

pub fn marginal(
    engine: &Engine,
    subject: &Subject,
    granularity: Granularity,
    scorer: &PrefixScorer,
    progress: Progress,
) -> Result<Marginal> {
    let n = subject.sources(granularity).len();
    if n == 0 {
        return Err(Error::Analysis("the sample has no sources".into()));
    }
    let prior = prior(subject, n)?;
    let answer = subject.answer_ids();
    let total =
        |ids: &[u32]| -> Result<f64> { Ok(scorer.score(ids)?.token_logprobs(answer).iter().sum()) };
    let mut loglik = Vec::with_capacity(n);
    for k in 0..n {
        let keep: Vec<bool> = (0..n).map(|j| j == k).collect();
        loglik.push(total(&subject.leave_out(engine, &keep, granularity)?.ids)?);
        if !progress(k + 1, n + 1) {
            return Err(Error::Cancelled);
        }
    }
    let none = subject.leave_out(engine, &vec![false; n], granularity)?;
    let loglik_no_documents = total(&none.ids)?;
    progress(n + 1, n + 1);
    // Posterior by log-sum-exp over log π_k + ℓ_k.
    let logits: Vec<f64> = prior
        .iter()
        .zip(&loglik)
        .map(|(p, l)| {
            if *p > 0.0 {
                p.ln() + l
            } else {
                f64::NEG_INFINITY
            }
        })
        .collect();
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = logits.iter().map(|x| (x - max).exp()).sum();
    Ok(Marginal {
        posterior: logits.iter().map(|x| (x - max).exp() / z).collect(),
        loglik,
        loglik_no_documents,
        prior,
    })
}
