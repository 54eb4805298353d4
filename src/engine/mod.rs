//! The hooked inference engine: load a model from a hub id, a folder or a GGUF file, run batched
//! forwards with interventions and captures, generate and score answers.
//!
//! [`Engine`] is the only public door; analyses call [`Engine::forward`], [`Engine::generate`] and
//! [`Engine::score`] and never touch weights directly.

pub mod arch;
#[cfg(feature = "openblas")]
pub mod blas;
pub mod chat;
pub mod decoder;
pub mod export;
pub mod frozen;
pub mod generate;
pub mod hooks;
pub mod kernels;
pub mod kv;
pub mod model;
pub mod packed;
pub mod pruning;
pub mod skinny;
pub mod source;
pub mod speed;
pub mod tokenizer;
pub mod weights;

/// Helpers shared by the engine's unit tests.
#[cfg(test)]
pub(crate) mod test_util {
    use candle_core::Tensor;

    /// `max |a − b|` over every element of two f32 tensors of one shape.
    pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }
}

use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::{DType, Device};
use serde::Serialize;

pub use arch::{Arch, Family};
pub use chat::{ChatMessage, ChatTemplate};
pub use decoder::{Decoder, Forward, Recording};
pub use generate::{ids_tensor, GenerationConfig, ScoredAnswer};
pub use hooks::{
    AblationKind, AblationMode, AblationSet, Capture, HeadAblation, HeadPatch, Hooks, Positions,
    ResolvedAblation, Trace,
};
pub use kv::{KvCache, LayerKv};
pub use model::{Start, Transformer};
pub use pruning::Pruning;
pub use source::ModelSource;

use crate::{Error, Result};

/// Runs `work` on one of rayon's threads (at once when already on one).
///
/// Why: every product and kernel of a forward splits its work over rayon's threads. Called from
/// outside the pool, each of them hands its work over and sleeps until it is done, and a decoding
/// step has about 150 of them: on a 2-core Zen 3 VM a step's f32 weight products took 23.9 ms from
/// outside and 18.2 ms from inside (`examples/decode_products.rs`,
/// `benches/results/decode-products-zen3.md`). From inside, the calling thread works on its own
/// product and the other threads steal from it.
pub fn on_workers<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    match rayon::current_thread_index() {
        Some(_) => work(),
        None => rayon::scope(|_| work()),
    }
}

/// `--device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Cpu,
    Cuda,
    /// CUDA when compiled in and a GPU is present, else the CPU.
    Auto,
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda),
            "auto" => Ok(DeviceChoice::Auto),
            other => Err(format!("unknown device `{other}` (use cpu, cuda or auto)")),
        }
    }
}

impl DeviceChoice {
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Auto => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
            DeviceChoice::Cuda => {
                if !candle_core::utils::cuda_is_available() {
                    return Err(Error::Config(
                        "--device cuda: this binary was built without the `cuda` feature (see README: GPU build)".into(),
                    ));
                }
                Device::new_cuda(0)
                    .map_err(|e| Error::Config(format!("--device cuda: no usable GPU: {e}")))
            }
        }
    }
}

/// Parses `--dtype`.
pub fn parse_dtype(s: &str) -> std::result::Result<DType, String> {
    match s {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" => Ok(DType::F16),
        other => Err(format!("unknown dtype `{other}` (use f32, bf16 or f16)")),
    }
}

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub model: String,
    pub offline: bool,
    pub device: DeviceChoice,
    /// Working dtype; default f32 on the CPU, bf16 on CUDA.
    pub dtype: Option<DType>,
    /// Heads and MLPs removed at load time (`--prune FILE`, `headscope prune`).
    pub pruning: Option<Pruning>,
}

impl LoadOptions {
    pub fn new(model: impl Into<String>) -> Self {
        LoadOptions {
            model: model.into(),
            offline: false,
            device: DeviceChoice::Cpu,
            dtype: None,
            pruning: None,
        }
    }
}

/// The engine with an [`AblationSet`] in force ([`Engine::ablate`]): derefs to the [`Engine`], so
/// every analysis runs on it unchanged, and restores the unablated model when dropped.
pub struct Ablated<'e> {
    engine: &'e mut Engine,
}

impl std::ops::Deref for Ablated<'_> {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        self.engine
    }
}

impl Drop for Ablated<'_> {
    fn drop(&mut self) {
        self.engine.model.set_standing_ablation(None);
    }
}

/// What a run reports about the model it used.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ModelInfo {
    pub model: String,
    pub path: PathBuf,
    pub arch: String,
    pub dtype: String,
    pub device: String,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub hidden_size: usize,
    pub vocab_size: usize,
    pub context_length: usize,
}

/// A loaded model with its tokenizer and chat template: the one door to the model. Analyses go
/// through its methods ([`Engine::forward`], [`Engine::tokenizer`], [`Engine::info`], ...), which
/// keep every forward counted and every ablation scoped ([`Engine::ablate`]).
pub struct Engine {
    model: Transformer,
    tokenizer: tokenizers::Tokenizer,
    template: ChatTemplate,
    info: ModelInfo,
    /// Generation stops on any of these ([`tokenizer::stop_ids`]).
    stop_ids: Vec<u32>,
    /// Forward calls made through this engine (a decoding step counts as one), for cost reports.
    forwards: std::sync::atomic::AtomicUsize,
    /// What was removed at load time ([`LoadOptions::pruning`]).
    pruning: Option<Pruning>,
}

impl Engine {
    pub fn load(opts: &LoadOptions) -> Result<Engine> {
        let source = source::resolve(&opts.model, opts.offline)?;
        let device = opts.device.open()?;
        let dtype = opts.dtype.unwrap_or(if device.is_cpu() {
            DType::F32
        } else {
            DType::BF16
        });
        let loaded = match &source {
            ModelSource::Gguf(path) => load_gguf(path, &device, dtype)?,
            ModelSource::Folder { dir, weights } => load_folder(dir, weights, &device, dtype)?,
        };
        let arch = &loaded.arch;
        let info = ModelInfo {
            model: opts.model.clone(),
            path: source.path().to_path_buf(),
            arch: arch.family.name().to_string(),
            dtype: format!("{dtype:?}").to_lowercase(),
            device: if device.is_cpu() {
                "cpu".into()
            } else {
                "cuda".into()
            },
            layers: arch.num_layers,
            heads: arch.num_heads,
            kv_heads: arch.num_kv_heads,
            hidden_size: arch.hidden_size,
            vocab_size: arch.vocab_size,
            context_length: arch.max_position_embeddings,
        };
        let model = match &opts.pruning {
            Some(p) => Transformer::new_pruned(loaded.arch, loaded.weights, p, &device, dtype)?,
            None => Transformer::new(loaded.arch, loaded.weights, &device, dtype)?,
        };
        Ok(Engine {
            model,
            tokenizer: loaded.tokenizer,
            template: loaded.template,
            info,
            stop_ids: loaded.stop_ids,
            forwards: Default::default(),
            pruning: opts.pruning.clone(),
        })
    }

    /// The heads and MLPs removed at load time, if any.
    pub fn pruning(&self) -> Option<&Pruning> {
        self.pruning.as_ref()
    }

    pub fn arch(&self) -> &Arch {
        &self.model.arch
    }

    /// The loaded weights, read-only (the weight-magnitude baseline of `headscope prune`).
    pub fn weights(&self) -> &weights::ModelWeights {
        self.model.weights()
    }

    /// The model with `set` ablated in every forward — generation, scoring, sweeps and gradients
    /// alike — for as long as the returned guard lives; dropping it restores the unablated model.
    /// It acts before a forward's own [`Hooks::head_ablation`], so a head that both ablate ends up
    /// as the forward's ablation says. `means` (`[layers, heads, d_head]`, the clean run's mean
    /// `z`) is asked for only by a mean ablation. The empty set gives the unablated model.
    pub fn ablate(
        &mut self,
        set: &AblationSet,
        means: impl FnOnce() -> Result<candle_core::Tensor>,
    ) -> Result<Ablated<'_>> {
        if !set.heads.is_empty() {
            self.model.require_unsliced("ablating heads")?;
        }
        let resolved = if set.is_empty() {
            None
        } else {
            Some(set.resolve(&self.model.arch, self.model.device(), means)?)
        };
        self.model.set_standing_ablation(resolved);
        Ok(Ablated { engine: self })
    }

    /// The ablation in force (inside an [`Engine::ablate`] guard), if any.
    pub fn ablation(&self) -> Option<&AblationSet> {
        self.model.standing_ablation()
    }

    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.tokenizer
    }

    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// What a run reports about the model.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The ids generation stops on.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    pub fn device(&self) -> &Device {
        self.model.device()
    }

    /// Token ids as a one-row input `[1, t]` on the model's device.
    pub fn ids_tensor(&self, ids: &[u32]) -> Result<candle_core::Tensor> {
        generate::ids_tensor(ids, self.model.device())
    }

    /// The same token ids as every row of a batch, `[rows, t]`, on the model's device.
    pub fn ids_rows(&self, ids: &[u32], rows: usize) -> Result<candle_core::Tensor> {
        generate::ids_rows(ids, rows, self.model.device())
    }

    /// One hooked forward (see [`Transformer::forward`]), run on rayon's threads ([`on_workers`]).
    pub fn forward(&self, start: Start, past: Option<&KvCache>, hooks: &Hooks) -> Result<Trace> {
        self.count_forwards(1);
        on_workers(|| self.model.forward(start, past, hooks))
    }

    /// Forward calls made so far.
    pub fn forward_count(&self) -> usize {
        self.forwards.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count_forwards(&self, n: usize) {
        self.forwards
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Query rows per block of causal attention (see [`Transformer::set_attention_chunk`]).
    pub fn set_attention_chunk(&mut self, rows: usize) {
        self.model.set_attention_chunk(rows)
    }

    /// The logit lens of residual-space vectors (see [`Transformer::unembed`]); no forward.
    pub fn unembed(&self, x: &candle_core::Tensor) -> Result<candle_core::Tensor> {
        self.model.unembed(x)
    }

    /// Per-head contributions to the residual stream (see [`Transformer::head_results`]).
    pub fn head_results(
        &self,
        layer: usize,
        z: &candle_core::Tensor,
    ) -> Result<candle_core::Tensor> {
        self.model.head_results(layer, z)
    }

    /// What layer `layer`'s attention sublayer adds to the residual stream (see
    /// [`Transformer::post_attention`]).
    pub fn post_attention(
        &self,
        layer: usize,
        attn_out: candle_core::Tensor,
    ) -> Result<candle_core::Tensor> {
        self.model.post_attention(layer, attn_out)
    }

    /// The gradient of `f(last logits)` w.r.t. the input embeddings (see
    /// [`Transformer::embedding_gradient`]); counts as one forward.
    /// The embedding-table rows of `ids` `[b, t, d]` (before Gemma 2's √d scale).
    pub fn embeddings(&self, ids: &candle_core::Tensor) -> Result<candle_core::Tensor> {
        let (b, t) = ids.dims2()?;
        let rows = self
            .model
            .weights()
            .embed
            .index_select(&ids.flatten_all()?, 0)?;
        Ok(rows.reshape((b, t, ()))?)
    }

    pub fn embedding_gradient(
        &self,
        ids: &candle_core::Tensor,
        f: impl FnOnce(&candle_core::Tensor) -> Result<candle_core::Tensor>,
    ) -> Result<model::EmbeddingGradient> {
        self.count_forwards(1);
        self.model.embedding_gradient(ids, f)
    }

    /// The gradient of `f(logits of rows)` w.r.t. every layer's head outputs `z` (see
    /// [`Transformer::head_output_gradient`]); counts as one forward.
    pub fn head_output_gradient(
        &self,
        ids: &candle_core::Tensor,
        rows: &Positions,
        f: impl FnOnce(&candle_core::Tensor) -> Result<candle_core::Tensor>,
    ) -> Result<model::HeadOutputGradient> {
        self.count_forwards(1);
        self.model.head_output_gradient(ids, rows, f)
    }

    /// A decoder continuing one row after `cache` under `interventions` (see [`Decoder`]); its
    /// forwards are counted.
    pub fn resume_decoder(&self, interventions: &Hooks, cache: KvCache) -> Decoder<'_, Engine> {
        Decoder::resume(self, interventions, cache, &self.stop_ids)
    }

    pub fn generate(
        &self,
        prompt_ids: &[u32],
        cfg: &GenerationConfig,
        on_token: impl FnMut(u32) -> bool,
    ) -> Result<ScoredAnswer> {
        generate::generate(self, prompt_ids, &self.stop_ids, cfg, on_token)
    }

    /// [`Engine::generate`], also keeping the state for re-scoring the answer.
    pub fn generate_with_state(
        &self,
        prompt_ids: &[u32],
        cfg: &GenerationConfig,
        on_token: impl FnMut(u32) -> bool,
    ) -> Result<(ScoredAnswer, Option<generate::AnswerState>)> {
        generate::generate_with_state(self, prompt_ids, &self.stop_ids, cfg, on_token)
    }

    /// [`Engine::generate_with_state`], also keeping what `recording` asks for from every forward
    /// of the generation (see [`generate::generate_recording`]).
    pub fn generate_recording(
        &self,
        prompt_ids: &[u32],
        cfg: &GenerationConfig,
        recording: Recording,
        on_token: impl FnMut(u32) -> bool,
    ) -> Result<generate::RecordedGeneration> {
        generate::generate_recording(self, prompt_ids, &self.stop_ids, cfg, recording, on_token)
    }

    /// Greedy decoding of one prompt under each row of a head ablation (see
    /// [`generate::generate_ablated`]).
    pub fn generate_ablated(
        &self,
        prompt_ids: &[u32],
        max_new_tokens: usize,
        ablation: &HeadAblation,
        keep_going: impl FnMut() -> bool,
    ) -> Result<Vec<Vec<u32>>> {
        let stop = &self.stop_ids;
        generate::generate_ablated(self, prompt_ids, stop, max_new_tokens, ablation, keep_going)
    }

    /// [`Engine::score`] at once keeping the state for re-scoring the answer.
    pub fn score_with_state(
        &self,
        prompt_ids: &[u32],
        answer_ids: &[u32],
        top_k: usize,
    ) -> Result<(ScoredAnswer, Option<generate::AnswerState>)> {
        generate::score_with_state(self, prompt_ids, answer_ids, top_k, true)
    }

    pub fn score(
        &self,
        prompt_ids: &[u32],
        answer_ids: &[u32],
        top_k: usize,
    ) -> Result<ScoredAnswer> {
        generate::score(self, prompt_ids, answer_ids, top_k)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// The text of each token on its own (for display).
    pub fn token_texts(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&id| self.tokenizer.decode(&[id], false).unwrap_or_default())
            .collect()
    }
}

impl Forward for Engine {
    fn forward(&self, start: Start, past: Option<&KvCache>, hooks: &Hooks) -> Result<Trace> {
        Engine::forward(self, start, past, hooks)
    }
    fn transformer(&self) -> &Transformer {
        &self.model
    }
}

/// What the loaders read from a model source.
struct Loaded {
    arch: Arch,
    weights: weights::ModelWeights,
    tokenizer: tokenizers::Tokenizer,
    template: ChatTemplate,
    stop_ids: Vec<u32>,
}

fn load_gguf(path: &Path, device: &Device, dtype: DType) -> Result<Loaded> {
    let mut gguf = weights::GgufFile::open(path)?;
    let md = weights::gguf_metadata(&gguf);
    let mut arch = Arch::from_gguf(md).map_err(|e| match e {
        Error::Config(m) => Error::invalid_model(path, m),
        other => other,
    })?;
    let tokenizer = tokenizer::tokenizer_from_gguf(md)?;
    let special = tokenizer::special_tokens_from_gguf(md, &tokenizer)?;
    let name = |t: &Option<(u32, String)>| t.as_ref().map(|(_, s)| s.clone());
    let template = match md
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
    {
        Some(src) => ChatTemplate::new(src.clone(), name(&special.bos), name(&special.eos)),
        None => ChatTemplate::builtin_for_arch(arch.family.name()),
    };
    let stop_ids = special.stop_ids(&tokenizer);
    let weights = weights::load_gguf(&mut gguf, &mut arch, device, dtype)?;
    Ok(Loaded {
        arch,
        weights,
        tokenizer,
        template,
        stop_ids,
    })
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::invalid_model(path, format!("invalid JSON: {e}")))
}

fn load_folder(dir: &Path, files: &[PathBuf], device: &Device, dtype: DType) -> Result<Loaded> {
    let config_path = dir.join("config.json");
    let config =
        read_json(&config_path)?.ok_or_else(|| Error::invalid_model(dir, "no config.json"))?;
    let generation = read_json(&dir.join("generation_config.json"))?;
    let mut arch = Arch::from_hf_config(&config, generation.as_ref()).map_err(|e| match e {
        Error::Config(m) => Error::invalid_model(&config_path, m),
        other => other,
    })?;
    let tok_path = dir.join("tokenizer.json");
    if !tok_path.is_file() {
        return Err(Error::invalid_model(
            dir,
            "no tokenizer.json in the model folder",
        ));
    }
    let tokenizer = tokenizer::load_tokenizer_json(&tok_path)?;
    let template = ChatTemplate::from_tokenizer_config(&dir.join("tokenizer_config.json"))?
        .unwrap_or_else(|| ChatTemplate::builtin_for_arch(arch.family.name()));
    let stop_ids = tokenizer::stop_ids(arch.eos_token_ids.iter().copied(), &tokenizer);
    let weights = weights::load_safetensors(files, &mut arch, device, dtype)?;
    Ok(Loaded {
        arch,
        weights,
        tokenizer,
        template,
        stop_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(family: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(family)
    }

    fn load(path: &Path) -> Engine {
        Engine::load(&LoadOptions::new(path.to_string_lossy())).unwrap()
    }

    /// The loader's stop ids are exactly [`tokenizer::stop_ids`] of the folder's EOS ids: the
    /// tested policy is the one that runs.
    #[test]
    fn folder_engine_stops_on_the_tested_stop_ids() {
        for family in ["qwen2", "llama", "gemma2"] {
            let dir = fixture(family);
            let engine = load(&dir);
            let config = read_json(&dir.join("config.json")).unwrap().unwrap();
            let generation = read_json(&dir.join("generation_config.json")).unwrap();
            let arch = Arch::from_hf_config(&config, generation.as_ref()).unwrap();
            let tok = tokenizer::load_tokenizer_json(&dir.join("tokenizer.json")).unwrap();
            let want = tokenizer::stop_ids(arch.eos_token_ids.iter().copied(), &tok);
            assert_eq!(engine.stop_ids(), want, "{family}");
            // The fixtures' `<|endoftext|>` (0) and `<|im_end|>` (2) both end a turn.
            assert_eq!(engine.stop_ids(), [0, 2], "{family}");
        }
    }

    /// The same for GGUF files: [`SpecialTokens::stop_ids`] of the file's special tokens.
    #[test]
    fn gguf_engine_stops_on_the_tested_stop_ids() {
        for family in ["qwen2", "llama", "gemma2"] {
            let path = fixture(family).join(format!("{family}.gguf"));
            let engine = load(&path);
            let gguf = weights::GgufFile::open(&path).unwrap();
            let md = weights::gguf_metadata(&gguf);
            let tok = tokenizer::tokenizer_from_gguf(md).unwrap();
            let special = tokenizer::special_tokens_from_gguf(md, &tok).unwrap();
            assert_eq!(engine.stop_ids(), special.stop_ids(&tok), "{family}");
            assert!(engine.stop_ids().contains(&2), "{family}");
        }
    }
}
