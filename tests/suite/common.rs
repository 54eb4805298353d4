//! Helpers shared by the integration tests.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, Output};

/// Arguments of mixed kinds (text, paths) as one list.
#[macro_export]
macro_rules! args {
    ($($a:expr),* $(,)?) => {
        vec![$(std::ffi::OsString::from(AsRef::<std::ffi::OsStr>::as_ref(&$a))),*]
    };
}

/// `headscope ARGS`.
#[allow(dead_code)]
pub fn headscope(args: &[OsString]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_headscope"))
        .args(args)
        .output()
        .unwrap()
}

/// `headscope ARGS`, which must succeed.
#[allow(dead_code)]
pub fn succeeds(args: &[OsString]) -> Output {
    let out = headscope(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[allow(dead_code)]
/// The SmolLM2 GGUF fetched by scripts/fetch-model.sh, if present. Without it the calling test prints a
/// note and skips, unless HEADSCOPE_REQUIRE_MODEL=1 (as in CI), where a missing model fails it.
pub fn smollm2_path(what: &str) -> Option<PathBuf> {
    let cache = std::env::var_os("HEADSCOPE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/headscope")
        });
    let p = cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.is_file() {
        return Some(p);
    }
    if std::env::var("HEADSCOPE_REQUIRE_MODEL").as_deref() == Ok("1") {
        panic!("{} is missing; run scripts/fetch-model.sh", p.display());
    }
    eprintln!(
        "note: {} is missing; {what} skipped (run scripts/fetch-model.sh)",
        p.display()
    );
    None
}

/// A copy of the tiny fixture model `family` (`tests/fixtures/<family>`) with its context raised to
/// `context` positions (the fixtures' configs say 128; a three-document prompt needs more). Same
/// weights; RoPE is defined at every position. Files are rewritten only when different, through a
/// rename, so concurrent test binaries and threads never see a half-written file.
#[allow(dead_code)]
pub fn fixture_with_context(family: &str, context: usize) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(family);
    let dst = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{family}-ctx{context}"));
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !(name.ends_with(".json") || name == "model.safetensors") || name.starts_with("expected")
        {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        if name == "config.json" {
            let mut config: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let current = config["max_position_embeddings"].as_u64().unwrap_or(0) as usize;
            config["max_position_embeddings"] = current.max(context).into();
            bytes = serde_json::to_vec_pretty(&config).unwrap();
        }
        if std::fs::read(dst.join(&name)).ok().as_deref() != Some(&bytes[..]) {
            // Unique per process and per call: tests run as threads of one process, and two
            // threads copying the same family must not rename each other's file away.
            static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tmp = dst.join(format!("{name}.{}.{call}.tmp", std::process::id()));
            std::fs::write(&tmp, &bytes).unwrap();
            std::fs::rename(&tmp, dst.join(&name)).unwrap();
        }
    }
    dst
}

/// A tiny fixture family (context raised to 512) and the analysis reference sample
/// (`tests/fixtures/analysis/sample.json`) prepared with its fixed `output`.
#[allow(dead_code)]
pub fn fixture_subject(family: &str) -> (headscope::engine::Engine, headscope::analysis::Subject) {
    use headscope::engine::{Engine, GenerationConfig, LoadOptions};
    let engine = Engine::load(&LoadOptions::new(
        fixture_with_context(family, 512).to_string_lossy(),
    ))
    .unwrap();
    let sample_path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/analysis/sample.json");
    let sample = headscope::prompt::load_samples(&sample_path)
        .unwrap()
        .remove(0);
    let subject = headscope::analysis::Subject::prepare(
        &engine,
        sample,
        &headscope::prompt::PromptStyle::Mirage.into(),
        &GenerationConfig::default(),
        false,
        |_| true,
    )
    .unwrap();
    (engine, subject)
}

/// The tiny fixture `tests/fixtures/<family>`: the safetensors folder, or with `gguf` its GGUF.
#[allow(dead_code)]
pub fn load_fixture(family: &str, gguf: bool) -> headscope::engine::Engine {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(family);
    let path = if gguf {
        dir.join(format!("{family}.gguf"))
    } else {
        dir
    };
    load_offline(&path)
}

/// A model from a local path, never touching the network.
#[allow(dead_code)]
pub fn load_offline(path: &std::path::Path) -> headscope::engine::Engine {
    let mut opts = headscope::engine::LoadOptions::new(path.to_string_lossy());
    opts.offline = true;
    headscope::engine::Engine::load(&opts)
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// The largest |x| of a tensor of any dtype and shape.
#[allow(dead_code)]
pub fn max_abs(t: &candle_core::Tensor) -> f32 {
    t.to_dtype(candle_core::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The largest |a − b| of two tensors of the same shape.
#[allow(dead_code)]
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let f32 = |t: &candle_core::Tensor| t.to_dtype(candle_core::DType::F32).unwrap();
    max_abs(&(f32(a) - f32(b)).unwrap())
}
