#!/usr/bin/env bash
# The all-heads zero-ablation sweep against the naive PyTorch loop (one full forward per head) at
# two prompt lengths, in one run: the 4-document fixture sample (short) and benches/sample-512.json
# (long). For each, PyTorch's per-head cost is timed before and after ours and averaged, as in
# benches/compare.sh, so a drift of the machine's speed favours neither side.
#
#   benches/sweep_compare.sh [OUT_DIR] [REF_HEADS]
#
# Needs: scripts/fetch-model.sh done, a release build (`cargo build --release`), and a Python venv
# with scripts/requirements-fixtures.txt at $HEADSCOPE_VENV (default ~/.cache/headscope/venv).
# HEADSCOPE_BLAS_BIN, when set, names a second binary (built with `--features openblas`) that is
# timed right after the first, between the same two PyTorch timings.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-benches/results/sweep}"
ref_heads="${2:-27}"
venv="${HEADSCOPE_VENV:-$HOME/.cache/headscope/venv}"
py="$venv/bin/python"
# The GGUF both sides load (reference_bench.py's own default is the wheel's copy).
gguf="${HEADSCOPE_SMOLLM2_GGUF:-$HOME/.cache/headscope/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
bin="${HEADSCOPE_BIN:-./target/release/headscope}"
threads=$(nproc)
mkdir -p "$out"
for pair in short:tests/fixtures/smollm2/sample.json long:benches/sample-512.json; do
  name="${pair%%:*}" sample="${pair#*:}"
  "$py" benches/reference_bench.py --skip-forward --sample "$sample" --heads "$ref_heads" \
    --threads "$threads" --gguf "$gguf" --json "$out/ref-$name-before.json" >&2
  "$bin" bench sweep --model "$gguf" "$sample" --max-new-tokens 32 --json "$out/ours-$name.json" >&2
  if [ -n "${HEADSCOPE_BLAS_BIN:-}" ]; then
    "$HEADSCOPE_BLAS_BIN" bench sweep --model "$gguf" "$sample" --max-new-tokens 32 \
      --json "$out/ours-openblas-$name.json" >&2
  fi
  "$py" benches/reference_bench.py --skip-forward --sample "$sample" --heads "$ref_heads" \
    --threads "$threads" --gguf "$gguf" --json "$out/ref-$name-after.json" >&2
done
"$py" - "$out" <<'PY'
import json, sys, pathlib, datetime, platform
out = pathlib.Path(sys.argv[1])
load = lambda p: json.loads((out / p).read_text())
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
           platform.machine())
rows = {}
for name in ("short", "long"):
    ours = load(f"ours-{name}.json")
    before, after = load(f"ref-{name}-before.json"), load(f"ref-{name}-after.json")
    ref = (before["sweep"]["total_seconds"] + after["sweep"]["total_seconds"]) / 2
    delta = after["sweep"]["delta"]
    diffs = [abs(ours["delta_logprob"][l][h] - v) for l, row in enumerate(delta)
             for h, v in enumerate(row) if v is not None]
    rows[name] = {
        "sample": ours["sample"],
        "prompt_tokens": len(ours["prompt_ids"]),
        "answer_tokens": len(ours["answer_ids"]),
        "headscope_s": ours["seconds"],
        "headscope_batch": ours["batch"],
        "pytorch_naive_s": ref,
        "pytorch_naive_s_before_after": [before["sweep"]["total_seconds"], after["sweep"]["total_seconds"]],
        "pytorch_heads_timed": after["sweep"]["heads_run"],
        "pytorch_total_is_extrapolated": after["sweep"]["total_seconds_is_extrapolated"],
        "speedup": ref / ours["seconds"],
        "max_abs_delta_diff_vs_pytorch": max(diffs) if diffs else None,
        "loadavg_pytorch_before": [before["loadavg_at_start"], before["loadavg_at_end"]],
        "loadavg_pytorch_after": [after["loadavg_at_start"], after["loadavg_at_end"]],
    }
    blas = out / f"ours-openblas-{name}.json"
    if blas.exists():
        b = json.loads(blas.read_text())
        rows[name]["headscope_openblas_s"] = b["seconds"]
        rows[name]["speedup_openblas"] = ref / b["seconds"]
summary = {"date": datetime.date.today().isoformat(), "cpu": cpu, "threads": load("ref-short-after.json")["threads"],
           "sweeps": rows}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
PY
