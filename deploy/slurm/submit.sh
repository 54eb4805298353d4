#!/usr/bin/env bash
# Submits a sharded headscope study to Slurm as one chain of jobs:
#   prepare (one job) → detect (array, one task per shard) → ablate (array) → report (one job),
# each after the previous one succeeded (afterok; a failed phase cancels the rest).
#
#   deploy/slurm/submit.sh --out STUDY_DIR --shards 8 [--throttle 4] [--wait] [--sbatch "--partition=cpu"] \
#       -- --config study.toml            # anything after -- goes to `headscope study prepare`
#
# HEADSCOPE names the binary (default: `headscope` on PATH); HEADSCOPE_DEVICE and HEADSCOPE_FLAGS
# reach every shard (see study.sbatch). Logs: STUDY_DIR/logs/. Prints the four job ids.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out= shards= throttle= wait= extra=
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --shards) shards=$2; shift 2 ;;
    --throttle) throttle=$2; shift 2 ;;
    --wait) wait=--wait; shift ;;
    --sbatch) extra=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "submit.sh: unknown option $1 (see the header)" >&2; exit 2 ;;
  esac
done
if [ -z "$out" ] || [ -z "$shards" ]; then
  echo "usage: submit.sh --out STUDY_DIR --shards N [--throttle M] [--wait] [--sbatch ARGS] -- PREPARE_ARGS" >&2
  exit 2
fi
case "$shards" in '' | *[!0-9]* | 0) echo "submit.sh: --shards must be a positive number" >&2; exit 2 ;; esac
headscope=${HEADSCOPE:-headscope}
mkdir -p "$out/logs"
out=$(cd "$out" && pwd)
array="0-$((shards - 1))${throttle:+%$throttle}"
after() { echo "--dependency=afterok:$1 --kill-on-invalid-dep=yes"; }

prepare_cmd=$(printf '%q ' "$headscope" study prepare --out "$out" --shard-count "$shards" "$@")
# shellcheck disable=SC2086
prepare=$(sbatch --parsable $extra --job-name=headscope-prepare --output="$out/logs/prepare-%j.out" \
  --wrap "$prepare_cmd")
# shellcheck disable=SC2086
detect=$(sbatch --parsable $extra $(after "$prepare") --array="$array" --job-name=headscope-detect \
  --output="$out/logs/detect-%A_%a.out" "$here/study.sbatch" detect "$out")
# shellcheck disable=SC2086
ablate=$(sbatch --parsable $extra $(after "$detect") --array="$array" --job-name=headscope-ablate \
  --output="$out/logs/ablate-%A_%a.out" "$here/study.sbatch" ablate "$out")
report_cmd=$(printf '%q ' "$headscope" study report --out "$out")
echo "prepare $prepare, detect $detect, ablate $ablate"
# shellcheck disable=SC2086
report=$(sbatch --parsable $wait $extra $(after "$ablate") --job-name=headscope-report \
  --output="$out/logs/report-%j.out" --wrap "$report_cmd")
echo "report $report"
