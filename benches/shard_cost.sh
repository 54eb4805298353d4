#!/usr/bin/env bash
# What one shard of the shipped study (studies/filings) costs, phase by phase: the study is copied,
# prepared for SHARDS shards, the phase's units are removed, and shard INDEX computes its own again
# under /usr/bin/time (wall time, peak RSS). The recomputed units must be byte-identical to the
# committed ones, so this also checks that a shard reproduces the unsharded run.
#   SHARDS=8 INDEX=0 THREADS=2 benches/shard_cost.sh      → benches/results/shard-cost.{json,md}
set -euo pipefail
cd "$(dirname "$0")/.."
shards=${SHARDS:-8} index=${INDEX:-0} threads=${THREADS:-2}
bin=${HEADSCOPE:-target/release/headscope}
[ -x "$bin" ] || cargo build --release --locked
export RAYON_NUM_THREADS=$threads
tmp=$(mktemp -d /tmp/headscope-shard-cost.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
rows=()
for phase in detect ablate; do
  dir=$tmp/$phase
  cp -r studies/filings "$dir"
  "$bin" study prepare --out "$dir" --shard-count "$shards" >/dev/null 2>&1
  if [ "$phase" = detect ]; then
    rm -f "$dir"/detect/*/samples/*.json
  else
    find "$dir/ablate" -mindepth 2 -name '*.json' ! -name plan.json -delete
  fi
  log=$tmp/$phase.time
  load=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ',')
  /usr/bin/time -v "$bin" study "$phase" --out "$dir" --shard-index "$index" 2>"$tmp/$phase.err" >/dev/null \
    || { cat "$tmp/$phase.err" >&2; exit 1; }
  grep -E "Elapsed|Maximum resident" "$tmp/$phase.err" >"$log"
  wall=$(awk -F': ' '/Elapsed/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]; print s}' "$log")
  rss=$(awk -F': ' '/Maximum resident/ {printf "%.0f", $2/1024}' "$log")
  # Every unit the shard wrote equals the committed one.
  units=0
  while IFS= read -r f; do
    rel=${f#"$dir"/}
    cmp -s "$f" "studies/filings/$rel" || { echo "$rel differs from the committed unit" >&2; exit 1; }
    units=$((units + 1))
  done < <(find "$dir/$phase" -name '*.json' ! -name plan.json -newer "$dir/shards.toml")
  models=$(grep -c "^loading" "$tmp/$phase.err" || true)
  rows+=("{\"phase\": \"$phase\", \"wall_s\": $wall, \"peak_rss_mib\": $rss, \"unit_files\": $units, \"models_loaded\": $models, \"loadavg_1_5_15_at_start\": [$load]}")
  echo "$phase shard $index of $shards: ${wall}s, peak RSS ${rss} MiB, $units unit files (identical to the committed ones)" >&2
done
mkdir -p benches/results
{
  echo "{"
  echo "  \"date\": \"$(date -u +%F)\", \"cpu\": \"$cpu\", \"threads\": $threads,"
  echo "  \"study\": \"studies/filings\", \"shards\": $shards, \"index\": $index,"
  echo "  \"phases\": [$(IFS=,; echo "${rows[*]}")]"
  echo "}"
} | python3 -m json.tool >benches/results/shard-cost.json
python3 - <<'PY' >benches/results/shard-cost.md
import json
d = json.load(open("benches/results/shard-cost.json"))
print(f"One shard of the shipped study (`studies/filings`, both models), shard {d['index']} of {d['shards']} — "
      f"{d['date']}, {d['cpu']}, {d['threads']} threads\n")
print("| phase | wall time | peak RSS | unit files written (byte-identical to the unsharded run's) | load average at start |")
print("|---|---:|---:|---:|---:|")
for p in d["phases"]:
    load = p.get("loadavg_1_5_15_at_start")
    load = "/".join(f"{x:.1f}" for x in load) if load else "not recorded"
    print(f"| {p['phase']} | {p['wall_s']:.0f} s | {p['peak_rss_mib']:,} MiB | {p['unit_files']} | {load} |")
print(f"\nRe-run: `SHARDS={d['shards']} INDEX={d['index']} THREADS={d['threads']} benches/shard_cost.sh`")
PY
cat benches/results/shard-cost.md
