//! Tokenizers built from GGUF metadata (and loaded from tokenizer.json) against ids from the Python
//! `tokenizers` reference (tests/fixtures/*/tokenizer_cases.json: a list of {"text", "ids", ...},
//! made by scripts/make_fixtures.py).
//!
//! The SmolLM2 model is fetched by scripts/fetch-model.sh (CI does it). Without it that test prints
//! a note and passes, unless HEADSCOPE_REQUIRE_MODEL=1 (as in CI), where a missing model fails it.
//! The tiny qwen2/llama/gemma2 fixtures are in the repository and always tested.

use crate::common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};

use headscope::engine::tokenizer::{
    encode_with_offsets, load_tokenizer_json, special_tokens_from_gguf, tokenizer_from_gguf,
};
use tokenizers::Tokenizer;

fn model_path() -> Option<PathBuf> {
    common::smollm2_path("tokenizer parity test")
}

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn gguf_metadata(path: &Path) -> HashMap<String, Value> {
    let mut file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    gguf_file::Content::read(&mut file)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .metadata
}

/// Every case must encode to exactly the reference ids, with sane offsets, and decode back.
fn check_cases(what: &str, tok: &Tokenizer, cases_path: &Path) {
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(cases_path).unwrap()).unwrap();
    assert!(!cases.is_empty(), "{} has no cases", cases_path.display());
    let mut failures = Vec::new();
    for case in &cases {
        let (ids, offsets) = encode_with_offsets(tok, &case.text).unwrap();
        if ids != case.ids {
            failures.push(format!(
                "{:?}\n  expected {:?}\n  got      {:?}",
                case.text, case.ids, ids
            ));
            continue;
        }
        assert_eq!(offsets.len(), ids.len());
        let text = &case.text;
        for &(s, e) in &offsets {
            assert!(
                s <= e && e <= text.len() && text.is_char_boundary(s) && text.is_char_boundary(e),
                "{what}: bad offsets {:?} for {text:?}",
                (s, e)
            );
        }
        if !ids.is_empty() {
            assert_eq!(
                (offsets[0].0, offsets[ids.len() - 1].1),
                (0, text.len()),
                "{what}: {text:?}"
            );
        }
        assert_eq!(
            tok.decode(&ids, false).unwrap(),
            *text,
            "{what}: decode round trip"
        );
    }
    assert!(
        failures.is_empty(),
        "{what}: {} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_gguf_tokenizer_matches_reference_ids() {
    let Some(path) = model_path() else { return };
    let metadata = gguf_metadata(&path);
    let tok = tokenizer_from_gguf(&metadata).expect("SmolLM2 GGUF tokenizer builds");

    let special = special_tokens_from_gguf(&metadata, &tok).unwrap();
    assert_eq!(special.bos, Some((1, "<|im_start|>".to_string())));
    assert_eq!(special.eos, Some((2, "<|im_end|>".to_string())));
    assert_eq!(special.stop_ids(&tok), vec![0, 2]);

    check_cases(
        "SmolLM2 GGUF",
        &tok,
        &fixtures().join("smollm2/tokenizer_cases.json"),
    );
}

#[test]
fn tiny_fixture_tokenizers_match_reference_ids() {
    for family in ["qwen2", "llama", "gemma2"] {
        let dir = fixtures().join(family);
        let cases = dir.join("tokenizer_cases.json");
        let from_json = load_tokenizer_json(&dir.join("tokenizer.json")).unwrap();
        check_cases(&format!("{family} tokenizer.json"), &from_json, &cases);
        let from_gguf =
            tokenizer_from_gguf(&gguf_metadata(&dir.join(format!("{family}.gguf")))).unwrap();
        check_cases(&format!("{family} GGUF"), &from_gguf, &cases);
    }
}
