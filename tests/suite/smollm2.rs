//! The real default model, SmolLM2-135M-Instruct (GGUF Q4_1), against transformers' numbers for the
//! same GGUF (tests/fixtures/smollm2/expected.json, made by scripts/make_fixtures.py).
//!
//! The model is fetched by scripts/fetch-model.sh (CI does it). Without it these tests print a note
//! and pass, unless HEADSCOPE_REQUIRE_MODEL=1 (as in CI), where a missing model fails them.

use crate::common;

use std::path::PathBuf;

use headscope::engine::{Engine, GenerationConfig, LoadOptions};
use headscope::prompt::{load_samples, PromptStyle, RagPrompt};
use serde_json::Value;

fn model_path() -> Option<PathBuf> {
    common::smollm2_path("SmolLM2 tests")
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/smollm2")
        .join(name)
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn engine() -> Option<Engine> {
    let path = model_path()?;
    let mut opts = LoadOptions::new(path.to_string_lossy());
    opts.offline = true;
    Some(Engine::load(&opts).expect("SmolLM2 loads"))
}

/// The Q4_1 layers and the Q8_0 unembedding keep their integer form for decoding, and it holds
/// exactly the loaded f32 weights (so decoding on it gives the same bits, `engine::skinny`).
#[test]
fn smollm2_keeps_its_weights_integer_form_equal_to_the_loaded_tensors() {
    let Some(engine) = engine() else { return };
    let w = engine.weights();
    let mut matrices = vec![&w.lm_head];
    for l in &w.layers {
        matrices.extend([
            &l.qkv_weight,
            &l.o_weight,
            &l.gate_up_weight,
            &l.down_weight,
        ]);
    }
    for (i, m) in matrices.into_iter().enumerate() {
        let p = m
            .packed()
            .unwrap_or_else(|| panic!("matrix {i} kept no integer form"));
        assert_eq!(m.dims(), &[p.rows(), p.cols()]);
        // Every 97th row, bit for bit.
        let t = m.tensor();
        let mut row = vec![0f32; p.cols()];
        for r in (0..p.rows()).step_by(97) {
            p.dequantize_row(r, &mut row);
            let want = t.get(r).unwrap().to_vec1::<f32>().unwrap();
            assert!(row == want, "matrix {i} row {r}");
        }
    }
}

#[test]
fn smollm2_prompt_scores_and_generation_match_transformers() {
    let Some(engine) = engine() else { return };
    let exp = expected();
    assert_eq!(engine.info().arch, "llama");
    assert_eq!(
        (
            engine.info().layers,
            engine.info().heads,
            engine.info().kv_heads
        ),
        (30, 9, 3)
    );

    let sample = load_samples(&fixture("sample.json")).unwrap().remove(0);
    let prompt = RagPrompt::build(
        &sample,
        &PromptStyle::Mirage.into(),
        &engine.template(),
        &engine.tokenizer(),
    )
    .unwrap();
    assert_eq!(
        prompt.text,
        exp["prompt_text"].as_str().unwrap(),
        "chat template rendering"
    );
    assert_eq!(prompt.ids, ids(&exp["prompt_ids"]), "prompt token ids");

    let answer_ids = ids(&exp["answer_ids"]);
    let scored = engine.score(&prompt.ids, &answer_ids, 5).unwrap();
    let want: Vec<f64> = exp["answer_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let worst = scored
        .logprobs
        .iter()
        .zip(&want)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    eprintln!("SmolLM2 max |Δ answer log-prob| vs transformers: {worst:e}");
    assert!(
        worst < 1e-4,
        "answer log-probs differ from transformers by {worst}"
    );

    let top: Vec<u32> = scored.top_alternatives[0].iter().map(|a| a.id).collect();
    let want_top = ids(&exp["top5_first"]["ids"]);
    assert_eq!(top[0], want_top[0], "top-1 at the first answer position");

    let cfg = GenerationConfig {
        max_new_tokens: answer_ids.len(),
        ..Default::default()
    };
    let generated = engine.generate(&prompt.ids, &cfg, |_| true).unwrap();
    assert_eq!(
        generated.answer_ids, answer_ids,
        "greedy answer differs from transformers'"
    );
    for (g, s) in generated.logprobs.iter().zip(&scored.logprobs) {
        assert!(
            (g - s).abs() < 1e-3,
            "KV-cached generation log-prob {g} vs teacher-forced {s}"
        );
    }
}
