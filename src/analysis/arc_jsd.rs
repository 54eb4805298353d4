//! ARC-JSD (Li et al., "Attributing Response to Context: A Jensen–Shannon Divergence Driven
//! Mechanistic Study of Context Attribution in RAG", arXiv 2505.16415).
//!
//! * **Source attribution** (ANALYSES.md `attr:arc-jsd`): the divergence between the answer's next-token distributions
//!   with the full context and with one source left out, summed over answer tokens. Each leave-out
//!   run reuses the full prompt's keys and values up to the first token that differs.
//! * **Head and MLP localisation** (ANALYSES.md `heads:arc-jsd`): each head's direct output (`z_h · W_O[:, h]ᵀ`) and each
//!   MLP's output decoded by the logit lens, full context vs context without the top source, the
//!   divergence summed over answer tokens.
//!
//! Deliberate differences from the released code: the standard bounded JSD by
//! default (`Divergence::JsdArcCode` reproduces the code's `½KL(M‖P)+½KL(M‖Q)`); the correct
//! per-head `W_O` column slices instead of the code's reshape; the composed context for both runs
//! (no whitespace asymmetry); generated ids, not re-tokenised text; f32 logits with f64 sums.

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::divergence::{log_softmax, Divergence};
use super::scoring::{PrefixScorer, ScoringStats};
use super::{ranking, Progress, Subject};
use crate::engine::{Capture, Engine};
use crate::prompt::Granularity;
use crate::{Error, Result};

/// Leave-one-out divergence per source.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArcJsdAttribution {
    pub divergence: Divergence,
    /// One score per source, in source order.
    pub scores: Vec<f64>,
    /// `[source][answer token]`: the divergence at each answer position (sums to `scores`).
    pub per_token: Vec<Vec<f64>>,
    /// Index of the top source (the one ARC-JSD attributes the answer to).
    pub top: usize,
    pub stats: ScoringStats,
}

/// ARC-JSD source attribution (ANALYSES.md `attr:arc-jsd`): `n` leave-one-out re-scores against `scorer`'s base.
pub fn attribution(
    engine: &Engine,
    subject: &Subject,
    granularity: Granularity,
    divergence: Divergence,
    scorer: &PrefixScorer,
    progress: Progress,
) -> Result<ArcJsdAttribution> {
    let n = subject.sources(granularity).len();
    if n == 0 {
        return Err(Error::Analysis(
            "the sample has no sources to attribute".into(),
        ));
    }
    let before = scorer.stats();
    let base: Vec<Vec<f64>> = scorer
        .base()
        .rows
        .par_iter()
        .map(|r| log_softmax(r))
        .collect();
    let mut per_token = Vec::with_capacity(n);
    for i in 0..n {
        let keep: Vec<bool> = (0..n).map(|j| j != i).collect();
        let prompt = subject.leave_out(engine, &keep, granularity)?;
        let logits = scorer.score(&prompt.ids)?;
        per_token.push(
            logits
                .rows
                .par_iter()
                .zip(&base)
                .map(|(row, lp)| divergence.between_log_probs(lp, &log_softmax(row)))
                .collect::<Vec<f64>>(),
        );
        if !progress(i + 1, n) {
            return Err(Error::Cancelled);
        }
    }
    let scores: Vec<f64> = per_token.iter().map(|v| v.iter().sum()).collect();
    let after = scorer.stats();
    Ok(ArcJsdAttribution {
        divergence,
        top: ranking(&scores)[0],
        scores,
        per_token,
        stats: ScoringStats {
            forwards: after.forwards - before.forwards,
            tokens: after.tokens - before.tokens,
        },
    })
}

/// Head and MLP lens divergences (ANALYSES.md `heads:arc-jsd`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArcJsdHeads {
    pub divergence: Divergence,
    /// The source left out in the second run (the top of the attribution).
    pub removed_source: usize,
    /// `[layers][heads]`.
    pub heads: Vec<Vec<f64>>,
    /// `[layers]`.
    pub mlp: Vec<f64>,
}

/// Per-head results and MLP outputs of one run at its answer-predicting positions.
struct Components {
    /// Per layer `[A, H, d]`.
    heads: Vec<Tensor>,
    /// Per layer `[A, d]`.
    mlp: Vec<Tensor>,
}

/// From the answer pass's keys and values where the subject kept them: only the positions after
/// the prefix `prompt_ids` shares with the subject's prompt are computed.
fn components(engine: &Engine, subject: &Subject, prompt_ids: &[u32]) -> Result<Components> {
    let trace = subject.teacher_forced_pass(engine, prompt_ids, |rows| Capture {
        head_results: Some(rows.clone()),
        mlp_out: Some(rows),
        ..Default::default()
    })?;
    let layers = engine.arch().num_layers;
    let mut heads = Vec::with_capacity(layers);
    let mut mlp = Vec::with_capacity(layers);
    for l in 0..layers {
        heads.push(
            trace
                .get(&format!("blocks.{l}.attn.hook_result"))?
                .squeeze(0)?,
        );
        mlp.push(trace.get(&format!("blocks.{l}.hook_mlp_out"))?.squeeze(0)?);
    }
    Ok(Components { heads, mlp })
}

/// Lens logits of `[rows, d]` residual-space vectors: one flat `[rows · vocab]` buffer.
fn lens_logits(engine: &Engine, x: &Tensor) -> Result<Vec<f32>> {
    Ok(engine
        .unembed(x)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// Σ over answer positions of the divergence between two runs' lens distributions (flat
/// `[rows · vocab]` buffers), per group of `a` consecutive rows.
fn summed_divergence(
    a_rows: &[f32],
    b_rows: &[f32],
    vocab: usize,
    a: usize,
    divergence: Divergence,
) -> Vec<f64> {
    let per_row: Vec<f64> = a_rows
        .par_chunks(vocab)
        .zip(b_rows.par_chunks(vocab))
        .map(|(p, q)| divergence.between_fast(p, q))
        .collect();
    per_row.chunks(a).map(|c| c.iter().sum()).collect()
}

/// ARC-JSD head/MLP localisation: full prompt vs the prompt without `removed` (a source index at
/// `granularity`).
pub fn heads(
    engine: &Engine,
    subject: &Subject,
    granularity: Granularity,
    removed: usize,
    divergence: Divergence,
    progress: Progress,
) -> Result<ArcJsdHeads> {
    let n = subject.sources(granularity).len();
    if removed >= n {
        return Err(Error::Analysis(format!(
            "source {removed} does not exist ({n} sources)"
        )));
    }
    let answer = subject.answer_ids();
    let a = answer.len();
    let keep: Vec<bool> = (0..n).map(|j| j != removed).collect();
    let ablated = subject.leave_out(engine, &keep, granularity)?;
    let run_a = components(engine, subject, &subject.prompt.ids)?;
    let run_b = components(engine, subject, &ablated.ids)?;
    let arch = engine.arch();
    let (layers, h, d) = (arch.num_layers, arch.num_heads, arch.hidden_size);
    let mut head_scores = Vec::with_capacity(layers);
    let mut mlp = Vec::with_capacity(layers);
    for l in 0..layers {
        // [A, H, d] → [H·A, d], head-major so each head's A rows are consecutive.
        let flat = |t: &Tensor| -> Result<Tensor> {
            Ok(t.transpose(0, 1)?.contiguous()?.reshape((h * a, d))?)
        };
        // One unembedding per layer, both runs' heads and MLP stacked ([2·(H+1)·A, d]): the
        // vocabulary matrix is packed for the product once instead of four times.
        let stacked = Tensor::cat(
            &[
                flat(&run_a.heads[l])?,
                run_a.mlp[l].clone(),
                flat(&run_b.heads[l])?,
                run_b.mlp[l].clone(),
            ],
            0,
        )?;
        let logits = lens_logits(engine, &stacked)?;
        let vocab = logits.len() / (2 * (h + 1) * a);
        let (run_a_logits, run_b_logits) = logits.split_at(logits.len() / 2);
        let split = h * a * vocab;
        let (heads_a, mlp_a) = run_a_logits.split_at(split);
        let (heads_b, mlp_b) = run_b_logits.split_at(split);
        head_scores.push(summed_divergence(heads_a, heads_b, vocab, a, divergence));
        mlp.push(summed_divergence(mlp_a, mlp_b, vocab, a, divergence)[0]);
        if !progress(l + 1, layers) {
            return Err(Error::Cancelled);
        }
    }
    Ok(ArcJsdHeads {
        divergence,
        removed_source: removed,
        heads: head_scores,
        mlp,
    })
}
