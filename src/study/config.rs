//! The study's configuration (`study.toml`, every field also a flag), checked against the data
//! before any model runs, and the record of it written as `DIR/config.toml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::detect::DetectMethod;
use crate::engine::AblationMode;
use crate::prompt::{PromptFormat, PromptStyle, Sample, UserTemplate, SHORT_ANSWER_INSTRUCTION};
use crate::{Error, Result};

use crate::analysis::ablated_decoding::AblatedDecoding;
pub use crate::analysis::ablated_decoding::AblatedPositions;

/// Everything a study run depends on. Serialised as `DIR/config.toml` (with [`Provenance`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StudyConfig {
    /// The dataset: samples with a `category` field (JSON list or JSONL).
    pub data: PathBuf,
    /// Model files or folders, in report order.
    pub models: Vec<String>,
    /// Head-finding methods to detect and ablate.
    pub methods: Vec<DetectMethod>,
    /// Ablation sizes; 0 (the clean model) is always included.
    pub ks: Vec<usize>,
    /// Random k-sets per k.
    pub draws: usize,
    /// Size of each method's top list; random heads are drawn outside it.
    pub top_n: usize,
    pub ablation: AblationMode,
    pub positions: AblatedPositions,
    pub seed: u64,
    pub test_fraction: f64,
    /// Use at most this many training samples per category (0: all), the first ones of the split.
    pub train_per_category: usize,
    /// Use at most this many test samples per category (0: all).
    pub test_per_category: usize,
    pub max_new_tokens: usize,
    /// Ablation conditions per batched forward.
    pub batch: usize,
    /// Bootstrap resamples behind every interval.
    pub bootstrap: usize,
    pub prompt_style: PromptStyle,
    /// Written before the question; the default asks for a short answer.
    pub instruction: Option<String>,
    /// A minijinja template of the user message (see `--prompt-template`); its source is kept
    /// in `config.toml`.
    pub prompt_template: Option<PathBuf>,
    /// Categories whose answers are numbers (default: those of the shipped filings dataset).
    pub numerical_categories: Vec<String>,
}

impl Default for StudyConfig {
    fn default() -> Self {
        StudyConfig {
            data: PathBuf::from("samples/filings.jsonl"),
            models: Vec::new(),
            methods: DetectMethod::DEFAULT.to_vec(),
            ks: vec![0, 10, 20, 30, 40, 50],
            draws: 5,
            top_n: 50,
            ablation: AblationMode::Zero,
            positions: AblatedPositions::All,
            seed: 0,
            test_fraction: 0.2,
            train_per_category: 0,
            test_per_category: 0,
            max_new_tokens: 24,
            batch: 8,
            bootstrap: 2000,
            prompt_style: PromptStyle::Mirage,
            instruction: Some(SHORT_ANSWER_INSTRUCTION.to_string()),
            prompt_template: None,
            numerical_categories: vec!["employee_count".into(), "incorporation_year".into()],
        }
    }
}

impl StudyConfig {
    /// How the ablation phase decodes its rows.
    pub fn decoding(&self) -> AblatedDecoding {
        AblatedDecoding {
            positions: self.positions,
            max_new_tokens: self.max_new_tokens,
        }
    }

    /// Reads a `study.toml`; unknown keys are errors (a typo must not silently fall back).
    pub fn from_toml_file(path: &Path) -> Result<StudyConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text)
            .map_err(|e| Error::Study(format!("{}: {}", path.display(), e.message())))
    }

    /// The k grid with 0, sorted and without repeats.
    pub fn k_grid(&self) -> Vec<usize> {
        let mut ks = self.ks.clone();
        ks.push(0);
        ks.sort_unstable();
        ks.dedup();
        ks
    }

    /// The prompt format, the template file read and checked (before any model runs).
    pub fn format(&self) -> Result<PromptFormat> {
        Ok(PromptFormat {
            style: self.prompt_style,
            instruction: self.instruction.clone().filter(|i| !i.trim().is_empty()),
            template: match &self.prompt_template {
                Some(path) => Some(UserTemplate::load(path)?),
                None => None,
            },
        })
    }

    /// Checks what can be checked without a model.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Study(m));
        if self.models.is_empty() {
            return bad("no model: give --model (or `models = [...]` in the config)".into());
        }
        if self.methods.is_empty() {
            return bad("no method: give --methods".into());
        }
        if self.draws == 0 {
            return bad("draws must be at least 1".into());
        }
        if self.top_n == 0 {
            return bad("top_n must be at least 1".into());
        }
        if self.batch == 0 || self.max_new_tokens == 0 || self.bootstrap == 0 {
            return bad("batch, max_new_tokens and bootstrap must be at least 1".into());
        }
        if !(self.test_fraction > 0.0 && self.test_fraction < 1.0) {
            return bad(format!(
                "test_fraction must lie strictly between 0 and 1, not {}",
                self.test_fraction
            ));
        }
        if self.ablation == AblationMode::Mean && self.positions == AblatedPositions::DecodeOnly {
            return bad("mean ablation with decode-only positions is not supported \
                 (the means come from a run over the whole prompt)"
                .into());
        }
        Ok(())
    }

    /// Checks the grid against a model's head count: a k above the heads outside nothing, or a
    /// top list leaving too few heads to draw random sets from, is an error before any run.
    pub fn validate_for_heads(&self, model: &str, heads: usize) -> Result<()> {
        let kmax = self.k_grid().last().copied().unwrap_or(0);
        if self.top_n > heads {
            return Err(Error::Study(format!(
                "top_n {} is above {model}'s {heads} heads",
                self.top_n
            )));
        }
        if kmax > self.top_n {
            return Err(Error::Study(format!(
                "k = {kmax} is above top_n = {} (the top-k heads come from the top list)",
                self.top_n
            )));
        }
        if kmax > heads - self.top_n {
            return Err(Error::Study(format!(
                "k = {kmax} is above the {} heads of {model} outside the top {} \
                 (random sets are drawn there); lower the k grid or top_n",
                heads - self.top_n,
                self.top_n
            )));
        }
        Ok(())
    }
}

/// Checks the samples a study needs: a category on each, a unique id, a gold document in range,
/// accepted answers, and at least [`super::split::MIN_PER_CATEGORY`] samples per category.
pub fn validate_samples(samples: &[Sample]) -> Result<()> {
    let mut ids = BTreeMap::new();
    for (i, s) in samples.iter().enumerate() {
        let at = |what: &str| Error::Study(format!("sample {i}: {what}"));
        if s.category().is_none_or(|c| c.trim().is_empty()) {
            return Err(at("no `category` (the study compares categories)"));
        }
        match s.gold() {
            None => return Err(at("no `gold` document index")),
            Some(g) if g >= s.docs.len() => {
                return Err(at(&format!(
                    "`gold` is {g} but the sample has {} documents (0-based)",
                    s.docs.len()
                )))
            }
            _ => {}
        }
        if s.answers().is_empty() {
            return Err(at("no `answers` (correctness needs them)"));
        }
        let id = sample_key(s, i);
        if let Some(j) = ids.insert(id.clone(), i) {
            return Err(Error::Study(format!(
                "samples {j} and {i} have the same id `{id}`"
            )));
        }
    }
    super::split::by_category(samples)?;
    Ok(())
}

/// A sample's file-name key: its `id` made file-safe, else its index.
pub fn sample_key(sample: &Sample, index: usize) -> String {
    match sample.id() {
        Some(id) if !id.trim().is_empty() => slug(&id),
        _ => format!("sample-{index:05}"),
    }
}

/// Letters, digits, `.`, `_` and `-` kept; anything else becomes `-`.
pub fn slug(s: &str) -> String {
    let out: String = s
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    out.trim_matches('.').to_string()
}

/// A model's label in paths and tables: its file name without `.gguf`, or its last path part.
pub fn model_label(model: &str) -> String {
    let name = model.trim_end_matches('/');
    let last = name.rsplit('/').next().unwrap_or(name);
    slug(last.strip_suffix(".gguf").unwrap_or(last))
}

/// What the resolved configuration ran with, beside the configuration in `DIR/config.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub headscope_version: String,
    /// The user-message template's source, when the study has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_template: Option<String>,
    pub models: Vec<ModelRecord>,
}

/// One model as the study saw it: the file's digest, the tokenizer's and the rendered prompt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    pub label: String,
    pub path: String,
    /// sha256 of the weights file (of each file for a folder, in name order, hashed together).
    pub sha256: String,
    /// sha256 of the tokenizer's JSON serialisation.
    pub tokenizer_sha256: String,
    pub vocab_size: usize,
    pub arch: String,
    pub layers: usize,
    pub heads: usize,
    /// The chat template's source.
    pub chat_template: String,
    /// The prompt of a placeholder sample (`{question}`, two `{document i}`), rendered exactly as
    /// the study renders its samples.
    pub rendered_prompt: String,
}

/// `DIR/config.toml`: the resolved configuration and its provenance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigRecord {
    pub study: StudyConfig,
    pub provenance: Provenance,
}
