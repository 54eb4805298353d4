//! A model loaded pruned (`--prune FILE`): its sliced weights give the zero-ablated model's logits
//! and generations on every fixture family; head-indexed analyses refuse it; its exports load back
//! with the same logits; bad pruning inputs are clear errors.

use crate::common;
use common::max_abs_diff;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use headscope::engine::generate::GenerationConfig;
use headscope::engine::{
    AblationKind, AblationMode, AblationSet, Capture, Engine, HeadAblation, Hooks, LoadOptions,
    Positions, Pruning, Start,
};
use headscope::Error;

const TOL: f32 = 1e-5;
const FAMILIES: [&str; 3] = ["llama", "qwen2", "gemma2"];

fn fixture(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(family)
}

fn load(path: &Path, pruning: Option<&Pruning>) -> Engine {
    let mut opts = LoadOptions::new(path.to_string_lossy());
    opts.offline = true;
    opts.pruning = pruning.cloned();
    Engine::load(&opts).unwrap()
}

/// The fixtures have 4 query heads over 2 KV heads. Layer 0 loses KV group 0 whole, layer 1
/// keeps groups of 1 and 2 query heads (uneven), layer 2 loses every head; the MLP of layer 1
/// goes.
fn uneven_pruning() -> Pruning {
    Pruning {
        heads: [(0, 0), (0, 1), (1, 1), (2, 0), (2, 1), (2, 2), (2, 3)]
            .into_iter()
            .collect(),
        mlps: BTreeSet::from([1]),
    }
}

fn prompt_ids(engine: &Engine) -> Vec<u32> {
    let ids = engine
        .tokenizer()
        .encode(
            "The capital of France is Paris, and the capital of Spain is",
            false,
        )
        .unwrap()
        .get_ids()
        .to_vec();
    assert!(ids.len() >= 8, "a prompt of several tokens");
    ids
}

fn logits(engine: &Engine, ids: &[u32]) -> Tensor {
    let hooks = Hooks {
        capture: Capture {
            logits: Some(Positions::All),
            ..Default::default()
        },
        ..Default::default()
    };
    let ids = engine.ids_tensor(ids).unwrap();
    let mut trace = engine.forward(Start::Tokens(&ids), None, &hooks).unwrap();
    trace.take_logits().unwrap()
}

/// The zero-ablated (masked) model's logits of `ids` under `pruning`.
fn masked_logits(path: &Path, pruning: &Pruning, ids: &[u32]) -> Tensor {
    let mut full = load(path, None);
    let masked = full
        .ablate(&pruning.as_ablation(), || unreachable!())
        .unwrap();
    logits(&masked, ids)
}

fn greedy() -> GenerationConfig {
    GenerationConfig {
        max_new_tokens: 12,
        ..Default::default()
    }
}

#[test]
fn sliced_model_equals_the_zero_ablated_model_on_every_family() {
    let pruning = uneven_pruning();
    for family in FAMILIES {
        let path = fixture(family);
        let sliced = load(&path, Some(&pruning));
        let ids = prompt_ids(&sliced);
        let want = masked_logits(&path, &pruning, &ids);
        let got = logits(&sliced, &ids);
        let d = max_abs_diff(&got, &want);
        assert!(
            d <= TOL,
            "{family}: sliced vs masked logits, max |Δ| = {d:e}"
        );
        // The pruning changes the model: the check compares two different things to one another.
        let full = logits(&load(&path, None), &ids);
        assert!(
            max_abs_diff(&full, &want) > 1e-3,
            "{family}: pruning is a no-op"
        );
    }
}

#[test]
fn sliced_model_generates_and_scores_like_the_zero_ablated_model() {
    let pruning = uneven_pruning();
    for family in FAMILIES {
        let path = fixture(family);
        let sliced = load(&path, Some(&pruning));
        let mut full = load(&path, None);
        let ids = prompt_ids(&sliced);
        let masked = full
            .ablate(&pruning.as_ablation(), || unreachable!())
            .unwrap();
        let want = masked.generate(&ids, &greedy(), |_| true).unwrap();
        let got = sliced.generate(&ids, &greedy(), |_| true).unwrap();
        assert_eq!(got.answer_ids, want.answer_ids, "{family}: generation");
        for (a, b) in got.logprobs.iter().zip(&want.logprobs) {
            assert!((a - b).abs() <= TOL, "{family}: step log-prob {a} vs {b}");
        }
        let scored = sliced.score(&ids, &want.answer_ids, 0).unwrap();
        let want_scored = masked.score(&ids, &want.answer_ids, 0).unwrap();
        for (a, b) in scored.logprobs.iter().zip(&want_scored.logprobs) {
            assert!((a - b).abs() <= TOL, "{family}: scored log-prob {a} vs {b}");
        }
    }
}

/// Even groups (every layer keeps one query head per KV group) take the stacked path; whole
/// groups dropped keep it too. Both equal masking.
#[test]
fn sliced_model_with_even_groups_equals_masking() {
    let pruning = Pruning {
        heads: [(0, 1), (0, 3), (1, 0), (1, 1)].into_iter().collect(),
        mlps: BTreeSet::new(),
    };
    for family in FAMILIES {
        let path = fixture(family);
        let sliced = load(&path, Some(&pruning));
        let ids = prompt_ids(&sliced);
        let d = max_abs_diff(
            &logits(&sliced, &ids),
            &masked_logits(&path, &pruning, &ids),
        );
        assert!(d <= TOL, "{family}: max |Δ| = {d:e}");
    }
}

/// A sliced model no longer has the removed heads and numbers the kept ones differently, so
/// every head-indexed intervention or capture is refused with a `Pruning` error instead of
/// mis-indexing.
#[test]
fn sliced_model_refuses_head_indexed_analyses() {
    let path = fixture("qwen2");
    let mut sliced = load(&path, Some(&uneven_pruning()));
    let ids = sliced.ids_tensor(&prompt_ids(&sliced)).unwrap();
    let arch = sliced.arch().clone();
    let mask = Tensor::ones(
        (1, arch.num_layers, arch.num_heads),
        candle_core::DType::F32,
        sliced.device(),
    )
    .unwrap();
    let ablation = Hooks {
        head_ablation: Some(HeadAblation {
            mask,
            kind: AblationKind::Zero,
            layers: None,
        }),
        ..Default::default()
    };
    let capture_z = Hooks {
        capture: Capture {
            z: Some(Positions::All),
            ..Default::default()
        },
        ..Default::default()
    };
    for hooks in [ablation, capture_z] {
        let err = sliced
            .forward(Start::Tokens(&ids), None, &hooks)
            .unwrap_err();
        assert!(matches!(err, Error::Pruning(_)), "{err}");
        assert!(err.to_string().contains("unpruned model"), "{err}");
    }
    let set = AblationSet {
        heads: BTreeSet::from([(0, 2)]),
        mlps: BTreeSet::new(),
        mode: AblationMode::Zero,
    };
    let err = sliced.ablate(&set, || unreachable!()).err().unwrap();
    assert!(matches!(err, Error::Pruning(_)), "{err}");
    // MLP-only ablations index layers, which stay: they work.
    let mlp_only = AblationSet {
        heads: BTreeSet::new(),
        mlps: BTreeSet::from([0]),
        mode: AblationMode::Zero,
    };
    assert!(sliced.ablate(&mlp_only, || unreachable!()).is_ok());
}

fn export_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("export-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn try_export(
    source: &Path,
    pruning: &Pruning,
    physical: bool,
    dir: &Path,
) -> headscope::Result<()> {
    let mut opts = LoadOptions::new(source.to_string_lossy());
    opts.offline = true;
    headscope::engine::export::write_hf_folder(&opts, pruning, physical, dir)
}

fn export(source: &Path, pruning: &Pruning, physical: bool, dir: &Path) {
    try_export(source, pruning, physical, dir).unwrap();
}

/// The fixtures' sources: each safetensors folder and its GGUF, except the llama GGUF, whose
/// baked Llama-3 rope factors (`rope_freqs.weight`) no config.json can state: exporting it is a
/// clear error instead.
fn export_sources(family: &str) -> Vec<PathBuf> {
    let gguf = fixture(family).join(format!("{family}.gguf"));
    if family == "llama" {
        let err =
            try_export(&gguf, &Pruning::default(), false, &export_dir("llama-gguf")).unwrap_err();
        assert!(err.to_string().contains("rope_freqs.weight"), "{err}");
        return vec![fixture(family)];
    }
    vec![fixture(family), gguf]
}

/// A pruning a stock config can express: every layer keeps one whole KV group (1 KV head × 2
/// query heads of the fixtures' 2 × 2), a different group in odd layers; plus a removed MLP.
fn even_pruning(layers: usize) -> Pruning {
    let mut heads = BTreeSet::new();
    for l in 0..layers {
        // Layer l keeps KV group l % 2 whole (both its query heads).
        let gone = if l % 2 == 0 { [0, 1] } else { [2, 3] };
        heads.extend(gone.map(|h| (l, h)));
    }
    Pruning {
        heads,
        mlps: BTreeSet::from([0]),
    }
}

/// The default export (zeroed columns, same shapes) loads back as a folder with the zero-ablated
/// model's logits, from the safetensors fixtures and from their GGUF files (whose llama Q/K rows
/// are permuted back to HF's order on the way out).
#[test]
fn default_export_loads_back_with_the_zero_ablated_logits() {
    let pruning = uneven_pruning();
    for family in FAMILIES {
        for source in export_sources(family) {
            let gguf = source.extension().is_some_and(|e| e == "gguf");
            let dir = export_dir(&format!("{family}-{gguf}-zeroed"));
            export(&source, &pruning, false, &dir);
            let exported = load(&dir, None);
            let ids = prompt_ids(&exported);
            let want = masked_logits(&source, &pruning, &ids);
            let d = max_abs_diff(&logits(&exported, &ids), &want);
            assert!(
                d <= TOL,
                "{family} (gguf: {gguf}): export vs masked, max |Δ| = {d:e}"
            );
            assert_eq!(exported.arch().num_heads, 4, "{family}: same shapes");
        }
    }
}

/// The physical export has fewer heads (config and tensors) and loads back with the masked
/// model's logits.
#[test]
fn physical_export_loads_back_with_the_zero_ablated_logits() {
    for family in FAMILIES {
        for source in export_sources(family) {
            let gguf = source.extension().is_some_and(|e| e == "gguf");
            let layers = load(&source, None).arch().num_layers;
            let pruning = even_pruning(layers);
            let dir = export_dir(&format!("{family}-{gguf}-physical"));
            export(&source, &pruning, true, &dir);
            let exported = load(&dir, None);
            assert_eq!(exported.arch().num_heads, 2, "{family}");
            assert_eq!(exported.arch().num_kv_heads, 1, "{family}");
            let config: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
            assert_eq!(config["head_dim"], 16, "{family}: explicit head_dim");
            let ids = prompt_ids(&exported);
            let want = masked_logits(&source, &pruning, &ids);
            let d = max_abs_diff(&logits(&exported, &ids), &want);
            assert!(
                d <= TOL,
                "{family} (gguf: {gguf}): physical vs masked, max |Δ| = {d:e}"
            );
        }
    }
}

/// The real model: SmolLM2's GGUF exported (zeroed) to a folder equals its masked logits.
#[test]
fn smollm2_default_export_loads_back_with_the_zero_ablated_logits() {
    let Some(path) = common::smollm2_path("the SmolLM2 export round trip") else {
        return;
    };
    let pruning = Pruning {
        heads: [(0, 0), (3, 4), (3, 5), (10, 8), (29, 1)]
            .into_iter()
            .collect(),
        mlps: BTreeSet::from([7]),
    };
    let dir = export_dir("smollm2-zeroed");
    export(&path, &pruning, false, &dir);
    let exported = load(&dir, None);
    let ids = prompt_ids(&exported);
    let want = masked_logits(&path, &pruning, &ids);
    let d = max_abs_diff(&logits(&exported, &ids), &want);
    // Not bit-for-bit like the fixtures (1e-5): the GGUF runs the interleaved rotation on
    // llama.cpp's permuted Q/K rows, the folder HF's rotate-half on the rows permuted back, so the
    // q·k sums run in another order. Measured 8.6e-5 on logits of magnitude ~30.
    assert!(d <= 2e-4, "SmolLM2 export vs masked: max |Δ| = {d:e}");
}

/// scripts/check_export.py's committed output: transformers loads the physical export of every
/// fixture family with the masked model's logits (≤ 1e-4), and the pruning did change them.
#[test]
fn transformers_agrees_with_the_physical_export() {
    let path = fixture("export").join("check.json");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    for family in FAMILIES {
        let r = &report["families"][family];
        let diff = r["max_abs_diff_vs_masked"].as_f64().unwrap();
        assert!(
            diff <= 1e-4,
            "{family}: transformers vs masked, max |Δ| = {diff:e}"
        );
        assert!(
            r["max_abs_diff_masked_vs_unpruned"].as_f64().unwrap() > 1e-3,
            "{family}"
        );
        assert_eq!(r["num_attention_heads"], 2, "{family}");
        assert_eq!(r["num_key_value_heads"], 1, "{family}");
    }
}

// ---------------------------------------------------------------- bad inputs, through the binary

/// Runs `headscope ARGS`, asserts a non-zero exit without a panic, returns stderr.
fn fails(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_headscope"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "panic for {args:?}: {stderr}");
    assert!(
        stderr.contains("error:"),
        "no error line for {args:?}: {stderr}"
    );
    stderr
}

fn sample() -> String {
    fixture("smollm2/sample.json")
        .to_string_lossy()
        .into_owned()
}

fn pruning_file(name: &str, text: &str) -> String {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("pruning-{name}.json"));
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn a_pruning_naming_a_missing_head_is_a_clear_error() {
    let model = fixture("qwen2").to_string_lossy().into_owned();
    let sample = sample();
    let file = pruning_file("missing-head", r#"{"heads": [[0, 1], [1, 4]]}"#);
    let out = export_dir("bad-missing-head")
        .to_string_lossy()
        .into_owned();
    for args in [
        vec!["run", "--offline", "-m", &model, "--prune", &file, &sample],
        vec![
            "export",
            "--offline",
            "-m",
            &model,
            "--prune",
            &file,
            "--out",
            &out,
        ],
    ] {
        let err = fails(&args);
        assert!(err.contains("head L1H4 does not exist"), "{err}");
        assert!(err.contains("3 layers × 4 heads"), "{err}");
    }
    let file = pruning_file("missing-mlp", r#"{"heads": [], "mlps": [3]}"#);
    let err = fails(&["run", "--offline", "-m", &model, "--prune", &file, &sample]);
    assert!(err.contains("MLP L3 does not exist"), "{err}");
}

#[test]
fn malformed_pruning_json_is_a_clear_error() {
    let model = fixture("qwen2").to_string_lossy().into_owned();
    let sample = sample();
    for (name, text) in [
        ("not-json", "heads: 0,1"),
        ("wrong-shape", r#"{"heads": [[0, 1, 2]]}"#),
        ("negative", r#"{"heads": [[0, -1]]}"#),
    ] {
        let file = pruning_file(name, text);
        let err = fails(&["run", "--offline", "-m", &model, "--prune", &file, &sample]);
        assert!(err.contains(&file), "{name}: names the file: {err}");
    }
}

#[test]
fn physical_export_of_an_uneven_pruning_is_a_clear_error() {
    let model = fixture("qwen2").to_string_lossy().into_owned();
    let out = export_dir("bad-uneven").to_string_lossy().into_owned();
    let cases = [
        // Layer 1 keeps 1 and 2 query heads in its two groups.
        (
            "uneven-groups",
            r#"{"heads": [[1, 1]]}"#,
            "layer 1 keeps [1, 2] query heads",
        ),
        // Every group even, but layers differ (2 × 2 vs 1 × 2).
        (
            "uneven-layers",
            r#"{"heads": [[1, 0], [1, 1]]}"#,
            "an earlier layer",
        ),
        (
            "no-heads",
            r#"{"heads": [[2, 0], [2, 1], [2, 2], [2, 3]]}"#,
            "layer 2 keeps no head",
        ),
    ];
    for (name, text, detail) in cases {
        let file = pruning_file(name, text);
        let err = fails(&[
            "export",
            "--offline",
            "-m",
            &model,
            "--prune",
            &file,
            "--out",
            &out,
            "--physical",
        ]);
        assert!(
            err.contains("--physical cannot express this pruning"),
            "{name}: {err}"
        );
        assert!(err.contains(detail), "{name}: {err}");
        assert!(
            err.contains("default (zeroed) export"),
            "{name}: says what works: {err}"
        );
    }
}

/// `speed::measure` times any engine, sliced or not, and reports what it ran.
#[test]
fn throughput_is_measured_on_full_and_sliced_engines() {
    let path = fixture("llama");
    let full = load(&path, None);
    let sliced = load(&path, Some(&uneven_pruning()));
    let ids = prompt_ids(&full);
    let measured =
        headscope::engine::speed::measure_interleaved(&[&full, &sliced], &ids, 4, 2).unwrap();
    for t in &measured {
        assert_eq!((t.prefill_tokens, t.decode_tokens), (ids.len(), 4));
        assert_eq!((t.prefill_s.len(), t.decode_s.len()), (2, 2));
        assert!(
            t.prefill_tokens_per_s > 0.0 && t.decode_tokens_per_s > 0.0,
            "{t:?}"
        );
    }
    let one = headscope::engine::speed::measure(&sliced, &ids, 0, 1).unwrap();
    assert_eq!(one.decode_tokens_per_s, 0.0, "no decode steps, no rate");
    let too_long = vec![1u32; full.info().context_length];
    assert!(matches!(
        headscope::engine::speed::measure(&full, &too_long, 1, 1),
        Err(Error::PromptTooLong { .. })
    ));
}
