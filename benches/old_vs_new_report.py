"""Summarises the raw runs of benches/old_vs_new.sh: seconds, peak RSS and how far the two
binaries' results differ.

    python3 benches/old_vs_new_report.py RAW_DIR OUT_DIR ROUNDS MODEL OLD_LABEL NEW_LABEL
"""
import json, os, platform, statistics, sys

RUNS = [("atp", "heads:atp", "10 samples summed"), ("mirage", "attr:mirage", "ship-captain"),
        ("head-lens", "heads:arc-jsd", "ship-captain"),
        ("curve", "ablation-curve", "ship-captain, regenerating each answer"),
        ("curve-log-probs", "ablation-curve", "ship-captain, log-probs only (as the explorer)")]


def numbers(x):
    """Every number in a JSON value, in order."""
    if isinstance(x, bool):
        return []
    if isinstance(x, (int, float)):
        return [float(x)]
    if isinstance(x, dict):
        return [v for k in sorted(x) for v in numbers(x[k])]
    if isinstance(x, list):
        return [v for e in x for v in numbers(e)]
    return []


def result(sample, method):
    """What `method` computed for one sample: its head scores (and MLP scores) or attribution."""
    if method == "ablation-curve":
        return sample["ablation_curve"]["points"]
    kind, _, name = method.partition(":")
    key = name.replace("-", "_")
    if kind == "heads":
        return [sample["head_scores"][key], sample.get("mlp_scores", {}).get(key)]
    return sample["attribution"][key]


def main(raw, out, rounds, model, old_label, new_label):
    rounds = int(rounds)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), platform.processor())
    res = {"cpu": cpu, "threads": os.cpu_count(), "model": os.path.basename(model),
           "rounds": rounds, "old": old_label, "new": new_label, "runs": {}}
    present = [r for r in RUNS if os.path.exists(f"{raw}/{r[0]}-old-1.json")]
    for name, method, _ in present:
        entry = {"method": method}
        outputs = {}
        for side in ("old", "new"):
            seconds, rss = [], []
            for r in range(1, rounds + 1):
                d = json.load(open(f"{raw}/{name}-{side}-{r}.json"))
                d = d if isinstance(d, list) else [d]
                seconds.append(sum(s["costs"][method]["seconds"] for s in d))
                rss.append(int(open(f"{raw}/{name}-{side}-{r}.rss").read().split()[-1]) / 2**20)
                outputs.setdefault(side, numbers([result(s, method) for s in d]))
            entry[side] = {"seconds": seconds, "peak_rss_gib": rss}
        a, b = outputs["old"], outputs["new"]
        entry["values_compared"] = len(a)
        entry["max_abs_difference"] = (max(abs(x - y) for x, y in zip(a, b))
                                       if len(a) == len(b) else None)
        entry["speedup_of_medians"] = (statistics.median(entry["old"]["seconds"])
                                       / statistics.median(entry["new"]["seconds"]))
        res["runs"][name] = entry
    json.dump(res, open(f"{out}/old-vs-new.json", "w"), indent=1)
    fmt = lambda v: ", ".join(f"{x:.1f}" for x in v)
    with open(f"{out}/old-vs-new.md", "w") as f:
        f.write(f"# Old vs new binary ({res['model']}, {cpu}, {os.cpu_count()} threads, "
                f"{rounds} alternating rounds)\n\n")
        f.write(f"Made by `benches/old_vs_new.sh OLD NEW`; old: {old_label}; new: {new_label}. "
                "Seconds are each method's own time from `costs`; peak RSS is the whole `analyze` "
                "process's; max |Δ| compares every score the two binaries wrote.\n\n")
        f.write("| | old s (per round) | new s (per round) | speed-up (medians) "
                "| old / new peak RSS (GiB) | max \\|Δ\\| of the scores |\n|---|---|---|---|---|---|\n")
        for name, method, what in present:
            e = res["runs"][name]
            diff = e["max_abs_difference"]
            f.write(f"| `{method}`, {what} | {fmt(e['old']['seconds'])} | {fmt(e['new']['seconds'])} "
                    f"| {e['speedup_of_medians']:.2f}× | {max(e['old']['peak_rss_gib']):.1f} / "
                    f"{max(e['new']['peak_rss_gib']):.1f} | "
                    f"{'shapes differ' if diff is None else f'{diff:.1e}'} ({e['values_compared']} values) |\n")
    print(open(f"{out}/old-vs-new.md").read())


if __name__ == "__main__":
    main(*sys.argv[1:7])
