#!/usr/bin/env bash
# One full forward (SmolLM2-135M-Instruct, f32, logits at every position) in PyTorch eager and in
# headscope's default and `openblas` builds, interleaved over three rounds so that all three see the
# same machine, at two prompt lengths. Writes every raw measurement and summary.json.
#
#   benches/forward_compare.sh [OUT_DIR]
#
# Needs: scripts/fetch-model.sh done, the Python venv of benches/compare.sh at $HEADSCOPE_VENV
# (default ~/.cache/headscope/venv), and the two release binaries:
#   cargo build --release --locked && cp target/release/headscope /tmp/headscope-default
#   cargo build --release --locked --features openblas && cp target/release/headscope /tmp/headscope-openblas
# (or HEADSCOPE_BIN / HEADSCOPE_BLAS_BIN naming them).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-benches/results/forward}"
venv="${HEADSCOPE_VENV:-$HOME/.cache/headscope/venv}"
py="$venv/bin/python"
gguf="${HEADSCOPE_SMOLLM2_GGUF:-$HOME/.cache/headscope/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
default_bin="${HEADSCOPE_BIN:-/tmp/headscope-default}"
blas_bin="${HEADSCOPE_BLAS_BIN:-/tmp/headscope-openblas}"
threads=$(nproc)
mkdir -p "$out"
for tokens in 258 512; do
  for round in 1 2 3; do
    "$py" benches/reference_bench.py --skip-sweep --tokens "$tokens" --repeats 5 --threads "$threads" \
      --gguf "$gguf" --json "$out/ref-$tokens-$round.json" >&2
    "$default_bin" bench forward --model "$gguf" --tokens "$tokens" --repeats 5 \
      --json "$out/ours-$tokens-$round.json" >&2
    "$blas_bin" bench forward --model "$gguf" --tokens "$tokens" --repeats 5 \
      --json "$out/openblas-$tokens-$round.json" >&2
  done
done
"$py" - "$out" <<'PY'
import json, statistics, sys, pathlib, datetime, platform
out = pathlib.Path(sys.argv[1])
load = lambda p: json.loads((out / p).read_text())
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
           platform.machine())
summary = {"date": datetime.date.today().isoformat(), "cpu": cpu, "lengths": {}}
for tokens in (258, 512):
    rounds = []
    for r in (1, 2, 3):
        ref = load(f"ref-{tokens}-{r}.json")["forward"]["median_seconds"]
        ours = load(f"ours-{tokens}-{r}.json")["median_s"]
        blas = load(f"openblas-{tokens}-{r}.json")["median_s"]
        rounds.append({"pytorch_s": ref, "headscope_s": ours, "headscope_openblas_s": blas,
                       "ratio": ours / ref, "ratio_openblas": blas / ref})
    summary["lengths"][str(tokens)] = {
        "rounds": rounds,
        "median_ratio": statistics.median(r["ratio"] for r in rounds),
        "median_ratio_openblas": statistics.median(r["ratio_openblas"] for r in rounds),
    }
summary["threads"] = load("ours-512-1.json").get("threads")
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
PY
