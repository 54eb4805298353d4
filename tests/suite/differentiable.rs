//! The differentiable forward (`Hooks::differentiable`) against the fast one, and its input
//! gradients against finite differences, on the tiny fixtures of each family.

use crate::common;
use common::{load_fixture as load, max_abs, max_abs_diff};

use candle_core::{DType, IndexOp, Tensor, D};
use headscope::engine::{Capture, Engine, Hooks, Positions, Start};

/// 20 ids (longer than Gemma 2's sliding window of 8).
fn ids(engine: &Engine) -> Tensor {
    let v: Vec<u32> = (0..20u32).map(|i| (i * 37 + 11) % 300).collect();
    Tensor::from_vec(v, (1, 20), engine.device()).unwrap()
}

fn logits(engine: &Engine, ids: &Tensor, differentiable: bool) -> Tensor {
    let hooks = Hooks {
        differentiable,
        capture: Capture {
            logits: Some(Positions::All),
            ..Default::default()
        },
        ..Default::default()
    };
    engine
        .forward(Start::Tokens(ids), None, &hooks)
        .unwrap()
        .logits
        .unwrap()
}

#[test]
fn differentiable_forward_matches_the_fast_one() {
    for family in ["qwen2", "llama", "gemma2"] {
        for gguf in [false, true] {
            let mut engine = load(family, gguf);
            let ids = ids(&engine);
            let want = logits(&engine, &ids, false);
            // Small blocks so the fast path takes the chunked attention too.
            engine.set_attention_chunk(4);
            let chunked = logits(&engine, &ids, false);
            let got = logits(&engine, &ids, true);
            // f32 rounding: the fast path's own full and chunked attention differ by up to 1.2e-5
            // on logits of magnitude ~8, so the tolerance is 1e-5 relative to the largest logit.
            let scale = max_abs(&want).max(1.0);
            for (what, other) in [("full", &want), ("chunked", &chunked)] {
                let d = max_abs_diff(&got, other);
                assert!(
                    d <= 1e-5 * scale,
                    "{family} (gguf={gguf}) vs {what}: max |Δ| = {d:e} (logits up to {scale})"
                );
            }
        }
    }
}

/// `log p(y)` at the last position after the input embeddings `rows` (unscaled table rows
/// `[1, t, d]`), by the fast forward, in f64.
fn logprob_after(engine: &Engine, rows: &Tensor, y: u32) -> f64 {
    let resid = match engine.arch().embedding_scale {
        Some(s) => (rows * s).unwrap(),
        None => rows.clone(),
    };
    let t = rows.dims()[1];
    let hooks = Hooks {
        capture: Capture {
            logits: Some(Positions::List(vec![t - 1])),
            ..Default::default()
        },
        ..Default::default()
    };
    let trace = engine
        .forward(Start::ResidPre { layer: 0, resid }, None, &hooks)
        .unwrap();
    let row = trace
        .logits
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    headscope::analysis::divergence::token_logprob(&row, y)
}

/// Central differences on single embedding coordinates (the largest-gradient one at three
/// positions), the forward in f32. Step h = 3e-3 measured best on these fixtures: worst relative
/// error 4e-4 (h = 1e-2: 5e-3 at the last position, truncation-bound; h = 1e-3: 1.2e-3,
/// rounding-bound, as the f32 rounding of log p ≈ −7 divided by 2h grows like 1/h).
#[test]
fn embedding_gradient_matches_finite_differences() {
    const H: f64 = 3e-3;
    // The llama GGUF covers the interleaved RoPE.
    for (family, gguf) in [
        ("qwen2", false),
        ("llama", false),
        ("llama", true),
        ("gemma2", false),
    ] {
        let engine = load(family, gguf);
        let ids = ids(&engine);
        let y = 42u32;
        let g = engine
            .embedding_gradient(&ids, |logits| {
                let lp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
                Ok(lp.i((0, y as usize))?)
            })
            .unwrap();
        let rows = engine
            .embeddings(&ids)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let base = logprob_after(&engine, &rows, y);
        assert!(
            (g.value - base).abs() < 1e-5,
            "{family}: f = {} vs {base}",
            g.value
        );
        let grad = g.grad.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        let (t, d) = (grad.len(), grad[0].len());
        // The largest coordinate of the first, a middle and the last position (the first is only
        // seen through attention; Gemma 2's sliding layers hide it from the last query).
        for j in [0, t / 2, t - 1] {
            let k = (0..d)
                .max_by(|&a, &b| grad[j][a].abs().total_cmp(&grad[j][b].abs()))
                .unwrap();
            let bump = |sign: f64| {
                let mut delta = vec![0f32; t * d];
                delta[j * d + k] = (sign * H) as f32;
                let delta = Tensor::from_vec(delta, (1, t, d), rows.device()).unwrap();
                logprob_after(&engine, &(&rows + delta).unwrap(), y)
            };
            let fd = (bump(1.0) - bump(-1.0)) / (2.0 * H);
            let an = grad[j][k] as f64;
            let rel = (fd - an).abs() / an.abs().max(1e-3);
            eprintln!("{family} pos {j} dim {k}: grad {an:.6e}, finite difference {fd:.6e}, rel {rel:.1e}");
            assert!(rel < 1e-3, "{family} pos {j} dim {k}: grad {an} vs fd {fd}");
        }
    }
}
