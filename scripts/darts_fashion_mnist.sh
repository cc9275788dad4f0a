#!/usr/bin/env bash
# DARTS on Fashion-MNIST over three seeds, each against a hand-designed
# network of the zoo (ResNet-20, the config's `baseline`) trained exactly as
# the searched one (same samples, epochs, optimiser, batch order, seed):
#
#   scripts/darts_fashion_mnist.sh          # SEEDS="0 1 2" DATA=../shared/datasets/fashion-mnist
#
# Writes runs/darts/fmnist-seedN/{report.json,model.safetensors} and prints
# one table: genotype, parameters, MACs, final test accuracy of each, the
# ResNet-20 beside it, and mean ± std over the seeds. About 35–45 minutes per
# seed on one core (RAYON_NUM_THREADS=1). Variables: BIN, SEEDS, DATA, CONFIG.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/kdprune}
SEEDS=${SEEDS:-0 1 2}
DATA=${DATA:-${KDPRUNE_SHARED:-../shared}/datasets/fashion-mnist}
CONFIG=${CONFIG:-configs/search/darts-fashion-mnist.toml}
[ -n "${NO_BUILD:-}" ] || cargo build --release -p kdprune-cli
mkdir -p runs/darts
reports=()
for s in $SEEDS; do
  out=runs/darts/fmnist-seed$s
  [ -f "$out/report.json" ] || $BIN search darts --config "$CONFIG" --dataset fashion-mnist \
      --data-dir "$DATA" --seed "$s" --out "$out" --quiet
  reports+=("$out/report.json")
done
python3 scripts/darts_table.py "${reports[@]}"
