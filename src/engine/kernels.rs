//! A fused CPU kernel for the attention softmax: soft-cap, causal / sliding-window mask and softmax
//! in one pass over the scores, touching only the keys a query may see.
//!
//! The generic path (add an additive `-inf` mask, then `softmax_last_dim`) makes three passes over
//! `[b, H, t, T_k]` and exponentiates the masked half too. Other devices and dtypes keep the generic
//! path; both are checked against each other in the tests below.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Causal softmax over the last dim of scores `[.., t, T_k]` whose queries sit at absolute positions
/// `offset .. offset + t` and keys at `0 .. T_k`.
pub struct CausalSoftmax {
    pub offset: usize,
    pub window: Option<usize>,
    pub softcap: Option<f32>,
}

impl CausalSoftmax {
    /// Visible keys of query row `i`: `[lo, hi)`.
    fn visible(&self, i: usize, tk: usize) -> (usize, usize) {
        let q = self.offset + i;
        let hi = (q + 1).min(tk);
        let lo = self.window.map_or(0, |w| (q + 1).saturating_sub(w));
        (lo.min(hi), hi)
    }
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("causal-softmax: f32 only");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("causal-softmax: input must be contiguous");
        };
        let data = &data[start..end];
        let dims = layout.dims();
        let (t, tk) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        let mut out = vec![0f32; data.len()];
        out.par_chunks_mut(tk).zip(data.par_chunks(tk)).enumerate().for_each(|(row, (dst, src))| {
            let (lo, hi) = self.visible(row % t, tk);
            if lo >= hi {
                return;
            }
            let dst = &mut dst[lo..hi];
            let src = &src[lo..hi];
            match self.softcap {
                Some(cap) => {
                    for (d, &s) in dst.iter_mut().zip(src) {
                        *d = (s / cap).tanh() * cap;
                    }
                }
                None => dst.copy_from_slice(src),
            }
            let max = dst.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for d in dst.iter_mut() {
                *d = (*d - max).exp();
                sum += *d;
            }
            let inv = 1.0 / sum;
            for d in dst.iter_mut() {
                *d *= inv;
            }
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// Applies [`CausalSoftmax`] where the fused kernel can run (contiguous f32 on the CPU); `None`
/// tells the caller to take the generic path.
pub fn causal_softmax(scores: &Tensor, op: CausalSoftmax) -> candle_core::Result<Option<Tensor>> {
    if !scores.device().is_cpu() || scores.dtype() != candle_core::DType::F32 {
        return Ok(None);
    }
    Ok(Some(scores.contiguous()?.apply_op1_no_bwd(&op)?))
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let scores = (Tensor::randn(0f32, 3.0, (2, 3, 7, 11), &Device::Cpu).unwrap()).contiguous().unwrap();
        for (offset, window, cap) in [(4, None, None), (4, Some(3), None), (4, Some(5), Some(2.0)), (0, None, Some(1.5))] {
            let scores = if offset == 0 { scores.narrow(3, 0, 7).unwrap().contiguous().unwrap() } else { scores.clone() };
            let fused = causal_softmax(&scores, CausalSoftmax { offset, window, softcap: cap }).unwrap().unwrap();
            let want = generic(&scores, offset, window, cap);
            let d = (fused - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert!(d < 1e-6, "offset {offset} window {window:?} cap {cap:?}: {d}");
        }
    }
}
