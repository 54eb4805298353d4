//! Products with few rows (a decoding step, a batch of decoding rows, the last position's
//! logits): `x · wᵀ` in one pass over the weight, its output features split across rayon's
//! threads, and a decoding step's probabilities times values `P · V`.
//!
//! Why: the weight `w [n, k]` is row-major, and candle's `gemm` wants the other layout. For one
//! row it runs a GEMV on one thread; from two rows on it first copies the whole weight into its
//! packed layout, one strided element at a time, on every product (and packs `V` for every head
//! of every step). Here each output feature is a dot product of two contiguous rows, computed in
//! small register tiles so that each loaded slice of a weight row serves every row of `x`.
//! SmolLM2's decoding went from 15.9 to 18.9–22.6 tokens/s on a 2-core Zen 3 EPYC, the 1.5B
//! model's from 1.5 to 2.5 (`benches/results/decode-zen3/`, before the tiles); the products alone
//! against candle's: `cargo run --release --example skinny_products`
//! (`benches/results/skinny-products-zen3.md`).
//!
//! Every output element is summed in one fixed order, whatever its tile or CPU path, so a row's
//! result does not depend on the rows batched with it.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::kernels::contiguous_f32;
use super::packed::{PackedRows, BLOCK};

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

/// `x [.., m, k] · v [.., k, n]` per leading index (no transpose): the probabilities times the
/// values `P · V` of a decoding step. Same conditions as [`matmul_t`], on `x`'s rows.
pub fn batched_matmul(x: &Tensor, v: &Tensor) -> candle_core::Result<Option<Tensor>> {
    if !enabled() || !eligible(x, v)? {
        return Ok(None);
    }
    x.contiguous()?
        .apply_op2_no_bwd(&contiguous_matrices(v)?, &SkinnyMatmul)
        .map(Some)
}

/// `x [m, k] · wᵀ` with the weight in its GGUF integer form ([`PackedRows`], a decoding step's
/// projections): the same tiles and summation order as [`matmul_t`] on the dequantized tensor,
/// each weight rebuilt in registers as the dequantization writes it, so the same bits while
/// reading one byte per weight instead of four. Same conditions as [`matmul_t`].
pub fn matmul_t_packed(x: &Tensor, w: &PackedRows) -> candle_core::Result<Option<Tensor>> {
    let fits = x.rank() == 2
        && x.device().is_cpu()
        && x.dtype() == DType::F32
        && (1..=MAX_ROWS).contains(&x.dims()[0])
        && x.dims()[1] == w.cols()
        && !x.track_op();
    if !enabled() || !fits {
        return Ok(None);
    }
    let (m, k, n) = (x.dims()[0], w.cols(), w.rows());
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; m * n];
    if k > 0 && n > 0 {
        product_packed(&xs, w, &mut out);
    }
    Ok(Some(Tensor::from_vec(out, (m, n), x.device())?))
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
        .apply_op2_no_bwd(&contiguous_matrices(w)?, &SkinnyMatmulT)
}

/// `t` itself when each of its `[.., r, c]` matrices is contiguous, else a contiguous copy. A KV
/// cache's view into a buffer with room ([`super::kv`]) strides its heads apart; copying it would
/// cost what the room saves.
fn contiguous_matrices(t: &Tensor) -> candle_core::Result<Tensor> {
    match matrix_starts(t.layout()) {
        Some(_) => Ok(t.clone()),
        None => t.contiguous(),
    }
}

/// Where each `[.., r, c]` matrix of `layout` starts, in the order of their leading indices, and
/// their size, when every matrix is contiguous.
fn matrix_starts(layout: &Layout) -> Option<(Vec<usize>, usize)> {
    let (dims, stride) = (layout.dims(), layout.stride());
    let [lead @ .., rows, cols] = dims else {
        return None;
    };
    let r = dims.len();
    let dense = (*cols <= 1 || stride[r - 1] == 1) && (*rows <= 1 || stride[r - 2] == *cols);
    if !dense {
        return None;
    }
    let mut starts = vec![layout.start_offset()];
    for (&d, &s) in lead.iter().zip(stride) {
        starts = starts
            .iter()
            .flat_map(|&o| (0..d).map(move |i| o + i * s))
            .collect();
    }
    Some((starts, rows * cols))
}

/// The `[.., r, c]` matrices of an f32 operand whose matrices are each contiguous, in order.
fn matrices<'a>(
    op: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<Vec<&'a [f32]>> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: f32 only");
    };
    let Some((starts, size)) = matrix_starts(layout) else {
        candle_core::bail!("{op}: each matrix must be contiguous");
    };
    Ok(starts.into_iter().map(|s| &data[s..s + size]).collect())
}

/// `x [.., m, k] · wᵀ` for `w [.., n, k]`, f32 on the CPU, same leading dims; `x` contiguous,
/// each matrix of `w` contiguous.
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
        let op = self.name();
        let (x, w) = (contiguous_f32(op, x, xl)?, matrices(op, w, wl)?);
        let ((m, k, n), dims) = product_shape(op, xl, wl, true)?;
        let mut out = vec![0f32; x.len() / k.max(1) * n];
        if k > 0 && n > 0 {
            for ((x, w), out) in x
                .chunks_exact(m * k)
                .zip(w)
                .zip(out.chunks_exact_mut(m * n))
            {
                product(x, w, k, out);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

/// The per-matrix sizes `(m, k, n)` of `x [.., m, k]` times `w`, which is `[.., n, k]` when
/// `transposed` and `[.., k, n]` otherwise, and the product's dims `[.., m, n]`; an error naming
/// `op` when the two do not fit.
fn product_shape(
    op: &str,
    xl: &Layout,
    wl: &Layout,
    transposed: bool,
) -> candle_core::Result<((usize, usize, usize), Vec<usize>)> {
    let (xd, wd) = (xl.dims(), wl.dims());
    let r = xd.len();
    let misfit = || candle_core::bail!("{op}: shapes {xd:?} and {wd:?} do not fit");
    if r < 2 || wd.len() != r || xd[..r - 2] != wd[..r - 2] {
        return misfit();
    }
    let (m, k) = (xd[r - 2], xd[r - 1]);
    let (wk, n) = match transposed {
        true => (wd[r - 1], wd[r - 2]),
        false => (wd[r - 2], wd[r - 1]),
    };
    if wk != k {
        return misfit();
    }
    let mut dims = xd[..r - 1].to_vec();
    dims.push(n);
    Ok(((m, k, n), dims))
}

/// `x [.., m, k] · v [.., k, n]`, f32 on the CPU, same leading dims; `x` contiguous, each matrix
/// of `v` contiguous.
struct SkinnyMatmul;

impl CustomOp2 for SkinnyMatmul {
    fn name(&self) -> &'static str {
        "skinny-matmul"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (x, v) = (contiguous_f32(op, x, xl)?, matrices(op, v, vl)?);
        let ((m, k, n), dims) = product_shape(op, xl, vl, false)?;
        let mut out = vec![0f32; x.len() / k.max(1) * n];
        if k > 0 && n > 0 {
            // One task per leading index: a decoding step has one per (row, KV head).
            out.par_chunks_mut(m * n)
                .zip(x.par_chunks(m * k))
                .zip(v.into_par_iter())
                .for_each(|((out, x), v)| rows_times(x, v, n, out));
        }
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

/// `out [m, n] = x [m, k] · v [k, n]`: each output element summed over `k` in order, by fused
/// multiply-adds (the same order on both paths).
fn rows_times(x: &[f32], v: &[f32], n: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx::available() {
        // SAFETY: AVX2 and FMA were detected on this CPU.
        return unsafe { avx::rows_times(x, v, n, out) };
    }
    let k = v.len() / n;
    for (xr, out) in x.chunks_exact(k).zip(out.chunks_exact_mut(n)) {
        for (c, o) in out.iter_mut().enumerate() {
            *o = xr
                .iter()
                .zip(v.iter().skip(c).step_by(n))
                .fold(0f32, |acc, (p, vv)| p.mul_add(*vv, acc));
        }
    }
}

/// `out [m, n] = x [m, k] · wᵀ` for `w [n, k]`, output features split across rayon's threads.
fn product(x: &[f32], w: &[f32], k: usize, out: &mut [f32]) {
    let m = x.len() / k;
    feature_tasks(m, w.len() / k, out, |first, block| {
        let rows = &w[first * k..(first + block.len() / m) * k];
        dot_rows(x, rows, k, block)
    });
}

/// `out [m, n]` from `task(first, block)` run in parallel over blocks of [`FEATURES_PER_TASK`]
/// output features, each block feature-major (`block[j·m + t]`: row `t`, feature `first + j`) so
/// that each task owns one contiguous block; with one row that is `out` itself.
fn feature_tasks(m: usize, n: usize, out: &mut [f32], task: impl Fn(usize, &mut [f32]) + Sync) {
    let run = |blocks: &mut [f32]| {
        blocks
            .par_chunks_mut(FEATURES_PER_TASK * m)
            .enumerate()
            .for_each(|(i, block)| task(i * FEATURES_PER_TASK, block));
    };
    if m == 1 {
        return run(out);
    }
    let mut by_feature = vec![0f32; n * m];
    run(&mut by_feature);
    for (f, row) in by_feature.chunks_exact(m).enumerate() {
        for (t, &v) in row.iter().enumerate() {
            out[t * n + f] = v;
        }
    }
}

/// `out[j·m + t] = x_t · w_j` for the `m` rows of `x` and the weight rows `weight_rows` (each `k`
/// long): feature-major, as one task of [`product`] owns it.
fn dot_rows(x: &[f32], weight_rows: &[f32], k: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx::available() {
        // SAFETY: AVX2 and FMA were detected on this CPU.
        return unsafe { avx::dot_rows(x, weight_rows, k, out) };
    }
    let m = x.len() / k;
    for (f, w) in weight_rows.chunks_exact(k).enumerate() {
        for (t, xr) in x.chunks_exact(k).enumerate() {
            out[f * m + t] = dot(xr, w);
        }
    }
}

/// [`product`] with the weight in its integer form.
fn product_packed(x: &[f32], w: &PackedRows, out: &mut [f32]) {
    let m = x.len() / w.cols();
    feature_tasks(m, w.rows(), out, |first, block| {
        dot_rows_packed(x, w, first, block)
    });
}

/// [`dot_rows`] for the weight rows `first ..` of `w` (as many as `out` holds, feature-major).
fn dot_rows_packed(x: &[f32], w: &PackedRows, first: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx::available() {
        // SAFETY: AVX2 and FMA were detected on this CPU.
        return unsafe { avx::dot_rows_packed(x, w, first, out) };
    }
    dot_rows_packed_portable(x, w, first, out)
}

/// [`dot_rows_packed`] without SIMD: each weight row dequantized, then [`dot`].
fn dot_rows_packed_portable(x: &[f32], w: &PackedRows, first: usize, out: &mut [f32]) {
    let k = w.cols();
    let m = x.len() / k;
    let mut row = vec![0f32; k];
    for (f, out) in out.chunks_exact_mut(m).enumerate() {
        w.dequantize_row(first + f, &mut row);
        for (t, xr) in x.chunks_exact(k).enumerate() {
            out[t] = dot(xr, &row);
        }
    }
}

/// `Σ a·b` in the same order as [`avx::dot_rows`]: eight lanes of fused multiply-adds, summed
/// pairwise, then the tail.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (a_blocks, a_tail) = a.as_chunks::<8>();
    let (b_blocks, b_tail) = b.as_chunks::<8>();
    let mut acc = [0f32; 8];
    for (ab, bb) in a_blocks.iter().zip(b_blocks) {
        for i in 0..8 {
            acc[i] = ab[i].mul_add(bb[i], acc[i]);
        }
    }
    let mut sum = lane_sum(acc);
    for (x, y) in a_tail.iter().zip(b_tail) {
        sum = x.mul_add(*y, sum);
    }
    sum
}

/// The eight lanes of an accumulator, summed pairwise (the order `avx::hsum` uses).
fn lane_sum(a: [f32; 8]) -> f32 {
    ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    use super::{PackedRows, BLOCK};

    /// How far ahead of its loads [`packed_tile`] fetches each weight row.
    const PREFETCH_BYTES: usize = 2048;

    /// Whether the CPU has AVX2 and FMA (checked once).
    pub fn available() -> bool {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }

    /// The tile walk of [`dot_rows`] and [`dot_rows_packed`]: weight rows `0..n` in runs of up to
    /// four (one row of `x`: one read of the weights either way, four chains) or two, rows of `x`
    /// in runs of up to four; `tile(features, rows, f, t)` for the tile at weight row `f`, row `t`.
    #[inline(always)]
    fn walk(m: usize, n: usize, mut tile: impl FnMut(usize, usize, usize, usize)) {
        let wide = if m == 1 { 4 } else { 2 };
        let mut f = 0;
        while f < n {
            let features = (n - f).min(wide);
            let mut t = 0;
            while t < m {
                let rows = (m - t).min(4);
                tile(features, rows, f, t);
                t += rows;
            }
            f += features;
        }
    }

    /// `$go!(F, R)` for the tile shapes [`walk`] yields, `F` weight rows by `R` rows of `x`.
    macro_rules! by_shape {
        ($features:expr, $rows:expr, $go:ident) => {
            match ($features, $rows) {
                (4, 1) => $go!(4, 1),
                (3, 1) => $go!(3, 1),
                (2, 1) => $go!(2, 1),
                (2, 2) => $go!(2, 2),
                (2, 3) => $go!(2, 3),
                (2, 4) => $go!(2, 4),
                (1, 2) => $go!(1, 2),
                (1, 3) => $go!(1, 3),
                (1, 4) => $go!(1, 4),
                _ => $go!(1, 1),
            }
        };
    }

    /// [`super::dot_rows`] in tiles of a few weight rows × a few rows of `x`: each 8-wide slice
    /// of a weight row, once loaded, meets every row of the tile, and the tile's accumulators are
    /// independent chains that keep both FMA units busy. Every (row, feature) pair runs the same
    /// sequence of operations whatever its tile, so a row's result does not depend on the rows
    /// batched with it.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_rows(x: &[f32], weight_rows: &[f32], k: usize, out: &mut [f32]) {
        let m = x.len() / k;
        let n = weight_rows.len() / k;
        assert!(out.len() >= n * m, "skinny: output block too short");
        walk(m, n, |features, rows, f, t| {
            let w = &weight_rows[f * k..(f + features) * k];
            let x = &x[t * k..(t + rows) * k];
            let out = &mut out[f * m + t..];
            macro_rules! go {
                ($F:literal, $R:literal) => {
                    tile::<$F, $R>(x, w, k, m, out)
                };
            }
            by_shape!(features, rows, go)
        });
    }

    /// `out[j·m + r] = x_r · w_j` for `F` weight rows and `R` rows of `x`, each `k` long.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const F: usize, const R: usize>(
        x: &[f32],
        w: &[f32],
        k: usize,
        m: usize,
        out: &mut [f32],
    ) {
        assert!(x.len() >= R * k && w.len() >= F * k && out.len() > (F - 1) * m + R - 1);
        let body = k / 8 * 8;
        let (xp, wp) = (x.as_ptr(), w.as_ptr());
        let mut acc = [[_mm256_setzero_ps(); R]; F];
        let mut i = 0;
        while i < body {
            // SAFETY: i + 8 ≤ body ≤ k, and the rows lie within the lengths asserted above.
            let wv: [__m256; F] =
                std::array::from_fn(|j| unsafe { _mm256_loadu_ps(wp.add(j * k + i)) });
            for r in 0..R {
                let xv = unsafe { _mm256_loadu_ps(xp.add(r * k + i)) };
                for j in 0..F {
                    acc[j][r] = _mm256_fmadd_ps(xv, wv[j], acc[j][r]);
                }
            }
            i += 8;
        }
        for j in 0..F {
            for r in 0..R {
                let mut sum = hsum(acc[j][r]);
                for i in body..k {
                    sum = x[r * k + i].mul_add(w[j * k + i], sum);
                }
                out[j * m + r] = sum;
            }
        }
    }

    /// [`super::dot_rows_packed`]: the tiles of [`dot_rows`], each 8-wide slice of a weight row
    /// rebuilt from its bytes (`q as f32 * d`, then `+ m`: the dequantization's two roundings,
    /// not a fused multiply-add) before it meets the tile's rows.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_rows_packed(x: &[f32], w: &PackedRows, first: usize, out: &mut [f32]) {
        let k = w.cols();
        let m = x.len() / k;
        let n = out.len() / m;
        assert!(first + n <= w.rows(), "skinny: weight rows out of range");
        walk(m, n, |features, rows, f, t| {
            let x = &x[t * k..(t + rows) * k];
            let out = &mut out[f * m + t..];
            let row0 = first + f;
            macro_rules! go {
                ($F:literal, $R:literal) => {
                    match (w.group(), w.has_offset()) {
                        (16, true) => packed_tile::<$F, $R, 16, true>(x, w, row0, m, out),
                        (16, false) => packed_tile::<$F, $R, 16, false>(x, w, row0, m, out),
                        (_, true) => packed_tile::<$F, $R, 32, true>(x, w, row0, m, out),
                        (_, false) => packed_tile::<$F, $R, 32, false>(x, w, row0, m, out),
                    }
                };
            }
            by_shape!(features, rows, go)
        });
    }

    /// [`tile`] over the weight rows `row0 .. row0 + F` of `w` (`k` a multiple of 32: no tail),
    /// whose scales come one per `GROUP` values.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn packed_tile<
        const F: usize,
        const R: usize,
        const GROUP: usize,
        const OFFSET: bool,
    >(
        x: &[f32],
        w: &PackedRows,
        row0: usize,
        m: usize,
        out: &mut [f32],
    ) {
        let k = w.cols();
        assert!(x.len() >= R * k && out.len() > (F - 1) * m + R - 1);
        assert_eq!(w.group(), GROUP, "skinny: the tile's group is the weight's");
        let rows: [(&[i8], &[f32], Option<&[f32]>); F] = std::array::from_fn(|j| w.row(row0 + j));
        let xp = x.as_ptr();
        let mut acc = [[_mm256_setzero_ps(); R]; F];
        for b in 0..k / GROUP {
            // One prefetch per 64 bytes (a cache line) of each row.
            if (b * GROUP).is_multiple_of(2 * BLOCK) {
                for row in &rows {
                    // Whether a memory-bound stream keeps enough loads in flight is up to the
                    // out-of-order window; a byte per weight fills it with too little, so the
                    // rows are fetched ahead. 2 KiB was the best of 0.5–4 KiB in a throwaway
                    // sweep on a Zen 3 (not kept, not reproducible from the repository).
                    // Prefetching past the end is harmless: it never faults.
                    let ahead = row.0.as_ptr().wrapping_add(b * GROUP + PREFETCH_BYTES);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                }
            }
            let scale: [__m256; F] = std::array::from_fn(|j| _mm256_set1_ps(rows[j].1[b]));
            let offset: [__m256; F] = std::array::from_fn(|j| match rows[j].2 {
                Some(m) if OFFSET => _mm256_set1_ps(m[b]),
                _ => _mm256_setzero_ps(),
            });
            for s in 0..GROUP / 8 {
                let i = b * GROUP + s * 8;
                let wv: [__m256; F] = std::array::from_fn(|j| {
                    // SAFETY: i + 8 ≤ k, the length of each packed row.
                    let bytes = unsafe { _mm_loadl_epi64(rows[j].0.as_ptr().add(i).cast()) };
                    let v =
                        _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)), scale[j]);
                    if OFFSET {
                        _mm256_add_ps(v, offset[j])
                    } else {
                        v
                    }
                });
                for r in 0..R {
                    // SAFETY: i + 8 ≤ k, and row r of x lies within the length asserted above.
                    let xv = unsafe { _mm256_loadu_ps(xp.add(r * k + i)) };
                    for j in 0..F {
                        acc[j][r] = _mm256_fmadd_ps(xv, wv[j], acc[j][r]);
                    }
                }
            }
        }
        for j in 0..F {
            for r in 0..R {
                out[j * m + r] = hsum(acc[j][r]);
            }
        }
    }

    /// [`super::rows_times`]: columns in blocks of 32 (four registers) and then 8, two rows of
    /// `x` per pass so that each loaded slice of `v` serves both; the last `n % 8` columns
    /// scalar, in the same order.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn rows_times(x: &[f32], v: &[f32], n: usize, out: &mut [f32]) {
        let k = v.len() / n;
        let m = x.len() / k;
        assert!(out.len() >= m * n, "skinny: output block too short");
        let mut t = 0;
        while t < m {
            let rows = (m - t).min(2);
            let (x, out) = (&x[t * k..(t + rows) * k], &mut out[t * n..(t + rows) * n]);
            let mut c = 0;
            while c + 8 <= n {
                let wide = if c + 32 <= n { 4 } else { 1 };
                match (rows, wide) {
                    (2, 4) => column_block::<2, 4>(x, v, n, c, out),
                    (2, _) => column_block::<2, 1>(x, v, n, c, out),
                    (_, 4) => column_block::<1, 4>(x, v, n, c, out),
                    _ => column_block::<1, 1>(x, v, n, c, out),
                }
                c += 8 * wide;
            }
            for r in 0..rows {
                for c in c..n {
                    let mut acc = 0f32;
                    for s in 0..k {
                        acc = x[r * k + s].mul_add(v[s * n + c], acc);
                    }
                    out[r * n + c] = acc;
                }
            }
            t += rows;
        }
    }

    /// Columns `c .. c + 8·C` of `R` output rows: `out[r·n + j] = Σ_s x[r·k + s] · v[s·n + j]`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn column_block<const R: usize, const C: usize>(
        x: &[f32],
        v: &[f32],
        n: usize,
        c: usize,
        out: &mut [f32],
    ) {
        let k = v.len() / n;
        assert!(x.len() >= R * k && out.len() >= R * n && c + 8 * C <= n);
        let vp = v.as_ptr();
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        for s in 0..k {
            // SAFETY: s < k and c + 8·C ≤ n, so every load lies within `v`'s k·n values.
            let vv: [__m256; C] =
                std::array::from_fn(|q| unsafe { _mm256_loadu_ps(vp.add(s * n + c + 8 * q)) });
            for r in 0..R {
                let p = _mm256_set1_ps(x[r * k + s]);
                for q in 0..C {
                    acc[r][q] = _mm256_fmadd_ps(p, vv[q], acc[r][q]);
                }
            }
        }
        for r in 0..R {
            for q in 0..C {
                let dst = &mut out[r * n + c + 8 * q..r * n + c + 8 * q + 8];
                // SAFETY: `dst` holds eight f32.
                unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), acc[r][q]) };
            }
        }
    }

    /// The lanes of `v` summed as [`super::lane_sum`] does.
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds eight f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
        super::lane_sum(lanes)
    }
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

    /// A KV cache's view into a buffer with room (`engine::kv`) strides its heads apart: both
    /// attention products read it where it lies, with the bits of a contiguous copy's products.
    #[test]
    fn head_strided_operands_are_read_in_place_with_the_same_bits() {
        let dev = Device::Cpu;
        let bits = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let buffer = Tensor::randn(0f32, 1.0, (2, 3, 50, 64), &dev).unwrap();
        let keys = buffer.narrow(2, 0, 45).unwrap();
        let in_place = contiguous_matrices(&keys).unwrap();
        assert!(!in_place.is_contiguous(), "the view was copied");
        let copy = keys.contiguous().unwrap();
        let q = Tensor::randn(0f32, 1.0, (2, 3, 6, 64), &dev).unwrap();
        assert_eq!(
            bits(apply(&q, &keys).unwrap()),
            bits(apply(&q, &copy).unwrap())
        );
        let p = Tensor::randn(0f32, 1.0, (2, 3, 6, 45), &dev).unwrap();
        let strided = p.apply_op2_no_bwd(&in_place, &SkinnyMatmul).unwrap();
        let dense = p.apply_op2_no_bwd(&copy, &SkinnyMatmul).unwrap();
        assert_eq!(bits(strided), bits(dense));
        // A transposed operand's matrices are not contiguous: it is copied first.
        let t = keys.t().unwrap();
        assert!(matrix_starts(t.layout()).is_none());
        assert!(contiguous_matrices(&t).unwrap().is_contiguous());
    }

    #[test]
    fn rows_times_values_equal_candles_product_within_rounding() {
        let dev = Device::Cpu;
        // Columns: a head's 64, blocks of 32 and 8 with a scalar tail, fewer than 8; odd rows.
        for (lead, m, k, n) in [
            (vec![2, 3], 3, 45, 64),
            (vec![1], 5, 17, 45),
            (vec![4], MAX_ROWS, 9, 13),
            (vec![2], 1, 30, 3),
        ] {
            let xs = [lead.clone(), vec![m, k]].concat();
            let vs = [lead.clone(), vec![k, n]].concat();
            let x = Tensor::randn(0f32, 1.0, xs, &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, vs, &dev).unwrap();
            let want = x.matmul(&v).unwrap();
            let got = x.apply_op2_no_bwd(&v, &SkinnyMatmul).unwrap();
            assert_eq!(got.dims(), want.dims());
            let d = max_abs_diff(&want, &got);
            assert!(d < 1e-4, "{lead:?} {m}×{k}×{n}: {d}");
        }
    }

    /// Every output sums in one fixed order whatever its tile and CPU path, so a row's result
    /// does not depend on the rows batched with it (the study's conditions share batches).
    #[test]
    fn a_rows_result_does_not_depend_on_its_batch_or_the_cpu_path() {
        let dev = Device::Cpu;
        let (k, n) = (77, 70);
        let x = Tensor::randn(0f32, 1.0, (7, k), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (k, n), &dev).unwrap();
        let all_t = apply(&x, &w).unwrap().to_vec2::<f32>().unwrap();
        let all = x
            .apply_op2_no_bwd(&v, &SkinnyMatmul)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let (xs, ws, vs) = (
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            w.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            v.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        for t in 0..7 {
            let row = x.narrow(0, t, 1).unwrap();
            assert_eq!(
                apply(&row, &w).unwrap().to_vec2::<f32>().unwrap()[0],
                all_t[t]
            );
            let alone = row.apply_op2_no_bwd(&v, &SkinnyMatmul).unwrap();
            assert_eq!(alone.to_vec2::<f32>().unwrap()[0], all[t]);
            // The portable order, written out.
            let xr = &xs[t * k..(t + 1) * k];
            for f in 0..n {
                assert_eq!(
                    dot(xr, &ws[f * k..(f + 1) * k]),
                    all_t[t][f],
                    "row {t} feature {f}"
                );
                let plain = (0..k).fold(0f32, |acc, s| xr[s].mul_add(vs[s * n + f], acc));
                assert_eq!(plain, all[t][f], "row {t} column {f}");
            }
        }
    }

    /// On the integer form, every product equals the one on the dequantized tensor bit for bit,
    /// on the SIMD and the portable path alike, whatever the rows batched with it.
    #[test]
    fn packed_products_equal_the_dequantized_ones_bit_for_bit() {
        use candle_core::quantized::{GgmlDType, QTensor};
        let dev = Device::Cpu;
        for (dtype, k, n) in [
            (GgmlDType::Q4_1, 576, 70),
            (GgmlDType::Q8_0, 64, 133),
            (GgmlDType::Q5_0, 96, 5),
            (GgmlDType::Q4_0, 32, 1),
            (GgmlDType::Q4K, 512, 9),
            (GgmlDType::Q6K, 768, 11),
        ] {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            let q = QTensor::quantize(&w, dtype).unwrap();
            let packed = PackedRows::from_qtensor(&q).unwrap().expect("kept");
            let plain = q.dequantize(&dev).unwrap();
            let x = Tensor::randn(0f32, 1.0, (MAX_ROWS, k), &dev).unwrap();
            let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let bits = |t: &[f32]| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            for m in 1..=MAX_ROWS {
                let want = apply(&x.narrow(0, 0, m).unwrap(), &plain).unwrap();
                let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let mut got = vec![0f32; m * n];
                product_packed(&xs[..m * k], &packed, &mut got);
                assert_eq!(bits(&got), bits(&want), "{dtype:?} {m}×{k}×{n}");
                // The portable path, feature-major over all rows at once.
                let mut portable = vec![0f32; n * m];
                dot_rows_packed_portable(&xs[..m * k], &packed, 0, &mut portable);
                for f in 0..n {
                    for t in 0..m {
                        assert_eq!(
                            portable[f * m + t].to_bits(),
                            want[t * n + f].to_bits(),
                            "{dtype:?} portable row {t} feature {f}"
                        );
                    }
                }
            }
        }
    }

    /// A stack of parts with and without offsets (zero offsets filled in), with a scale per 32 and
    /// per 16 (each 32's scale repeated), still gives the bits of the product on the dequantized
    /// parts.
    #[test]
    fn mixed_stacks_keep_the_dequantized_products_bits() {
        use candle_core::quantized::{GgmlDType, QTensor};
        let dev = Device::Cpu;
        let parts: Vec<QTensor> = [
            (GgmlDType::Q8_0, 7),
            (GgmlDType::Q4K, 5),
            (GgmlDType::Q5_0, 3),
            (GgmlDType::Q6K, 4),
        ]
        .into_iter()
        .map(|(dtype, n)| {
            let w = Tensor::randn(0f32, 1.0, (n, 256), &dev).unwrap();
            QTensor::quantize(&w, dtype).unwrap()
        })
        .collect();
        let packed = PackedRows::stack(
            parts
                .iter()
                .map(|q| PackedRows::from_qtensor(q).unwrap().unwrap())
                .collect(),
        )
        .unwrap();
        let plain: Vec<Tensor> = parts.iter().map(|q| q.dequantize(&dev).unwrap()).collect();
        let plain = Tensor::cat(&plain, 0).unwrap();
        for m in [1, 3] {
            let x = Tensor::randn(0f32, 1.0, (m, 256), &dev).unwrap();
            let want = apply(&x, &plain).unwrap().flatten_all().unwrap();
            let want = want.to_vec1::<f32>().unwrap();
            let mut got = vec![0f32; m * 19];
            product_packed(
                &x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                &packed,
                &mut got,
            );
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{m} rows");
        }
    }

    #[test]
    fn packed_path_takes_only_few_row_untracked_f32_products_that_fit() {
        use candle_core::quantized::{GgmlDType, QTensor};
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (8, 64), &dev).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let packed = PackedRows::from_qtensor(&q).unwrap().unwrap();
        let few = Tensor::randn(0f32, 1.0, (2, 64), &dev).unwrap();
        assert_eq!(matmul_t_packed(&few, &packed).unwrap().is_some(), enabled());
        let many = Tensor::randn(0f32, 1.0, (MAX_ROWS + 1, 64), &dev).unwrap();
        assert!(matmul_t_packed(&many, &packed).unwrap().is_none());
        let wrong_width = Tensor::randn(0f32, 1.0, (2, 32), &dev).unwrap();
        assert!(matmul_t_packed(&wrong_width, &packed).unwrap().is_none());
        let var = candle_core::Var::from_tensor(&few).unwrap();
        assert!(matmul_t_packed(var.as_tensor(), &packed).unwrap().is_none());
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
