//! Helpers shared by the integration tests.

use std::path::PathBuf;

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
