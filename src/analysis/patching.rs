//! Activation patching of attention heads (Meng et al. 2022; Nanda's patching recipe; ANALYSES.md
//! `heads:patching`): run the prompt without the target document (corrupted), copy one head's output
//! from the run with it (clean) at the positions both runs share, and measure how much of the
//! answer's log-prob comes back.
//!
//! Computed exactly and cheaply like the ablation sweep: patching head h of layer l changes
//! nothing below l, and since `o_proj` is linear, replacing `z_h` adds
//! `result_h(clean) − result_h(corrupted)` to the attention output, so each patched variant starts
//! at layer l's `resid_mid`; the heads of one layer run side by side as batch rows.
//! Attribution patching (the gradient approximation) is not offered: the exact sweep is cheap
//! enough at these sizes.

use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

use super::ablation::score_attn_out_variants;
use super::scoring::{answer_rows, teacher_forced_input};
use super::{Progress, Subject};
use crate::engine::generate::answer_logprob_per_row;
use crate::engine::{Capture, Engine, Hooks, Positions, Start};
use crate::prompt::Granularity;
use crate::{Error, Result};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PatchingScores {
    /// `[layers][heads]`: `M(corrupted + clean head) − M(corrupted)`, `M` = answer log-prob.
    pub effect: Vec<Vec<f64>>,
    pub clean_logprob: f64,
    pub corrupted_logprob: f64,
    /// The document removed in the corrupted run.
    pub removed_document: usize,
    /// How many final input positions were patched (question, prompt suffix, answer).
    pub patched_positions: usize,
}

pub fn patching(
    engine: &Engine,
    subject: &Subject,
    removed_document: usize,
    max_batch: usize,
    progress: Progress,
) -> Result<PatchingScores> {
    let answer = subject.answer_ids();
    let a = answer.len();
    let n_docs = subject.prompt.docs.len();
    let keep: Vec<bool> = (0..n_docs).map(|j| j != removed_document).collect();
    let corrupted = subject.leave_out(engine, &keep, Granularity::Document)?;
    let clean = &subject.prompt;
    let k = (clean.ids.len() - clean.question.tokens.start) + (a - 1);
    let tail_c = clean.ids.len() - clean.question.tokens.start;
    let tail_r = corrupted.ids.len() - corrupted.question.tokens.start;
    if tail_c != tail_r
        || clean.ids[clean.question.tokens.start..]
            != corrupted.ids[corrupted.question.tokens.start..]
    {
        return Err(Error::Analysis(
            "the question and prompt suffix tokenise differently without the document; \
             positions cannot be aligned for patching"
                .into(),
        ));
    }
    let ids_c = teacher_forced_input(&clean.ids, answer);
    let ids_r = teacher_forced_input(&corrupted.ids, answer);
    let (tc, tr) = (ids_c.len(), ids_r.len());
    let answer_rows = |p: usize| answer_rows(p, a);

    let clean_trace = engine.forward(
        Start::Tokens(&engine.ids_tensor(&ids_c)?),
        None,
        &Hooks {
            capture: Capture {
                z: Some(Positions::Range(tc - k..tc)),
                logits: Some(answer_rows(clean.ids.len())),
                ..Default::default()
            },
            ..Default::default()
        },
    )?;
    let corr_trace = engine.forward(
        Start::Tokens(&engine.ids_tensor(&ids_r)?),
        None,
        &Hooks {
            capture: Capture {
                resid_pre: Some(Positions::All),
                attn_out: Some(Positions::All),
                z: Some(Positions::Range(tr - k..tr)),
                logits: Some(answer_rows(corrupted.ids.len())),
                ..Default::default()
            },
            ..Default::default()
        },
    )?;
    let logprob = |t: &crate::engine::Trace| -> Result<f64> {
        Ok(answer_logprob_per_row(t.logits()?, answer)?[0])
    };
    let clean_logprob = logprob(&clean_trace)?;
    let corrupted_logprob = logprob(&corr_trace)?;

    let arch = engine.arch();
    let (layers, heads, d) = (arch.num_layers, arch.num_heads, arch.hidden_size);
    let tail_hooks = Hooks {
        capture: Capture {
            logits: Some(answer_rows(corrupted.ids.len())),
            ..Default::default()
        },
        ..Default::default()
    };
    let batch = max_batch.clamp(1, heads);
    let mut effect = vec![vec![0.0; heads]; layers];
    for l in 0..layers {
        let z_name = format!("blocks.{l}.attn.hook_z");
        // Per-head results at the patched positions: [1, K, H, d] → [H, K, d].
        let per_head = |t: &crate::engine::Trace| -> Result<Tensor> {
            Ok(engine
                .head_results(l, t.get(&z_name)?)?
                .squeeze(0)?
                .transpose(0, 1)?
                .contiguous()?)
        };
        let delta = (per_head(&clean_trace)? - per_head(&corr_trace)?)?;
        let resid_pre = corr_trace.get(&format!("blocks.{l}.hook_resid_pre"))?;
        let attn_out = corr_trace.get(&format!("blocks.{l}.hook_attn_out"))?;
        let mut h0 = 0;
        while h0 < heads {
            let n = batch.min(heads - h0);
            let head_delta = delta.narrow(0, h0, n)?;
            let pad = Tensor::zeros((n, tr - k, d), head_delta.dtype(), head_delta.device())?;
            let shift = Tensor::cat(&[&pad, &head_delta], D::Minus2)?;
            let patched = attn_out.broadcast_add(&shift)?;
            let lp = score_attn_out_variants(engine, l, resid_pre, patched, &tail_hooks, answer)?;
            for (i, v) in lp.into_iter().enumerate() {
                effect[l][h0 + i] = v - corrupted_logprob;
            }
            h0 += n;
            if !progress(l * heads + h0, layers * heads) {
                return Err(Error::Cancelled);
            }
        }
    }
    Ok(PatchingScores {
        effect,
        clean_logprob,
        corrupted_logprob,
        removed_document,
        patched_positions: k,
    })
}
