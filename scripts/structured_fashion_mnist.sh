#!/usr/bin/env bash
# Structured pruning of CIFAR ResNets on Fashion-MNIST (padded to 32×32 by
# the networks): per seed, a dense network; channel pruning to 1.5×, 2× and
# 3× fewer MACs (`--target-macs`) by each criterion; retraining with
# cross-entropy alone or with KD from the dense network (the wider teacher:
# every pruned model is a narrower copy of it). Prints one TSV line per run
# and writes them to $OUT/results.tsv; `scripts/structured_table.sh` turns
# that file into the tables of docs/results/structured-fashion-mnist.md.
#
#   scripts/structured_fashion_mnist.sh
#
# Variables:
#   DATA      Fashion-MNIST IDX folder (default ../shared/datasets/fashion-mnist)
#   TRAIN     training images used: the first TRAIN of the (shuffled) training
#             split, written as IDX files under $OUT/data (default 10000;
#             the test split is always whole)
#   OUT       default runs/structured-fashion-mnist
#   MODEL     default resnet20
#   SEEDS     default "0 1 2"
#   CRITERIA  default "l1 fpgm taylor teacher-guided"
#   TARGETS   MAC fractions kept, default "0.667 0.5 0.333"
#   EPOCHS    dense training epochs (default 3); RETRAIN retraining epochs (default 1)
# Finished runs are kept, so the script can be stopped and started again.
# Single-threaded runs side by side: RAYON_NUM_THREADS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/datasets/fashion-mnist}
TRAIN=${TRAIN:-10000}
OUT=${OUT:-runs/structured-fashion-mnist}
MODEL=${MODEL:-resnet20}
SEEDS=${SEEDS:-"0 1 2"}
CRITERIA=${CRITERIA:-"l1 fpgm taylor teacher-guided"}
TARGETS=${TARGETS:-"0.667 0.5 0.333"}
EPOCHS=${EPOCHS:-3}
RETRAIN=${RETRAIN:-1}
[ -d "$DATA" ] || { echo "no Fashion-MNIST IDX files in $DATA (set DATA)" >&2; exit 1; }
K=${BIN:-target/release/kdprune}
[ -n "${NO_BUILD:-}" ] || cargo build --release -p kdprune-cli >&2
mkdir -p "$OUT/data"

# The first $TRAIN training images and labels as IDX files (header count
# patched), the test split as it is. (`head` closes the pipe early: no
# pipefail inside.)
first() { ( set +o pipefail; zcat "$1" | tail -c +"$2" | head -c "$3" ); }
be32() { printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1>>24&255)) $(($1>>16&255)) $(($1>>8&255)) $(($1&255)))"; }
sub="$OUT/data"
if [ ! -f "$sub/train-labels-idx1-ubyte.gz" ]; then
  { printf '\x00\x00\x08\x03'; be32 "$TRAIN"; printf '\x00\x00\x00\x1c\x00\x00\x00\x1c'
    first "$DATA/train-images-idx3-ubyte.gz" 17 $((TRAIN * 784)); } \
    | gzip > "$sub/train-images-idx3-ubyte.gz"
  cp "$DATA"/t10k-*-ubyte.gz "$sub/"
  { printf '\x00\x00\x08\x01'; be32 "$TRAIN"
    first "$DATA/train-labels-idx1-ubyte.gz" 9 "$TRAIN"; } \
    | gzip > "$sub/train-labels-idx1-ubyte.gz"
  [ "$(zcat "$sub/train-labels-idx1-ubyte.gz" | wc -c)" = $((TRAIN + 8)) ] \
    || { echo "fewer than $TRAIN training images in $DATA" >&2; rm -f "$sub"/*; exit 1; }
fi
data=(--dataset fashion-mnist --data-dir "$sub")

# accuracy, parameters and MACs of a checkpoint
acc() { sed -n 's/^test accuracy: //p' "$1" | tail -1; }
size() { $K models --checkpoint "$1" | sed -n -e 's/^parameters: [0-9]* unpruned, \([0-9]*\) here.*/\1/p' \
  -e 's/^MACs per sample: [0-9]* unpruned, \([0-9]*\) here.*/\1/p' | paste -sd '\t'; }
line() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" | tee -a "$OUT/results.tsv"; }

for seed in $SEEDS; do
  dense="$OUT/$MODEL-seed$seed.safetensors"
  [ -f "$dense" ] || $K train --model "$MODEL" "${data[@]}" --seed "$seed" --epochs "$EPOCHS" \
      --quiet --out "$dense" > "$dense.out"
  grep -q "^$MODEL	$seed	dense	" "$OUT/results.tsv" 2>/dev/null \
    || line "$MODEL" "$seed" dense 1 - "$(acc "$dense.out")" "$(size "$dense")"
  for t in $TARGETS; do
    for c in $CRITERIA; do
      small="$OUT/$MODEL-$c-m$t-seed$seed.safetensors"
      teacher=(); [ "$c" = teacher-guided ] && teacher=(--teacher "$dense")
      [ -f "$small" ] || $K prune --checkpoint "$dense" "${data[@]}" --structured channels \
          --criterion "$c" --scope layer --target-macs "$t" "${teacher[@]}" \
          --out "$small" > "$small.out"
      for how in ce kd; do
        grep -q "^$MODEL	$seed	$c	$t	$how	" "$OUT/results.tsv" 2>/dev/null && continue
        r="${small%.safetensors}-$how.safetensors"
        kd=(); [ "$how" = kd ] && kd=(--teacher "$dense" --loss kd)
        [ -f "$r" ] || $K retrain --checkpoint "$small" "${data[@]}" --seed "$seed" \
            --epochs "$RETRAIN" --lr 0.02 "${kd[@]}" --quiet --out "$r" > "$r.out"
        line "$MODEL" "$seed" "$c" "$t" "$how" "$(acc "$r.out")" "$(size "$r")"
      done
    done
  done
done
