#!/usr/bin/env python3
"""Checks that transformers loads headscope's physical export (`headscope export --physical`) of each tiny
fixture model and computes the zero-ablated model's logits.

Rust tests never run Python: this script is run by hand and its output, tests/fixtures/export/check.json, is
committed. The Rust tests (tests/suite/pruning.rs) check the same export inside headscope.

Pinned versions (the reference venv, /root/venv-ref): torch 2.15.0, transformers 5.24.0, safetensors 0.8.0.

Usage (from the repository root, after `cargo build`):

    /root/venv-ref/bin/python scripts/check_export.py [--headscope target/debug/headscope]

For each family it writes a pruning that a stock config can express (every layer keeps one whole KV group of
the fixtures' 2 KV heads x 2 query heads, the other group in odd layers; layer 0's MLP removed), runs
`headscope export --physical`, loads the export with AutoModelForCausalLM, and compares its logits on a fixed
input with the original fixture's logits under the same pruning as a zero ablation (the pruned heads'
o_proj input columns and the pruned MLP's down_proj zeroed in transformers). Tolerance: max |diff| <= 1e-4.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ["llama", "qwen2", "gemma2"]
TOL = 1e-4


def pruning_for(layers):
    heads = []
    for l in range(layers):
        gone = [0, 1] if l % 2 == 0 else [2, 3]
        heads += [[l, h] for h in gone]
    return {"heads": heads, "mlps": [0]}


def masked_model(path, pruning):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    cfg = model.config
    dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    with torch.no_grad():
        for l, h in pruning["heads"]:
            model.model.layers[l].self_attn.o_proj.weight[:, h * dh:(h + 1) * dh] = 0.0
        for l in pruning["mlps"]:
            model.model.layers[l].mlp.down_proj.weight.zero_()
    return model


def logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--headscope", default=str(ROOT / "target/debug/headscope"))
    args = ap.parse_args()
    ids = [5, 17, 42, 99, 123, 7, 250, 31, 64, 200, 11, 3, 150, 77, 18, 260]
    results = {}
    for family in FAMILIES:
        src = ROOT / "tests/fixtures" / family
        config = json.loads((src / "config.json").read_text())
        pruning = pruning_for(config["num_hidden_layers"])
        with tempfile.TemporaryDirectory() as tmp:
            pfile = Path(tmp) / "pruning.json"
            pfile.write_text(json.dumps(pruning))
            out = Path(tmp) / "export"
            subprocess.run(
                [args.headscope, "export", "--offline", "-m", str(src), "--prune", str(pfile),
                 "--out", str(out), "--physical"],
                check=True,
            )
            exported = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
            got = logits(exported, ids)
            cfg = exported.config
        want = logits(masked_model(src, pruning), ids)
        unpruned = logits(AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval(), ids)
        diff = (got - want).abs().max().item()
        results[family] = {
            "pruning": pruning,
            "num_attention_heads": cfg.num_attention_heads,
            "num_key_value_heads": cfg.num_key_value_heads,
            "head_dim": getattr(cfg, "head_dim", None),
            "max_abs_diff_vs_masked": diff,
            "max_abs_diff_masked_vs_unpruned": (want - unpruned).abs().max().item(),
            "ok": diff <= TOL,
        }
        print(f"{family}: physical export vs masked, max |diff| = {diff:.3e}")
    report = {
        "what": "transformers' logits of headscope's --physical export vs the original under zero ablation",
        "tolerance": TOL,
        "input_ids": ids,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "families": results,
    }
    dest = ROOT / "tests/fixtures/export/check.json"
    dest.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {dest}")
    sys.exit(0 if all(r["ok"] for r in results.values()) else 1)


if __name__ == "__main__":
    main()
