//! Ablation (issue 11, item 5): on each test sample, the method's top-k heads of the sample's
//! category against k random heads (seeded draws outside the method's top list) and a
//! layer-matched random control, for every k of the grid.
//!
//! The head sets are fixed before any sample runs ([`AblationPlan`], `ablate/<model>/plan.json`),
//! so every sample of a category sees the same sets. Per sample, every condition of a method is
//! one row of a batched forward ([`run_conditions`]): with positions `all`, one teacher-forced
//! forward of `prompt ++ clean answer` per batch gives each row's clean-answer log-prob and first
//! ablated token, and greedy decoding continues from its cache; with `decode-only`, the clean
//! prompt's cache is shared by every row and only the answer positions run ablated (Wu et al.'s
//! setting: the prompt is read by the intact model).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::config::{AblatedPositions, StudyConfig};
use super::detect::{DetectMethod, HeadStats};
pub use crate::analysis::ablated_decoding::{clean_recording, Head};
use crate::analysis::ablated_decoding::{run_conditions, run_conditions_reusing};
use crate::analysis::ablation::subject_mean_z;
use crate::analysis::rng::{derive_seed, SplitMix64};
use crate::analysis::{answer_is_correct, Subject};
use crate::engine::generate::Recorded;
use crate::engine::{AblationMode, Engine};
use crate::{Error, Result};

/// Which control a condition is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    /// The method's top-k heads.
    Top,
    /// k heads drawn at random outside the method's top list.
    Random,
    /// As many heads per layer as the top-k has, drawn at random outside the top-k.
    LayerMatched,
}

/// The head sets of one k.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanPoint {
    pub k: usize,
    pub top: Vec<Head>,
    /// One set per draw.
    pub random: Vec<Vec<Head>>,
    pub layer_matched: Vec<Head>,
}

/// The head sets of one method × category.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanCell {
    pub method: DetectMethod,
    pub category: String,
    /// The method's top list for the category, best first.
    pub top_list: Vec<Head>,
    /// Ascending k, k > 0.
    pub points: Vec<PlanPoint>,
}

/// Every head set one model's ablation uses, fixed before the first sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AblationPlan {
    pub cells: Vec<PlanCell>,
}

impl AblationPlan {
    /// The plan from the detection statistics (`stats` per method × category).
    pub fn build(
        cfg: &StudyConfig,
        stats: &[HeadStats],
        shape: (usize, usize),
    ) -> Result<AblationPlan> {
        let cells = stats
            .iter()
            .map(|s| plan_cell(cfg, s, shape))
            .collect::<Result<_>>()?;
        Ok(AblationPlan { cells })
    }

    pub fn cell(&self, method: DetectMethod, category: &str) -> Option<&PlanCell> {
        self.cells
            .iter()
            .find(|c| c.method == method && c.category == category)
    }
}

fn rng_for(seed: u64, parts: &[&str]) -> SplitMix64 {
    SplitMix64::new(derive_seed(seed, parts))
}

fn plan_cell(cfg: &StudyConfig, stats: &HeadStats, shape: (usize, usize)) -> Result<PlanCell> {
    let (layers, heads) = shape;
    let top_list: Vec<Head> = stats
        .top(cfg.top_n)
        .iter()
        .map(|r| (r.layer, r.head))
        .collect();
    let in_top: BTreeSet<Head> = top_list.iter().copied().collect();
    let outside: Vec<Head> = (0..layers)
        .flat_map(|l| (0..heads).map(move |h| (l, h)))
        .filter(|x| !in_top.contains(x))
        .collect();
    let key = stats.method.key();
    let category = stats.category.as_str();
    // One permutation per draw; the k-set is its first k heads, so a draw's sets are nested.
    let permutations: Vec<Vec<Head>> = (0..cfg.draws)
        .map(|d| {
            let draw = d.to_string();
            rng_for(cfg.seed, &[key, category, "random", &draw]).choose(&outside, outside.len())
        })
        .collect();
    let points = cfg
        .k_grid()
        .into_iter()
        .filter(|&k| k > 0)
        .map(|k| {
            if k > top_list.len() || k > outside.len() {
                return Err(Error::Study(format!(
                    "k = {k} needs {k} top heads and {k} heads outside the top {} \
                     ({layers} × {heads} heads)",
                    cfg.top_n
                )));
            }
            let top = top_list[..k].to_vec();
            let ks = k.to_string();
            let mut rng = rng_for(cfg.seed, &[key, category, "layer", &ks]);
            Ok(PlanPoint {
                k,
                random: permutations.iter().map(|p| p[..k].to_vec()).collect(),
                layer_matched: layer_matched(&top, &in_top, heads, &mut rng),
                top,
            })
        })
        .collect::<Result<_>>()?;
    Ok(PlanCell {
        method: stats.method,
        category: stats.category.clone(),
        top_list,
        points,
    })
}

/// As many heads per layer as `top` has, drawn from the layer's heads outside the top list, else
/// (when the layer has too few of those) outside `top` itself. Sorted by (layer, head).
fn layer_matched(
    top: &[Head],
    top_list: &BTreeSet<Head>,
    heads: usize,
    rng: &mut SplitMix64,
) -> Vec<Head> {
    let mut per_layer: BTreeMap<usize, usize> = BTreeMap::new();
    for &(l, _) in top {
        *per_layer.entry(l).or_default() += 1;
    }
    let in_top: BTreeSet<Head> = top.iter().copied().collect();
    let mut out = Vec::new();
    for (&l, &count) in &per_layer {
        let outside_list: Vec<Head> = (0..heads)
            .map(|h| (l, h))
            .filter(|x| !top_list.contains(x))
            .collect();
        let pool: Vec<Head> = if outside_list.len() >= count {
            outside_list
        } else {
            (0..heads)
                .map(|h| (l, h))
                .filter(|x| !in_top.contains(x))
                .collect()
        };
        out.extend(rng.choose(&pool, count.min(pool.len())));
    }
    out.sort_unstable();
    out
}

/// One ablated condition of a sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConditionResult {
    pub k: usize,
    pub control: Control,
    /// The draw (0 for top and layer-matched).
    pub draw: usize,
    /// The regenerated (greedy) answer.
    pub answer: String,
    pub correct: bool,
    /// Log-prob of the clean answer under the ablation (teacher-forced).
    pub clean_answer_logprob: f64,
}

/// One test sample's unablated answer: `ablate/<model>/clean/<sample>.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CleanUnit {
    pub sample: String,
    pub category: String,
    pub answer: String,
    pub correct: bool,
    pub answer_logprob: f64,
    /// Why the sample was left out (the model gave an empty answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl CleanUnit {
    /// A sample left out for `reason`: no answer, so no method units.
    pub fn skipped(sample: String, category: String, reason: String) -> CleanUnit {
        CleanUnit {
            sample,
            category,
            answer: String::new(),
            correct: false,
            answer_logprob: 0.0,
            skipped: Some(reason),
        }
    }
}

/// One test sample under one method's conditions: `ablate/<model>/<method>/<sample>.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AblateUnit {
    pub sample: String,
    pub category: String,
    pub method: DetectMethod,
    /// `all` or `decode-only`, and the mode: named in every output.
    pub positions: AblatedPositions,
    pub mode: AblationMode,
    pub conditions: Vec<ConditionResult>,
}

/// The conditions of a plan cell as (k, control, draw, heads), in a fixed order.
pub fn conditions(cell: &PlanCell) -> Vec<(usize, Control, usize, Vec<Head>)> {
    let mut out = Vec::new();
    for p in &cell.points {
        out.push((p.k, Control::Top, 0, p.top.clone()));
        for (d, set) in p.random.iter().enumerate() {
            out.push((p.k, Control::Random, d, set.clone()));
        }
        out.push((p.k, Control::LayerMatched, 0, p.layer_matched.clone()));
    }
    out
}

/// Runs every condition of `cell` on a prepared test sample, `cfg.batch` distinct head sets per
/// forward (a set that two conditions share runs once). With `clean` (the answer's generation
/// recorded with [`clean_recording`]) the fast path [`run_conditions_reusing`] runs; without it,
/// [`run_conditions`]. `keep_going` is polled between forwards (cancellation).
pub fn ablate_sample(
    engine: &Engine,
    subject: &Subject,
    clean: Option<&Recorded>,
    cell: &PlanCell,
    cfg: &StudyConfig,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<Vec<ConditionResult>> {
    let kind = cfg.ablation.resolve(|| subject_mean_z(engine, subject))?;
    let conds = conditions(cell);
    let (sets, which) = distinct_sets(conds.iter().map(|c| &c.3));
    let decoding = cfg.decoding();
    let mut runs = Vec::with_capacity(sets.len());
    for chunk in sets.chunks(cfg.batch) {
        runs.extend(match clean {
            Some(rec) => {
                run_conditions_reusing(engine, subject, rec, chunk, &kind, &decoding, keep_going)?
            }
            None => run_conditions(engine, subject, chunk, &kind, &decoding, keep_going)?,
        });
    }
    let mut out = Vec::with_capacity(conds.len());
    for ((k, control, draw, _), &i) in conds.iter().zip(&which) {
        let (ids, logprob) = &runs[i];
        let answer = engine.decode(ids)?;
        out.push(ConditionResult {
            k: *k,
            control: *control,
            draw: *draw,
            correct: answer_is_correct(&subject.sample, &answer) == Some(true),
            answer,
            clean_answer_logprob: *logprob,
        });
    }
    Ok(out)
}

/// The distinct head sets (as sets: order does not matter) in first-seen order, and the index of
/// each input's set among them.
fn distinct_sets<'a>(sets: impl Iterator<Item = &'a Vec<Head>>) -> (Vec<Vec<Head>>, Vec<usize>) {
    let mut seen: BTreeMap<Vec<Head>, usize> = BTreeMap::new();
    let mut distinct = Vec::new();
    let which = sets
        .map(|set| {
            let mut key = set.clone();
            key.sort_unstable();
            key.dedup();
            *seen.entry(key).or_insert_with(|| {
                distinct.push(set.clone());
                distinct.len() - 1
            })
        })
        .collect();
    (distinct, which)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::report::HeadScore;

    fn stats(layers: usize, heads: usize) -> HeadStats {
        // Importance grows with the flat index: the top heads are the last ones.
        let mean = (0..layers)
            .map(|l| (0..heads).map(|h| (l * heads + h) as f64).collect())
            .collect();
        HeadStats {
            method: DetectMethod::Score(HeadScore::Retrieval),
            category: "c".into(),
            n: 3,
            mean,
            sd: vec![vec![0.0; heads]; layers],
        }
    }

    #[test]
    fn the_plan_is_seeded_nested_and_keeps_random_heads_outside_the_top_list() {
        let cfg = StudyConfig {
            ks: vec![0, 2, 4],
            top_n: 6,
            draws: 3,
            ..StudyConfig::default()
        };
        let s = stats(4, 4);
        let plan = AblationPlan::build(&cfg, std::slice::from_ref(&s), (4, 4)).unwrap();
        assert_eq!(
            plan,
            AblationPlan::build(&cfg, std::slice::from_ref(&s), (4, 4)).unwrap()
        );
        let cell = &plan.cells[0];
        assert_eq!(cell.top_list[..3], [(3, 3), (3, 2), (3, 1)]);
        let [p2, p4] = [&cell.points[0], &cell.points[1]];
        assert_eq!((p2.k, p4.k), (2, 4));
        assert_eq!(p4.top[..2], p2.top[..]);
        for (a, b) in p2.random.iter().zip(&p4.random) {
            assert_eq!(a[..], b[..2], "a draw's sets are nested");
            assert!(b.iter().all(|h| !cell.top_list.contains(h)));
        }
        assert_ne!(p4.random[0], p4.random[1], "draws differ");
        // Layer-matched: the top-4 are (3,3),(3,2),(3,1),(3,0): four heads of layer 3, and layer 3
        // has no head outside the top-6 list, so they come from outside the top-4 — none left.
        let mut layers: Vec<usize> = p2.layer_matched.iter().map(|h| h.0).collect();
        layers.dedup();
        assert_eq!(layers, vec![3]);
        assert_eq!(p2.layer_matched.len(), 2);
        assert!(p2.layer_matched.iter().all(|h| !p2.top.contains(h)));
        let other = StudyConfig {
            seed: 1,
            ..cfg.clone()
        };
        assert_ne!(AblationPlan::build(&other, &[s], (4, 4)).unwrap(), plan);
    }

    #[test]
    fn a_head_set_two_conditions_share_is_listed_once() {
        let sets = [
            vec![(1, 2), (0, 3)],
            vec![(2, 0)],
            vec![(0, 3), (1, 2)], // the first set in another order
            vec![(2, 0), (2, 1)],
        ];
        let (distinct, which) = distinct_sets(sets.iter());
        assert_eq!(
            distinct,
            vec![sets[0].clone(), sets[1].clone(), sets[3].clone()]
        );
        assert_eq!(which, vec![0, 1, 0, 2]);
    }

    #[test]
    fn conditions_list_top_draws_and_layer_matched_per_k() {
        let cfg = StudyConfig {
            ks: vec![1, 2],
            top_n: 4,
            draws: 2,
            ..StudyConfig::default()
        };
        let plan = AblationPlan::build(&cfg, &[stats(3, 4)], (3, 4)).unwrap();
        let c = conditions(&plan.cells[0]);
        let labels: Vec<(usize, Control, usize)> = c.iter().map(|x| (x.0, x.1, x.2)).collect();
        use Control::*;
        assert_eq!(
            labels,
            vec![
                (1, Top, 0),
                (1, Random, 0),
                (1, Random, 1),
                (1, LayerMatched, 0),
                (2, Top, 0),
                (2, Random, 0),
                (2, Random, 1),
                (2, LayerMatched, 0)
            ]
        );
        assert!(c.iter().all(|x| x.3.len() == x.0));
    }
}
