//! Products `x · wᵀ` with few rows (a decoding step, a batch of decoding rows, the last position's
//! logits): one pass over the weight, its output features split across rayon's threads.
//!
//! Why: the weight `w [n, k]` is row-major, and candle's `gemm` wants the other layout. For one
//! row it runs a GEMV on one thread; from two rows on it first copies the whole weight into its
//! packed layout, one strided element at a time, on every product. Here each output feature is a
//! dot product of two contiguous rows, and each weight row is read once for all of `x`'s rows.
//! SmolLM2's decoding went from 15.9 to 18.9–22.6 tokens/s on a 2-core Zen 3 EPYC, the 1.5B
//! model's from 1.5 to 2.5 (`benches/results/decode-zen3/`).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::kernels::{contiguous_f32, with_simd};

/// Products with at most this many rows take this path: a decoding step's rows (one per batched
/// condition) and, in `q · kᵀ`, the query heads that share a KV head. Where the packed GEMM
/// overtakes it was not measured.
pub const MAX_ROWS: usize = 8;

/// Output features per parallel task: enough work per task to amortise the scheduling.
const FEATURES_PER_TASK: usize = 32;

/// `x [m, k] · wᵀ` on this path when it applies (f32 on the CPU, 1 ..= [`MAX_ROWS`] rows, no
/// gradient to follow); `None` leaves the product to candle. The two differ only in summation
/// order.
pub fn matmul_t(x: &Tensor, w: &Tensor) -> candle_core::Result<Option<Tensor>> {
    if x.rank() != 2 || w.rank() != 2 {
        return Ok(None);
    }
    batched_matmul_t(x, w)
}

/// `x [.., m, k] · wᵀ` per leading index, for `w [.., n, k]` with the same leading dimensions: the
/// attention scores `q · kᵀ` of a decoding step. Same conditions as [`matmul_t`].
pub fn batched_matmul_t(x: &Tensor, w: &Tensor) -> candle_core::Result<Option<Tensor>> {
    if !enabled() || !eligible(x, w)? {
        return Ok(None);
    }
    apply(x, w).map(Some)
}

/// On in release builds. The crate's own code is not optimised in the dev profile (the tests),
/// only its dependencies (Cargo.toml), and there this loop is far slower than candle's
/// always-optimised `gemm`; `HEADSCOPE_SKINNY=1` turns it on anyway, so that the parity tests can
/// run through it (`scripts/test-openblas.sh`).
fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        !cfg!(debug_assertions) || std::env::var("HEADSCOPE_SKINNY").is_ok_and(|v| v.trim() == "1")
    })
}

/// Whether the product fits this path (the build aside).
fn eligible(x: &Tensor, w: &Tensor) -> candle_core::Result<bool> {
    let r = x.rank();
    Ok(x.device().is_cpu()
        && w.device().is_cpu()
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && r >= 2
        && w.rank() == r
        && x.dims()[..r - 2] == w.dims()[..r - 2]
        && (1..=MAX_ROWS).contains(&x.dims()[r - 2])
        && !x.track_op()
        && !w.track_op())
}

/// The product on this path, whatever the build: `batched_matmul_t`'s conditions hold.
fn apply(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op2_no_bwd(&w.contiguous()?, &SkinnyMatmulT)
}

/// `x [.., m, k] · wᵀ` for `w [.., n, k]`, both contiguous f32 on the CPU, same leading dims.
struct SkinnyMatmulT;

impl CustomOp2 for SkinnyMatmulT {
    fn name(&self) -> &'static str {
        "skinny-matmul-t"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32("skinny-matmul-t", x, xl)?;
        let w = contiguous_f32("skinny-matmul-t", w, wl)?;
        let (xd, wd) = (xl.dims(), wl.dims());
        let r = xd.len();
        let (m, k, n) = (xd[r - 2], xd[r - 1], wd[r - 2]);
        if wd.len() != r || wd[r - 1] != k || xd[..r - 2] != wd[..r - 2] {
            candle_core::bail!("skinny-matmul-t: shapes {xd:?} and {wd:?} do not fit");
        }
        let mut out = vec![0f32; x.len() / k.max(1) * n];
        if k > 0 && n > 0 {
            for ((x, w), out) in x
                .chunks_exact(m * k)
                .zip(w.chunks_exact(n * k))
                .zip(out.chunks_exact_mut(m * n))
            {
                product(x, w, k, out);
            }
        }
        let mut dims = xd[..r - 1].to_vec();
        dims.push(n);
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

/// `out [m, n] = x [m, k] · wᵀ` for `w [n, k]`, output features split across rayon's threads.
fn product(x: &[f32], w: &[f32], k: usize, out: &mut [f32]) {
    let m = x.len() / k;
    let n = w.len() / k;
    if m == 1 {
        out.par_chunks_mut(FEATURES_PER_TASK)
            .zip(w.par_chunks(FEATURES_PER_TASK * k))
            .for_each(|(out, rows)| dot_rows(x, rows, k, out));
        return;
    }
    // Feature-major `[n][m]` while computing, so that each task owns one contiguous block.
    let mut by_feature = vec![0f32; n * m];
    by_feature
        .par_chunks_mut(FEATURES_PER_TASK * m)
        .zip(w.par_chunks(FEATURES_PER_TASK * k))
        .for_each(|(out, rows)| dot_rows(x, rows, k, out));
    for (f, row) in by_feature.chunks_exact(m).enumerate() {
        for (t, &v) in row.iter().enumerate() {
            out[t * n + f] = v;
        }
    }
}

with_simd!(dot_rows(x: &[f32], weight_rows: &[f32], k: usize, out: &mut [f32]) {
    let m = x.len() / k;
    for (f, w) in weight_rows.chunks_exact(k).enumerate() {
        for (t, xr) in x.chunks_exact(k).enumerate() {
            out[f * m + t] = dot(xr, w);
        }
    }
});

/// `Σ a·b` with 32 independent partial sums (four 8-lane vectors), so the loop vectorises and the
/// additions do not wait on one another.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 32;
    let (a_blocks, a_tail) = a.as_chunks::<LANES>();
    let (b_blocks, b_tail) = b.as_chunks::<LANES>();
    let mut acc = [0f32; LANES];
    for (ab, bb) in a_blocks.iter().zip(b_blocks) {
        for i in 0..LANES {
            acc[i] += ab[i] * bb[i];
        }
    }
    let mut tail = 0f32;
    for (x, y) in a_tail.iter().zip(b_tail) {
        tail += x * y;
    }
    let mut eight = [0f32; 8];
    for quarter in acc.as_chunks::<8>().0 {
        for i in 0..8 {
            eight[i] += quarter[i];
        }
    }
    let four = [
        eight[0] + eight[4],
        eight[1] + eight[5],
        eight[2] + eight[6],
        eight[3] + eight[7],
    ];
    (four[0] + four[2]) + (four[1] + four[3]) + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_util::max_abs_diff;
    use candle_core::Device;

    #[test]
    fn equals_candles_product_within_rounding() {
        let dev = Device::Cpu;
        // Rows 1 (candle's GEMV) and several; widths with and without a tail past 32 lanes;
        // output counts below, at and past one task's block.
        for (m, k, n) in [
            (1, 576, 70),
            (3, 576, 33),
            (MAX_ROWS, 100, 5),
            (2, 7, 64),
            (5, 64, 1),
        ] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            let want = x.matmul(&w.t().unwrap()).unwrap();
            let got = apply(&x, &w).unwrap();
            assert_eq!(got.dims(), &[m, n]);
            let d = max_abs_diff(&want, &got);
            assert!(d < 1e-4, "{m}×{k}×{n}: {d}");
        }
    }

    #[test]
    fn batched_equals_candles_batched_product() {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (2, 3, 6, 64), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (2, 3, 45, 64), &dev).unwrap();
        let want = q.matmul(&k.t().unwrap()).unwrap();
        let got = apply(&q, &k).unwrap();
        assert_eq!(got.dims(), &[2, 3, 6, 45]);
        let d = max_abs_diff(&want, &got);
        assert!(d < 1e-4, "{d}");
        // Leading dims must agree.
        assert!(apply(
            &q,
            &Tensor::zeros((2, 1, 45, 64), DType::F32, &dev).unwrap()
        )
        .is_err());
    }

    #[test]
    fn takes_only_few_row_untracked_f32_products() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (4, 16), &dev).unwrap();
        let many = Tensor::randn(0f32, 1.0, (MAX_ROWS + 1, 16), &dev).unwrap();
        let few = many.narrow(0, 0, MAX_ROWS).unwrap();
        assert!(eligible(&few, &w).unwrap());
        assert!(!eligible(&many, &w).unwrap());
        let var = candle_core::Var::from_tensor(&few).unwrap();
        assert!(!eligible(var.as_tensor(), &w).unwrap());
        let half = few.to_dtype(DType::F16).unwrap();
        assert!(!eligible(&half, &w.to_dtype(DType::F16).unwrap()).unwrap());
        let q = Tensor::zeros((2, 3, 1, 16), DType::F32, &dev).unwrap();
        assert!(eligible(&q, &Tensor::zeros((2, 3, 9, 16), DType::F32, &dev).unwrap()).unwrap());
        assert!(!eligible(&q, &Tensor::zeros((2, 1, 9, 16), DType::F32, &dev).unwrap()).unwrap());
        // Unoptimised builds (the tests) leave every product to candle unless asked.
        assert_eq!(matmul_t(&few, &w).unwrap().is_some(), enabled());
    }
}
