#!/usr/bin/env bash
# Measured CPU latency of structurally pruned ResNet-20s against the dense
# one (the latency table of docs/results/structured-fashion-mnist.md): from
# the seed-0 dense network of scripts/structured_fashion_mnist.sh, L1
# channel pruning to --target-macs 0.667, 0.5 and 0.333, the removal of 3
# of the 7 removable blocks, and those blocks removed then channels to
# --target-macs 0.75; then RUNS runs of `kdprune compare` (dense layers,
# median of 30 passes, 2 threads), one table per run under $OUT/raw, and
# each model's median and range of the speed-ups over the runs.
#
#   scripts/structured_latency.sh        # on an idle machine
#
# Variables: DIR (the results folder, default runs/structured-fashion-mnist),
# OUT (default runs/latency), RUNS (default 6), THREADS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${DIR:-runs/structured-fashion-mnist}
OUT=${OUT:-runs/latency}
RUNS=${RUNS:-6}
THREADS=${THREADS:-2}
K=${BIN:-target/release/kdprune}
[ -n "${NO_BUILD:-}" ] || cargo build --release -p kdprune-cli >&2
dense="$DIR/resnet20-seed0.safetensors"
[ -f "$dense" ] || { echo "no $dense (run scripts/structured_fashion_mnist.sh first)" >&2; exit 1; }
data=(--dataset fashion-mnist --data-dir "$DIR/data")
mkdir -p "$OUT/raw"
for t in 0.667 0.5 0.333; do
  m="$OUT/r20-l1-m$t.safetensors"
  [ -f "$m" ] || $K prune --checkpoint "$dense" "${data[@]}" --structured channels --criterion l1 \
      --scope layer --target-macs "$t" --out "$m" >&2
done
[ -f "$OUT/r20-b3.safetensors" ] || $K prune --checkpoint "$dense" "${data[@]}" --structured blocks \
    --ratio 0.43 --out "$OUT/r20-b3.safetensors" >&2
[ -f "$OUT/r20-b3-c.safetensors" ] || $K prune --checkpoint "$OUT/r20-b3.safetensors" "${data[@]}" \
    --structured channels --criterion l1 --scope layer --target-macs 0.75 --out "$OUT/r20-b3-c.safetensors" >&2
grep -o -m1 -w 'avx512f' /proc/cpuinfo >&2 || grep -o -m1 -w 'avx2' /proc/cpuinfo >&2 || true
for run in $(seq 1 "$RUNS"); do
  RAYON_NUM_THREADS=$THREADS $K compare "$dense" "$OUT"/r20-l1-m0.667.safetensors "$OUT"/r20-l1-m0.5.safetensors \
      "$OUT"/r20-l1-m0.333.safetensors "$OUT"/r20-b3.safetensors "$OUT"/r20-b3-c.safetensors \
      "${data[@]}" --rounds 30 --layers dense > "$OUT/raw/run$run.md"
done
# per model: MACs from `models --checkpoint`, then the median and range of
# the batch-1 and batch-64 speed-ups over the runs
echo "| model | MACs | batch 1: median (range) | batch 64: median (range) |"
echo "|---|---|---|---|"
for m in "$OUT"/r20-l1-m0.667 "$OUT"/r20-l1-m0.5 "$OUT"/r20-l1-m0.333 "$OUT"/r20-b3 "$OUT"/r20-b3-c; do
  macs=$($K models --checkpoint "$m.safetensors" | sed -n 's/^MACs per sample: .*(\(.*\) fewer)/\1/p')
  cat "$OUT"/raw/run*.md | awk -F'|' -v m="$m.safetensors" -v name="$(basename "$m")" -v macs="$macs" '
    $3 ~ m { gsub(/[ ×]/, "", $12); gsub(/[ ×]/, "", $14); b1[++n] = $12; b64[n] = $14 }
    function stat(a,   i, j, t, s) {
      for (i = 1; i <= n; i++) s[i] = a[i]
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (s[j] < s[i]) { t = s[i]; s[i] = s[j]; s[j] = t }
      return sprintf("%.2f× (%.2f–%.2f×)", n % 2 ? s[(n + 1) / 2] : (s[n / 2] + s[n / 2 + 1]) / 2, s[1], s[n])
    }
    END { printf "| %s | %s fewer | %s | %s |\n", name, macs, stat(b1), stat(b64) }'
done
