#!/usr/bin/env bash
# One command on a fresh machine: fetch the default model, build headscope, and run it on a shipped sample.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh
cargo build --release --locked
./target/release/headscope run samples/question.json "$@"
