#!/usr/bin/env bash
# Same run, same machine: the explorer's time to panes (`headscope bench tui`) under two
# headscope binaries, e.g. before and after a change, on SmolLM2 and on a second model. Rounds
# alternate the binaries so drift in the machine's speed hits both.
#
#   benches/tui_compare.sh OLD_BINARY NEW_BINARY [OUT_DIR=benches/results/tui-compare] [ROUNDS=2]
#
# SMALL / LARGE name the two models (default: SmolLM2-135M-Instruct and Qwen2.5-Coder-1.5B-Instruct
# from `scripts/fetch-model.sh` and `scripts/fetch-model.sh qwen2.5-coder-1.5b`), SAMPLE the sample
# (samples/ship_captain.json), SMALL_TIMEOUT / LARGE_TIMEOUT how long each run may take (45 / 90 s:
# past every pane's first fill on the machines measured). Writes OUT_DIR/{old,new}-{small,large}-R.{json,md}.
set -euo pipefail
old=${1:?old binary}; new=${2:?new binary}
out=${3:-benches/results/tui-compare}; rounds=${4:-2}
models=${HEADSCOPE_CACHE:-$HOME/.cache/headscope}/models
small=${SMALL:-$models/SmolLM2-135M-Instruct.Q4_1.gguf}
large=${LARGE:-$models/Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf}
sample=${SAMPLE:-samples/ship_captain.json}
mkdir -p "$out"
for r in $(seq 1 "$rounds"); do
  for size in small large; do
    model=$small; timeout=${SMALL_TIMEOUT:-45}
    [ "$size" = large ] && { model=$large; timeout=${LARGE_TIMEOUT:-90}; }
    for side in old new; do
      bin=$old; [ "$side" = new ] && bin=$new
      echo "round $r: $side on $size" >&2
      "$bin" bench tui --model "$model" "$sample" --timeout "$timeout" \
        --json "$out/$side-$size-$r.json" --md "$out/$side-$size-$r.md" >/dev/null
    done
  done
done
