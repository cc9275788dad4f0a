#!/usr/bin/env bash
# Head-importance criteria on MiniLM-L6 without retraining
# (docs/results/transformers-wordnet.md, "Which heads matter"): remove 25 %
# and 50 % of all 72 heads under one global threshold by each criterion,
# then the test retrieval of the pruned encoder as it is.
#
#   scripts/encoder_heads.sh     # about 5 minutes on one core
#
# Variables: SHARED (default ../shared), OUT (default runs/encoders/heads),
# THREADS (default 1), SEED (scoring batches, default 0).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
OUT=${OUT:-runs/encoders/heads}
THREADS=${THREADS:-1}
SEED=${SEED:-0}
TEACHER="$SHARED/models/all-MiniLM-L6-v2"
DATA="$SHARED/datasets/wordnet-glosses"
K=${BIN:-target/release/kdprune}
[ -n "${NO_BUILD:-}" ] || cargo build --release -p kdprune-cli >&2
export RAYON_NUM_THREADS=$THREADS
mkdir -p "$OUT"
echo "| criterion | heads removed | heads left per layer | test accuracy@1 | test MRR |"
echo "|---|---|---|---|---|"
for ratio in 0.25 0.5; do
  for criterion in magnitude michel attention-variance; do
    m="$OUT/$criterion-$ratio-seed$SEED"
    [ -d "$m" ] || $K prune-encoder --model "$TEACHER" --data-dir "$DATA" --criterion "$criterion" \
        --heads "$ratio" --seed "$SEED" --out "$m" > "$m.log" 2>&1
    left=$(python3 -c "import json,sys; r=json.load(open('$m/prune-report.json')); print(', '.join(str(h) for h, _ in r['after']))")
    $K eval-retrieval --model "$m" --data-dir "$DATA" 2>/dev/null | sed -n 3p |
      awk -F'|' -v c="$criterion" -v r="$ratio" -v left="$left" '{ gsub(/ /, "", $6); gsub(/ /, "", $7); printf "| %s | %s | %s | %s | %s |\n", c, r * 100 " %", left, $6, $7 }'
  done
done
