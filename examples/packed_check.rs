//! Which of a GGUF model's matrices keep their integer form for decoding ([`headscope::engine`]'s
//! `packed`), with how many values per scale, and whether every kept form rebuilds the loaded f32
//! tensor bit for bit (every 53rd row of every matrix). The committed test does this for SmolLM2
//! (`smollm2_keeps_its_weights_integer_form_equal_to_the_loaded_tensors`); this checks the models
//! CI does not fetch (Qwen2.5-Coder 0.5B and 1.5B, whose Q6_K matrices are kept since scales per
//! 16 are). Exits non-zero on any difference.
//!
//!     cargo run --release --example packed_check -- ~/.cache/headscope/models/<model>.gguf

use std::collections::BTreeMap;

use headscope::engine::weights::Weight;
use headscope::engine::{Engine, LoadOptions};

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: packed_check MODEL.gguf"))?;
    let mut opts = LoadOptions::new(&path);
    opts.offline = true;
    let engine = Engine::load(&opts)?;
    let w = engine.weights();
    let mut named: Vec<(String, &Weight)> = vec![("lm_head".into(), &w.lm_head)];
    for (l, layer) in w.layers.iter().enumerate() {
        named.extend([
            (format!("{l}.qkv"), &layer.qkv_weight),
            (format!("{l}.o"), &layer.o_weight),
            (format!("{l}.gate_up"), &layer.gate_up_weight),
            (format!("{l}.down"), &layer.down_weight),
        ]);
    }
    // (kind of matrix, values per scale or "f32 only") → how many, and their weights.
    let mut kinds: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    let mut bad = 0;
    for (name, m) in &named {
        let kind = name.rsplit('.').next().unwrap_or(name).to_string();
        let form = match m.packed() {
            None => "f32 only".to_string(),
            Some(p) => {
                let t = m.tensor();
                let mut row = vec![0f32; p.cols()];
                for r in (0..p.rows()).step_by(53) {
                    p.dequantize_row(r, &mut row);
                    if row != t.get(r)?.to_vec1::<f32>()? {
                        eprintln!("{name}: row {r} differs from the loaded tensor");
                        bad += 1;
                    }
                }
                format!("kept, a scale per {}", p.group())
            }
        };
        let e = kinds.entry((kind, form)).or_default();
        e.0 += 1;
        e.1 += m.dims().iter().product::<usize>();
    }
    println!("{path}\n");
    println!("| matrix | form | matrices | weights (M) |");
    println!("|---|---|---:|---:|");
    for ((kind, form), (n, values)) in &kinds {
        println!("| {kind} | {form} | {n} | {:.1} |", *values as f64 / 1e6);
    }
    anyhow::ensure!(bad == 0, "{bad} rows differ");
    println!("\nevery kept form rebuilds its loaded tensor bit for bit (every 53rd row)");
    Ok(())
}
