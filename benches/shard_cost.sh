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
  # Every unit the shard wrote against the committed one: the same answers, flags and keys, numbers
  # within 1e-4 (the committed study predates the fast paths, which reorder float sums), and how
  # many are byte-identical.
  read -r units identical maxdiff < <(python3 - "$dir" "$phase" "$dir/shards.toml" <<'PY'
import json, os, sys
root, phase, stamp = sys.argv[1], sys.argv[2], os.path.getmtime(sys.argv[3])
def cmp(a, b, path):
    if isinstance(a, float) or isinstance(b, float):
        d = abs(a - b)
        if d > 1e-4:
            sys.exit(f"{path}: {a} vs {b}")
        return d
    if isinstance(a, dict):
        if a.keys() != b.keys():
            sys.exit(f"{path}: other keys")
        return max([cmp(a[k], b[k], path + "/" + k) for k in a] + [0.0])
    if isinstance(a, list):
        if len(a) != len(b):
            sys.exit(f"{path}: other length")
        return max([cmp(x, y, path) for x, y in zip(a, b)] + [0.0])
    if a != b:
        sys.exit(f"{path}: {a!r} vs {b!r}")
    return 0.0
n = same = 0
worst = 0.0
for base, _, names in os.walk(os.path.join(root, phase)):
    for name in names:
        f = os.path.join(base, name)
        if not name.endswith(".json") or name == "plan.json" or os.path.getmtime(f) <= stamp:
            continue
        rel = os.path.relpath(f, root)
        mine, theirs = open(f, "rb").read(), open(os.path.join("studies/filings", rel), "rb").read()
        worst = max(worst, cmp(json.loads(mine), json.loads(theirs), rel))
        n += 1
        same += mine == theirs
print(n, same, worst)
PY
  )
  models=$(grep -c "^loading" "$tmp/$phase.err" || true)
  rows+=("{\"phase\": \"$phase\", \"wall_s\": $wall, \"peak_rss_mib\": $rss, \"unit_files\": $units, \"byte_identical\": $identical, \"max_abs_diff\": $maxdiff, \"models_loaded\": $models, \"loadavg_1_5_15_at_start\": [$load]}")
  echo "$phase shard $index of $shards: ${wall}s, peak RSS ${rss} MiB, $units unit files ($identical byte-identical to the committed ones, max |diff| $maxdiff)" >&2
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
print("| phase | wall time | peak RSS | unit files written | of them byte-identical to the committed run's | max abs diff | load average at start |")
print("|---|---:|---:|---:|---:|---:|---:|")
for p in d["phases"]:
    load = p.get("loadavg_1_5_15_at_start")
    load = "/".join(f"{x:.1f}" for x in load) if load else "not recorded"
    same = p.get("byte_identical", p["unit_files"])
    diff = p.get("max_abs_diff", 0.0)
    print(f"| {p['phase']} | {p['wall_s']:.0f} s | {p['peak_rss_mib']:,} MiB | {p['unit_files']} | {same} | {diff:.1e} | {load} |")
print(f"\nRe-run: `SHARDS={d['shards']} INDEX={d['index']} THREADS={d['threads']} benches/shard_cost.sh`")
PY
cat benches/results/shard-cost.md
