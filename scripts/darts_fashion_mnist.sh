#!/usr/bin/env bash
# DARTS on Fashion-MNIST over three seeds, against a hand-designed network
# of the zoo (ResNet-20) trained as long on the same data:
#
#   scripts/darts_fashion_mnist.sh          # SEEDS="0 1 2" DATA=../shared/datasets/fashion-mnist
#
# Writes runs/darts/fmnist-seedN/{report.json,model.safetensors} and
# runs/darts/resnet20-seedN.safetensors; prints the genotype, parameters and
# test accuracy of each. Variables: BIN, SEEDS, DATA, CONFIG.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/kdprune}
SEEDS=${SEEDS:-0 1 2}
DATA=${DATA:-${KDPRUNE_SHARED:-../shared}/datasets/fashion-mnist}
CONFIG=${CONFIG:-configs/search/darts-fashion-mnist.toml}
[ -n "${NO_BUILD:-}" ] || cargo build --release -p kdprune-cli
mkdir -p runs/darts
for s in $SEEDS; do
  out=runs/darts/fmnist-seed$s
  [ -f "$out/report.json" ] || $BIN search darts --config "$CONFIG" --dataset fashion-mnist \
      --data-dir "$DATA" --seed "$s" --out "$out" --quiet
  ckpt=runs/darts/resnet20-seed$s.safetensors
  [ -f "$ckpt" ] || $BIN train --model resnet20 --dataset fashion-mnist --data-dir "$DATA" \
      --seed "$s" --epochs 10 --out "$ckpt" --quiet
  echo "seed $s: darts $(python3 -c "import json,sys; r=json.load(open('$out/report.json')); print(r['params'], 'params', r['test_accuracy'][-1])")"
  echo "seed $s: resnet20 $($BIN eval "$ckpt" --data-dir "$DATA" | tail -1)"
done
