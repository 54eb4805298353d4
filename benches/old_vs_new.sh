#!/usr/bin/env bash
# Same run, same machine: analysis methods' own seconds and each run's peak RSS under two
# headscope binaries, e.g. before and after a change. Rounds alternate the binaries so drift in
# the machine's speed hits both.
#
#   benches/old_vs_new.sh OLD_BINARY NEW_BINARY [OUT_DIR=benches/results] [ROUNDS=2]
#   (OLD_LABEL / NEW_LABEL name the two builds in the report, e.g. their commits)
#
# Per round and binary, each with --no-cache:
#   `analyze samples/all.jsonl --all-samples --method heads:atp`   (10 samples; summed)
#   `analyze samples/ship_captain.json --method attr:mirage`
#   `analyze samples/ship_captain.json --method heads:arc-jsd`     (its own cost, not attr:arc-jsd's)
# and, when RUNS names them, the ablation curve with its regenerated answers (`curve`) and with
# log-probs only as the explorer runs it (`curve-log-probs`), each its own cost beside its head score.
# Writes OUT_DIR/old-vs-new.json (every run's seconds and peak RSS, and the largest difference
# between the two binaries' scores) and OUT_DIR/old-vs-new.md (benches/old_vs_new_report.py).
set -euo pipefail
old=${1:?old binary}; new=${2:?new binary}
out=${3:-benches/results}; rounds=${4:-2}
model=${HEADSCOPE_MODEL:-$HOME/.cache/headscope/models/SmolLM2-135M-Instruct.Q4_1.gguf}
tmp=$(mktemp -d)
all_runs=(
  "atp|heads:atp|samples/all.jsonl --all-samples"
  "mirage|attr:mirage|samples/ship_captain.json"
  "head-lens|heads:arc-jsd|samples/ship_captain.json"
  "curve|ablation-curve|samples/ship_captain.json"
  "curve-log-probs|ablation-curve|samples/ship_captain.json --no-regenerate"
)
# RUNS: a comma-separated subset of the names above (default: the first three).
wanted=",${RUNS:-atp,mirage,head-lens},"
runs=()
for run in "${all_runs[@]}"; do
  [[ $wanted == *",${run%%|*},"* ]] && runs+=("$run")
done
[ ${#runs[@]} -gt 0 ] || { echo "RUNS names none of: atp mirage head-lens curve curve-log-probs" >&2; exit 2; }
for r in $(seq 1 "$rounds"); do
  for side in old new; do
    bin=$old; [ "$side" = new ] && bin=$new
    for run in "${runs[@]}"; do
      IFS='|' read -r name method input <<<"$run"
      # shellcheck disable=SC2086 # $input is a path plus flags
      /usr/bin/time -f "%M" -o "$tmp/$name-$side-$r.rss" "$bin" analyze -m "$model" $input \
        --method "$method" --no-cache --json "$tmp/$name-$side-$r.json" >/dev/null 2>&1
    done
  done
done
mkdir -p "$out"
python3 "$(dirname "$0")/old_vs_new_report.py" "$tmp" "$out" "$rounds" "$model" \
  "${OLD_LABEL:-old}" "${NEW_LABEL:-new}"
