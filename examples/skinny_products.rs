//! The few-row products of `engine::skinny` against candle's own product on the shapes a decoding
//! step of SmolLM2-135M meets (hidden 576, fused QKV 960, fused gate/up 3072, down 1536 → 576,
//! unembedding 49152; attention scores over 864 keys and probabilities times values, head size
//! 64), f32, best of 5 after a warm-up, the two alternating so both see the same machine. Prints a
//! Markdown table naming the CPU; `benches/results/skinny-products-*.md` are its outputs.
//!
//!     cargo run --release --example skinny_products

use std::time::Instant;

use candle_core::{Device, Tensor};
use headscope::engine::skinny;

/// Best seconds per call of `f` over 5 timings of `reps` calls each.
fn best(reps: usize, f: &dyn Fn()) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / reps as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() -> candle_core::Result<()> {
    let cpu = headscope::ui::bench_tui::cpu_model();
    let threads = candle_core::utils::get_num_threads();
    println!("CPU {cpu}, {threads} threads, f32, GFLOP/s (best of 5); rows = decoding rows × query heads per KV head\n");
    println!("| product | rows × k × n | candle | skinny | skinny / candle |");
    println!("|---|---|---:|---:|---:|");
    let dev = Device::Cpu;
    for m in [1usize, 2, 4, 8] {
        let shapes = [
            ("x · wᵀ", 576usize, 960usize),
            ("x · wᵀ", 576, 3072),
            ("x · wᵀ", 1536, 576),
            ("x · wᵀ", 576, 49152),
            ("q · kᵀ", 64, 864),
            ("P · V", 864, 64),
        ];
        for (what, k, n) in shapes {
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
            let flop = 2.0 * (m * k * n) as f64;
            let reps = (1e9 / flop).clamp(3.0, 2000.0) as usize;
            // P · V multiplies by `v [k, n]`; the others by `wᵀ` for `w [n, k]`.
            let by_values = what == "P · V";
            let w = Tensor::randn(0f32, 1.0, if by_values { (k, n) } else { (n, k) }, &dev)?;
            let rhs = if by_values { w.clone() } else { w.t()? };
            let c = || drop(std::hint::black_box(x.matmul(&rhs).expect("candle")));
            let s = || {
                let y = match by_values {
                    true => skinny::batched_matmul(&x, &w),
                    false => skinny::matmul_t(&x, &w),
                };
                drop(std::hint::black_box(y.expect("skinny")))
            };
            c();
            s();
            let (candle, ours) = (best(reps, &c), best(reps, &s));
            println!(
                "| {what} | {m} × {k} × {n} | {:.1} | {:.1} | {:.2}× |",
                flop / candle / 1e9,
                flop / ours / 1e9,
                candle / ours
            );
        }
    }
    Ok(())
}
