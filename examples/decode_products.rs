//! A decoding step's weight products on SmolLM2-135M's shapes (30 layers × QKV 576 → 960, output
//! 576 → 576, gate/up 576 → 3072, down 1536 → 576, seeded Q4_1 weights: 106 M of them, far more
//! than the caches hold), on the f32 tensor and on its integer form (`engine::packed`), each
//! called from outside rayon's pool and from inside it (`engine::on_workers`), in the same run.
//! Prints a Markdown table naming the CPU; `benches/results/decode-products-*.md` are its outputs.
//!
//!     cargo run --release --example decode_products

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use headscope::engine::{on_workers, packed::PackedRows, skinny};

/// One layer's products: (k, n).
const SHAPES: [(usize, usize); 4] = [(576, 960), (576, 576), (576, 3072), (1536, 576)];
const LAYERS: usize = 30;

struct Layer {
    plain: Tensor,
    packed: PackedRows,
}

/// Best milliseconds per step over 5 timings of 3 steps each.
fn best_ms(step: &dyn Fn()) -> f64 {
    step();
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..3 {
                step();
            }
            t.elapsed().as_secs_f64() * 1e3 / 3.0
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let mut layers = Vec::new();
    for _ in 0..LAYERS {
        for (k, n) in SHAPES {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
            let q = QTensor::quantize(&w, GgmlDType::Q4_1)?;
            let packed = PackedRows::from_qtensor(&q)?.expect("Q4_1 is kept");
            layers.push(Layer {
                plain: q.dequantize(&dev)?,
                packed,
            });
        }
    }
    let cpu = headscope::ui::bench_tui::cpu_model();
    let threads = candle_core::utils::get_num_threads();
    println!("CPU {cpu}, {threads} threads; one decoding step's 120 weight products (SmolLM2-135M shapes, Q4_1), ms per step, best of 5\n");
    println!("| rows | f32, outside the pool | f32, inside | integer form, outside | integer form, inside | f32 outside / integer inside | same bits |");
    println!("|---:|---:|---:|---:|---:|---:|---|");
    for m in [1usize, 4] {
        let xs: Vec<Tensor> = [576usize, 1536]
            .iter()
            .map(|&k| Tensor::randn(0f32, 1.0, (m, k), &dev))
            .collect::<candle_core::Result<_>>()?;
        let x_for = |k: usize| if k == 576 { &xs[0] } else { &xs[1] };
        let plain = || {
            for l in &layers {
                let y = skinny::matmul_t(x_for(l.plain.dims()[1]), &l.plain);
                std::hint::black_box(y.expect("product").expect("release build"));
            }
        };
        let packed = || {
            for l in &layers {
                let y = skinny::matmul_t_packed(x_for(l.packed.cols()), &l.packed);
                std::hint::black_box(y.expect("product").expect("release build"));
            }
        };
        let times = [
            best_ms(&plain),
            best_ms(&|| on_workers(plain)),
            best_ms(&packed),
            best_ms(&|| on_workers(packed)),
        ];
        let same = layers.iter().all(|l| {
            let x = x_for(l.plain.dims()[1]);
            let a = skinny::matmul_t(x, &l.plain).unwrap().unwrap();
            let b = skinny::matmul_t_packed(x, &l.packed).unwrap().unwrap();
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                == b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        });
        println!(
            "| {m} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}× | {} |",
            times[0],
            times[1],
            times[2],
            times[3],
            times[0] / times[3],
            if same { "yes" } else { "NO" }
        );
    }
    Ok(())
}
