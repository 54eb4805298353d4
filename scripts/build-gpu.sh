#!/usr/bin/env bash
# Builds the CUDA binary of headscope on a machine without a GPU or a CUDA toolkit (nvcc 13.0 from
# PyPI wheels, link stubs, CUDA_COMPUTE_CAP=90 for H100/H200; see scripts/cuda-build.sh, the
# project's shared recipe), then writes a launcher that finds the GPU machine's CUDA libraries.
#
#   scripts/build-gpu.sh            # → target-gpu/release/headscope and target-gpu/run-gpu.sh
#   target-gpu/run-gpu.sh run samples/question.json --device cuda
#
# CI never runs this: it builds and tests without the `cuda` feature.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target-gpu}"
scripts/cuda-build.sh setup
scripts/cuda-build.sh build . --features cuda --bin headscope
# The launcher runs the binary beside it (release/headscope) unless BIN says otherwise.
scripts/cuda-build.sh launcher | sed 's|bin=${BIN:-$here/probe}|bin=${BIN:-$here/release/headscope}|' \
  > "$CARGO_TARGET_DIR/run-gpu.sh"
chmod +x "$CARGO_TARGET_DIR/run-gpu.sh"
echo "GPU binary: $CARGO_TARGET_DIR/release/headscope (start it with $CARGO_TARGET_DIR/run-gpu.sh)"
