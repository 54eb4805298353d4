//! Parity with Hugging Face transformers on tiny random-weight models of each family, loaded from
//! safetensors folders and from GGUF files. Expected values: transformers' forward of the committed
//! weights in float64 (scripts/make_exact_expected.py, committed with its outputs; these tests never
//! run Python). Tolerance: max |Δ| ≤ 1e-4 in f32, or — where transformers' own float32 forward is
//! already further than half that from exact (the residual stream reaches |x| ≈ 57 on these random
//! weights, where one f32 ulp is 4e-6) — no more than twice transformers' own float32 error.

use crate::common;
use common::{load_fixture as load, max_abs_diff};

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, IndexOp, Tensor};
use headscope::engine::{AblationKind, Capture, Engine, HeadAblation, Hooks, Positions, Start};

const TOL: f32 = 1e-4;

fn fixture_dir(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(family)
}

fn expected(family: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture_dir(family).join("exact.safetensors"), &Device::Cpu)
        .unwrap()
}

/// Per tensor, how far transformers' float32 forward is from the exact one (exact_meta.json).
fn pytorch_f32_error(family: &str) -> HashMap<String, f32> {
    let text = std::fs::read_to_string(fixture_dir(family).join("exact_meta.json")).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&text).unwrap();
    serde_json::from_value(meta["per_tensor"].clone()).unwrap()
}

#[track_caller]
fn assert_close(name: &str, ours: &Tensor, theirs: &Tensor) {
    let d = max_abs_diff(ours, theirs);
    assert!(d <= TOL, "{name}: max |Δ| = {d:e} > {TOL:e}");
}

/// `ours` is within 1e-4 of the exact value, or at most twice as far from it as PyTorch's float32.
#[track_caller]
fn assert_as_exact_as_pytorch(
    name: &str,
    ours: &Tensor,
    exact: &Tensor,
    pytorch: &HashMap<String, f32>,
) {
    let tol = TOL.max(2.0 * pytorch[name]);
    let d = max_abs_diff(ours, exact);
    assert!(
        d <= tol,
        "{name}: max |Δ| = {d:e} > {tol:e} (PyTorch f32 is {:e} from exact)",
        pytorch[name]
    );
}

fn input_ids(exp: &HashMap<String, Tensor>) -> Tensor {
    exp["input_ids"].to_dtype(DType::U32).unwrap()
}

fn capture_everything() -> Hooks {
    Hooks {
        capture: Capture {
            full_patterns: true,
            resid_pre: Some(Positions::All),
            resid_mid: Some(Positions::All),
            resid_post: Some(Positions::All),
            z: Some(Positions::All),
            head_results: Some(Positions::All),
            logits: Some(Positions::All),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn logits_with(engine: &Engine, ids: &Tensor, hooks: Hooks) -> Tensor {
    let hooks = Hooks {
        capture: Capture {
            logits: Some(Positions::All),
            ..Default::default()
        },
        ..hooks
    };
    engine
        .forward(Start::Tokens(ids), None, &hooks)
        .unwrap()
        .logits
        .unwrap()
        .squeeze(0)
        .unwrap()
}

fn check_family(family: &str, gguf: bool) {
    let engine = load(family, gguf);
    let exp = expected(family);
    let pytorch = pytorch_f32_error(family);
    let ids = input_ids(&exp);
    let arch = engine.arch().clone();
    let trace = engine
        .forward(Start::Tokens(&ids), None, &capture_everything())
        .unwrap();
    for l in 0..arch.num_layers {
        let get = |n: &str| {
            trace
                .get(&format!("blocks.{l}.{n}"))
                .unwrap()
                .squeeze(0)
                .unwrap()
        };
        assert_as_exact_as_pytorch(
            &format!("attn.{l}"),
            &get("attn.hook_pattern"),
            &exp[&format!("attn.{l}")],
            &pytorch,
        );
        assert_as_exact_as_pytorch(
            &format!("resid_pre.{l}"),
            &get("hook_resid_pre"),
            &exp[&format!("resid_pre.{l}")],
            &pytorch,
        );
        assert_as_exact_as_pytorch(
            &format!("resid_mid.{l}"),
            &get("hook_resid_mid"),
            &exp[&format!("resid_mid.{l}")],
            &pytorch,
        );
        assert_as_exact_as_pytorch(
            &format!("resid_post.{l}"),
            &get("hook_resid_post"),
            &exp[&format!("resid_post.{l}")],
            &pytorch,
        );
        assert_as_exact_as_pytorch(
            &format!("z.{l}"),
            &get("attn.hook_z"),
            &exp[&format!("z.{l}")],
            &pytorch,
        );
        assert_as_exact_as_pytorch(
            &format!("head_result.{l}"),
            &get("attn.hook_result"),
            &exp[&format!("head_result.{l}")],
            &pytorch,
        );
        let lens = engine.unembed(&get("hook_resid_post")).unwrap();
        assert_as_exact_as_pytorch(
            &format!("lens.{l}"),
            &lens,
            &exp[&format!("lens.{l}")],
            &pytorch,
        );
    }
    assert_as_exact_as_pytorch(
        "logits",
        &trace.logits.as_ref().unwrap().squeeze(0).unwrap(),
        &exp["logits"],
        &pytorch,
    );

    let (layers, heads) = (arch.num_layers, arch.num_heads);
    let head_mask = |layer: usize, head: usize| {
        let mut m = vec![1f32; layers * heads];
        m[layer * heads + head] = 0.0;
        Tensor::from_vec(m, (1, layers, heads), &Device::Cpu).unwrap()
    };
    let zero = Hooks {
        head_ablation: Some(HeadAblation {
            mask: head_mask(1, 2),
            kind: AblationKind::Zero,
            layers: None,
        }),
        ..Default::default()
    };
    assert_as_exact_as_pytorch(
        "logits_ablate_head",
        &logits_with(&engine, &ids, zero),
        &exp["logits_ablate_head"],
        &pytorch,
    );

    let mut mlp = vec![1f32; layers];
    mlp[0] = 0.0;
    let mlp_hooks = Hooks {
        mlp_mask: Some(Tensor::from_vec(mlp, (1, layers), &Device::Cpu).unwrap()),
        ..Default::default()
    };
    assert_as_exact_as_pytorch(
        "logits_ablate_mlp",
        &logits_with(&engine, &ids, mlp_hooks),
        &exp["logits_ablate_mlp"],
        &pytorch,
    );

    let uniform = Hooks {
        head_ablation: Some(HeadAblation {
            mask: head_mask(1, 1),
            kind: AblationKind::UniformPattern,
            layers: None,
        }),
        ..Default::default()
    };
    assert_as_exact_as_pytorch(
        "logits_ablate_uniform",
        &logits_with(&engine, &ids, uniform),
        &exp["logits_ablate_uniform"],
        &pytorch,
    );
    if let Some(want) = exp.get("logits_ablate_uniform_sliding") {
        // Gemma 2: layer 2 is a sliding-window layer; uniform over the keys inside the window.
        let hooks = Hooks {
            head_ablation: Some(HeadAblation {
                mask: head_mask(2, 1),
                kind: AblationKind::UniformPattern,
                layers: None,
            }),
            ..Default::default()
        };
        assert_as_exact_as_pytorch(
            "logits_ablate_uniform_sliding",
            &logits_with(&engine, &ids, hooks),
            want,
            &pytorch,
        );
    }
}

#[test]
fn qwen2_safetensors_matches_transformers() {
    check_family("qwen2", false);
}
#[test]
fn qwen2_gguf_matches_transformers() {
    check_family("qwen2", true);
}
#[test]
fn llama_safetensors_matches_transformers() {
    check_family("llama", false);
}
#[test]
fn llama_gguf_with_permuted_qk_matches_transformers() {
    check_family("llama", true);
}
#[test]
fn gemma2_safetensors_matches_transformers() {
    check_family("gemma2", false);
}
#[test]
fn gemma2_gguf_matches_transformers() {
    check_family("gemma2", true);
}

/// Internal consistency of the interventions the analyses rely on, on every family.
fn check_engine_invariants(family: &str) {
    let mut engine = load(family, false);
    let exp = expected(family);
    let ids = input_ids(&exp);
    let t = ids.dims()[1];
    let arch = engine.arch().clone();

    // A forward continued from a KV cache gives the same logits as one full forward.
    let split = t / 2;
    let first = ids.narrow(1, 0, split).unwrap();
    let rest = ids.narrow(1, split, t - split).unwrap();
    let cached = engine
        .forward(
            Start::Tokens(&first),
            None,
            &Hooks {
                capture: Capture {
                    kv_cache: true,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .unwrap();
    let cont = logits_with_past(&engine, &rest, cached.kv_cache.as_ref().unwrap());
    let full = exp["logits"].narrow(0, split, t - split).unwrap();
    assert_close("kv-cache continuation", &cont, &full);

    // Logits for a few rows only (the last layer then computes just those rows) equal the full ones.
    let rows = vec![0, 3, t - 2, t - 1];
    let some = engine
        .forward(
            Start::Tokens(&ids),
            None,
            &Hooks {
                capture: Capture {
                    logits: Some(Positions::List(rows.clone())),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .unwrap()
        .logits
        .unwrap()
        .squeeze(0)
        .unwrap();
    let idx = Tensor::from_vec(
        rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
        rows.len(),
        &Device::Cpu,
    )
    .unwrap();
    assert_close(
        "logits of selected rows",
        &some,
        &exp["logits"].index_select(&idx, 0).unwrap(),
    );

    // Long inputs take the chunked causal attention (blocks of 24 rows here, so that the tiny
    // models' contexts hold several); capturing full patterns forces the plain path.
    engine.set_attention_chunk(24);
    let long_len = arch.max_position_embeddings.min(300);
    let long_ids: Vec<u32> = (0..long_len as u32)
        .map(|i| 3 + (i * 37 + 11) % (arch.vocab_size as u32 - 3))
        .collect();
    let long = Tensor::from_vec(long_ids, (1, long_len), &Device::Cpu).unwrap();
    let chunked = logits_with(&engine, &long, Hooks::default());
    let plain = logits_with(
        &engine,
        &long,
        Hooks {
            capture: Capture {
                full_patterns: true,
                ..Default::default()
            },
            ..Default::default()
        },
    );
    assert_close("chunked attention over a long input", &chunked, &plain);
    engine.set_attention_chunk(headscope::engine::model::DEFAULT_ATTENTION_CHUNK);

    // Starting at layer l from a cached resid_pre reproduces the full forward.
    let l = arch.num_layers - 1;
    let trace = engine
        .forward(
            Start::Tokens(&ids),
            None,
            &Hooks {
                capture: Capture {
                    resid_pre: Some(Positions::All),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .unwrap();
    let resid = trace
        .get(&format!("blocks.{l}.hook_resid_pre"))
        .unwrap()
        .clone();
    let from_l = engine
        .forward(
            Start::ResidPre { layer: l, resid },
            None,
            &Hooks {
                capture: Capture {
                    logits: Some(Positions::All),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .unwrap();
    assert_close(
        "start at layer l",
        &from_l.logits.unwrap().squeeze(0).unwrap(),
        &exp["logits"],
    );

    // A batch of two differently-masked rows equals the two rows run alone.
    let (layers, heads) = (arch.num_layers, arch.num_heads);
    let mut m = vec![1f32; 2 * layers * heads];
    m[heads + 2] = 0.0; // row 0: L1H2
    m[layers * heads + 3] = 0.0; // row 1: L0H3
    let batch_ids = Tensor::cat(&[&ids, &ids], 0).unwrap();
    let hooks = Hooks {
        head_ablation: Some(HeadAblation {
            mask: Tensor::from_vec(m, (2, layers, heads), &Device::Cpu).unwrap(),
            kind: AblationKind::Zero,
            layers: None,
        }),
        capture: Capture {
            logits: Some(Positions::All),
            ..Default::default()
        },
        ..Default::default()
    };
    let batched = engine
        .forward(Start::Tokens(&batch_ids), None, &hooks)
        .unwrap()
        .logits
        .unwrap();
    assert_close(
        "batched row 0 = L1H2 alone",
        &batched.i(0).unwrap(),
        &exp["logits_ablate_head"],
    );
    let mut m1 = vec![1f32; layers * heads];
    m1[3] = 0.0;
    let alone = logits_with(
        &engine,
        &ids,
        Hooks {
            head_ablation: Some(HeadAblation {
                mask: Tensor::from_vec(m1, (1, layers, heads), &Device::Cpu).unwrap(),
                kind: AblationKind::Zero,
                layers: None,
            }),
            ..Default::default()
        },
    );
    assert_close("batched row 1 = L0H3 alone", &batched.i(1).unwrap(), &alone);

    // The prefix-reusing sweep equals masking each head in a full forward.
    let ids_vec: Vec<u32> = ids.squeeze(0).unwrap().to_vec1().unwrap();
    let (prompt, answer) = ids_vec.split_at(t - 5);
    let sweep = headscope::analysis::ablation::head_ablation_sweep(
        &engine,
        prompt,
        answer,
        3,
        &mut |_, _| true,
    )
    .unwrap();
    for (layer, head) in [(0, 0), (1, 2), (layers - 1, heads - 1)] {
        let mut m = vec![1f32; layers * heads];
        m[layer * heads + head] = 0.0;
        let hooks = Hooks {
            head_ablation: Some(HeadAblation {
                mask: Tensor::from_vec(m, (1, layers, heads), &Device::Cpu).unwrap(),
                kind: AblationKind::Zero,
                layers: None,
            }),
            capture: Capture {
                logits: Some(Positions::Range(t - 6..t - 1)),
                ..Default::default()
            },
            ..Default::default()
        };
        let logits = engine
            .forward(Start::Tokens(&ids), None, &hooks)
            .unwrap()
            .logits
            .unwrap();
        let lp = headscope::engine::generate::answer_logprob_per_row(&logits, answer).unwrap()[0];
        let naive = lp - sweep.clean_logprob;
        let d = (naive - sweep.delta_logprob[layer][head]).abs();
        assert!(
            d < 1e-3,
            "sweep L{layer}H{head}: {} vs naive {naive}",
            sweep.delta_logprob[layer][head]
        );
    }
}

fn logits_with_past(engine: &Engine, ids: &Tensor, past: &headscope::engine::KvCache) -> Tensor {
    let hooks = Hooks {
        capture: Capture {
            logits: Some(Positions::All),
            ..Default::default()
        },
        ..Default::default()
    };
    engine
        .forward(Start::Tokens(ids), Some(past), &hooks)
        .unwrap()
        .logits
        .unwrap()
        .squeeze(0)
        .unwrap()
}

#[test]
fn qwen2_interventions_are_consistent() {
    check_engine_invariants("qwen2");
}
#[test]
fn llama_interventions_are_consistent() {
    check_engine_invariants("llama");
}
#[test]
fn gemma2_interventions_are_consistent() {
    check_engine_invariants("gemma2");
}
