#!/usr/bin/env bash
# Once-for-All elastic kernels on Fashion-MNIST within a CPU budget:
# progressive shrinking of efficientnet-b0-k7 (7 → {7,5} → {7,5,3}, each
# phase distilled from the full network) on TRAIN samples of the training
# set, every sub-network then tested on TEST samples of the test set, and
# the full network's sub-networks tested without shrinking, for contrast.
#
#   RAYON_NUM_THREADS=1 scripts/ofa_fashion_mnist.sh
#   # TRAIN=4000 TEST=2000 EPOCHS=2 SHRINK_EPOCHS=1 SHRINK_LR=0.005 RECALIBRATE=2048
#
# The shrinking phases fine-tune at a tenth of the first phase's learning
# rate (0.05), as OFA's do. Every sub-network is tested twice: as it is, and
# after its batch norms' running statistics are recalibrated on RECALIBRATE
# training samples at its kernel size (OFA's BN recalibration).
# Writes runs/ofa/{k7,k75,k753}.safetensors and prints one line per kernel,
# network and recalibration. About 45 minutes on one core at the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/kdprune}
DATA=${DATA:-${KDPRUNE_SHARED:-../shared}/datasets/fashion-mnist}
TRAIN=${TRAIN:-4000}
TEST=${TEST:-2000}
EPOCHS=${EPOCHS:-2}
SHRINK_EPOCHS=${SHRINK_EPOCHS:-1}
SHRINK_LR=${SHRINK_LR:-0.005}
RECALIBRATE=${RECALIBRATE:-2048}
SEED=${SEED:-0}
OUT=${OUT:-runs/ofa}
[ -n "${NO_BUILD:-}" ] || cargo build --release -p kdprune-cli
mkdir -p "$OUT"
D=(--dataset fashion-mnist --data-dir "$DATA" --seed "$SEED" --train-samples "$TRAIN" --test-samples "$TEST")
M=(--model efficientnet-b0-k7)
[ -f "$OUT/k7.safetensors" ] || $BIN train "${M[@]}" "${D[@]}" --epochs "$EPOCHS" --out "$OUT/k7.safetensors"
[ -f "$OUT/k75.safetensors" ] || $BIN train "${M[@]}" "${D[@]}" --epochs "$SHRINK_EPOCHS" --lr "$SHRINK_LR" \
    --init "$OUT/k7.safetensors" --teacher "$OUT/k7.safetensors" --loss kd \
    --elastic-kernels 7,5 --out "$OUT/k75.safetensors"
[ -f "$OUT/k753.safetensors" ] || $BIN train "${M[@]}" "${D[@]}" --epochs "$SHRINK_EPOCHS" --lr "$SHRINK_LR" \
    --init "$OUT/k75.safetensors" --teacher "$OUT/k7.safetensors" --loss kd \
    --elastic-kernels 7,5,3 --out "$OUT/k753.safetensors"
for net in k7 k753; do
  for k in 7 5 3; do
    E=($BIN eval "$OUT/$net.safetensors" --kernel "$k" --data-dir "$DATA" --test-samples "$TEST")
    echo "$net kernel $k: $("${E[@]}" | tail -1)"
    echo "$net kernel $k, batch norms recalibrated: $("${E[@]}" --recalibrate-bn "$RECALIBRATE" | tail -1)"
  done
done
