//! The study's numbers (issue 11, item 6): [`summarize`] reads every unit and computes the
//! [`Summary`] that `summary.json`, FINDINGS.md and the figures are made from. It refuses while
//! units are missing. Every interval is a seeded bootstrap, so the summary is byte-identical
//! for the same units.

use std::collections::{BTreeMap, BTreeSet};

use super::ablate::{AblateUnit, CleanUnit, Control};
use super::config::ModelRecord;
use super::detect::{DetectMethod, DetectUnit, HeadStats};
use super::run::{ablate_unit, clean_unit, Study};
use super::stats::{
    bootstrap_mean_ci, jaccard, mcnemar_exact, paired_permutation_p, percentile_interval,
    random_jaccard,
};
use super::summary::*;
use crate::analysis::rng::{derive_seed, SplitMix64};
use crate::{Error, Result};

const LEVEL: f64 = 0.95;
/// Bootstrap resamples of the training split behind rank stability.
const STABILITY_RESAMPLES: usize = 200;
/// Monte Carlo assignments of the permutation test (beyond 16 samples, where it is exact).
const PERMUTATIONS: usize = 20_000;

/// An estimate of the mean of `values` with its bootstrap interval (all zero for no values).
fn estimate(values: &[f64], resamples: usize, seed: u64) -> Estimate {
    match bootstrap_mean_ci(values, resamples, LEVEL, seed) {
        Some(i) => Estimate::from_interval(i, values.len()),
        None => Estimate {
            value: 0.0,
            lo: 0.0,
            hi: 0.0,
            n: 0,
        },
    }
}

fn bit(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// The whole summary; an error lists what is missing.
pub fn summarize(study: &Study) -> Result<Summary> {
    study.check_complete()?;
    let record = study.read_record()?;
    let labels = study.model_labels();
    let mut models = Vec::new();
    let mut tops: BTreeMap<(String, String, String), BTreeSet<(usize, usize)>> = BTreeMap::new();
    for label in &labels {
        let rec = record
            .provenance
            .models
            .iter()
            .find(|m| &m.label == label)
            .ok_or_else(|| Error::Study(format!("config.toml has no record of model {label}")))?;
        let m = model_summary(study, rec)?;
        for d in &m.detect {
            let set = d.top.iter().map(|h| (h.layer, h.head)).collect();
            tops.insert((label.clone(), d.method.clone(), d.category.clone()), set);
        }
        models.push(m);
    }
    let overlaps = overlaps(study, &models, &tops);
    Ok(Summary {
        design: design(study),
        models,
        overlaps,
    })
}

fn design(study: &Study) -> Design {
    let cfg = &study.cfg;
    let count = |side: Vec<super::run::Chosen>| {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for c in side {
            *m.entry(c.sample.category().unwrap_or("").to_string())
                .or_default() += 1;
        }
        m
    };
    Design {
        models: study.model_labels(),
        methods: cfg.methods.iter().map(|m| m.key().to_string()).collect(),
        categories: study.categories(),
        numerical_categories: cfg.numerical_categories.clone(),
        ks: cfg.k_grid(),
        draws: cfg.draws,
        top_n: cfg.top_n,
        ablation_mode: cfg.ablation.label().to_string(),
        positions: cfg.positions.label().to_string(),
        seed: cfg.seed,
        bootstrap: cfg.bootstrap,
        train_samples: count(study.train()),
        test_samples: count(study.test()),
    }
}

fn model_summary(study: &Study, rec: &ModelRecord) -> Result<ModelSummary> {
    let label = rec.label.as_str();
    let cfg = &study.cfg;
    let shape = (rec.layers, rec.heads);
    let units = study.detect_units(label)?;
    let used: Vec<&DetectUnit> = units.iter().filter(|u| u.skipped.is_none()).collect();
    let mut detect = Vec::new();
    for &m in &cfg.methods {
        for cat in study.categories() {
            let stats = HeadStats::over(m, &cat, &used, shape)?;
            detect.push(detection(study, label, &stats, &used, shape)?);
        }
    }
    let cleans: Vec<CleanUnit> = study
        .test()
        .iter()
        .map(|c| study.store.read(&clean_unit(label, &c.key)))
        .collect::<Result<_>>()?;
    let mut clean_accuracy = BTreeMap::new();
    for cat in study.categories() {
        let xs: Vec<f64> = cleans
            .iter()
            .filter(|u| u.category == cat && u.skipped.is_none())
            .map(|u| bit(u.correct))
            .collect();
        let seed = derive_seed(cfg.seed, &[label, "clean", &cat]);
        clean_accuracy.insert(cat, estimate(&xs, cfg.bootstrap, seed));
    }
    let mut experiments = Vec::new();
    for &m in &cfg.methods {
        for cat in study.categories() {
            experiments.push(experiment(study, label, m, &cat, &cleans)?);
        }
    }
    Ok(ModelSummary {
        model: label.to_string(),
        arch: rec.arch.clone(),
        layers: rec.layers,
        heads: rec.heads,
        clean_accuracy,
        detect,
        experiments,
    })
}

fn detection(
    study: &Study,
    label: &str,
    stats: &HeadStats,
    used: &[&DetectUnit],
    shape: (usize, usize),
) -> Result<Detection> {
    let cfg = &study.cfg;
    let top = stats.top(cfg.top_n);
    let layers = shape.0;
    let mut depth_histogram = [0usize; 10];
    let mut depth_sum = 0.0;
    for h in &top {
        let depth = if layers > 1 {
            h.layer as f64 / (layers - 1) as f64
        } else {
            0.0
        };
        depth_sum += depth;
        depth_histogram[((depth * 10.0) as usize).min(9)] += 1;
    }
    let key = stats.method.key();
    let seed = derive_seed(cfg.seed, &[label, key, &stats.category, "stability"]);
    let rank_stability = rank_stability(stats, used, shape, cfg.top_n, seed)?;
    let train_samples = used.iter().filter(|u| u.category == stats.category).count();
    Ok(Detection {
        method: key.to_string(),
        category: stats.category.clone(),
        train_samples,
        fraction_above_0_1: stats.fraction_above(0.1),
        mean_relative_depth: depth_sum / top.len().max(1) as f64,
        depth_histogram,
        top,
        rank_stability,
    })
}

/// Jaccard between the top list and the top lists of bootstrap resamples of the samples that
/// count for the method: its mean and 95 % percentile interval.
fn rank_stability(
    stats: &HeadStats,
    used: &[&DetectUnit],
    shape: (usize, usize),
    top_n: usize,
    seed: u64,
) -> Result<Estimate> {
    let own: Vec<&DetectUnit> = used
        .iter()
        .copied()
        .filter(|u| u.category == stats.category && stats.method.counts(u.correct))
        .collect();
    let reference: BTreeSet<(usize, usize)> =
        stats.top(top_n).iter().map(|h| (h.layer, h.head)).collect();
    if own.is_empty() {
        return Ok(estimate(&[], 1, seed));
    }
    let mut rng = SplitMix64::new(seed);
    let mut values = Vec::with_capacity(STABILITY_RESAMPLES);
    for _ in 0..STABILITY_RESAMPLES {
        let resample: Vec<&DetectUnit> =
            (0..own.len()).map(|_| own[rng.below(own.len())]).collect();
        let s = HeadStats::over(stats.method, &stats.category, &resample, shape)?;
        let set: BTreeSet<(usize, usize)> =
            s.top(top_n).iter().map(|h| (h.layer, h.head)).collect();
        values.push(jaccard(&reference, &set));
    }
    Ok(Estimate::from_interval(
        percentile_interval(&values, LEVEL),
        own.len(),
    ))
}

fn experiment(
    study: &Study,
    label: &str,
    method: DetectMethod,
    category: &str,
    cleans: &[CleanUnit],
) -> Result<Experiment> {
    let cfg = &study.cfg;
    let key = method.key();
    let samples: Vec<&CleanUnit> = cleans
        .iter()
        .filter(|u| u.category == category && u.skipped.is_none())
        .collect();
    let units: Vec<AblateUnit> = samples
        .iter()
        .map(|u| study.store.read(&ablate_unit(label, method, &u.sample)))
        .collect::<Result<_>>()?;
    let seed =
        |what: &str, k: usize| derive_seed(cfg.seed, &[label, key, category, what, &k.to_string()]);
    let mut points = Vec::new();
    for k in cfg.k_grid() {
        // Per sample: top correct, random correct per draw, layer-matched correct, log-probs.
        let mut top = Vec::new();
        let mut random: Vec<Vec<f64>> = vec![Vec::new(); cfg.draws];
        let mut matched = Vec::new();
        let mut top_lp = Vec::new();
        let mut random_lp = Vec::new();
        for (clean, unit) in samples.iter().zip(&units) {
            if k == 0 {
                let c = bit(clean.correct);
                top.push(c);
                matched.push(c);
                random.iter_mut().for_each(|r| r.push(c));
                top_lp.push(clean.answer_logprob);
                random_lp.push(clean.answer_logprob);
                continue;
            }
            let at = |control: Control| {
                unit.conditions
                    .iter()
                    .filter(move |r| r.k == k && r.control == control)
            };
            let t = at(Control::Top).next().ok_or_else(|| missing(unit, k))?;
            let l = at(Control::LayerMatched)
                .next()
                .ok_or_else(|| missing(unit, k))?;
            top.push(bit(t.correct));
            top_lp.push(t.clean_answer_logprob);
            matched.push(bit(l.correct));
            let draws: Vec<_> = at(Control::Random).collect();
            if draws.len() != cfg.draws {
                return Err(missing(unit, k));
            }
            for d in &draws {
                random[d.draw].push(bit(d.correct));
            }
            random_lp.push(
                draws.iter().map(|d| d.clean_answer_logprob).sum::<f64>() / draws.len() as f64,
            );
        }
        let n = top.len();
        let per_sample_random: Vec<f64> = (0..n)
            .map(|i| random.iter().map(|d| d[i]).sum::<f64>() / cfg.draws as f64)
            .collect();
        let per_draw: Vec<f64> = random
            .iter()
            .map(|d| d.iter().sum::<f64>() / n.max(1) as f64)
            .collect();
        let (mean, sd) = super::detect::mean_sd(&per_draw);
        let diffs: Vec<f64> = top
            .iter()
            .zip(&per_sample_random)
            .map(|(t, r)| t - r)
            .collect();
        let (b, c) = top.iter().zip(&matched).fold((0, 0), |(b, c), (&t, &m)| {
            (b + usize::from(t > m), c + usize::from(t < m))
        });
        points.push(CurvePoint {
            k,
            top: estimate(&top, cfg.bootstrap, seed("top", k)),
            random: RandomEstimate {
                per_draw,
                mean,
                sd,
                pooled: estimate(&per_sample_random, cfg.bootstrap, seed("random", k)),
            },
            layer_matched: estimate(&matched, cfg.bootstrap, seed("layer", k)),
            top_logprob: estimate(&top_lp, cfg.bootstrap, seed("top-lp", k)),
            random_logprob: estimate(&random_lp, cfg.bootstrap, seed("random-lp", k)),
            p_top_vs_random: paired_permutation_p(&diffs, PERMUTATIONS, seed("perm", k)),
            p_top_vs_layer_matched: mcnemar_exact(b, c),
        });
    }
    Ok(Experiment {
        method: key.to_string(),
        category: category.to_string(),
        test_samples: samples.len(),
        points,
    })
}

fn missing(unit: &AblateUnit, k: usize) -> Error {
    Error::Study(format!(
        "ablation of {} ({}) lacks conditions at k = {k}; delete the file to recompute it",
        unit.sample,
        unit.method.key()
    ))
}

fn overlaps(
    study: &Study,
    models: &[ModelSummary],
    tops: &BTreeMap<(String, String, String), BTreeSet<(usize, usize)>>,
) -> Overlaps {
    let cfg = &study.cfg;
    let categories = study.categories();
    let methods: Vec<String> = cfg.methods.iter().map(|m| m.key().to_string()).collect();
    type Set = BTreeSet<(usize, usize)>;
    let matrix =
        |model: &str, within: &str, labels: &[String], sets: Vec<Option<&Set>>, total: usize| {
            let values = sets
                .iter()
                .map(|a| {
                    sets.iter()
                        .map(|b| match (a, b) {
                            (Some(x), Some(y)) => jaccard(x, y),
                            _ => 0.0,
                        })
                        .collect()
                })
                .collect();
            JaccardMatrix {
                model: model.to_string(),
                within: within.to_string(),
                labels: labels.to_vec(),
                values,
                random: random_jaccard(total, cfg.top_n.min(total), cfg.top_n.min(total)),
            }
        };
    let mut between_categories = Vec::new();
    let mut between_methods = Vec::new();
    for m in models {
        let total = m.layers * m.heads;
        for method in &methods {
            let sets = categories
                .iter()
                .map(|c| tops.get(&(m.model.clone(), method.clone(), c.clone())))
                .collect();
            between_categories.push(matrix(&m.model, method, &categories, sets, total));
        }
        for cat in &categories {
            let sets = methods
                .iter()
                .map(|me| tops.get(&(m.model.clone(), me.clone(), cat.clone())))
                .collect();
            between_methods.push(matrix(&m.model, cat, &methods, sets, total));
        }
    }
    let mut between_models = Vec::new();
    for (i, a) in models.iter().enumerate() {
        for b in &models[i + 1..] {
            if (a.layers, a.heads) != (b.layers, b.heads) {
                continue;
            }
            let total = a.layers * a.heads;
            for method in &methods {
                for cat in &categories {
                    let key = |m: &str| (m.to_string(), method.clone(), cat.clone());
                    if let (Some(x), Some(y)) = (tops.get(&key(&a.model)), tops.get(&key(&b.model)))
                    {
                        between_models.push(ModelPairJaccard {
                            models: [a.model.clone(), b.model.clone()],
                            method: method.clone(),
                            category: cat.clone(),
                            jaccard: jaccard(x, y),
                            random: random_jaccard(total, cfg.top_n, cfg.top_n),
                        });
                    }
                }
            }
        }
    }
    Overlaps {
        between_categories,
        between_methods,
        between_models,
    }
}
