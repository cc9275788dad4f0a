#!/usr/bin/env bash
# The distill → prune → quantise pipeline (`kdprune compress`) on
# Fashion-MNIST: a lenet5-x4 teacher per seed, students distilled under it
# with CA-KLD, teacher-guided one-shot pruning, CA-KLD retraining under the
# mask, sparse and INT8 exports, and the comparison; then one Markdown table
# of mean ± std over the seeds (the table of docs/results/deploy-fashion-mnist.md).
#
#   scripts/deploy_fashion_mnist.sh > table.md
#
# Variables: DATA (the IDX folder, default ../shared/datasets/fashion-mnist),
# OUT (default runs/deploy-fashion-mnist), SEEDS (default "0 1 2"),
# STUDENTS (default "lenet-300-100 lenet5"), SPARSITIES (default
# "0.9 0.95 0.99"). Finished runs are kept (compress resumes), so the
# script can be stopped and started again.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/datasets/fashion-mnist}
OUT=${OUT:-runs/deploy-fashion-mnist}
SEEDS=${SEEDS:-"0 1 2"}
STUDENTS=${STUDENTS:-"lenet-300-100 lenet5"}
SPARSITIES=${SPARSITIES:-"0.9 0.95 0.99"}
[ -d "$DATA" ] || { echo "no Fashion-MNIST IDX files in $DATA (set DATA)" >&2; exit 1; }
cargo build --release -p kdprune-cli >&2
K=target/release/kdprune
mkdir -p "$OUT"

for seed in $SEEDS; do
  teacher="$OUT/teacher-seed$seed.safetensors"
  [ -f "$teacher" ] || $K train --model lenet5-x4 --dataset fashion-mnist --data-dir "$DATA" \
      --seed "$seed" --epochs 5 --quiet --out "$teacher" >&2
  for student in $STUDENTS; do
    for s in $SPARSITIES; do
      run="$OUT/$student-s$s-seed$seed"
      mkdir -p "$run"
      cat > "$run/compress.toml" <<TOML
dataset = "fashion-mnist"
data_dir = "$DATA"
seed = $seed
out = "$run"
[teacher]
checkpoint = "$teacher"
[student]
model = "$student"
loss = "ca-kld"
epochs = 10
lr = 0.05
[prune]
criterion = "teacher-guided"
sparsity = $s
loss = "ca-kld"
[retrain]
loss = "ca-kld"
epochs = 5
lr = 0.01
[export]
calibration_batches = 8
compare_rounds = 20
TOML
      echo "# $run" >&2
      $K compress --config "$run/compress.toml" --quiet > "$run/compress.out"
    done
  done
done

# mean ± std over the seeds of every run's compare.json (rows: teacher,
# student, retrained, sparse file, INT8 file, sparse INT8 file)
python3 - "$OUT" "$SEEDS" "$STUDENTS" "$SPARSITIES" <<'PY'
import json, statistics, sys
out, seeds, students, sparsities = sys.argv[1], *[a.split() for a in sys.argv[2:]]
def ms(values, fmt):
    m = statistics.mean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{fmt.format(m)} ± {fmt.format(s)}"
teacher = [json.load(open(f"{out}/{students[0]}-s{sparsities[0]}-seed{seed}/compare.json"))["rows"][0]["accuracy"] for seed in seeds]
print(f"Teacher lenet5-x4 (5 epochs): test accuracy {ms(teacher, '{:.4f}')} over seeds {', '.join(seeds)}.\n")
print("| student | sparsity | distilled | retrained (f32) | INT8 | retained vs teacher (INT8) | sparse file | INT8 file | sparse INT8 file | dense file | sparse, batch 1 | sparse, batch 64 | INT8, batch 1 | INT8, batch 64 |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for student in students:
    for s in sparsities:
        rows = [json.load(open(f"{out}/{student}-s{s}-seed{seed}/compare.json"))["rows"] for seed in seeds]
        col = lambda i, k: [r[i][k] for r in rows]
        # the sparse INT8 file holds the INT8 file's values: the same accuracy
        assert col(5, "accuracy") == col(4, "accuracy"), (student, s)
        print("| " + " | ".join([
            student, s,
            ms(col(1, "accuracy"), "{:.4f}"),
            ms(col(2, "accuracy"), "{:.4f}"),
            ms(col(4, "accuracy"), "{:.4f}"),
            ms(col(4, "accuracy_retained_pct"), "{:.1f}") + " %",
            f"{statistics.mean(col(3, 'file_bytes')):,.0f} B",
            f"{statistics.mean(col(4, 'file_bytes')):,.0f} B",
            f"{statistics.mean(col(5, 'file_bytes')):,.0f} B",
            f"{statistics.mean(col(1, 'file_bytes')):,.0f} B",
            ms(col(3, "latency_b1_us"), "{:.1f}") + " µs",
            ms(col(3, "latency_b64_us"), "{:.1f}") + " µs",
            ms(col(4, "latency_b1_us"), "{:.1f}") + " µs",
            ms(col(4, "latency_b64_us"), "{:.1f}") + " µs",
        ]) + " |")
PY
