//! The generic decoder-only transformer with hook points.
//!
//! embed → blocks (attention, MLP; pre-norm, or Gemma 2's sandwich norms) → final norm → unembed.
//! Every family difference comes from [`Arch`]. Attention is the explicit
//! `softmax(QKᵀ·scale + mask)·V` so probabilities can be captured and patterns replaced; softmax,
//! norms and soft-caps run in f32 whatever the working dtype.
//!
//! The fast path uses fused ops without a backward pass (the in-place causal softmax, the gated
//! activation, candle's `rms_norm` and `rope`). [`Hooks::differentiable`] swaps them for candle
//! primitives that autograd can follow, and [`Transformer::embedding_gradient`] uses that to
//! differentiate a function of the logits w.r.t. the input embeddings (gradient saliency).

use candle_core::{DType, Device, IndexOp, Tensor, Var, D};
use candle_nn::rotary_emb::{rope, rope_i, rope_i_slow, rope_slow};

use super::arch::{rope_inv_freq, Activation, Arch, RopeStyle};
use super::hooks::{
    hook_name, AblationKind, AblationSet, Capture, HeadAblation, Hooks, Positions,
    ResolvedAblation, Trace,
};
use super::kernels::{causal_softmax, gated_activation, CausalSoftmax, GatedActivation};
use super::kv::{Append, KvCache, LayerKv};
use super::pruning::{LayerHeads, Pruning};
use super::weights::{LayerWeights, ModelWeights, Weight};
use crate::{Error, Result};

/// Query rows per block in [`Transformer::chunked_attention`]. Smaller blocks skip more of the masked
/// triangle but make GEMMs too small to keep two cores busy; 256 measured best on SmolLM2 (64: slower
/// than no blocking at all).
pub const DEFAULT_ATTENTION_CHUNK: usize = 256;

/// Where a forward starts.
pub enum Start<'a> {
    /// Token ids `[b, t]` (u32), embedded at layer 0.
    Tokens(&'a Tensor),
    /// A residual stream `[b, t, d]` entering layer `layer` (prefix reuse: layers below are skipped).
    ResidPre { layer: usize, resid: Tensor },
    /// A residual stream `[b, t, d]` inside layer `layer` after its attention sublayer was added:
    /// the forward continues with that layer's MLP.
    ResidMid { layer: usize, resid: Tensor },
}

pub struct Transformer {
    pub arch: Arch,
    weights: ModelWeights,
    /// `[max_pos, d_head/2]` rotary tables in the working dtype.
    cos: Tensor,
    sin: Tensor,
    /// Per layer, `o_proj.weight` rearranged as `[H, d_head, d]` for per-head results.
    o_per_head: Vec<Tensor>,
    attention_chunk: usize,
    device: Device,
    dtype: DType,
    /// Applied in every forward while an [`super::Ablated`] guard holds it.
    standing: Option<ResolvedAblation>,
    /// What a model loaded pruned computes ([`Transformer::new_pruned`]); `None`: every head.
    sliced: Option<Sliced>,
}

/// The layout of a model whose weights were sliced at load time: per layer the kept heads, the
/// K/V gather for uneven groups, and the removed MLP blocks.
struct Sliced {
    pruning: Pruning,
    heads: Vec<LayerHeads>,
    /// Per layer with uneven KV groups, each kept query head's KV head (`[H_l]` u32), which
    /// attention gathers K/V by.
    kv_gather: Vec<Option<Tensor>>,
    mlp_removed: Vec<bool>,
}

/// Per-forward constants shared by every layer.
struct ForwardCtx<'h> {
    batch: usize,
    seq: usize,
    /// Absolute position of the first query (the KV-cache length).
    offset: usize,
    /// Additive masks `[t, T_k]`: full causal, and sliding-window causal if any layer needs it.
    causal_mask: Option<Tensor>,
    sliding_mask: Option<Tensor>,
    cos: Tensor,
    sin: Tensor,
    /// Only ops with a backward pass (see [`Hooks::differentiable`]).
    differentiable: bool,
    hooks: &'h Hooks,
    past: Option<&'h KvCache>,
    /// How this forward's keys and values join the past ones.
    append: Append,
    /// Which layers this forward's own head ablation touches in some row.
    ablated_layers: Vec<bool>,
    /// The last layer's query rows when only they are computed (see
    /// [`Transformer::final_layer_rows`]).
    final_rows: Option<Vec<usize>>,
    /// Per layer, a zero variable `[b, t, H, d_h]` added to `z` before `o_proj`, so a backward pass
    /// yields `∂f/∂z` (see [`Transformer::head_output_gradient`]).
    z_probes: Option<&'h [Var]>,
}

/// One layer's part of a forward.
struct LayerCtx<'a> {
    l: usize,
    weights: &'a LayerWeights,
    /// Whether this layer's activations are captured ([`Capture::layers`]).
    in_capture: bool,
    /// Only these query rows are computed (the last layer when only some logits are wanted).
    query_rows: Option<&'a [usize]>,
    /// The sliding window, on layers that have one.
    window: Option<usize>,
    /// This layer's keys and values of the processed prefix.
    past: Option<&'a LayerKv>,
}

impl LayerCtx<'_> {
    /// Keeps `x` at `positions` (along dim 1) as `blocks.{l}.{point}` when this layer captures.
    fn capture(
        &self,
        trace: &mut Trace,
        positions: &Option<Positions>,
        x: &Tensor,
        point: &str,
    ) -> Result<()> {
        if !self.in_capture {
            return Ok(());
        }
        capture(trace, positions, x, 1, hook_name(self.l, point))
    }
}

/// A layer's queries `[b, H, t_q, d_h]`, and keys and values `[b, H_kv, T_k, d_h]`.
struct Qkv {
    q: Tensor,
    k: Tensor,
    v: Tensor,
}

/// The gradient of a scalar function of the last position's logits w.r.t. the input embeddings.
#[derive(Debug)]
pub struct EmbeddingGradient {
    /// The function's value.
    pub value: f64,
    /// The last input position's logits `[b, vocab]`, f32.
    pub logits: Tensor,
    /// `∂f/∂e_j` `[b, t, d]` in f32, `e_j` the embedding-table row of input position `j` (before
    /// Gemma 2's √d scale, which the chain rule folds in).
    pub grad: Tensor,
}

/// The gradient of a scalar function of some positions' logits w.r.t. every layer's head outputs
/// `z` (`blocks.{l}.attn.hook_z`, the input of `o_proj`), from one forward and one backward.
#[derive(Debug)]
pub struct HeadOutputGradient {
    /// The function's value.
    pub value: f64,
    /// Per layer, the heads' outputs `z` `[t, H, d_head]` in f32.
    pub z: Vec<Tensor>,
    /// Per layer, `∂f/∂z` `[t, H, d_head]` in f32: the total derivative, through every later
    /// layer (the heads above included), not only the direct path to the logits.
    pub grad: Vec<Tensor>,
}

impl Transformer {
    pub fn new(
        arch: Arch,
        weights: ModelWeights,
        device: &Device,
        dtype: DType,
    ) -> Result<Transformer> {
        Transformer::build(arch, weights, None, device, dtype)
    }

    /// The model with `pruning`'s heads and MLP blocks removed from its weights: Q/K/V/O are
    /// computed only for kept heads (a KV head goes when its whole group does), a layer without
    /// heads skips attention and a removed MLP block is skipped. Its outputs equal the full model's
    /// under `pruning.as_ablation()`. Head-indexed interventions and captures need the full model
    /// (see [`Transformer::require_unsliced`]).
    pub fn new_pruned(
        arch: Arch,
        mut weights: ModelWeights,
        pruning: &Pruning,
        device: &Device,
        dtype: DType,
    ) -> Result<Transformer> {
        let heads = pruning.slice_weights(&arch, &mut weights)?;
        let kv_gather = heads
            .iter()
            .map(|lh| {
                if lh.query.is_empty() || lh.group_size().is_some() {
                    return Ok(None);
                }
                let idx: Vec<u32> = lh.kv_of_query.iter().map(|&g| g as u32).collect();
                Ok(Some(Tensor::new(idx, device)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let sliced = Sliced {
            pruning: pruning.clone(),
            mlp_removed: (0..arch.num_layers)
                .map(|l| pruning.mlps.contains(&l))
                .collect(),
            heads,
            kv_gather,
        };
        Transformer::build(arch, weights, Some(sliced), device, dtype)
    }

    fn build(
        arch: Arch,
        weights: ModelWeights,
        sliced: Option<Sliced>,
        device: &Device,
        dtype: DType,
    ) -> Result<Transformer> {
        let mut inv_freq = rope_inv_freq(&arch);
        if let Some(factors) = &weights.rope_freq_factors {
            for (f, div) in inv_freq.iter_mut().zip(factors) {
                *f /= *div as f64;
            }
        }
        let max_pos = arch.max_position_embeddings;
        let half = arch.head_dim / 2;
        let mut angles = Vec::with_capacity(max_pos * half);
        for p in 0..max_pos {
            for f in &inv_freq {
                angles.push((p as f64 * f) as f32);
            }
        }
        let angles = Tensor::from_vec(angles, (max_pos, half), &Device::Cpu)?;
        let cos = angles.cos()?.to_dtype(dtype)?.to_device(device)?;
        let sin = angles.sin()?.to_dtype(dtype)?.to_device(device)?;
        let o_per_head = weights
            .layers
            .iter()
            .map(|lw| {
                // [d, H·d_h] → [d, H, d_h] → [H, d_h, d]
                Ok(lw
                    .o_weight
                    .reshape((
                        arch.hidden_size,
                        lw.o_weight.dims()[1] / arch.head_dim,
                        arch.head_dim,
                    ))?
                    .permute((1, 2, 0))?
                    .contiguous()?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Transformer {
            arch,
            weights,
            cos,
            sin,
            o_per_head,
            attention_chunk: DEFAULT_ATTENTION_CHUNK,
            device: device.clone(),
            dtype,
            standing: None,
            sliced,
        })
    }

    /// The pruning the weights were sliced by, if the model was loaded pruned.
    pub fn pruning(&self) -> Option<&Pruning> {
        self.sliced.as_ref().map(|s| &s.pruning)
    }

    /// The heads layer `l` computes, when the model was loaded pruned.
    pub fn sliced_heads(&self, l: usize) -> Option<&LayerHeads> {
        self.sliced.as_ref().map(|s| &s.heads[l])
    }

    /// An error naming `what` when the model was loaded pruned. A sliced model no longer has
    /// the removed heads, and the kept ones sit at other positions, so head-indexed masks,
    /// patches, captures and gradients would silently mis-index: they need the full model (load
    /// it without the pruning and apply `Pruning::as_ablation` instead).
    /// A pruning of MLP blocks only leaves every head where it was, and passes.
    pub fn require_unsliced(&self, what: &str) -> Result<()> {
        match &self.sliced {
            Some(s) if !s.pruning.heads.is_empty() => Err(Error::Pruning(format!(
                "{what} needs the unpruned model: this one was loaded with heads sliced out \
                 (load it without --prune and apply the pruning as a zero ablation instead)"
            ))),
            _ => Ok(()),
        }
    }

    fn mlp_removed(&self, l: usize) -> bool {
        self.sliced.as_ref().is_some_and(|s| s.mlp_removed[l])
    }

    /// Query rows per block of causal attention; inputs shorter than two blocks are not blocked.
    pub fn set_attention_chunk(&mut self, rows: usize) {
        self.attention_chunk = rows.max(1);
    }

    /// Puts `ablation` in force for every later forward (`None` clears it). Only
    /// [`super::Engine::ablate`] calls this, through a guard that clears it again.
    pub(crate) fn set_standing_ablation(&mut self, ablation: Option<ResolvedAblation>) {
        self.standing = ablation;
    }

    /// The ablation in force for every forward, if any.
    pub fn standing_ablation(&self) -> Option<&AblationSet> {
        self.standing.as_ref().map(|s| &s.set)
    }

    /// The standing ablation of layer `l`'s heads, if it touches that layer.
    fn standing_heads(&self, l: usize) -> Option<&HeadAblation> {
        self.standing.as_ref().and_then(|s| s.heads_of_layer(l))
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn weights(&self) -> &ModelWeights {
        &self.weights
    }
    /// `o_proj.weight` of `layer` as `[H, d_head, d]`.
    pub fn o_per_head(&self, layer: usize) -> &Tensor {
        &self.o_per_head[layer]
    }

    /// Embeds token ids `[b, t]` → `[b, t, d]` (with Gemma 2's √d scale).
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let flat = ids.flatten_all()?;
        let x =
            self.weights
                .embed
                .index_select(&flat, 0)?
                .reshape((b, t, self.arch.hidden_size))?;
        Ok(match self.arch.embedding_scale {
            Some(s) => (x * s)?,
            None => x,
        })
    }

    /// The logit lens: final norm + unembedding (+ Gemma 2's final soft-cap) of any residual-space
    /// tensor `[.., d]`, returned in f32.
    pub fn unembed(&self, x: &Tensor) -> Result<Tensor> {
        self.unembed_with(x, false)
    }

    fn unembed_with(&self, x: &Tensor, differentiable: bool) -> Result<Tensor> {
        let d = self.arch.hidden_size;
        let dims = x.dims().to_vec();
        let flat = x.reshape(((), d))?.to_dtype(self.dtype)?;
        let normed = self.norm(&flat, &self.weights.final_norm, differentiable)?;
        let logits = matmul_t(&normed, &self.weights.lm_head)?.to_dtype(DType::F32)?;
        let logits = match self.arch.final_logit_softcap {
            Some(cap) => ((logits / cap)?.tanh()? * cap)?,
            None => logits,
        };
        let mut out_dims = dims[..dims.len() - 1].to_vec();
        out_dims.push(self.arch.vocab_size);
        Ok(logits.reshape(out_dims)?)
    }

    /// What the attention sublayer adds to the residual stream given its output (Gemma 2's
    /// post-attention norm, or the output itself).
    pub fn post_attention(&self, layer: usize, attn_out: Tensor) -> Result<Tensor> {
        self.post_attention_with(layer, attn_out, false)
    }

    fn post_attention_with(
        &self,
        layer: usize,
        attn_out: Tensor,
        differentiable: bool,
    ) -> Result<Tensor> {
        match &self.weights.layers[layer].post_attn_norm {
            Some(w) => self.norm(&attn_out, w, differentiable),
            None => Ok(attn_out),
        }
    }

    /// RMS norm in f32; `differentiable` uses candle's slow version (same formula and eps), which
    /// autograd can follow.
    fn norm(&self, x: &Tensor, w: &Tensor, differentiable: bool) -> Result<Tensor> {
        if !differentiable {
            return self.rms_norm(x, w);
        }
        let eps = self.arch.rms_norm_eps as f32;
        let y =
            candle_nn::ops::rms_norm_slow(&x.to_dtype(DType::F32)?, &w.to_dtype(DType::F32)?, eps)?;
        Ok(y.to_dtype(self.dtype)?)
    }

    fn rms_norm(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        if self.dtype == DType::F32 {
            Ok(candle_nn::ops::rms_norm(
                &x,
                w,
                self.arch.rms_norm_eps as f32,
            )?)
        } else {
            let y = candle_nn::ops::rms_norm(
                &x.to_dtype(DType::F32)?,
                &w.to_dtype(DType::F32)?,
                self.arch.rms_norm_eps as f32,
            )?;
            Ok(y.to_dtype(self.dtype)?)
        }
    }

    /// Runs the model from `start`, continuing after `past` if given, with `hooks`' interventions
    /// and captures.
    ///
    /// A captured KV cache holds the layers this forward ran: all of them from `Start::Tokens`, only
    /// `layer..` from `Start::ResidPre { layer, .. }` (the layers below never saw these inputs, so
    /// their keys and values must come from elsewhere, e.g. a clean run:
    /// [`KvCache::with_layers_from`]). `Start::ResidMid` cannot capture one.
    pub fn forward(&self, start: Start, past: Option<&KvCache>, hooks: &Hooks) -> Result<Trace> {
        self.forward_probed(start, past, hooks, None)
    }

    /// [`Self::forward`] with a zero variable added to each layer's `z` (`z_probes`, one per
    /// layer, each `[b, t, H, d_h]`).
    fn forward_probed(
        &self,
        start: Start,
        past: Option<&KvCache>,
        hooks: &Hooks,
        z_probes: Option<&[Var]>,
    ) -> Result<Trace> {
        let (first_layer, mut x, skip_attention) = match start {
            Start::Tokens(ids) => (0, self.embed(ids)?, false),
            Start::ResidPre { layer, resid } => (layer, resid.to_dtype(self.dtype)?, false),
            Start::ResidMid { layer, resid } => (layer, resid.to_dtype(self.dtype)?, true),
        };
        let (batch, seq) = self.check_forward(first_layer, &x, skip_attention, past, hooks)?;
        let mut ctx = self.forward_ctx(batch, seq, past, hooks)?;
        if let Some(probes) = z_probes {
            self.check_probes(probes, first_layer, batch, seq)?;
            // Every layer's `z` covers every position.
            ctx.final_rows = None;
            ctx.z_probes = Some(probes);
        }
        let mut trace = Trace::default();
        let mut new_cache = Vec::new();
        for l in first_layer..self.arch.num_layers {
            let layer = self.layer_ctx(&ctx, l);
            let skip = skip_attention && l == first_layer;
            let (y, kv) = self.block(&ctx, &layer, x, skip, &mut trace)?;
            x = y;
            if hooks.capture.kv_cache {
                new_cache.extend(kv);
            }
        }
        if let Some(positions) = &hooks.capture.logits {
            let selected = match (&ctx.final_rows, positions.resolve(seq)?) {
                (Some(_), _) | (None, None) => x, // already only the wanted rows
                (None, Some(list)) => index_positions(&x, &list, 1)?,
            };
            trace.logits = Some(self.unembed_with(&selected, ctx.differentiable)?);
        }
        if hooks.capture.kv_cache {
            trace.kv_cache = Some(KvCache { layers: new_cache });
        }
        Ok(trace)
    }

    /// Rejects a forward the model cannot run; returns the input's batch size and length.
    fn check_forward(
        &self,
        first_layer: usize,
        x: &Tensor,
        skip_attention: bool,
        past: Option<&KvCache>,
        hooks: &Hooks,
    ) -> Result<(usize, usize)> {
        let a = &self.arch;
        if first_layer >= a.num_layers && !(first_layer == a.num_layers && !skip_attention) {
            return Err(Error::Hook(format!(
                "start layer {first_layer} is past the model's {} layers",
                a.num_layers
            )));
        }
        let (batch, seq, d) = x.dims3()?;
        if d != a.hidden_size {
            return Err(Error::Hook(format!(
                "residual width {d} differs from the model's {}",
                a.hidden_size
            )));
        }
        if self.sliced.is_some() {
            self.check_sliced_hooks(hooks)?;
        }
        if hooks.capture.kv_cache && skip_attention {
            return Err(Error::Hook(
                "a KV cache cannot be captured by a forward that starts inside a layer \
                 (`Start::ResidMid` skips that layer's attention)"
                    .into(),
            ));
        }
        let offset = past.map(KvCache::len).unwrap_or(0);
        if offset + seq > a.max_position_embeddings {
            return Err(Error::PromptTooLong {
                tokens: offset + seq,
                context: a.max_position_embeddings,
            });
        }
        if past.is_some_and(|p| p.layers.len() != a.num_layers) {
            return Err(Error::Hook(
                "KV cache has the wrong number of layers".into(),
            ));
        }
        Ok((batch, seq))
    }

    /// A model loaded pruned refuses what indexes heads (see [`Transformer::require_unsliced`]).
    fn check_sliced_hooks(&self, hooks: &Hooks) -> Result<()> {
        let cap = &hooks.capture;
        let head_indexed = [
            (hooks.head_ablation.is_some(), "a head ablation"),
            (!hooks.patches.is_empty(), "head patching"),
            (cap.z.is_some(), "capturing head outputs (hook_z)"),
            (cap.head_results.is_some(), "capturing per-head results"),
            (
                cap.attn_rows.is_some() || cap.full_patterns || cap.attn_span_sums.is_some(),
                "capturing attention patterns",
            ),
        ];
        match head_indexed.iter().find(|(asked, _)| *asked) {
            Some((_, what)) => self.require_unsliced(what),
            None => Ok(()),
        }
    }

    fn layer_ctx<'a>(&'a self, ctx: &'a ForwardCtx, l: usize) -> LayerCtx<'a> {
        let last = l + 1 == self.arch.num_layers;
        LayerCtx {
            l,
            weights: &self.weights.layers[l],
            in_capture: ctx
                .hooks
                .capture
                .layers
                .as_ref()
                .map_or(true, |r| r.contains(&l)),
            query_rows: ctx.final_rows.as_deref().filter(|_| last),
            window: self.arch.is_sliding(l),
            past: ctx.past.map(|p| &p.layers[l]),
        }
    }

    /// One decoder layer: the attention sublayer (unless the forward starts after it), then the
    /// MLP sublayer. Returns the residual stream and the layer's keys and values.
    fn block(
        &self,
        ctx: &ForwardCtx,
        layer: &LayerCtx,
        x: Tensor,
        skip_attention: bool,
        trace: &mut Trace,
    ) -> Result<(Tensor, Option<LayerKv>)> {
        let (x, kv) = if skip_attention {
            match layer.query_rows {
                Some(rows) => (index_positions(&x, rows, 1)?, None),
                None => (x, None),
            }
        } else {
            let (x, kv) = self.attention_sublayer(ctx, layer, x, trace)?;
            (x, Some(kv))
        };
        let cap = &ctx.hooks.capture;
        layer.capture(trace, &cap.resid_mid, &x, "hook_resid_mid")?;
        let x = self.mlp_sublayer(ctx, layer, x, trace)?;
        layer.capture(trace, &cap.resid_post, &x, "hook_resid_post")?;
        Ok((x, kv))
    }

    /// `x + post_attention(attention(norm(x)))`, for the layer's query rows only.
    fn attention_sublayer(
        &self,
        ctx: &ForwardCtx,
        layer: &LayerCtx,
        x: Tensor,
        trace: &mut Trace,
    ) -> Result<(Tensor, LayerKv)> {
        let cap = &ctx.hooks.capture;
        layer.capture(trace, &cap.resid_pre, &x, "hook_resid_pre")?;
        if let Some(kv) = self.empty_attention_kv(ctx, layer)? {
            // No head left: the sublayer adds nothing (Gemma 2's post-norm of zero is zero).
            let x = match layer.query_rows {
                Some(rows) => index_positions(&x, rows, 1)?,
                None => x,
            };
            return Ok((x, kv));
        }
        let normed = self.norm(&x, &layer.weights.attn_norm, ctx.differentiable)?;
        let (attn_out, kv) = self.attention(ctx, layer, &normed, trace)?;
        layer.capture(trace, &cap.attn_out, &attn_out, "hook_attn_out")?;
        let x = match layer.query_rows {
            Some(rows) => index_positions(&x, rows, 1)?,
            None => x,
        };
        let added = self.post_attention_with(layer.l, attn_out, ctx.differentiable)?;
        Ok(((x + added)?, kv))
    }

    /// For a layer that lost every head, the empty keys and values `[b, 0, T_k, d_h]` it caches
    /// (so the cache still knows its length); `None` for a layer with heads.
    fn empty_attention_kv(&self, ctx: &ForwardCtx, layer: &LayerCtx) -> Result<Option<LayerKv>> {
        if !self
            .sliced_heads(layer.l)
            .is_some_and(|h| h.query.is_empty())
        {
            return Ok(None);
        }
        let shape = (ctx.batch, 0, ctx.offset + ctx.seq, self.arch.head_dim);
        let empty = Tensor::zeros(shape, self.dtype, &self.device)?;
        Ok(Some(LayerKv::new(empty.clone(), empty)))
    }

    /// `x + post_mlp_norm(mlp(norm(x)))`, with the MLP ablations applied.
    fn mlp_sublayer(
        &self,
        ctx: &ForwardCtx,
        layer: &LayerCtx,
        x: Tensor,
        trace: &mut Trace,
    ) -> Result<Tensor> {
        let (l, lw, diff) = (layer.l, layer.weights, ctx.differentiable);
        if self.mlp_removed(l) {
            // Removed at load time: the block adds nothing.
            layer.capture(
                trace,
                &ctx.hooks.capture.mlp_out,
                &x.zeros_like()?,
                "hook_mlp_out",
            )?;
            return Ok(x);
        }
        let normed = self.norm(&x, &lw.mlp_norm, diff)?;
        let mut mlp_out = self.mlp(lw, &normed, diff)?;
        if let Some(mask) = &ctx.hooks.mlp_mask {
            let m = mask
                .i((.., l))?
                .to_dtype(self.dtype)?
                .reshape((ctx.batch, 1, 1))?;
            mlp_out = mlp_out.broadcast_mul(&m)?;
        }
        if self.standing.as_ref().is_some_and(|s| s.mlp_layers[l]) {
            mlp_out = mlp_out.zeros_like()?;
        }
        layer.capture(trace, &ctx.hooks.capture.mlp_out, &mlp_out, "hook_mlp_out")?;
        let mlp_out = match &lw.post_mlp_norm {
            Some(w) => self.norm(&mlp_out, w, diff)?,
            None => mlp_out,
        };
        Ok((x + mlp_out)?)
    }

    /// Differentiates `f(logits)` w.r.t. the input embeddings of `ids` `[b, t]`, where `logits`
    /// `[b, vocab]` (f32) are the last position's and `f` returns a scalar tensor. One
    /// differentiable forward (no KV cache) and one backward pass. candle's autograd also forms
    /// the (discarded) gradients of every weight matrix, so a backward costs about two forwards.
    pub fn embedding_gradient(
        &self,
        ids: &Tensor,
        f: impl FnOnce(&Tensor) -> Result<Tensor>,
    ) -> Result<EmbeddingGradient> {
        let (b, t) = ids.dims2()?;
        if t == 0 {
            return Err(Error::Hook("cannot differentiate an empty input".into()));
        }
        let rows = self
            .weights
            .embed
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, self.arch.hidden_size))?;
        // The variable is the unscaled row, so the gradient is w.r.t. the embedding table.
        let var = Var::from_tensor(&rows)?;
        let resid = match self.arch.embedding_scale {
            Some(s) => (var.as_tensor() * s)?,
            None => var.as_tensor().clone(),
        };
        let hooks = Hooks {
            differentiable: true,
            capture: Capture {
                logits: Some(Positions::List(vec![t - 1])),
                ..Default::default()
            },
            ..Default::default()
        };
        let trace = self.forward(Start::ResidPre { layer: 0, resid }, None, &hooks)?;
        let logits = trace
            .logits
            .ok_or_else(|| Error::Hook("the forward returned no logits".into()))?
            .squeeze(1)?;
        let out = f(&logits)?;
        let value = scalar_value(&out)?;
        let grads = out.backward()?;
        let grad = match grads.get(var.as_tensor()) {
            Some(g) => g.to_dtype(DType::F32)?,
            // `f` ignores the logits: the gradient is zero.
            None => Tensor::zeros((b, t, self.arch.hidden_size), DType::F32, &self.device)?,
        };
        Ok(EmbeddingGradient {
            value,
            logits: logits.detach(),
            grad,
        })
    }

    /// Differentiates `f(logits)` w.r.t. every layer's head outputs `z` for one input row `ids`
    /// `[1, t]`, where `logits` `[1, n, vocab]` (f32) are those of `rows` and `f` returns a scalar
    /// tensor. One differentiable forward (no KV cache) and one backward pass.
    ///
    /// A captured `z` would be a leaf of no use to autograd, and the live `z` is freed by the
    /// backward pass, so each layer's `z` gets a zero variable added before `o_proj`
    /// (`z + δ_l`, `δ_l = 0`): `∂f/∂δ_l = ∂f/∂z_l` with every later layer still depending on
    /// `z_l`, so the gradient is the total one, through the heads above as well.
    pub fn head_output_gradient(
        &self,
        ids: &Tensor,
        rows: &Positions,
        f: impl FnOnce(&Tensor) -> Result<Tensor>,
    ) -> Result<HeadOutputGradient> {
        self.require_unsliced("the head-output gradient (attribution patching)")?;
        let (b, t) = ids.dims2()?;
        if b != 1 || t == 0 {
            return Err(Error::Hook(format!(
                "head-output gradients need one non-empty input row, not shape {:?}",
                ids.dims()
            )));
        }
        let a = &self.arch;
        let shape = (1, t, a.num_heads, a.head_dim);
        let probes = (0..a.num_layers)
            .map(|_| Ok(Var::zeros(shape, self.dtype, &self.device)?))
            .collect::<Result<Vec<_>>>()?;
        let hooks = Hooks {
            differentiable: true,
            capture: Capture {
                z: Some(Positions::All),
                logits: Some(rows.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut trace = self.forward_probed(Start::Tokens(ids), None, &hooks, Some(&probes))?;
        let logits = trace.take_logits()?;
        let out = f(&logits)?;
        let value = scalar_value(&out)?;
        let grads = out.backward()?;
        let mut z = Vec::with_capacity(probes.len());
        let mut grad = Vec::with_capacity(probes.len());
        for (l, probe) in probes.iter().enumerate() {
            let zl = trace
                .activations
                .remove(&hook_name(l, "attn.hook_z"))
                .ok_or_else(|| Error::Hook(format!("layer {l}'s z was not captured")))?;
            z.push(zl.detach().squeeze(0)?.to_dtype(DType::F32)?);
            grad.push(match grads.get(probe.as_tensor()) {
                Some(g) => g.squeeze(0)?.to_dtype(DType::F32)?,
                // `f` does not depend on this layer's heads: the gradient is zero.
                None => Tensor::zeros((t, a.num_heads, a.head_dim), DType::F32, &self.device)?,
            });
        }
        Ok(HeadOutputGradient { value, z, grad })
    }

    /// One probe per layer, each `[b, t, H, d_h]`, for a forward from layer 0.
    fn check_probes(
        &self,
        probes: &[Var],
        first_layer: usize,
        batch: usize,
        seq: usize,
    ) -> Result<()> {
        let a = &self.arch;
        let want = [batch, seq, a.num_heads, a.head_dim];
        if first_layer != 0 || probes.len() != a.num_layers {
            return Err(Error::Hook(format!(
                "z probes need a forward from layer 0 and one probe per layer ({} given for {})",
                probes.len(),
                a.num_layers
            )));
        }
        match probes.iter().find(|p| p.dims() != want) {
            Some(p) => Err(Error::Hook(format!(
                "a z probe has shape {:?}, expected {want:?}",
                p.dims()
            ))),
            None => Ok(()),
        }
    }

    /// When only some positions' logits are wanted and nothing else is asked of the last layer, that
    /// layer computes queries, `o_proj` and the MLP for those rows only (keys and values still cover
    /// every position). `None`: the last layer runs in full.
    fn final_layer_rows(
        &self,
        hooks: &Hooks,
        seq: usize,
        ablated_layers: &[bool],
    ) -> Result<Option<Vec<usize>>> {
        let last = self.arch.num_layers - 1;
        let cap = &hooks.capture;
        let Some(positions) = &cap.logits else {
            return Ok(None);
        };
        let Some(rows) = positions.resolve(seq)? else {
            return Ok(None);
        };
        let captures_last = cap.layers.as_ref().map_or(true, |r| r.contains(&last))
            && (cap.attn_rows.is_some()
                || cap.attn_span_sums.is_some()
                || cap.full_patterns
                || cap.resid_pre.is_some()
                || cap.resid_mid.is_some()
                || cap.resid_post.is_some()
                || cap.z.is_some()
                || cap.head_results.is_some()
                || cap.attn_out.is_some()
                || cap.mlp_out.is_some());
        let intervenes_last = ablated_layers[last]
            || self.standing_heads(last).is_some()
            || hooks.patches.iter().any(|p| p.layer == last);
        if rows.len() >= seq || captures_last || intervenes_last || cap.kv_cache {
            return Ok(None);
        }
        Ok(Some(rows))
    }

    fn forward_ctx<'h>(
        &self,
        batch: usize,
        seq: usize,
        past: Option<&'h KvCache>,
        hooks: &'h Hooks,
    ) -> Result<ForwardCtx<'h>> {
        let a = &self.arch;
        let offset = past.map(KvCache::len).unwrap_or(0);
        let total = offset + seq;
        let build = |window: Option<usize>| -> Result<Option<Tensor>> {
            if seq == 1 && window.map_or(true, |w| total <= w) {
                return Ok(None); // a single new token sees every key
            }
            let mut m = vec![0f32; seq * total];
            for i in 0..seq {
                let q = offset + i;
                for k in 0..total {
                    let visible = k <= q && window.map_or(true, |w| q - k < w);
                    if !visible {
                        m[i * total + k] = f32::NEG_INFINITY;
                    }
                }
            }
            Ok(Some(Tensor::from_vec(m, (seq, total), &self.device)?))
        };
        let any_sliding = (0..a.num_layers).any(|l| a.is_sliding(l).is_some());
        let ablated_layers = self.ablated_layers(hooks, batch)?;
        let final_rows = self.final_layer_rows(hooks, seq, &ablated_layers)?;
        Ok(ForwardCtx {
            batch,
            seq,
            offset,
            causal_mask: build(None)?,
            sliding_mask: if any_sliding {
                build(a.sliding_window)?
            } else {
                None
            },
            cos: self.cos.narrow(0, offset, seq)?,
            sin: self.sin.narrow(0, offset, seq)?,
            differentiable: hooks.differentiable,
            hooks,
            past,
            append: self.append_mode(hooks),
            ablated_layers,
            final_rows,
            z_probes: None,
        })
    }

    /// In place when the cache is kept (decoding) on the CPU, whose attention kernels read the
    /// buffer's head stride; autograd needs the concatenation.
    fn append_mode(&self, hooks: &Hooks) -> Append {
        if hooks.capture.kv_cache && !hooks.differentiable && self.device.is_cpu() {
            Append::InPlace
        } else {
            Append::Concatenate
        }
    }

    /// Which layers have at least one ablated head in some row: from the ablation's host-side
    /// flags, else one read of the mask per forward.
    fn ablated_layers(&self, hooks: &Hooks, batch: usize) -> Result<Vec<bool>> {
        let a = &self.arch;
        let Some(ab) = &hooks.head_ablation else {
            return Ok(vec![false; a.num_layers]);
        };
        let dims = ab.mask.dims();
        if dims != [batch, a.num_layers, a.num_heads] {
            return Err(Error::Hook(format!(
                "head mask has shape {dims:?}, expected [{batch}, {}, {}]",
                a.num_layers, a.num_heads
            )));
        }
        if let Some(known) = &ab.layers {
            if known.len() != a.num_layers {
                return Err(Error::Hook(format!(
                    "head ablation names {} layers, the model has {}",
                    known.len(),
                    a.num_layers
                )));
            }
            return Ok(known.clone());
        }
        let min_per_layer = ab
            .mask
            .to_dtype(DType::F32)?
            .min(2)?
            .min(0)?
            .to_vec1::<f32>()?;
        Ok(min_per_layer.into_iter().map(|m| m < 1.0).collect())
    }

    /// The attention sublayer's output `[b, t_q, d]` and this forward's keys and values (after
    /// the past ones).
    fn attention(
        &self,
        ctx: &ForwardCtx,
        layer: &LayerCtx,
        x: &Tensor,
        trace: &mut Trace,
    ) -> Result<(Tensor, LayerKv)> {
        let (b, t) = (ctx.batch, ctx.seq);
        let dh = self.arch.head_dim;
        let (qkv, cache) = self.queries_keys_values(ctx, layer, x)?;
        let (h, tq) = (qkv.q.dims()[1], qkv.q.dims()[2]);
        let mut z = match self.gathered(layer.l, &qkv)? {
            Some(per_query) => self.attend(ctx, layer, &per_query, trace)?,
            None => self.attend(ctx, layer, &qkv, trace)?,
        };
        let patches: Vec<_> = ctx
            .hooks
            .patches
            .iter()
            .filter(|p| p.layer == layer.l)
            .collect();
        if !patches.is_empty() {
            z = self.apply_patches(z, &patches, b, t)?;
        }
        // [b, H, t, d_h] → [b, t, H, d_h]
        let mut z_bthd = z.transpose(1, 2)?.contiguous()?;
        if let Some(probes) = ctx.z_probes {
            z_bthd = (z_bthd + probes[layer.l].as_tensor())?;
        }
        self.capture_z(ctx, layer, &z_bthd, trace)?;
        let attn_out = linear(
            &z_bthd.reshape((b, tq, h * dh))?,
            &layer.weights.o_weight,
            None,
        )?;
        Ok((attn_out, cache))
    }

    /// A sliced layer whose KV groups kept different numbers of query heads: its keys and values
    /// gathered to one per query head (`[b, H_l, T_k, d_h]`), so attention pairs them one to one.
    /// `None` when the grouped layout applies as it is.
    fn gathered(&self, l: usize, qkv: &Qkv) -> Result<Option<Qkv>> {
        let Some(idx) = self.sliced.as_ref().and_then(|s| s.kv_gather[l].as_ref()) else {
            return Ok(None);
        };
        // `index_select` reads contiguous tensors only, and a cache with room is a view.
        Ok(Some(Qkv {
            q: qkv.q.clone(),
            k: qkv.k.contiguous()?.index_select(idx, 1)?,
            v: qkv.v.contiguous()?.index_select(idx, 1)?,
        }))
    }

    /// The layer's query and KV head counts (the kept ones on a sliced model).
    fn head_counts(&self, l: usize) -> (usize, usize) {
        match self.sliced_heads(l) {
            Some(h) => (h.query.len(), h.kv.len()),
            None => (self.arch.num_heads, self.arch.num_kv_heads),
        }
    }

    /// Rotated queries (only the layer's query rows) and keys, and values, `[b, heads, t, d_h]`;
    /// keys and values follow the past ones, and are also returned as the layer's cache.
    fn queries_keys_values(
        &self,
        ctx: &ForwardCtx,
        layer: &LayerCtx,
        x: &Tensor,
    ) -> Result<(Qkv, LayerKv)> {
        let a = &self.arch;
        let (b, t) = (ctx.batch, ctx.seq);
        let ((h, kv), dh) = (self.head_counts(layer.l), a.head_dim);
        let lw = layer.weights;
        let qkv = linear(x, &lw.qkv_weight, lw.qkv_bias.as_ref())?;
        let split = |start: usize, heads: usize| -> Result<Tensor> {
            Ok(qkv
                .narrow(2, start * dh, heads * dh)?
                .reshape((b, t, heads, dh))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = split(0, h)?;
        let k = split(h, kv)?;
        let v = split(h + kv, kv)?;
        let rotate = match (a.rope_style, ctx.differentiable) {
            (RopeStyle::RotateHalf, false) => rope,
            (RopeStyle::Interleaved, false) => rope_i,
            (RopeStyle::RotateHalf, true) => rope_slow,
            (RopeStyle::Interleaved, true) => rope_i_slow,
        };
        let (q, k) = (
            rotate(&q, &ctx.cos, &ctx.sin)?,
            rotate(&k, &ctx.cos, &ctx.sin)?,
        );
        // Only some query rows wanted (the last layer when only some logits are): keys and values
        // still cover every position.
        let q = match layer.query_rows {
            Some(rows) => index_positions(&q, rows, 2)?.contiguous()?,
            None => q,
        };
        let cache = match layer.past {
            Some(past) => past.extend(&k, &v, ctx.append)?,
            None => LayerKv::new(k, v),
        };
        let (k, v) = (cache.keys().clone(), cache.values().clone());
        Ok((Qkv { q, k, v }, cache))
    }

    /// The heads' outputs `z` `[b, H, t_q, d_h]` with the standing and this forward's head
    /// ablations applied (in that order).
    fn attend(
        &self,
        ctx: &ForwardCtx,
        layer: &LayerCtx,
        qkv: &Qkv,
        trace: &mut Trace,
    ) -> Result<Tensor> {
        let (l, a) = (layer.l, &self.arch);
        let (h, dh) = (a.num_heads, a.head_dim);
        let tq = qkv.q.dims()[2];
        let cap = &ctx.hooks.capture;
        let wants_probs = layer.in_capture
            && (cap.full_patterns || cap.attn_rows.is_some() || cap.attn_span_sums.is_some());
        let ablations = [
            self.standing_heads(l),
            ctx.hooks
                .head_ablation
                .as_ref()
                .filter(|_| ctx.ablated_layers[l]),
        ];
        let uniform_ablation = ablations
            .iter()
            .flatten()
            .any(|ab| matches!(ab.kind, AblationKind::UniformPattern));
        let (mut z, uniform_z) = if layer.query_rows.is_none()
            && !ctx.differentiable
            && !wants_probs
            && !uniform_ablation
            && tq >= 2 * self.attention_chunk
        {
            (self.chunked_attention(qkv, ctx, layer.window)?, None)
        } else {
            self.attention_probs_then_z(ctx, layer, qkv, uniform_ablation, trace)?
        };
        for ab in ablations.into_iter().flatten() {
            let (keep, drop) = self.keep_and_drop(ab, l)?;
            let replacement = match &ab.kind {
                AblationKind::Zero => None,
                AblationKind::Mean(means) => {
                    Some(means.i(l)?.to_dtype(self.dtype)?.reshape((1, h, 1, dh))?)
                }
                AblationKind::UniformPattern => Some(uniform_z.clone().ok_or_else(|| {
                    Error::Hook("the uniform pattern's output was not computed".into())
                })?),
            };
            z = z.broadcast_mul(&keep)?;
            if let Some(r) = replacement {
                z = z.broadcast_add(&r.broadcast_mul(&drop)?)?;
            }
        }
        Ok(z)
    }

    /// `blocks.{l}.attn.hook_z` and `blocks.{l}.attn.hook_result` from `z` `[b, t, H, d_h]`.
    fn capture_z(
        &self,
        ctx: &ForwardCtx,
        layer: &LayerCtx,
        z_bthd: &Tensor,
        trace: &mut Trace,
    ) -> Result<()> {
        if !layer.in_capture {
            return Ok(());
        }
        let cap = &ctx.hooks.capture;
        layer.capture(trace, &cap.z, z_bthd, "attn.hook_z")?;
        if let Some(pos) = &cap.head_results {
            let zs = match pos.resolve(ctx.seq)? {
                None => z_bthd.clone(),
                Some(list) => index_positions(z_bthd, &list, 1)?,
            };
            let results = self.head_results(layer.l, &zs)?;
            trace
                .activations
                .insert(hook_name(layer.l, "attn.hook_result"), results);
        }
        Ok(())
    }

    /// Attention that materialises the probabilities `[b, H, t_q, T_k]` (for captures, the
    /// uniform-pattern ablation and selected query rows); returns `z` `[b, H, t_q, d_h]` and, with
    /// `uniform`, what every head would output with a uniform pattern over its visible keys.
    fn attention_probs_then_z(
        &self,
        ctx: &ForwardCtx,
        layer: &LayerCtx,
        qkv: &Qkv,
        uniform: bool,
        trace: &mut Trace,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (tq, tk) = (qkv.q.dims()[2], qkv.k.dims()[2]);
        let mask = if layer.window.is_some() {
            ctx.sliding_mask.as_ref()
        } else {
            ctx.causal_mask.as_ref()
        };
        let mask = match (mask, layer.query_rows) {
            (Some(m), Some(rows)) => Some(index_positions(m, rows, 0)?),
            (m, _) => m.cloned(),
        };
        let mask = mask.as_ref();
        let probs = self.attention_probs(ctx, layer, qkv, mask)?;
        if layer.in_capture {
            self.capture_patterns(layer.l, &probs, &ctx.hooks.capture, trace)?;
        }
        let z = self.probs_times_values(ctx, &probs, &qkv.v)?;
        let uniform_z = if uniform {
            // The uniform distribution over each query's visible keys.
            let pattern = match mask {
                Some(m) => candle_nn::ops::softmax_last_dim(m)?, // exp(-inf) = 0, visible keys equal
                None => Tensor::full(1.0 / tk as f32, (tq, tk), &self.device)?,
            };
            let pattern = pattern.unsqueeze(0)?.unsqueeze(0)?.broadcast_as((
                ctx.batch,
                self.arch.num_heads,
                tq,
                tk,
            ))?;
            Some(self.probs_times_values(ctx, &pattern, &qkv.v)?)
        } else {
            None
        };
        Ok((z, uniform_z))
    }

    /// `softmax(QKᵀ·scale (soft-capped) + mask)` `[b, H, t_q, T_k]` in f32: the fused causal
    /// softmax when it applies, else candle's ops (with a backward pass when differentiable).
    fn attention_probs(
        &self,
        ctx: &ForwardCtx,
        layer: &LayerCtx,
        qkv: &Qkv,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let a = &self.arch;
        let (b, tq, tk) = (ctx.batch, qkv.q.dims()[2], qkv.k.dims()[2]);
        // Head counts from the tensors: a sliced layer has fewer (see [`Self::gathered`]).
        let (h, kv, dh) = (qkv.q.dims()[1], qkv.k.dims()[1], a.head_dim);
        let rep = h / kv;
        // Grouped-query attention without copying K/V: the `rep` query heads that share a KV head
        // are stacked along the query axis. The score scale is folded into q (t·d_h multiplies
        // instead of t·T_k).
        let qg = (&qkv.q * a.attn_scale)?.reshape((b, kv, rep * tq, dh))?;
        let scores = match super::skinny::batched_matmul_t(&qg, &qkv.k)? {
            Some(s) => s,
            None => qg.matmul(&qkv.k.t()?)?,
        };
        let scores = scores.reshape((b, h, tq, tk))?.to_dtype(DType::F32)?;
        let fused = CausalSoftmax {
            offset: ctx.offset,
            query_rows: layer.query_rows.map(<[usize]>::to_vec),
            window: layer.window,
            softcap: a.attn_logit_softcap.map(|c| c as f32),
        };
        let fused_or_scores = if ctx.differentiable {
            Err(scores)
        } else {
            causal_softmax(scores, fused)?
        };
        let mut scores = match fused_or_scores {
            Ok(p) => return Ok(p),
            Err(scores) => scores,
        };
        if let Some(cap) = a.attn_logit_softcap {
            scores = ((scores / cap)?.tanh()? * cap)?;
        }
        if let Some(m) = mask {
            scores = scores.broadcast_add(m)?;
        }
        Ok(if ctx.differentiable {
            // Built from max/exp/sum, which have backward passes.
            candle_nn::ops::softmax(&scores, D::Minus1)?
        } else {
            candle_nn::ops::softmax_last_dim(&scores)?
        })
    }

    /// `P·V` for probabilities `[b, H, t_q, T_k]` and grouped values `[b, H_kv, T_k, d_h]`.
    fn probs_times_values(&self, ctx: &ForwardCtx, p: &Tensor, v: &Tensor) -> Result<Tensor> {
        let (h, kv, dh) = (p.dims()[1], v.dims()[1], self.arch.head_dim);
        let (tq, tk) = (p.dims()[2], p.dims()[3]);
        let p = p
            .to_dtype(self.dtype)?
            .reshape((ctx.batch, kv, (h / kv) * tq, tk))?;
        let z = match super::skinny::batched_matmul(&p, v)? {
            Some(z) => z,
            None => p.matmul(v)?,
        };
        Ok(z.reshape((ctx.batch, h, tq, dh))?)
    }

    /// Causal attention in blocks of query rows: block c only meets the keys it may see (up to its
    /// last row, and from the window's start on sliding layers), which skips most of the masked
    /// upper triangle of `QKᵀ` and of `P·V`. Same result as the full computation.
    fn chunked_attention(
        &self,
        qkv: &Qkv,
        ctx: &ForwardCtx,
        window: Option<usize>,
    ) -> Result<Tensor> {
        let a = &self.arch;
        let Qkv { q, k, v } = qkv;
        let (b, t) = (ctx.batch, q.dims()[2]);
        let (h, kv, dh) = (q.dims()[1], k.dims()[1], a.head_dim);
        let rep = h / kv;
        let q = (q * a.attn_scale)?;
        let mut blocks = Vec::new();
        let mut r0 = 0;
        while r0 < t {
            let n = self.attention_chunk.min(t - r0);
            let first_q = ctx.offset + r0;
            let hi = first_q + n;
            let lo = window.map_or(0, |w| (first_q + 1).saturating_sub(w));
            let qc = q
                .narrow(2, r0, n)?
                .contiguous()?
                .reshape((b, kv, rep * n, dh))?;
            let kc = k.narrow(2, lo, hi - lo)?.contiguous()?;
            let vc = v.narrow(2, lo, hi - lo)?.contiguous()?;
            let scores = qc.matmul(&kc.t()?)?.reshape((b, h, n, hi - lo))?;
            let op = CausalSoftmax {
                offset: first_q - lo,
                query_rows: None,
                window,
                softcap: a.attn_logit_softcap.map(|c| c as f32),
            };
            let probs = match causal_softmax(scores, op)? {
                Ok(p) => p,
                Err(_) => return Err(Error::Hook("chunked attention needs f32 on the CPU".into())),
            };
            let z = probs
                .reshape((b, kv, rep * n, hi - lo))?
                .matmul(&vc)?
                .reshape((b, h, n, dh))?;
            blocks.push(z);
            r0 += n;
        }
        Ok(Tensor::cat(&blocks, 2)?)
    }

    /// Layer `l` of a head mask `[b, L, H]` as `[b, H, 1, 1]` multipliers: (keep, 1 − keep). A
    /// one-row mask (the standing ablation's) broadcasts over the batch.
    fn keep_and_drop(&self, ab: &HeadAblation, l: usize) -> Result<(Tensor, Tensor)> {
        let rows = ab.mask.dims()[0];
        let keep = ab.mask.i((.., l, ..))?.to_dtype(self.dtype)?.reshape((
            rows,
            self.arch.num_heads,
            1,
            1,
        ))?;
        let drop = (1.0 - &keep)?;
        Ok((keep, drop))
    }

    /// Per-head contributions to the residual stream: `z [b, n, H, d_h]` → `[b, n, H, d]`
    /// with `result_h = z_h · W_O[:, h·d_h..(h+1)·d_h]ᵀ` (ANALYSES.md, `heads:arc-jsd`).
    pub fn head_results(&self, layer: usize, z: &Tensor) -> Result<Tensor> {
        self.require_unsliced("per-head results")?;
        let (b, n, h, dh) = z.dims4()?;
        let d = self.arch.hidden_size;
        let z = z.reshape((b * n, h, 1, dh))?;
        let o = self.o_per_head[layer].unsqueeze(0)?;
        Ok(z.broadcast_matmul(&o)?.reshape((b, n, h, d))?)
    }

    fn capture_patterns(
        &self,
        l: usize,
        probs: &Tensor,
        cap: &Capture,
        trace: &mut Trace,
    ) -> Result<()> {
        let t = probs.dims()[2];
        if cap.full_patterns {
            trace
                .activations
                .insert(hook_name(l, "attn.hook_pattern"), probs.clone());
        } else if let Some(rows) = &cap.attn_rows {
            let rows = match rows.resolve(t)? {
                None => probs.clone(),
                Some(list) => index_positions(probs, &list, 2)?,
            };
            trace
                .activations
                .insert(hook_name(l, "attn.hook_pattern"), rows);
        }
        if let Some((rows, spans)) = &cap.attn_span_sums {
            let rows = match rows.resolve(t)? {
                None => probs.clone(),
                Some(list) => index_positions(probs, &list, 2)?,
            };
            let tk = rows.dims()[3];
            let mut sums = Vec::with_capacity(spans.len());
            for s in spans {
                if s.end > tk || s.start > s.end {
                    return Err(Error::Hook(format!(
                        "key span {s:?} is outside the {tk} keys"
                    )));
                }
                sums.push(if s.is_empty() {
                    rows.narrow(3, 0, 1)?.zeros_like()?
                } else {
                    rows.narrow(3, s.start, s.len())?.sum_keepdim(3)?
                });
            }
            if !sums.is_empty() {
                trace.activations.insert(
                    hook_name(l, "attn.hook_pattern_span_sum"),
                    Tensor::cat(&sums, 3)?,
                );
            }
        }
        Ok(())
    }

    fn apply_patches(
        &self,
        z: Tensor,
        patches: &[&super::hooks::HeadPatch],
        b: usize,
        t: usize,
    ) -> Result<Tensor> {
        let (h, dh) = (self.arch.num_heads, self.arch.head_dim);
        let mut keep = vec![1f32; b * h * t * dh];
        let mut values = vec![0f32; b * h * t * dh];
        for p in patches {
            if p.row >= b || p.head >= h {
                return Err(Error::Hook(format!(
                    "patch row {} / head {} out of range",
                    p.row, p.head
                )));
            }
            let vals = p.z.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
            let vals = vals.reshape((p.positions.len(), dh)).map_err(|_| {
                Error::Hook(format!(
                    "patch for L{}H{} needs z of shape [{}, {dh}]",
                    p.layer,
                    p.head,
                    p.positions.len()
                ))
            })?;
            let vals = vals.to_vec2::<f32>()?;
            for (i, &pos) in p.positions.iter().enumerate() {
                if pos >= t {
                    return Err(Error::Hook(format!(
                        "patch position {pos} is outside the {t}-token input"
                    )));
                }
                let base = ((p.row * h + p.head) * t + pos) * dh;
                keep[base..base + dh].fill(0.0);
                values[base..base + dh].copy_from_slice(&vals[i]);
            }
        }
        let keep = Tensor::from_vec(keep, (b, h, t, dh), &self.device)?.to_dtype(self.dtype)?;
        let values = Tensor::from_vec(values, (b, h, t, dh), &self.device)?.to_dtype(self.dtype)?;
        Ok(((z * keep)? + values)?)
    }

    fn mlp(&self, lw: &LayerWeights, x: &Tensor, differentiable: bool) -> Result<Tensor> {
        let ff = self.arch.intermediate_size;
        let gu = linear(x, &lw.gate_up_weight, None)?;
        let gelu = self.arch.activation == Activation::GeluTanh;
        if !differentiable {
            if let Some(act_up) = gated_activation(&gu, GatedActivation { ff, gelu })? {
                return linear(&act_up, &lw.down_weight, None);
            }
        }
        let gate = gu.narrow(D::Minus1, 0, ff)?;
        let up = gu.narrow(D::Minus1, ff, ff)?;
        let act = match self.arch.activation {
            Activation::Silu => gate.silu()?,
            Activation::GeluTanh => gate.gelu()?,
        };
        linear(&(act * up)?, &lw.down_weight, None)
    }
}

/// `x [m, k] · wᵀ` for `w [n, k]`: with a few rows (decoding), one parallel pass over `w`, its
/// integer form when the GGUF file gave one ([`super::skinny`], [`super::packed`]); through OpenBLAS when built with the `openblas` feature and the product is
/// large enough to gain ([`super::blas`]), else candle's `gemm`; in a differentiable forward, with
/// no gradient for `w` ([`super::frozen`]).
fn matmul_t(x: &Tensor, weight: &Weight) -> Result<Tensor> {
    let w = weight.tensor();
    if let Some(y) = super::frozen::matmul_t(x, w)? {
        return Ok(y);
    }
    if let Some(p) = weight.packed() {
        if let Some(y) = super::skinny::matmul_t_packed(x, p)? {
            return Ok(y);
        }
    }
    if let Some(y) = super::skinny::matmul_t(x, w)? {
        return Ok(y);
    }
    #[cfg(feature = "openblas")]
    if let Some(y) = super::blas::matmul_t(x, w)? {
        return Ok(y);
    }
    Ok(x.matmul(&w.t()?)?)
}

/// `x [.., in] · wᵀ (+ b)` as one 2-D matmul.
fn linear(x: &Tensor, w: &Weight, bias: Option<&Tensor>) -> Result<Tensor> {
    let (&in_dim, lead) = x
        .dims()
        .split_last()
        .ok_or_else(|| Error::Hook("a linear layer's input needs a feature dimension".into()))?;
    let y = matmul_t(&x.reshape(((), in_dim))?, w)?;
    let y = match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    let out: Vec<usize> = lead.iter().copied().chain([w.dims()[0]]).collect();
    Ok(y.reshape(out)?)
}

fn index_positions(x: &Tensor, positions: &[usize], dim: usize) -> Result<Tensor> {
    let idx: Vec<u32> = positions.iter().map(|&p| p as u32).collect();
    let idx = Tensor::from_vec(idx, positions.len(), x.device())?;
    Ok(x.index_select(&idx, dim)?)
}

fn capture(
    trace: &mut Trace,
    positions: &Option<Positions>,
    x: &Tensor,
    dim: usize,
    name: String,
) -> Result<()> {
    let Some(pos) = positions else { return Ok(()) };
    let kept = match pos.resolve(x.dims()[dim])? {
        None => x.clone(),
        Some(list) => index_positions(x, &list, dim)?,
    };
    trace.activations.insert(name, kept);
    Ok(())
}

/// The value of the differentiated function's output, which must be a scalar.
fn scalar_value(out: &Tensor) -> Result<f64> {
    if out.elem_count() != 1 {
        return Err(Error::Hook(format!(
            "the differentiated function must return a scalar, not shape {:?}",
            out.dims()
        )));
    }
    Ok(out.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?[0])
}
