//! The architecture description that drives the one generic transformer in `model.rs`.
//!
//! Every family difference (Qwen2's QKV bias, Llama-3 rope scaling, Gemma 2's soft-caps, sandwich
//! norms, sliding window and embedding scale) is a field here, read from `config.json` or from GGUF
//! metadata. Nothing else in the engine branches on the family name.

use std::collections::{BTreeMap, HashMap};

use candle_core::quantized::gguf_file::Value as GgufValue;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value as Json;

use crate::{Error, Result};

/// Families the generic transformer covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Llama,
    Qwen2,
    Gemma2,
}

pub const SUPPORTED: &str = "LlamaForCausalLM (Llama 2/3, SmolLM2; GGUF `llama`), Qwen2ForCausalLM (Qwen2, Qwen2.5; GGUF `qwen2`), Gemma2ForCausalLM (GGUF `gemma2`)";

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::Gemma2 => "gemma2",
        }
    }
    fn from_hf_architecture(name: &str) -> Option<Family> {
        match name {
            "LlamaForCausalLM" | "MistralForCausalLM" => Some(Family::Llama),
            "Qwen2ForCausalLM" => Some(Family::Qwen2),
            "Gemma2ForCausalLM" => Some(Family::Gemma2),
            _ => None,
        }
    }
    fn from_model_type(name: &str) -> Option<Family> {
        match name {
            "llama" | "mistral" => Some(Family::Llama),
            "qwen2" => Some(Family::Qwen2),
            "gemma2" => Some(Family::Gemma2),
            _ => None,
        }
    }
}

/// How rotary embeddings pair dimensions inside a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RopeStyle {
    /// Pairs (i, i + d/2): Hugging Face / NeoX. Safetensors of every family, qwen2 and gemma2 GGUFs.
    RotateHalf,
    /// Pairs (2i, 2i + 1): llama-architecture GGUFs, whose Q/K rows llama.cpp's converter permuted.
    /// Using the interleaved rotation on the permuted rows gives exactly HF's attention scores, and
    /// head indices are unchanged by the permutation.
    Interleaved,
}

/// Llama-3 frequency scaling (`rope_type: "llama3"`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Silu,
    GeluTanh,
}

#[derive(Clone, Debug, Serialize)]
pub struct Arch {
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_style: RopeStyle,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub max_position_embeddings: usize,
    pub qkv_bias: bool,
    pub activation: Activation,
    pub tie_word_embeddings: bool,
    /// Attention scores are multiplied by this (1/sqrt(head_dim), or Gemma 2's query_pre_attn_scalar^-0.5).
    pub attn_scale: f64,
    pub attn_logit_softcap: Option<f64>,
    pub final_logit_softcap: Option<f64>,
    /// Sliding-window size, and which layers use it.
    pub sliding_window: Option<usize>,
    pub sliding_layers: Vec<bool>,
    /// Gemma 2: norms after attention and after the MLP, plus a norm before the MLP.
    pub sandwich_norms: bool,
    /// Gemma 2 multiplies embeddings by sqrt(hidden_size).
    pub embedding_scale: Option<f64>,
    /// Gemma 2 safetensors store RMSNorm weights as w for (1 + w); the loader adds 1 once.
    pub norm_weight_offset: f64,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl Arch {
    pub fn is_sliding(&self, layer: usize) -> Option<usize> {
        match (self.sliding_window, self.sliding_layers.get(layer)) {
            (Some(w), Some(true)) => Some(w),
            _ => None,
        }
    }

    fn check(self) -> Result<Self> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("intermediate_size", self.intermediate_size),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(Error::Config(format!("{name} must be positive")));
            }
        }
        if self.num_heads % self.num_kv_heads != 0 {
            return Err(Error::Config(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_heads, self.num_kv_heads
            )));
        }
        if self.head_dim % 2 != 0 {
            return Err(Error::Config(format!(
                "head_dim {} must be even for rotary embeddings",
                self.head_dim
            )));
        }
        Ok(self)
    }

    /// Reads a Hugging Face `config.json` (and the EOS ids of `generation_config.json` if given).
    pub fn from_hf_config(config: &Json, generation_config: Option<&Json>) -> Result<Arch> {
        let bad = |file: &str, e: serde_json::Error| Error::Config(format!("{file}: {e}"));
        let config = HfConfig::deserialize(config).map_err(|e| bad("config.json", e))?;
        let generation = generation_config
            .map(HfGenerationConfig::deserialize)
            .transpose()
            .map_err(|e| bad("generation_config.json", e))?;
        config.into_arch(generation.as_ref())
    }

    /// Reads llama.cpp metadata (`general.architecture` and the `{arch}.*` keys).
    pub fn from_gguf(md: &HashMap<String, GgufValue>) -> Result<Arch> {
        let meta = GgufArchMeta::new(md)?;
        let family = meta.family;
        let is_gemma = family == Family::Gemma2;
        let hidden_size = meta.get_u("embedding_length")?;
        let num_heads = meta.get_u("attention.head_count")?;
        let num_layers = meta.get_u("block_count")?;
        let head_dim = meta
            .opt_u("attention.key_length")
            .or_else(|| meta.opt_u("rope.dimension_count"))
            .unwrap_or(hidden_size / num_heads.max(1));
        let token_id = |k: &str| md.get(k).and_then(|v| v.to_u32().ok());
        let gemma_f = |k: &str| meta.opt_f(k).filter(|_| is_gemma);
        Arch {
            family,
            vocab_size: meta.vocab_size()?,
            hidden_size,
            num_layers,
            num_heads,
            num_kv_heads: meta.opt_u("attention.head_count_kv").unwrap_or(num_heads),
            head_dim,
            intermediate_size: meta.get_u("feed_forward_length")?,
            rms_norm_eps: meta
                .opt_f("attention.layer_norm_rms_epsilon")
                .unwrap_or(1e-6),
            rope_theta: meta.opt_f("rope.freq_base").unwrap_or(10_000.0),
            rope_style: if family == Family::Llama {
                RopeStyle::Interleaved
            } else {
                RopeStyle::RotateHalf
            },
            // llama.cpp bakes Llama-3 scaling into the `rope_freqs.weight` tensor (read by the loader).
            rope_scaling: None,
            max_position_embeddings: meta.opt_u("context_length").unwrap_or(4096),
            qkv_bias: family == Family::Qwen2,
            activation: if is_gemma {
                Activation::GeluTanh
            } else {
                Activation::Silu
            },
            tie_word_embeddings: true, // corrected by the loader when `output.weight` exists
            // Gemma 2 scales by query_pre_attn_scalar^-0.5 where the GGUF records it; llama.cpp's
            // default is 1/sqrt(head_dim), which equals it for Gemma-2-2B/9B.
            attn_scale: match gemma_f("attention.query_pre_attn_scalar") {
                Some(s) if s > 0.0 => s.powf(-0.5),
                _ => (head_dim as f64).powf(-0.5),
            },
            attn_logit_softcap: gemma_f("attn_logit_softcapping"),
            final_logit_softcap: gemma_f("final_logit_softcapping"),
            sliding_window: meta.opt_u("attention.sliding_window").filter(|_| is_gemma),
            sliding_layers: (0..num_layers).map(|l| is_gemma && l % 2 == 0).collect(),
            sandwich_norms: is_gemma,
            embedding_scale: is_gemma.then(|| (hidden_size as f64).sqrt()),
            // The llama.cpp converter already added 1 to Gemma 2's norm weights.
            norm_weight_offset: 0.0,
            bos_token_id: token_id("tokenizer.ggml.bos_token_id"),
            eos_token_ids: token_id("tokenizer.ggml.eos_token_id")
                .into_iter()
                .collect(),
        }
        .check()
    }
}

/// The `{arch}.*` keys of llama.cpp metadata for one architecture.
struct GgufArchMeta<'a> {
    md: &'a HashMap<String, GgufValue>,
    arch_name: String,
    family: Family,
}

impl<'a> GgufArchMeta<'a> {
    fn new(md: &'a HashMap<String, GgufValue>) -> Result<Self> {
        let arch_name = md
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .ok_or_else(|| Error::Config("GGUF has no `general.architecture`".into()))?
            .clone();
        let family = match arch_name.as_str() {
            "llama" => Family::Llama,
            "qwen2" => Family::Qwen2,
            "gemma2" => Family::Gemma2,
            other => {
                return Err(Error::UnsupportedArchitecture {
                    found: other.to_string(),
                    supported: SUPPORTED.into(),
                })
            }
        };
        Ok(GgufArchMeta {
            md,
            arch_name,
            family,
        })
    }

    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch_name)
    }

    fn opt_u(&self, k: &str) -> Option<usize> {
        self.md
            .get(&self.key(k))
            .and_then(|v| v.to_u64().ok().or_else(|| v.to_u32().ok().map(u64::from)))
            .map(|v| v as usize)
    }

    fn get_u(&self, k: &str) -> Result<usize> {
        self.opt_u(k)
            .ok_or_else(|| Error::Config(format!("GGUF has no integer `{}`", self.key(k))))
    }

    fn opt_f(&self, k: &str) -> Option<f64> {
        self.md.get(&self.key(k)).and_then(|v| {
            v.to_f32()
                .ok()
                .map(f64::from)
                .or_else(|| v.to_f64().ok())
                .or_else(|| v.to_u32().ok().map(f64::from))
                .or_else(|| v.to_i32().ok().map(f64::from))
                .or_else(|| v.to_u64().ok().map(|x| x as f64))
        })
    }

    fn vocab_size(&self) -> Result<usize> {
        match self.md.get("tokenizer.ggml.tokens") {
            Some(GgufValue::Array(tokens)) => Ok(tokens.len()),
            _ => self
                .opt_u("vocab_size")
                .ok_or_else(|| Error::Config("GGUF has no vocabulary size".into())),
        }
    }
}

/// The parts of a Hugging Face `config.json` the engine reads. Every field is optional here;
/// [`HfConfig::into_arch`] says which are required and fills transformers' defaults.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct HfConfig {
    pub architectures: Option<Vec<String>>,
    pub model_type: Option<String>,
    pub vocab_size: Option<usize>,
    pub hidden_size: Option<usize>,
    pub num_hidden_layers: Option<usize>,
    pub num_attention_heads: Option<usize>,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub intermediate_size: Option<usize>,
    pub rms_norm_eps: Option<f64>,
    pub max_position_embeddings: Option<usize>,
    /// transformers < 5 writes rope settings at the top level ...
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<RopeParameters>,
    /// ... transformers >= 5 only under `rope_parameters`.
    pub rope_parameters: Option<RopeParameters>,
    pub hidden_act: Option<String>,
    /// Gemma's name for `hidden_act` (read when that is absent).
    pub hidden_activation: Option<String>,
    pub attention_bias: Option<bool>,
    pub tie_word_embeddings: Option<bool>,
    pub use_sliding_window: Option<bool>,
    pub sliding_window: Option<usize>,
    /// Per layer, `"sliding_attention"` or `"full_attention"`.
    pub layer_types: Option<Vec<String>>,
    pub query_pre_attn_scalar: Option<f64>,
    pub attn_logit_softcapping: Option<f64>,
    pub final_logit_softcapping: Option<f64>,
    #[serde(deserialize_with = "token_ids")]
    pub bos_token_id: Vec<u32>,
    #[serde(deserialize_with = "token_ids")]
    pub eos_token_id: Vec<u32>,
}

/// `generation_config.json`: only its EOS ids matter here.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct HfGenerationConfig {
    #[serde(deserialize_with = "token_ids")]
    pub eos_token_id: Vec<u32>,
}

/// Rope settings (`rope_scaling`, or `rope_parameters`, flat or per layer type).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RopeParameters {
    pub rope_type: Option<String>,
    /// Older files' name for `rope_type`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub rope_theta: Option<f64>,
    pub factor: Option<f64>,
    pub low_freq_factor: Option<f64>,
    pub high_freq_factor: Option<f64>,
    pub original_max_position_embeddings: Option<f64>,
    /// Anything else, e.g. per-layer-type parameters (`{"full_attention": {...}}`).
    #[serde(flatten)]
    pub other: BTreeMap<String, Json>,
}

impl RopeParameters {
    /// `rope_theta`, flat or from any per-layer-type entry.
    fn theta(&self) -> Option<f64> {
        self.rope_theta.or_else(|| {
            self.other
                .values()
                .find_map(|v| v.get("rope_theta").and_then(Json::as_f64))
        })
    }

    fn llama3_scaling(&self) -> Result<Option<Llama3RopeScaling>> {
        let kind = self.rope_type.as_deref().or(self.kind.as_deref());
        match kind.unwrap_or("default") {
            "default" => Ok(None),
            "llama3" => {
                let f = |v: Option<f64>, k: &str| {
                    v.ok_or_else(|| Error::Config(format!("llama3 rope scaling has no `{k}`")))
                };
                Ok(Some(Llama3RopeScaling {
                    factor: f(self.factor, "factor")?,
                    low_freq_factor: f(self.low_freq_factor, "low_freq_factor")?,
                    high_freq_factor: f(self.high_freq_factor, "high_freq_factor")?,
                    original_max_position_embeddings: f(
                        self.original_max_position_embeddings,
                        "original_max_position_embeddings",
                    )?,
                }))
            }
            other => Err(Error::Config(format!(
                "unsupported rope scaling type `{other}` (supported: default, llama3)"
            ))),
        }
    }
}

/// A token id or a list of them (non-integers ignored, as transformers tolerates `null`).
fn token_ids<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<u32>, D::Error> {
    Ok(match Json::deserialize(d)? {
        Json::Number(n) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Json::Array(a) => a
            .iter()
            .filter_map(Json::as_u64)
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    })
}

fn required(v: Option<usize>, key: &str) -> Result<usize> {
    v.ok_or_else(|| Error::Config(format!("config.json has no integer `{key}`")))
}

impl HfConfig {
    /// The architecture this config describes, with transformers' defaults for absent keys.
    pub fn into_arch(self, generation: Option<&HfGenerationConfig>) -> Result<Arch> {
        let family = self.family()?;
        let is_gemma = family == Family::Gemma2;
        let hidden_size = required(self.hidden_size, "hidden_size")?;
        let num_heads = required(self.num_attention_heads, "num_attention_heads")?;
        let num_layers = required(self.num_hidden_layers, "num_hidden_layers")?;
        let head_dim = self.head_dim.unwrap_or(hidden_size / num_heads.max(1));
        let sliding_window = self.sliding_window(is_gemma);
        let gemma = |v: Option<f64>| v.filter(|_| is_gemma);
        let mut eos_token_ids = self.eos_token_id.clone();
        for &id in generation.map_or(&[][..], |g| &g.eos_token_id) {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
        Arch {
            family,
            vocab_size: required(self.vocab_size, "vocab_size")?,
            hidden_size,
            num_layers,
            num_heads,
            num_kv_heads: self.num_key_value_heads.unwrap_or(num_heads),
            head_dim,
            intermediate_size: required(self.intermediate_size, "intermediate_size")?,
            rms_norm_eps: self.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: self.rope_theta()?,
            rope_style: RopeStyle::RotateHalf,
            rope_scaling: self.rope_scaling()?,
            max_position_embeddings: self.max_position_embeddings.unwrap_or(4096),
            qkv_bias: family == Family::Qwen2 || self.attention_bias.unwrap_or(false),
            activation: self.activation(is_gemma)?,
            // transformers' defaults when the key is absent: Llama and Qwen2 untied, Gemma 2
            // tied. The loader also ties when the checkpoint has no `lm_head.weight`.
            tie_word_embeddings: self.tie_word_embeddings.unwrap_or(is_gemma),
            attn_scale: match gemma(self.query_pre_attn_scalar) {
                Some(s) => s.powf(-0.5),
                None => (head_dim as f64).powf(-0.5),
            },
            attn_logit_softcap: gemma(self.attn_logit_softcapping),
            final_logit_softcap: gemma(self.final_logit_softcapping),
            sliding_layers: self.sliding_layers(is_gemma, num_layers, sliding_window),
            sliding_window,
            sandwich_norms: is_gemma,
            embedding_scale: is_gemma.then(|| (hidden_size as f64).sqrt()),
            norm_weight_offset: if is_gemma { 1.0 } else { 0.0 },
            bos_token_id: self.bos_token_id.first().copied(),
            eos_token_ids,
        }
        .check()
    }

    fn family(&self) -> Result<Family> {
        let architectures = self.architectures.as_deref().unwrap_or_default();
        if let Some(f) = architectures
            .iter()
            .find_map(|a| Family::from_hf_architecture(a))
        {
            return Ok(f);
        }
        let model_type = self.model_type.as_deref();
        if architectures.is_empty() {
            if let Some(f) = model_type.and_then(Family::from_model_type) {
                return Ok(f);
            }
        }
        let found = if architectures.is_empty() {
            model_type.unwrap_or("<none given>").to_string()
        } else {
            architectures.join(", ")
        };
        Err(Error::UnsupportedArchitecture {
            found,
            supported: SUPPORTED.into(),
        })
    }

    /// Never a silent default: a config without it is an error.
    fn rope_theta(&self) -> Result<f64> {
        self.rope_theta
            .or_else(|| self.rope_parameters.as_ref().and_then(RopeParameters::theta))
            .ok_or_else(|| {
                Error::Config("config.json has no `rope_theta` (neither at the top level nor under `rope_parameters`)".into())
            })
    }

    fn rope_scaling(&self) -> Result<Option<Llama3RopeScaling>> {
        match self.rope_scaling.as_ref().or(self.rope_parameters.as_ref()) {
            Some(p) => p.llama3_scaling(),
            None => Ok(None),
        }
    }

    fn activation(&self, is_gemma: bool) -> Result<Activation> {
        let name = self
            .hidden_act
            .as_deref()
            .or(self.hidden_activation.as_deref());
        let name = name.unwrap_or(if is_gemma {
            "gelu_pytorch_tanh"
        } else {
            "silu"
        });
        match name {
            "silu" | "swish" => Ok(Activation::Silu),
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Ok(Activation::GeluTanh),
            other => Err(Error::Config(format!("unsupported activation `{other}`"))),
        }
    }

    /// Gemma 2 always has a window; other families when `use_sliding_window` says so.
    fn sliding_window(&self, is_gemma: bool) -> Option<usize> {
        let used = is_gemma || self.use_sliding_window == Some(true);
        self.sliding_window.filter(|_| used)
    }

    fn sliding_layers(
        &self,
        is_gemma: bool,
        num_layers: usize,
        window: Option<usize>,
    ) -> Vec<bool> {
        match &self.layer_types {
            Some(types) => types.iter().map(|t| t == "sliding_attention").collect(),
            // Gemma 2: even layers are local (HF `not bool(layer_idx % 2)`).
            None if is_gemma => (0..num_layers).map(|l| l % 2 == 0).collect(),
            None => vec![window.is_some(); num_layers],
        }
    }
}

/// Inverse frequencies of the rotary embedding, with Llama-3 scaling when configured.
pub fn rope_inv_freq(arch: &Arch) -> Vec<f64> {
    let d = arch.head_dim;
    let base: Vec<f64> = (0..d / 2)
        .map(|i| 1.0 / arch.rope_theta.powf(2.0 * i as f64 / d as f64))
        .collect();
    let Some(s) = &arch.rope_scaling else {
        return base;
    };
    let low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
    let high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
    base.into_iter()
        .map(|f| {
            let wavelen = 2.0 * std::f64::consts::PI / f;
            if wavelen < high_wavelen {
                f
            } else if wavelen > low_wavelen {
                f / s.factor
            } else {
                let smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor)
                    / (s.high_freq_factor - s.low_freq_factor);
                (1.0 - smooth) * f / s.factor + smooth * f
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn qwen_config() -> Json {
        json!({"architectures": ["Qwen2ForCausalLM"], "vocab_size": 100, "hidden_size": 64,
               "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
               "intermediate_size": 128, "rms_norm_eps": 1e-6, "tie_word_embeddings": false,
               "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}})
    }

    #[test]
    fn rope_theta_read_from_rope_parameters() {
        let arch = Arch::from_hf_config(&qwen_config(), None).unwrap();
        assert_eq!(arch.rope_theta, 1e6);
        assert!(arch.qkv_bias);
        assert!(!arch.tie_word_embeddings);
    }

    #[test]
    fn missing_rope_theta_is_an_error_not_a_default() {
        let mut c = qwen_config();
        c.as_object_mut().unwrap().remove("rope_parameters");
        let err = Arch::from_hf_config(&c, None).unwrap_err().to_string();
        assert!(err.contains("rope_theta"), "{err}");
    }

    #[test]
    fn unknown_architecture_lists_supported_ones() {
        let mut c = qwen_config();
        c["architectures"] = json!(["FalconForCausalLM"]);
        let err = Arch::from_hf_config(&c, None).unwrap_err().to_string();
        assert!(
            err.contains("FalconForCausalLM") && err.contains("Qwen2ForCausalLM"),
            "{err}"
        );
    }

    #[test]
    fn eos_ids_from_generation_config_list() {
        let gen = json!({"eos_token_id": [151645, 151643]});
        let arch = Arch::from_hf_config(&qwen_config(), Some(&gen)).unwrap();
        assert_eq!(arch.eos_token_ids, vec![151645, 151643]);
    }

    #[test]
    fn llama3_scaling_lowers_only_low_frequencies() {
        let mut c = qwen_config();
        c["architectures"] = json!(["LlamaForCausalLM"]);
        c["rope_parameters"] = json!({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16});
        let arch = Arch::from_hf_config(&c, None).unwrap();
        let scaled = rope_inv_freq(&arch);
        let plain: Vec<f64> = (0..8)
            .map(|i| 1.0 / 500000f64.powf(2.0 * i as f64 / 16.0))
            .collect();
        // freq 1.0 has wavelength 2π, between high_wavelen 16/4 and low_wavelen 16/1: smoothed,
        // s = (16/2π − 1)/(4 − 1), f' = (1 − s)·f/8 + s·f = 0.576056…
        let s = (16.0 / (2.0 * std::f64::consts::PI) - 1.0) / 3.0;
        assert!((scaled[0] - ((1.0 - s) * plain[0] / 8.0 + s * plain[0])).abs() < 1e-12);
        assert!((scaled[0] - 0.5760564).abs() < 1e-6);
        // the lowest frequency has a wavelength far above 16: divided by the factor
        assert!((scaled[7] - plain[7] / 8.0).abs() < 1e-15);
    }
}
