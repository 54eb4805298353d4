//! A pruning: the attention heads and MLP blocks removed from a model for good, as `headscope
//! prune` chooses them and `--prune FILE` loads them.
//!
//! Removing a head is zero-ablating it at every position (its output never reaches `o_proj`);
//! removing an MLP block is zeroing its output. [`Pruning::zero_weights`] gives exactly that by
//! zeroing `o_proj`'s input columns and `down_proj`, which is also the default export.

use std::collections::BTreeSet;
use std::path::Path;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::hooks::{AblationMode, AblationSet};
use super::weights::ModelWeights;
use super::Arch;
use crate::{Error, Result};

/// Heads and MLP blocks removed. The file form is JSON: `{"heads": [[layer, head], ...],
/// "mlps": [layer, ...]}` (`mlps` may be left out).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Pruning {
    /// `(layer, head)` pairs, query-head indices as the model numbers them.
    pub heads: BTreeSet<(usize, usize)>,
    /// Layers whose MLP block is removed.
    #[serde(default)]
    pub mlps: BTreeSet<usize>,
}

impl Pruning {
    /// Reads a pruning file (see the type's doc for the form).
    pub fn from_file(path: &Path) -> Result<Pruning> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::Pruning(format!("{}: {e}", path.display())))
    }

    /// Writes the file form, pretty-printed.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Pruning(e.to_string()))?;
        std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
    }

    pub fn is_empty(&self) -> bool {
        self.heads.is_empty() && self.mlps.is_empty()
    }

    /// Checks every head and MLP exists in a model of shape `arch`.
    pub fn validate(&self, arch: &Arch) -> Result<()> {
        let (layers, heads) = (arch.num_layers, arch.num_heads);
        if let Some((l, h)) = self.heads.iter().find(|&&(l, h)| l >= layers || h >= heads) {
            return Err(Error::Pruning(format!(
                "head L{l}H{h} does not exist: the model has {layers} layers × {heads} heads (0-based)"
            )));
        }
        if let Some(l) = self.mlps.iter().find(|&&l| l >= layers) {
            return Err(Error::Pruning(format!(
                "MLP L{l} does not exist: the model has {layers} layers (0-based)"
            )));
        }
        Ok(())
    }

    /// The same removal as a zero ablation, for the masked (unsliced) model.
    pub fn as_ablation(&self) -> AblationSet {
        AblationSet {
            heads: self.heads.clone(),
            mlps: self.mlps.clone(),
            mode: AblationMode::Zero,
        }
    }

    /// The heads of layer `l` that are kept, in order.
    pub fn kept_heads(&self, arch: &Arch, l: usize) -> Vec<usize> {
        (0..arch.num_heads)
            .filter(|&h| !self.heads.contains(&(l, h)))
            .collect()
    }

    /// Zeroes the pruned heads' `o_proj` input columns and the pruned MLPs' `down_proj`: the
    /// shapes stay, and every forward equals the zero-ablated model's.
    pub fn zero_weights(&self, arch: &Arch, weights: &mut ModelWeights) -> Result<()> {
        self.validate(arch)?;
        let d_head = arch.head_dim;
        for (l, layer) in weights.layers.iter_mut().enumerate() {
            let pruned: Vec<usize> = (0..arch.num_heads)
                .filter(|&h| self.heads.contains(&(l, h)))
                .collect();
            if !pruned.is_empty() {
                let o = &layer.o_weight;
                let mut keep = vec![1f32; arch.num_heads * d_head];
                for h in pruned {
                    keep[h * d_head..(h + 1) * d_head].fill(0.0);
                }
                let keep = Tensor::new(keep, o.device())?.to_dtype(o.dtype())?;
                layer.o_weight = o.broadcast_mul(&keep)?.into();
            }
            if self.mlps.contains(&l) {
                layer.down_weight = layer.down_weight.zeros_like()?.into();
            }
        }
        Ok(())
    }
}

/// Which heads one layer of a model computes: all of them, unless the model was loaded pruned
/// (then the kept ones, with their weights sliced out at load time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerHeads {
    /// The kept query heads, as the full model numbers them (ascending).
    pub query: Vec<usize>,
    /// The kept KV heads: those with at least one kept query head in their group (ascending).
    pub kv: Vec<usize>,
    /// Per kept query head, the position of its KV head in [`LayerHeads::kv`].
    pub kv_of_query: Vec<usize>,
}

impl LayerHeads {
    /// Every head of an `arch` layer.
    pub fn all(arch: &Arch) -> LayerHeads {
        LayerHeads::keeping(arch, (0..arch.num_heads).collect())
    }

    /// The layer keeping query heads `query` (ascending) and the KV heads they read.
    fn keeping(arch: &Arch, query: Vec<usize>) -> LayerHeads {
        let rep = arch.num_heads / arch.num_kv_heads;
        let mut kv: Vec<usize> = query.iter().map(|h| h / rep).collect();
        kv.dedup();
        let kv_of_query = query
            .iter()
            .map(|h| kv.iter().position(|&g| g == h / rep).unwrap_or(0))
            .collect();
        LayerHeads {
            query,
            kv,
            kv_of_query,
        }
    }

    /// Query heads per kept KV head when every kept group keeps the same number (grouped-query
    /// attention can then stack them), else `None` (uneven groups: K/V are gathered per query
    /// head). `None` too for a layer without heads.
    pub fn group_size(&self) -> Option<usize> {
        let n = self.kv.len();
        if n == 0 || !self.query.len().is_multiple_of(n) {
            return None;
        }
        let rep = self.query.len() / n;
        let even = (0..n).all(|g| self.kv_of_query.iter().filter(|&&k| k == g).count() == rep);
        even.then_some(rep)
    }

    /// Rows of the fused `[q; k; v]` projection this layer keeps (`num_heads`, `num_kv_heads` and
    /// `head_dim` of the full model).
    fn qkv_rows(&self, arch: &Arch) -> Vec<u32> {
        let (h, kv, dh) = (arch.num_heads, arch.num_kv_heads, arch.head_dim);
        let rows = |base: usize, heads: &[usize]| -> Vec<u32> {
            heads
                .iter()
                .flat_map(|&i| (base + i) * dh..(base + i + 1) * dh)
                .map(|r| r as u32)
                .collect::<Vec<_>>()
        };
        let mut out = rows(0, &self.query);
        out.extend(rows(h, &self.kv));
        out.extend(rows(h + kv, &self.kv));
        out
    }

    /// `o_proj` input columns of the kept heads.
    fn o_columns(&self, arch: &Arch) -> Vec<u32> {
        let dh = arch.head_dim;
        self.query
            .iter()
            .flat_map(|&i| i * dh..(i + 1) * dh)
            .map(|c| c as u32)
            .collect()
    }
}

impl Pruning {
    /// The heads a sliced model computes in layer `l`.
    pub fn layer_heads(&self, arch: &Arch, l: usize) -> LayerHeads {
        LayerHeads::keeping(arch, self.kept_heads(arch, l))
    }

    /// Slices `weights` down to what is kept: per layer the kept heads' Q rows, the K/V rows of
    /// the KV heads that still serve one, the kept heads' `o_proj` columns; a removed MLP block
    /// keeps empty weights (the transformer skips it). Returns each layer's heads.
    pub fn slice_weights(
        &self,
        arch: &Arch,
        weights: &mut ModelWeights,
    ) -> Result<Vec<LayerHeads>> {
        self.validate(arch)?;
        let mut layout = Vec::with_capacity(arch.num_layers);
        for (l, layer) in weights.layers.iter_mut().enumerate() {
            let heads = self.layer_heads(arch, l);
            if heads.query.len() < arch.num_heads {
                let qkv_rows = heads.qkv_rows(arch);
                layer.qkv_weight = layer.qkv_weight.select_rows(&qkv_rows)?;
                if let Some(b) = &layer.qkv_bias {
                    let rows = index(&qkv_rows, b.device())?;
                    layer.qkv_bias = Some(b.index_select(&rows, 0)?);
                }
                layer.o_weight = layer.o_weight.select_columns(&heads.o_columns(arch))?;
            }
            if self.mlps.contains(&l) {
                let d = arch.hidden_size;
                let (dev, dt) = (layer.down_weight.device(), layer.down_weight.dtype());
                layer.gate_up_weight = Tensor::zeros((0, d), dt, dev)?.into();
                layer.down_weight = Tensor::zeros((d, 0), dt, dev)?.into();
            }
            layout.push(heads);
        }
        Ok(layout)
    }
}

fn index(ids: &[u32], device: &candle_core::Device) -> Result<Tensor> {
    Ok(Tensor::new(ids, device)?)
}
