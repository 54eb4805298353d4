//! `--model`: a Hugging Face hub id (local cache first, then download), a local folder, or a `.gguf` file.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A model's files, resolved on disk.
#[derive(Clone, Debug)]
pub enum ModelSource {
    Gguf(PathBuf),
    /// A Hugging Face folder: `config.json`, tokenizer files, safetensors weights.
    Folder {
        dir: PathBuf,
        weights: Vec<PathBuf>,
    },
}

impl ModelSource {
    pub fn path(&self) -> &Path {
        match self {
            ModelSource::Gguf(p) => p,
            ModelSource::Folder { dir, .. } => dir,
        }
    }
}

const PICKLE_EXTENSIONS: [&str; 5] = ["bin", "pt", "pth", "ckpt", "pkl"];

/// Resolves `--model`. `offline` (or `HF_HUB_OFFLINE=1`) never touches the network.
pub fn resolve(model: &str, offline: bool) -> Result<ModelSource> {
    let path = expand_home(model);
    if path.exists() {
        return resolve_path(&path);
    }
    if looks_like_path(model) {
        return Err(Error::io(&path, "no such file or directory"));
    }
    if !is_hub_id(model) {
        return Err(Error::ModelNotFound(format!(
            "`{model}` is neither an existing file or folder nor a Hugging Face id of the form org/name"
        )));
    }
    let cache = hub_cache_dir();
    if let Some(dir) = cached_snapshot(&cache, model) {
        return resolve_path(&dir);
    }
    let offline = offline || env_flag("HF_HUB_OFFLINE");
    if offline {
        return Err(Error::ModelNotFound(format!(
            "{model} is not in the local Hugging Face cache (looked in {}) and offline mode is on",
            cache.join(repo_folder(model)).display()
        )));
    }
    download(model, &cache)
}

fn env_flag(name: &str) -> bool {
    std::env::var(name)
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

fn expand_home(s: &str) -> PathBuf {
    match (s.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(s),
    }
}

fn looks_like_path(s: &str) -> bool {
    s.starts_with('.')
        || s.starts_with('/')
        || s.starts_with('~')
        || s.ends_with(".gguf")
        || s.ends_with(".safetensors")
        || s.matches('/').count() > 1
}

fn is_hub_id(s: &str) -> bool {
    let mut parts = s.split('/');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

fn repo_folder(id: &str) -> String {
    format!("models--{}", id.replace('/', "--"))
}

/// The hub cache, as huggingface_hub resolves it.
pub fn hub_cache_dir() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
        return p;
    }
    if let Some(home) = var("HF_HOME") {
        return home.join("hub");
    }
    let base = var("XDG_CACHE_HOME").unwrap_or_else(|| {
        var("HOME")
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".cache")
    });
    base.join("huggingface").join("hub")
}

/// `models--org--name/refs/main` → `snapshots/<sha>/`, if it holds a config.
fn cached_snapshot(cache: &Path, id: &str) -> Option<PathBuf> {
    let repo = cache.join(repo_folder(id));
    let sha = std::fs::read_to_string(repo.join("refs").join("main")).ok()?;
    let dir = repo.join("snapshots").join(sha.trim());
    dir.join("config.json").is_file().then_some(dir)
}

fn resolve_path(path: &Path) -> Result<ModelSource> {
    if path.is_file() {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        if ext == "gguf" {
            return Ok(ModelSource::Gguf(path.to_path_buf()));
        }
        if PICKLE_EXTENSIONS.contains(&ext.as_str()) {
            return Err(Error::PickleRefused {
                path: path.to_path_buf(),
            });
        }
        if ext == "safetensors" || path.file_name().is_some_and(|n| n == "config.json") {
            let dir = path.parent().unwrap_or(Path::new("."));
            return resolve_folder(dir);
        }
        return Err(Error::invalid_model(
            path,
            "expected a .gguf file, a .safetensors file or a model folder",
        ));
    }
    resolve_folder(path)
}

fn resolve_folder(dir: &Path) -> Result<ModelSource> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let weights = safetensors_files(dir, &names)?;
    if weights.is_empty() {
        let ggufs: Vec<&String> = names.iter().filter(|n| n.ends_with(".gguf")).collect();
        if ggufs.len() == 1 {
            return Ok(ModelSource::Gguf(dir.join(ggufs[0])));
        }
        if let Some(pickle) = names.iter().find(|n| {
            Path::new(n)
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| PICKLE_EXTENSIONS.contains(&e))
        }) {
            return Err(Error::PickleRefused {
                path: dir.join(pickle),
            });
        }
        return Err(Error::invalid_model(
            dir,
            "no model.safetensors, model-*.safetensors shards or single .gguf file in this folder",
        ));
    }
    if !dir.join("config.json").is_file() {
        return Err(Error::invalid_model(
            dir,
            "folder has safetensors weights but no config.json",
        ));
    }
    Ok(ModelSource::Folder {
        dir: dir.to_path_buf(),
        weights,
    })
}

fn safetensors_files(dir: &Path, names: &[String]) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::invalid_model(&index, format!("invalid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::invalid_model(&index, "no `weight_map` object"))?;
        let mut files: Vec<String> = map
            .values()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        files.sort();
        files.dedup();
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        if let Some(missing) = paths.iter().find(|p| !p.is_file()) {
            return Err(Error::invalid_model(
                &index,
                format!("shard {} is missing", missing.display()),
            ));
        }
        return Ok(paths);
    }
    if names.iter().any(|n| n == "model.safetensors") {
        return Ok(vec![dir.join("model.safetensors")]);
    }
    Ok(names
        .iter()
        .filter(|n| n.starts_with("model-") && n.ends_with(".safetensors"))
        .map(|n| dir.join(n))
        .collect())
}

#[cfg(feature = "hub")]
fn download(id: &str, cache: &Path) -> Result<ModelSource> {
    use hf_hub::api::sync::ApiBuilder;
    let api = ApiBuilder::new()
        .with_cache_dir(cache.to_path_buf())
        .with_progress(true)
        .build()
        .map_err(|e| Error::ModelNotFound(format!("{id}: cannot start the hub client: {e}")))?;
    let repo = api.model(id.to_string());
    let fetch = |name: &str| {
        repo.get(name)
            .map_err(|e| Error::ModelNotFound(format!("{id}: downloading {name}: {e}")))
    };
    let config = fetch("config.json")?;
    let dir = config.parent().map(Path::to_path_buf).unwrap_or_default();
    fetch("tokenizer.json")?;
    for optional in ["tokenizer_config.json", "generation_config.json"] {
        let _ = repo.get(optional);
    }
    match repo.get("model.safetensors.index.json") {
        Ok(index) => {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::invalid_model(&index, e.to_string()))?;
            let mut shards: Vec<String> = json["weight_map"]
                .as_object()
                .map(|m| {
                    m.values()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            shards.sort();
            shards.dedup();
            for s in shards {
                fetch(&s)?;
            }
        }
        Err(_) => {
            fetch("model.safetensors")?;
        }
    }
    resolve_folder(&dir)
}

#[cfg(not(feature = "hub"))]
fn download(id: &str, cache: &Path) -> Result<ModelSource> {
    Err(Error::ModelNotFound(format!(
        "{id} is not in the local Hugging Face cache (looked in {}) and this build has no `hub` feature to download it",
        cache.join(repo_folder(id)).display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_and_paths_are_told_apart() {
        assert!(is_hub_id("Qwen/Qwen2-1.5B-Instruct"));
        assert!(!is_hub_id("models/x/y"));
        assert!(looks_like_path("./model.gguf"));
        assert!(!looks_like_path("Qwen/Qwen2-1.5B-Instruct"));
    }

    #[test]
    fn cached_snapshot_follows_refs_main() {
        let tmp = std::env::temp_dir().join(format!("headscope-cache-{}", std::process::id()));
        let snap = tmp
            .join("models--org--tiny")
            .join("snapshots")
            .join("abc123");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(tmp.join("models--org--tiny/refs")).unwrap();
        std::fs::write(tmp.join("models--org--tiny/refs/main"), "abc123\n").unwrap();
        assert!(cached_snapshot(&tmp, "org/tiny").is_none(), "no config yet");
        std::fs::write(snap.join("config.json"), "{}").unwrap();
        assert_eq!(cached_snapshot(&tmp, "org/tiny").unwrap(), snap);
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn pickle_checkpoints_are_refused() {
        let tmp = std::env::temp_dir().join(format!("headscope-pickle-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let p = tmp.join("pytorch_model.bin");
        std::fs::write(&p, b"not really").unwrap();
        let err = resolve(p.to_str().unwrap(), true).unwrap_err().to_string();
        assert!(
            err.contains("executes arbitrary code") && err.contains("safetensors"),
            "{err}"
        );
        let err = resolve(tmp.to_str().unwrap(), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("pickle"), "{err}");
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
