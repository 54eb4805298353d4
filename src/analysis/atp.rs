//! Attribution patching (AtP): every head's ablation effect, linearised, from one forward and
//! one backward pass (`heads:atp`).
//!
//! `score[l][h] = Σ_t Σ_d ∂M/∂z[l][t][h][d] · (z'[l][t][h][d] − z[l][t][h][d])`, with `M` the
//! summed log-prob of the teacher-forced answer, `z` the head's output (`attn.hook_z`, the input
//! of `o_proj`) on the clean run, and `z'` what ablation puts there: `0` for zero ablation, the
//! head's mean `z` over the run's positions for mean ablation (what `AblationMode::Mean`
//! substitutes). The sum runs over every input position, as `heads:ablation` zeroes the head at
//! every position, so the two are directly comparable: same metric, same input, same sign
//! (negative = the answer needs the head).
//!
//! The method is Nanda's attribution patching ("Attribution patching: activation patching at
//! industrial scale", 2023; Syed, Rager & Conmy 2023, "Attribution patching outperforms automated
//! circuit discovery") as evaluated by Kramár, Lieberum, Shah & Nanda 2024 ("AtP*: an efficient
//! and scalable method for localizing LLM behaviour to components"). Deliberate differences:
//! * the patch is an ablation, not a clean → corrupted swap: there is no corrupted run, so this
//!   is one forward + one backward (Nanda's AtP: two forwards + one backward) and it estimates
//!   `heads:ablation`, not `heads:patching`;
//! * the metric is the summed answer log-prob (the sweep's), not a logit difference;
//! * the node is the head's `z` before `o_proj`; as `o_proj` is linear this equals attributing
//!   the head's result (`hook_result`) and is what zero ablation overwrites;
//! * neither of AtP*'s corrections is applied (the QK fix, which recomputes the attention softmax
//!   for query/key nodes whose effect saturates, and GradDrop against cancelling paths): the
//!   score is plain first-order AtP, and its agreement with the exact sweep is measured instead
//!   (README, "Attribution patching vs the exact sweep").
//!
//! Cost: one forward and one backward (about three forwards' work), against the sweep's `L·H`
//! ablated tails; but the differentiable forward keeps every layer's activations and attention
//! pattern (`L·H·T²` floats), so memory, not time, bounds the prompt length.

use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};

use super::scoring::{answer_rows, teacher_forced_input};
use super::Progress;
use crate::engine::{AblationMode, Engine};
use crate::{Error, Result};

/// The `heads:atp` result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AtpScores {
    /// `[layers][heads]`: first-order Δ summed answer log-prob when the head is ablated.
    pub delta_logprob: Vec<Vec<f64>>,
    /// The summed answer log-prob of the clean run (the differentiable forward's).
    pub clean_logprob: f64,
    /// What the estimate replaces `z` by: `zero` or `mean`.
    pub ablation: AblationMode,
}

/// AtP of every head for `answer_ids` after `prompt_ids` under `mode` (zero or mean ablation;
/// the uniform pattern is not a change of `z` this can linearise without its own forward, and is
/// an error). One differentiable forward and one backward.
pub fn attribution_patching(
    engine: &Engine,
    prompt_ids: &[u32],
    answer_ids: &[u32],
    mode: AblationMode,
    progress: Progress,
) -> Result<AtpScores> {
    if answer_ids.is_empty() {
        return Err(Error::Analysis(
            "the answer is empty: nothing to score".into(),
        ));
    }
    if mode == AblationMode::Uniform {
        return Err(Error::Analysis(
            "attribution patching estimates zero or mean ablation, not the uniform pattern".into(),
        ));
    }
    if !progress(0, 1) {
        return Err(Error::Cancelled);
    }
    // The same input and rows as the exact sweep (`head_ablation_sweep`).
    let ids = teacher_forced_input(prompt_ids, answer_ids);
    let rows = answer_rows(prompt_ids.len(), answer_ids.len());
    let answer = answer_ids.to_vec();
    let g = engine.head_output_gradient(&engine.ids_tensor(&ids)?, &rows, |logits| {
        summed_logprob(logits, &answer)
    })?;
    let delta_logprob =
        g.z.iter()
            .zip(&g.grad)
            .map(|(z, grad)| head_effects(z, grad, mode))
            .collect::<Result<Vec<_>>>()?;
    if !progress(1, 1) {
        return Err(Error::Cancelled);
    }
    Ok(AtpScores {
        delta_logprob,
        clean_logprob: g.value,
        ablation: mode,
    })
}

/// `Σ_t log_softmax(logits[0, t])[answer[t]]` as a scalar tensor autograd can follow.
fn summed_logprob(logits: &Tensor, answer: &[u32]) -> Result<Tensor> {
    let lsm = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    let (_, a, _) = lsm.dims3()?;
    if a != answer.len() {
        return Err(Error::Hook(format!(
            "{a} logit rows for {} answer tokens",
            answer.len()
        )));
    }
    let idx = Tensor::from_vec(answer.to_vec(), (1, a, 1), lsm.device())?;
    Ok(lsm.gather(&idx, 2)?.sum_all()?)
}

/// One layer's `Σ_t Σ_d grad · (z' − z)` per head, from `z` and `grad` `[t, H, d_head]`, in f64.
fn head_effects(z: &Tensor, grad: &Tensor, mode: AblationMode) -> Result<Vec<f64>> {
    let z = z.to_dtype(DType::F64)?;
    let change = match mode {
        AblationMode::Mean => z.mean_keepdim(0)?.broadcast_sub(&z)?,
        _ => z.neg()?,
    };
    let effect = (grad.to_dtype(DType::F64)? * change)?.sum(2)?.sum(0)?;
    Ok(effect.to_device(&Device::Cpu)?.to_vec1::<f64>()?)
}
