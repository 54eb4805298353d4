#!/usr/bin/env bash
# Measured speed of SmolLM2 loaded pruned (weights sliced at load) against the unpruned model, in one
# run: prefill and greedy-decode tokens/s at 30 / 50 / 68 % of heads pruned (seeded random heads).
# Writes benches/results/prune-speed.json and prune-speed.md. Release build; run on an idle machine.
#
#   benches/prune_speed.sh [MODEL]
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-$HOME/.cache/headscope/models/SmolLM2-135M-Instruct.Q4_1.gguf}
out=benches/results
bin=${CARGO_TARGET_DIR:-target}/release/headscope
cargo build --release --quiet
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
"$bin" bench prune --model "$model" --sparsity 0.3,0.5,0.68 --tokens 256 --decode 32 --repeats ${REPEATS:-9} \
  --seed 0 --json "$out/prune-speed.json"
python3 - "$out/prune-speed.json" "$load_before" "$(cut -d' ' -f1-3 /proc/loadavg)" > "$out/prune-speed.md" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
load_before, load_after = sys.argv[2], sys.argv[3]
u = r["unpruned"]
print(f"# Pruned SmolLM2: measured speed\n")
print(f"`benches/prune_speed.sh`: `headscope bench prune` (release build), {r['model'].split('/')[-1]}, "
      f"{r['dtype']} on {r['cpu']} ({r['threads']} threads); {u['prefill_tokens']}-token prefill, "
      f"{u['decode_tokens']} greedy decode steps, median of {len(u['prefill_s'])} repeats after a warm-up. "
      f"Heads drawn at random (seed {r['seed']}) from all {r['heads']}; weights sliced at load time.\n")
print(f"Load average (1, 5, 15 min) before the run: {load_before}; after: {load_after} "
      f"(the machine was shared; each round times every model once, so load changes fall on all alike).\n")
print("| model | heads pruned | KV heads kept | prefill tokens/s | speed-up | decode tokens/s | speed-up |")
print("|---|---|---|---|---|---|---|")
print(f"| unpruned | 0 | {r['kv_heads']} / {r['kv_heads']} | {u['prefill_tokens_per_s']:.0f} | 1.00 | "
      f"{u['decode_tokens_per_s']:.1f} | 1.00 |")
for p in r["pruned"]:
    t = p["throughput"]
    print(f"| {p['sparsity']*100:.0f} % pruned | {p['heads_pruned']} | {p['kv_heads_kept']} / {r['kv_heads']} | "
          f"{t['prefill_tokens_per_s']:.0f} | {p['prefill_speedup']:.2f} | {t['decode_tokens_per_s']:.1f} | "
          f"{p['decode_speedup']:.2f} |")
PY
cat "$out/prune-speed.md"
