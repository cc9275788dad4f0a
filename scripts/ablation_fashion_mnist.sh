#!/usr/bin/env bash
# The ablation of docs/results/ablation-fashion-mnist.md: does the teacher
# help the pruning score, and where? Runs every sweep of
# configs/sweeps/ablation/ (base first: it trains the shared teachers and
# dense students) and gathers their accuracy tables.
#
#   scripts/ablation_fashion_mnist.sh        # ~1 h on 2 cores
#
# Each sweep resumes where it stopped. Variables: BIN (the kdprune binary),
# VARIANTS (which configs), DOC (the gathered tables).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/kdprune}
VARIANTS=${VARIANTS:-base hinton t1 t2 alpha05 batches32 retrain-kd retrain0 retrain5 cnn-student beta-raw std-sample}
DOC=${DOC:-runs/ablation/tables.md}
[ -n "${NO_BUILD:-}" ] || cargo build --release -p kdprune-cli
for v in $VARIANTS; do
  start=$(date +%s)
  $BIN sweep --config "configs/sweeps/ablation/$v.toml" --quiet
  echo "ablation $v: $(( $(date +%s) - start )) s"
done
{
  for v in $VARIANTS; do
    echo "## $v"
    echo
    sed -n '/^## Test accuracy/,/^## Cost/p' "runs/ablation/$v/table.md" | sed '1d;$d'
  done
} > "$DOC"
echo "tables gathered in $DOC"
