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
                layer.o_weight = o.broadcast_mul(&keep)?;
            }
            if self.mlps.contains(&l) {
                layer.down_weight = layer.down_weight.zeros_like()?;
            }
        }
        Ok(())
    }
}
