//! `summary.json`: every number the study's report states, computed from the unit files by
//! [`super::report`] and read by the findings writer and the figures. Nothing in the report is
//! computed anywhere else, so the report and its numbers cannot disagree.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::stats::Interval;

/// The whole study's numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// What was run (copied from the resolved configuration).
    pub design: Design,
    pub models: Vec<ModelSummary>,
    pub overlaps: Overlaps,
}

/// The study's design as the report describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Design {
    /// Model labels, in configuration order.
    pub models: Vec<String>,
    /// Head-finding methods that were detected and ablated (study method keys, e.g. `retrieval`).
    pub methods: Vec<String>,
    /// Every category, sorted.
    pub categories: Vec<String>,
    /// The categories whose answers are numbers (the "numerical vs categorical" question).
    pub numerical_categories: Vec<String>,
    /// Ablation sizes, ascending; 0 is the clean model.
    pub ks: Vec<usize>,
    /// Random draws per k.
    pub draws: usize,
    /// Size of each method's top list (the random heads are drawn from outside it).
    pub top_n: usize,
    /// `zero`, `mean` or `uniform`.
    pub ablation_mode: String,
    /// `all` or `decode-only`.
    pub positions: String,
    pub seed: u64,
    /// Bootstrap resamples behind every interval.
    pub bootstrap: usize,
    /// Per category: training and test samples used.
    pub train_samples: BTreeMap<String, usize>,
    pub test_samples: BTreeMap<String, usize>,
}

/// One model's detection and ablation results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    pub model: String,
    /// `llama`, `qwen2`, ...
    pub arch: String,
    pub layers: usize,
    pub heads: usize,
    /// Per category: accuracy of the unablated model on the test samples.
    pub clean_accuracy: BTreeMap<String, Estimate>,
    /// One per method × category.
    pub detect: Vec<Detection>,
    /// One per method × category.
    pub experiments: Vec<Experiment>,
}

/// A proportion or mean with its 95 % bootstrap interval over `n` samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
    pub n: usize,
}

impl Estimate {
    pub fn from_interval(i: Interval, n: usize) -> Estimate {
        Estimate {
            value: i.mean,
            lo: i.lo,
            hi: i.hi,
            n,
        }
    }
}

/// A head, `L{layer}H{head}`, with its score over the training samples of one category.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankedHead {
    pub layer: usize,
    pub head: usize,
    pub mean: f64,
    pub sd: f64,
    /// Samples the mean is over (the success-only retrieval score counts only correct answers).
    pub n: usize,
}

/// What detection found for one model × method × category.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub method: String,
    pub category: String,
    /// Training samples of the category (the mean of some methods is over fewer: see `top[i].n`).
    pub train_samples: usize,
    /// The `top_n` best heads, best first.
    pub top: Vec<RankedHead>,
    /// Fraction of all heads whose mean score exceeds 0.1 (Wu et al. report it for retrieval).
    pub fraction_above_0_1: f64,
    /// Counts of the top heads per tenth of relative depth `layer / (layers − 1)`.
    pub depth_histogram: [usize; 10],
    /// Mean relative depth of the top heads (0 = first layer, 1 = last).
    pub mean_relative_depth: f64,
    /// Jaccard of the top list recomputed on bootstrap resamples of the training samples with the
    /// top list itself: how stable the ranking is.
    pub rank_stability: Estimate,
}

/// One ablation experiment: model × method × category, over the category's test samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    pub method: String,
    pub category: String,
    pub test_samples: usize,
    /// One per k, ascending (k = 0 is the clean model in every condition).
    pub points: Vec<CurvePoint>,
}

/// Accuracy and answer log-prob at one k.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub k: usize,
    /// Accuracy with the method's top-k heads ablated.
    pub top: Estimate,
    /// Random k-sets drawn outside the method's top list.
    pub random: RandomEstimate,
    /// The same number of heads per layer as the top-k, drawn at random outside it.
    pub layer_matched: Estimate,
    /// Mean log-prob of the clean answer under the top-k ablation.
    pub top_logprob: Estimate,
    /// The same under the random ablations (per sample, the mean over draws).
    pub random_logprob: Estimate,
    /// Paired permutation test of top-k vs random-k correctness (per sample: top minus the mean
    /// over draws), two-sided.
    pub p_top_vs_random: f64,
    /// Exact McNemar test of top-k vs layer-matched correctness on the same samples.
    pub p_top_vs_layer_matched: f64,
}

/// Random-draw accuracy: each draw's accuracy, their mean ± sd, and a pooled interval (bootstrap
/// over samples of the per-sample mean over draws).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RandomEstimate {
    pub per_draw: Vec<f64>,
    pub mean: f64,
    pub sd: f64,
    pub pooled: Estimate,
}

/// Overlap of top lists.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Overlaps {
    /// Per model × method: category × category.
    pub between_categories: Vec<JaccardMatrix>,
    /// Per model × category: method × method.
    pub between_methods: Vec<JaccardMatrix>,
    /// Per method × category, for each pair of models with the same shape (layers × heads).
    pub between_models: Vec<ModelPairJaccard>,
}

/// Pairwise Jaccard of top lists, beside what two random sets of the same sizes give.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JaccardMatrix {
    pub model: String,
    /// The method (for a category matrix) or the category (for a method matrix).
    pub within: String,
    pub labels: Vec<String>,
    pub values: Vec<Vec<f64>>,
    /// The expected Jaccard of two random sets of the top list's size among all heads.
    pub random: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelPairJaccard {
    pub models: [String; 2],
    pub method: String,
    pub category: String,
    pub jaccard: f64,
    pub random: f64,
}
