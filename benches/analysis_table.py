#!/usr/bin/env python3
"""Per-method cost and accuracy table for the README from `headscope analyze --all-samples --json`.

Usage: python3 benches/analysis_table.py benches/results/analyze-all-smollm2.json
Standard library only. Forward passes are the engine's forward calls (a decoding step counts as one);
seconds are wall-clock per sample; top-1 = the attribution's best document is the sample's `gold`.
"""
import json
import sys
from statistics import mean

# (cost key, JSON name, METHODS.md §8 count, attribution key or None)
ROWS = [
    ("logit-lens", "logit-lens", "1 (+ 3L lens projections)", None),
    ("attention", "attr:attention / heads:summed-attention", "1", "attention"),
    ("attr:arc-jsd", "attr:arc-jsd", "1 gen + n + 1", "arc_jsd"),
    ("heads:arc-jsd", "heads:arc-jsd", "6 as released (2 suffice) + L·H + L lens projections", None),
    ("heads:retrieval", "heads:retrieval", "per NIAH test: 1 prefill + ≤ 50 decode steps", None),
    ("heads:qrhead", "heads:qrhead", "1 prefill + 1 partial", None),
    ("heads:ablation", "heads:ablation", "L·H (naive loop)", None),
    ("heads:patching", "heads:patching", "L·H (+2)", None),
    ("attr:context-cite", "attr:context-cite", "1 gen + 64", "context_cite"),
    ("attr:mirage", "attr:mirage", "1 gen + 2 + per selected token 1 gen + 1 fwd + 1 bwd", "mirage"),
    ("attr:marginal", "attr:marginal", "K", "marginal"),
    ("ablation-curve", "ablation-curve", "—", None),
    ("faithfulness:heldout", "LDS held-out masks", "m", None),
]


def main(path):
    reports = json.load(open(path))
    if isinstance(reports, dict):
        reports = [reports]
    n = len(reports)
    correct = [r for r in reports if r.get("answer_correct")]
    print(f"{n} samples, {len(correct)} answered correctly; model {reports[0]['model']['model']}")
    print()
    print("| method | forward passes per sample (measured mean) | METHODS.md §8 | seconds per sample | top-1 = gold (all / answer correct) |")
    print("|---|---|---|---|---|")
    for key, name, paper, attr in ROWS:
        costs = [r["costs"][key] for r in reports if key in r["costs"]]
        if not costs:
            continue
        fw = mean(c["forwards"] for c in costs)
        secs = mean(c["seconds"] for c in costs)
        extra = ""
        if key == "attr:mirage":
            # Its differentiable forwards run outside the engine's counter; MIRAGE counts them.
            ms = [r["details"]["mirage"] for r in reports if "mirage" in r["details"]]
            fw = mean(m["forwards"] for m in ms)
            extra = f" + {mean(m['backwards'] for m in ms):.1f} backward"
        acc = "—"
        if attr:
            def top1(rs):
                hits = [r["faithfulness"][attr]["top1_correct"] for r in rs if attr in r["faithfulness"]]
                hits = [h for h in hits if h is not None]
                return f"{sum(hits)}/{len(hits)}"
            acc = f"{top1(reports)} / {top1(correct)}"
        print(f"| `{name}` | {fw:.1f}{extra} | {paper} | {secs:.1f} | {acc} |")
    total = mean(sum(c["seconds"] for c in r["costs"].values()) for r in reports)
    print(f"\nAll methods together: {total:.0f} s per sample on average.")
    print()
    print("Faithfulness (mean over samples): top-1 log-prob drop and LDS")
    print()
    print("| attribution | top-1 drop | LDS |")
    print("|---|---|---|")
    for attr in ["arc_jsd", "context_cite", "mirage", "marginal", "attention"]:
        fs = [r["faithfulness"][attr] for r in reports if attr in r["faithfulness"]]
        drops = [f["topk_drop"][0] for f in fs if f["topk_drop"]]
        lds = [f["lds"] for f in fs if f.get("lds") is not None]
        print(f"| `{attr}` | {mean(drops):.2f} | {mean(lds):.2f} |")


if __name__ == "__main__":
    main(sys.argv[1])
