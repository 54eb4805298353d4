//! Head importance: higher = removing the head hurts the answer more.
//!
//! * Scores computed per calibration sample ([`sample_scores`], on the model's own greedy answer,
//!   through the same runners as `analyze` and the study): `atp` and `ablation` are a Δ summed
//!   answer log-prob when the head is zero-ablated (AtP's first-order estimate, or the exact
//!   sweep), so importance is **−Δ** (signed, not |Δ|: a head whose removal *raises* the answer's
//!   log-prob is the least important, pruned first); `arc_jsd` is positive where the head matters
//!   and is used as is. The importance is the mean over the calibration samples.
//! * The study scores (`summed_attention`, `retrieval`, `qrhead`) are the study's detection
//!   statistics (`detect/<model>/<method>/<category>.json`), averaged over categories weighted by
//!   each category's sample count, i.e. the mean over the study's training samples that count
//!   for the method.
//! * [`magnitude`]: the weights alone.
//! * `--mlp`: an MLP block's importance is −Δ summed answer log-prob when its output is zeroed
//!   (exact, one batched forward per sample: [`mlp_deltas`]) for every interpretation method,
//!   the Frobenius norm of `down_proj` for magnitude, and a seeded draw for random.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::data::Keyed;
use crate::analysis::report::HeadScore;
use crate::analysis::Subject;
use crate::engine::generate::answer_logprob_per_row;
use crate::engine::{Capture, Engine, Hooks, Start};
use crate::study::detect::{answer_needle, detect_sample, DetectMethod, HeadStats};
use crate::{Error, Result};

/// One calibration sample's raw scores for one score: `importance/<score>/<sample>.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreUnit {
    pub sample: String,
    pub category: String,
    /// The model's greedy answer the score is computed on.
    pub answer: String,
    /// `[layers][heads]` as the score's runner gives it (Δ log-prob for `atp` / `ablation`);
    /// for the `mlp` unit `[[Δ per layer]]`.
    pub scores: Vec<Vec<f64>>,
    /// Why the sample has no scores (an empty answer); left out of the mean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// A method's importance, `importance/<method>.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Importance {
    pub method: String,
    /// Samples the mean is over (0 for magnitude).
    pub samples: usize,
    /// `[layers][heads]`, higher = more needed.
    pub heads: Vec<Vec<f64>>,
    /// Per layer (with `--mlp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlps: Option<Vec<f64>>,
}

/// The key of the MLP-ablation units (`importance/mlp/<sample>.json`).
pub const MLP_SCORE: &str = "mlp";

/// The scores `scores` for one prepared calibration sample, raw, keyed by the score's key.
pub fn sample_scores(
    engine: &Engine,
    subject: &Subject,
    scores: &[HeadScore],
) -> Result<BTreeMap<String, Vec<Vec<f64>>>> {
    let gold = subject.sample.gold().unwrap_or(0);
    let needle = answer_needle(subject, gold);
    let methods: Vec<DetectMethod> = scores.iter().map(|&h| DetectMethod::Score(h)).collect();
    detect_sample(engine, subject, gold, &needle, &methods)
}

/// Δ summed answer log-prob when each MLP block's output is zeroed, `[layers]`: one forward of
/// `L` rows, row `l` with MLP `l` removed.
pub fn mlp_deltas(engine: &Engine, subject: &Subject) -> Result<Vec<f64>> {
    let layers = engine.arch().num_layers;
    let ids = subject.teacher_forced_ids();
    let rows = layers + 1; // the last row is the clean run
    let input = engine.ids_rows(&ids, rows)?;
    let mut mask = vec![1f32; rows * layers];
    for l in 0..layers {
        mask[l * layers + l] = 0.0;
    }
    let trace = engine.forward(
        Start::Tokens(&input),
        None,
        &Hooks {
            mlp_mask: Some(Tensor::from_vec(mask, (rows, layers), engine.device())?),
            capture: Capture {
                logits: Some(subject.answer_rows()),
                ..Default::default()
            },
            ..Default::default()
        },
    )?;
    let lp = answer_logprob_per_row(trace.logits()?, subject.answer_ids())?;
    let clean = lp[layers];
    Ok(lp[..layers].iter().map(|v| v - clean).collect())
}

/// Mean importance over the units that are not skipped: `sign · mean(scores)`.
pub fn mean_importance(units: &[ScoreUnit], sign: f64) -> Result<(usize, Vec<Vec<f64>>)> {
    let used: Vec<&ScoreUnit> = units.iter().filter(|u| u.skipped.is_none()).collect();
    let first = used.first().ok_or_else(|| {
        Error::Pruning("no calibration sample could be scored (every answer was empty)".into())
    })?;
    let mut mean: Vec<Vec<f64>> = first
        .scores
        .iter()
        .map(|row| vec![0.0; row.len()])
        .collect();
    for u in &used {
        for (m, row) in mean.iter_mut().zip(&u.scores) {
            for (v, x) in m.iter_mut().zip(row) {
                *v += sign * x;
            }
        }
    }
    let n = used.len() as f64;
    mean.iter_mut().flatten().for_each(|v| *v /= n);
    Ok((used.len(), mean))
}

/// The study's detection of `score` for model `label`, as importance: per head the mean over
/// categories weighted by each category's count (`n`), times the score's importance sign. A
/// model or score the study did not detect is an error.
pub fn from_study(study: &Path, label: &str, score: HeadScore) -> Result<(usize, Vec<Vec<f64>>)> {
    let dir = study.join("detect").join(label).join(score.key());
    let files = crate::study::units::UnitStore::new(&dir).list_json("")?;
    if files.is_empty() {
        return Err(Error::Pruning(format!(
            "the study {} has no `{}` detection for model {label} ({} is empty or missing): run \
             `headscope study detect --out {} --model <this model> --methods {}` first, or \
             drop `{}` from --methods",
            study.display(),
            score.key(),
            dir.display(),
            study.display(),
            score.key().replace('_', "-"),
            score.key().replace('_', "-")
        )));
    }
    let mut total = 0usize;
    let mut sum: Vec<Vec<f64>> = Vec::new();
    for f in files {
        let path = dir.join(&f);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let stats: HeadStats = serde_json::from_str(&text)
            .map_err(|e| Error::Pruning(format!("{}: {e}", path.display())))?;
        if sum.is_empty() {
            sum = stats.mean.iter().map(|r| vec![0.0; r.len()]).collect();
        }
        for (s, row) in sum.iter_mut().zip(&stats.mean) {
            for (v, x) in s.iter_mut().zip(row) {
                *v += stats.n as f64 * x;
            }
        }
        total += stats.n;
    }
    if total == 0 {
        return Err(Error::Pruning(format!(
            "the study's `{}` detection of {label} counts no sample",
            score.key()
        )));
    }
    let sign = score.importance_sign();
    sum.iter_mut()
        .flatten()
        .for_each(|v| *v *= sign / total as f64);
    Ok((total, sum))
}

/// Weight magnitude, `([layers][heads], [layers])`: a head's importance is
/// `sqrt(‖W_V[g(h)]‖²_F + ‖W_O[:, h]‖²_F)`, where `W_V[g(h)]` are the `d_head` rows of `v_proj`
/// of the head's KV group `g(h) = h / (H / H_kv)` (shared by the group's query heads, so within a
/// group the ranking is by `W_O` alone) and `W_O[:, h]` the head's `d_head` input columns of
/// `o_proj` (what pruning zeroes); an MLP block's is `‖W_down‖_F`. Quantised weights are read as
/// dequantised at load.
pub fn magnitude(engine: &Engine) -> Result<(Vec<Vec<f64>>, Vec<f64>)> {
    let arch = engine.arch();
    let (heads, kv, d) = (arch.num_heads, arch.num_kv_heads, arch.head_dim);
    let per_group = heads / kv.max(1);
    let mut head_norms = Vec::new();
    let mut mlp_norms = Vec::new();
    for layer in &engine.weights().layers {
        let v_rows = layer.qkv_weight.narrow(0, (heads + kv) * d, kv * d)?;
        let v_sq = sq_norms(&v_rows, 0, kv, d)?;
        let o_sq = sq_norms(&layer.o_weight, 1, heads, d)?;
        head_norms.push(
            (0..heads)
                .map(|h| (v_sq[h / per_group] + o_sq[h]).sqrt())
                .collect(),
        );
        mlp_norms.push(sq_norms(&layer.down_weight, 0, 1, layer.down_weight.dim(0)?)?[0].sqrt());
    }
    Ok((head_norms, mlp_norms))
}

/// Squared Frobenius norms of `n` consecutive blocks of `size` along `dim` of a matrix.
fn sq_norms(m: &Tensor, dim: usize, n: usize, size: usize) -> Result<Vec<f64>> {
    let m = m.to_dtype(DType::F64)?.to_device(&Device::Cpu)?;
    (0..n)
        .map(|i| {
            Ok(m.narrow(dim, i * size, size)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?)
        })
        .collect()
}

/// Per-layer MLP importance from the MLP-ablation units: `−mean Δ`.
pub fn mlp_importance(units: &[ScoreUnit]) -> Result<Vec<f64>> {
    let (_, m) = mean_importance(units, -1.0)?;
    Ok(m.into_iter().next().unwrap_or_default())
}

/// A calibration sample as the model answers it, or the reason it cannot.
pub fn prepare(
    engine: &Engine,
    keyed: &Keyed,
    format: &crate::prompt::PromptFormat,
    max_new_tokens: usize,
) -> Result<std::result::Result<Subject, String>> {
    let gen = crate::engine::GenerationConfig {
        max_new_tokens,
        ..Default::default()
    };
    match Subject::prepare(engine, keyed.sample.clone(), format, &gen, true, |_| true) {
        Ok(s) => Ok(Ok(s)),
        Err(Error::Analysis(reason)) => Ok(Err(reason)),
        Err(e) => Err(e),
    }
}
