//! candle's `matmul` on the products of one SmolLM2-135M forward over an 840-token prompt, each
//! repeated with its operands warm (best of 7 after a warm-up): the projections (fused QKV 576 →
//! 960, fused gate/up 576 → 3072, down 1536 → 576, unembedding 576 → 49152) and the blocked causal
//! attention's two products for one block of 256 query rows (3 KV heads × 3 query heads each,
//! head size 64) against 256, 512 and 840 keys. Prints GFLOP/s as a Markdown table naming the CPU;
//! compared with the forward's own time in `benches/results/study-speed-zen3-b/NOTE.md`.
//!
//!     cargo run --release --example forward_shapes

use std::time::Instant;

use candle_core::{Device, Tensor};

/// Best seconds of 7 calls after one warm-up.
fn best(f: impl Fn() -> candle_core::Result<Tensor>) -> candle_core::Result<f64> {
    std::hint::black_box(f()?);
    let mut best = f64::INFINITY;
    for _ in 0..7 {
        let t = Instant::now();
        std::hint::black_box(f()?);
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn row(what: &str, flop: f64, s: f64) {
    println!("| {what} | {:.1} |", flop / s / 1e9);
}

fn main() -> candle_core::Result<()> {
    let cpu = headscope::ui::bench_tui::cpu_model();
    let threads = candle_core::utils::get_num_threads();
    println!("CPU {cpu}, {threads} threads, f32, candle `matmul`, GFLOP/s (best of 7)\n");
    println!("| product | GFLOP/s |");
    println!("|---|---:|");
    let dev = Device::Cpu;
    let rows = 840;
    for (k, n) in [(576usize, 960usize), (576, 3072), (1536, 576), (576, 49152)] {
        let x = Tensor::randn(0f32, 1.0, (rows, k), &dev)?;
        let wt = Tensor::randn(0f32, 1.0, (n, k), &dev)?.t()?;
        let s = best(|| x.matmul(&wt))?;
        row(
            &format!("x · wᵀ, {rows} × {k} × {n}"),
            2.0 * (rows * k * n) as f64,
            s,
        );
    }
    let (kv, rep, block, dh) = (3usize, 3usize, 256usize, 64usize);
    let m = rep * block;
    for keys in [256usize, 512, 840] {
        let q = Tensor::randn(0f32, 1.0, (1, kv, m, dh), &dev)?;
        let kt = Tensor::randn(0f32, 1.0, (1, kv, keys, dh), &dev)?.t()?;
        let p = Tensor::randn(0f32, 1.0, (1, kv, m, keys), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (1, kv, keys, dh), &dev)?;
        let flop = 2.0 * (kv * m * keys * dh) as f64;
        row(
            &format!("q · kᵀ, {kv} × {m} × {dh} × {keys}"),
            flop,
            best(|| q.matmul(&kt))?,
        );
        row(
            &format!("P · V, {kv} × {m} × {keys} × {dh}"),
            flop,
            best(|| p.matmul(&v))?,
        );
    }
    Ok(())
}
