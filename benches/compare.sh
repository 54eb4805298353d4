#!/usr/bin/env bash
# headscope vs PyTorch + transformers (eager, f32, CPU, same threads) on SmolLM2-135M-Instruct, measured
# on the same machine in the same run, interleaved so both see the same load.
#
#   benches/compare.sh [OUT_DIR] [REF_HEADS]
#
# Needs: scripts/fetch-model.sh done, and a Python venv with scripts/requirements-fixtures.txt at
# $HEADSCOPE_VENV (default ~/.cache/headscope/venv). REF_HEADS (default 27 = one tenth of SmolLM2's 270)
# is how many heads the naive PyTorch sweep runs; its total is extrapolated linearly (every head costs
# one full forward, so the per-head cost is constant) and the summary says so.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-benches/results}"
ref_heads="${2:-27}"
venv="${HEADSCOPE_VENV:-$HOME/.cache/headscope/venv}"
py="$venv/bin/python"
sample=benches/sample-512.json
mkdir -p "$out"
cargo build --release --locked >&2
bin=./target/release/headscope
threads=$(nproc)

for round in 1 2 3; do
  "$py" benches/reference_bench.py --skip-sweep --tokens 512 --repeats 5 --threads "$threads" \
    --json "$out/ref-forward-$round.json" >&2
  "$bin" bench forward --tokens 512 --repeats 5 --json "$out/ours-forward-$round.json" >&2
done
# The naive sweep's per-head cost is timed before and after ours and averaged, so a drift of the
# machine's speed during the run does not favour either side.
"$py" benches/reference_bench.py --skip-forward --sample "$sample" --heads "$ref_heads" --threads "$threads" \
  --json "$out/ref-sweep-before.json" >&2
"$bin" bench sweep "$sample" --max-new-tokens 32 --json "$out/ours-sweep.json" >&2
"$py" benches/reference_bench.py --skip-forward --sample "$sample" --heads "$ref_heads" --threads "$threads" \
  --json "$out/ref-sweep.json" >&2

"$py" - "$out" <<'PY'
import json, statistics, sys, platform, datetime, pathlib
out = pathlib.Path(sys.argv[1])
load = lambda p: json.loads((out / p).read_text())
rounds = []
for r in (1, 2, 3):
    ref, ours = load(f"ref-forward-{r}.json"), load(f"ours-forward-{r}.json")
    ref_s = ref["forward"]["median_seconds"]
    rounds.append((ref_s, ours["median_s"]))
ratio = statistics.median(o / r for r, o in rounds)
ours_sweep = load("ours-sweep.json")
ref_sweep = load("ref-sweep.json")["sweep"]
ref_before = load("ref-sweep-before.json")["sweep"]
ref_total = (ref_sweep["total_seconds"] + ref_before["total_seconds"]) / 2
speedup = ref_total / ours_sweep["seconds"]
# Agreement of the two sweeps on the heads both ran.
ref_delta = ref_sweep["delta"]
diffs = [abs(ours_sweep["delta_logprob"][l][h] - v) for l, row in enumerate(ref_delta) for h, v in enumerate(row) if v is not None]
summary = {
    "date": datetime.date.today().isoformat(),
    "machine": platform.processor() or platform.machine(),
    "forward_rounds_s": [{"pytorch": r, "headscope": o} for r, o in rounds],
    "forward_ratio_headscope_over_pytorch": ratio,
    "sweep_headscope_s": ours_sweep["seconds"],
    "sweep_pytorch_naive_s": ref_total,
    "sweep_pytorch_naive_s_before_after": [ref_before["total_seconds"], ref_sweep["total_seconds"]],
    "sweep_pytorch_heads_timed": ref_sweep["heads_run"],
    "sweep_pytorch_total_is_extrapolated": ref_sweep["total_seconds_is_extrapolated"],
    "sweep_pytorch_peak_rss_mib": load("ref-sweep.json").get("peak_rss_mib"),
    "sweep_speedup": speedup,
    "sweep_peak_rss_mb_headscope": ours_sweep.get("peak_rss_mb"),
    "sweep_max_abs_delta_diff_vs_pytorch": max(diffs) if diffs else None,
    "prompt_tokens": len(ours_sweep["prompt_ids"]),
    "answer_tokens": len(ours_sweep["answer_ids"]),
}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
PY
