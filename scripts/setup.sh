#!/usr/bin/env bash
# One command on a fresh machine: fetch the default model, build headscope, run it on a shipped sample,
# and print the command that opens the explorer on the same model and sample.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh
cargo build --release --locked
./target/release/headscope run samples/question.json "$@"
# Where scripts/fetch-model.sh put the model; absolute paths, so the line works from any directory.
model="${HEADSCOPE_CACHE:-$HOME/.cache/headscope}/models/SmolLM2-135M-Instruct.Q4_1.gguf"
printf '\n%q --model %q %q   # opens the explorer\n' \
  "$PWD/target/release/headscope" "$model" "$PWD/samples/question.json"
