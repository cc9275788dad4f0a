#!/usr/bin/env bash
# The CUDA build on a GPU, as one short script for a lent device machine:
# the training step's gradients against the CPU and its speed against
# PyTorch on the same GPU, the whole method on digits (then `verify`), and
# sweep cells of the ResNet regime (a few to set beside the CPU's cells, then
# the Hinton-KD variant file) until the time is up.
#
# Build here (no GPU needed), bundle, and run there from the repository root:
#
#   BUILD=1 scripts/cuda_check.sh                       # target/cuda/release/{kdprune,bench-train}
#   scripts/gpu_run.sh --bundle                         # runs/gpu: stripped, xz'd binaries + Fashion-MNIST
#   # on the device, carrying runs/gpu and runs/sweep-fashion-mnist-resnet/models:
#   scripts/gpu_run.sh OUT_DIR [SECONDS]                # SECONDS: the whole script's budget (default 420)
#   PARTS="gradref retrain-kd" scripts/gpu_run.sh OUT_DIR  # only these parts (bench digits check hinton gradref retrain-kd)
#
# Everything it prints goes to OUT_DIR/log.txt; the sweep folders and the
# digits run come back as OUT_DIR/runs.tgz.
set -uo pipefail
cd "$(dirname "$0")/.."
bundle=runs/gpu

if [ "${1:-}" = "--bundle" ]; then
  set -e
  mkdir -p "$bundle/fmnist"
  for b in kdprune bench-train; do
    strip -o "$bundle/$b" "target/cuda/release/$b"
    xz -T2 -6 -f "$bundle/$b"
  done
  # xz of the raw IDX files: 4 MB less than the published .gz, and the
  # device call carries 64 MiB in all
  for f in "${SHARED:-../shared}"/datasets/fashion-mnist/*.gz; do
    n=$(basename "$f" .gz)
    gunzip -c "$f" | xz -T2 -9 > "$bundle/fmnist/$n.xz"
  done
  du -sh "$bundle" runs/sweep-fashion-mnist-resnet/models
  exit 0
fi

out=${1:?usage: scripts/gpu_run.sh OUT_DIR [SECONDS] | --bundle}
budget=${2:-420}
start=$(date +%s)
left() { echo $((start + budget - $(date +%s))); }
mkdir -p "$out/w"
exec > >(tee "$out/log.txt") 2>&1

# The CUDA libraries candle links against come with the machine's PyTorch.
libs=$(python3 -c "import nvidia; print(' '.join(nvidia.__path__))" 2>/dev/null)
[ -n "$libs" ] || echo "# no nvidia Python packages found: the CUDA libraries must be on LD_LIBRARY_PATH already"
libdirs=$([ -n "$libs" ] && find $libs -name 'lib*.so*' \( -name 'libcudart*' -o -name 'libcublas*' -o -name 'libcurand*' -o -name 'libnvrtc*' \) -printf '%h\n' 2>/dev/null | sort -u | paste -sd:)
export LD_LIBRARY_PATH="$libdirs:${LD_LIBRARY_PATH:-}"
echo "# LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
nvidia-smi -L
bin=/tmp/kdprune-gpu
mkdir -p $bin
for b in kdprune bench-train; do
  xz -dc "$bundle/$b.xz" > "$bin/$b" && chmod +x "$bin/$b"
done
# The sweep configs name ../shared/datasets/fashion-mnist.
data=../shared/datasets/fashion-mnist
if [ ! -d $data ]; then
  mkdir -p $data
  for f in "$bundle"/fmnist/*.xz; do
    xz -dc "$f" > "$data/$(basename "$f" .xz)"
  done
fi
ls -la $data

step() { # step NAME SECONDS COMMAND...: run with a time limit, say how it ended
  local name=$1 limit=$2
  shift 2
  echo "## $name (limit ${limit}s, $(left)s left)"
  local t0=$(date +%s)
  timeout "$limit" "$@"
  echo "## $name: rc=$? in $(($(date +%s) - t0)) s"
}

# PARTS: which parts run, in this order (default: all but gradref, retrain-kd).
parts=" ${PARTS:-bench digits check hinton} "
has() { [[ "$parts" == *" $1 "* ]]; }

has gradref && for m in lenet5 resnet20 resnet56; do
  step "pytorch grad check $m" 60 python3 benchmarks/pytorch_reference.py --device cuda --grad-check --model "$m"
done

has bench && for m in lenet5 resnet20 resnet56; do
  step "bench-train $m" 60 "$bin/bench-train" --device cuda --model "$m" --rounds 5 --steps 4
  step "pytorch $m" 60 python3 benchmarks/pytorch_reference.py --device cuda --model "$m" --rounds 5 --steps 4
done

if has digits; then
  step "digits run" 120 "$bin/kdprune" --device cuda run --out "$out/w/digits"
  for c in pruned_one_shot retrained_kd retrained_no_kd magnitude_retrained; do
    step "verify $c" 30 "$bin/kdprune" --device cuda verify "$out/w/digits/$c.safetensors"
  done
fi

# Sweep cells: `sweep FILE OUT [sed expressions...]`, each a copy of FILE
# writing to OUT, stopped when the budget is spent (cells done stay done).
sweep() {
  local file=$1 dest=$2
  shift 2
  local cfg="$out/w/$(basename "$dest").toml"
  sed -e "s|^out = .*|out = \"$dest\"|" "$@" "$file" > "$cfg"
  local limit=$(($(left) - 20))
  [ "$limit" -gt 30 ] || { echo "## no time left for $dest"; return; }
  step "sweep $dest" "$limit" "$bin/kdprune" --device cuda sweep --config "$cfg"
}
has check && sweep configs/sweeps/fashion-mnist-resnet.toml "$out/w/check" \
  -e 's|^methods = .*|methods = ["magnitude", "teacher-guided"]|' \
  -e 's|^sparsities = .*|sparsities = [0.9, 0.99]|' -e 's|^seeds = .*|seeds = [0]|'
for s in 0 1 2; do
  has hinton && sweep configs/sweeps/fashion-mnist-resnet/hinton.toml "$out/w/hinton" -e "s|^seeds = .*|seeds = [$s]|"
done
for s in 0 1 2; do
  has retrain-kd && sweep configs/sweeps/fashion-mnist-resnet/retrain-kd.toml "$out/w/retrain-kd" -e "s|^seeds = .*|seeds = [$s]|"
done

rm -f "$out"/w/digits/*.safetensors
tar czf "$out/runs.tgz" -C "$out/w" .
echo "## done in $(($(date +%s) - start)) s"
