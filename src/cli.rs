//! Command-line definitions (clap). `main.rs` dispatches; the work lives in the library.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use headscope::analysis::divergence::Divergence;
use headscope::analysis::report::HeadScore;
use headscope::analysis::report::Method;
use headscope::engine::AblationMode;
use headscope::engine::{parse_dtype, DeviceChoice};
use headscope::prompt::{Granularity, PromptFormat, PromptStyle, UserTemplate};
use headscope::ui::export::ExportFormat;

/// Without a subcommand, `headscope [--model M] [SAMPLE]` opens the explorer (the TUI).
#[derive(Parser, Debug)]
#[command(
    name = "headscope",
    version,
    about = "How a language model uses the documents it was given",
    long_about = "How a language model uses the documents it was given.\n\n\
        Without a subcommand, `headscope [--model M] [SAMPLE]` opens the explorer, a keyboard-driven \
        terminal UI (press ? in it for the keys).",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub explore: ExploreArgs,
}

/// The explorer's arguments (also `screenshot`'s).
#[derive(Args, Debug, Clone)]
pub struct ExploreArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A sample file (JSON list, JSON object or JSONL in the MIRAGE format). Default: the built-in
    /// samples/question.json.
    pub sample: Option<PathBuf>,
    /// Which sample of the file (0-based).
    #[arg(long, default_value_t = 0)]
    pub index: usize,
    #[command(flatten)]
    pub format: FormatArgs,
    #[command(flatten)]
    pub tui: TuiArgs,
}

#[derive(Args, Debug, Clone)]
pub struct TuiArgs {
    /// Colour theme: default, light, high-contrast, colorblind, a name in
    /// $XDG_CONFIG_HOME/headscope/themes/, or a path to a theme .toml.
    #[arg(long, default_value = "default")]
    pub theme: String,
    /// Where `e` writes screenshots (default: the current directory).
    #[arg(long)]
    pub export_dir: Option<PathBuf>,
    /// Screenshot formats for `e`, comma-separated: svg, png, html, txt.
    #[arg(long, default_value = "svg")]
    pub export_format: ExportFormats,
    /// Longest answer generated (and regenerated under a live ablation).
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Generate even when the sample has an `output` to score.
    #[arg(long)]
    pub generate: bool,
    /// Key bindings file (default: $XDG_CONFIG_HOME/headscope/keys.toml, else
    /// ~/.config/headscope/keys.toml, when it exists).
    #[arg(long)]
    pub keys_config: Option<PathBuf>,
    /// Recompute every analysis and store nothing.
    #[arg(long)]
    pub no_cache: bool,
    /// Where cached results live (default: $HEADSCOPE_CACHE/analysis or ~/.cache/headscope/analysis).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

/// `--export-format svg,png`.
#[derive(Clone, Debug)]
pub struct ExportFormats(pub Vec<ExportFormat>);

impl std::str::FromStr for ExportFormats {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let f: ExportFormat = part.parse()?;
            if !out.contains(&f) {
                out.push(f);
            }
        }
        if out.is_empty() {
            return Err("no format given (use svg, png, html or txt)".into());
        }
        Ok(ExportFormats(out))
    }
}

/// `headscope screenshot`.
#[derive(Args, Debug)]
pub struct ScreenshotArgs {
    #[command(flatten)]
    pub explore: ExploreArgs,
    /// Keys to play, separated by spaces, named as in keys.toml: "l l space enter M e".
    /// Each key is pressed after the worker has finished what the previous one started.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub keys: String,
    /// Screen size, COLUMNSxROWS.
    #[arg(long, default_value = "160x48", value_parser = headscope::ui::screenshot::parse_size)]
    pub size: (u16, u16),
    /// The file to write; .svg, .png, .html or .txt.
    #[arg(long)]
    pub out: PathBuf,
    /// Seconds to wait for the worker at each step.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate an answer for a sample (or score its `output`) and print per-token probabilities.
    Run(RunArgs),
    /// Run analysis methods (logit lens, head scores, source attributions, ablation curves) on a
    /// sample and print a summary or write JSON.
    Analyze(Box<AnalyzeArgs>),
    /// Measure the engine (and the explorer's rendering).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Render the explorer off-screen, play a key script, wait for the analyses, and export the
    /// screen (SVG, PNG, HTML or text).
    Screenshot(Box<ScreenshotArgs>),
    /// Make and check datasets for population studies.
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// The population study: split, detect, ablate, report; resumable, and shardable over a
    /// cluster (`study prepare --shard-count N`, then `--shard-index I` per shard).
    #[command(subcommand)]
    Study(StudyCommand),
    /// Write the model as a Hugging Face folder (safetensors, config, tokenizer, template), with
    /// a pruning (`--prune FILE`) applied: pruned heads' o_proj columns zeroed (default, same
    /// shapes) or their weights sliced out (`--physical`).
    Export(ExportArgs),
    /// Prune attention heads by interpretability scores against magnitude and random pruning, on
    /// a study's split: retention curves with intervals and the measured speed of the pruned
    /// model (resumable).
    Prune(Box<PruneArgs>),
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The folder to write (created; existing files in it are overwritten).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Slice the pruned heads out of q/k/v/o (and Qwen2's biases) with updated head counts; needs
    /// the same number of kept query heads per KV group in every layer.
    #[arg(long)]
    pub physical: bool,
}

#[derive(Args, Debug, Clone)]
pub struct PruneArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The study folder (its config.toml and split/; the study scores read its detect/).
    #[arg(long, default_value = "studies/filings")]
    pub study: PathBuf,
    /// The output folder (units, prunings, retention table and figure).
    #[arg(long)]
    pub out: PathBuf,
    /// Head rankings, comma-separated: atp, ablation, arc-jsd, retrieval, summed-attention,
    /// qrhead, magnitude, random.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "atp,ablation,qrhead,magnitude,random"
    )]
    pub methods: Vec<headscope::prune::PruneMethod>,
    /// Fractions of the heads to prune, comma-separated, each in (0, 1).
    #[arg(long, value_delimiter = ',', default_value = "0.3,0.5,0.68")]
    pub sparsity: Vec<f64>,
    /// Also prune the same fraction of whole MLP blocks.
    #[arg(long)]
    pub mlp: bool,
    /// Random-pruning draws.
    #[arg(long, default_value_t = 5)]
    pub draws: usize,
    /// Never prune the heads activation patching marks as carrying the answer (the top
    /// --protect-top by mean patching effect on the exact calibration samples).
    #[arg(long)]
    pub protect_circuit: bool,
    #[arg(long, default_value_t = 10)]
    pub protect_top: usize,
    /// Prune the same share of heads in every layer instead of one global ranking.
    #[arg(long)]
    pub layer_adaptive: bool,
    /// Calibration (training) samples per category for AtP and the MLP scores.
    #[arg(long, default_value_t = 8)]
    pub calibration: usize,
    /// Calibration samples per category for the exact scores (ablation, ARC-JSD, patching): the
    /// first of the same seeded order.
    #[arg(long, default_value_t = 2)]
    pub calibration_exact: usize,
    /// Test samples per category.
    #[arg(long, default_value_t = 10)]
    pub eval: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Prunings per batched forward during evaluation.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, default_value_t = 2000)]
    pub bootstrap: usize,
    /// Skip the speed phase (the table then says "not measured").
    #[arg(long)]
    pub no_speed: bool,
    /// Also write one of the run's prunings (`--export-pruning`) as a Hugging Face folder here
    /// (as `headscope export` does).
    #[arg(long, value_name = "DIR", requires = "export_pruning")]
    pub export: Option<PathBuf>,
    /// The pruning `--export` writes, by its name in `pruning/` (e.g. `atp-50`, `random-30-d0`).
    #[arg(long, value_name = "NAME", requires = "export")]
    pub export_pruning: Option<String>,
    /// Export with the pruned heads sliced out (needs the same number of kept query heads per KV
    /// group in every layer) instead of zeroed.
    #[arg(long, requires = "export")]
    pub physical: bool,
    /// Decode steps per speed measurement.
    #[arg(long, default_value_t = 32)]
    pub speed_steps: usize,
    /// Repeats per speed measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub speed_repeats: usize,
}

#[derive(Subcommand, Debug)]
pub enum StudyCommand {
    /// A seeded train/test split stratified by `category`: OUT/split/train.jsonl and test.jsonl.
    Split(SplitArgs),
    /// Every phase: split, detect, ablate, report (each resumes where an earlier run stopped).
    Run(StudyArgs),
    /// Head scores on the training samples, per model (DIR/detect/).
    Detect(StudyArgs),
    /// Top-k vs random-k ablation on the test samples, per model (DIR/ablate/).
    Ablate(StudyArgs),
    /// summary.json, FINDINGS.md and figures from the finished units (of every shard).
    Report(StudyArgs),
    /// What is done and what is missing, per phase, model and shard.
    Status(StudyArgs),
    /// Sets a folder up for shards: config.toml with every model's record (each model is loaded
    /// once), the split, and with --shard-count the number of shards. Run it once, then the
    /// shards (`study run|detect|ablate --shard-index I`), then `study report`.
    Prepare(StudyArgs),
    /// Browse a study (finished or running) in the explorer; enter opens a test sample with the
    /// experiment's top-k heads ablated. `headscope DIR` does the same.
    View(StudyViewArgs),
}

/// A study's configuration: `--config study.toml`, each field overridable by its flag.
#[derive(Args, Debug, Clone)]
pub struct StudyArgs {
    /// The dataset (samples with a `category`); overrides `data` of the config.
    pub data: Option<PathBuf>,
    /// The study's folder (units, config.toml, report).
    #[arg(long)]
    pub out: PathBuf,
    /// A study.toml; flags given here override its fields. Without it, a new study uses the
    /// defaults, and an existing folder its own config.toml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A model (repeat for several): a .gguf file, a folder or a hub id.
    #[arg(long, short = 'm')]
    pub model: Vec<String>,
    /// Head-finding methods, comma-separated: summed-attention, summed-attention-answer,
    /// retrieval, retrieval-all, qrhead, arc-jsd, ablation, atp, patching.
    #[arg(long, value_delimiter = ',')]
    pub methods: Option<Vec<headscope::study::detect::DetectMethod>>,
    /// Ablation sizes, comma-separated (0 is always included).
    #[arg(long, value_delimiter = ',')]
    pub ks: Option<Vec<usize>>,
    /// Random draws per k.
    #[arg(long)]
    pub draws: Option<usize>,
    /// Size of each method's top list (random heads come from outside it).
    #[arg(long)]
    pub top_n: Option<usize>,
    /// zero, mean or uniform.
    #[arg(long)]
    pub ablation: Option<AblationMode>,
    /// all or decode-only.
    #[arg(long)]
    pub positions: Option<headscope::study::config::AblatedPositions>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub test_fraction: Option<f64>,
    /// At most this many training samples per category (0: all).
    #[arg(long)]
    pub train_per_category: Option<usize>,
    /// At most this many test samples per category (0: all).
    #[arg(long)]
    pub test_per_category: Option<usize>,
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Ablation conditions per batched forward.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Bootstrap resamples per interval.
    #[arg(long)]
    pub bootstrap: Option<usize>,
    #[arg(long)]
    pub prompt_style: Option<PromptStyle>,
    /// Written on its own line before the question (default: a short-answer instruction;
    /// an empty text: none).
    #[arg(long)]
    pub instruction: Option<String>,
    /// A minijinja template of the user message (see `run --prompt-template`).
    #[arg(long, value_name = "FILE")]
    pub prompt_template: Option<PathBuf>,
    /// Never touch the network.
    #[arg(long)]
    pub offline: bool,
    /// cpu, cuda or auto. Studies compute in f32 on every device, so shards on CPUs and GPUs
    /// agree up to the kernels' rounding.
    #[arg(long, default_value = "cpu", value_parser = clap::value_parser!(DeviceChoice))]
    pub device: DeviceChoice,
    /// Run only this shard's units (0-based). Default: $SLURM_ARRAY_TASK_ID, else
    /// $JOB_COMPLETION_INDEX (a Kubernetes indexed job), else the whole study.
    #[arg(long)]
    pub shard_index: Option<usize>,
    /// How many shards share the study (with `prepare`: records it). Default: the count the
    /// folder was prepared for, else $SLURM_ARRAY_TASK_COUNT.
    #[arg(long)]
    pub shard_count: Option<usize>,
}

#[derive(Args, Debug)]
pub struct SplitArgs {
    /// The dataset: samples (JSON list or JSONL) with a `category` field.
    pub data: PathBuf,
    /// The study's folder.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The share of each category that goes to the test split.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
}

#[derive(Subcommand, Debug)]
pub enum DatasetCommand {
    /// Generate the shipped dataset: invented 10-K filings split into section documents, four
    /// questions each (incorporation state and year, employee count, headquarters state).
    Filings(FilingsArgs),
    /// Answer every sample of a file with a model and count the correct answers per category.
    Check(CheckArgs),
    /// Samples from a table of filings: a text column and one answer column per question.
    FromCsv(FromCsvArgs),
}

#[derive(Args, Debug)]
pub struct FromCsvArgs {
    /// The CSV file (a header row, then one filing per row).
    pub csv: PathBuf,
    /// The column holding the filing's text.
    #[arg(long)]
    pub text_column: String,
    /// A column naming each row in the sample ids (default: the row number).
    #[arg(long)]
    pub id_column: Option<String>,
    /// One per category: CATEGORY=QUESTION=COLUMN, e.g.
    /// `incorporation_state="In which state is the company incorporated?"=state`.
    #[arg(long = "question", required = true)]
    pub questions: Vec<headscope::dataset::csv::QuestionSpec>,
    /// About this many characters per document (whole paragraphs).
    #[arg(long, default_value_t = 1200)]
    pub chunk_chars: usize,
    /// The JSONL file to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct FilingsArgs {
    /// The generator's seed: the same seed and count give the same file on any machine.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of filings (four samples each).
    #[arg(long, default_value_t = 200)]
    pub count: usize,
    /// The JSONL file to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A sample file (JSON list or JSONL) whose samples have `answers` (and a `category`).
    pub samples: PathBuf,
    #[command(flatten)]
    pub format: FormatArgs,
    #[arg(long, default_value_t = 32)]
    pub max_new_tokens: usize,
    /// Only every n-th sample (a quick look at a large file).
    #[arg(long, default_value_t = 1)]
    pub every: usize,
    /// Write every answer and the per-category counts as JSON to PATH (`-` for stdout).
    #[arg(long)]
    pub json: Option<PathBuf>,
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
    /// Load the model with these heads / MLPs removed: a JSON file `{"heads": [[layer, head], ...],
    /// "mlps": [layer, ...]}`, as `headscope prune` writes.
    #[arg(long, value_name = "FILE")]
    pub prune: Option<PathBuf>,
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
    #[command(flatten)]
    pub format: FormatArgs,
}

/// How the prompt is written: `--prompt-style`, `--instruction`, `--prompt-template`.
#[derive(Args, Debug, Clone)]
pub struct FormatArgs {
    /// mirage (`Document [i](Title: …): …` lines, then the question) or context-query.
    #[arg(long, default_value = "mirage")]
    pub prompt_style: PromptStyle,
    /// An instruction, written on its own line right before the question (in context-query
    /// style before `Query: `), e.g. "Answer with the exact word, name or number only.".
    /// Default: none.
    #[arg(long, value_name = "TEXT")]
    pub instruction: Option<String>,
    /// A minijinja template that writes the user message instead of the style, from `question`,
    /// `docs` (each with `title`, `text` and its 1-based `index`) and `instruction`; it must write
    /// `{{ question }}` and every `{{ doc.text }}` once, unfiltered. See samples/templates/.
    #[arg(long, value_name = "FILE")]
    pub prompt_template: Option<PathBuf>,
}

impl FormatArgs {
    /// The prompt format, the template file read and checked here (errors name the file).
    pub fn format(&self) -> headscope::Result<PromptFormat> {
        let template = match &self.prompt_template {
            Some(path) => Some(UserTemplate::load(path)?),
            None => None,
        };
        Ok(PromptFormat {
            style: self.prompt_style,
            instruction: self.instruction.clone(),
            template,
        })
    }
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
    /// ARC-JSD source attribution with prefix reuse against its n + 1 forwards run one by one.
    Attribution(BenchAttributionArgs),
    /// Median time to render one full explorer frame of a synthetic state (no model needed).
    Render(BenchRenderArgs),
    /// The explorer's live ablation toggle: a re-run from the cached clean prefix against the
    /// same answer and score computed from scratch, for a head at the bottom, middle and top.
    Live(BenchLiveArgs),
    /// Prefill and decode tokens/s of the model with seeded random heads pruned at each sparsity
    /// (weights sliced at load) against the unpruned model, in the same run.
    Prune(BenchPruneArgs),
    /// The explorer headless from a cold start (no cache): seconds to each stage's end and to
    /// each pane's first fill, as a table and JSON, naming the CPU.
    Tui(BenchTuiArgs),
}

#[derive(Args, Debug)]
pub struct BenchPruneArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Shares of all heads pruned, comma-separated, each in (0, 1).
    #[arg(long, value_delimiter = ',', default_values_t = [0.3, 0.5, 0.68])]
    pub sparsity: Vec<f64>,
    /// Prompt tokens per prefill.
    #[arg(long, default_value_t = 256)]
    pub tokens: usize,
    /// Decoding steps after each prefill.
    #[arg(long, default_value_t = 32)]
    pub decode: usize,
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Seed of the random head choice.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BenchTuiArgs {
    #[command(flatten)]
    pub explore: ExploreArgs,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write the Markdown table here.
    #[arg(long)]
    pub md: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BenchLiveArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// Interleaved rounds of both ways.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Longest regenerated answer.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Generate the clean answer even when the sample has an `output`.
    #[arg(long)]
    pub generate: bool,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BenchRenderArgs {
    /// Screen size, COLUMNSxROWS.
    #[arg(long, default_value = "160x48", value_parser = headscope::ui::screenshot::parse_size)]
    pub size: (u16, u16),
    #[arg(long, default_value_t = 28)]
    pub layers: usize,
    #[arg(long, default_value_t = 12)]
    pub heads: usize,
    /// Answer tokens.
    #[arg(long, default_value_t = 64)]
    pub tokens: usize,
    #[arg(long, default_value_t = 500)]
    pub frames: usize,
    /// Fail when the median frame takes longer (milliseconds).
    #[arg(long, default_value_t = 5.0)]
    pub budget_ms: f64,
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Time the study view on this study's folder instead (layers, heads and tokens unused).
    #[arg(long)]
    pub study: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BenchAttributionArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A sample file; every sample in it is measured.
    pub samples: PathBuf,
    #[arg(long, default_value = "document")]
    pub granularity: Granularity,
    /// Interleaved rounds of the three ways.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    #[arg(long)]
    pub json: Option<PathBuf>,
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

/// `--method a,b,c`.
#[derive(Clone, Debug)]
pub struct MethodList(pub Vec<Method>);

impl std::str::FromStr for MethodList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Method::parse_list(s).map(MethodList)
    }
}

/// `--curve-k 0,10,20`.
#[derive(Clone, Debug)]
pub struct KGrid(pub Vec<usize>);

impl std::str::FromStr for KGrid {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(|p| {
                p.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("`{p}` is not a number of heads"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(KGrid)
    }
}

/// `--ablate L19H1,L20H3`.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadList(pub Vec<(usize, usize)>);

impl std::str::FromStr for HeadList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(|p| {
                let p = p.trim();
                let bad = || format!("`{p}`: write a head as L{{layer}}H{{head}}, e.g. L19H1");
                let rest = p.strip_prefix(['L', 'l']).ok_or_else(bad)?;
                let (l, h) = rest.split_once(['H', 'h']).ok_or_else(bad)?;
                Ok((l.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?))
            })
            .collect::<Result<Vec<_>, String>>()
            .map(HeadList)
    }
}

fn parse_span(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("`{s}`: write a token range as START..END"))?;
    let a = a
        .trim()
        .parse::<usize>()
        .map_err(|_| format!("`{a}` is not a token index"))?;
    let b = b
        .trim()
        .parse::<usize>()
        .map_err(|_| format!("`{b}` is not a token index"))?;
    if a >= b {
        return Err(format!("`{s}`: the range is empty"));
    }
    Ok((a, b))
}

#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// Analyse every sample of the file (JSON output becomes a list) instead of `--index`.
    #[arg(long)]
    pub all_samples: bool,
    /// Methods, comma-separated: logit-lens, heads:arc-jsd, heads:summed-attention,
    /// heads:retrieval, heads:qrhead, heads:ablation, heads:patching, attr:arc-jsd,
    /// attr:context-cite, attr:mirage, attr:marginal, attr:attention, ablation-curve, heads:atp,
    /// or all.
    #[arg(long, default_value = "all")]
    pub method: MethodList,
    /// Sources for attribution: doc or sentence.
    #[arg(long, default_value = "document")]
    pub granularity: Granularity,
    /// Write the analysis as JSON to PATH (`-` for stdout). The format is documented in the README.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// jsd (bounded, default), jsd_arc_code (ARC-JSD's released code), kl or kl_rev.
    #[arg(long, default_value = "jsd")]
    pub divergence: Divergence,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Generate even when the sample has an `output` to score.
    #[arg(long)]
    pub generate: bool,
    /// Logit-lens tokens per cell.
    #[arg(long, default_value_t = 5)]
    pub lens_top_k: usize,
    /// Summed attention from every answer position, not only the last prompt token.
    #[arg(long)]
    pub from_answer: bool,
    /// ContextCite: number of random ablation masks.
    #[arg(long, default_value_t = 64)]
    pub ablations: usize,
    /// ContextCite: probability that a source is kept in a mask.
    #[arg(long, default_value_t = 0.5)]
    pub keep_prob: f64,
    /// ContextCite: Lasso regularisation.
    #[arg(long, default_value_t = 0.01)]
    pub lasso_alpha: f64,
    /// ContextCite: explain only answer tokens START..END (a refit from cached ablations).
    #[arg(long, value_parser = parse_span)]
    pub answer_span: Option<(usize, usize)>,
    /// Seed for ContextCite masks and random heads.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// MIRAGE: CTI threshold in standard deviations above the mean.
    #[arg(long, default_value_t = 1.0)]
    pub cti: f64,
    /// MIRAGE: CCI filter (negative: top |CCI| % of the range; 0: mean; positive: top-k tokens).
    #[arg(long, default_value_t = -5.0, allow_hyphen_values = true)]
    pub cci: f64,
    /// Ablation curve: numbers of heads, comma-separated.
    #[arg(long, default_value = "0,10,20,30,40,50")]
    pub curve_k: KGrid,
    /// Ablation curve: random head sets per k.
    #[arg(long, default_value_t = 5)]
    pub curve_draws: usize,
    /// Ablation curve: zero, mean or uniform.
    #[arg(long, default_value = "zero")]
    pub curve_ablation: AblationMode,
    /// Ablation curve: the head score that ranks heads (arc_jsd, summed_attention, retrieval,
    /// qrhead, ablation, atp, patching).
    #[arg(long, default_value = "arc_jsd")]
    pub curve_score: HeadScore,
    /// Ablation curve: skip regenerating the answer under each ablation.
    #[arg(long)]
    pub no_regenerate: bool,
    /// Skip the faithfulness metrics (top-k drop, LDS, top-1 accuracy).
    #[arg(long)]
    pub no_faithfulness: bool,
    /// LDS: number of held-out masks.
    #[arg(long, default_value_t = 32)]
    pub lds_masks: usize,
    /// Ablated variants per forward in head sweeps.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// heads:atp: the ablation it linearises, zero (as heads:ablation) or mean (each head's
    /// mean output over the run's positions).
    #[arg(long, default_value = "zero")]
    pub atp_ablation: AblationMode,
    /// Analyse the model with these heads ablated, as the explorer does after a live re-run:
    /// the answer is the ablated model's own and every method sees the ablated model.
    /// Comma-separated `L{layer}H{head}`, e.g. `L19H1,L20H3`.
    #[arg(long)]
    pub ablate: Option<HeadList>,
    /// Also zero these layers' MLP outputs (comma-separated layer numbers).
    #[arg(long, value_delimiter = ',')]
    pub ablate_mlp: Vec<usize>,
    /// How the `--ablate` heads are replaced: zero, mean (the head's mean output over the clean
    /// run) or uniform (a uniform attention pattern).
    #[arg(long, default_value = "zero")]
    pub ablation_kind: AblationMode,
    /// Recompute everything and store nothing.
    #[arg(long)]
    pub no_cache: bool,
    /// Where cached results live (default: $HEADSCOPE_CACHE/analysis or ~/.cache/headscope/analysis).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

/// `headscope study view DIR`.
#[derive(Args, Debug)]
pub struct StudyViewArgs {
    /// The study's folder (finished or still running).
    pub dir: PathBuf,
    /// The study's models in order, where they are no longer at the recorded paths (repeat the
    /// flag; the first replaces the first model, and so on).
    #[arg(long = "model", short = 'm')]
    pub models: Vec<String>,
    /// Never touch the network (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// cpu, cuda or auto.
    #[arg(long, default_value = "cpu", value_parser = clap::value_parser!(DeviceChoice))]
    pub device: DeviceChoice,
    /// f32, bf16 or f16 (default: f32 on the CPU, bf16 on CUDA).
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: Option<candle_core::DType>,
    #[command(flatten)]
    pub tui: TuiArgs,
}
