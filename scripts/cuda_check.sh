#!/usr/bin/env bash
# Does the CUDA build still compile? `cargo check --features cuda` of the
# CLI and the benchmarks (every kdprune crate with candle's CUDA back end,
# its PTX kernels compiled by nvcc) on a machine with no GPU and no system
# CUDA, with the toolchain of ../shared/gpu/cuda-toolchain.sh (CUDA 13.0
# from PyPI wheels, installed once under ~/.cache; a few hundred MB). Not
# part of .ci/run, which must not download a toolchain; run it after a
# change to device code or a candle upgrade.
#
#   scripts/cuda_check.sh                 # check (76 min the first time at JOBS=1 beside other jobs; incremental after)
#   BUILD=1 scripts/cuda_check.sh         # a release binary in target/cuda, to carry to a GPU machine
#
# Variables: SHARED (default ../shared), JOBS (cargo -j, default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
tool="$SHARED/gpu/cuda-toolchain.sh"
if [ ! -x "$tool" ] && [ ! -f "$tool" ]; then
  echo "no CUDA toolchain script at $tool (set SHARED)" >&2
  exit 1
fi
eval "$(bash "$tool")"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}
start=$(date +%s)
mode=check
if [ -n "${BUILD:-}" ]; then
  mode=build
  cargo build --release -j "${JOBS:-2}" --features cuda -p kdprune-cli -p kdprune-benchmarks
else
  cargo check -j "${JOBS:-2}" --features cuda -p kdprune-cli -p kdprune-benchmarks --all-targets
fi
echo "cuda $mode: ok in $(( $(date +%s) - start )) s (nvcc: $(command -v nvcc || echo via toolchain env))"
