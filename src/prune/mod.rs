//! `headscope prune` (issue 14): interpretation-guided head pruning of a decoder, with retention
//! curves against magnitude and random pruning and the measured speed of the pruned model.
//!
//! The design follows the encoder work it extends (prune 30 / 50 / 68 % of the heads guided by
//! mechanistic importance, report the performance retained and the speed-up; that work names
//! decoder-only models as future work). The phases, each resumable through
//! [`crate::study::units::UnitStore`] units under the output folder:
//! 1. [`importance`]: every head's importance over a calibration subset of the study's training
//!    split (AtP, the exact ablation Δ, ARC-JSD), read from the study's detection (the three
//!    study scores), or from the weights (magnitude); random draws need no data;
//! 2. [`select`]: at each sparsity the lowest-importance heads are pruned (globally, or the same
//!    share per layer), never the circuit's heads when protection is on; the prunings are written
//!    as `pruning/<method>-<sparsity>[-d<draw>].json`, loadable with `--prune`;
//! 3. [`evaluate`]: every pruning on a subset of the test split, by the study's batched masked
//!    zero ablation (the masked model equals the sliced one);
//! 4. [`speed`]: each pruning loaded as a pruned model, prefill and decode tokens/s against the
//!    unpruned model in the same run;
//! 5. [`report`]: `retention.json`, `retention.md` and `figures/retention.{svg,png}`.

pub mod data;
pub mod evaluate;
pub mod importance;
pub mod report;
pub mod run;
pub mod select;
pub mod speed;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::analysis::report::HeadScore;
use crate::{Error, Result};

/// How heads are ranked for pruning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PruneMethod {
    /// A head score of `analyze`: computed on the calibration samples (`atp`, `ablation`,
    /// `arc_jsd`) or read from the study's detection (`summed_attention`, `retrieval`,
    /// `qrhead`).
    Score(HeadScore),
    /// The Frobenius norm of the head's weights (see [`importance::magnitude`]).
    Magnitude,
    /// Seeded random importance, one draw per `--draws`.
    Random,
}

/// Where a method's importance comes from, which sets its cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// One forward and backward per calibration sample (AtP).
    Cheap,
    /// `L·H` ablated tails or one run per source per sample (exact ablation, ARC-JSD): the smaller
    /// `--calibration-exact` subset.
    Exact,
    /// The study's `detect/<model>/<method>/<category>.json`.
    Study,
    /// The model's weights.
    Weights,
    /// Seeded draws.
    Random,
}

impl PruneMethod {
    /// Every method, in report order.
    pub const ALL: [PruneMethod; 8] = [
        PruneMethod::Score(HeadScore::Atp),
        PruneMethod::Score(HeadScore::Ablation),
        PruneMethod::Score(HeadScore::ArcJsd),
        PruneMethod::Score(HeadScore::Retrieval),
        PruneMethod::Score(HeadScore::SummedAttention),
        PruneMethod::Score(HeadScore::QrHead),
        PruneMethod::Magnitude,
        PruneMethod::Random,
    ];

    /// Its name in files, tables and `--methods`.
    pub fn key(self) -> &'static str {
        match self {
            PruneMethod::Score(h) => h.key(),
            PruneMethod::Magnitude => "magnitude",
            PruneMethod::Random => "random",
        }
    }

    pub fn source(self) -> Source {
        match self {
            PruneMethod::Score(HeadScore::Atp) => Source::Cheap,
            PruneMethod::Score(HeadScore::Ablation | HeadScore::ArcJsd | HeadScore::Patching) => {
                Source::Exact
            }
            PruneMethod::Score(_) => Source::Study,
            PruneMethod::Magnitude => Source::Weights,
            PruneMethod::Random => Source::Random,
        }
    }

    /// Whether it has one pruning per draw.
    pub fn drawn(self) -> bool {
        self == PruneMethod::Random
    }
}

impl fmt::Display for PruneMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

impl FromStr for PruneMethod {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let key = s.trim().trim_start_matches("heads:").replace('-', "_");
        PruneMethod::ALL
            .into_iter()
            .find(|m| m.key() == key)
            .ok_or_else(|| {
                let names: Vec<String> = PruneMethod::ALL
                    .iter()
                    .map(|m| m.key().replace('_', "-"))
                    .collect();
                format!("unknown method `{s}` (known: {})", names.join(", "))
            })
    }
}

impl Serialize for PruneMethod {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.key())
    }
}

impl<'de> Deserialize<'de> for PruneMethod {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Everything the results depend on, recorded as `DIR/config.json`; a folder holding another
/// configuration is refused (its units would mix two designs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PruneConfig {
    /// The model as given (a .gguf file, a folder or a hub id).
    pub model: String,
    /// The study folder: its split, prompt format and (for the study scores) its detection.
    pub study: PathBuf,
    pub methods: Vec<PruneMethod>,
    /// Fractions of the heads pruned, each strictly between 0 and 1.
    pub sparsities: Vec<f64>,
    /// Also prune the same fraction of whole MLP blocks.
    pub mlp: bool,
    /// Random draws (random pruning only).
    pub draws: usize,
    /// Never prune the heads activation patching marks as carrying the answer.
    pub protect_circuit: bool,
    /// How many heads protection keeps: the top ones by mean patching effect (positive only).
    pub protect_top: usize,
    /// Prune the same share of each layer instead of one global ranking.
    pub layer_adaptive: bool,
    /// Calibration samples per category (AtP, the cheap scores).
    pub calibration: usize,
    /// Calibration samples per category for the exact scores (ablation, ARC-JSD, patching): the
    /// first ones of the same seeded order, so a subset of the `calibration` ones.
    pub calibration_exact: usize,
    /// Test samples per category.
    pub eval: usize,
    pub seed: u64,
    /// Pruned conditions per batched forward.
    pub batch: usize,
    /// Bootstrap resamples behind every interval.
    pub bootstrap: usize,
}

impl Default for PruneConfig {
    fn default() -> Self {
        PruneConfig {
            model: String::new(),
            study: PathBuf::from("studies/filings"),
            methods: PruneMethod::ALL.to_vec(),
            sparsities: vec![0.3, 0.5, 0.68],
            mlp: false,
            draws: 5,
            protect_circuit: false,
            protect_top: 10,
            layer_adaptive: false,
            calibration: 8,
            calibration_exact: 2,
            eval: 10,
            seed: 0,
            batch: 8,
            bootstrap: 2000,
        }
    }
}

impl PruneConfig {
    /// Checks what can be checked without data or a model.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Pruning(m));
        if self.methods.is_empty() {
            return bad("no method: give --methods".into());
        }
        if self.sparsities.is_empty() {
            return bad("no sparsity: give --sparsity".into());
        }
        if let Some(s) = self.sparsities.iter().find(|s| !(**s > 0.0 && **s < 1.0)) {
            return bad(format!(
                "sparsity {s} is outside (0, 1): give the fraction of heads pruned, e.g. 0.5"
            ));
        }
        if self.draws == 0 {
            return bad("--draws must be at least 1".into());
        }
        if self.calibration == 0 || self.calibration_exact == 0 || self.eval == 0 {
            return bad("--calibration, --calibration-exact and --eval must be at least 1".into());
        }
        if self.batch == 0 || self.bootstrap == 0 {
            return bad("--batch and --bootstrap must be at least 1".into());
        }
        if self.protect_circuit && self.protect_top == 0 {
            return bad("--protect-top must be at least 1 with --protect-circuit".into());
        }
        Ok(())
    }

    /// The sparsities sorted, without repeats.
    pub fn sparsity_grid(&self) -> Vec<f64> {
        let mut s = self.sparsities.clone();
        s.sort_by(f64::total_cmp);
        s.dedup();
        s
    }

    /// Every pruning's name ([`condition_name`]) the configuration gives, in plan order.
    pub fn condition_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for &method in &self.methods {
            for sparsity in self.sparsity_grid() {
                for draw in self.draws_of(method) {
                    names.push(condition_name(method, sparsity, draw));
                }
            }
        }
        names
    }

    /// The draws of a method: `0..draws` for random, `[0]` otherwise.
    pub fn draws_of(&self, method: PruneMethod) -> std::ops::Range<usize> {
        match method.drawn() {
            true => 0..self.draws,
            false => 0..1,
        }
    }
}

/// A sparsity as a percentage label: `0.3` → `30`, `0.675` → `67.5`.
pub fn percent(s: f64) -> String {
    let p = (s * 1000.0).round() / 10.0;
    if p.fract() == 0.0 {
        format!("{p:.0}")
    } else {
        format!("{p:.1}")
    }
}

/// `<method>-<sparsity %>[-d<draw>]`: a condition's name in file names and tables.
pub fn condition_name(method: PruneMethod, sparsity: f64, draw: usize) -> String {
    match method.drawn() {
        true => format!("{}-{}-d{draw}", method.key(), percent(sparsity)),
        false => format!("{}-{}", method.key(), percent(sparsity)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_parse_by_key_and_bad_ones_name_the_known() {
        for m in PruneMethod::ALL {
            assert_eq!(m.key().replace('_', "-").parse::<PruneMethod>(), Ok(m));
        }
        let err = "foo".parse::<PruneMethod>().unwrap_err();
        assert!(err.contains("unknown method `foo`") && err.contains("magnitude"));
    }

    #[test]
    fn sparsity_labels_and_bad_configs() {
        assert_eq!(percent(0.3), "30");
        assert_eq!(percent(0.68), "68");
        assert_eq!(percent(0.675), "67.5");
        let cfg = PruneConfig {
            sparsities: vec![0.5, 1.0],
            ..PruneConfig::default()
        };
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("outside (0, 1)"));
        let cfg = PruneConfig {
            draws: 0,
            ..PruneConfig::default()
        };
        assert!(cfg.validate().unwrap_err().to_string().contains("--draws"));
        assert!(PruneConfig::default().validate().is_ok());
    }
}
