//! Measured speed of a pruned model against the unpruned one, in the same run: prefill tokens/s
//! on a test prompt and decode tokens/s over a fixed number of greedy steps, the median of a few
//! repeats, the two models alternating within each repeat so that both see the same machine load
//! ([`crate::engine::speed::measure_interleaved`], which `bench prune` uses too).
//! Never an estimate from parameter counts. Each pruning's result is its own unit
//! (`speed/<condition>.json`): delete `DIR/speed/` to measure again (e.g. after an engine change)
//! without recomputing importance or evaluation.

use serde::{Deserialize, Serialize};

pub use crate::engine::speed::Throughput;

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
