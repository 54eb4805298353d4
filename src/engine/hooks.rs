//! Interventions and captures for one batched forward, as data.
//!
//! Hook points follow TransformerLens names (`blocks.{l}.hook_resid_pre`, `blocks.{l}.attn.hook_pattern`,
//! `blocks.{l}.attn.hook_z`, `blocks.{l}.attn.hook_result`, `blocks.{l}.hook_attn_out`,
//! `blocks.{l}.hook_mlp_out`, `blocks.{l}.hook_resid_mid`, `blocks.{l}.hook_resid_post`,
//! `ln_final.hook_normalized`). Every captured tensor is keyed by that name in a [`Trace`].

use std::collections::BTreeMap;
use std::ops::Range;

use candle_core::Tensor;

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

/// An ablation in force for every forward — generation, scoring, sweeps and gradients alike — until
/// it is cleared ([`super::Transformer::set_standing_ablation`]): the explorer's live ablation set,
/// so that every analysis examines the ablated model. It acts before a forward's own
/// [`Hooks::head_ablation`], so a head that both ablate ends up as the forward's ablation says.
#[derive(Clone, Debug)]
pub struct StandingAblation {
    /// `(layer, head)` pairs replaced as `kind` says.
    pub heads: Vec<(usize, usize)>,
    pub kind: AblationKind,
    /// Layers whose MLP output is zeroed.
    pub mlps: Vec<usize>,
}

impl StandingAblation {
    /// A stable description (`zero:L3H1,L5H0|mlp:L4`) for cache keys and reports; a mean
    /// ablation's means are not in it (they come from the subject's clean run, which the cache
    /// key already pins down).
    pub fn label(&self) -> String {
        let kind = match self.kind {
            AblationKind::Zero => "zero",
            AblationKind::Mean(_) => "mean",
            AblationKind::UniformPattern => "uniform",
        };
        let mut heads = self.heads.clone();
        heads.sort_unstable();
        heads.dedup();
        let mut mlps = self.mlps.clone();
        mlps.sort_unstable();
        mlps.dedup();
        let heads: Vec<String> = heads.iter().map(|(l, h)| format!("L{l}H{h}")).collect();
        let mlps: Vec<String> = mlps.iter().map(|l| format!("L{l}")).collect();
        format!("{kind}:{}|mlp:{}", heads.join(","), mlps.join(","))
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

/// Per-layer keys and values of a processed prefix.
#[derive(Clone, Debug)]
pub struct KvCache {
    pub layers: Vec<(Tensor, Tensor)>,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.layers.first().map(|(k, _)| k.dims()[2]).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The first `len` positions (for reusing a shared prefix).
    pub fn truncate(&self, len: usize) -> crate::Result<KvCache> {
        let layers = self
            .layers
            .iter()
            .map(|(k, v)| Ok((k.narrow(2, 0, len)?, v.narrow(2, 0, len)?)))
            .collect::<crate::Result<Vec<_>>>()?;
        Ok(KvCache { layers })
    }

    /// This cache with its layers from `first` on replaced by `upper`'s: either the cache of a
    /// forward that started at `resid_pre` of layer `first` (holding only the layers it ran) or a
    /// cache as deep as this one. Both must cover the same positions. A forward that starts above
    /// layer 0 changes nothing below it, so a clean cache supplies those layers (live ablation
    /// re-runs decode from such a merged cache).
    pub fn with_layers_from(&self, first: usize, upper: &KvCache) -> crate::Result<KvCache> {
        let depth = self.layers.len();
        let replaced = match upper.layers.len() {
            n if first <= depth && n == depth - first => &upper.layers[..],
            n if first <= depth && n == depth => &upper.layers[first..],
            n => {
                return Err(crate::Error::Hook(format!(
                    "a cache of {n} layers cannot supply layers {first}.. of a {depth}-layer cache"
                )))
            }
        };
        let upper_len = replaced.first().map_or(0, |(k, _)| k.dims()[2]);
        if first > 0 && !replaced.is_empty() && upper_len != self.len() {
            return Err(crate::Error::Hook(format!(
                "caches of {} and {upper_len} positions cannot be merged",
                self.len()
            )));
        }
        let layers = self.layers[..first]
            .iter()
            .chain(replaced)
            .cloned()
            .collect();
        Ok(KvCache { layers })
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

pub fn hook_name(layer: usize, point: &str) -> String {
    format!("blocks.{layer}.{point}")
}
