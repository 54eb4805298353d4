#!/usr/bin/env bash
# The `openblas` feature's path (README, Performance): the same parity tests as the default build,
# with every f32 product of the forward sent through OpenBLAS (HEADSCOPE_BLAS_MIN_ROWS=1, so the tiny
# fixture models' few-row products take it too), plus the real model's answer log-probs and the
# analyses against their independent reference, and the gradients (which stay on candle). Not the
# pruning tests: they hold the sliced model to the masked one within 1e-5, which the default build
# meets; through OpenBLAS the two differ by up to 1.4e-5 on the tiny Qwen2 (its kernels block a
# shorter inner dimension differently), a summation-order difference, so they run on the default
# build only. Needs Debian's libopenblas-dev.
set -euo pipefail
cd "$(dirname "$0")/.."
# The linker's `-lopenblas` needs the development symlink libopenblas.so (ldconfig is not on every
# user's PATH, so look where distributions put it).
found=
for lib in /usr/lib/libopenblas.so /usr/lib64/libopenblas.so /usr/lib/*/libopenblas.so; do
  if [ -e "$lib" ]; then found=$lib; fi
done
if [ -z "$found" ]; then
  echo "the openblas feature needs the system OpenBLAS: apt-get install libopenblas-dev" >&2
  exit 1
fi
HEADSCOPE_BLAS_MIN_ROWS=1 HEADSCOPE_REQUIRE_MODEL=1 cargo test --locked --features openblas \
  --lib --test suite -- blas parity:: smollm2:: analysis_reference:: differentiable:: atp::
# The same build again with the few-row product path on (release builds take it; the dev profile
# leaves it off): products of up to 8 rows through `engine::skinny`, the larger ones through
# OpenBLAS from 64 rows.
HEADSCOPE_SKINNY=1 HEADSCOPE_REQUIRE_MODEL=1 cargo test --locked --features openblas \
  --lib --test suite -- skinny parity:: smollm2:: analysis_reference::
