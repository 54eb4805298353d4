//! Measured speed of a pruned model against the unpruned one, in the same run: prefill tokens/s
//! on a test prompt and decode tokens/s over a fixed number of greedy steps, the median of a few
//! repeats, the two models alternating within each repeat so that both see the same machine load.
//! Never an estimate from parameter counts. Each pruning's result is its own unit
//! (`speed/<condition>.json`): delete `DIR/speed/` to measure again (e.g. after an engine change)
//! without recomputing importance or evaluation.

use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::engine::decoder::greedy_pick;
use crate::engine::{Decoder, Engine, Hooks};
use crate::Result;

/// Tokens per second of one model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
}

/// How a measurement is taken.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpeedSettings {
    /// Decode steps after the prompt (each one token).
    pub decode_steps: usize,
    /// Repeats; the median is reported.
    pub repeats: usize,
}

impl Default for SpeedSettings {
    fn default() -> Self {
        SpeedSettings {
            decode_steps: 32,
            repeats: 3,
        }
    }
}

/// One pruning's measured speed: `speed/<condition>.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpeedUnit {
    pub condition: String,
    pub prompt_tokens: usize,
    pub settings: SpeedSettings,
    /// The engine's device and dtype.
    pub device: String,
    pub unpruned: Throughput,
    pub pruned: Throughput,
    /// pruned / unpruned prefill tokens/s.
    pub prefill_speedup: f64,
    /// pruned / unpruned decode tokens/s.
    pub decode_speedup: f64,
}

/// Seconds for the prefill of `prompt` and for `steps` single-token decode steps after it.
pub fn time_once(engine: &Engine, prompt: &[u32], steps: usize) -> Result<(f64, f64)> {
    let t = Instant::now();
    let mut decoder = Decoder::prefill(engine, &Hooks::default(), prompt, 1, &[])?;
    let prefill = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..steps {
        let row = decoder.logits()?.flatten_all()?.to_device(&Device::Cpu)?;
        let next = greedy_pick(&row.to_vec1::<f32>()?, &[]).map_or(0, |p| p.0);
        decoder.step(&[next])?;
    }
    Ok((prefill, t.elapsed().as_secs_f64()))
}

/// The unpruned and the pruned model's throughput on `prompt`, medians of `settings.repeats`
/// alternating runs (after one warm-up run of each).
pub fn measure(
    unpruned: &Engine,
    pruned: &Engine,
    prompt: &[u32],
    settings: SpeedSettings,
) -> Result<(Throughput, Throughput)> {
    let steps = settings.decode_steps.max(1);
    time_once(unpruned, prompt, 1)?;
    time_once(pruned, prompt, 1)?;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..settings.repeats.max(1) {
        a.push(time_once(unpruned, prompt, steps)?);
        b.push(time_once(pruned, prompt, steps)?);
    }
    let rate = |runs: &[(f64, f64)]| Throughput {
        prefill_tokens_per_s: prompt.len() as f64 / median(runs.iter().map(|r| r.0)),
        decode_tokens_per_s: steps as f64 / median(runs.iter().map(|r| r.1)),
    };
    Ok((rate(&a), rate(&b)))
}

fn median(xs: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = xs.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
