//! candle's `gemm` against OpenBLAS on the forward's product shapes (SmolLM2-135M: hidden 576,
//! fused QKV 960, fused gate/up 3072, down 1536 → 576, unembedding 49152), f32, best of 7 after a
//! warm-up, alternating the two so both see the same machine. Prints a Markdown table naming the
//! CPU; `benches/results/blas-gemm.md` is its output.
//!
//!     cargo run --release --features openblas --example blas_gemm

use std::time::Instant;

use candle_core::{Device, Tensor};
use headscope::engine::blas;

/// Seconds of one call.
fn time(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

fn main() -> candle_core::Result<()> {
    let cpu = headscope::ui::bench_tui::cpu_model();
    let threads = candle_core::utils::get_num_threads();
    println!("CPU {cpu}, {threads} threads, f32, GFLOP/s (best of 7); rows = tokens in the pass\n");
    println!("| rows × in × out | candle gemm | OpenBLAS | OpenBLAS / candle |");
    println!("|---|---:|---:|---:|");
    let dev = Device::Cpu;
    for rows in [1usize, 8, 27, 64, 128, 258, 512, 2322] {
        for (k, n) in [(576usize, 960usize), (576, 3072), (1536, 576), (576, 49152)] {
            if rows == 2322 && n == 49152 {
                continue; // a sweep pass never unembeds every row
            }
            let x = Tensor::randn(0f32, 1.0, (rows, k), &dev)?;
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
            let wt = w.t()?;
            let flop = 2.0 * (rows * k * n) as f64;
            let candle = || std::hint::black_box(x.matmul(&wt).expect("candle matmul"));
            let blas = || std::hint::black_box(blas::sgemm_t(&x, &w).expect("sgemm"));
            // One warm-up each, then 7 alternating timings; the best of each.
            candle();
            blas();
            let (mut candle_s, mut blas_s) = (f64::INFINITY, f64::INFINITY);
            for _ in 0..7 {
                candle_s = candle_s.min(time(|| {
                    candle();
                }));
                blas_s = blas_s.min(time(|| {
                    blas();
                }));
            }
            println!(
                "| {rows} × {k} × {n} | {:.1} | {:.1} | {:.2}× |",
                flop / candle_s / 1e9,
                flop / blas_s / 1e9,
                candle_s / blas_s
            );
        }
    }
    Ok(())
}
