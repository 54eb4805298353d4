//! The small statistics ContextCite and its evaluation need: column standardisation as
//! sklearn's `StandardScaler`, a coordinate-descent Lasso with intercept (sklearn's `Lasso`
//! objective, solved to a much tighter tolerance), and Spearman's rank correlation (scipy's
//! `spearmanr` for LDS). All in f64.

use crate::{Error, Result};

/// Columns of a design matrix centred and scaled: `z_ij = (x_ij − μ_j) / σ_j`.
#[derive(Clone, Debug, PartialEq)]
pub struct Standardized {
    /// `[N][p]`.
    pub z: Vec<Vec<f64>>,
    pub mean: Vec<f64>,
    /// Population standard deviation, 1 for a constant column (as sklearn).
    pub scale: Vec<f64>,
}

/// Standardises the columns of `x` (`[N][p]`, rows of equal length).
pub fn standardize(x: &[Vec<f64>]) -> Result<Standardized> {
    let p = check_matrix(x)?;
    let n = x.len() as f64;
    let mean: Vec<f64> = (0..p)
        .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect();
    let scale: Vec<f64> = (0..p)
        .map(|j| {
            let var = x.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n;
            // sklearn's `_is_constant_feature`: a variance within rounding of 0 counts as 0.
            let eps = f64::EPSILON;
            let bound = n * eps * var + (n * mean[j] * eps).powi(2);
            if var <= bound {
                1.0
            } else {
                var.sqrt()
            }
        })
        .collect();
    let z = x
        .iter()
        .map(|r| (0..p).map(|j| (r[j] - mean[j]) / scale[j]).collect())
        .collect();
    Ok(Standardized { z, mean, scale })
}

/// A Lasso solution.
#[derive(Clone, Debug, PartialEq)]
pub struct LassoFit {
    pub weights: Vec<f64>,
    pub intercept: f64,
    /// Coordinate sweeps run.
    pub sweeps: usize,
    /// Whether the stopping rule was met within the sweep budget.
    pub converged: bool,
    /// Duality gap of the objective at the solution (≥ 0, 0 at the optimum).
    pub gap: f64,
}

/// Stop when no coordinate moved by more than this (relative to `max(1, max|w|)`).
pub const TOL: f64 = 1e-12;
/// Sweep budget; ContextCite-sized problems (64 × tens) converge in well under a thousand.
pub const MAX_SWEEPS: usize = 100_000;

/// `min_{w,b} (1/2N)‖y − Xw − b‖² + α‖w‖₁` by cyclic coordinate descent (sklearn `Lasso` with
/// `fit_intercept=True`, on `x` as given). `α = 0` is least squares.
pub fn lasso(x: &[Vec<f64>], y: &[f64], alpha: f64) -> Result<LassoFit> {
    let p = check_matrix(x)?;
    if y.len() != x.len() {
        return Err(Error::Analysis(format!(
            "lasso: {} targets for {} rows",
            y.len(),
            x.len()
        )));
    }
    if y.iter().any(|v| !v.is_finite()) {
        return Err(Error::Analysis(
            "lasso: a regression target is not finite".into(),
        ));
    }
    if !(alpha >= 0.0 && alpha.is_finite()) {
        return Err(Error::Analysis(format!(
            "lasso: alpha must be ≥ 0, got {alpha}"
        )));
    }
    let n = x.len() as f64;
    // The optimal intercept for any w is ȳ − x̄·w, so fit w on centred data.
    let x_mean: Vec<f64> = (0..p)
        .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect();
    let y_mean = y.iter().sum::<f64>() / n;
    // Column-major centred design: the inner loop walks one column.
    let cols: Vec<Vec<f64>> = (0..p)
        .map(|j| x.iter().map(|r| r[j] - x_mean[j]).collect())
        .collect();
    let yc: Vec<f64> = y.iter().map(|v| v - y_mean).collect();
    let sq: Vec<f64> = cols.iter().map(|c| dot(c, c) / n).collect();
    let mut w = vec![0.0; p];
    let mut r = yc.clone();
    let (mut sweeps, mut converged) = (0, p == 0);
    while !converged && sweeps < MAX_SWEEPS {
        sweeps += 1;
        let (mut max_dw, mut max_w) = (0.0f64, 0.0f64);
        for j in 0..p {
            if sq[j] == 0.0 {
                continue;
            }
            let rho = dot(&cols[j], &r) / n + sq[j] * w[j];
            let new = soft_threshold(rho, alpha) / sq[j];
            let dw = new - w[j];
            if dw != 0.0 {
                for (ri, cij) in r.iter_mut().zip(&cols[j]) {
                    *ri -= dw * cij;
                }
                w[j] = new;
            }
            max_dw = max_dw.max(dw.abs());
            max_w = max_w.max(new.abs());
        }
        converged = max_dw <= TOL * max_w.max(1.0);
    }
    let intercept = y_mean - dot(&x_mean, &w);
    let gap = duality_gap(&cols, &yc, &w, alpha);
    Ok(LassoFit {
        weights: w,
        intercept,
        sweeps,
        converged,
        gap,
    })
}

/// The ContextCite fit: standardise `x`, solve the Lasso, and express the solution in the
/// original feature scale: `w_j/σ_j` and `b − Σ_j μ_j w_j/σ_j`.
pub fn lasso_standardized(x: &[Vec<f64>], y: &[f64], alpha: f64) -> Result<LassoFit> {
    let s = standardize(x)?;
    let mut fit = lasso(&s.z, y, alpha)?;
    for (w, sigma) in fit.weights.iter_mut().zip(&s.scale) {
        *w /= sigma;
    }
    fit.intercept -= dot(&s.mean, &fit.weights);
    Ok(fit)
}

/// Duality gap of `(1/2N)‖yc − Xc w‖² + α‖w‖₁` (centred data, columns `cols`): the primal minus
/// the dual at the rescaled residual `ν = r·min(1, Nα/‖Xᵀr‖∞)`.
fn duality_gap(cols: &[Vec<f64>], yc: &[f64], w: &[f64], alpha: f64) -> f64 {
    let n = yc.len() as f64;
    let mut r = yc.to_vec();
    for (c, &wj) in cols.iter().zip(w) {
        for (ri, cij) in r.iter_mut().zip(c) {
            *ri -= wj * cij;
        }
    }
    let xtr = cols.iter().map(|c| dot(c, &r).abs()).fold(0.0, f64::max);
    let lambda = n * alpha;
    let k = if xtr > lambda { lambda / xtr } else { 1.0 };
    let primal = 0.5 * dot(&r, &r) + lambda * w.iter().map(|v| v.abs()).sum::<f64>();
    // D(ν) = ½‖y‖² − ½‖y − ν‖², ν = k r.
    let dual = 0.5 * dot(yc, yc)
        - 0.5
            * yc.iter()
                .zip(&r)
                .map(|(y, r)| (y - k * r).powi(2))
                .sum::<f64>();
    ((primal - dual) / n).max(0.0)
}

fn soft_threshold(x: f64, t: f64) -> f64 {
    if x > t {
        x - t
    } else if x < -t {
        x + t
    } else {
        0.0
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Checks `x` is a non-empty, rectangular, finite matrix; returns its column count.
fn check_matrix(x: &[Vec<f64>]) -> Result<usize> {
    let p = x
        .first()
        .ok_or_else(|| Error::Analysis("lasso: no rows to fit".into()))?
        .len();
    if x.iter().any(|r| r.len() != p) {
        return Err(Error::Analysis("lasso: rows of different lengths".into()));
    }
    if x.iter().flatten().any(|v| !v.is_finite()) {
        return Err(Error::Analysis("lasso: a feature is not finite".into()));
    }
    Ok(p)
}

/// Ranks from 1, ties given their average rank (scipy `rankdata(method="average")`).
pub fn average_ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut ranks = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i + 1;
        while j < idx.len() && v[idx[j]] == v[idx[i]] {
            j += 1;
        }
        // Positions i..j (0-based) share the mean of ranks i+1 ..= j.
        let r = (i + j + 1) as f64 / 2.0;
        for &k in &idx[i..j] {
            ranks[k] = r;
        }
        i = j;
    }
    ranks
}

/// Pearson correlation; NaN when a side is constant.
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (dx, dy) = (x - ma, y - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    if saa == 0.0 || sbb == 0.0 {
        return f64::NAN;
    }
    (sab / (saa * sbb).sqrt()).clamp(-1.0, 1.0)
}

/// Spearman's rank correlation: Pearson on average ranks (scipy `spearmanr`). NaN when a side is
/// constant (fewer than two points included), holds a NaN, or the lengths differ.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() || a.len() < 2 || a.iter().chain(b).any(|v| v.is_nan()) {
        return f64::NAN;
    }
    pearson(&average_ranks(a), &average_ranks(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn standardize_is_population_scaled_and_handles_constants() {
        let x = vec![vec![1.0, 5.0], vec![3.0, 5.0], vec![5.0, 5.0]];
        let s = standardize(&x).unwrap();
        assert_eq!(s.mean, vec![3.0, 5.0]);
        assert!(close(s.scale[0], (8.0f64 / 3.0).sqrt(), 1e-15));
        assert_eq!(s.scale[1], 1.0);
        assert!(s.z.iter().all(|r| r[1] == 0.0));
        let sum: f64 = s.z.iter().map(|r| r[0]).sum();
        let ss: f64 = s.z.iter().map(|r| r[0] * r[0]).sum();
        assert!(close(sum, 0.0, 1e-14) && close(ss, 3.0, 1e-14));
        assert!(standardize(&[]).is_err());
        assert!(standardize(&[vec![1.0], vec![1.0, 2.0]]).is_err());
        assert!(standardize(&[vec![f64::NAN]]).is_err());
    }

    /// An orthogonal design with `ZᵀZ/N = I`: the Lasso is soft-thresholding of `Zᵀy/N`.
    #[test]
    fn orthogonal_design_is_soft_thresholding() {
        // Columns of a 4×4 Hadamard matrix without the constant one: centred, orthogonal, unit
        // mean square.
        let x = vec![
            vec![1.0, 1.0, 1.0],
            vec![-1.0, 1.0, -1.0],
            vec![1.0, -1.0, -1.0],
            vec![-1.0, -1.0, 1.0],
        ];
        let y = [3.0, -1.0, 0.5, 2.0];
        let (n, ybar) = (4.0, 4.5 / 4.0);
        for alpha in [0.0, 0.1, 0.7, 5.0] {
            let fit = lasso(&x, &y, alpha).unwrap();
            assert!(fit.converged);
            for j in 0..3 {
                let c: f64 = x.iter().zip(&y).map(|(r, v)| r[j] * v).sum::<f64>() / n;
                let want = soft_threshold(c, alpha);
                assert!(close(fit.weights[j], want, 1e-13), "α={alpha} j={j}");
            }
            assert!(close(fit.intercept, ybar, 1e-13));
            assert!(fit.gap < 1e-14, "gap {}", fit.gap);
        }
    }

    #[test]
    fn zero_alpha_is_least_squares() {
        // y = 2 + 1.5 x0 − 0.5 x1 exactly, on a non-orthogonal design.
        let x = vec![
            vec![0.0, 1.0],
            vec![1.0, 0.0],
            vec![2.0, 3.0],
            vec![3.0, 1.0],
            vec![4.0, 5.0],
        ];
        let y: Vec<f64> = x.iter().map(|r| 2.0 + 1.5 * r[0] - 0.5 * r[1]).collect();
        let fit = lasso(&x, &y, 0.0).unwrap();
        assert!(fit.converged);
        assert!(close(fit.weights[0], 1.5, 1e-10) && close(fit.weights[1], -0.5, 1e-10));
        assert!(close(fit.intercept, 2.0, 1e-10));
        // Standardising first changes nothing in the original scale.
        let fit = lasso_standardized(&x, &y, 0.0).unwrap();
        assert!(close(fit.weights[0], 1.5, 1e-10) && close(fit.weights[1], -0.5, 1e-10));
        assert!(close(fit.intercept, 2.0, 1e-10));
    }

    #[test]
    fn large_alpha_gives_zero_weights_and_mean_intercept() {
        let x = vec![vec![0.0, 1.0], vec![1.0, 1.0], vec![1.0, 0.0]];
        let y = [1.0, 2.0, 6.0];
        let fit = lasso_standardized(&x, &y, 100.0).unwrap();
        assert_eq!(fit.weights, vec![0.0, 0.0]);
        assert!(close(fit.intercept, 3.0, 1e-15));
    }

    #[test]
    fn rejects_bad_input() {
        let x = vec![vec![1.0], vec![0.0]];
        assert!(lasso(&x, &[1.0], 0.1).is_err());
        assert!(lasso(&x, &[1.0, f64::INFINITY], 0.1).is_err());
        assert!(lasso(&x, &[1.0, 2.0], -0.1).is_err());
        assert!(lasso(&x, &[1.0, 2.0], f64::NAN).is_err());
        // A constant column gets weight 0 (and no division by zero).
        let fit = lasso_standardized(&[vec![1.0, 0.0], vec![1.0, 1.0]], &[1.0, 3.0], 0.0).unwrap();
        assert_eq!(fit.weights[0], 0.0);
        assert!(close(fit.weights[1], 2.0, 1e-12) && close(fit.intercept, 1.0, 1e-12));
    }

    /// sklearn 1.9.1 reference, produced once with
    /// ```python
    /// import numpy as np
    /// from sklearn.linear_model import Lasso
    /// from sklearn.preprocessing import StandardScaler
    /// rng = np.random.RandomState(0)
    /// X = (rng.rand(12, 5) < 0.5).astype(float)
    /// y = np.round(X @ [1.5, -0.7, 0.0, 0.3, 2.0] + 0.5 * rng.randn(12), 4)
    /// s = StandardScaler().fit(X)
    /// m = Lasso(alpha=0.01, tol=1e-12, max_iter=10**6).fit(s.transform(X), y)
    /// w = m.coef_ / s.scale_; b = m.intercept_ - s.mean_ @ w
    /// ```
    #[test]
    fn matches_sklearn() {
        let x: Vec<Vec<f64>> = SK_X
            .iter()
            .map(|r| r.iter().map(|&v| v as f64).collect())
            .collect();
        let fit = lasso_standardized(&x, &SK_Y, 0.01).unwrap();
        assert!(fit.converged);
        for (w, want) in fit.weights.iter().zip(SK_COEF_STD.iter().zip(&SK_SCALE)) {
            assert!(
                close(*w, want.0 / want.1, 1e-9),
                "{w} vs {}",
                want.0 / want.1
            );
        }
        for (w, want) in fit.weights.iter().zip(&SK_W) {
            assert!(close(*w, *want, 1e-9), "{w} vs {want}");
        }
        assert!(close(fit.intercept, SK_B, 1e-9));
        assert!(
            fit.sweeps < 1000 && fit.gap < 1e-10,
            "{} sweeps, gap {}",
            fit.sweeps,
            fit.gap
        );
        let big = lasso_standardized(&x, &SK_Y, 0.3).unwrap();
        for (w, want) in big.weights.iter().zip(&SK_W_03) {
            assert!(close(*w, *want, 1e-9), "{w} vs {want}");
        }
        assert!(close(big.intercept, SK_B_03, 1e-9));
        assert_eq!(big.weights[3], 0.0);
    }

    const SK_X: [[u8; 5]; 12] = [
        [0, 0, 0, 0, 1],
        [0, 1, 0, 0, 1],
        [0, 0, 0, 0, 1],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 0, 1],
        [0, 1, 0, 0, 1],
        [1, 0, 1, 0, 1],
        [0, 0, 0, 0, 0],
        [1, 1, 0, 1, 0],
        [0, 1, 1, 1, 1],
        [0, 1, 0, 1, 1],
        [1, 0, 1, 1, 1],
    ];
    const SK_Y: [f64; 12] = [
        1.5523, 1.4935, 1.7446, 0.2097, 1.9859, 1.5142, 3.5333, 0.1512, 0.7828, 1.4186, 1.2638,
        3.6202,
    ];
    const SK_SCALE: [f64; 5] = [
        0.47140452079103173,
        0.5,
        0.47140452079103173,
        0.47140452079103173,
        0.4330127018922193,
    ];
    // α = 0.01: `m.coef_`, then `w` and `b`.
    const SK_COEF_STD: [f64; 5] = [
        0.5987991984364891,
        -0.2890374999994491,
        0.11998029505936329,
        0.029527379602329044,
        0.8368796568371594,
    ];
    const SK_W: [f64; 5] = [
        1.2702449213505316,
        -0.5780749999988982,
        0.2545166407357158,
        0.06263703104242863,
        1.9326907806170226,
    ];
    const SK_B: f64 = -0.08377178317287659;
    // α = 0.3 (one weight exactly 0).
    const SK_W_03: [f64; 5] = [
        0.1369870146070447,
        -0.06922187786685526,
        0.5811926571241787,
        0.0,
        0.7271834185499775,
    ];
    const SK_B_03: f64 = 0.8556718177772034;

    #[test]
    fn spearman_uses_average_ranks() {
        assert_eq!(
            average_ranks(&[10.0, 20.0, 20.0, 5.0]),
            vec![2.0, 3.5, 3.5, 1.0]
        );
        assert!(close(
            spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 25.0, 100.0]),
            1.0,
            1e-15
        ));
        assert!(close(
            spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]),
            -1.0,
            1e-15
        ));
        // scipy.stats.spearmanr([1, 2, 2, 3, 5], [2, 1, 4, 4, 3]).statistic
        let want = 0.3947368421052632;
        assert!(close(
            spearman(&[1.0, 2.0, 2.0, 3.0, 5.0], &[2.0, 1.0, 4.0, 4.0, 3.0]),
            want,
            1e-12
        ));
        assert!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]).is_nan());
        assert!(spearman(&[1.0], &[1.0]).is_nan());
        assert!(spearman(&[1.0, 2.0], &[1.0]).is_nan());
        assert!(spearman(&[1.0, f64::NAN], &[1.0, 2.0]).is_nan());
    }
}
