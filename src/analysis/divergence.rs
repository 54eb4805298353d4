//! Divergences between next-token distributions given as logit rows (ANALYSES.md, "Common
//! ground"), and ContextCite's token logit-probability (ANALYSES.md `attr:context-cite`). All
//! reductions run in f64.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which divergence compares two next-token distributions `P` (the reference, e.g. the full
/// context) and `Q` (the perturbed run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Divergence {
    /// Standard Jensen–Shannon: `½ KL(P‖M) + ½ KL(Q‖M)`, `M = ½(P+Q)`; bounded by ln 2.
    #[default]
    Jsd,
    /// The variant ARC-JSD's released code computes with `F.kl_div`: `½ KL(M‖P) + ½ KL(M‖Q)`.
    /// Symmetric, zero iff P = Q, unbounded. For reproducing the published numbers.
    JsdArcCode,
    /// `KL(P‖Q)`.
    Kl,
    /// `KL(Q‖P)`.
    KlRev,
}

impl Divergence {
    pub fn name(self) -> &'static str {
        match self {
            Divergence::Jsd => "jsd",
            Divergence::JsdArcCode => "jsd_arc_code",
            Divergence::Kl => "kl",
            Divergence::KlRev => "kl_rev",
        }
    }

    /// The divergence between the distributions of two logit rows.
    ///
    /// The same sums as [`Self::between_log_probs`] of the two rows' [`log_softmax`], fused: each
    /// row's `exp(x − max)` is kept in a per-thread scratch row, so an element pair costs two
    /// exponentials and one logarithm instead of five transcendentals, and no log-probability
    /// rows are allocated (ARC-JSD's head lens compares millions of vocabulary-sized rows).
    pub fn between(self, p_logits: &[f32], q_logits: &[f32]) -> f64 {
        assert_eq!(
            p_logits.len(),
            q_logits.len(),
            "rows of different vocabularies"
        );
        SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            let (ep, eq) = &mut *scratch;
            let p = Softmax::of(p_logits, ep);
            let q = Softmax::of(q_logits, eq);
            self.between_softmaxes(&p, ep, &q, eq)
        })
    }

    fn between_softmaxes(self, p: &Softmax, ep: &[f64], q: &Softmax, eq: &[f64]) -> f64 {
        match self {
            Divergence::Kl => p.kl_to(ep, q),
            Divergence::KlRev => q.kl_to(eq, p),
            Divergence::Jsd | Divergence::JsdArcCode => {
                let (inv_p, inv_q) = (p.sum.recip(), q.sum.recip());
                let (mut a, mut b) = (0.0, 0.0);
                let rows = p.logits.iter().zip(q.logits).zip(ep.iter().zip(eq));
                for ((&x, &y), (&e_p, &e_q)) in rows {
                    let (pv, qv) = (e_p * inv_p, e_q * inv_q);
                    let m = 0.5 * (pv + qv);
                    if m <= 0.0 {
                        continue;
                    }
                    let lm = m.ln();
                    let (lp, lq) = (x as f64 - p.lse, y as f64 - q.lse);
                    if self == Divergence::Jsd {
                        if pv > 0.0 {
                            a += pv * (lp - lm);
                        }
                        if qv > 0.0 {
                            b += qv * (lq - lm);
                        }
                    } else {
                        a += m * (lm - lp);
                        b += m * (lm - lq);
                    }
                }
                0.5 * (a + b)
            }
        }
    }

    /// [`Self::between`] with vectorised arithmetic, for callers that compare millions of rows
    /// (ARC-JSD's head lens). Still f64 throughout, so it agrees with [`Self::between`] to about
    /// 1e-13 (the test below holds it to 1e-10), but libm's scalar `exp` and `ln` are replaced by
    /// polynomials the compiler vectorises: [`exp_neg_f64`] for the softmax rows, and for the
    /// Jensen–Shannon forms one series logarithm per element, using
    /// `log m − log p = max(d, 0) + log((1 + min(p, q) / max(p, q)) / 2)` with `d = log q − log p`
    /// (exact from the logits). The KL forms use [`Self::between`].
    pub fn between_fast(self, p_logits: &[f32], q_logits: &[f32]) -> f64 {
        assert_eq!(
            p_logits.len(),
            q_logits.len(),
            "rows of different vocabularies"
        );
        if matches!(self, Divergence::Kl | Divergence::KlRev) {
            return self.between(p_logits, q_logits);
        }
        SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            let (ep, eq) = &mut *scratch;
            let p = Softmax::of_fast(p_logits, ep);
            let q = Softmax::of_fast(q_logits, eq);
            let mut out = 0.0;
            jsd_rows(JsdRows {
                p_logits,
                q_logits,
                ep,
                eq,
                inv: (p.sum.recip(), q.sum.recip()),
                shift: q.lse - p.lse,
                arc: self == Divergence::JsdArcCode,
                out: &mut out,
            });
            0.5 * out
        })
    }

    /// The divergence between two log-probability rows.
    pub fn between_log_probs(self, lp: &[f64], lq: &[f64]) -> f64 {
        match self {
            Divergence::Kl => kl(lp, lq),
            Divergence::KlRev => kl(lq, lp),
            Divergence::Jsd | Divergence::JsdArcCode => {
                let mut a = 0.0;
                let mut b = 0.0;
                for (&x, &y) in lp.iter().zip(lq) {
                    let (p, q) = (x.exp(), y.exp());
                    let m = 0.5 * (p + q);
                    if m <= 0.0 {
                        continue;
                    }
                    let lm = m.ln();
                    if self == Divergence::Jsd {
                        if p > 0.0 {
                            a += p * (x - lm);
                        }
                        if q > 0.0 {
                            b += q * (y - lm);
                        }
                    } else {
                        a += m * (lm - x);
                        b += m * (lm - y);
                    }
                }
                0.5 * (a + b)
            }
        }
    }
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Divergence {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "jsd" => Ok(Divergence::Jsd),
            "jsd_arc_code" | "arc" | "arc_code" => Ok(Divergence::JsdArcCode),
            "kl" => Ok(Divergence::Kl),
            "kl_rev" => Ok(Divergence::KlRev),
            _ => Err(format!(
                "unknown divergence `{s}` (use jsd, jsd_arc_code, kl or kl_rev)"
            )),
        }
    }
}

/// `KL(P‖Q) = Σ P (log P − log Q)` from log-probabilities.
pub fn kl(lp: &[f64], lq: &[f64]) -> f64 {
    lp.iter()
        .zip(lq)
        .map(|(&x, &y)| {
            let p = x.exp();
            if p > 0.0 {
                p * (x - y)
            } else {
                0.0
            }
        })
        .sum()
}

thread_local! {
    /// Two rows of `exp(x − max)` for [`Divergence::between`], grown to the vocabulary once per thread.
    static SCRATCH: std::cell::RefCell<(Vec<f64>, Vec<f64>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// One logit row's softmax normaliser, with its `exp(x − max)` written to a scratch row.
struct Softmax<'a> {
    logits: &'a [f32],
    /// `Σ exp(x − max)`.
    sum: f64,
    /// `log Σ exp(x)`.
    lse: f64,
}

impl<'a> Softmax<'a> {
    fn of(logits: &'a [f32], exps: &mut Vec<f64>) -> Self {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        exps.clear();
        exps.extend(logits.iter().map(|&x| (x as f64 - max).exp()));
        let sum: f64 = exps.iter().sum();
        Softmax {
            logits,
            sum,
            lse: max + sum.ln(),
        }
    }

    /// [`Softmax::of`] with [`exp_neg_f64`].
    fn of_fast(logits: &'a [f32], exps: &mut Vec<f64>) -> Self {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        exps.resize(logits.len(), 0.0);
        let mut sum = 0.0;
        exps_and_sum(logits, max, exps, &mut sum);
        Softmax {
            logits,
            sum,
            lse: max + sum.ln(),
        }
    }

    /// `KL(self‖other)`, `exps` being this row's scratch.
    fn kl_to(&self, exps: &[f64], other: &Softmax) -> f64 {
        let inv = self.sum.recip();
        self.logits
            .iter()
            .zip(other.logits)
            .zip(exps)
            .map(|((&x, &y), &e)| {
                let p = e * inv;
                if p > 0.0 {
                    p * ((x as f64 - self.lse) - (y as f64 - other.lse))
                } else {
                    0.0
                }
            })
            .sum()
    }
}

/// `exp(x)` for x ≤ 0 (e^−708 below −708), relative error below 1e-15: x = n·ln2 + r with
/// |r| ≤ ln2/2 (Cody–Waite, two-part ln 2), e^r by its Taylor series to r¹², and 2^n written into
/// the exponent bits (through a float add, since AVX2 has no f64 → i64 conversion). Branch-free
/// so loops over it vectorise.
#[inline(always)]
pub fn exp_neg_f64(x: f64) -> f64 {
    const LN_2_HI: f64 = 6.931_471_803_691_238_2e-1;
    const LN_2_LO: f64 = 1.908_214_929_270_587_7e-10;
    let x = x.max(-708.0);
    // Ties to even: the rounding x86 vectorises (`round` would be scalar code).
    let n = (x * std::f64::consts::LOG2_E).round_ties_even();
    let r = n.mul_add(-LN_2_LO, n.mul_add(-LN_2_HI, x));
    // Horner from 1/12! down to 1, written out so the element loop around it vectorises.
    let p = r.mul_add(1.0 / 479_001_600.0, 1.0 / 39_916_800.0);
    let p = r.mul_add(p, 1.0 / 3_628_800.0);
    let p = r.mul_add(p, 1.0 / 362_880.0);
    let p = r.mul_add(p, 1.0 / 40_320.0);
    let p = r.mul_add(p, 1.0 / 5_040.0);
    let p = r.mul_add(p, 1.0 / 720.0);
    let p = r.mul_add(p, 1.0 / 120.0);
    let p = r.mul_add(p, 1.0 / 24.0);
    let p = r.mul_add(p, 1.0 / 6.0);
    let p = r.mul_add(p, 0.5);
    let p = r.mul_add(p, 1.0);
    let p = r.mul_add(p, 1.0);
    // n + 2^52 + 1023 holds the biased exponent in its low mantissa bits; shifting them up by 52
    // makes the f64 2^n.
    let biased = (n + (4_503_599_627_370_496.0 + 1023.0)).to_bits() << 52;
    p * f64::from_bits(biased)
}

/// `log z` for z in [1/2, 1]: `2 artanh(s)`, `s = (z − 1) / (z + 1)`, |s| ≤ 1/3, to s³⁵.
#[inline(always)]
fn ln_half_to_one(z: f64) -> f64 {
    let s = (z - 1.0) / (z + 1.0);
    let s2 = s * s;
    let p = s2.mul_add(1.0 / 35.0, 1.0 / 33.0);
    let p = s2.mul_add(p, 1.0 / 31.0);
    let p = s2.mul_add(p, 1.0 / 29.0);
    let p = s2.mul_add(p, 1.0 / 27.0);
    let p = s2.mul_add(p, 1.0 / 25.0);
    let p = s2.mul_add(p, 1.0 / 23.0);
    let p = s2.mul_add(p, 1.0 / 21.0);
    let p = s2.mul_add(p, 1.0 / 19.0);
    let p = s2.mul_add(p, 1.0 / 17.0);
    let p = s2.mul_add(p, 1.0 / 15.0);
    let p = s2.mul_add(p, 1.0 / 13.0);
    let p = s2.mul_add(p, 1.0 / 11.0);
    let p = s2.mul_add(p, 1.0 / 9.0);
    let p = s2.mul_add(p, 1.0 / 7.0);
    let p = s2.mul_add(p, 1.0 / 5.0);
    let p = s2.mul_add(p, 1.0 / 3.0);
    let p = s2.mul_add(p, 1.0);
    2.0 * s * p
}

/// Independent partial sums per loop: a float sum is a chain the compiler may not reorder, so
/// the element loops keep this many chains, which it turns into vector lanes.
const LANES: usize = 8;

// Each `exp(x − max)` of a row into `exps`, and their sum.
crate::engine::kernels::with_simd!(exps_and_sum(
    row: &[f32],
    max: f64,
    exps: &mut [f64],
    sum: &mut f64
) {
    let mut acc = [0.0; LANES];
    let mut rows = row.chunks_exact(LANES);
    let mut outs = exps.chunks_exact_mut(LANES);
    for (xs, es) in (&mut rows).zip(&mut outs) {
        for i in 0..LANES {
            es[i] = exp_neg_f64(xs[i] as f64 - max);
            acc[i] += es[i];
        }
    }
    for (e, &x) in outs.into_remainder().iter_mut().zip(rows.remainder()) {
        *e = exp_neg_f64(x as f64 - max);
        acc[0] += *e;
    }
    *sum = acc.iter().sum();
});

/// The inputs of [`jsd_rows`]: two logit rows, their `exp(x − max)` rows and normalisers.
struct JsdRows<'a> {
    p_logits: &'a [f32],
    q_logits: &'a [f32],
    ep: &'a [f64],
    eq: &'a [f64],
    /// `1 / Σ exp(x − max)` of each row.
    inv: (f64, f64),
    /// `log Σ exp(y) − log Σ exp(x)`.
    shift: f64,
    /// ARC-JSD's code form instead of the standard one.
    arc: bool,
    out: &'a mut f64,
}

/// One element's Jensen–Shannon term (before the ½): logits `x`, `y`, probabilities `p`, `q`.
#[inline(always)]
fn jsd_term(x: f32, y: f32, p: f64, q: f64, shift: f64, arc: bool) -> f64 {
    let (lo, hi) = (p.min(q), p.max(q));
    // log(m / max(p, q)); 0 / 0 (both underflowed) counts as equal rows.
    let ln_z = ln_half_to_one(if hi > 0.0 { 0.5 * (1.0 + lo / hi) } else { 1.0 });
    let d = (y as f64 - x as f64) - shift;
    // log m − log p and log m − log q.
    let mp = d.max(0.0) + ln_z;
    let mq = (-d).max(0.0) + ln_z;
    if arc {
        0.5 * (p + q) * (mp + mq)
    } else {
        -(p * mp + q * mq)
    }
}

// Σ over the rows' elements of the Jensen–Shannon terms, into `out` (before the ½).
crate::engine::kernels::with_simd!(jsd_rows(r: JsdRows) {
    let (inv_p, inv_q) = r.inv;
    let mut acc = [0.0; LANES];
    let n = r.p_logits.len() / LANES * LANES;
    let chunks = r.p_logits[..n]
        .chunks_exact(LANES)
        .zip(r.q_logits[..n].chunks_exact(LANES))
        .zip(r.ep[..n].chunks_exact(LANES).zip(r.eq[..n].chunks_exact(LANES)));
    for ((xs, ys), (eps, eqs)) in chunks {
        for i in 0..LANES {
            let (p, q) = (eps[i] * inv_p, eqs[i] * inv_q);
            acc[i] += jsd_term(xs[i], ys[i], p, q, r.shift, r.arc);
        }
    }
    for j in n..r.p_logits.len() {
        let (p, q) = (r.ep[j] * inv_p, r.eq[j] * inv_q);
        acc[0] += jsd_term(r.p_logits[j], r.q_logits[j], p, q, r.shift, r.arc);
    }
    *r.out = acc.iter().sum();
});

/// Log-softmax of a logit row in f64.
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    logits.iter().map(|&x| x as f64 - lse).collect()
}

/// Log-probability of token `id` under a logit row.
pub fn token_logprob(logits: &[f32], id: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    logits[id as usize] as f64 - max - sum.ln()
}

/// ContextCite's token logit-probability `z_y − logsumexp_{v≠y} z_v` (= `log p − log(1−p)`),
/// computed without cancellation.
pub fn logit_prob(logits: &[f32], id: u32) -> f64 {
    let y = id as usize;
    let max_other = logits
        .iter()
        .enumerate()
        .filter(|&(v, _)| v != y)
        .map(|(_, &x)| x)
        .fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum_other: f64 = logits
        .iter()
        .enumerate()
        .filter(|&(v, _)| v != y)
        .map(|(_, &x)| (x as f64 - max_other).exp())
        .sum();
    logits[y] as f64 - (max_other + sum_other.ln())
}

/// `logit(P)` of a span from its summed log-probability `log P` (ContextCite's
/// `aggregate_logit_probs`): `log P − log(1 − exp(log P))`.
pub fn span_logit(log_p: f64) -> f64 {
    // log(1 − e^x) for x < 0, stable on both sides of −ln 2.
    let log1m_exp = if log_p > -std::f64::consts::LN_2 {
        (-log_p.exp_m1()).ln()
    } else {
        (-log_p.exp()).ln_1p()
    };
    log_p - log1m_exp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsd_is_bounded_symmetric_and_zero_on_equal() {
        let p = [2.0f32, 0.0, -1.0, 0.5];
        let q = [-1.0f32, 3.0, 0.0, 0.0];
        let d = Divergence::Jsd.between(&p, &q);
        assert!(d > 0.0 && d <= std::f64::consts::LN_2);
        assert!((d - Divergence::Jsd.between(&q, &p)).abs() < 1e-12);
        assert!(Divergence::Jsd.between(&p, &p).abs() < 1e-12);
        assert!(Divergence::JsdArcCode.between(&p, &p).abs() < 1e-12);
        // The ARC code variant is also symmetric but a different number.
        let arc = Divergence::JsdArcCode.between(&p, &q);
        assert!((arc - Divergence::JsdArcCode.between(&q, &p)).abs() < 1e-12);
        assert!((arc - d).abs() > 1e-3);
    }

    #[test]
    fn fused_rows_equal_the_log_softmax_route() {
        // Rows with a wide range, a tie and a near-underflow entry, as unembedded head outputs have.
        let mut rng = crate::analysis::rng::SplitMix64::new(7);
        let row = |rng: &mut crate::analysis::rng::SplitMix64| -> Vec<f32> {
            let mut r: Vec<f32> = (0..997)
                .map(|_| (rng.next_f64() as f32 - 0.5) * 40.0)
                .collect();
            r[3] = r[4];
            r[10] = -900.0;
            r
        };
        for _ in 0..5 {
            let (p, q) = (row(&mut rng), row(&mut rng));
            for d in [
                Divergence::Jsd,
                Divergence::JsdArcCode,
                Divergence::Kl,
                Divergence::KlRev,
            ] {
                let want = d.between_log_probs(&log_softmax(&p), &log_softmax(&q));
                let got = d.between(&p, &q);
                assert!(
                    (got - want).abs() <= 1e-12 * want.abs().max(1.0),
                    "{d}: fused {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn the_vectorised_kernel_agrees_with_the_libm_rows() {
        // A vocabulary-sized row pair, near-equal rows (where the terms cancel), a tie and a
        // near-underflow entry.
        let mut rng = crate::analysis::rng::SplitMix64::new(11);
        let mut row = |n: usize, scale: f32| -> Vec<f32> {
            (0..n)
                .map(|_| (rng.next_f64() as f32 - 0.5) * scale)
                .collect()
        };
        let mut cases = Vec::new();
        for (n, scale) in [(997, 40.0), (49_152, 20.0), (151_936, 8.0)] {
            let (mut p, q) = (row(n, scale), row(n, scale));
            p[3] = p[4];
            p[10] = -900.0;
            cases.push((p.clone(), q));
            let near: Vec<f32> = p.iter().zip(row(n, 0.01)).map(|(a, e)| a + e).collect();
            cases.push((p, near));
        }
        for (p, q) in &cases {
            for d in [Divergence::Jsd, Divergence::JsdArcCode] {
                let (want, got) = (d.between(p, q), d.between_fast(p, q));
                assert!(
                    (got - want).abs() <= 1e-10 * want.abs() + 1e-15,
                    "{d} over {} tokens: vectorised {got} vs libm {want}",
                    p.len()
                );
            }
        }
    }

    #[test]
    fn the_polynomial_exp_matches_libm() {
        let mut x = 0.0;
        while x > -750.0 {
            let (want, got) = (f64::exp(x), exp_neg_f64(x));
            let tol = if x < -708.0 { 1e-300 } else { 1e-15 * want };
            assert!((got - want).abs() <= tol, "exp({x}): {got} vs {want}");
            x -= 0.0173;
        }
    }

    #[test]
    fn kl_matches_a_hand_computation() {
        // P = (0.5, 0.5), Q = (0.25, 0.75)
        let lp = [0.5f64.ln(), 0.5f64.ln()];
        let lq = [0.25f64.ln(), 0.75f64.ln()];
        let want = 0.5 * (0.5f64 / 0.25).ln() + 0.5 * (0.5f64 / 0.75).ln();
        assert!((kl(&lp, &lq) - want).abs() < 1e-12);
        assert!((Divergence::KlRev.between_log_probs(&lp, &lq) - kl(&lq, &lp)).abs() < 1e-12);
    }

    #[test]
    fn logit_prob_is_the_logit_of_the_probability() {
        let z = [1.0f32, 2.0, 0.5, -3.0];
        for id in 0..4u32 {
            let lp = token_logprob(&z, id);
            let p = lp.exp();
            let want = (p / (1.0 - p)).ln();
            assert!((logit_prob(&z, id) - want).abs() < 1e-9);
        }
        for lp in [-1e-9, -0.1, -0.69, -0.7, -5.0, -40.0] {
            let p: f64 = f64::exp(lp);
            let want = lp - (1.0 - p).ln();
            assert!(
                (span_logit(lp) - want).abs() < 1e-6 * want.abs().max(1.0),
                "{lp}"
            );
        }
    }
}
