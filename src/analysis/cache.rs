//! On-disk cache of the expensive passes (ContextCite's mask log-probs, MIRAGE's per-token CTI/CCI
//! scores, leave-one-out divergences, captured head statistics), keyed by model, sample, prompt
//! style, answer and parameters. Re-thresholding MIRAGE or refitting ContextCite on a sub-span of
//! the answer then needs no model call (MIRAGE's `--only_cite`).
//!
//! A file holds the full key next to the value and is used only when the key matches exactly, so
//! a hash collision can only cost a recomputation.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Subject;
use crate::engine::Engine;
use crate::prompt::PromptFormat;
use crate::{Error, Result};

/// Bump when a cached intermediate changes meaning.
const CACHE_VERSION: u32 = 2;

/// Everything a cached value depends on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheKey {
    pub version: u32,
    /// What is cached (`context-cite.masks`, `mirage.scores`, ...).
    pub what: String,
    /// Model path, file size and modification time, dtype and device.
    pub model: String,
    pub sample: Value,
    pub prompt_style: String,
    /// The prompt's instruction and user template when it has either (leave-out prompts depend
    /// on them); absent otherwise, so that keys of plain prompts are as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_format: Option<Value>,
    pub prompt_ids: Vec<u32>,
    pub answer_ids: Vec<u32>,
    /// The ablation in force on the engine ([`crate::engine::AblationSet::label`]), empty when none.
    pub ablation: String,
    pub params: Value,
}

impl CacheKey {
    pub fn new(
        engine: &Engine,
        subject: &Subject,
        what: &str,
        params: impl Serialize,
    ) -> Result<CacheKey> {
        let info = engine.info();
        let stamp = std::fs::metadata(&info.path)
            .ok()
            .map(|m| {
                let mtime = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                format!("{}:{mtime}", m.len())
            })
            .unwrap_or_default();
        Ok(CacheKey {
            version: CACHE_VERSION,
            what: what.to_string(),
            model: format!(
                "{}|{stamp}|{}|{}",
                info.path.display(),
                info.dtype,
                info.device
            ),
            sample: serde_json::to_value(&subject.sample)
                .map_err(|e| Error::Analysis(format!("cannot key the cache: {e}")))?,
            prompt_style: subject.prompt.format.style.name().to_string(),
            prompt_format: prompt_format(&subject.prompt.format),
            prompt_ids: subject.prompt.ids.clone(),
            answer_ids: subject.answer_ids().to_vec(),
            ablation: engine.ablation().map(|a| a.label()).unwrap_or_default(),
            params: serde_json::to_value(params)
                .map_err(|e| Error::Analysis(format!("cannot key the cache: {e}")))?,
        })
    }

    fn file_name(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        let safe: String = self
            .what
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{safe}-{:016x}.json", super::rng::fnv1a64(text.as_bytes()))
    }
}

/// The cache key's record of a prompt format that is more than a style.
fn prompt_format(format: &PromptFormat) -> Option<Value> {
    (!format.is_plain()).then(|| {
        serde_json::json!({
            "instruction": format.instruction(),
            "template": format.template.as_ref().map(|t| &t.source),
        })
    })
}

#[derive(Serialize, Deserialize)]
struct Entry<T> {
    key: CacheKey,
    value: T,
}

/// Where cached results live; `disabled()` computes everything afresh and stores nothing.
#[derive(Clone, Debug)]
pub struct ResultCache {
    dir: Option<PathBuf>,
}

impl ResultCache {
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        ResultCache {
            dir: Some(dir.into()),
        }
    }

    pub fn disabled() -> Self {
        ResultCache { dir: None }
    }

    /// `$HEADSCOPE_CACHE/analysis`, default `~/.cache/headscope/analysis`.
    pub fn default_dir() -> PathBuf {
        std::env::var_os("HEADSCOPE_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache")
                    .join("headscope")
            })
            .join("analysis")
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The cached value for `key`, if any.
    pub fn get<T: DeserializeOwned>(&self, key: &CacheKey) -> Option<T> {
        let path = self.dir.as_ref()?.join(key.file_name());
        let text = std::fs::read_to_string(path).ok()?;
        let entry: Entry<T> = serde_json::from_str(&text).ok()?;
        (entry.key == *key).then_some(entry.value)
    }

    /// Stores `value` under `key` (write to a temporary file, then rename). A cache that cannot be
    /// written is not an error for the analysis: the failure is returned for the caller to report.
    pub fn put<T: Serialize>(&self, key: &CacheKey, value: &T) -> Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(key.file_name());
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_string(&Entry {
            key: key.clone(),
            value,
        })
        .map_err(|e| Error::Analysis(format!("cannot serialise a cached result: {e}")))?;
        std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        Ok(())
    }

    /// The cached value, or `compute()` stored for next time. Returns whether it was a hit.
    pub fn get_or_compute<T: Serialize + DeserializeOwned>(
        &self,
        key: &CacheKey,
        compute: impl FnOnce() -> Result<T>,
    ) -> Result<(T, bool)> {
        if let Some(v) = self.get(key) {
            return Ok((v, true));
        }
        let v = compute()?;
        // A read-only cache directory must not fail the analysis.
        let _ = self.put(key, &v);
        Ok((v, false))
    }
}
