#!/usr/bin/env python3
"""AtP (`heads:atp`) against the exact zero-ablation sweep (`heads:ablation`), per sample.

Reads the JSON of one `headscope analyze --all-samples --method heads:ablation,heads:atp` run
(see benches/atp_vs_ablation.sh) and writes a summary JSON and a Markdown table: Spearman's rho
between the two [layers][heads] matrices (average ranks, as scipy's spearmanr), the overlap of
their top-20 heads by importance (-delta: the heads whose ablation lowers the answer's log-prob
most, as the ablation curve ranks them) and by |delta|, and each method's seconds in that run.

    python3 benches/atp_table.py RUN.json OUT.json OUT.md
"""
import json
import sys

TOP = 20


def ranks(xs):
    """Average ranks (1-based), ties sharing the mean of their positions."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def pearson(a, b):
    n = len(a)
    ma, mb = sum(a) / n, sum(b) / n
    sab = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    saa = sum((x - ma) ** 2 for x in a)
    sbb = sum((y - mb) ** 2 for y in b)
    return sab / (saa * sbb) ** 0.5


def spearman(a, b):
    return pearson(ranks(a), ranks(b))


def top(values, k):
    return set(sorted(range(len(values)), key=lambda i: -values[i])[:k])


def row(report):
    exact = [v for r in report["head_scores"]["ablation"] for v in r]
    atp = [v for r in report["head_scores"]["atp"] for v in r]
    heads = len(report["head_scores"]["ablation"][0])
    name = lambda i: f"L{i // heads}H{i % heads}"
    imp_exact, imp_atp = [-v for v in exact], [-v for v in atp]
    costs = report["costs"]
    best_exact = max(range(len(exact)), key=lambda i: imp_exact[i])
    best_atp = max(range(len(atp)), key=lambda i: imp_atp[i])
    return {
        "sample": report["sample_id"],
        "prompt_tokens": len(report["prompt_ids"]),
        "answer_tokens": len(report["answer_ids"]),
        "answer_correct": report.get("answer_correct"),
        "heads": len(exact),
        "spearman": spearman(exact, atp),
        "top20_overlap_importance": len(top(imp_exact, TOP) & top(imp_atp, TOP)),
        "top20_overlap_abs": len(
            top([abs(v) for v in exact], TOP) & top([abs(v) for v in atp], TOP)
        ),
        "top1_exact": name(best_exact),
        "top1_atp": name(best_atp),
        "seconds_ablation": costs["heads:ablation"]["seconds"],
        "seconds_atp": costs["heads:atp"]["seconds"],
        "forwards_ablation": costs["heads:ablation"]["forwards"],
        "forwards_atp": costs["heads:atp"]["forwards"],
    }


def mean(xs):
    return sum(xs) / len(xs)


def main():
    src, out_json, out_md = sys.argv[1:4]
    reports = json.load(open(src))
    if isinstance(reports, dict):
        reports = [reports]
    rows = [row(r) for r in reports]
    summary = {
        "model": reports[0]["model"]["model"].rsplit("/", 1)[-1],
        "dtype": reports[0]["model"]["dtype"],
        "device": reports[0]["model"]["device"],
        "samples": len(rows),
        "mean_spearman": mean([r["spearman"] for r in rows]),
        "min_spearman": min(r["spearman"] for r in rows),
        "mean_top20_overlap_importance": mean([r["top20_overlap_importance"] for r in rows]),
        "mean_top20_overlap_abs": mean([r["top20_overlap_abs"] for r in rows]),
        "top1_agree": sum(r["top1_exact"] == r["top1_atp"] for r in rows),
        "mean_seconds_ablation": mean([r["seconds_ablation"] for r in rows]),
        "mean_seconds_atp": mean([r["seconds_atp"] for r in rows]),
        "speedup": sum(r["seconds_ablation"] for r in rows) / sum(r["seconds_atp"] for r in rows),
        "rows": rows,
    }
    json.dump(summary, open(out_json, "w"), indent=2)
    lines = [
        "| sample | prompt + answer tokens | Spearman ρ | top-20 overlap (−Δ) | top-20 overlap (\\|Δ\\|) "
        "| top head exact / AtP | s `heads:ablation` | s `heads:atp` |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['sample']} | {r['prompt_tokens']} + {r['answer_tokens']} | {r['spearman']:.3f} "
            f"| {r['top20_overlap_importance']}/20 | {r['top20_overlap_abs']}/20 "
            f"| {r['top1_exact']} / {r['top1_atp']} "
            f"| {r['seconds_ablation']:.1f} | {r['seconds_atp']:.2f} |"
        )
    s = summary
    lines.append(
        f"| **mean** | | {s['mean_spearman']:.3f} | {s['mean_top20_overlap_importance']:.1f}/20 "
        f"| {s['mean_top20_overlap_abs']:.1f}/20 | {s['top1_agree']}/{s['samples']} agree "
        f"| {s['mean_seconds_ablation']:.1f} | {s['mean_seconds_atp']:.2f} |"
    )
    head = [
        f"# `heads:atp` vs `heads:ablation` ({s['model']}, {s['dtype']}, {s['device']})",
        "",
        "Made by `benches/atp_vs_ablation.sh` (one `headscope analyze --all-samples --method "
        "heads:ablation,heads:atp --no-cache` run, then `benches/atp_table.py`). Spearman ρ over "
        "every head's Δ answer log-prob; top-20 overlap: heads shared by the two top-20 lists, by "
        "importance (−Δ, as the ablation curve ranks) and by |Δ|; seconds: each method's own "
        "time in that run.",
        "",
    ]
    tail = [
        "",
        f"AtP took {s['mean_seconds_atp']:.2f} s per sample against the sweep's "
        f"{s['mean_seconds_ablation']:.1f} s: {s['speedup']:.0f}× faster over the run.",
    ]
    open(out_md, "w").write("\n".join(head + lines + tail) + "\n")
    print("\n".join(lines + tail))


if __name__ == "__main__":
    main()
