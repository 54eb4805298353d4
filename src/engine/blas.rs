//! The forward's large f32 products `x · wᵀ` through OpenBLAS's `cblas_sgemm` (cargo feature
//! `openblas`, linking the system library: Debian's `libopenblas-dev`).
//!
//! Why: candle's `gemm` crate is the whole forward's bottleneck (about 75 % of a 512-token
//! forward). On the 2-core AMD EPYC development machine Debian's OpenBLAS 0.3.21 runs
//! SmolLM2's projections 1.1–1.75× faster from ~250 rows up but is slower on a few rows (its
//! threads' start-up dominates), and PERF-NOTES.md measured the same gap on an Intel Xeon. So
//! only products with at least [`MIN_ROWS`] rows take this path; decode steps keep candle's.
//! Products that autograd must follow (attribution patching's backward) keep candle's too.

use std::sync::{Once, RwLock};

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::kernels::contiguous_f32;

/// Fewer rows than this stay on candle's `gemm` (measured crossover on 2 cores: between 27 and
/// 258 rows; see `benches/results/blas-gemm.md`).
pub const MIN_ROWS: usize = 64;

/// [`MIN_ROWS`], or `$HEADSCOPE_BLAS_MIN_ROWS` when set to a number: the feature's tests set 1 so
/// that the tiny fixture models' products take this path too.
fn min_rows() -> usize {
    static MIN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MIN.get_or_init(|| {
        std::env::var("HEADSCOPE_BLAS_MIN_ROWS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(MIN_ROWS)
    })
}

const CBLAS_ROW_MAJOR: i32 = 101;
const CBLAS_NO_TRANS: i32 = 111;
const CBLAS_TRANS: i32 = 112;

#[link(name = "openblas")]
extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn cblas_sgemm(
        order: i32,
        trans_a: i32,
        trans_b: i32,
        m: i32,
        n: i32,
        k: i32,
        alpha: f32,
        a: *const f32,
        lda: i32,
        b: *const f32,
        ldb: i32,
        beta: f32,
        c: *mut f32,
        ldc: i32,
    );
    fn openblas_set_num_threads(n: i32);
}

/// OpenBLAS runs single-threaded inside rayon's workers, each on a block of rows: its own thread
/// pool would wait for work by `sched_yield` next to rayon's idle workers (13 % of a forward's
/// time on 2 cores, measured with `perf`).
fn init_threads() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: sets a global in the library; called once before any product.
        unsafe { openblas_set_num_threads(1) };
        // SAFETY: registers a plain function with no captured state.
        unsafe { libc::atexit(close_gate) };
    });
}

/// Held (shared) by every product in flight. At exit OpenBLAS's destructor frees the buffers a
/// product still running on another thread uses (the explorer quits while a worker computes): the
/// process crashed with SIGSEGV. [`close_gate`] runs first (atexit handlers run before shared
/// libraries' destructors), waits for the products in flight and lets no new one start.
static GATE: RwLock<()> = RwLock::new(());

extern "C" fn close_gate() {
    if let Ok(guard) = GATE.write() {
        std::mem::forget(guard);
    }
}

/// `c [m, n] = a [m, k] · bᵀ` for `b [n, k]`, row-major, on the calling thread.
fn sgemm_rows(a: &[f32], b: &[f32], c: &mut [f32], k: usize, n: usize) {
    let m = c.len() / n;
    // A poisoned gate only means another product panicked; the library is still usable.
    let _in_flight = GATE.read().unwrap_or_else(|e| e.into_inner());
    // SAFETY: a holds m·k, b n·k and c m·n f32 values, row-major with the leading dimensions
    // given; the caller checked that the sizes fit the library's 32-bit indices. With beta = 0
    // BLAS does not read c.
    unsafe {
        cblas_sgemm(
            CBLAS_ROW_MAJOR,
            CBLAS_NO_TRANS,
            CBLAS_TRANS,
            m as i32,
            n as i32,
            k as i32,
            1.0,
            a.as_ptr(),
            k as i32,
            b.as_ptr(),
            k as i32,
            0.0,
            c.as_mut_ptr(),
            n as i32,
        )
    };
}

/// `x [m, k] · wᵀ` for `w [n, k]`, both contiguous f32 on the CPU.
struct MatmulT;

impl CustomOp2 for MatmulT {
    fn name(&self) -> &'static str {
        "openblas-sgemm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32("openblas-sgemm", x, xl)?;
        let w = contiguous_f32("openblas-sgemm", w, wl)?;
        let ((m, k), (n, k2)) = (xl.shape().dims2()?, wl.shape().dims2()?);
        if k != k2 {
            candle_core::bail!("openblas-sgemm: inner dimensions {k} and {k2} differ");
        }
        let too_big = |v: usize| i32::try_from(v).is_err();
        if too_big(m) || too_big(n) || too_big(k) {
            candle_core::bail!("openblas-sgemm: {m} × {k} × {n} exceeds 32-bit BLAS indices");
        }
        init_threads();
        let mut out = vec![0f32; m * n];
        // One block of rows per thread (at least 32 rows, below which a block is too thin).
        let threads = candle_core::utils::get_num_threads().max(1);
        let block = m.div_ceil(threads).max(32);
        out.par_chunks_mut(block * n)
            .zip(x.par_chunks(block * k))
            .for_each(|(c, a)| sgemm_rows(a, w, c, k, n));
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

/// `x [m, k] · wᵀ` through OpenBLAS when it pays and is allowed (f32 on the CPU, at least
/// [`MIN_ROWS`] rows, no gradient to follow); `None` leaves the product to candle.
/// The two paths differ only in summation order (about 1e-6 relative).
pub fn matmul_t(x: &Tensor, w: &Tensor) -> candle_core::Result<Option<Tensor>> {
    let eligible = x.device().is_cpu()
        && w.device().is_cpu()
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && x.rank() == 2
        && w.rank() == 2
        && x.dim(0)? >= min_rows()
        && !x.track_op()
        && !w.track_op();
    if !eligible {
        return Ok(None);
    }
    sgemm_t(x, w).map(Some)
}

/// `x [m, k] · wᵀ` through OpenBLAS whatever the size (f32 on the CPU; no gradient).
pub fn sgemm_t(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op2_no_bwd(&w.contiguous()?, &MatmulT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_util::max_abs_diff;
    use candle_core::Device;

    #[test]
    fn equals_candles_product() {
        let dev = Device::Cpu;
        for (m, k, n) in [(MIN_ROWS, 7, 5), (300, 96, 130), (MIN_ROWS + 1, 576, 33)] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            let want = x.matmul(&w.t().unwrap()).unwrap();
            let got = matmul_t(&x, &w).unwrap().expect("eligible");
            let diff = max_abs_diff(&got, &want);
            assert!(diff < 1e-4 * k as f32, "{m}×{k}×{n}: {diff}");
        }
    }

    #[test]
    fn small_products_and_gradients_stay_on_candle() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (4, 8), &dev).unwrap();
        if min_rows() > 1 {
            let x = Tensor::randn(0f32, 1.0, (min_rows() - 1, 8), &dev).unwrap();
            assert!(matmul_t(&x, &w).unwrap().is_none());
        }
        let big = candle_core::Var::randn(0f32, 1.0, (MIN_ROWS, 8), &dev).unwrap();
        assert!(matmul_t(big.as_tensor(), &w).unwrap().is_none());
        let f64x = Tensor::randn(0f64, 1.0, (MIN_ROWS, 8), &dev).unwrap();
        let f64w = Tensor::randn(0f64, 1.0, (4, 8), &dev).unwrap();
        assert!(matmul_t(&f64x, &f64w).unwrap().is_none());
    }
}
