//! Zero-ablation of every attention head, one at a time: Δ summed answer log-prob per head.
//!
//! This is the "ablation" head score (the knock-out experiments of Wu et al. 2024 and of most
//! circuit papers), computed exactly but cheaply:
//! * **prefix reuse** — ablating head h of layer l changes nothing below l, so one clean forward
//!   caches every layer's `resid_pre` and attention output, and each ablated variant starts inside
//!   layer l;
//! * **linearity of `o_proj`** — zeroing `z_h` before `o_proj` subtracts exactly
//!   `result_h = z_h · W_O[:, h]ᵀ` from the attention output, so layer l's attention is not
//!   recomputed: the variant starts at `resid_mid` = `resid_pre + norm?(attn_out − result_h)`;
//! * **batching** — the heads of one layer run side by side as batch rows;
//! * only the answer-predicting positions are unembedded.

use candle_core::Tensor;
use serde::Serialize;

use crate::engine::generate::answer_logprob_per_row;
use crate::engine::{Capture, Engine, Hooks, Positions, Start};
use crate::{Error, Result};

#[derive(Clone, Debug, Serialize)]
pub struct HeadSweep {
    /// `[layers][heads]`: summed answer log-prob with the head zeroed, minus the clean one.
    pub delta_logprob: Vec<Vec<f64>>,
    pub clean_logprob: f64,
}

/// Progress callback: `(done, total)` in heads; return `false` to cancel.
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize) -> bool;

/// Δ answer log-prob for zero-ablating each head, `max_batch` variants per forward.
pub fn head_ablation_sweep(
    engine: &Engine,
    prompt_ids: &[u32],
    answer_ids: &[u32],
    max_batch: usize,
    progress: Progress,
) -> Result<HeadSweep> {
    if answer_ids.is_empty() {
        return Err(Error::Hook("the answer is empty: nothing to score".into()));
    }
    let arch = engine.arch();
    let (layers, heads) = (arch.num_layers, arch.num_heads);
    // The last answer token is never a query or key of a position whose logits are scored
    // (causality), so the input stops just before it.
    let mut ids = prompt_ids.to_vec();
    ids.extend_from_slice(&answer_ids[..answer_ids.len() - 1]);
    let p = prompt_ids.len();
    let answer_rows = Positions::Range(p - 1..p - 1 + answer_ids.len());
    let dev = engine.model.device();
    let ids_t = Tensor::from_vec(ids.clone(), (1, ids.len()), dev)?;

    let clean = engine.forward(
        Start::Tokens(&ids_t),
        None,
        &Hooks {
            capture: Capture {
                resid_pre: Some(Positions::All),
                attn_out: Some(Positions::All),
                z: Some(Positions::All),
                logits: Some(answer_rows.clone()),
                ..Default::default()
            },
            ..Default::default()
        },
    )?;
    let clean_logprob =
        answer_logprob_per_row(clean.logits.as_ref().expect("requested"), answer_ids)?[0];

    let total = layers * heads;
    let mut delta = vec![vec![0.0; heads]; layers];
    let batch = max_batch.clamp(1, heads);
    let tail_hooks = Hooks {
        capture: Capture {
            logits: Some(answer_rows),
            ..Default::default()
        },
        ..Default::default()
    };
    for l in 0..layers {
        let resid_pre = clean.get(&format!("blocks.{l}.hook_resid_pre"))?;
        let attn_out = clean.get(&format!("blocks.{l}.hook_attn_out"))?;
        // [1, T, H, d_h] → per-head results [1, T, H, d] → [H, T, d]
        let z = clean.get(&format!("blocks.{l}.attn.hook_z"))?;
        let results = engine
            .model
            .head_results(l, z)?
            .squeeze(0)?
            .transpose(0, 1)?;
        let mut h0 = 0;
        while h0 < heads {
            let n = batch.min(heads - h0);
            let ablated_out = attn_out.broadcast_sub(&results.narrow(0, h0, n)?)?;
            let resid_mid = engine
                .model
                .post_attention(l, ablated_out)?
                .broadcast_add(resid_pre)?;
            let trace = engine.forward(
                Start::ResidMid {
                    layer: l,
                    resid: resid_mid,
                },
                None,
                &tail_hooks,
            )?;
            let lp = answer_logprob_per_row(trace.logits.as_ref().expect("requested"), answer_ids)?;
            for (i, v) in lp.into_iter().enumerate() {
                delta[l][h0 + i] = v - clean_logprob;
            }
            h0 += n;
            if !progress(l * heads + h0, total) {
                return Err(Error::Cancelled);
            }
        }
    }
    Ok(HeadSweep {
        delta_logprob: delta,
        clean_logprob,
    })
}
