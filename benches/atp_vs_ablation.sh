#!/usr/bin/env bash
# heads:atp (attribution patching, one forward + one backward) against the exact zero-ablation
# sweep heads:ablation on the shipped samples, both in the same analyze run (same machine, same
# load), SmolLM2-135M-Instruct on the CPU, release build, cache off.
#
#   benches/atp_vs_ablation.sh [OUT_DIR] [SAMPLES]
#
# Writes OUT_DIR/atp-smollm2.json (per-sample Spearman rho, top-20 overlaps, seconds) and
# OUT_DIR/atp-smollm2.md (the table the README quotes); the raw analyze JSON stays in /tmp.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-benches/results}"
samples="${2:-samples/all.jsonl}"
model="${HEADSCOPE_MODEL:-$HOME/.cache/headscope/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
raw="${TMPDIR:-/tmp}/atp-vs-ablation.json"
mkdir -p "$out"
cargo build --release --locked >&2
./target/release/headscope analyze --model "$model" "$samples" --all-samples \
  --method heads:ablation,heads:atp --no-cache --json "$raw" >&2
python3 benches/atp_table.py "$raw" "$out/atp-smollm2.json" "$out/atp-smollm2.md"
