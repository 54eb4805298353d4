//! The library's error type. Every bad input becomes one of these, with a message that says what
//! was wrong and where; the binary prints it and exits non-zero.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },

    #[error("model not found: {0}")]
    ModelNotFound(String),

    #[error("refusing to load pickle checkpoint {path}: loading a pickle executes arbitrary code. Convert it to safetensors first (e.g. in Python: `from safetensors.torch import save_file; save_file(torch.load(p), \"model.safetensors\")`, or `transformers`' `save_pretrained(..., safe_serialization=True)`)")]
    PickleRefused { path: PathBuf },

    #[error("unsupported architecture {found:?}; supported: {supported}")]
    UnsupportedArchitecture { found: String, supported: String },

    #[error("invalid model file {path}: {message}")]
    InvalidModel { path: PathBuf, message: String },

    #[error("invalid model config: {0}")]
    Config(String),

    /// A study's configuration, data or folder is not usable.
    #[error("study: {0}")]
    Study(String),

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("chat template: {0}")]
    Template(String),

    /// A user-message template (`--prompt-template`) that cannot be parsed or rendered, or whose
    /// output cannot be mapped back to the question and documents.
    #[error("prompt template {name}: {message}")]
    PromptTemplate { name: String, message: String },

    #[error("sample {path}: {message}")]
    Sample { path: PathBuf, message: String },

    #[error("prompt is {tokens} tokens long, longer than the model's context of {context} tokens")]
    PromptTooLong { tokens: usize, context: usize },

    /// A pruning (`--prune FILE`, `headscope prune`) that names heads or MLPs the model lacks, or
    /// cannot be carried out as asked.
    #[error("pruning: {0}")]
    Pruning(String),

    #[error("invalid hook or intervention: {0}")]
    Hook(String),

    /// An analysis cannot run on this input (no sources, an empty answer, misaligned prompts, ...).
    #[error("analysis: {0}")]
    Analysis(String),

    /// A screenshot could not be encoded (writing one is `Io`).
    #[error("screenshot: {0}")]
    Export(String),

    /// A study figure could not be drawn or encoded (writing one is `Io`).
    #[error("figure {path}: {message}")]
    Figure { path: PathBuf, message: String },

    #[error("cancelled")]
    Cancelled,

    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, err: impl std::fmt::Display) -> Self {
        Error::Io {
            path: path.into(),
            message: err.to_string(),
        }
    }
    pub fn invalid_model(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::InvalidModel {
            path: path.into(),
            message: message.into(),
        }
    }
    pub fn sample(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Sample {
            path: path.into(),
            message: message.into(),
        }
    }
}
