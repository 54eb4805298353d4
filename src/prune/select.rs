//! Which heads a sparsity prunes, from an importance matrix.
//!
//! * global (the default): the `round(s · L · H)` heads of lowest importance over the whole model;
//! * layer-adaptive (`--layer-adaptive`): the `round(s · H)` lowest of each layer, so every layer
//!   loses the same share (the encoder work's per-layer sparsity);
//! * protected heads (`--protect-circuit`) are never pruned: the lowest *unprotected* heads are;
//!   a sparsity that would need a protected head is an error.
//!
//! Ties go to the lower `(layer, head)` first, so a selection is a pure function of its inputs.
//! Random pruning is the same selection over seeded uniform importance ([`random_importance`]).

use std::collections::BTreeSet;

use crate::analysis::rng::{derive_seed, SplitMix64};
use crate::engine::Pruning;
use crate::{Error, Result};

pub type Head = (usize, usize);

/// How many heads a sparsity prunes in a model of `layers × heads`.
pub fn head_count(sparsity: f64, layers: usize, heads: usize, layer_adaptive: bool) -> usize {
    match layer_adaptive {
        true => layers * per_layer(sparsity, heads),
        false => (sparsity * (layers * heads) as f64).round() as usize,
    }
}

/// Heads pruned per layer with `--layer-adaptive`.
pub fn per_layer(sparsity: f64, heads: usize) -> usize {
    (sparsity * heads as f64).round() as usize
}

/// The heads to prune at `sparsity` by `importance` (`[layers][heads]`, higher = more needed).
pub fn select_heads(
    importance: &[Vec<f64>],
    sparsity: f64,
    protected: &BTreeSet<Head>,
    layer_adaptive: bool,
) -> Result<BTreeSet<Head>> {
    let layers = importance.len();
    let heads = importance.first().map_or(0, Vec::len);
    let candidates = |layer: Option<usize>| -> Vec<Head> {
        let mut all: Vec<Head> = (0..layers)
            .filter(|&l| layer.is_none_or(|x| x == l))
            .flat_map(|l| (0..heads).map(move |h| (l, h)))
            .filter(|x| !protected.contains(x))
            .collect();
        all.sort_by(|&(l1, h1), &(l2, h2)| {
            importance[l1][h1]
                .total_cmp(&importance[l2][h2])
                .then((l1, h1).cmp(&(l2, h2)))
        });
        all
    };
    let take = |pool: Vec<Head>, k: usize, what: &str| -> Result<Vec<Head>> {
        if pool.len() < k {
            return Err(Error::Pruning(format!(
                "sparsity {sparsity} needs {k} heads {what} but only {} are not protected; \
                 lower the sparsity or --protect-top",
                pool.len()
            )));
        }
        Ok(pool[..k].to_vec())
    };
    let mut out = BTreeSet::new();
    if layer_adaptive {
        let k = per_layer(sparsity, heads);
        for l in 0..layers {
            out.extend(take(candidates(Some(l)), k, &format!("in layer {l}"))?);
        }
    } else {
        let k = head_count(sparsity, layers, heads, false);
        out.extend(take(candidates(None), k, "in the model")?);
    }
    Ok(out)
}

/// The `round(s · L)` MLP blocks of lowest importance.
pub fn select_mlps(importance: &[f64], sparsity: f64) -> BTreeSet<usize> {
    let k = (sparsity * importance.len() as f64).round() as usize;
    let mut order: Vec<usize> = (0..importance.len()).collect();
    order.sort_by(|&a, &b| importance[a].total_cmp(&importance[b]).then(a.cmp(&b)));
    order.into_iter().take(k).collect()
}

/// Seeded uniform importance for random pruning, draw `draw`: `([layers][heads], [layers])`.
/// The heads' draws do not depend on the MLPs' (separate streams).
pub fn random_importance(
    seed: u64,
    draw: usize,
    layers: usize,
    heads: usize,
) -> (Vec<Vec<f64>>, Vec<f64>) {
    let d = draw.to_string();
    let mut rng = SplitMix64::new(derive_seed(seed, &["prune", "random", "heads", &d]));
    let h = (0..layers)
        .map(|_| (0..heads).map(|_| rng.next_f64()).collect())
        .collect();
    let mut rng = SplitMix64::new(derive_seed(seed, &["prune", "random", "mlps", &d]));
    let m = (0..layers).map(|_| rng.next_f64()).collect();
    (h, m)
}

/// A pruning from head and (optional) MLP importance.
pub fn pruning(
    heads: &[Vec<f64>],
    mlps: Option<&[f64]>,
    sparsity: f64,
    protected: &BTreeSet<Head>,
    layer_adaptive: bool,
) -> Result<Pruning> {
    Ok(Pruning {
        heads: select_heads(heads, sparsity, protected, layer_adaptive)?,
        mlps: mlps.map(|m| select_mlps(m, sparsity)).unwrap_or_default(),
    })
}

/// The circuit to protect: the `top` heads of highest mean patching effect, positive effects
/// only.
pub fn circuit(patching: &[Vec<f64>], top: usize) -> BTreeSet<Head> {
    let mut all: Vec<(Head, f64)> = patching
        .iter()
        .enumerate()
        .flat_map(|(l, row)| row.iter().enumerate().map(move |(h, &v)| ((l, h), v)))
        .filter(|(_, v)| *v > 0.0)
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.into_iter().take(top).map(|(h, _)| h).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(layers: usize, heads: usize) -> Vec<Vec<f64>> {
        (0..layers)
            .map(|l| (0..heads).map(|h| ((l * 7 + h * 3) % 11) as f64).collect())
            .collect()
    }

    #[test]
    fn global_selection_prunes_the_lowest_and_skips_protected_heads() {
        let imp = ramp(4, 5);
        let none = BTreeSet::new();
        let sel = select_heads(&imp, 0.5, &none, false).unwrap();
        assert_eq!(sel.len(), 10);
        let worst_kept = (0..4)
            .flat_map(|l| (0..5).map(move |h| (l, h)))
            .filter(|x| !sel.contains(x))
            .map(|(l, h)| imp[l][h])
            .fold(f64::INFINITY, f64::min);
        assert!(sel.iter().all(|&(l, h)| imp[l][h] <= worst_kept));
        let protected: BTreeSet<Head> = sel.iter().take(3).copied().collect();
        let sel2 = select_heads(&imp, 0.5, &protected, false).unwrap();
        assert_eq!(sel2.len(), 10);
        assert!(sel2.is_disjoint(&protected));
        let all: BTreeSet<Head> = (0..4).flat_map(|l| (0..5).map(move |h| (l, h))).collect();
        assert!(select_heads(&imp, 0.5, &all, false).is_err());
    }

    #[test]
    fn layer_adaptive_prunes_equal_shares_and_random_is_seeded() {
        let imp = ramp(4, 5);
        let sel = select_heads(&imp, 0.4, &BTreeSet::new(), true).unwrap();
        for l in 0..4 {
            assert_eq!(sel.iter().filter(|h| h.0 == l).count(), 2);
        }
        assert_eq!(random_importance(1, 0, 3, 4), random_importance(1, 0, 3, 4));
        assert_ne!(random_importance(1, 0, 3, 4), random_importance(1, 1, 3, 4));
        assert_eq!(
            select_mlps(&[3.0, 1.0, 2.0, 0.5], 0.5),
            BTreeSet::from([1, 3])
        );
        let c = circuit(&[vec![0.5, -1.0], vec![2.0, 0.1]], 2);
        assert_eq!(c, BTreeSet::from([(0, 0), (1, 0)]));
    }
}
