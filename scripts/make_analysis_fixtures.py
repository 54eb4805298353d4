#!/usr/bin/env python3
"""Reference values for headscope's analyses (ANALYSES.md), computed independently with PyTorch/transformers.

Rust tests read the files this script writes and compare within 1e-4; they never run Python. The script and its
outputs are committed together and the script is only re-run by hand when a definition in ANALYSES.md changes.

Usage (from the repository root):

    ~/.cache/headscope/venv/bin/python scripts/make_analysis_fixtures.py

It reads the tiny fixture models `tests/fixtures/{qwen2,llama,gemma2}/` (written by scripts/make_fixtures.py) and writes

    tests/fixtures/analysis/sample.json            the one MIRAGE-format sample, with its fixed masks and head set
    tests/fixtures/analysis/{qwen2,llama,gemma2}.json  expected values per model (schema: tests/fixtures/README.md)

Everything runs on CPU in float32 with eager attention. Post-processing (softmax, divergences, sums) is done in
float64. Each model is analysed a second time with float64 weights; the largest difference between the two runs is
written next to the values (`float64_vs_float32`) so a Rust test knows how much of a mismatch is plain rounding.

Deliberate reading of ANALYSES.md where it leaves a choice open is listed in NOTES below (also written to the files).
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
OUT = FIXTURES / "analysis"
FAMILIES = ["qwen2", "llama", "gemma2"]

DIVERGENCES = ["jsd", "jsd_arc_code", "kl"]
LENS_TOP_K = 5
LASSO_ALPHA = 0.01
MIRAGE_CTI = 1.0          # cti threshold = mean + CTI * std
MIRAGE_CCI = -5.0         # keep scores within 5 % of the range below the max
MIRAGE_MAX_CITATIONS = 3
NULL_QUESTION = "N/A"     # QRHead's null query
TOPK_DROP_KS = [1, 2]     # k = 1 .. min(3, n - 1) with n = 3 documents

# The one sample. ASCII only, so Python character offsets equal the byte offsets the Rust side uses.
SAMPLE = {
    "id": "headscope-analysis-fixture-0001",
    "question": "What is the capital of Veskar?",
    "docs": [
        {"title": "Harrowgate", "text": "Harrowgate is a market town. The river runs past it."},
        {"title": "Brennholm", "text": "Brennholm is the capital of Veskar. It is on the river."},
        {"title": "Millbrook", "text": "Millbrook is a village in the hills."},
    ],
    "gold": 1,
    "answers": ["Brennholm"],
    # Two plain sentences; words copied from the gold document.
    "output": "Brennholm is the capital. It is on Veskar.",
    # ContextCite design: 16 keep-masks over the 3 documents (deliberately unbalanced, every column varies).
    "context_cite_masks": [
        [1, 1, 1], [0, 1, 1], [1, 0, 1], [1, 1, 0],
        [0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 0],
        [1, 1, 0], [0, 1, 1], [1, 0, 0], [1, 1, 1],
        [0, 1, 0], [1, 0, 1], [0, 0, 1], [1, 1, 0],
    ],
    # LDS hold-out masks: the 8 distinct masks (no repeated y, so no ties on that side of the Spearman).
    "heldout_masks": [
        [0, 1, 1], [1, 0, 0], [1, 1, 1], [0, 0, 1],
        [1, 1, 0], [0, 1, 0], [1, 0, 1], [0, 0, 0],
    ],
    # Heads ablated together in `ablation_fixed_heads` ([layer, head]); layers 0 and 2 are sliding in gemma2.
    "curve_heads": [[0, 1], [1, 2], [2, 3]],
}

NOTES = (
    "Reference for ANALYSES.md on the tiny fixture models (CPU, float32 weights, eager attention; softmax, "
    "divergences and sums in float64). Choices where ANALYSES.md leaves room: "
    "(1) heads.qrhead_doc_totals = sum over all (layer, head) of the per-head qr score of each document (per-head "
    "tau); heads.qrhead_full_heads_doc_scores is QRHead's full_heads retriever instead (S_cal summed over all heads "
    "first, one tau per document). "
    "(2) QRHead S is taken from the attention rows of the teacher-forced run (rows before P do not see the answer); "
    "the null prompt is run whole instead of reusing the prefix cache (same values). "
    "(3) Mean ablation uses each head's z averaged over all P+A-1 positions of the clean run of prompt ++ answer[:-1]. "
    "(4) Uniform ablation replaces the head's softmax pattern by 1/|visible keys| (causal; gemma2 sliding layers: "
    "the last 8 keys) inside HF's eager attention, then recomputes pattern @ V. "
    "(5) MIRAGE gradients are taken w.r.t. the embedding-table rows: inputs_embeds = row * embed_scale (gemma2: 8) "
    "is passed to the model, because transformers 5.23 scales inside Gemma2TextScaledWordEmbedding, not inside "
    "Gemma2Model.forward; so the gemma2 gradient is 8x the gradient w.r.t. inputs_embeds. "
    "(6) MIRAGE cited answer: a sentence with cited documents is written '[i][j] sentence' (1-based, best first), "
    "one without citations as the bare sentence; sentences are joined by one space. An answer token whose decoded "
    "text is all whitespace is placed by its first character (RagPrompt's anchor rule), so a space inside a sentence "
    "belongs to it and the space between two sentences to none (-1 in attr.mirage_token_sentence). "
    "(7) Ties in rankings (top source, top-k sources) are broken by the lower index. "
    "(8) LDS = Spearman (scipy, average ranks for ties) between sum_j v_j score_j (+ intercept for ContextCite) "
    "and y_k = logit P(whole answer) on the held-out masks; null where one side is constant. "
    "(9) faithfulness.topk_drop uses every attribution's own ranking."
)


# ---------------------------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------------------------

def log(msg: str) -> None:
    print(msg, flush=True)


def to_py(x):
    """numpy / torch values -> plain JSON values (full float64 precision; NaN -> null)."""
    if isinstance(x, torch.Tensor):
        return to_py(x.detach().cpu().double().numpy() if x.is_floating_point() else x.detach().cpu().numpy())
    if isinstance(x, np.ndarray):
        return [to_py(v) for v in x] if x.ndim else to_py(x.item())
    if isinstance(x, (list, tuple)):
        return [to_py(v) for v in x]
    if isinstance(x, dict):
        return {k: to_py(v) for k, v in x.items()}
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if math.isnan(x) else float(x)
    return x


def dump_json(obj: dict) -> str:
    """Two levels expanded (top-level keys and the keys of top-level objects), everything deeper on one line."""
    def inner(v, indent):
        if isinstance(v, dict) and indent < 4:
            pad = " " * (indent + 2)
            body = ",\n".join(f"{pad}{json.dumps(k)}: {inner(x, indent + 2)}" for k, x in v.items())
            return "{\n" + body + "\n" + " " * indent + "}"
        return json.dumps(v, ensure_ascii=False, allow_nan=False)
    return inner(obj, 0) + "\n"


def log_softmax64(logits: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.detach().double(), dim=-1)


def divergence(logp: torch.Tensor, logq: torch.Tensor, kind: str) -> torch.Tensor:
    """D(P, Q) per row, P the unperturbed run; inputs are float64 log-probabilities [..., V]."""
    p, q = logp.exp(), logq.exp()
    if kind in ("jsd", "jsd_arc_code"):
        m = 0.5 * (p + q)
        logm = m.log()
        if kind == "jsd":
            return 0.5 * (p * (logp - logm)).sum(-1) + 0.5 * (q * (logq - logm)).sum(-1)
        return 0.5 * (m * (logm - logp)).sum(-1) + 0.5 * (m * (logm - logq)).sum(-1)
    if kind == "kl":
        return (p * (logp - logq)).sum(-1)
    if kind == "kl_rev":
        return (q * (logq - logp)).sum(-1)
    raise ValueError(kind)


def ranking(scores) -> list[int]:
    """Indices best first; ties broken by the lower index."""
    return sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))


# ---------------------------------------------------------------------------------------------------------------
# prompt construction (mirrors src/prompt.rs, Mirage style)
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class Span:
    chars: tuple[int, int]
    tokens: tuple[int, int]


@dataclass
class Prompt:
    text: str
    ids: list[int]
    offsets: list[tuple[int, int]]
    docs: list[Span]          # one per sample document; removed ones are empty
    question: Span
    message_start: int


def compose_message(sample: dict, keep: list[bool], question: str | None = None):
    """User message + character ranges (relative to the message) of every document line and of the question.
    Removed documents get an empty range where they would have been; kept ones keep their 1-based number."""
    msg = ""
    doc_ranges = []
    wrote = False
    for i, doc in enumerate(sample["docs"]):
        if not keep[i]:
            doc_ranges.append((len(msg), len(msg)))
            continue
        if wrote:
            msg += "\n"
        line = f"Document [{i + 1}](Title: {doc['title'].strip()}): {doc['text'].strip()}"
        doc_ranges.append((len(msg), len(msg) + len(line)))
        msg += line
        wrote = True
    if wrote:
        msg += "\n\n"  # with every document removed the message is the question alone
    q = (question if question is not None else sample["question"]).strip()
    q_range = (len(msg), len(msg) + len(q))
    msg += q
    return msg, doc_ranges, q_range


def normalise_offsets(text: str, offsets) -> list[tuple[int, int]]:
    """engine::tokenizer::encode_with_offsets: clamp into the text and keep starts/ends non-decreasing."""
    out = []
    prev_s = prev_e = 0
    for s, e in offsets:
        s = min(s, len(text))
        e = max(min(e, len(text)), s)
        s = max(s, prev_s)
        e = max(e, prev_e, s)
        out.append((s, e))
        prev_s, prev_e = s, e
    return out


def token_anchors(text: str, offsets) -> list[int]:
    """Per token the offset of its first non-whitespace character (its start if all whitespace), running max."""
    anchors = []
    prev = 0
    for s, e in offsets:
        piece = text[s:e]
        stripped = len(piece) - len(piece.lstrip())
        anchor = s + stripped if stripped < len(piece) else s
        prev = max(prev, anchor)
        anchors.append(prev)
    return anchors


def to_span(anchors: list[int], a: int, b: int) -> Span:
    """Characters [a, b) cover tokens [first anchor >= a, first anchor >= b)."""
    import bisect

    start = bisect.bisect_left(anchors, a)
    end = max(bisect.bisect_left(anchors, b), start)
    return Span((a, b), (start, end))


class Tokenizers:
    """The HF tokenizer (chat template, encoding with offsets) plus the raw `tokenizers` one Rust uses."""

    def __init__(self, family: str):
        from tokenizers import Tokenizer
        from transformers import AutoTokenizer

        self.hf = AutoTokenizer.from_pretrained(str(FIXTURES / family))
        self.raw = Tokenizer.from_file(str(FIXTURES / family / "tokenizer.json"))

    def build(self, sample: dict, keep: list[bool] | None = None, question: str | None = None) -> Prompt:
        keep = keep if keep is not None else [True] * len(sample["docs"])
        msg, doc_ranges, q_range = compose_message(sample, [bool(k) for k in keep], question)
        text = self.hf.apply_chat_template([{"role": "user", "content": msg}], tokenize=False,
                                           add_generation_prompt=True)
        assert text.isascii(), "character offsets must equal byte offsets"
        at = text.find(msg)
        assert at >= 0, "the chat template changed the user message"
        enc = self.hf(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        offsets = normalise_offsets(text, enc["offset_mapping"])
        raw = self.raw.encode(text, add_special_tokens=False)
        assert raw.ids == ids and normalise_offsets(text, raw.offsets) == offsets, "HF and raw tokenizers disagree"
        anchors = token_anchors(text, offsets)
        docs = [to_span(anchors, at + a, at + b) for a, b in doc_ranges]
        question_span = to_span(anchors, at + q_range[0], at + q_range[1])
        return Prompt(text, ids, offsets, docs, question_span, at)

    def encode(self, text: str) -> list[int]:
        ids = self.hf.encode(text, add_special_tokens=False)
        assert self.raw.encode(text, add_special_tokens=False).ids == ids
        return ids

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def split_answer_sentences(text: str) -> list[tuple[int, int]]:
    """Enough of src/prompt.rs `split_sentences` for plain text: cut after '.', '!' or '?' when whitespace and an
    upper-case letter or digit follow; ranges trimmed. (The fixture answer has no abbreviations or line breaks.)"""
    out, start, i = [], 0, 0
    while i < len(text):
        if text[i] in ".!?":
            j = i + 1
            k = j
            while k < len(text) and text[k].isspace():
                k += 1
            if k > j and k < len(text) and (text[k].isupper() or text[k].isdigit()):
                out.append((start, j))
                start, i = k, k
                continue
        i += 1
    out.append((start, len(text)))
    trimmed = []
    for a, b in out:
        piece = text[a:b]
        lead = len(piece) - len(piece.lstrip())
        trail = len(piece) - len(piece.rstrip())
        if lead + trail < len(piece):
            trimmed.append((a + lead, b - trail))
    return trimmed


# ---------------------------------------------------------------------------------------------------------------
# model instrumentation
# ---------------------------------------------------------------------------------------------------------------

class _AttnState:
    """What the wrapped eager attention does during the current forward (set by Instrumented.run)."""
    model: "Instrumented | None" = None
    uniform: dict = {}
    weights: dict | None = None


_ATTN = _AttnState()


def _install_attention_wrapper() -> None:
    """Wrap each family's module-level `eager_attention_forward` (looked up at call time by the attention module):
    HF computes the pattern exactly as usual, and we can record it or replace a head's pattern by the uniform
    distribution over its visible keys (then recompute pattern @ V)."""
    for name in ("qwen2", "llama", "gemma2"):
        mod = importlib.import_module(f"transformers.models.{name}.modeling_{name}")
        orig = mod.eager_attention_forward
        if getattr(orig, "_headscope", False):
            continue

        def wrapped(module, query, key, value, attention_mask, *args, _orig=orig, **kwargs):
            out, weights = _orig(module, query, key, value, attention_mask, *args, **kwargs)
            st = _ATTN
            if st.model is None:
                return out, weights
            layer = module.layer_idx
            heads = st.uniform.get(layer, [])
            if heads:
                t_q, t_k = weights.shape[-2:]
                assert t_q == t_k, "no KV cache here"
                vis = st.model.visible(layer, t_k)
                if attention_mask is not None:
                    assert torch.equal(attention_mask[0, 0] == 0, vis), "visibility differs from HF's mask"
                uniform = vis.to(weights.dtype)
                uniform = uniform / uniform.sum(-1, keepdim=True)
                weights = weights.clone()
                for h in heads:
                    weights[:, h] = uniform
                groups = module.num_key_value_groups
                v = torch.repeat_interleave(value, groups, dim=1)  # query head h uses KV head h // groups
                out = torch.matmul(weights, v).transpose(1, 2).contiguous()
            if st.weights is not None:
                st.weights[layer] = weights[0].detach().clone()
            return out, weights

        wrapped._headscope = True
        mod.eager_attention_forward = wrapped


class Instrumented:
    """A tiny fixture model with hooks: captures (resid_pre/mid/post, z, mlp_out, o_out, attention) and
    interventions (edit z at the o_proj input, uniform attention pattern)."""

    def __init__(self, family: str, dtype: torch.dtype):
        from transformers import AutoModelForCausalLM

        _install_attention_wrapper()
        self.family = family
        self.model = AutoModelForCausalLM.from_pretrained(str(FIXTURES / family), attn_implementation="eager",
                                                          dtype=torch.float32)
        self.model.to(dtype).eval()
        self.dtype = dtype
        cfg = self.model.config
        self.cfg = cfg
        self.L = cfg.num_hidden_layers
        self.H = cfg.num_attention_heads
        self.KV = cfg.num_key_value_heads
        self.dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.d = cfg.hidden_size
        self.layers = self.model.model.layers
        self.final_softcap = getattr(cfg, "final_logit_softcapping", None)
        # Gemma2TextScaledWordEmbedding multiplies the table row by sqrt(hidden); plain embeddings by nothing.
        self.embed_scale = float(getattr(self.model.model.embed_tokens, "scalar_embed_scale", 1.0))

    def layer_kind(self, layer: int) -> str:
        types = getattr(self.cfg, "layer_types", None)
        return types[layer] if types else "full_attention"

    def visible(self, layer: int, T: int) -> torch.Tensor:
        """Bool [T, T]: key j visible to query i (causal; sliding layers also i - j < window)."""
        i = torch.arange(T)[:, None]
        j = torch.arange(T)[None, :]
        vis = j <= i
        if self.layer_kind(layer) == "sliding_attention":
            vis = vis & ((i - j) < self.cfg.sliding_window)
        return vis

    def w_o(self, layer: int) -> torch.Tensor:
        return self.layers[layer].self_attn.o_proj.weight.detach()  # [d, H*dh]

    def head_results(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """z [T, H, dh] -> per-head results [T, H, d]: z_h @ W_O[:, h*dh:(h+1)*dh]^T."""
        return torch.einsum("thk,dhk->thd", z, self.w_o(layer).reshape(self.d, self.H, self.dh))

    @torch.no_grad()
    def lens(self, x: torch.Tensor) -> torch.Tensor:
        """softcap(lm_head(final_norm(x))), the norm recomputed on x itself."""
        logits = self.model.lm_head(self.model.model.norm(x))
        if self.final_softcap is not None:
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        return logits

    def pre_mlp_norm(self, layer):
        """The norm whose input is resid_mid."""
        return layer.pre_feedforward_layernorm if self.family == "gemma2" else layer.post_attention_layernorm

    def run(self, ids: list[int] | None = None, *, embeds: torch.Tensor | None = None, capture: bool = False,
            z_edit: dict | None = None, uniform: dict | None = None):
        """One forward of one sequence. z_edit: {layer: fn(z [T, H*dh]) -> z} applied at the o_proj input;
        uniform: {layer: [heads]}. Returns (logits [T, V], captures)."""
        cap: dict = {k: {} for k in ("resid_pre", "resid_mid", "resid_post", "z", "mlp_out", "o_out")} if capture else {}
        handles = []
        z_edit = z_edit or {}
        for l, layer in enumerate(self.layers):
            if capture:
                def pre_layer(mod, args, kwargs, l=l):
                    hs = args[0] if args else kwargs["hidden_states"]
                    cap["resid_pre"][l] = hs[0].detach().clone()

                def post_layer(mod, args, kwargs, output, l=l):
                    hs = output[0] if isinstance(output, tuple) else output
                    cap["resid_post"][l] = hs[0].detach().clone()

                def mid(mod, args, l=l):
                    cap["resid_mid"][l] = args[0][0].detach().clone()

                def mlp_out(mod, args, output, l=l):
                    cap["mlp_out"][l] = output[0].detach().clone()

                def o_out(mod, args, output, l=l):
                    cap["o_out"][l] = output[0].detach().clone()

                handles += [
                    layer.register_forward_pre_hook(pre_layer, with_kwargs=True),
                    layer.register_forward_hook(post_layer, with_kwargs=True),
                    self.pre_mlp_norm(layer).register_forward_pre_hook(mid),
                    layer.mlp.register_forward_hook(mlp_out),
                    layer.self_attn.o_proj.register_forward_hook(o_out),
                ]
            if capture or l in z_edit:
                def o_pre(mod, args, l=l):
                    z = args[0]
                    if l in z_edit:
                        z = z_edit[l](z.clone())
                    if capture:
                        cap["z"][l] = z[0].detach().clone().reshape(z.shape[1], self.H, self.dh)
                    return (z,) if l in z_edit else None

                handles.append(layer.self_attn.o_proj.register_forward_pre_hook(o_pre))

        _ATTN.model, _ATTN.uniform, _ATTN.weights = self, uniform or {}, ({} if capture else None)
        try:
            if embeds is not None:
                out = self.model(inputs_embeds=embeds[None], use_cache=False)
            else:
                with torch.no_grad():
                    out = self.model(input_ids=torch.tensor([ids]), use_cache=False)
        finally:
            for h in handles:
                h.remove()
            attn = _ATTN.weights
            _ATTN.model, _ATTN.uniform, _ATTN.weights = None, {}, None
        if capture:
            cap["attn"] = attn  # {layer: [H, T, T]}
        return out.logits[0], cap


def zero_heads(heads, dh):
    """z_edit that zeroes the given heads' slices of the o_proj input at every position."""
    def edit(z):
        for h in heads:
            z[:, :, h * dh:(h + 1) * dh] = 0.0
        return z
    return edit


# ---------------------------------------------------------------------------------------------------------------
# the analyses
# ---------------------------------------------------------------------------------------------------------------

class Analysis:
    """Every ANALYSES.md method for SAMPLE on one model."""

    def __init__(self, family: str, dtype: torch.dtype):
        self.family = family
        self.m = Instrumented(family, dtype)
        self.tok = Tokenizers(family)
        self.sample = SAMPLE
        self.n = len(SAMPLE["docs"])
        self.gold = SAMPLE["gold"]
        self.prompt = self.tok.build(SAMPLE)
        self.P = len(self.prompt.ids)
        self.answer = self.tok.encode(SAMPLE["output"])
        self.A = len(self.answer)
        assert self.tok.decode(self.answer) == SAMPLE["output"]
        self.checks: dict = {}
        self._prompts: dict = {}
        self._logits: dict = {}
        # the clean teacher-forced run, with everything captured
        self.clean_logits, self.cap = self.m.run(self.input_ids(self.prompt), capture=True)
        self.clean_lp = self.answer_logprobs(self.clean_logits, self.P)

    # ---- shared pieces ----

    def input_ids(self, prompt: Prompt) -> list[int]:
        """Teacher forcing: prompt ++ a_0 .. a_{A-2}."""
        return prompt.ids + self.answer[:-1]

    def positions(self, prompt: Prompt) -> slice:
        """The answer-predicting positions P-1 .. P+A-2."""
        P = len(prompt.ids)
        return slice(P - 1, P - 1 + self.A)

    def answer_logprobs(self, logits: torch.Tensor, P: int) -> np.ndarray:
        lp = log_softmax64(logits[P - 1:P - 1 + self.A])
        return lp[torch.arange(self.A), torch.tensor(self.answer)].numpy()

    def prompt_for(self, keep) -> Prompt:
        key = tuple(bool(k) for k in keep)
        if key not in self._prompts:
            self._prompts[key] = self.tok.build(self.sample, list(key))
        return self._prompts[key]

    def logits_for(self, keep) -> torch.Tensor:
        """Logits of the leave-out prompt with the documents where keep is true (cached)."""
        key = tuple(bool(k) for k in keep)
        if key not in self._logits:
            self._logits[key], _ = self.m.run(self.input_ids(self.prompt_for(key)))
        return self._logits[key]

    def answer_logprob_for(self, keep) -> float:
        return float(self.answer_logprobs(self.logits_for(keep), len(self.prompt_for(keep).ids)).sum())

    def answer_dists(self, keep) -> torch.Tensor:
        """float64 log-probs [A, V] at the answer-predicting positions of a leave-out prompt."""
        prompt = self.prompt_for(keep)
        return log_softmax64(self.logits_for(keep)[self.positions(prompt)])

    def without(self, docs) -> list[bool]:
        return [i not in docs for i in range(self.n)]

    # ---- 1. basics ----

    def basics(self) -> dict:
        p = self.prompt
        return {
            "prompt_text": p.text,
            "prompt_ids": p.ids,
            "answer_ids": self.answer,
            "user_message_start": p.message_start,
            "doc_spans": [list(s.tokens) for s in p.docs],
            "doc_char_spans": [list(s.chars) for s in p.docs],
            "question_span": list(p.question.tokens),
            "question_char_span": list(p.question.chars),
            "answer_logprobs": self.clean_lp,
            "answer_logprob": float(self.clean_lp.sum()),
        }

    # ---- 2. logit lens ----

    def logit_lens(self) -> dict:
        pos = self.positions(self.prompt)
        ans = torch.tensor(self.answer)
        rows = {"labels": [], "top_ids": [], "top_probs": [], "answer_prob": [], "answer_rank": []}
        min_gap = math.inf
        for l in range(self.m.L):
            for point in ("pre", "mid", "post"):
                logits = self.m.lens(self.cap[f"resid_{point}"][l][pos])  # [A, V]
                probs = torch.softmax(logits.double(), -1)
                top = torch.topk(probs, LENS_TOP_K)
                ans_logit = logits[torch.arange(self.A), ans]
                rank = (logits > ans_logit[:, None]).sum(-1)
                # how close the ranking is to a tie (top-k order, and the answer's rank)
                six = torch.topk(logits.double(), LENS_TOP_K + 1).values
                diffs = (logits.double() - ans_logit.double()[:, None]).abs()
                diffs[torch.arange(self.A), ans] = math.inf
                min_gap = min(min_gap, float((six[:, :-1] - six[:, 1:]).min()), float(diffs.min()))
                rows["labels"].append(f"{l}_{point}")
                rows["top_ids"].append(top.indices)
                rows["top_probs"].append(top.values)
                rows["answer_prob"].append(probs[torch.arange(self.A), ans])
                rows["answer_rank"].append(rank)
        self.checks["logit_lens_min_logit_gap"] = min_gap
        last = self.m.lens(self.cap["resid_post"][self.m.L - 1])
        self.checks["lens_of_last_resid_post_vs_logits"] = float((last - self.clean_logits).abs().max())
        return rows

    # ---- 3. heads / MLPs: ARC-JSD lens divergence ----

    def head_arc_jsd(self, removed: int) -> tuple[np.ndarray, np.ndarray]:
        keep_b = self.without([removed])
        prompt_b = self.prompt_for(keep_b)
        _, cap_b = self.m.run(self.input_ids(prompt_b), capture=True)
        pos_a, pos_b = self.positions(self.prompt), self.positions(prompt_b)
        heads = np.zeros((self.m.L, self.m.H))
        mlp = np.zeros(self.m.L)
        worst = 0.0
        for l in range(self.m.L):
            ra = self.m.head_results(l, self.cap["z"][l][pos_a])  # [A, H, d]
            rb = self.m.head_results(l, cap_b["z"][l][pos_b])
            d = divergence(log_softmax64(self.m.lens(ra)), log_softmax64(self.m.lens(rb)), "jsd")  # [A, H]
            heads[l] = d.sum(0).numpy()
            ma = log_softmax64(self.m.lens(self.cap["mlp_out"][l][pos_a]))
            mb = log_softmax64(self.m.lens(cap_b["mlp_out"][l][pos_b]))
            mlp[l] = float(divergence(ma, mb, "jsd").sum())
            worst = max(worst, float(d.max()))
        self.checks["head_jsd_max_per_position"] = worst
        assert worst <= math.log(2) + 1e-12  # the standard JSD is bounded
        return heads, mlp

    # ---- 4. summed attention ----

    def summed_attention(self) -> tuple[np.ndarray, np.ndarray]:
        s, e = self.prompt.docs[self.gold].tokens
        pos = self.positions(self.prompt)
        last = np.zeros((self.m.L, self.m.H))
        from_answer = np.zeros((self.m.L, self.m.H))
        for l in range(self.m.L):
            a = self.cap["attn"][l].double()  # [H, T, T]
            last[l] = a[:, self.P - 1, s:e].sum(-1).numpy()
            from_answer[l] = a[:, pos, s:e].sum(-1).mean(-1).numpy()
        return last, from_answer

    # ---- 5. retrieval heads ----

    def retrieval(self) -> np.ndarray:
        s, e = self.prompt.docs[self.gold].tokens
        ids = self.input_ids(self.prompt)
        score = np.zeros((self.m.L, self.m.H))
        min_gap = math.inf
        for l in range(self.m.L):
            a = self.cap["attn"][l].numpy()  # model dtype, as the Rust side compares
            for h in range(self.m.H):
                for t in range(self.A):
                    q = self.P - 1 + t
                    row = a[h, q, :q + 1]
                    j = int(np.argmax(row))  # first index on ties
                    top2 = np.sort(row)[-2:] if q > 0 else np.array([0.0, 1.0])
                    min_gap = min(min_gap, float(top2[1] - top2[0]))
                    if s <= j < e and ids[j] == self.answer[t]:
                        score[l, h] += 1.0 / (e - s)
        self.checks["retrieval_min_argmax_gap"] = min_gap
        return score

    # ---- 6. QRHead ----

    def qrhead(self) -> dict:
        qs = self.prompt.question.tokens[0]
        null = self.tok.build(self.sample, question=NULL_QUESTION)
        assert null.ids[:qs] == self.prompt.ids[:qs], "null-query prompt differs before the question"
        assert null.question.tokens[0] == qs
        _, null_cap = self.m.run(null.ids, capture=True)
        P_null = len(null.ids)
        qr = np.zeros((self.m.L, self.m.H, self.n))
        s_cal_total = torch.zeros(qs, dtype=torch.float64)
        for l in range(self.m.L):
            S = self.cap["attn"][l].double()[:, qs:self.P, :qs].mean(1)      # [H, qs]
            S_null = null_cap["attn"][l].double()[:, qs:P_null, :qs].mean(1)
            S_cal = S - S_null
            s_cal_total += S_cal.sum(0)
            for h in range(self.m.H):
                for d, span in enumerate(self.prompt.docs):
                    qr[l, h, d] = qr_score(S_cal[h, span.tokens[0]:span.tokens[1]])
        full_heads = [qr_score(s_cal_total[sp.tokens[0]:sp.tokens[1]]) for sp in self.prompt.docs]
        return {
            "qrhead": qr[:, :, self.gold],
            "qrhead_doc_totals": qr.sum((0, 1)),
            "qrhead_full_heads_doc_scores": full_heads,
            "qrhead_query_span": [qs, self.P],
            "qrhead_null_prompt_ids": null.ids,
            "qrhead_null_query_span": [qs, P_null],
        }

    # ---- 7. head ablation ----

    def ablation(self) -> np.ndarray:
        base = float(self.clean_lp.sum())
        out = np.zeros((self.m.L, self.m.H))
        ids = self.input_ids(self.prompt)
        for l in range(self.m.L):
            for h in range(self.m.H):
                logits, _ = self.m.run(ids, z_edit={l: zero_heads([h], self.m.dh)})
                out[l, h] = float(self.answer_logprobs(logits, self.P).sum()) - base
            # sanity: knocking out a whole layer's attention changes the answer's log-prob
            logits, _ = self.m.run(ids, z_edit={l: zero_heads(range(self.m.H), self.m.dh)})
            delta = abs(float(self.answer_logprobs(logits, self.P).sum()) - base)
            self.checks[f"ablate_all_heads_layer{l}_abs_delta"] = delta
            assert delta > 1e-3
        return out

    # ---- 8. activation patching ----

    def patching(self) -> dict:
        qs = self.prompt.question.tokens[0]
        K = (self.P - qs) + (self.A - 1)
        corr = self.prompt_for(self.without([self.gold]))
        clean_ids, corr_ids = self.input_ids(self.prompt), self.input_ids(corr)
        assert clean_ids[-K:] == corr_ids[-K:], "patched positions differ between clean and corrupted"
        M_clean = float(self.clean_lp.sum())
        M_corr = self.answer_logprob_for(self.without([self.gold]))
        dh = self.m.dh
        out = np.zeros((self.m.L, self.m.H))
        for l in range(self.m.L):
            clean_z = self.cap["z"][l].reshape(len(clean_ids), -1)  # [T_clean, H*dh]
            for h in range(self.m.H):
                def edit(z, h=h, clean_z=clean_z):
                    z[0, -K:, h * dh:(h + 1) * dh] = clean_z[-K:, h * dh:(h + 1) * dh]
                    return z
                logits, _ = self.m.run(corr_ids, z_edit={l: edit})
                out[l, h] = float(self.answer_logprobs(logits, len(corr.ids)).sum()) - M_corr
        return {"patching": out, "patching_clean": M_clean, "patching_corrupted": M_corr, "patching_k": K,
                "patching_corrupted_prompt_ids": corr.ids}

    # ---- 9. ARC-JSD source attribution ----

    def attr_arc_jsd(self) -> dict:
        full = self.answer_dists([True] * self.n)
        out = {k: np.zeros(self.n) for k in DIVERGENCES}
        worst = 0.0
        for i in range(self.n):
            loo = self.answer_dists(self.without([i]))
            for k in DIVERGENCES:
                d = divergence(full, loo, k)
                out[k][i] = float(d.sum())
                if k == "jsd":
                    worst = max(worst, float(d.max()))
        self.checks["attr_jsd_max_per_position"] = worst
        assert worst <= math.log(2) + 1e-12
        return out

    # ---- 10. ContextCite ----

    def span_logit_probs(self, keep) -> np.ndarray:
        """ℓ_t = z_y - logsumexp_{v != y} z_v at every answer-predicting position (float64)."""
        prompt = self.prompt_for(keep)
        z = self.logits_for(keep)[self.positions(prompt)].double()
        ans = torch.tensor(self.answer)
        zy = z[torch.arange(self.A), ans]
        others = z.clone()
        others[torch.arange(self.A), ans] = -math.inf
        return (zy - torch.logsumexp(others, -1)).numpy()

    @staticmethod
    def span_logit(ell: np.ndarray) -> float:
        """y = logit P(span): logP = Σ log σ(ℓ_t), y = logP - log(1 - e^logP)."""
        logP = float(np.sum(-np.logaddexp(0.0, -ell)))
        return logP - math.log(-math.expm1(logP))

    def context_cite(self) -> dict:
        from sklearn.linear_model import Lasso
        from sklearn.preprocessing import StandardScaler

        masks = np.array(self.sample["context_cite_masks"], dtype=np.float64)
        ell = np.stack([self.span_logit_probs(m) for m in masks])  # [N, A]
        span_len = self.A  # the whole answer
        y = np.array([self.span_logit(row) for row in ell])
        Y = y / span_len
        scaler = StandardScaler()
        Z = scaler.fit_transform(masks)
        lasso = Lasso(alpha=LASSO_ALPHA, fit_intercept=True, tol=1e-12, max_iter=1_000_000)
        lasso.fit(Z, Y)
        w, b = lasso.coef_, float(lasso.intercept_)
        mu, sigma = scaler.mean_, scaler.scale_  # population std, 1 where a column is constant
        scores = w / sigma * span_len
        intercept = (b - float(np.sum(mu * w / sigma))) * span_len
        # independent coordinate descent on the same objective (1/2N)|Y - Zw - b|^2 + α|w|_1
        w_cd, b_cd = lasso_cd(Z, Y, LASSO_ALPHA)
        self.checks["context_cite_sklearn_vs_own_cd"] = float(max(np.abs(w_cd - w).max(), abs(b_cd - b)))
        assert self.checks["context_cite_sklearn_vs_own_cd"] < 1e-9
        return {"context_cite": scores, "context_cite_intercept": intercept, "context_cite_logit_probs": ell,
                "context_cite_y": y, "context_cite_lasso_coef": w, "context_cite_lasso_intercept": b,
                "context_cite_mean": mu, "context_cite_std": sigma}

    # ---- 11. MIRAGE ----

    def mirage(self) -> dict:
        no_docs = [False] * self.n
        ctx = self.answer_dists([True] * self.n)
        noctx = self.answer_dists(no_docs)
        cti = divergence(noctx, ctx, "kl").numpy()  # KL(P_noctx || P_ctx)
        contrast = noctx.argmax(-1).numpy()
        mean = float(cti.mean())
        selected = [t for t in range(self.A) if cti[t] >= mean]
        doc_tokens = [j for sp in self.prompt.docs for j in range(*sp.tokens)]

        # gradients of f_t w.r.t. the embedding-table rows (before gemma's sqrt(d) scale)
        ids = self.input_ids(self.prompt)
        table = self.m.model.model.embed_tokens.weight
        rows = table.detach()[torch.tensor(ids)].clone().requires_grad_(True)
        logits, _ = self.m.run(embeds=rows * self.m.embed_scale)
        self.checks["mirage_embeds_forward_vs_ids_forward"] = float((logits.detach() - self.clean_logits).abs().max())
        lp = torch.log_softmax(logits, -1)
        cci, fvals = [], []
        for t in selected:
            q = self.P - 1 + t
            a, c = self.answer[t], int(contrast[t])
            f = lp[q, a] - lp[q, c] if c != a else lp[q, a]
            (grad,) = torch.autograd.grad(f, rows, retain_graph=True)
            norms = grad.double().norm(dim=-1)
            assert float(norms[q + 1:].sum()) == 0.0, "gradient leaked past the position (causality)"
            cci.append(norms[doc_tokens].numpy())
            fvals.append(float(f.detach()))

        # citations
        std = float(cti.std())  # population
        cti_thr = mean + MIRAGE_CTI * std
        sentences = split_answer_sentences(self.sample["output"])
        assert len(sentences) == 2, sentences
        token_sentence = self.answer_token_sentences(sentences)
        doc_slices, at = [], 0
        for sp in self.prompt.docs:
            k = sp.tokens[1] - sp.tokens[0]
            doc_slices.append(slice(at, at + k))
            at += k
        attribution = np.zeros(self.n)
        cited_sentences = []
        for si, (a, b) in enumerate(sentences):
            acc = np.zeros(len(doc_tokens))
            for k, t in enumerate(selected):
                if token_sentence[t] != si or cti[t] < cti_thr:
                    continue
                acc += filter_cci(cci[k], MIRAGE_CCI)
            doc_scores = np.array([acc[sl].sum() for sl in doc_slices])
            attribution += doc_scores
            cited = [d for d in ranking(doc_scores) if doc_scores[d] > 0][:MIRAGE_MAX_CITATIONS]
            text = self.sample["output"][a:b]
            cited_sentences.append("".join(f"[{d + 1}]" for d in cited) + " " + text if cited else text)
        return {
            "mirage": attribution,
            "mirage_cti": cti,
            "mirage_cti_threshold": cti_thr,
            "mirage_contrast_ids": contrast,
            "mirage_selected": selected,
            "mirage_f": fvals,
            "mirage_doc_token_positions": doc_tokens,
            "mirage_cci": cci,
            "mirage_sentences": [list(s) for s in sentences],
            "mirage_token_sentence": token_sentence,
            "mirage_cited_answer": " ".join(cited_sentences),
        }

    def answer_token_sentences(self, sentences) -> list[int]:
        """Sentence index of each answer token: the sentence holding its anchor, the first non-whitespace character
        of its decoded text (its first character when all whitespace, as RagPrompt's token rule), offsets from
        decoding prefixes; -1 when the anchor lies between sentences."""
        out = []
        for t in range(self.A):
            start = len(self.tok.decode(self.answer[:t]))
            piece = self.tok.decode(self.answer[:t + 1])[start:]
            lead = len(piece) - len(piece.lstrip())
            anchor = start + lead if lead < len(piece) else start
            out.append(next((i for i, (a, b) in enumerate(sentences) if a <= anchor < b), -1))
        return out

    # ---- 12. marginal ----

    def marginal(self) -> dict:
        ll = np.array([self.answer_logprob_for([j == k for j in range(self.n)]) for k in range(self.n)])
        post = np.exp(ll - np.logaddexp.reduce(ll))  # uniform prior
        return {"marginal": post, "marginal_loglik": ll, "marginal_no_docs": self.answer_logprob_for([False] * self.n)}

    # ---- 13. attention attribution ----

    def attr_attention(self) -> np.ndarray:
        pos = self.positions(self.prompt)
        out = np.zeros(self.n)
        for i, sp in enumerate(self.prompt.docs):
            s, e = sp.tokens
            per_layer = [self.cap["attn"][l].double()[:, pos, s:e].sum(-1).mean() for l in range(self.m.L)]
            out[i] = float(torch.stack(per_layer).mean())  # every layer has the same H x A count
        return out

    # ---- 14. fixed-head ablations ----

    def ablation_fixed_heads(self) -> dict:
        heads = self.sample["curve_heads"]
        by_layer: dict = {}
        for l, h in heads:
            by_layer.setdefault(l, []).append(h)
        ids = self.input_ids(self.prompt)
        dh = self.m.dh

        def score(**kw) -> float:
            logits, _ = self.m.run(ids, **kw)
            return float(self.answer_logprobs(logits, self.P).sum())

        zero = score(z_edit={l: zero_heads(hs, dh) for l, hs in by_layer.items()})

        def mean_edit(l, hs):
            zmean = self.cap["z"][l].mean(0)  # [H, dh], over every position of prompt ++ answer[:-1]

            def edit(z):
                for h in hs:
                    z[:, :, h * dh:(h + 1) * dh] = zmean[h]
                return z
            return edit

        mean = score(z_edit={l: mean_edit(l, hs) for l, hs in by_layer.items()})
        uniform = score(uniform=by_layer)
        # cross-check of the uniform pattern: the same result from z := uniform @ V at the o_proj input
        self.checks["uniform_via_attention_vs_via_z"] = abs(uniform - self.uniform_via_z(ids, by_layer))
        assert self.checks["uniform_via_attention_vs_via_z"] < 1e-4
        return {"heads": heads, "clean": float(self.clean_lp.sum()), "zero": zero, "mean": mean, "uniform": uniform}

    def uniform_via_z(self, ids, by_layer) -> float:
        """Uniform ablation done differently: capture v_proj output live and write mean-of-visible-V into z."""
        dh, groups = self.m.dh, self.m.H // self.m.KV
        v_store, handles = {}, []
        for l in by_layer:
            attn = self.m.layers[l].self_attn
            handles.append(attn.v_proj.register_forward_hook(
                lambda mod, args, out, l=l: v_store.__setitem__(l, out[0].detach())))

        def edit_for(l, hs):
            def edit(z):
                T = z.shape[1]
                v = v_store[l].reshape(T, self.m.KV, dh)
                vis = self.m.visible(l, T).to(z.dtype)
                pattern = vis / vis.sum(-1, keepdim=True)
                for h in hs:
                    z[0, :, h * dh:(h + 1) * dh] = pattern @ v[:, h // groups]
                return z
            return edit
        try:
            logits, _ = self.m.run(ids, z_edit={l: edit_for(l, hs) for l, hs in by_layer.items()})
        finally:
            for hd in handles:
                hd.remove()
        return float(self.answer_logprobs(logits, self.P).sum())

    # ---- 15. faithfulness ----

    def faithfulness(self, attrs: dict, cc: dict) -> dict:
        from scipy.stats import spearmanr

        base = float(self.clean_lp.sum())
        heldout = np.array(self.sample["heldout_masks"], dtype=np.float64)
        y = np.array([self.span_logit(self.span_logit_probs(m)) for m in heldout])
        topk, lds, top1 = {}, {}, {}
        for name, scores in attrs.items():
            order = ranking(scores)
            topk[name] = [base - self.answer_logprob_for(self.without(order[:k])) for k in TOPK_DROP_KS]
            pred = heldout @ np.asarray(scores, dtype=np.float64)
            if name == "context_cite":
                pred = pred + cc["context_cite_intercept"]
            lds[name] = float("nan") if np.ptp(pred) == 0 else float(spearmanr(pred, y).statistic)
            top1[name] = order[0] == self.gold
        return {"topk_drop": topk, "topk_drop_ks": TOPK_DROP_KS, "lds": lds, "lds_heldout_y": y,
                "top1_is_gold": top1}

    # ---- structural checks ----

    def structural_checks(self) -> None:
        T = self.P + self.A - 1
        c = self.checks
        for l in range(self.m.L):
            a = self.cap["attn"][l]
            vis = self.m.visible(l, T)
            c.setdefault("attn_rows_sum_minus_1", 0.0)
            c["attn_rows_sum_minus_1"] = max(c["attn_rows_sum_minus_1"], float((a.double().sum(-1) - 1).abs().max()))
            c.setdefault("attn_mass_outside_visible", 0.0)
            c["attn_mass_outside_visible"] = max(c["attn_mass_outside_visible"], float(a[:, ~vis].abs().max()))
            res = self.m.head_results(l, self.cap["z"][l]).sum(1)
            bias = self.m.layers[l].self_attn.o_proj.bias
            if bias is not None:
                res = res + bias.detach()
            c.setdefault("head_results_sum_vs_o_proj", 0.0)
            c["head_results_sum_vs_o_proj"] = max(c["head_results_sum_vs_o_proj"],
                                                  float((res - self.cap["o_out"][l]).abs().max()))
            layer = self.m.layers[l]
            with torch.no_grad():
                attn_out = self.cap["o_out"][l]
                if self.family == "gemma2":
                    attn_out = layer.post_attention_layernorm(attn_out[None])[0]
            c.setdefault("resid_mid_vs_pre_plus_attn", 0.0)
            c["resid_mid_vs_pre_plus_attn"] = max(
                c["resid_mid_vs_pre_plus_attn"],
                float((self.cap["resid_pre"][l] + attn_out - self.cap["resid_mid"][l]).abs().max()))
        # float64 weights still go through HF's float32 softmax / RMSNorm / RoPE, hence 1e-6 there too
        tol = 1e-4 if self.m.dtype == torch.float32 else 1e-6
        for k in ("attn_rows_sum_minus_1", "head_results_sum_vs_o_proj", "resid_mid_vs_pre_plus_attn",
                  "lens_of_last_resid_post_vs_logits", "mirage_embeds_forward_vs_ids_forward"):
            assert c[k] < tol, (k, c[k])
        assert c["attn_mass_outside_visible"] == 0.0

    # ---- everything ----

    def run_all(self) -> dict:
        out = {"family": self.family, "num_layers": self.m.L, "num_heads": self.m.H, "num_kv_heads": self.m.KV,
               "head_dim": self.m.dh, "gold": self.gold}
        out.update(self.basics())
        out["logit_lens"] = self.logit_lens()

        arc = self.attr_arc_jsd()
        top_doc = ranking(arc["jsd"])[0]
        head_jsd, mlp_jsd = self.head_arc_jsd(top_doc)
        summed, summed_ans = self.summed_attention()
        heads = {"arc_jsd": head_jsd, "arc_jsd_removed_doc": top_doc, "summed_attention": summed,
                 "summed_attention_from_answer": summed_ans, "retrieval": self.retrieval(),
                 # one sample, no ROUGE gate: whether the answer contains one of the sample's answers, beside
                 "retrieval_answer_correct": any(a in self.sample["output"] for a in self.sample["answers"])}
        heads.update(self.qrhead())
        heads["ablation"] = self.ablation()
        heads.update(self.patching())
        out["heads"] = heads
        out["mlp"] = {"arc_jsd": mlp_jsd}

        cc = self.context_cite()
        mir = self.mirage()
        marg = self.marginal()
        attn = self.attr_attention()
        attr = {"arc_jsd": arc["jsd"], "arc_jsd_arc_code": arc["jsd_arc_code"], "arc_jsd_kl": arc["kl"]}
        attr.update(cc)
        attr.update(mir)
        attr.update(marg)
        attr["attention"] = attn
        out["attr"] = attr
        out["ablation_fixed_heads"] = self.ablation_fixed_heads()
        out["faithfulness"] = self.faithfulness(
            {"arc_jsd": arc["jsd"], "context_cite": cc["context_cite"], "mirage": mir["mirage"],
             "marginal": marg["marginal"], "attention": attn}, cc)
        self.structural_checks()
        out["checks"] = dict(self.checks)
        return to_py(out)


def qr_score(x: torch.Tensor) -> float:
    """Σ_{x_j > τ} x_j with τ = mean(x) - 2·std(x) (unbiased std; 0 for a single token)."""
    x = x.double()
    if x.numel() == 0:
        return 0.0
    std = float(x.std()) if x.numel() > 1 else 0.0
    tau = float(x.mean()) - 2.0 * std
    return float(x[x > tau].sum())


def filter_cci(s: np.ndarray, cci: float) -> np.ndarray:
    """MIRAGE's CCI filter: zero every score below the threshold."""
    s = s.copy()
    if cci < 0:
        thr = s.max() - (abs(cci) / 100.0) * (s.max() - s.min())
    elif cci == 0:
        thr = s.mean()
    else:
        thr = np.sort(s)[::-1][int(cci) - 1]
    s[s < thr] = 0.0
    return s


def lasso_cd(Z: np.ndarray, Y: np.ndarray, alpha: float, tol: float = 1e-15, max_iter: int = 1_000_000):
    """Plain cyclic coordinate descent for (1/2N)|Y - Zw - b|^2 + α|w|_1 (Z has centred columns)."""
    N, n = Z.shape
    b = float(Y.mean())
    w = np.zeros(n)
    r = Y - b
    sq = (Z * Z).sum(0) / N
    for _ in range(max_iter):
        biggest = 0.0
        for j in range(n):
            if sq[j] == 0:
                continue
            rho = float(Z[:, j] @ (r + Z[:, j] * w[j])) / N
            new = np.sign(rho) * max(abs(rho) - alpha, 0.0) / sq[j]
            r -= Z[:, j] * (new - w[j])
            biggest = max(biggest, abs(new - w[j]))
            w[j] = new
        if biggest < tol:
            break
    return w, b


# ---------------------------------------------------------------------------------------------------------------
# float32 vs float64
# ---------------------------------------------------------------------------------------------------------------

def compare(a, b, path="", out=None) -> dict:
    """Per top-level numeric key path: the largest |a - b| (floats) or 'N differ' (integers / strings)."""
    out = {} if out is None else out
    if isinstance(a, dict):
        for k in a:
            if k in ("checks",):
                continue
            compare(a[k], b[k], f"{path}.{k}" if path else k, out)
        return out
    flat_a, flat_b = flatten(a), flatten(b)
    if len(flat_a) != len(flat_b):
        out[path] = "shape differs"
        return out
    floats = [(x, y) for x, y in zip(flat_a, flat_b) if isinstance(x, float) or isinstance(y, float)]
    others = [(x, y) for x, y in zip(flat_a, flat_b) if not (isinstance(x, float) or isinstance(y, float))]
    if floats:
        out[path] = max(abs(x - y) if x is not None and y is not None else (0.0 if x == y else math.inf)
                        for x, y in floats)
    differ = sum(x != y for x, y in others)
    if differ:
        out[path + " (discrete)"] = f"{differ} differ"
    return out


def flatten(x) -> list:
    if isinstance(x, list):
        return [v for item in x for v in flatten(item)]
    return [x]


# ---------------------------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------------------------

def versions() -> dict:
    import scipy
    import sklearn
    import tokenizers
    import transformers

    return {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__, "sklearn": sklearn.__version__, "scipy": scipy.__version__,
            "numpy": np.__version__}


def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sample.json").write_text(dump_json(SAMPLE))
    for family in FAMILIES:
        log(f"== {family}")
        result = Analysis(family, torch.float32).run_all()
        result64 = Analysis(family, torch.float64).run_all()
        diff = compare(result, result64)
        result["float64_vs_float32"] = diff
        result["versions"] = versions()
        result["notes"] = NOTES
        (OUT / f"{family}.json").write_text(dump_json(result))
        worst = max((v for v in diff.values() if isinstance(v, float)), default=0.0)
        discrete = {k: v for k, v in diff.items() if not isinstance(v, float)}
        log(f"  P={len(result['prompt_ids'])} A={len(result['answer_ids'])} "
            f"logp={result['answer_logprob']:.4f} top_doc={result['heads']['arc_jsd_removed_doc']}")
        log(f"  checks: {json.dumps(result['checks'])}")
        log(f"  float64 vs float32: worst {worst:.3g}; discrete differences: {discrete or 'none'}")


if __name__ == "__main__":
    main()
