#!/usr/bin/env bash
# Mutation fuzzing of every parser (IDX, CIFAR, parquet, checkpoints in every
# encoding, TOML configs, loss specifications): EXECUTIONS mutants per target
# (default 1,000,000) with the address space capped at 4 GiB; prints a table
# of executions, rate, accepted inputs and panics, keeps panicking inputs in
# fuzz-findings/, and reports the peak resident memory. Not part of CI
# (fuzz/tests/seed_corpus.rs runs 300 per target there).
#
#   scripts/fuzz.sh                 # about an hour of one core
#   EXECUTIONS=10000 scripts/fuzz.sh checkpoint toml
set -euo pipefail
cd "$(dirname "$0")/.."
EXECUTIONS=${EXECUTIONS:-1000000}
SEED=${SEED:-0}
cargo build --release -p kdprune-fuzz >&2
grep -o -m1 -w 'avx512f\|avx2' /proc/cpuinfo | head -1 | sed 's/^/cpu features: /' >&2 || true
/usr/bin/time -v target/release/kdprune-fuzz "$EXECUTIONS" "$SEED" "$@" 2> >(grep -E "Maximum resident|panic:" >&2)
