#!/usr/bin/env bash
# Regenerates the Fashion-MNIST table of the README: LeNet-300-100 student,
# LeNet-5 (CNN) teacher, sparsity 0.9 / 0.95 / 0.98, seeds 0 1 2.
# The teacher and the dense student of a seed are trained once and reused by
# the three sparsities (kdprune run --teacher/--student).
#
#   RAYON_NUM_THREADS=1 scripts/fashion_mnist_table.sh   # ~10 min on one core
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-${KDPRUNE_SHARED:-../shared}/datasets/fashion-mnist}
OUT=${OUT:-runs/fashion-mnist}
BIN=target/release/kdprune
cargo build --release -p kdprune-cli
common=(--dataset fashion-mnist --data-dir "$DATA" --batch-size 128 --quiet)
for seed in 0 1 2; do
  dir=$OUT/seed$seed
  [ -f "$dir/teacher.safetensors" ] || $BIN train --model lenet5 --epochs 4 --seed "$seed" "${common[@]}" --out "$dir/teacher.safetensors"
  [ -f "$dir/dense.safetensors" ] || $BIN train --model lenet-300-100 --epochs 10 --seed "$seed" "${common[@]}" --out "$dir/dense.safetensors"
  for s in 0.9 0.95 0.98; do
    [ -f "$dir/s$s/report.json" ] || $BIN run "${common[@]}" --seed "$seed" --sparsity "$s" \
      --teacher "$dir/teacher.safetensors" --student "$dir/dense.safetensors" \
      --kd-epochs 2 --retrain-epochs 5 --score-batches 16 --out "$dir/s$s"
  done
done
$BIN summarize "$OUT"/seed*/s*/report.json --out docs/results/fashion-mnist.md
