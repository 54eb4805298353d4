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
//!
//! Also here: the top-k vs random-k ablation curve ([`ablation_curve`]), with zero, mean or
//! uniform-pattern ablation.

use candle_core::Tensor;
use serde::Serialize;

use super::ablated_decoding::{run_conditions_reusing, AblatedDecoding, AblatedPositions};
use super::scoring::{answer_rows, teacher_forced_input};
use crate::engine::generate::{answer_logprob_per_row, Recorded};
use crate::engine::{AblationMode, Capture, Engine, Hooks, Positions, Start};
use crate::{Error, Result};

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct HeadSweep {
    /// `[layers][heads]`: summed answer log-prob with the head zeroed, minus the clean one.
    pub delta_logprob: Vec<Vec<f64>>,
    pub clean_logprob: f64,
}

pub use super::Progress;

/// Δ answer log-prob for zero-ablating each head, `max_batch` variants per forward.
pub fn head_ablation_sweep(
    engine: &Engine,
    prompt_ids: &[u32],
    answer_ids: &[u32],
    max_batch: usize,
    progress: Progress,
) -> Result<HeadSweep> {
    if answer_ids.is_empty() {
        return Err(Error::Analysis(
            "the answer is empty: nothing to score".into(),
        ));
    }
    let arch = engine.arch();
    let (layers, heads) = (arch.num_layers, arch.num_heads);
    // The last answer token is never a query or key of a position whose logits are scored
    // (causality), so the input stops just before it.
    let ids = teacher_forced_input(prompt_ids, answer_ids);
    let answer_rows = answer_rows(prompt_ids.len(), answer_ids.len());
    let ids_t = engine.ids_tensor(&ids)?;

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
    let clean_logprob = answer_logprob_per_row(clean.logits()?, answer_ids)?[0];

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
        let results = engine.head_results(l, z)?.squeeze(0)?.transpose(0, 1)?;
        let mut h0 = 0;
        while h0 < heads {
            let n = batch.min(heads - h0);
            let ablated_out = attn_out.broadcast_sub(&results.narrow(0, h0, n)?)?;
            let lp = score_attn_out_variants(
                engine,
                l,
                resid_pre,
                ablated_out,
                &tail_hooks,
                answer_ids,
            )?;
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

/// Summed answer log-prob for each variant of layer `l`'s attention output `[n, T, d]`, the layers
/// below taken from a clean run (`resid_pre` `[1, T, d]`): the forward starts at `resid_mid`.
pub(crate) fn score_attn_out_variants(
    engine: &Engine,
    l: usize,
    resid_pre: &Tensor,
    attn_out: Tensor,
    tail_hooks: &Hooks,
    answer_ids: &[u32],
) -> Result<Vec<f64>> {
    let resid_mid = engine
        .post_attention(l, attn_out)?
        .broadcast_add(resid_pre)?;
    let trace = engine.forward(
        Start::ResidMid {
            layer: l,
            resid: resid_mid,
        },
        None,
        tail_hooks,
    )?;
    answer_logprob_per_row(trace.logits()?, answer_ids)
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct CurveConfig {
    /// Numbers of ablated heads (capped at layers × heads).
    pub ks: Vec<usize>,
    /// Random head sets per k.
    pub draws: usize,
    pub seed: u64,
    pub kind: AblationMode,
    /// Regenerate the answer under each ablation and check it against the sample's `answers`.
    pub regenerate: bool,
    pub max_new_tokens: usize,
}

impl Default for CurveConfig {
    fn default() -> Self {
        CurveConfig {
            ks: vec![0, 10, 20, 30, 40, 50],
            draws: 5,
            seed: 0,
            kind: AblationMode::Zero,
            regenerate: true,
            max_new_tokens: 32,
        }
    }
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct CurvePoint {
    pub k: usize,
    /// Answer log-prob with the top-k heads ablated.
    pub top_logprob: f64,
    /// The regenerated answer under the top-k ablation, and whether it is still correct.
    pub top_answer: Option<String>,
    pub top_correct: Option<bool>,
    /// Answer log-prob per random draw, their mean and sample standard deviation (at k = 0 and
    /// at every head the random set is the top set). Empty and `None` for a curve drawn without
    /// random sets (`draws = 0`: the explorer's top-k line, before its random band).
    pub random_logprobs: Vec<f64>,
    pub random_logprob_mean: Option<f64>,
    pub random_logprob_sd: Option<f64>,
    /// Fraction of random draws whose regenerated answer is still correct.
    pub random_correct_rate: Option<f64>,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct AblationCurve {
    /// The head score that ranks the heads.
    pub score: String,
    pub config: CurveConfig,
    pub clean_logprob: f64,
    /// The heads in ranking order, `(layer, head)`, as far as the largest k.
    pub ranked_heads: Vec<(usize, usize)>,
    pub points: Vec<CurvePoint>,
}

fn mean_sd(v: &[f64]) -> Option<(f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    Some((mean, sd))
}

/// Top-k vs random-k head ablation curve (Wu et al. 2024's masking experiment, generalised to any
/// head score). `importance[l][h]`: higher = ablated earlier.
///
/// Every head set of every k is one row of the study's ablated decoding
/// ([`run_conditions_reusing`]), [`CURVE_BATCH`] rows per call: each row starts at its earliest
/// ablated layer from the clean run's residual stream (one recorded forward), its teacher-forced
/// pass gives the answer's log-prob, and greedy decoding runs only from where a row leaves the
/// clean answer. Wu et al. regenerate every ablated answer from scratch; the results are the same
/// up to rounding (tests/suite/recorded_passes.rs holds the two paths together).
pub fn ablation_curve(
    engine: &Engine,
    subject: &super::Subject,
    importance: &[Vec<f64>],
    score_name: &str,
    cfg: &CurveConfig,
    progress: Progress,
) -> Result<AblationCurve> {
    let arch = engine.arch();
    let (layers, heads) = (arch.num_layers, arch.num_heads);
    let total = layers * heads;
    let ranked: Vec<(usize, usize)> = super::top_heads(importance, total)
        .into_iter()
        .map(|(l, h, _)| (l, h))
        .collect();
    if ranked.len() != total {
        return Err(Error::Analysis(format!(
            "the `{score_name}` head score has {} usable values for {total} heads",
            ranked.len()
        )));
    }
    let mut ks: Vec<usize> = cfg.ks.iter().map(|&k| k.min(total)).collect();
    ks.dedup();
    let kind = ablation_kind(engine, subject, cfg.kind)?;
    let (clean_run, clean) = record_clean_run(engine, subject)?;
    let regenerate = cfg.regenerate && !subject.sample.answers().is_empty();
    // Per k, row 0: the top-k heads; rows 1..: random k heads from outside the top-k.
    let mut rng = super::rng::SplitMix64::new(cfg.seed);
    let per_k: Vec<Vec<Vec<(usize, usize)>>> = ks
        .iter()
        .map(|&k| {
            let mut sets = vec![ranked[..k].to_vec()];
            if k > 0 && k < total {
                sets.extend((0..cfg.draws).map(|_| rng.choose(&ranked[k..], k)));
            }
            sets
        })
        .collect();
    let rows: Vec<Vec<(usize, usize)>> = per_k.iter().flatten().cloned().collect();
    let decoding = AblatedDecoding {
        positions: AblatedPositions::All,
        // No regeneration: every row follows the clean answer and nothing decodes.
        max_new_tokens: if regenerate { cfg.max_new_tokens } else { 0 },
    };
    let chunks = rows.len().div_ceil(CURVE_BATCH);
    let mut runs = Vec::with_capacity(rows.len());
    for (i, chunk) in rows.chunks(CURVE_BATCH).enumerate() {
        runs.extend(run_conditions_reusing(
            engine,
            subject,
            &clean_run,
            chunk,
            &kind,
            &decoding,
            &mut || progress(i, chunks),
        )?);
        if !progress(i + 1, chunks) {
            return Err(Error::Cancelled);
        }
    }
    let mut runs = runs.into_iter();
    let mut points = Vec::with_capacity(ks.len());
    for (&k, sets) in ks.iter().zip(&per_k) {
        let here: Vec<(Vec<u32>, f64)> = runs.by_ref().take(sets.len()).collect();
        // k = 0 ablates nothing: its log-prob is the clean run's.
        let lp: Vec<f64> = match k {
            0 => vec![clean],
            _ => here.iter().map(|r| r.1).collect(),
        };
        let (texts, correct) = if regenerate {
            let texts = here
                .iter()
                .map(|(ids, _)| engine.decode(ids))
                .collect::<Result<Vec<_>>>()?;
            let correct: Vec<bool> = texts
                .iter()
                .map(|t| super::answer_is_correct(&subject.sample, t).unwrap_or(false))
                .collect();
            (Some(texts), Some(correct))
        } else {
            (None, None)
        };
        // The random rows: the draws, or the top set itself where every k-set is it (k = 0, all
        // heads); none when the curve draws no random sets.
        let random_rows = if k == 0 || k >= total {
            0..1
        } else {
            1..lp.len()
        };
        let random = lp[random_rows.clone()].to_vec();
        let (mean, sd) = mean_sd(&random).unzip();
        points.push(CurvePoint {
            k,
            top_logprob: lp[0],
            top_answer: texts.as_ref().map(|t| t[0].clone()),
            top_correct: correct.as_ref().map(|c| c[0]),
            random_logprob_mean: mean,
            random_logprob_sd: sd,
            random_correct_rate: correct.as_ref().and_then(|c| {
                let r = &c[random_rows];
                (!r.is_empty()).then(|| r.iter().filter(|&&x| x).count() as f64 / r.len() as f64)
            }),
            random_logprobs: random,
        });
    }
    let kmax = ks.iter().copied().max().unwrap_or(0);
    Ok(AblationCurve {
        score: score_name.to_string(),
        config: cfg.clone(),
        clean_logprob: clean,
        ranked_heads: ranked[..kmax].to_vec(),
        points,
    })
}

/// Ablated rows per batched call of the curve (as the study's default batch).
pub const CURVE_BATCH: usize = 8;

/// One clean teacher-forced forward of `prompt ++ answer` recorded as the ablated decoding reads
/// it (every layer's residual stream, the keys and values), and the answer's clean log-prob.
fn record_clean_run(engine: &Engine, subject: &super::Subject) -> Result<(Recorded, f64)> {
    let ids = subject.full_ids();
    let answer = subject.answer_ids();
    let mut trace = engine.forward(
        Start::Tokens(&engine.ids_tensor(&ids)?),
        None,
        &Hooks {
            capture: Capture {
                logits: Some(subject.answer_rows()),
                kv_cache: true,
                resid_pre: Some(Positions::All),
                ..Default::default()
            },
            ..Default::default()
        },
    )?;
    let clean = answer_logprob_per_row(&trace.take_logits()?, answer)?[0];
    let cache = trace.take_kv_cache()?;
    let recorded = Recorded {
        forwards: vec![std::mem::take(&mut trace.activations)],
        cache,
    };
    Ok((recorded, clean))
}

/// The engine's ablation for a curve's mode; `Mean` averages each head's `z` over every input
/// position of the subject's teacher-forced run ([`subject_mean_z`]).
pub fn ablation_kind(
    engine: &Engine,
    subject: &super::Subject,
    mode: AblationMode,
) -> Result<crate::engine::AblationKind> {
    mode.resolve(|| subject_mean_z(engine, subject))
}

/// Each head's `z` averaged over every position of the subject's teacher-forced input,
/// `[L, H, d_head]`: what mean ablation substitutes. One forward.
pub fn subject_mean_z(engine: &Engine, subject: &super::Subject) -> Result<Tensor> {
    let ids = subject.teacher_forced_ids();
    let trace = engine.forward(
        Start::Tokens(&engine.ids_tensor(&ids)?),
        None,
        &Hooks {
            capture: Capture {
                z: Some(Positions::All),
                ..Default::default()
            },
            ..Default::default()
        },
    )?;
    mean_z(engine.arch().num_layers, &trace)
}

/// Each head's `z` averaged over every input position, `[L, H, d_head]` (what mean ablation
/// substitutes), from a one-row forward that captured `attn.hook_z` at all layers and positions.
pub(crate) fn mean_z(layers: usize, trace: &crate::engine::Trace) -> Result<Tensor> {
    let means = (0..layers)
        .map(|l| {
            Ok(trace
                .get(&format!("blocks.{l}.attn.hook_z"))?
                .squeeze(0)?
                .mean(0)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::stack(&means, 0)?)
}

/// A batched head ablation: row `r` ablates the `(layer, head)` pairs of `sets[r]`.
pub fn head_set_ablation(
    engine: &Engine,
    sets: &[Vec<(usize, usize)>],
    kind: &crate::engine::AblationKind,
) -> Result<crate::engine::HeadAblation> {
    let arch = engine.arch();
    let (layers, heads) = (arch.num_layers, arch.num_heads);
    let total = layers * heads;
    let mut mask = vec![1f32; sets.len() * total];
    let mut touched = vec![false; layers];
    for (r, set) in sets.iter().enumerate() {
        for &(l, h) in set {
            if l >= layers || h >= heads {
                return Err(Error::Analysis(format!(
                    "head L{l}H{h} does not exist ({layers} layers × {heads} heads)"
                )));
            }
            mask[r * total + l * heads + h] = 0.0;
            touched[l] = true;
        }
    }
    Ok(crate::engine::HeadAblation {
        mask: Tensor::from_vec(mask, (sets.len(), layers, heads), engine.device())?,
        kind: kind.clone(),
        layers: Some(touched),
    })
}

/// Teacher-forced answer log-prob under each row of a batched head ablation (one forward).
pub fn ablated_answer_logprobs(
    engine: &Engine,
    subject: &super::Subject,
    ablation: &crate::engine::HeadAblation,
) -> Result<Vec<f64>> {
    let answer = subject.answer_ids();
    let ids = subject.teacher_forced_ids();
    let rows = ablation.mask.dims()[0];
    let input = engine.ids_rows(&ids, rows)?;
    let trace = engine.forward(
        Start::Tokens(&input),
        None,
        &Hooks {
            head_ablation: Some(ablation.clone()),
            capture: Capture {
                logits: Some(subject.answer_rows()),
                ..Default::default()
            },
            ..Default::default()
        },
    )?;
    answer_logprob_per_row(trace.logits()?, answer)
}
