//! A model written back as a Hugging Face folder (`model.safetensors`, `config.json`,
//! `tokenizer.json`, `tokenizer_config.json` with the chat template, `generation_config.json`),
//! with a [`Pruning`] applied, so a pruned model loads in transformers and anything else.
//!
//! Two forms: the default keeps every shape and zeroes the pruned heads' `o_proj` input columns
//! and the pruned MLPs' `down_proj` ([`Pruning::zero_weights`]): equal to zero ablation, loadable
//! by any tool. `physical` slices the pruned heads out of q/k/v/o (and Qwen2's biases) and
//! rewrites the head counts, which a stock config can express only when every layer keeps the
//! same number of query heads per KV group and the same KV heads count; removed MLPs stay zeroed.
//!
//! Weights are written in f32 under HF's tensor names. A llama-architecture GGUF keeps llama.cpp's
//! permuted Q/K rows (see `weights.rs`); they are permuted back to HF's order here, which is what
//! a folder's rotate-half rotary embedding expects. Gemma 2 norm weights go back to HF's `w` of
//! `(1 + w)`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};

use super::arch::{Activation, Family, RopeStyle};
use super::pruning::LayerHeads;
use super::weights::LayerWeights;
use super::{source, Arch, LoadOptions, Loaded, ModelSource, Pruning};
use crate::{Error, Result};

/// Writes `opts.model` (read again, in f32 on the CPU; `opts.pruning`, device and dtype are
/// ignored) with `pruning` applied as a Hugging Face folder in `dir` (created if needed).
pub fn write_hf_folder(
    opts: &LoadOptions,
    pruning: &Pruning,
    physical: bool,
    dir: &Path,
) -> Result<()> {
    let source = source::resolve(&opts.model, opts.offline)?;
    let cpu = Device::Cpu;
    let mut loaded = match &source {
        ModelSource::Gguf(path) => super::load_gguf(path, &cpu, DType::F32)?,
        ModelSource::Folder { dir, weights } => super::load_folder(dir, weights, &cpu, DType::F32)?,
    };
    pruning.validate(&loaded.arch)?;
    if loaded.weights.rope_freq_factors.is_some() && loaded.arch.rope_scaling.is_none() {
        return Err(Error::Pruning(
            "cannot export: this GGUF bakes Llama-3 rope factors into `rope_freqs.weight`, which a \
             config.json cannot state; export from the model's safetensors folder instead"
                .into(),
        ));
    }
    if physical {
        slice_physically(pruning, &mut loaded)?;
    } else {
        pruning.zero_weights(&loaded.arch, &mut loaded.weights)?;
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_weights(&loaded, &dir.join("model.safetensors"))?;
    write_json(&dir.join("config.json"), &config_json(&loaded.arch))?;
    write_json(
        &dir.join("generation_config.json"),
        &json!({
            "bos_token_id": loaded.arch.bos_token_id,
            "eos_token_id": loaded.arch.eos_token_ids,
        }),
    )?;
    let tok_path = dir.join("tokenizer.json");
    loaded
        .tokenizer
        .save(&tok_path, false)
        .map_err(|e| Error::Tokenizer(format!("{}: {e}", tok_path.display())))?;
    let template = &loaded.template;
    write_json(
        &dir.join("tokenizer_config.json"),
        &json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "chat_template": template.source(),
            "bos_token": template.bos_token(),
            "eos_token": template.eos_token(),
            "model_max_length": loaded.arch.max_position_embeddings,
            "clean_up_tokenization_spaces": false,
        }),
    )
}

/// The layout every layer shares when `pruning` can be expressed by a stock config: the same
/// number of kept KV heads and of query heads per kept KV head in every layer.
pub fn physical_layout(pruning: &Pruning, arch: &Arch) -> Result<(usize, usize)> {
    pruning.validate(arch)?;
    let why = |detail: String| {
        Error::Pruning(format!(
            "--physical cannot express this pruning: {detail}. A stock config has one \
             num_attention_heads and num_key_value_heads for every layer, so every layer must keep \
             the same number of KV heads and the same number of query heads per kept KV head. \
             Prune whole KV groups or the same number of heads per group in every layer, or use \
             the default (zeroed) export, which keeps the shapes"
        ))
    };
    let mut shared: Option<(usize, usize)> = None;
    for l in 0..arch.num_layers {
        let heads: LayerHeads = pruning.layer_heads(arch, l);
        if heads.query.is_empty() {
            return Err(why(format!("layer {l} keeps no head")));
        }
        let Some(rep) = heads.group_size() else {
            let per_group: Vec<usize> = (0..heads.kv.len())
                .map(|g| heads.kv_of_query.iter().filter(|&&k| k == g).count())
                .collect();
            return Err(why(format!(
                "layer {l} keeps {per_group:?} query heads in its KV groups"
            )));
        };
        let this = (heads.kv.len(), rep);
        match shared {
            Some(s) if s != this => {
                return Err(why(format!(
                    "layer {l} keeps {} KV heads × {} query heads, an earlier layer {} × {}",
                    this.0, this.1, s.0, s.1
                )))
            }
            _ => shared = Some(this),
        }
    }
    shared.ok_or_else(|| why("the model has no layers".into()))
}

/// Slices the kept heads' weights and rewrites the head counts; removed MLPs are zeroed.
fn slice_physically(pruning: &Pruning, loaded: &mut Loaded) -> Result<()> {
    let arch = &mut loaded.arch;
    let (kv, rep) = physical_layout(pruning, arch)?;
    let heads_only = Pruning {
        heads: pruning.heads.clone(),
        mlps: Default::default(),
    };
    heads_only.slice_weights(arch, &mut loaded.weights)?;
    let mlps_only = Pruning {
        heads: Default::default(),
        mlps: pruning.mlps.clone(),
    };
    mlps_only.zero_weights(arch, &mut loaded.weights)?;
    arch.num_heads = kv * rep;
    arch.num_kv_heads = kv;
    Ok(())
}

/// Every tensor under its HF name, in f32.
fn write_weights(loaded: &Loaded, path: &Path) -> Result<()> {
    let (arch, w) = (&loaded.arch, &loaded.weights);
    let mut out: HashMap<String, Tensor> = HashMap::new();
    let mut put = |name: String, t: Tensor| -> Result<()> {
        out.insert(name, t.to_dtype(DType::F32)?.contiguous()?);
        Ok(())
    };
    put("model.embed_tokens.weight".into(), w.embed.clone())?;
    put("model.norm.weight".into(), hf_norm(arch, &w.final_norm)?)?;
    if !arch.tie_word_embeddings {
        put("lm_head.weight".into(), w.lm_head.tensor().clone())?;
    }
    for (l, layer) in w.layers.iter().enumerate() {
        for (name, t) in layer_tensors(arch, layer)? {
            put(format!("model.layers.{l}.{name}"), t)?;
        }
    }
    candle_core::safetensors::save(&out, path)
        .map_err(|e| Error::Pruning(format!("{}: {e}", path.display())))
}

/// One layer's tensors under HF's names (relative to `model.layers.{l}`).
fn layer_tensors(arch: &Arch, lw: &LayerWeights) -> Result<Vec<(String, Tensor)>> {
    let (dh, ff) = (arch.head_dim, arch.intermediate_size);
    let (q_rows, kv_rows) = (arch.num_heads * dh, arch.num_kv_heads * dh);
    let split = |t: &Tensor| -> Result<[Tensor; 3]> {
        Ok([
            t.narrow(0, 0, q_rows)?,
            t.narrow(0, q_rows, kv_rows)?,
            t.narrow(0, q_rows + kv_rows, kv_rows)?,
        ])
    };
    let [q, k, v] = split(&lw.qkv_weight)?;
    let (q, k) = (hf_rows(arch, &q)?, hf_rows(arch, &k)?);
    let mut out = vec![
        ("self_attn.q_proj.weight".to_string(), q),
        ("self_attn.k_proj.weight".into(), k),
        ("self_attn.v_proj.weight".into(), v),
        (
            "self_attn.o_proj.weight".into(),
            lw.o_weight.tensor().clone(),
        ),
        (
            "mlp.gate_proj.weight".into(),
            lw.gate_up_weight.narrow(0, 0, ff)?,
        ),
        (
            "mlp.up_proj.weight".into(),
            lw.gate_up_weight.narrow(0, ff, ff)?,
        ),
        (
            "mlp.down_proj.weight".into(),
            lw.down_weight.tensor().clone(),
        ),
        (
            "input_layernorm.weight".into(),
            hf_norm(arch, &lw.attn_norm)?,
        ),
    ];
    if let Some(bias) = &lw.qkv_bias {
        let [q, k, v] = split(bias)?;
        out.push(("self_attn.q_proj.bias".into(), hf_rows(arch, &q)?));
        out.push(("self_attn.k_proj.bias".into(), hf_rows(arch, &k)?));
        out.push(("self_attn.v_proj.bias".into(), v));
    }
    let gemma = arch.family == Family::Gemma2;
    let mlp_norm = if gemma {
        "pre_feedforward_layernorm"
    } else {
        "post_attention_layernorm"
    };
    out.push((format!("{mlp_norm}.weight"), hf_norm(arch, &lw.mlp_norm)?));
    if let Some(n) = &lw.post_attn_norm {
        out.push(("post_attention_layernorm.weight".into(), hf_norm(arch, n)?));
    }
    if let Some(n) = &lw.post_mlp_norm {
        out.push((
            "post_feedforward_layernorm.weight".into(),
            hf_norm(arch, n)?,
        ));
    }
    Ok(out)
}

/// Q or K rows (or biases) in HF's order: llama.cpp's converter permuted each head's rows of a
/// llama-architecture GGUF (`reshape(n_head, 2, d_h/2, ..).swapaxes(1, 2)`); this undoes it.
fn hf_rows(arch: &Arch, t: &Tensor) -> Result<Tensor> {
    if arch.rope_style != RopeStyle::Interleaved {
        return Ok(t.clone());
    }
    let dh = arch.head_dim;
    let rows = t.dims()[0];
    let rest: Vec<usize> = t.dims()[1..].to_vec();
    let mut shape = vec![rows / dh, dh / 2, 2];
    shape.extend(&rest);
    let unpermuted = t.reshape(shape)?.transpose(1, 2)?.contiguous()?;
    let mut flat = vec![rows];
    flat.extend(rest);
    Ok(unpermuted.reshape(flat)?)
}

/// Norm weights as HF stores them (Gemma 2: `w` of `1 + w`; the engine holds `1 + w`).
fn hf_norm(arch: &Arch, w: &Tensor) -> Result<Tensor> {
    Ok(if arch.family == Family::Gemma2 {
        (w - 1.0)?
    } else {
        w.clone()
    })
}

/// `config.json` for `arch`, with an explicit `head_dim` and the rope settings both where
/// transformers ≥ 5 reads them (`rope_parameters`) and at the top level (`rope_theta`).
pub fn config_json(arch: &Arch) -> Value {
    let (architecture, model_type) = match arch.family {
        Family::Llama => ("LlamaForCausalLM", "llama"),
        Family::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
        Family::Gemma2 => ("Gemma2ForCausalLM", "gemma2"),
    };
    let act = match arch.activation {
        Activation::Silu => "silu",
        Activation::GeluTanh => "gelu_pytorch_tanh",
    };
    let mut rope = json!({"rope_type": "default", "rope_theta": arch.rope_theta});
    if let Some(s) = &arch.rope_scaling {
        rope = json!({
            "rope_type": "llama3",
            "rope_theta": arch.rope_theta,
            "factor": s.factor,
            "low_freq_factor": s.low_freq_factor,
            "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_max_position_embeddings,
        });
    }
    let mut c = json!({
        "architectures": [architecture],
        "model_type": model_type,
        "vocab_size": arch.vocab_size,
        "hidden_size": arch.hidden_size,
        "intermediate_size": arch.intermediate_size,
        "num_hidden_layers": arch.num_layers,
        "num_attention_heads": arch.num_heads,
        "num_key_value_heads": arch.num_kv_heads,
        "head_dim": arch.head_dim,
        "rms_norm_eps": arch.rms_norm_eps,
        "rope_theta": arch.rope_theta,
        "rope_parameters": rope,
        "max_position_embeddings": arch.max_position_embeddings,
        "tie_word_embeddings": arch.tie_word_embeddings,
        "bos_token_id": arch.bos_token_id,
        "eos_token_id": arch.eos_token_ids,
        "torch_dtype": "float32",
        "dtype": "float32",
    });
    let extra = match arch.family {
        Family::Llama => json!({
            "hidden_act": act,
            "attention_bias": arch.qkv_bias,
            "mlp_bias": false,
        }),
        Family::Qwen2 => json!({
            "hidden_act": act,
            "use_sliding_window": false,
        }),
        Family::Gemma2 => json!({
            "hidden_activation": act,
            "hidden_act": act,
            "query_pre_attn_scalar": integer_if_near(arch.attn_scale.powi(-2)),
            "attn_logit_softcapping": arch.attn_logit_softcap,
            "final_logit_softcapping": arch.final_logit_softcap,
            "sliding_window": arch.sliding_window,
            "layer_types": arch.sliding_layers.iter().map(|&s| {
                if s { "sliding_attention" } else { "full_attention" }
            }).collect::<Vec<_>>(),
        }),
    };
    if let (Some(c), Value::Object(extra)) = (c.as_object_mut(), extra) {
        c.extend(extra);
    }
    c
}

/// `x` as an integer when within 1e-6 of one (a scale's square, e.g. 24.000000000000004;
/// transformers' Gemma 2 config insists on an int `query_pre_attn_scalar`).
fn integer_if_near(x: f64) -> Value {
    if (x - x.round()).abs() < 1e-6 {
        json!(x.round() as i64)
    } else {
        json!(x)
    }
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Pruning(e.to_string()))?;
    std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
}
