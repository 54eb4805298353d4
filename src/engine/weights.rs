//! Weights from Hugging Face safetensors (single or sharded) or from a GGUF file, dequantized to the
//! working dtype and arranged for the generic transformer.
//!
//! Both formats go through one table of roles (`Role`) so the two loaders cannot drift apart.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::{gguf_file, QTensor};
use candle_core::{DType, Device, Tensor};

use super::arch::{Arch, Family};
use super::packed::PackedRows;
use crate::{Error, Result};

/// A weight matrix `[n, k]` (`y = x·Wᵀ`): its working tensor and, from a GGUF file's plain block
/// types in f32 on the CPU, the same values in their integer form, which decoding's few-row
/// products read instead ([`super::packed`]). Whatever changes the tensor makes a new `Weight`
/// from it (`From<Tensor>`), which has no integer form, so the two never disagree.
#[derive(Clone, Debug)]
pub struct Weight {
    tensor: Tensor,
    packed: Option<Arc<PackedRows>>,
}

impl Weight {
    /// `tensor` with `packed` when that is its integer form's shape and the tensor is f32 on the CPU.
    fn with_packed(tensor: Tensor, packed: Option<PackedRows>) -> Weight {
        let fits = |p: &PackedRows| {
            tensor.dims() == [p.rows(), p.cols()]
                && tensor.dtype() == DType::F32
                && tensor.device().is_cpu()
        };
        Weight {
            packed: packed.filter(fits).map(Arc::new),
            tensor,
        }
    }

    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }

    /// The integer form, when kept.
    pub fn packed(&self) -> Option<&PackedRows> {
        self.packed.as_deref()
    }

    /// The rows `keep`, in that order (the integer form follows).
    pub fn select_rows(&self, keep: &[u32]) -> Result<Weight> {
        self.select(keep, 0)
    }

    /// The columns `keep`, in that order (the integer form follows when they are whole blocks).
    pub fn select_columns(&self, keep: &[u32]) -> Result<Weight> {
        self.select(keep, 1)
    }

    fn select(&self, keep: &[u32], dim: usize) -> Result<Weight> {
        let idx = Tensor::new(keep, self.tensor.device())?;
        let picked: Vec<usize> = keep.iter().map(|&i| i as usize).collect();
        let packed = self.packed().and_then(|p| match dim {
            0 => p.select_rows(&picked),
            _ => p.select_columns(&picked),
        });
        Ok(Weight::with_packed(
            self.tensor.index_select(&idx, dim)?,
            packed,
        ))
    }
}

impl From<Tensor> for Weight {
    fn from(tensor: Tensor) -> Weight {
        Weight {
            tensor,
            packed: None,
        }
    }
}

impl std::ops::Deref for Weight {
    type Target = Tensor;
    fn deref(&self) -> &Tensor {
        &self.tensor
    }
}

/// Weights of one decoder block. Q/K/V and gate/up are fused so each is one matmul.
pub struct LayerWeights {
    pub attn_norm: Tensor,
    /// `[(H + 2·H_kv)·d_h, d]`, rows in the order q, k, v.
    pub qkv_weight: Weight,
    pub qkv_bias: Option<Tensor>,
    /// `o_proj.weight`, `[d, H·d_h]` (HF layout, y = x·Wᵀ).
    pub o_weight: Weight,
    /// Gemma 2 sandwich norm after attention.
    pub post_attn_norm: Option<Tensor>,
    /// The norm before the MLP (Llama/Qwen2 `post_attention_layernorm`, Gemma 2 `pre_feedforward_layernorm`).
    pub mlp_norm: Tensor,
    /// Gemma 2 sandwich norm after the MLP.
    pub post_mlp_norm: Option<Tensor>,
    /// `[2·ff, d]`: gate rows then up rows.
    pub gate_up_weight: Weight,
    pub down_weight: Weight,
}

pub struct ModelWeights {
    pub embed: Tensor,
    pub layers: Vec<LayerWeights>,
    pub final_norm: Tensor,
    /// `[vocab, d]`; the embedding matrix itself when tied.
    pub lm_head: Weight,
    /// llama.cpp's baked Llama-3 rope frequency divisors (`rope_freqs.weight`), if present.
    pub rope_freq_factors: Option<Vec<f32>>,
}

#[derive(Clone, Copy)]
enum Role {
    AttnNorm,
    Q,
    K,
    V,
    O,
    PostAttnNorm,
    MlpNorm,
    PostMlpNorm,
    Gate,
    Up,
    Down,
}

fn hf_name(family: Family, layer: usize, role: Role, bias: bool) -> String {
    let p = format!("model.layers.{layer}");
    let suffix = if bias { "bias" } else { "weight" };
    let gemma = family == Family::Gemma2;
    let body = match role {
        Role::AttnNorm => "input_layernorm",
        Role::Q => "self_attn.q_proj",
        Role::K => "self_attn.k_proj",
        Role::V => "self_attn.v_proj",
        Role::O => "self_attn.o_proj",
        Role::PostAttnNorm => "post_attention_layernorm",
        Role::MlpNorm if gemma => "pre_feedforward_layernorm",
        Role::MlpNorm => "post_attention_layernorm",
        Role::PostMlpNorm => "post_feedforward_layernorm",
        Role::Gate => "mlp.gate_proj",
        Role::Up => "mlp.up_proj",
        Role::Down => "mlp.down_proj",
    };
    format!("{p}.{body}.{suffix}")
}

fn gguf_name(layer: usize, role: Role, bias: bool) -> String {
    let suffix = if bias { "bias" } else { "weight" };
    let body = match role {
        Role::AttnNorm => "attn_norm",
        Role::Q => "attn_q",
        Role::K => "attn_k",
        Role::V => "attn_v",
        Role::O => "attn_output",
        Role::PostAttnNorm => "post_attention_norm",
        Role::MlpNorm => "ffn_norm",
        Role::PostMlpNorm => "post_ffw_norm",
        Role::Gate => "ffn_gate",
        Role::Up => "ffn_up",
        Role::Down => "ffn_down",
    };
    format!("blk.{layer}.{body}.{suffix}")
}

/// Where tensors come from: a name → tensor lookup over one file format.
trait TensorStore {
    fn path(&self) -> &Path;
    fn contains(&self, name: &str) -> bool;
    /// Loads a tensor as f32 on the CPU.
    fn load(&mut self, name: &str) -> Result<Tensor>;
    /// Loads tensors as f32 on the CPU, concatenated along their first dimension (the fused Q/K/V
    /// and gate/up weights), with each part's shape and, when `integer_form` asks for it and the
    /// file has one, the whole's integer form.
    fn load_cat(&mut self, names: &[&str], _integer_form: bool) -> Result<Stacked> {
        let parts = names
            .iter()
            .map(|n| self.load(n))
            .collect::<Result<Vec<_>>>()?;
        Ok(Stacked {
            shapes: parts.iter().map(|t| t.dims().to_vec()).collect(),
            tensor: Tensor::cat(&parts, 0)?,
            packed: None,
        })
    }
}

/// Tensors loaded and concatenated by rows ([`TensorStore::load_cat`]).
struct Stacked {
    tensor: Tensor,
    shapes: Vec<Vec<usize>>,
    packed: Option<PackedRows>,
}

struct Loader<'a, S: TensorStore> {
    store: S,
    arch: &'a Arch,
    device: &'a Device,
    dtype: DType,
    name: fn(Family, usize, Role, bool) -> String,
}

impl<S: TensorStore> Loader<'_, S> {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        if !self.store.contains(name) {
            return Err(Error::invalid_model(
                self.store.path(),
                format!("missing tensor `{name}`"),
            ));
        }
        let t = self.store.load(name)?;
        if t.dims() != shape {
            return Err(Error::invalid_model(
                self.store.path(),
                format!(
                    "tensor `{name}` has shape {:?}, expected {:?}",
                    t.dims(),
                    shape
                ),
            ));
        }
        Ok(t)
    }

    /// The tensors `parts` (name, expected shape) concatenated along their first dimension.
    fn stacked(&mut self, parts: &[(String, Vec<usize>)]) -> Result<Tensor> {
        Ok(self.load_parts(parts, false)?.tensor)
    }

    /// The weight matrix of `parts` (name, expected shape) concatenated by rows, in the working
    /// dtype and device, with its integer form where the file has one.
    fn matrix(&mut self, parts: &[(String, Vec<usize>)]) -> Result<Weight> {
        let s = self.load_parts(parts, true)?;
        Ok(Weight::with_packed(self.finish(s.tensor)?, s.packed))
    }

    /// [`Loader::stacked`], with the integer form too when `integer_form` asks for it.
    fn load_parts(
        &mut self,
        parts: &[(String, Vec<usize>)],
        integer_form: bool,
    ) -> Result<Stacked> {
        if let Some((name, _)) = parts.iter().find(|(n, _)| !self.store.contains(n)) {
            return Err(Error::invalid_model(
                self.store.path(),
                format!("missing tensor `{name}`"),
            ));
        }
        let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
        let loaded = self.store.load_cat(&names, integer_form)?;
        for ((name, shape), got) in parts.iter().zip(&loaded.shapes) {
            if got != shape {
                return Err(Error::invalid_model(
                    self.store.path(),
                    format!("tensor `{name}` has shape {got:?}, expected {shape:?}"),
                ));
            }
        }
        Ok(loaded)
    }

    fn finish(&self, t: Tensor) -> Result<Tensor> {
        Ok(t.to_dtype(self.dtype)?.to_device(self.device)?)
    }

    fn norm(&mut self, name: &str) -> Result<Tensor> {
        let t = self.tensor(name, &[self.arch.hidden_size])?;
        let t = if self.arch.norm_weight_offset != 0.0 {
            (t + self.arch.norm_weight_offset)?
        } else {
            t
        };
        self.finish(t)
    }

    fn layer(&mut self, l: usize) -> Result<LayerWeights> {
        let a = self.arch;
        let (d, dh, ff) = (a.hidden_size, a.head_dim, a.intermediate_size);
        let n = self.name;
        let f = a.family;
        let (hq, hkv) = (a.num_heads * dh, a.num_kv_heads * dh);
        let qkv_parts = |bias: bool| -> Vec<(String, Vec<usize>)> {
            [(Role::Q, hq), (Role::K, hkv), (Role::V, hkv)]
                .into_iter()
                .map(|(r, rows)| {
                    let shape = if bias { vec![rows] } else { vec![rows, d] };
                    (n(f, l, r, bias), shape)
                })
                .collect()
        };
        let qkv_weight = self.matrix(&qkv_parts(false))?;
        let qkv_bias = if a.qkv_bias {
            let bias = self.stacked(&qkv_parts(true))?;
            Some(self.finish(bias)?)
        } else {
            None
        };
        let o_weight = self.matrix(&[(n(f, l, Role::O, false), vec![d, a.num_heads * dh])])?;
        let gate_up_weight = self.matrix(&[
            (n(f, l, Role::Gate, false), vec![ff, d]),
            (n(f, l, Role::Up, false), vec![ff, d]),
        ])?;
        let down_weight = self.matrix(&[(n(f, l, Role::Down, false), vec![d, ff])])?;
        let sandwich = a.sandwich_norms;
        Ok(LayerWeights {
            attn_norm: self.norm(&n(f, l, Role::AttnNorm, false))?,
            qkv_weight,
            qkv_bias,
            o_weight,
            post_attn_norm: if sandwich {
                Some(self.norm(&n(f, l, Role::PostAttnNorm, false))?)
            } else {
                None
            },
            mlp_norm: self.norm(&n(f, l, Role::MlpNorm, false))?,
            post_mlp_norm: if sandwich {
                Some(self.norm(&n(f, l, Role::PostMlpNorm, false))?)
            } else {
                None
            },
            gate_up_weight,
            down_weight,
        })
    }

    fn model(
        &mut self,
        embed: &str,
        final_norm: &str,
        lm_head: &str,
    ) -> Result<(ModelWeights, bool)> {
        let a = self.arch;
        let vocab = vec![a.vocab_size, a.hidden_size];
        let tied = !self.store.contains(lm_head);
        // The embedding's integer form only serves as the tied unembedding.
        let (embed, lm_head) = if tied {
            let embed = self.matrix(&[(embed.to_string(), vocab)])?;
            (embed.tensor().clone(), embed)
        } else {
            let embed = self.stacked(&[(embed.to_string(), vocab.clone())])?;
            let lm_head = self.matrix(&[(lm_head.to_string(), vocab)])?;
            (self.finish(embed)?, lm_head)
        };
        let layers = (0..a.num_layers)
            .map(|l| self.layer(l))
            .collect::<Result<Vec<_>>>()?;
        let final_norm = self.norm(final_norm)?;
        Ok((
            ModelWeights {
                embed,
                layers,
                final_norm,
                lm_head,
                rope_freq_factors: None,
            },
            tied,
        ))
    }
}

// ---------------------------------------------------------------- safetensors

struct SafetensorsStore {
    path: PathBuf,
    files: candle_core::safetensors::MmapedSafetensors,
    names: std::collections::HashSet<String>,
}

impl TensorStore for SafetensorsStore {
    fn path(&self) -> &Path {
        &self.path
    }
    fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }
    fn load(&mut self, name: &str) -> Result<Tensor> {
        let t = self
            .files
            .load(name, &Device::Cpu)
            .map_err(|e| Error::invalid_model(&self.path, format!("tensor `{name}`: {e}")))?;
        let dtype = t.dtype();
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16 | DType::F64) {
            return Err(Error::invalid_model(
                &self.path,
                format!("tensor `{name}` has unsupported dtype {dtype:?}"),
            ));
        }
        Ok(t.to_dtype(DType::F32)?)
    }
}

/// Loads HF safetensors files (one file, or every shard) for `arch`.
pub fn load_safetensors(
    files: &[PathBuf],
    arch: &mut Arch,
    device: &Device,
    dtype: DType,
) -> Result<ModelWeights> {
    let label = files.first().cloned().unwrap_or_default();
    for f in files {
        check_safetensors_header(f)?;
    }
    // SAFETY: the files are memory-mapped read-only; headers were validated above and candle
    // bounds-checks every tensor against the file length.
    let mmaped = unsafe { candle_core::safetensors::MmapedSafetensors::multi(files) }
        .map_err(|e| Error::invalid_model(&label, e.to_string()))?;
    let names = mmaped.tensors().into_iter().map(|(n, _)| n).collect();
    let store = SafetensorsStore {
        path: label,
        files: mmaped,
        names,
    };
    let snapshot = arch.clone();
    let mut loader = Loader {
        store,
        arch: &snapshot,
        device,
        dtype,
        name: hf_name,
    };
    let (weights, tied) = loader.model(
        "model.embed_tokens.weight",
        "model.norm.weight",
        "lm_head.weight",
    )?;
    arch.tie_word_embeddings = tied;
    Ok(weights)
}

/// A safetensors file starts with an 8-byte header length and a JSON header that must fit in the file.
fn check_safetensors_header(path: &Path) -> Result<()> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut n = [0u8; 8];
    if len < 8 || f.read_exact(&mut n).is_err() {
        return Err(Error::invalid_model(
            path,
            "file is empty or truncated (no safetensors header)",
        ));
    }
    let header_len = u64::from_le_bytes(n);
    if header_len > len - 8 {
        return Err(Error::invalid_model(
            path,
            "truncated safetensors file (header runs past the end)",
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    let json: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| Error::invalid_model(path, format!("corrupt safetensors header: {e}")))?;
    let data_len = len - 8 - header_len;
    if let Some(map) = json.as_object() {
        for (name, info) in map {
            if name == "__metadata__" {
                continue;
            }
            let end = info
                .get("data_offsets")
                .and_then(|o| o.get(1))
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            if end > data_len {
                return Err(Error::invalid_model(
                    path,
                    format!("truncated safetensors file: tensor `{name}` ends at byte {end} of a {data_len}-byte data section"),
                ));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- GGUF

pub struct GgufFile {
    pub path: PathBuf,
    pub content: gguf_file::Content,
    file: File,
}

impl GgufFile {
    /// Reads the header, metadata and tensor table, and checks that every tensor lies inside the file.
    pub fn open(path: &Path) -> Result<GgufFile> {
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len == 0 {
            return Err(Error::invalid_model(path, "file is empty"));
        }
        let content = gguf_file::Content::read(&mut file).map_err(|e| {
            let msg = e.to_string();
            if msg.contains("unknown dtype") {
                Error::invalid_model(path, format!("unsupported tensor type ({msg}); supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K…Q8_K"))
            } else {
                Error::invalid_model(path, format!("not a readable GGUF file (truncated or corrupt header): {msg}"))
            }
        })?;
        for (name, info) in &content.tensor_infos {
            let elems = info.shape.elem_count();
            let block = info.ggml_dtype.block_size();
            let bytes = (elems / block) * info.ggml_dtype.type_size();
            let end = content.tensor_data_offset + info.offset + bytes as u64;
            if end > len {
                return Err(Error::invalid_model(
                    path,
                    format!("truncated GGUF file: tensor `{name}` ends at byte {end}, the file has {len} bytes"),
                ));
            }
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            content,
            file,
        })
    }
}

struct GgufStore<'a> {
    gguf: &'a mut GgufFile,
    /// Whether to keep the plain block types' integer form too (f32 weights on the CPU).
    keep_packed: bool,
}

impl TensorStore for GgufStore<'_> {
    fn path(&self) -> &Path {
        &self.gguf.path
    }
    fn contains(&self, name: &str) -> bool {
        self.gguf.content.tensor_infos.contains_key(name)
    }
    fn load(&mut self, name: &str) -> Result<Tensor> {
        self.load_cat(&[name], false).map(|s| s.tensor)
    }

    /// Every part dequantized straight into its rows of one buffer, on rayon's threads: no
    /// concatenation copy (whose fresh pages were about half of a 1.5B load's page zeroing in one
    /// `perf` profile) and no single-threaded dequantization.
    fn load_cat(&mut self, names: &[&str], integer_form: bool) -> Result<Stacked> {
        let parts = names
            .iter()
            .map(|&name| self.quantized(name))
            .collect::<Result<Vec<_>>>()?;
        let shapes: Vec<Vec<usize>> = parts.iter().map(|q| q.shape().dims().to_vec()).collect();
        let (first, rest) = shapes
            .split_first()
            .ok_or_else(|| Error::invalid_model(&self.gguf.path, "no tensor to load"))?;
        if let Some(bad) = rest.iter().position(|s| s.get(1..) != first.get(1..)) {
            return Err(Error::invalid_model(
                &self.gguf.path,
                format!(
                    "tensor `{}` has shape {:?}, which cannot follow `{}`'s {first:?}",
                    names[bad + 1],
                    rest[bad],
                    names[0]
                ),
            ));
        }
        let sizes: Vec<usize> = parts.iter().map(|q| q.shape().elem_count()).collect();
        let mut out = vec![0f32; sizes.iter().sum()];
        let mut slices = Vec::with_capacity(parts.len());
        let mut rest_out = out.as_mut_slice();
        for &n in &sizes {
            let (head, tail) = rest_out.split_at_mut(n);
            slices.push(head);
            rest_out = tail;
        }
        for (q, ys) in parts.iter().zip(slices) {
            if !dequantize_in_parallel(q, ys)? {
                let t = q.dequantize(&Device::Cpu)?.flatten_all()?;
                ys.copy_from_slice(&t.to_vec1::<f32>()?);
            }
        }
        let packed = match self.keep_packed && integer_form {
            true => parts
                .iter()
                .map(PackedRows::from_qtensor)
                .collect::<candle_core::Result<Option<Vec<_>>>>()?
                .and_then(PackedRows::stack),
            false => None,
        };
        let mut dims = first.clone();
        dims[0] = shapes.iter().map(|s| s[0]).sum();
        Ok(Stacked {
            tensor: Tensor::from_vec(out, dims, &Device::Cpu)?,
            shapes,
            packed,
        })
    }
}

impl GgufStore<'_> {
    fn quantized(&mut self, name: &str) -> Result<QTensor> {
        let g = &mut *self.gguf;
        g.file
            .seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(&g.path, e))?;
        g.content
            .tensor(&mut g.file, name, &Device::Cpu)
            .map_err(|e| Error::invalid_model(&g.path, format!("tensor `{name}`: {e}")))
    }
}

/// Dequantizes `q` into `ys` over rayon's threads (candle's `dequantize` runs on one); `false`
/// for a block type not listed here, which the caller dequantizes the plain way.
fn dequantize_in_parallel(q: &QTensor, ys: &mut [f32]) -> Result<bool> {
    use candle_core::quantized::k_quants::*;
    use candle_core::quantized::GgmlDType as G;
    let bytes = q.data()?;
    Ok(match q.dtype() {
        G::F32 => blocks_to_f32::<f32>(&bytes, ys),
        G::Q4_0 => blocks_to_f32::<BlockQ4_0>(&bytes, ys),
        G::Q4_1 => blocks_to_f32::<BlockQ4_1>(&bytes, ys),
        G::Q5_0 => blocks_to_f32::<BlockQ5_0>(&bytes, ys),
        G::Q5_1 => blocks_to_f32::<BlockQ5_1>(&bytes, ys),
        G::Q8_0 => blocks_to_f32::<BlockQ8_0>(&bytes, ys),
        G::Q2K => blocks_to_f32::<BlockQ2K>(&bytes, ys),
        G::Q3K => blocks_to_f32::<BlockQ3K>(&bytes, ys),
        G::Q4K => blocks_to_f32::<BlockQ4K>(&bytes, ys),
        G::Q5K => blocks_to_f32::<BlockQ5K>(&bytes, ys),
        G::Q6K => blocks_to_f32::<BlockQ6K>(&bytes, ys),
        _ => false,
    })
}

/// `T::to_float` over chunks of blocks in parallel; `false` (nothing written) when `bytes` is not
/// a whole, aligned run of `T` blocks holding exactly `ys.len()` values.
fn blocks_to_f32<T: candle_core::quantized::k_quants::GgmlType>(
    bytes: &[u8],
    ys: &mut [f32],
) -> bool {
    use rayon::prelude::*;
    let size = std::mem::size_of::<T>();
    let aligned = (bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>());
    if size == 0
        || !aligned
        || !bytes.len().is_multiple_of(size)
        || bytes.len() / size * T::BLCK_SIZE != ys.len()
    {
        return false;
    }
    // SAFETY: `QTensor::data` borrows candle's own `Vec<T>` of blocks (alignment and length
    // checked above); the block types are plain `repr(C)` numbers, valid for any bytes.
    let blocks =
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), bytes.len() / size) };
    const BLOCKS_PER_TASK: usize = 1024;
    ys.par_chunks_mut(BLOCKS_PER_TASK * T::BLCK_SIZE)
        .zip(blocks.par_chunks(BLOCKS_PER_TASK))
        .for_each(|(y, x)| T::to_float(x, y));
    true
}

fn gguf_layer_name(_: Family, layer: usize, role: Role, bias: bool) -> String {
    gguf_name(layer, role, bias)
}

/// Loads and dequantizes every tensor of a GGUF file for `arch`.
pub fn load_gguf(
    gguf: &mut GgufFile,
    arch: &mut Arch,
    device: &Device,
    dtype: DType,
) -> Result<ModelWeights> {
    let snapshot = arch.clone();
    let freq_factors = if gguf.content.tensor_infos.contains_key("rope_freqs.weight") {
        let mut store = GgufStore {
            gguf,
            keep_packed: false,
        };
        Some(
            store
                .load("rope_freqs.weight")?
                .flatten_all()?
                .to_vec1::<f32>()?,
        )
    } else {
        None
    };
    let mut loader = Loader {
        store: GgufStore {
            gguf,
            keep_packed: device.is_cpu() && dtype == DType::F32,
        },
        arch: &snapshot,
        device,
        dtype,
        name: gguf_layer_name,
    };
    let (mut weights, tied) =
        loader.model("token_embd.weight", "output_norm.weight", "output.weight")?;
    if let Some(f) = &freq_factors {
        if f.len() != snapshot.head_dim / 2 {
            return Err(Error::invalid_model(
                &gguf.path,
                format!(
                    "rope_freqs.weight has {} entries, expected {}",
                    f.len(),
                    snapshot.head_dim / 2
                ),
            ));
        }
    }
    weights.rope_freq_factors = freq_factors;
    arch.tie_word_embeddings = tied;
    Ok(weights)
}

/// GGUF metadata as a plain map (what the tokenizer and the architecture readers take).
pub fn gguf_metadata(g: &GgufFile) -> &HashMap<String, gguf_file::Value> {
    &g.content.metadata
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// A weight's integer form follows row and column selections (a pruned model's slices) and is
    /// dropped by anything else that makes a new tensor.
    #[test]
    fn a_weights_integer_form_follows_its_selections_and_is_dropped_by_changes() {
        use super::{PackedRows, Weight};
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (6, 128), &dev).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        let packed = PackedRows::from_qtensor(&q).unwrap();
        let weight = Weight::with_packed(q.dequantize(&dev).unwrap(), packed);
        let agrees = |w: &Weight| {
            let p = w.packed().expect("kept");
            let rows = w.tensor().to_vec2::<f32>().unwrap();
            for (r, want) in rows.iter().enumerate() {
                let mut got = vec![0f32; p.cols()];
                p.dequantize_row(r, &mut got);
                assert_eq!(&got, want, "row {r}");
            }
        };
        agrees(&weight);
        agrees(&weight.select_rows(&[5, 0, 3]).unwrap());
        let head: Vec<u32> = (64..128).collect();
        agrees(&weight.select_columns(&head).unwrap());
        // Columns that split a block keep the tensor only.
        let split: Vec<u32> = (16..48).collect();
        let sliced = weight.select_columns(&split).unwrap();
        assert!(sliced.packed().is_none());
        assert_eq!(sliced.dims(), &[6, 32]);
        let scaled: Weight = (weight.tensor() * 2.0).unwrap().into();
        assert!(scaled.packed().is_none());
        // Another dtype than f32 keeps no integer form.
        let half = Weight::with_packed(
            weight.tensor().to_dtype(candle_core::DType::BF16).unwrap(),
            weight.packed().cloned(),
        );
        assert!(half.packed().is_none());
    }

    /// The parallel dequantization writes exactly what candle's own gives, for every block type
    /// it handles, over more blocks than one task takes (so the chunks' seams are crossed).
    #[test]
    fn parallel_dequantization_equals_candles() {
        let n = 3 * 1024 * 256 + 512;
        let values: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1001) as f32 / 97.0 - 5.0)
            .collect();
        let x = Tensor::from_vec(values, (n / 512, 512), &Device::Cpu).unwrap();
        for dtype in [
            GgmlDType::F32,
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q8_0,
            GgmlDType::Q2K,
            GgmlDType::Q3K,
            GgmlDType::Q4K,
            GgmlDType::Q5K,
            GgmlDType::Q6K,
        ] {
            let q = QTensor::quantize(&x, dtype).unwrap();
            let plain = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let mut parallel = vec![f32::NAN; n];
            assert!(
                super::dequantize_in_parallel(&q, &mut parallel).unwrap(),
                "{dtype:?}"
            );
            assert!(
                plain
                    .iter()
                    .zip(&parallel)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{dtype:?}"
            );
            // A buffer of the wrong length is refused, not half written.
            let mut short = vec![0f32; n - 1];
            assert!(
                !super::dequantize_in_parallel(&q, &mut short).unwrap(),
                "{dtype:?}"
            );
        }
    }
}
