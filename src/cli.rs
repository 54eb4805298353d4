//! Command-line definitions (clap). `main.rs` dispatches; the work lives in the library.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use headscope::engine::{parse_dtype, DeviceChoice};
use headscope::prompt::PromptStyle;

#[derive(Parser, Debug)]
#[command(
    name = "headscope",
    version,
    about = "How a language model uses the documents it was given"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate an answer for a sample (or score its `output`) and print per-token probabilities.
    Run(RunArgs),
    /// Measure the engine.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A Hugging Face id (org/name), a model folder, or a .gguf file.
    /// Default: $HEADSCOPE_MODEL, else SmolLM2-135M-Instruct in ~/.cache/headscope (scripts/setup.sh fetches it).
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// Never touch the network (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// cpu, cuda or auto.
    #[arg(long, default_value = "cpu", value_parser = clap::value_parser!(DeviceChoice))]
    pub device: DeviceChoice,
    /// f32, bf16 or f16 (default: f32 on the CPU, bf16 on CUDA).
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: Option<candle_core::DType>,
}

impl ModelArgs {
    pub fn model_name(&self) -> String {
        if let Some(m) = &self.model {
            return m.clone();
        }
        if let Ok(m) = std::env::var("HEADSCOPE_MODEL") {
            if !m.is_empty() {
                return m;
            }
        }
        default_model_path().to_string_lossy().into_owned()
    }
}

/// Where scripts/setup.sh puts the default model.
pub fn default_model_path() -> PathBuf {
    let cache = std::env::var_os("HEADSCOPE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache")
                .join("headscope")
        });
    cache.join("models").join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

#[derive(Args, Debug, Clone)]
pub struct PromptArgs {
    /// A sample file: JSON list, JSON object or JSONL in the MIRAGE format.
    pub sample: PathBuf,
    /// Which sample of the file (0-based).
    #[arg(long, default_value_t = 0)]
    pub index: usize,
    /// mirage (`Document [i](Title: …): …` lines, then the question) or context-query.
    #[arg(long, default_value = "mirage")]
    pub prompt_style: PromptStyle,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// Write the run as JSON to PATH (`-` for stdout). The format is documented in the README.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Sampling temperature (default: greedy).
    #[arg(long)]
    pub temperature: Option<f64>,
    #[arg(long)]
    pub top_p: Option<f64>,
    #[arg(long, default_value_t = 299792458)]
    pub seed: u64,
    /// Generate even when the sample has an `output` to score.
    #[arg(long)]
    pub generate: bool,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Median seconds of one full forward (logits at every position) after a warm-up.
    Forward(BenchForwardArgs),
    /// Zero-ablate every head once; Δ summed answer log-prob per head, batched with prefix reuse.
    Sweep(BenchSweepArgs),
}

#[derive(Args, Debug)]
pub struct BenchForwardArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, default_value_t = 512)]
    pub tokens: usize,
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BenchSweepArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub prompt: PromptArgs,
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Ablated variants per forward.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
}
