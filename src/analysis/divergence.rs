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
