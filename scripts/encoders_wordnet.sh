#!/usr/bin/env bash
# The tables of docs/results/transformers-wordnet.md: MiniLM-L6 (the
# teacher) on the WordNet retrieval task; its first three layers and its
# layers 0, 2, 4 untrained; the 0,2,4 student distilled for each of EPOCHS;
# the teacher with half its heads and half its neurons removed (michel),
# untrained and distilled for one epoch; and the sentences/s of the teacher
# and the students (bench-embed, THREADS threads; idle machine).
#
#   scripts/encoders_wordnet.sh        # about 3 hours of one core (training at 1 thread)
#
# Variables: SHARED (default ../shared), OUT (default runs/encoders),
# EPOCHS (default "1 2"), TRAIN_THREADS (default 1), THREADS (benchmark,
# default 2), SEED (default 0).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
OUT=${OUT:-runs/encoders}
EPOCHS=${EPOCHS:-1 2}
TRAIN_THREADS=${TRAIN_THREADS:-1}
THREADS=${THREADS:-2}
SEED=${SEED:-0}
TEACHER="$SHARED/models/all-MiniLM-L6-v2"
DATA="$SHARED/datasets/wordnet-glosses"
K=${BIN:-target/release/kdprune}
[ -n "${NO_BUILD:-}" ] || cargo build --release -p kdprune-cli -p kdprune-benchmarks >&2
export RAYON_NUM_THREADS=$TRAIN_THREADS
mkdir -p "$OUT"
row() { sed -n 3p | awk -F'|' -v name="$1" '{ printf "| %s |%s|%s| %s | %s |\n", name, $4, $5, $6, $7 }'; }
echo "| model | queries | glosses | accuracy@1 | MRR |"
echo "|---|---|---|---|---|"
$K eval-retrieval --model "$TEACHER" --data-dir "$DATA" 2>/dev/null | row "teacher (6 layers)"
for layers in 0,1,2 0,2,4; do
  m="$OUT/minilm-layers-${layers//,/}"
  [ -d "$m" ] || $K prune-encoder --model "$TEACHER" --data-dir "$DATA" --keep-layers "$layers" --out "$m" > /dev/null
  $K eval-retrieval --model "$m" --data-dir "$DATA" 2>/dev/null | row "layers $layers, untrained"
done
students=()
for e in $EPOCHS; do
  s="$OUT/minilm-l024-e$e-seed$SEED"
  [ -d "$s" ] || $K distill-encoder --teacher "$TEACHER" --data-dir "$DATA" --layers 0,2,4 --epochs "$e" \
      --seed "$SEED" --out "$s" > "$s.log" 2>&1
  $K eval-retrieval --model "$s" --data-dir "$DATA" 2>/dev/null | row "layers 0,2,4, distilled ($e epochs)"
  students+=("$s")
done
p="$OUT/minilm-hn50-michel"
[ -d "$p" ] || $K prune-encoder --model "$TEACHER" --data-dir "$DATA" --criterion michel --heads 0.5 \
    --neurons 0.5 --seed "$SEED" --out "$p" > "$p.prune.log" 2>&1
$K eval-retrieval --model "$p" --data-dir "$DATA" 2>/dev/null | row "6 layers, half the heads and neurons (michel), untrained"
s="$OUT/minilm-hn50-michel-e1-seed$SEED"
[ -d "$s" ] || $K distill-encoder --teacher "$TEACHER" --data-dir "$DATA" --student "$p" --epochs 1 \
    --seed "$SEED" --out "$s" > "$s.log" 2>&1
$K eval-retrieval --model "$s" --data-dir "$DATA" 2>/dev/null | row "6 layers, half the heads and neurons, distilled (1 epoch)"
echo
export RAYON_NUM_THREADS=$THREADS
for m in "$TEACHER" "${students[-1]}" "$s"; do
  KDPRUNE_SHARED="$SHARED" target/release/bench-embed --model "$m" --data-dir "$DATA" 2>/dev/null
done
