#!/usr/bin/env bash
# Same run, same machine: the gradient methods' own seconds under two headscope binaries, e.g.
# before and after a change to the differentiable forward (the frozen-weight product of
# src/engine/frozen.rs). Rounds alternate the binaries so drift in the machine's speed hits both.
#
#   benches/gradient_speed.sh OLD_BINARY NEW_BINARY [OUT_DIR=benches/results] [ROUNDS=2]
#
# Per round and binary: `analyze samples/all.jsonl --all-samples --method heads:atp --no-cache`
# (10 samples) and `analyze samples/ship_captain.json --method attr:mirage --no-cache`. Writes
# OUT_DIR/gradient-speed.json (every round's per-sample seconds) and OUT_DIR/gradient-speed.md.
set -euo pipefail
old=${1:?old binary}; new=${2:?new binary}
out=${3:-benches/results}; rounds=${4:-2}
model=${HEADSCOPE_MODEL:-$HOME/.cache/headscope/models/SmolLM2-135M-Instruct.Q4_1.gguf}
tmp=$(mktemp -d)
for r in $(seq 1 "$rounds"); do
  for side in old new; do
    bin=$old; [ "$side" = new ] && bin=$new
    "$bin" analyze -m "$model" samples/all.jsonl --all-samples --method heads:atp --no-cache \
      --json "$tmp/atp-$side-$r.json" >/dev/null 2>&1
    "$bin" analyze -m "$model" samples/ship_captain.json --method attr:mirage --no-cache \
      --json "$tmp/mirage-$side-$r.json" >/dev/null 2>&1
  done
done
python3 - "$tmp" "$out" "$rounds" "$model" <<'PY'
import json, os, platform, statistics, sys
tmp, out, rounds, model = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
def costs(path, method):
    d = json.load(open(path))
    d = d if isinstance(d, list) else [d]
    return [(s["sample_id"], s["costs"][method]["seconds"]) for s in d]
res = {"cpu": cpu, "threads": os.cpu_count(), "model": os.path.basename(model), "rounds": rounds, "atp": {}, "mirage": {}}
for side in ("old", "new"):
    res["atp"][side] = [costs(f"{tmp}/atp-{side}-{r}.json", "heads:atp") for r in range(1, rounds + 1)]
    res["mirage"][side] = [costs(f"{tmp}/mirage-{side}-{r}.json", "attr:mirage")[0][1] for r in range(1, rounds + 1)]
def atp_total(side):
    return [sum(s for _, s in rnd) for rnd in res["atp"][side]]
summary = {
    "atp_total_s": {side: atp_total(side) for side in ("old", "new")},
    "atp_speedup_median": statistics.median(atp_total("old")) / statistics.median(atp_total("new")),
    "mirage_s": res["mirage"],
    "mirage_speedup_median": statistics.median(res["mirage"]["old"]) / statistics.median(res["mirage"]["new"]),
}
res["summary"] = summary
json.dump(res, open(f"{out}/gradient-speed.json", "w"), indent=1)
with open(f"{out}/gradient-speed.md", "w") as f:
    f.write(f"# Gradient methods, old vs new binary ({res['model']}, {cpu}, {os.cpu_count()} threads, {rounds} alternating rounds)\n\n")
    f.write("Made by `benches/gradient_speed.sh OLD NEW`. Seconds are each method's own time from `costs`.\n\n")
    f.write("| | old (s, per round) | new (s, per round) | speed-up (medians) |\n|---|---|---|---|\n")
    fmt = lambda v: ", ".join(f"{x:.1f}" for x in v)
    f.write(f"| `heads:atp`, 10 samples summed | {fmt(summary['atp_total_s']['old'])} | {fmt(summary['atp_total_s']['new'])} | {summary['atp_speedup_median']:.2f}× |\n")
    f.write(f"| `attr:mirage`, ship-captain | {fmt(res['mirage']['old'])} | {fmt(res['mirage']['new'])} | {summary['mirage_speedup_median']:.2f}× |\n")
print(open(f"{out}/gradient-speed.md").read())
PY
