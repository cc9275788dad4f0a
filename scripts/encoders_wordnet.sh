#!/usr/bin/env bash
# The tables of docs/results/transformers-wordnet.md: MiniLM-L6 (the
# teacher) on the WordNet retrieval task; its first three layers and its
# layers 0, 2, 4 untrained; the 0,2,4 student distilled for EPOCHS epochs;
# and the sentences/s of teacher and student (bench-embed, THREADS threads).
#
#   scripts/encoders_wordnet.sh        # about 30 minutes on 2 cores
#
# Variables: SHARED (default ../shared), OUT (default runs/encoders),
# EPOCHS (default 1), THREADS (default 2), SEED (default 0).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
OUT=${OUT:-runs/encoders}
EPOCHS=${EPOCHS:-1}
THREADS=${THREADS:-2}
SEED=${SEED:-0}
TEACHER="$SHARED/models/all-MiniLM-L6-v2"
DATA="$SHARED/datasets/wordnet-glosses"
K=${BIN:-target/release/kdprune}
[ -n "${NO_BUILD:-}" ] || cargo build --release -p kdprune-cli -p kdprune-benchmarks >&2
export RAYON_NUM_THREADS=$THREADS
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
s="$OUT/minilm-l024-e$EPOCHS-seed$SEED"
[ -d "$s" ] || $K distill-encoder --teacher "$TEACHER" --data-dir "$DATA" --layers 0,2,4 --epochs "$EPOCHS" \
    --seed "$SEED" --out "$s" > "$s.log" 2>&1
$K eval-retrieval --model "$s" --data-dir "$DATA" 2>/dev/null | row "layers 0,2,4, distilled ($EPOCHS epoch)"
echo
for m in "$TEACHER" "$s"; do
  KDPRUNE_SHARED="$SHARED" target/release/bench-embed --model "$m" --data-dir "$DATA" 2>/dev/null
done
