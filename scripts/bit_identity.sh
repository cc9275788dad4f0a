#!/usr/bin/env bash
# Fingerprints of what a refactoring must not change: every command of the
# method on the built-in digits data, its checkpoints hashed byte for byte and
# its reports' figures (wall times removed). Run it before and after a change
# on the same machine; the two outputs must be identical.
#
#   scripts/bit_identity.sh > before.txt      # ~35 s on 2 cores, after the build
#   ... change the code ...
#   scripts/bit_identity.sh > after.txt && diff before.txt after.txt
#
# Covered: `kdprune run` (all seven stages and the magnitude baseline); a sweep
# of magnitude, teacher-guided (and its :kd / :ce gradients), magnitude@kd,
# random, lamp, snip, grasp, synflow, self-distill, gmp, imp and colt at two
# sparsities; `train` with CE and with KD; `prune` with every criterion and
# both scopes; `retrain` with a KD loss; `distill` with logit and feature
# losses (fitnet, at, rkd); `eval` and `verify`; a batch-norm ResNet-20
# trained with crop-flip augmentation, pruned by magnitude per layer and
# retrained (the CPU conv, pooling, batch-norm and residual ops).
#
# Variables: OUT (scratch folder, default a new temporary one), BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/kdprune}
[ -n "${NO_BUILD:-}" ] || cargo build --release -p kdprune-cli >&2
OUT=${OUT:-$(mktemp -d)}
rm -rf "$OUT" && mkdir -p "$OUT"
q=--quiet

# Checkpoint bytes, then the report figures without wall times.
hashes() { (cd "$1" && find . -name '*.safetensors' | LC_ALL=C sort | xargs sha256sum); }
figures() {
  python3 - "$@" <<'EOF'
import json, sys
def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if k not in ("seconds",)}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v
for path in sys.argv[1:]:
    with open(path) as f:
        print("/".join(path.split("/")[-3:]), json.dumps(strip(json.load(f)), sort_keys=True))
EOF
}

# Paths of the scratch folder are printed as OUT.
exec > >(sed "s|$OUT|OUT|g")

# The figures of a distill report (its config block may change layout).
distill_figures() {
  python3 - "$1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
for e in r["epochs"]:
    e.pop("seconds", None)
keys = ("accuracy", "epochs", "loss", "student", "teacher")
print("/".join(sys.argv[1].split("/")[-2:]), json.dumps({k: r.get(k) for k in keys}, sort_keys=True))
EOF
}

echo "== run"
"$BIN" run $q --out "$OUT/run" --teacher-epochs 4 --student-epochs 4 --kd-epochs 2 --retrain-epochs 2 >/dev/null
hashes "$OUT/run"
python3 - "$OUT/run/report.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
for s in r["stages"]:
    print(s["name"], s["accuracy"], s["sparsity"], s["nonzero"], s["checkpoint"])
EOF

echo "== sweep"
cat > "$OUT/sweep.toml" <<'EOF'
dataset = "digits"
methods = ["magnitude", "teacher-guided", "teacher-guided:kd", "teacher-guided:ce", "magnitude@kd", "random", "lamp", "snip", "grasp", "synflow", "self-distill", "gmp", "imp", "colt"]
sparsities = [0.9, 0.95]
seeds = [0]
teacher_epochs = 3
student_epochs = 3
kd_epochs = 1
retrain_epochs = 2
score_batches = 2
gmp_epochs = 2
imp_round_epochs = 1
colt_round_epochs = 1
imp_rate = 0.7
colt_rate = 0.7
EOF
"$BIN" sweep $q --config "$OUT/sweep.toml" --out "$OUT/sweep" >/dev/null
hashes "$OUT/sweep"
figures $(cd "$OUT" && find sweep/cells -name '*.json' | LC_ALL=C sort | sed "s|^|$OUT/|")

echo "== train, prune, retrain, eval, verify"
d=$OUT/cmd
mkdir -p "$d"
"$BIN" train $q --model mlp-1200-1200 --epochs 3 --out "$d/teacher.safetensors" | grep -v saved
"$BIN" train $q --epochs 3 --out "$d/student.safetensors" | grep -v saved
"$BIN" train $q --epochs 2 --loss kd --teacher "$d/teacher.safetensors" --out "$d/student_kd.safetensors" | grep -v saved
for c in teacher-guided snip self-distill grasp synflow magnitude lamp random; do
  extra=()
  [ $c = teacher-guided ] && extra=(--teacher "$d/teacher.safetensors")
  "$BIN" prune --checkpoint "$d/student.safetensors" --criterion $c --sparsity 0.9 \
    --score-batches 2 --synflow-rounds 5 "${extra[@]}" --out "$d/pruned_$c.safetensors" | grep -v saved
done
for c in magnitude snip random; do
  "$BIN" prune --checkpoint "$d/student.safetensors" --criterion $c --scope layer --sparsity 0.8 \
    --score-batches 2 --out "$d/pruned_layer_$c.safetensors" | grep -v saved
done
"$BIN" prune --checkpoint "$d/student.safetensors" --criterion teacher-guided --loss kd \
  --teacher "$d/teacher.safetensors" --sparsity 0.9 --score-batches 2 --out "$d/pruned_tg_kd.safetensors" | grep -v saved
"$BIN" retrain $q --checkpoint "$d/pruned_magnitude.safetensors" --epochs 2 --lr 0.01 \
  --loss ca-kld --teacher "$d/teacher.safetensors" --out "$d/retrained.safetensors" | grep -v saved
"$BIN" eval "$d/retrained.safetensors"
"$BIN" verify "$d/retrained.safetensors"
hashes "$d"

echo "== distill"
"$BIN" train $q --model lenet5-x4 --epochs 2 --out "$d/cnn_teacher.safetensors" | grep -v saved
for spec in "kd+at:1000" "ce:1,fitnet:100" "rkd" "ca-kld" "dkd"; do
  name=$(echo "$spec" | tr ':,+' '___')
  "$BIN" distill $q --teacher "$d/cnn_teacher.safetensors" --student-model lenet5 --loss "$spec" \
    --epochs 2 --lr 0.02 --dkd-warmup 0 --out "$OUT/distill_$name" | grep -v saved
  hashes "$OUT/distill_$name"
  distill_figures "$OUT/distill_$name/report.json"
done

echo "== batch-norm CNN"
c=$OUT/cnn
mkdir -p "$c"
"$BIN" train $q --model resnet20 --augment crop-flip --epochs 1 --batch-size 64 --out "$c/resnet20.safetensors" | grep -v saved
"$BIN" prune --checkpoint "$c/resnet20.safetensors" --criterion magnitude --scope layer --sparsity 0.7 \
  --out "$c/pruned.safetensors" | grep -v saved
"$BIN" retrain $q --checkpoint "$c/pruned.safetensors" --augment crop-flip --epochs 1 --batch-size 64 --lr 0.01 \
  --out "$c/retrained.safetensors" | grep -v saved
"$BIN" eval "$c/retrained.safetensors"
hashes "$c"
