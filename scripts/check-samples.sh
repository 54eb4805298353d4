#!/usr/bin/env bash
# Answers every shipped sample with the default model and says whether the answer contains one of the
# sample's `answers` (the README's "answers nine of them" comes from this).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./target/release/headscope
[ -x "$bin" ] || cargo build --release --locked >&2
tmp=$(mktemp)
right=0; total=0
for f in samples/*.json; do
  [ "$f" = samples/question.json ] && continue
  "$bin" run "$f" --json "$tmp" > /dev/null 2>&1
  if python3 - "$tmp" "$f" <<'PY'
import json, sys
run, sample = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
ok = any(a.lower() in run["answer_text"].lower() for a in sample["answers"])
print(("right " if ok else "WRONG ") + sys.argv[2] + ": " + run["answer_text"])
sys.exit(0 if ok else 1)
PY
  then right=$((right + 1)); fi
  total=$((total + 1))
done
rm -f "$tmp"
echo "$right of $total answered correctly"
