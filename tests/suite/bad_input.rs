//! Every bad input gets a clear message and a non-zero exit, never a panic. Each case runs the real
//! binary as a user would.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("headscope-bad-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `headscope ARGS`, asserts a non-zero exit without a panic, returns stderr.
fn fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_headscope"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected failure for {args:?}; stderr: {stderr}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit code for {args:?}; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic for {args:?}: {stderr}");
    assert!(
        stderr.contains("error:"),
        "no error line for {args:?}: {stderr}"
    );
    stderr
}

fn tiny_model() -> String {
    fixtures().join("qwen2").to_string_lossy().into_owned()
}

fn good_sample() -> String {
    fixtures()
        .join("smollm2/sample.json")
        .to_string_lossy()
        .into_owned()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().into_owned()
}

fn run_sample(sample: &str) -> String {
    fails(&[
        "run",
        "--model",
        &tiny_model(),
        sample,
        "--max-new-tokens",
        "2",
    ])
}

#[test]
fn bad_prompt_template_files() {
    let d = tmp_dir("prompt-template");
    let broken = write(&d, "broken.jinja", b"{% for d in docs %}{{ d.text }}");
    let no_question = write(
        &d,
        "no-question.jinja",
        b"{% for d in docs %}{{ d.text }}\n{% endfor %}",
    );
    let missing = d.join("missing.jinja").to_string_lossy().into_owned();
    for (path, what) in [
        (&broken, "syntax error"),
        (&no_question, "does not write the question"),
        (&missing, "missing.jinja"),
    ] {
        for command in ["run", "analyze"] {
            let err = fails(&[
                command,
                "--model",
                &tiny_model(),
                &good_sample(),
                "--prompt-template",
                path,
            ]);
            assert!(err.contains(path.as_str()) && err.contains(what), "{err}");
        }
    }
}

#[test]
fn malformed_sample_json_says_where() {
    let d = tmp_dir("malformed");
    let p = write(
        &d,
        "s.json",
        b"{\"question\": \"q\",\n \"docs\": [ {\"title\": \"a\" \"text\": \"b\"} ]}",
    );
    let err = run_sample(&p);
    assert!(err.contains("line 2"), "{err}");
    assert!(err.contains("s.json"), "{err}");
}

#[test]
fn sample_without_question() {
    let d = tmp_dir("noq");
    let p = write(&d, "s.json", br#"{"docs": [{"title": "a", "text": "b"}]}"#);
    let err = run_sample(&p);
    assert!(err.contains("question"), "{err}");
}

#[test]
fn non_utf8_sample() {
    let d = tmp_dir("utf8");
    let p = write(&d, "s.json", b"{\"question\": \"caf\xe9?\", \"docs\": []}");
    let err = run_sample(&p);
    assert!(err.to_lowercase().contains("utf-8"), "{err}");
}

#[test]
fn empty_sample_list() {
    let d = tmp_dir("empty");
    let p = write(&d, "s.json", b"[]");
    let err = run_sample(&p);
    assert!(err.contains("no samples") || err.contains("empty"), "{err}");
}

#[test]
fn missing_and_directory_sample_paths() {
    let err = run_sample("/nonexistent/headscope/sample.json");
    assert!(err.contains("/nonexistent/headscope/sample.json"), "{err}");
    let d = tmp_dir("dir");
    let err = run_sample(d.to_str().unwrap());
    assert!(err.contains("directory"), "{err}");
}

#[test]
fn missing_model_path() {
    let err = fails(&["run", "--model", "/nonexistent/model.gguf", &good_sample()]);
    assert!(err.contains("/nonexistent/model.gguf"), "{err}");
}

#[test]
fn hub_id_offline_names_the_cache() {
    let d = tmp_dir("hubcache");
    let out = Command::new(env!("CARGO_BIN_EXE_headscope"))
        .args([
            "run",
            "--offline",
            "--model",
            "Qwen/Qwen2-1.5B-Instruct",
            &good_sample(),
        ])
        .env("HF_HUB_CACHE", &d)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("models--Qwen--Qwen2-1.5B-Instruct") && err.contains("offline"),
        "{err}"
    );
}

#[test]
fn empty_and_truncated_gguf() {
    let d = tmp_dir("gguf");
    let empty = write(&d, "empty.gguf", b"");
    let err = fails(&["run", "--model", &empty, &good_sample()]);
    assert!(err.contains("empty"), "{err}");

    let full = std::fs::read(fixtures().join("llama/llama.gguf")).unwrap();
    let cut = write(&d, "cut.gguf", &full[..full.len() - 1000]);
    let err = fails(&["run", "--model", &cut, &good_sample()]);
    assert!(err.contains("truncated"), "{err}");
    let header_only = write(&d, "head.gguf", &full[..20]);
    let err = fails(&["run", "--model", &header_only, &good_sample()]);
    assert!(err.contains("GGUF") || err.contains("truncated"), "{err}");
}

/// A copy of the tiny Qwen2 fixture folder in a fresh temporary directory, its config edited by `edit`.
fn tiny_model_copy(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let d = tmp_dir(name);
    let src = fixtures().join("qwen2");
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "model.safetensors",
    ] {
        std::fs::copy(src.join(f), d.join(f)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(d.join("config.json"), config.to_string()).unwrap();
    d
}

#[test]
fn empty_and_truncated_safetensors() {
    for (name, cut) in [("empty", 0usize), ("truncated", 1000)] {
        let d = tiny_model_copy(&format!("st-{name}"), |_| {});
        let weights = std::fs::read(fixtures().join("qwen2/model.safetensors")).unwrap();
        let kept = if cut == 0 { 0 } else { weights.len() - cut };
        std::fs::write(d.join("model.safetensors"), &weights[..kept]).unwrap();
        let err = fails(&["run", "--model", d.to_str().unwrap(), &good_sample()]);
        assert!(
            err.contains("truncated") || err.contains("empty"),
            "{name}: {err}"
        );
    }
}

/// A minimal GGUF v3 writer for crafted bad files.
fn gguf_bytes(arch: &str, tensor_type: u32) -> Vec<u8> {
    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend((v.len() as u64).to_le_bytes());
        out.extend(v.as_bytes());
    }
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(1u64.to_le_bytes()); // tensors
    out.extend(1u64.to_le_bytes()); // metadata entries
    s(&mut out, "general.architecture");
    out.extend(8u32.to_le_bytes()); // string
    s(&mut out, arch);
    s(&mut out, "token_embd.weight");
    out.extend(2u32.to_le_bytes());
    out.extend(256u64.to_le_bytes());
    out.extend(4u64.to_le_bytes());
    out.extend(tensor_type.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    while out.len() % 32 != 0 {
        out.push(0);
    }
    out.extend(vec![0u8; 256 * 4 * 4]);
    out
}

#[test]
fn unsupported_tensor_type() {
    let d = tmp_dir("ttype");
    let p = write(&d, "iq.gguf", &gguf_bytes("llama", 16)); // IQ2_XXS
    let err = fails(&["run", "--model", &p, &good_sample()]);
    assert!(err.contains("unsupported tensor type"), "{err}");
}

#[test]
fn unknown_architecture() {
    let d = tmp_dir("arch");
    let p = write(&d, "falcon.gguf", &gguf_bytes("falcon", 0));
    let err = fails(&["run", "--model", &p, &good_sample()]);
    assert!(
        err.contains("falcon") && err.contains("Qwen2ForCausalLM"),
        "{err}"
    );

    let d = tiny_model_copy("arch-folder", |c| {
        c["architectures"] = serde_json::json!(["MambaForCausalLM"])
    });
    let err = fails(&["run", "--model", d.to_str().unwrap(), &good_sample()]);
    assert!(
        err.contains("MambaForCausalLM") && err.contains("supported"),
        "{err}"
    );
}

#[test]
fn pickle_checkpoint_refused() {
    let d = tmp_dir("pickle");
    let p = write(&d, "pytorch_model.bin", b"\x80\x02}q\x00.");
    let err = fails(&["run", "--model", &p, &good_sample()]);
    assert!(
        err.contains("executes arbitrary code") && err.contains("safetensors"),
        "{err}"
    );
}

#[test]
fn prompt_longer_than_context() {
    let d = tiny_model_copy("ctx", |c| {
        c["max_position_embeddings"] = serde_json::json!(16)
    });
    let err = fails(&["run", "--model", d.to_str().unwrap(), &good_sample()]);
    assert!(
        err.contains("longer than the model's context of 16"),
        "{err}"
    );
}
