//! The study's statistics, each reproducible from its inputs and a seed:
//! - [`bootstrap_mean_ci`]: the mean with a percentile bootstrap interval (resampling samples);
//! - [`mcnemar_exact`]: the exact McNemar test of paired correct/wrong outcomes (two-sided binomial
//!   test on the discordant pairs);
//! - [`jaccard`] of two head sets, and [`random_jaccard`], the value two random sets of the same
//!   sizes give on average (exact, from the hypergeometric distribution).
//!
//! `scripts/make_stats_fixtures.py` computes the same numbers independently
//! (`tests/fixtures/stats.json`), and a test holds these functions to them.

use std::collections::BTreeSet;

use crate::analysis::rng::SplitMix64;

/// A mean with a two-sided interval.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Interval {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
}

/// The mean of `values` with a `level` (e.g. 0.95) percentile bootstrap interval from `resamples`
/// resamples drawn with `SplitMix64(seed)`. Percentiles are nearest-rank on the sorted resample
/// means: index `round(q · (resamples − 1))`. `None` for no values.
pub fn bootstrap_mean_ci(
    values: &[f64],
    resamples: usize,
    level: f64,
    seed: u64,
) -> Option<Interval> {
    let n = values.len();
    if n == 0 || resamples == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let mut rng = SplitMix64::new(seed);
    let means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| values[rng.below(n)]).sum::<f64>() / n as f64)
        .collect();
    let spread = percentile_interval(&means, level);
    Some(Interval { mean, ..spread })
}

/// The mean of `values` and their central `level` range by nearest rank: on the sorted values,
/// index `round(q · (n − 1))` for `q` = (1 − level)/2 and its complement. `values` must not be
/// empty.
pub fn percentile_interval(values: &[f64], level: f64) -> Interval {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[(q * (sorted.len() - 1) as f64).round() as usize];
    let tail = (1.0 - level) / 2.0;
    Interval {
        mean: values.iter().sum::<f64>() / values.len() as f64,
        lo: at(tail),
        hi: at(1.0 - tail),
    }
}

/// Two-sided exact McNemar p-value for `b` pairs where only the first condition is right and `c`
/// where only the second is: `min(1, 2 · P(X ≤ min(b, c)))`, `X ~ Binomial(b + c, ½)`.
pub fn mcnemar_exact(b: usize, c: usize) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    // log C(n, i) − n log 2, summed in probability space.
    let ln_half_n = -(n as f64) * std::f64::consts::LN_2;
    let mut ln_choose = 0.0f64;
    let mut tail = 0.0f64;
    for i in 0..=b.min(c) {
        if i > 0 {
            ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_choose + ln_half_n).exp();
    }
    (2.0 * tail).min(1.0)
}

/// |A ∩ B| / |A ∪ B| (1 for two empty sets).
pub fn jaccard<T: Ord>(a: &BTreeSet<T>, b: &BTreeSet<T>) -> f64 {
    let union = a.union(b).count();
    if union == 0 {
        return 1.0;
    }
    a.intersection(b).count() as f64 / union as f64
}

/// The expected Jaccard index of two independent uniformly random sets of sizes `k1` and `k2`
/// drawn from `n` items: Σᵢ P(|A ∩ B| = i) · i / (k1 + k2 − i), the overlap hypergeometric.
pub fn random_jaccard(n: usize, k1: usize, k2: usize) -> f64 {
    if k1 == 0 && k2 == 0 {
        return 1.0;
    }
    let ln_choose = |n: usize, k: usize| -> f64 {
        (0..k)
            .map(|i| ((n - i) as f64).ln() - ((i + 1) as f64).ln())
            .sum()
    };
    let total = ln_choose(n, k2);
    let lo = (k1 + k2).saturating_sub(n);
    (lo..=k1.min(k2))
        .map(|i| {
            let p = (ln_choose(k1, i) + ln_choose(n - k1, k2 - i) - total).exp();
            p * i as f64 / (k1 + k2 - i) as f64
        })
        .sum()
}

/// Two-sided paired permutation (sign-flip) test of the mean of paired differences `diffs`:
/// the share of sign assignments whose mean is at least as far from zero as the observed one.
/// Exact (all `2^n` assignments) for `n ≤ 16`; otherwise `resamples` seeded random assignments,
/// `(hits + 1) / (resamples + 1)`. All-zero differences give 1.
pub fn paired_permutation_p(diffs: &[f64], resamples: usize, seed: u64) -> f64 {
    let n = diffs.len();
    let observed = diffs.iter().sum::<f64>().abs();
    if n == 0 || observed == 0.0 {
        return 1.0;
    }
    // Sums compared with a tolerance so that equal sums reached in another order still count.
    let tol = 1e-9 * diffs.iter().map(|d| d.abs()).sum::<f64>();
    let at_least = |signs: &mut dyn FnMut(usize) -> bool| {
        let total: f64 = (0..n)
            .map(|i| if signs(i) { -diffs[i] } else { diffs[i] })
            .sum();
        total.abs() >= observed - tol
    };
    if n <= 16 {
        let hits = (0u32..1 << n)
            .filter(|&mask| at_least(&mut |i| mask >> i & 1 == 1))
            .count();
        return hits as f64 / (1u64 << n) as f64;
    }
    let mut rng = SplitMix64::new(seed);
    let hits = (0..resamples)
        .filter(|_| at_least(&mut |_| rng.next_u64() >> 63 == 1))
        .count();
    (hits + 1) as f64 / (resamples + 1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_cases_by_hand() {
        // b = 0, c = 5: 2 · (½)^5.
        assert!((mcnemar_exact(0, 5) - 0.0625).abs() < 1e-12);
        assert_eq!(mcnemar_exact(3, 3), 1.0);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        let a: BTreeSet<u32> = [1, 2, 3].into();
        let b: BTreeSet<u32> = [2, 3, 4, 5].into();
        assert!((jaccard(&a, &b) - 0.4).abs() < 1e-12);
        // Two random 1-sets of 2 items: equal with probability ½, Jaccard 1 then, else 0.
        assert!((random_jaccard(2, 1, 1) - 0.5).abs() < 1e-12);
        assert!((random_jaccard(10, 10, 10) - 1.0).abs() < 1e-12);
        let ci = bootstrap_mean_ci(&[1.0, 1.0, 1.0], 100, 0.95, 0).unwrap();
        assert_eq!((ci.mean, ci.lo, ci.hi), (1.0, 1.0, 1.0));
        assert!(bootstrap_mean_ci(&[], 100, 0.95, 0).is_none());
    }

    /// Against `tests/fixtures/stats.json`, written by `scripts/make_stats_fixtures.py` (plain
    /// Python: its own SplitMix64, exact binomial sums with `math.comb`, fractions for Jaccard).
    #[test]
    fn agree_with_the_independent_script() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stats.json");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for case in v["bootstrap"].as_array().unwrap() {
            let values: Vec<f64> = serde_json::from_value(case["values"].clone()).unwrap();
            let seed = case["seed"].as_u64().unwrap();
            let r = case["resamples"].as_u64().unwrap() as usize;
            let got = bootstrap_mean_ci(&values, r, 0.95, seed).unwrap();
            for (g, key) in [(got.mean, "mean"), (got.lo, "lo"), (got.hi, "hi")] {
                let want = case[key].as_f64().unwrap();
                assert!((g - want).abs() < 1e-12, "bootstrap {key}: {g} vs {want}");
            }
        }
        for case in v["mcnemar"].as_array().unwrap() {
            let (b, c) = (case["b"].as_u64().unwrap(), case["c"].as_u64().unwrap());
            let want = case["p"].as_f64().unwrap();
            let got = mcnemar_exact(b as usize, c as usize);
            assert!(
                (got - want).abs() <= 1e-12 * want.max(1e-300) + 1e-15,
                "McNemar {b},{c}: {got} vs {want}"
            );
        }
        for case in v["random_jaccard"].as_array().unwrap() {
            let n = case["n"].as_u64().unwrap() as usize;
            let (k1, k2) = (
                case["k1"].as_u64().unwrap() as usize,
                case["k2"].as_u64().unwrap() as usize,
            );
            let want = case["expected"].as_f64().unwrap();
            let got = random_jaccard(n, k1, k2);
            assert!(
                (got - want).abs() < 1e-12,
                "random Jaccard {n},{k1},{k2}: {got} vs {want}"
            );
        }
        for case in v["permutation"].as_array().unwrap() {
            let diffs: Vec<f64> = serde_json::from_value(case["diffs"].clone()).unwrap();
            let r = case["resamples"].as_u64().unwrap() as usize;
            let seed = case["seed"].as_u64().unwrap();
            let want = case["p"].as_f64().unwrap();
            let got = paired_permutation_p(&diffs, r, seed);
            assert!(
                (got - want).abs() < 1e-12,
                "permutation {diffs:?}: {got} vs {want}"
            );
        }
    }
}
