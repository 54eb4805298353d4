//! Fused CPU kernels for the two element-wise hot spots of a forward, each one pass over memory:
//! * the attention softmax with soft-cap and causal / sliding-window mask, touching only the keys a
//!   query may see (the generic path adds a `-inf` mask and exponentiates the masked half too);
//! * the gated MLP activation `act(gate) · up` read straight from the fused gate/up projection.
//!
//! Both use a vectorisable `exp` (AVX2 + FMA when the CPU has it, chosen at run time). Other devices
//! and dtypes keep the generic candle path; the tests below check the two against each other.

use candle_core::{CpuStorage, CustomOp1, DType, InplaceOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Causal softmax over the last dim of scores `[.., t, T_k]` whose queries sit at absolute positions
/// `offset .. offset + t` and keys at `0 .. T_k`.
pub struct CausalSoftmax {
    pub offset: usize,
    /// When only some query rows were computed: their indices among the `t` new positions.
    pub query_rows: Option<Vec<usize>>,
    pub window: Option<usize>,
    pub softcap: Option<f32>,
}

impl CausalSoftmax {
    /// Visible keys of query row `i`: `[lo, hi)`.
    fn visible(&self, i: usize, tk: usize) -> (usize, usize) {
        let q = self.offset + self.query_rows.as_ref().map_or(i, |rows| rows[i]);
        let hi = (q + 1).min(tk);
        let lo = self.window.map_or(0, |w| (q + 1).saturating_sub(w));
        (lo.min(hi), hi)
    }
}

impl InplaceOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    /// In place: the scores buffer becomes the probabilities (no second `[b, H, t, T_k]` buffer).
    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("causal-softmax: f32 only");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("causal-softmax: input must be contiguous");
        };
        let dims = layout.dims();
        let (t, tk) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        data[start..end]
            .par_chunks_mut(tk)
            .enumerate()
            .for_each(|(row, row_data)| {
                let (lo, hi) = self.visible(row % t, tk);
                row_data[..lo].fill(0.0);
                row_data[hi..].fill(0.0);
                if lo >= hi {
                    return;
                }
                let visible = &mut row_data[lo..hi];
                if let Some(cap) = self.softcap {
                    for d in visible.iter_mut() {
                        *d = (*d / cap).tanh() * cap;
                    }
                }
                softmax_in_place(visible);
            });
        Ok(())
    }
}

/// The values of a product's operand, which must be contiguous f32 on the CPU (`op` names the
/// product in the error).
pub(crate) fn contiguous_f32<'a>(
    op: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: f32 only");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: operands must be contiguous");
    };
    Ok(&data[start..end])
}

/// Applies [`CausalSoftmax`] where the fused kernel can run (f32 on the CPU), consuming `scores`:
/// its buffer is overwritten with the probabilities (a clone sharing it would see them too).
/// `Err(scores)` hands the scores back for the generic path.
pub fn causal_softmax(
    scores: Tensor,
    op: CausalSoftmax,
) -> candle_core::Result<std::result::Result<Tensor, Tensor>> {
    if !scores.device().is_cpu() || scores.dtype() != DType::F32 {
        return Ok(Err(scores));
    }
    // `contiguous` copies only when needed; a fresh matmul output is updated in place.
    let scores = scores.contiguous()?;
    scores.inplace_op1(&op)?;
    Ok(Ok(scores))
}

/// `exp(x)` for x ≤ 0 (arguments of a softmax after subtracting the max), relative error ≈ 1e-7:
/// x = n·ln2 + r with |r| ≤ ln2/2, e^r by a degree-6 polynomial, 2^n built in the exponent bits.
/// Branch-free so the compiler vectorises loops over it.
#[inline(always)]
fn exp_neg(x: f32) -> f32 {
    let x = x.max(-87.0);
    let n = (x * std::f32::consts::LOG2_E).round();
    let r = n.mul_add(-std::f32::consts::LN_2, x);
    let p = r.mul_add(1.0 / 720.0, 1.0 / 120.0);
    let p = r.mul_add(p, 1.0 / 24.0);
    let p = r.mul_add(p, 1.0 / 6.0);
    let p = r.mul_add(p, 0.5);
    let p = r.mul_add(p, 1.0);
    let p = r.mul_add(p, 1.0);
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `exp(x)` for any x in f32 range, via `exp_neg` of −|x|.
#[inline(always)]
fn exp_any(x: f32) -> f32 {
    let e = exp_neg(-x.abs());
    if x > 0.0 {
        1.0 / e
    } else {
        e
    }
}

/// Runs `$body` with AVX2 + FMA code generation where the CPU has them (checked once), else plainly.
macro_rules! with_simd {
    ($name:ident ( $($arg:ident : $ty:ty),* ) $body:block) => {
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn fast($($arg: $ty),*) $body
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the features were detected on this CPU just above.
                    return unsafe { fast($($arg),*) };
                }
            }
            $body
        }
    };
}

pub(crate) use with_simd;

with_simd!(softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // Exponentials first, in their own loop so it vectorises (a running f32 sum in the same loop
    // keeps the whole loop scalar); then the sum, in index order as before, so the result is
    // bit for bit what the single loop gave.
    for d in row.iter_mut() {
        *d = exp_neg(*d - max);
    }
    let sum = row.iter().fold(0f32, |s, &d| s + d);
    let inv = 1.0 / sum;
    for d in row.iter_mut() {
        *d *= inv;
    }
});

with_simd!(silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + exp_any(-g)) * u;
    }
});

with_simd!(gelu_tanh_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        let y = SQRT_2_OVER_PI * (g + 0.044715 * g * g * g);
        // tanh(y) = 1 − 2 / (e^{2y} + 1)
        let tanh = 1.0 - 2.0 / (exp_any(2.0 * y) + 1.0);
        *o = 0.5 * g * (1.0 + tanh) * u;
    }
});

/// `act(gate) · up` where the input's last dim holds `[gate | up]`, each `ff` wide.
pub struct GatedActivation {
    pub ff: usize,
    pub gelu: bool,
}

impl CustomOp1 for GatedActivation {
    fn name(&self) -> &'static str {
        "gated-activation"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("gated-activation: f32 only");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("gated-activation: input must be contiguous");
        };
        let ff = self.ff;
        let data = &data[start..end];
        let mut out = vec![0f32; data.len() / 2];
        out.par_chunks_mut(ff)
            .zip(data.par_chunks(2 * ff))
            .for_each(|(dst, src)| {
                let (gate, up) = src.split_at(ff);
                if self.gelu {
                    gelu_tanh_mul(gate, up, dst)
                } else {
                    silu_mul(gate, up, dst)
                }
            });
        let mut dims = layout.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = ff;
        }
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

/// Applies [`GatedActivation`] to `[.., 2·ff]` where the fused kernel can run; `None` otherwise.
pub fn gated_activation(
    gate_up: &Tensor,
    op: GatedActivation,
) -> candle_core::Result<Option<Tensor>> {
    if !gate_up.device().is_cpu()
        || gate_up.dtype() != DType::F32
        || gate_up.dims().last() != Some(&(2 * op.ff))
    {
        return Ok(None);
    }
    Ok(Some(gate_up.contiguous()?.apply_op1_no_bwd(&op)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_util::max_abs_diff;
    use candle_core::{Device, Tensor};

    fn generic(scores: &Tensor, offset: usize, window: Option<usize>, cap: Option<f32>) -> Tensor {
        let (t, tk) = (scores.dims()[2], scores.dims()[3]);
        let mut m = vec![0f32; t * tk];
        for i in 0..t {
            let q = offset + i;
            for k in 0..tk {
                if k > q || window.is_some_and(|w| q - k >= w) {
                    m[i * tk + k] = f32::NEG_INFINITY;
                }
            }
        }
        let m = Tensor::from_vec(m, (t, tk), &Device::Cpu).unwrap();
        let s = match cap {
            Some(c) => ((scores / c as f64).unwrap().tanh().unwrap() * c as f64).unwrap(),
            None => scores.clone(),
        };
        candle_nn::ops::softmax_last_dim(&s.broadcast_add(&m).unwrap()).unwrap()
    }

    #[test]
    fn fused_matches_mask_then_softmax() {
        let scores = (Tensor::randn(0f32, 3.0, (2, 3, 7, 11), &Device::Cpu).unwrap())
            .contiguous()
            .unwrap();
        for (offset, window, cap) in [
            (4, None, None),
            (4, Some(3), None),
            (4, Some(5), Some(2.0)),
            (0, None, Some(1.5)),
        ] {
            let scores = if offset == 0 {
                scores.narrow(3, 0, 7).unwrap().contiguous().unwrap()
            } else {
                scores.clone()
            };
            let fused = causal_softmax(
                scores.copy().unwrap(),
                CausalSoftmax {
                    offset,
                    query_rows: None,
                    window,
                    softcap: cap,
                },
            )
            .unwrap()
            .unwrap();
            let want = generic(&scores, offset, window, cap);
            let d = max_abs_diff(&fused, &want);
            assert!(
                d < 1e-6,
                "offset {offset} window {window:?} cap {cap:?}: {d}"
            );
        }
    }

    /// The softmax as one loop (exponential and running sum together), the form before the
    /// vectorised one: the two must agree bit for bit, so that splitting the loop changed no
    /// result anywhere (a study rerun by a newer build stays byte-identical).
    fn one_loop_softmax(row: &mut [f32]) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for d in row.iter_mut() {
            *d = exp_neg(*d - max);
            sum += *d;
        }
        let inv = 1.0 / sum;
        for d in row.iter_mut() {
            *d *= inv;
        }
    }

    #[test]
    fn split_loop_softmax_is_bitwise_the_one_loop_form() {
        for len in [1usize, 7, 8, 9, 63, 64, 65, 840] {
            let row = Tensor::randn(0f32, 4.0, len, &Device::Cpu)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let (mut fast, mut plain) = (row.clone(), row);
            softmax_in_place(&mut fast);
            one_loop_softmax(&mut plain);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fast), bits(&plain), "row of {len}");
        }
    }

    #[test]
    fn fused_with_query_rows_matches_those_rows_of_the_full_softmax() {
        let scores = Tensor::randn(0f32, 3.0, (1, 2, 9, 9), &Device::Cpu).unwrap();
        let rows = vec![1usize, 5, 8];
        let idx = Tensor::from_vec(
            rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            3,
            &Device::Cpu,
        )
        .unwrap();
        for window in [None, Some(3)] {
            let full = generic(&scores, 0, window, None)
                .index_select(&idx, 2)
                .unwrap();
            let picked = scores.index_select(&idx, 2).unwrap().contiguous().unwrap();
            let op = CausalSoftmax {
                offset: 0,
                query_rows: Some(rows.clone()),
                window,
                softcap: None,
            };
            let got = causal_softmax(picked, op).unwrap().unwrap();
            let d = max_abs_diff(&got, &full);
            assert!(d < 1e-6, "window {window:?}: {d}");
        }
    }

    #[test]
    fn fast_exp_is_accurate() {
        for i in 0..2000 {
            let x = -87.0 + i as f32 * 0.0437;
            let want = (x as f64).exp();
            let got = exp_neg(x) as f64;
            assert!(
                ((got - want) / want).abs() < 6e-7,
                "exp({x}) = {got}, want {want}"
            );
            let y = -x / 3.0;
            let rel = (exp_any(y) as f64 - (y as f64).exp()).abs() / (y as f64).exp();
            assert!(rel < 6e-7, "exp({y})");
        }
    }

    #[test]
    fn gated_activation_matches_candle() {
        let gu = Tensor::randn(0f32, 3.0, (2, 5, 2 * 37), &Device::Cpu).unwrap();
        let gate = gu.narrow(2, 0, 37).unwrap();
        let up = gu.narrow(2, 37, 37).unwrap();
        for gelu in [false, true] {
            let want = if gelu {
                gate.gelu().unwrap()
            } else {
                candle_nn::ops::silu(&gate).unwrap()
            };
            let want = (want * &up).unwrap();
            let got = gated_activation(&gu, GatedActivation { ff: 37, gelu })
                .unwrap()
                .unwrap();
            let d = max_abs_diff(&got, &want);
            assert!(d < 1e-5, "gelu={gelu}: {d}");
        }
    }
}
