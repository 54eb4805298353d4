//! Throughput of a loaded model: prefill and decode tokens per second, measured (never estimated
//! from parameter counts). What `bench prune` and `headscope prune` report as a pruned model's
//! speed-up, each engine timed in the same run.

use std::time::Instant;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::{Engine, Hooks, KvCache, Start};
use crate::{Error, Result};

/// Medians over the repeats (after one warm-up).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Prompt tokens per prefill.
    pub prefill_tokens: usize,
    /// Single-token steps after each prefill.
    pub decode_tokens: usize,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    /// Every repeat's prefill and decode seconds.
    pub prefill_s: Vec<f64>,
    pub decode_s: Vec<f64>,
}

/// Times `repeats` prefills of `ids` (one forward keeping the KV cache and the last logits, as
/// generation does), each followed by `decode_tokens` greedy single-token steps that never stop
/// early. One untimed warm-up first. Works on any engine, pruned (sliced) or not.
pub fn measure(
    engine: &Engine,
    ids: &[u32],
    decode_tokens: usize,
    repeats: usize,
) -> Result<Throughput> {
    let mut all = measure_interleaved(&[engine], ids, decode_tokens, repeats)?;
    Ok(all.remove(0))
}

/// [`measure`] for several engines in the same run, interleaved: each round times every engine
/// once, so a change in the machine's load falls on all of them alike and their ratios (the
/// speed-ups) stay fair.
pub fn measure_interleaved(
    engines: &[&Engine],
    ids: &[u32],
    decode_tokens: usize,
    repeats: usize,
) -> Result<Vec<Throughput>> {
    if ids.is_empty() || repeats == 0 {
        return Err(Error::Config(
            "throughput needs a non-empty prompt and at least one repeat".into(),
        ));
    }
    let mut times = Vec::with_capacity(engines.len());
    for engine in engines {
        let context = engine.info().context_length;
        if ids.len() + decode_tokens > context {
            return Err(Error::PromptTooLong {
                tokens: ids.len() + decode_tokens,
                context,
            });
        }
        run_once(engine, ids, decode_tokens)?; // warm-up
        times.push((Vec::new(), Vec::new()));
    }
    for _ in 0..repeats {
        for (engine, (prefill, decode)) in engines.iter().zip(&mut times) {
            let (p, d) = run_once(engine, ids, decode_tokens)?;
            prefill.push(p);
            decode.push(d);
        }
    }
    let rate = |n: usize, s: &[f64]| {
        let m = median(s);
        if n == 0 || m <= 0.0 {
            0.0
        } else {
            n as f64 / m
        }
    };
    Ok(times
        .into_iter()
        .map(|(prefill_s, decode_s)| Throughput {
            prefill_tokens: ids.len(),
            decode_tokens,
            prefill_tokens_per_s: rate(ids.len(), &prefill_s),
            decode_tokens_per_s: rate(decode_tokens, &decode_s),
            prefill_s,
            decode_s,
        })
        .collect())
}

/// One prefill and its decoding steps: (prefill seconds, decode seconds).
fn run_once(engine: &Engine, ids: &[u32], steps: usize) -> Result<(f64, f64)> {
    let t = Instant::now();
    let ids_t = engine.ids_tensor(ids)?;
    let (mut next, mut cache) = step(engine, Start::Tokens(&ids_t), ids.len(), None)?;
    let prefill = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..steps {
        let input = engine.ids_tensor(&[next])?;
        (next, cache) = step(engine, Start::Tokens(&input), 1, Some(&cache))?;
    }
    Ok((prefill, t.elapsed().as_secs_f64()))
}

/// A forward keeping its cache; the greedy next token (read back, so the work is finished).
fn step(
    engine: &Engine,
    start: Start,
    len: usize,
    past: Option<&KvCache>,
) -> Result<(u32, KvCache)> {
    let mut trace = engine.forward(start, past, &Hooks::logits_at_and_cache(len - 1))?;
    let logits: Tensor = trace.take_logits()?;
    let next = logits.flatten_all()?.argmax(0)?.to_scalar::<u32>()?;
    Ok((next, trace.take_kv_cache()?))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
