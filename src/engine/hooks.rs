//! Interventions and captures for one batched forward, as data.
//!
//! Hook points follow TransformerLens names (`blocks.{l}.hook_resid_pre`, `blocks.{l}.attn.hook_pattern`,
//! `blocks.{l}.attn.hook_z`, `blocks.{l}.attn.hook_result`, `blocks.{l}.hook_attn_out`,
//! `blocks.{l}.hook_mlp_out`, `blocks.{l}.hook_resid_mid`, `blocks.{l}.hook_resid_post`,
//! `ln_final.hook_normalized`). Every captured tensor is keyed by that name in a [`Trace`].

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::str::FromStr;

use candle_core::{Device, Tensor};

use super::kv::KvCache;
use serde::{Deserialize, Serialize};

/// Which token positions (of this forward's input) a capture keeps.
#[derive(Clone, Debug, PartialEq)]
pub enum Positions {
    All,
    List(Vec<usize>),
    Range(Range<usize>),
}

impl Positions {
    /// Resolves to explicit indices for a sequence of `len` positions; `None` means "all, in order".
    pub fn resolve(&self, len: usize) -> crate::Result<Option<Vec<usize>>> {
        let list = match self {
            Positions::All => return Ok(None),
            Positions::List(v) => v.clone(),
            Positions::Range(r) => r.clone().collect(),
        };
        if let Some(bad) = list.iter().find(|&&p| p >= len) {
            return Err(crate::Error::Hook(format!(
                "position {bad} is outside the {len}-token input"
            )));
        }
        Ok(Some(list))
    }
}

/// How an ablated head's output is replaced.
#[derive(Clone, Debug)]
pub enum AblationKind {
    /// The head's `z` (input of `o_proj`) is zeroed.
    Zero,
    /// The head's `z` is replaced by a stored mean, `[layers, heads, d_head]`.
    Mean(Tensor),
    /// The head's attention pattern is replaced by the uniform distribution over the keys it may
    /// attend to (the masking used by the retrieval-head paper's ablations).
    UniformPattern,
}

/// A per-row head mask: `mask[b, l, h]` is 1.0 to keep head h of layer l in batch row b, 0.0 to ablate.
#[derive(Clone, Debug)]
pub struct HeadAblation {
    pub mask: Tensor,
    pub kind: AblationKind,
    /// Which layers the mask touches in some row, when the builder knows it on the host; `None`
    /// makes every forward read the mask back from the device to find out (a sync on a GPU).
    pub layers: Option<Vec<bool>>,
}

/// How the heads of an [`AblationSet`] are knocked out (its MLPs are always zeroed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AblationMode {
    /// `z_h = 0`.
    #[default]
    Zero,
    /// `z_h` replaced by its mean over the clean run's positions.
    Mean,
    /// The head's pattern replaced by the uniform distribution over visible keys (the
    /// retrieval-head paper's masking).
    Uniform,
}

impl AblationMode {
    pub fn label(self) -> &'static str {
        match self {
            AblationMode::Zero => "zero",
            AblationMode::Mean => "mean",
            AblationMode::Uniform => "uniform",
        }
    }

    /// The engine's [`AblationKind`]; `means` (`[layers, heads, d_head]`) is asked for only by a
    /// mean ablation.
    pub fn resolve(
        self,
        means: impl FnOnce() -> crate::Result<Tensor>,
    ) -> crate::Result<AblationKind> {
        Ok(match self {
            AblationMode::Zero => AblationKind::Zero,
            AblationMode::Uniform => AblationKind::UniformPattern,
            AblationMode::Mean => AblationKind::Mean(means()?),
        })
    }
}

impl FromStr for AblationMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "zero" => Ok(AblationMode::Zero),
            "mean" => Ok(AblationMode::Mean),
            "uniform" | "uniform-pattern" | "uniform_pattern" => Ok(AblationMode::Uniform),
            _ => Err(format!(
                "unknown ablation `{s}` (use zero, mean or uniform)"
            )),
        }
    }
}

/// The heads and MLPs knocked out together: the explorer's live set, `analyze --ablate`, and what
/// [`super::Engine::ablate`] puts in force for every forward.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AblationSet {
    /// `(layer, head)` pairs ablated as `mode` says.
    pub heads: BTreeSet<(usize, usize)>,
    /// Layers whose MLP output is zeroed.
    pub mlps: BTreeSet<usize>,
    /// How the heads are ablated.
    #[serde(alias = "kind")]
    pub mode: AblationMode,
}

impl AblationSet {
    pub fn is_empty(&self) -> bool {
        self.heads.is_empty() && self.mlps.is_empty()
    }

    /// Heads plus MLPs.
    pub fn len(&self) -> usize {
        self.heads.len() + self.mlps.len()
    }

    /// The lowest layer with an ablated head or MLP: nothing below it changes. `None` when empty.
    pub fn earliest_layer(&self) -> Option<usize> {
        let head = self.heads.first().map(|&(l, _)| l);
        head.into_iter().chain(self.mlps.first().copied()).min()
    }

    /// Adds the head if absent, else removes it; returns whether it is now ablated.
    pub fn toggle_head(&mut self, layer: usize, head: usize) -> bool {
        self.heads.insert((layer, head)) || !self.heads.remove(&(layer, head))
    }

    /// Adds layer `layer`'s MLP if absent, else removes it; returns whether it is now ablated.
    pub fn toggle_mlp(&mut self, layer: usize) -> bool {
        self.mlps.insert(layer) || !self.mlps.remove(&layer)
    }

    /// A stable description (`zero:L3H1,L5H0|mlp:L4`) for cache keys and reports; a mean
    /// ablation's means are not in it (they come from the subject's clean run, which the cache
    /// key already pins down).
    pub fn label(&self) -> String {
        let heads: Vec<String> = self
            .heads
            .iter()
            .map(|(l, h)| format!("L{l}H{h}"))
            .collect();
        let mlps: Vec<String> = self.mlps.iter().map(|l| format!("L{l}")).collect();
        format!(
            "{}:{}|mlp:{}",
            self.mode.label(),
            heads.join(","),
            mlps.join(",")
        )
    }

    /// `L{l}H{h}` for heads, `L{l} MLP` for MLPs, in layer order (a layer's MLP after its heads).
    pub fn item_labels(&self) -> Vec<String> {
        let mut items: Vec<(usize, usize, String)> = self
            .heads
            .iter()
            .map(|&(l, h)| (l, h, format!("L{l}H{h}")))
            .chain(
                self.mlps
                    .iter()
                    .map(|&l| (l, usize::MAX, format!("L{l} MLP"))),
            )
            .collect();
        items.sort();
        items.into_iter().map(|x| x.2).collect()
    }

    /// The set as a forward applies it to a model of shape `arch`: a one-row head mask and
    /// host-side layer flags. Heads or MLPs outside the model, or mean
    /// values of the wrong shape, are an [`Error::Hook`](crate::Error::Hook). `means` is asked
    /// for only by a mean ablation with heads.
    pub fn resolve(
        &self,
        arch: &super::Arch,
        device: &Device,
        means: impl FnOnce() -> crate::Result<Tensor>,
    ) -> crate::Result<ResolvedAblation> {
        let (layers, heads, d_head) = (arch.num_layers, arch.num_heads, arch.head_dim);
        if let Some((l, h)) = self.heads.iter().find(|&&(l, h)| l >= layers || h >= heads) {
            return Err(crate::Error::Hook(format!(
                "head L{l}H{h} does not exist ({layers} layers × {heads} heads)"
            )));
        }
        if let Some(l) = self.mlps.iter().find(|&&l| l >= layers) {
            return Err(crate::Error::Hook(format!(
                "MLP L{l} does not exist ({layers} layers)"
            )));
        }
        let mut mlp_layers = vec![false; layers];
        for &l in &self.mlps {
            mlp_layers[l] = true;
        }
        let head_ablation = if self.heads.is_empty() {
            None
        } else {
            let kind = self.mode.resolve(means)?;
            if let AblationKind::Mean(m) = &kind {
                if m.dims() != [layers, heads, d_head] {
                    return Err(crate::Error::Hook(format!(
                        "mean values have shape {:?}, expected {:?}",
                        m.dims(),
                        [layers, heads, d_head]
                    )));
                }
            }
            let mut keep = vec![1f32; layers * heads];
            let mut touched = vec![false; layers];
            for &(l, h) in &self.heads {
                keep[l * heads + h] = 0.0;
                touched[l] = true;
            }
            Some(HeadAblation {
                mask: Tensor::from_vec(keep, (1, layers, heads), device)?,
                kind,
                layers: Some(touched),
            })
        };
        Ok(ResolvedAblation {
            set: self.clone(),
            heads: head_ablation,
            mlp_layers,
        })
    }
}

/// An [`AblationSet`] ready for forwards ([`AblationSet::resolve`]).
#[derive(Clone, Debug)]
pub struct ResolvedAblation {
    pub set: AblationSet,
    /// A `[1, L, H]` mask with its kind and touched layers; `None` without heads.
    pub heads: Option<HeadAblation>,
    /// Which layers' MLP output is zeroed.
    pub mlp_layers: Vec<bool>,
}

impl ResolvedAblation {
    /// The heads of layer `l`, if the set touches that layer.
    pub fn heads_of_layer(&self, l: usize) -> Option<&HeadAblation> {
        self.heads
            .as_ref()
            .filter(|h| h.layers.as_ref().is_some_and(|t| t[l]))
    }

    /// The set as one forward's own hooks (a `[1, L]` MLP mask), e.g. to start mid-model.
    pub fn as_hooks(&self, device: &Device) -> crate::Result<Hooks> {
        let mlp_mask = if self.set.mlps.is_empty() {
            None
        } else {
            let keep: Vec<f32> = self
                .mlp_layers
                .iter()
                .map(|&z| if z { 0.0 } else { 1.0 })
                .collect();
            let n = keep.len();
            Some(Tensor::from_vec(keep, (1, n), device)?)
        };
        Ok(Hooks {
            head_ablation: self.heads.clone(),
            mlp_mask,
            ..Default::default()
        })
    }
}

/// Replace head `head` of `layer` in batch row `row` at `positions` by stored `z` values `[n_pos, d_head]`.
#[derive(Clone, Debug)]
pub struct HeadPatch {
    pub row: usize,
    pub layer: usize,
    pub head: usize,
    pub positions: Vec<usize>,
    pub z: Tensor,
}

/// What to keep from a forward. Nothing is kept unless asked; `layers × heads × T × T` only with
/// `full_patterns`.
#[derive(Clone, Debug, Default)]
pub struct Capture {
    /// Attention rows for these query positions: `blocks.{l}.attn.hook_pattern`, `[b, H, n_q, T_k]`.
    pub attn_rows: Option<Positions>,
    /// Attention of the query positions in `.0` summed over each key span in `.1`:
    /// `blocks.{l}.attn.hook_pattern_span_sum`, `[b, H, n_q, n_spans]`.
    pub attn_span_sums: Option<(Positions, Vec<Range<usize>>)>,
    /// Every layer's full pattern `[b, H, T, T_k]` — large; only when a caller needs it.
    pub full_patterns: bool,
    pub resid_pre: Option<Positions>,
    pub resid_mid: Option<Positions>,
    pub resid_post: Option<Positions>,
    /// `blocks.{l}.attn.hook_z`, `[b, n_pos, H, d_head]` (after interventions).
    pub z: Option<Positions>,
    /// Per-head results `z_h · W_O[:, h]ᵀ`: `blocks.{l}.attn.hook_result`, `[b, n_pos, H, d]`.
    pub head_results: Option<Positions>,
    /// `blocks.{l}.hook_attn_out`, `[b, n_pos, d]` (before Gemma 2's post-attention norm).
    pub attn_out: Option<Positions>,
    /// `blocks.{l}.hook_mlp_out`, `[b, n_pos, d]` (before Gemma 2's post-MLP norm).
    pub mlp_out: Option<Positions>,
    /// Only capture for layers in this range (all layers when `None`).
    pub layers: Option<Range<usize>>,
    /// Which positions get logits (`None`: none — useful when only internals are wanted).
    pub logits: Option<Positions>,
    /// Keep the keys/values of this forward so a later forward can continue from it (only the
    /// layers it ran; see [`Trace::kv_cache`]).
    pub kv_cache: bool,
}

/// Everything one forward may return.
#[derive(Debug, Default)]
pub struct Trace {
    /// `[b, n_pos, vocab]` for the positions asked for in `Capture::logits`, f32.
    pub logits: Option<Tensor>,
    /// Captured activations keyed by hook name.
    pub activations: BTreeMap<String, Tensor>,
    /// Keys and values per layer, `[b, H_kv, T, d_head]`, when `Capture::kv_cache` was set: every
    /// layer for a forward from token ids, layers `l..` (`L − l` entries) for one that started at
    /// `resid_pre` of layer `l`, which [`KvCache::with_layers_from`] completes.
    pub kv_cache: Option<KvCache>,
}

impl Trace {
    pub fn get(&self, name: &str) -> crate::Result<&Tensor> {
        self.activations
            .get(name)
            .ok_or_else(|| crate::Error::Hook(format!("`{name}` was not captured")))
    }

    /// The logits asked for in [`Capture::logits`]; an error when they were not asked for (or
    /// were already taken).
    pub fn logits(&self) -> crate::Result<&Tensor> {
        self.logits.as_ref().ok_or_else(not_requested("logits"))
    }

    /// [`Trace::logits`], moved out of the trace.
    pub fn take_logits(&mut self) -> crate::Result<Tensor> {
        self.logits.take().ok_or_else(not_requested("logits"))
    }

    /// The KV cache asked for with [`Capture::kv_cache`], moved out of the trace; an error when it
    /// was not asked for (or was already taken).
    pub fn take_kv_cache(&mut self) -> crate::Result<KvCache> {
        self.kv_cache.take().ok_or_else(not_requested("KV cache"))
    }
}

/// The error for a capture that a caller reads without having asked the forward for it: a
/// programming error upstream, reported instead of panicking.
fn not_requested(what: &'static str) -> impl FnOnce() -> crate::Error {
    move || {
        crate::Error::Hook(format!(
            "the forward returned no {what}: it was not requested"
        ))
    }
}

/// Interventions plus captures for one forward.
#[derive(Clone, Debug, Default)]
pub struct Hooks {
    pub head_ablation: Option<HeadAblation>,
    /// `[b, layers]`: 1.0 keeps the MLP, 0.0 zero-ablates its output.
    pub mlp_mask: Option<Tensor>,
    pub patches: Vec<HeadPatch>,
    pub capture: Capture,
    /// Use only ops that candle's autograd can follow (slow RMS norm and RoPE, an explicit masked
    /// softmax, no chunked attention, no fused kernels), so gradients w.r.t. a `Var` input exist.
    /// Same results as the fast path up to rounding; slower and more memory-hungry.
    pub differentiable: bool,
}

impl Hooks {
    /// No intervention; the logits at position `pos` of the forward's input and the KV cache
    /// (what a plain decoding step keeps).
    pub fn logits_at_and_cache(pos: usize) -> Hooks {
        Hooks {
            capture: Capture {
                logits: Some(Positions::List(vec![pos])),
                kv_cache: true,
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

pub fn hook_name(layer: usize, point: &str) -> String {
    format!("blocks.{layer}.{point}")
}
