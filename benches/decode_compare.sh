#!/usr/bin/env bash
# Greedy decoding tokens/s with the KV cache, SmolLM2-135M-Instruct f32: PyTorch eager
# (benches/reference_bench.py --decode) against headscope (`bench prune`'s unpruned model), and
# optionally an earlier headscope build, interleaved over three rounds so all see the same machine.
# Writes every raw measurement and summary.json / summary.md to OUT_DIR.
#
#   benches/decode_compare.sh [OUT_DIR]          (default OUT_DIR: benches/results/decode)
#
# Settings: HEADSCOPE_BIN [target/release/headscope]; HEADSCOPE_BASE_BIN [none]: a second build
# measured alike (e.g. the commit before a change); TOKENS [256] prompt tokens prefilled first;
# STEPS [32] decoding steps; REPEATS [5]; THREADS [nproc]; HEADSCOPE_VENV [~/.cache/headscope/venv].
# Needs scripts/fetch-model.sh done and the venv of benches/compare.sh. Builds nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-benches/results/decode}"
venv="${HEADSCOPE_VENV:-$HOME/.cache/headscope/venv}"
py="$venv/bin/python"
gguf="${HEADSCOPE_SMOLLM2_GGUF:-$HOME/.cache/headscope/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
bin="${HEADSCOPE_BIN:-target/release/headscope}"
base="${HEADSCOPE_BASE_BIN:-}"
tokens="${TOKENS:-256}"
steps="${STEPS:-32}"
repeats="${REPEATS:-5}"
threads="${THREADS:-$(nproc)}"
mkdir -p "$out"
ours() { # name binary round
  RAYON_NUM_THREADS="$threads" "$2" bench prune --model "$gguf" --sparsity 0.3 --tokens "$tokens" \
    --decode "$steps" --repeats "$repeats" --json "$out/$1-$3.json" >&2
}
for round in 1 2 3; do
  "$py" benches/reference_bench.py --skip-forward --skip-sweep --decode "$steps" --tokens "$tokens" \
    --repeats "$repeats" --threads "$threads" --gguf "$gguf" --json "$out/ref-$round.json" >&2
  ours ours "$bin" "$round"
  [[ -z "$base" ]] || ours base "$base" "$round"
done
"$py" - "$out" <<'PY'
import datetime, json, pathlib, platform, statistics, sys
out = pathlib.Path(sys.argv[1])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
           platform.machine())
family = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("cpu family")), "?")
def rates(name, key):
    files = sorted(out.glob(f"{name}-[0-9].json"))
    return [key(json.loads(f.read_text())) for f in files]
ref = rates("ref", lambda r: r["decode"]["tokens_per_s"])
ours = rates("ours", lambda r: r["unpruned"]["decode_tokens_per_s"])
base = rates("base", lambda r: r["unpruned"]["decode_tokens_per_s"])
summary = {"date": datetime.date.today().isoformat(), "cpu": cpu, "cpu_family": family,
           "pytorch_tokens_per_s": ref, "headscope_tokens_per_s": ours,
           "headscope_over_pytorch_time": [r / o for r, o in zip(ref, ours)]}
if base:
    summary["base_tokens_per_s"] = base
    summary["base_over_pytorch_time"] = [r / b for r, b in zip(ref, base)]
(out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
lines = [f"Greedy decoding, SmolLM2-135M-Instruct f32, {cpu} (family {family}), {summary['date']}: tokens/s per round "
         "(median of the round's repeats); time ratio = PyTorch tokens/s ÷ headscope tokens/s (below 1: faster).", "",
         "| round | PyTorch eager | headscope | time ratio |" + (" earlier build | its ratio |" if base else ""),
         "|---|---:|---:|---:|" + ("---:|---:|" if base else "")]
for i, (r, o) in enumerate(zip(ref, ours)):
    row = f"| {i + 1} | {r:.1f} | {o:.1f} | {r / o:.2f}× |"
    if base:
        row += f" {base[i]:.1f} | {r / base[i]:.2f}× |"
    lines.append(row)
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
