//! KV-cached decoding and teacher-forced scoring of a given answer.
//!
//! Analyses re-score the *same* answer ids under modified prompts, so both paths return ids and
//! log-probs and never go through decoded text.

use candle_core::{DType, Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use serde::Serialize;

use std::collections::BTreeMap;

use super::decoder::{Decoder, Forward, Recording};
use super::hooks::{Capture, HeadAblation, Hooks, Positions};
use super::kv::KvCache;
use super::model::Start;
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    /// `None` or 0: greedy.
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: u64,
    /// How many alternatives to keep per position.
    pub top_k_alternatives: usize,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_new_tokens: 64,
            temperature: None,
            top_p: None,
            seed: 299792458,
            top_k_alternatives: 5,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Alternative {
    pub id: u32,
    pub logprob: f32,
}

/// An answer with the log-prob of every token and the top alternatives at each position.
#[derive(Clone, Debug, Serialize)]
pub struct ScoredAnswer {
    pub answer_ids: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub top_alternatives: Vec<Vec<Alternative>>,
    /// The stop token that ended generation (not part of the answer), if any.
    pub stop_id: Option<u32>,
}

impl ScoredAnswer {
    pub fn total_logprob(&self) -> f64 {
        self.logprobs.iter().map(|&x| x as f64).sum()
    }
}

/// Log-softmax of one row of logits, on the CPU in f64 for the normaliser.
pub fn log_softmax_row(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&x| ((x - max) as f64).exp()).sum();
    let lse = max as f64 + sum.ln();
    logits.iter().map(|&x| (x as f64 - lse) as f32).collect()
}

/// The `k` largest entries of `row` (index, value), best first, without sorting the whole row.
pub fn top_k(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let k = k.min(row.len());
    if k == 0 {
        return Vec::new();
    }
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let cmp = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]);
    idx.select_nth_unstable_by(k - 1, cmp);
    idx.truncate(k);
    idx.sort_by(cmp);
    idx.into_iter().map(|i| (i, row[i as usize])).collect()
}

fn alternatives(logprobs: &[f32], k: usize) -> Vec<Alternative> {
    top_k(logprobs, k)
        .into_iter()
        .map(|(id, logprob)| Alternative { id, logprob })
        .collect()
}

/// Token ids as a one-row input `[1, t]` (u32) on `device`.
pub fn ids_tensor(ids: &[u32], device: &Device) -> Result<Tensor> {
    ids_rows(ids, 1, device)
}

/// The same token ids as every row of a batch, `[rows, t]` (u32) on `device`.
pub fn ids_rows(ids: &[u32], rows: usize, device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(
        ids.repeat(rows),
        (rows, ids.len()),
        device,
    )?)
}

/// Generates up to `cfg.max_new_tokens` after `prompt_ids`, stopping on any of `stop_ids`.
/// `should_stop` is polled between tokens (cancellation).
pub fn generate<F: Forward + ?Sized>(
    model: &F,
    prompt_ids: &[u32],
    stop_ids: &[u32],
    cfg: &GenerationConfig,
    on_token: impl FnMut(u32) -> bool,
) -> Result<ScoredAnswer> {
    Ok(generate_with_state(model, prompt_ids, stop_ids, cfg, on_token)?.0)
}

/// What a generation or a teacher-forced score leaves behind for re-scoring the same answer:
/// the keys and values of `prompt ++ answer[..A−1]` and the answer's logit rows (row `t` predicts
/// answer token `t`). Leave-out analyses start from it instead of re-running the full prompt.
#[derive(Clone, Debug)]
pub struct AnswerState {
    pub kv_cache: KvCache,
    pub logits: Vec<Vec<f32>>,
}

fn sampler(cfg: &GenerationConfig) -> LogitsProcessor {
    let sampling = match cfg.temperature {
        Some(t) if t > 0.0 => match cfg.top_p {
            Some(p) if p < 1.0 => Sampling::TopP { p, temperature: t },
            _ => Sampling::All { temperature: t },
        },
        _ => Sampling::ArgMax,
    };
    LogitsProcessor::from_sampling(cfg.seed, sampling)
}

/// [`generate`], also returning the [`AnswerState`] (`None` for an empty answer).
pub fn generate_with_state<F: Forward + ?Sized>(
    model: &F,
    prompt_ids: &[u32],
    stop_ids: &[u32],
    cfg: &GenerationConfig,
    on_token: impl FnMut(u32) -> bool,
) -> Result<(ScoredAnswer, Option<AnswerState>)> {
    let g = generate_recording(
        model,
        prompt_ids,
        stop_ids,
        cfg,
        Recording::default(),
        on_token,
    )?;
    Ok((g.answer, g.state))
}

/// What a generation recorded besides its answer (see [`Recording`]).
#[derive(Clone, Debug)]
pub struct Recorded {
    /// One map of hook name → tensor per forward: the prefill, then one per fed answer token.
    pub forwards: Vec<BTreeMap<String, Tensor>>,
    /// Keys and values of `prompt ++ answer`, every answer token included (the last step fed it).
    pub cache: KvCache,
}

impl Recorded {
    /// Layer `l`'s recorded attention rows as one `[1, H, n, keys]` tensor: every recorded row
    /// whose position is below `keys`, in order, each padded with zeros to `keys` keys (the
    /// causal mask's zeros: a row at position `i` sees keys `0..=i` only). A teacher-forced
    /// forward of the first `keys` tokens capturing the same rows gives the same tensor.
    pub fn attention_rows(&self, l: usize, keys: usize) -> Result<Tensor> {
        let name = super::hooks::hook_name(l, "attn.hook_pattern");
        let mut parts = Vec::new();
        for f in &self.forwards {
            let Some(p) = f.get(&name) else { continue };
            let (n, tk) = (p.dims()[2], p.dims()[3]);
            // The rows are the forward's last `n` positions, `tk − n .. tk`.
            let keep = n.saturating_sub(tk.saturating_sub(keys));
            if keep == 0 {
                continue;
            }
            let width = tk.min(keys);
            let rows = p.narrow(2, 0, keep)?.narrow(3, 0, width)?;
            parts.push(rows.pad_with_zeros(3, 0, keys - width)?);
        }
        if parts.is_empty() {
            return Err(Error::Hook(format!(
                "the generation recorded no attention rows of layer {l}"
            )));
        }
        Ok(Tensor::cat(&parts, 2)?)
    }

    /// Layer `l`'s recorded residual stream entering it, `[1, T, d]` over every fed position.
    pub fn resid_pre(&self, l: usize) -> Result<Tensor> {
        let name = super::hooks::hook_name(l, "hook_resid_pre");
        let parts: Vec<&Tensor> = self.forwards.iter().filter_map(|f| f.get(&name)).collect();
        if parts.is_empty() {
            return Err(Error::Hook(format!(
                "the generation recorded no residual stream of layer {l}"
            )));
        }
        Ok(Tensor::cat(&parts, 1)?)
    }
}

/// A generation with what its [`Recording`] kept.
#[derive(Clone, Debug)]
pub struct RecordedGeneration {
    pub answer: ScoredAnswer,
    pub state: Option<AnswerState>,
    /// `None` for an empty answer.
    pub recorded: Option<Recorded>,
}

/// [`generate_with_state`], keeping what `recording` asks for from the prefill and every step:
/// the passes a caller would otherwise run again over `prompt ++ answer` (same tokens, same
/// positions, so the same values up to rounding).
pub fn generate_recording<F: Forward + ?Sized>(
    model: &F,
    prompt_ids: &[u32],
    stop_ids: &[u32],
    cfg: &GenerationConfig,
    recording: Recording,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<RecordedGeneration> {
    if prompt_ids.is_empty() {
        return Err(Error::Hook("cannot generate from an empty prompt".into()));
    }
    let context = model.transformer().arch.max_position_embeddings;
    if prompt_ids.len() >= context {
        return Err(Error::PromptTooLong {
            tokens: prompt_ids.len(),
            context,
        });
    }
    let mut sampler = sampler(cfg);
    let mut decoder =
        Decoder::prefill_recording(model, &Hooks::default(), prompt_ids, 1, stop_ids, recording)?;
    let mut out = ScoredAnswer {
        answer_ids: Vec::new(),
        logprobs: Vec::new(),
        top_alternatives: Vec::new(),
        stop_id: None,
    };
    let max_new = cfg.max_new_tokens.min(context - prompt_ids.len());
    let mut rows = Vec::new();
    for _ in 0..max_new {
        let row = decoder.logits()?.flatten_all()?.to_device(&Device::Cpu)?;
        let next = sampler.sample(&row)?;
        if decoder.is_stop(next) {
            out.stop_id = Some(next);
            break;
        }
        let row = row.to_vec1::<f32>()?;
        let lp = log_softmax_row(&row);
        rows.push(row);
        out.logprobs.push(lp[next as usize]);
        out.top_alternatives
            .push(alternatives(&lp, cfg.top_k_alternatives));
        out.answer_ids.push(next);
        if !on_token(next) {
            return Err(Error::Cancelled);
        }
        decoder.step(&[next])?;
    }
    // The last forward fed every answer token; the state keeps all but the last.
    let forwards = decoder.take_recorded();
    let (state, recorded) = match (out.answer_ids.len(), decoder.into_cache()) {
        (0, _) | (_, None) => (None, None),
        (a, Some(cache)) => (
            Some(AnswerState {
                kv_cache: cache.truncate(prompt_ids.len() + a - 1)?,
                logits: rows,
            }),
            Some(Recorded { forwards, cache }),
        ),
    };
    Ok(RecordedGeneration {
        answer: out,
        state,
        recorded,
    })
}

/// Greedy decoding of `rows` copies of one prompt side by side, row `r` under row `r` of a head
/// ablation (`mask [rows, L, H]`), for the whole prompt and every new token. Rows stop
/// independently; a finished row keeps being fed its stop token until all rows are done.
/// Returns each row's answer ids (stop token excluded).
pub fn generate_ablated<F: Forward + ?Sized>(
    model: &F,
    prompt_ids: &[u32],
    stop_ids: &[u32],
    max_new_tokens: usize,
    ablation: &HeadAblation,
    mut keep_going: impl FnMut() -> bool,
) -> Result<Vec<Vec<u32>>> {
    let rows = ablation.mask.dims()[0];
    let context = model.transformer().arch.max_position_embeddings;
    let hooks = Hooks {
        head_ablation: Some(ablation.clone()),
        ..Default::default()
    };
    let mut decoder = Decoder::prefill(model, &hooks, prompt_ids, rows, stop_ids)?;
    let max_new = max_new_tokens.min(context.saturating_sub(prompt_ids.len()));
    decoder.greedy_rows(None, max_new, &mut keep_going)
}

/// Teacher-forced scoring: the log-prob of every answer token after `prompt_ids`, one forward.
pub fn score<F: Forward + ?Sized>(
    model: &F,
    prompt_ids: &[u32],
    answer_ids: &[u32],
    top_k_alternatives: usize,
) -> Result<ScoredAnswer> {
    Ok(score_with_state(model, prompt_ids, answer_ids, top_k_alternatives, false)?.0)
}

/// [`score`], also returning the [`AnswerState`] when `keep_state` (a non-empty answer).
pub fn score_with_state<F: Forward + ?Sized>(
    model: &F,
    prompt_ids: &[u32],
    answer_ids: &[u32],
    top_k_alternatives: usize,
    keep_state: bool,
) -> Result<(ScoredAnswer, Option<AnswerState>)> {
    if prompt_ids.is_empty() {
        return Err(Error::Hook("cannot score after an empty prompt".into()));
    }
    let mut ids = prompt_ids.to_vec();
    ids.extend_from_slice(answer_ids);
    let p = prompt_ids.len();
    let hooks = Hooks {
        capture: Capture {
            logits: Some(Positions::Range(p - 1..p - 1 + answer_ids.len())),
            kv_cache: keep_state,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut trace = model.forward(
        Start::Tokens(&ids_tensor(&ids, model.transformer().device())?),
        None,
        &hooks,
    )?;
    let logits = trace.take_logits()?;
    let rows = logits
        .squeeze(0)?
        .to_device(&Device::Cpu)?
        .to_vec2::<f32>()?;
    let mut out = ScoredAnswer {
        answer_ids: answer_ids.to_vec(),
        logprobs: Vec::new(),
        top_alternatives: Vec::new(),
        stop_id: None,
    };
    for (row, &id) in rows.iter().zip(answer_ids) {
        let lp = log_softmax_row(row);
        out.logprobs.push(lp[id as usize]);
        out.top_alternatives
            .push(alternatives(&lp, top_k_alternatives));
    }
    let state = match (answer_ids.len(), trace.kv_cache.take()) {
        (0, _) | (_, None) => None,
        (a, Some(cache)) => Some(AnswerState {
            kv_cache: cache.truncate(p + a - 1)?,
            logits: rows,
        }),
    };
    Ok((out, state))
}

/// Summed answer log-prob per batch row from logits `[b, A, V]` at the answer-predicting positions.
pub fn answer_logprob_per_row(logits: &Tensor, answer_ids: &[u32]) -> Result<Vec<f64>> {
    let logits = logits.to_dtype(DType::F32)?;
    let lsm = candle_nn::ops::log_softmax(&logits, candle_core::D::Minus1)?;
    let (b, a, _) = lsm.dims3()?;
    if a != answer_ids.len() {
        return Err(Error::Hook(format!(
            "{a} logit rows for {} answer tokens",
            answer_ids.len()
        )));
    }
    let idx = Tensor::from_vec(answer_ids.to_vec(), (1, a, 1), lsm.device())?
        .broadcast_as((b, a, 1))?
        .contiguous()?;
    let picked = lsm
        .gather(&idx, 2)?
        .squeeze(2)?
        .to_dtype(DType::F64)?
        .sum(1)?;
    Ok(picked.to_device(&Device::Cpu)?.to_vec1::<f64>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_sorted_and_correct() {
        let row = [0.1, 3.0, -1.0, 2.5, 3.0, 0.0];
        let top = top_k(&row, 3);
        assert_eq!(
            top.iter().map(|x| x.1).collect::<Vec<_>>(),
            vec![3.0, 3.0, 2.5]
        );
        assert_eq!(top[2].0, 3);
    }

    #[test]
    fn log_softmax_normalises() {
        let lp = log_softmax_row(&[1.0, 2.0, 3.0]);
        let total: f32 = lp.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }
}
