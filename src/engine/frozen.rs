//! `x · wᵀ` in a differentiable forward where `w` is a model weight, which no analysis
//! differentiates.
//!
//! candle's backward pass of a matmul forms both operands' gradients whether or not an operand
//! depends on a variable: for every projection it computes `xᵀ · grad`, as costly as the forward
//! product, and accumulates it into a weight-sized buffer nobody reads. For AtP and the MIRAGE
//! gradients that doubled the backward pass. [`FrozenWeightProduct`] is the same product by the
//! same kernel, with a backward pass that returns only `grad · w`.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

/// `x [m, k] · wᵀ` for `w [n, k]`, differentiable in `x` only (CPU).
struct FrozenWeightProduct;

impl CustomOp2 for FrozenWeightProduct {
    fn name(&self) -> &'static str {
        "frozen-weight-product"
    }

    /// candle's own CPU matmul over the layouts `Tensor::matmul(x, w.t())` would pass it, so the
    /// values are bit for bit those of the plain product.
    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, k) = x_layout.shape().dims2()?;
        let (n, wk) = w_layout.shape().dims2()?;
        if k != wk {
            candle_core::bail!("frozen-weight-product: x is [{m}, {k}] but w is [{n}, {wk}]");
        }
        let w_t = w_layout.transpose(0, 1)?;
        let y = x.matmul(w, (1, m, n, k), x_layout, &w_t)?;
        Ok((y, Shape::from((m, n))))
    }

    /// `∂/∂x = grad · w`; no gradient for the weight.
    fn bwd(
        &self,
        _x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.matmul(w)?), None))
    }
}

/// `x · wᵀ` (both 2-D) through [`FrozenWeightProduct`] when `x` is part of a differentiable
/// forward on the CPU and `w` is not; `None` otherwise (the caller's plain product is as good).
pub fn matmul_t(x: &Tensor, w: &Tensor) -> candle_core::Result<Option<Tensor>> {
    let eligible = x.track_op() && !w.track_op() && x.device().is_cpu() && w.device().is_cpu();
    if !eligible || x.rank() != 2 || w.rank() != 2 || x.dtype() != w.dtype() {
        return Ok(None);
    }
    x.apply_op2(w, FrozenWeightProduct).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_util::max_abs_diff;
    use candle_core::{DType, Device, Var};

    /// Same values as candle's product, and the same input gradient, through a strided input.
    #[test]
    fn equals_candles_product_and_input_gradient() {
        let dev = Device::Cpu;
        let v = Var::from_tensor(&Tensor::randn(0f32, 1.0, (9, 7), &dev).unwrap()).unwrap();
        let w = Tensor::randn(0f32, 1.0, (5, 9), &dev).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (7, 5), &dev).unwrap();
        // A transposed view as input: the layout the op receives is not contiguous.
        let x = v.as_tensor().t().unwrap();
        let plain = x.matmul(&w.t().unwrap()).unwrap();
        let frozen = matmul_t(&x, &w).unwrap().expect("x tracks a variable");
        assert_eq!(max_abs_diff(&plain, &frozen), 0.0);

        let loss = |y: &Tensor| (y * &probe).unwrap().sum_all().unwrap();
        let want = loss(&plain).backward().unwrap();
        let got = loss(&frozen).backward().unwrap();
        let g_want = want.get(v.as_tensor()).unwrap();
        let g_got = got.get(v.as_tensor()).unwrap();
        assert_eq!(g_got.dims(), &[9, 7]);
        assert!(max_abs_diff(g_want, g_got) < 1e-6);
        assert!(got.get(&w).is_none(), "the weight gets no gradient");
    }

    #[test]
    fn only_for_a_tracked_input_and_a_frozen_weight() {
        let dev = Device::Cpu;
        let x = Tensor::ones((3, 4), DType::F32, &dev).unwrap();
        let w = Tensor::ones((2, 4), DType::F32, &dev).unwrap();
        assert!(
            matmul_t(&x, &w).unwrap().is_none(),
            "nothing to differentiate"
        );
        let wv = Var::from_tensor(&w).unwrap();
        let xv = Var::from_tensor(&x).unwrap();
        assert!(
            matmul_t(&xv, wv.as_tensor()).unwrap().is_none(),
            "w is a variable"
        );
    }
}
