#!/usr/bin/env bash
# Distillation losses side by side on Fashion-MNIST (docs/results/distillation.md):
# a LeNet-5 ×4 teacher (CNN, 4× the channels and widths) trained once per seed
# with CE, then a LeNet-5 student trained from scratch under it with each loss:
# ce (no teacher), kd, ca-kld, dkd, fitnet, at, rkd (the feature losses added
# to CE, as in their papers). Seeds 0 1 2; the student of a seed starts from
# the same initialisation and sees the same batches whatever the loss.
#
#   scripts/distill_table.sh          # ~25 min on 2 cores
#
# Students use lr 0.02 (at 0.05 kd, dkd, fitnet and rkd diverge or collapse on
# this BatchNorm-free LeNet-5); DKD warms up over 3 epochs (the paper: 20 of
# 240), i.e. over the whole short run.
#
# Every run is skipped when its report exists, so an interrupted script resumes.
# Variables: DATA, OUT, SEEDS, TEACHER_MODEL, STUDENT_MODEL, TEACHER_EPOCHS,
# EPOCHS, TEACHER_LR, LR, DKD_WARMUP, LOSSES, TABLE, BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-${KDPRUNE_SHARED:-../shared}/datasets/fashion-mnist}
OUT=${OUT:-runs/distill}
SEEDS=${SEEDS:-0 1 2}
TEACHER_MODEL=${TEACHER_MODEL:-lenet5-x4}
STUDENT_MODEL=${STUDENT_MODEL:-lenet5}
TEACHER_EPOCHS=${TEACHER_EPOCHS:-3}
EPOCHS=${EPOCHS:-2}
TEACHER_LR=${TEACHER_LR:-0.05}
LR=${LR:-0.02}
DKD_WARMUP=${DKD_WARMUP:-3}
# Each entry is a --loss specification, or LABEL=SPEC for a variant (the
# last two: AT and DKD at lower weights, stable where the defaults collapse).
LOSSES=${LOSSES:-ce kd ca-kld dkd fitnet at rkd at-w100=ce:1,at:100 dkd-w0.25=ce:1,dkd:0.25}
TABLE=${TABLE:-$OUT/table.md}
BIN=${BIN:-target/release/kdprune}
[ -n "${NO_BUILD:-}" ] || cargo build --release -p kdprune-cli
common=(--dataset fashion-mnist --data-dir "$DATA" --batch-size 128 --quiet)

for seed in $SEEDS; do
  dir=$OUT/seed$seed
  teacher=$dir/teacher.safetensors
  if [ ! -f "$teacher" ]; then
    start=$(date +%s)
    $BIN train --model "$TEACHER_MODEL" --epochs "$TEACHER_EPOCHS" --lr "$TEACHER_LR" --seed "$seed" "${common[@]}" --out "$teacher"
    echo "seed $seed: teacher $TEACHER_MODEL, $(( $(date +%s) - start )) s"
  fi
  for entry in $LOSSES; do
    loss=${entry%%=*} spec=${entry#*=}
    [ -f "$dir/$loss/report.json" ] && continue
    start=$(date +%s)
    with_teacher=(--teacher "$teacher")
    [ "$spec" = ce ] && with_teacher=()
    [ -f "$dir/$loss/FAILED" ] && continue
    # A diverging run (NaN loss) is recorded, not fatal: the table counts it.
    if ! $BIN distill "${with_teacher[@]}" --student-model "$STUDENT_MODEL" --loss "$spec" \
      --dkd-warmup "$DKD_WARMUP" --epochs "$EPOCHS" --lr "$LR" --seed "$seed" "${common[@]}" \
      --out "$dir/$loss" >/dev/null 2>"$dir/$loss.err"; then
      mkdir -p "$dir/$loss" && cp "$dir/$loss.err" "$dir/$loss/FAILED"
    fi
    echo "seed $seed: $loss, $(( $(date +%s) - start )) s"
  done
done

# One row per loss: test accuracy (%) mean ± sample std over the seeds, the
# objective as run, and the mean training time of a student.
field() { # top-level number of a report.json (two-space indent)
  sed -n "s/^  \"$2\": \([-0-9.eE+]*\),\{0,1\}$/\1/p" "$1"
}
stats() { # mean ± sample std (n − 1) of the numbers on stdin, ×100 when $1 = pct
  awk -v pct="$1" '{ v[NR] = (pct == "pct" ? 100 * $1 : $1); s += v[NR] }
    END { m = s / NR; for (i = 1; i <= NR; i++) q += (v[i] - m)^2;
          sd = NR > 1 ? sqrt(q / (NR - 1)) : 0;
          if (pct == "pct") printf "%.2f ± %.2f", m, sd; else printf "%.0f", m }'
}
{
  n=$(echo $SEEDS | wc -w)
  teacher_acc=$(for seed in $SEEDS; do $BIN eval "$OUT/seed$seed/teacher.safetensors" --data-dir "$DATA" | sed 's/test accuracy: //'; done | stats pct)
  echo "Teacher \`$TEACHER_MODEL\` ($TEACHER_EPOCHS epochs, CE): $teacher_acc % test accuracy (n = $n)."
  echo
  echo "| loss | objective | student accuracy % (n = $n) | seconds / run |"
  echo "|---|---|---:|---:|"
  for entry in $LOSSES; do
    loss=${entry%%=*}
    reports=$(for seed in $SEEDS; do f=$OUT/seed$seed/$loss/report.json; if [ -f "$f" ]; then echo "$f"; fi; done)
    failed=$(for seed in $SEEDS; do if [ -f "$OUT/seed$seed/$loss/FAILED" ]; then echo "$seed"; fi; done | wc -l)
    if [ -z "$reports" ]; then
      echo "| $loss | – | diverged ($failed of $n seeds) | – |"
      continue
    fi
    objective=$(sed -n 's/^  "loss": "\(.*\)",$/\1/p' $(echo "$reports" | head -1))
    acc=$(for f in $reports; do field "$f" accuracy; done | stats pct)
    secs=$(for f in $reports; do field "$f" seconds; done | stats secs)
    if [ "$failed" -gt 0 ]; then acc="$acc (diverged on $failed of $n seeds)"; fi
    echo "| $loss | \`$objective\` | $acc | $secs |"
  done
} > "$TABLE.tmp"
mv "$TABLE.tmp" "$TABLE"
cat "$TABLE"
