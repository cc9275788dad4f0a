#!/usr/bin/env bash
# The peak-memory table of docs/reliability.md: the crafted-size inputs of
# cli/tests/bad_input.rs (the gzip one larger: 1 GiB of zeros behind a
# 3-image IDX header), each run through the release binary under
# /usr/bin/time; every one must be refused (exit code 1) and its peak
# resident memory is printed as a Markdown table.
#
#   scripts/peak_memory.sh        # under a minute
#
# Variables: BIN (the kdprune binary), WORK (scratch folder, removed after).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/kdprune}
[ -n "${NO_BUILD:-}" ] || cargo build --release -p kdprune-cli >&2
WORK=${WORK:-$(mktemp -d)}
trap 'rm -rf "$WORK"' EXIT
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-1}

# the crafted files (Python's standard library only)
python3 - "$WORK" <<'PY'
import gzip, json, struct, sys, os
root = sys.argv[1]
def checkpoint(path, model):
    header = json.dumps({"__metadata__": {"kdprune.format": "1", "kdprune.model": json.dumps(model, separators=(",", ":"))},
                         "fc1.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, separators=(",", ":")).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + bytes(16))
checkpoint(f"{root}/huge-config.safetensors", {"arch": "mlp", "input_dim": 64, "hidden": [4000000000, 4000000000], "num_classes": 10})
checkpoint(f"{root}/lying-config.safetensors", {"arch": "mlp", "input_dim": 64, "hidden": [20000], "num_classes": 10})
with open(f"{root}/huge-header.safetensors", "wb") as f:
    f.write(struct.pack("<Q", 1 << 60) + b"{}")
d = f"{root}/idx-bomb"
os.makedirs(d)
def images(n, h, w):
    return struct.pack(">IIII", 0x803, n, h, w) + bytes([7]) * (n * h * w)
def labels(n):
    return struct.pack(">II", 0x801, n) + bytes([1]) * n
with gzip.open(f"{d}/train-images-idx3-ubyte.gz", "wb", compresslevel=1) as f:
    f.write(images(3, 28, 28))
    zeros = bytes(1 << 20)
    for _ in range(1024):
        f.write(zeros)
open(f"{d}/train-labels-idx1-ubyte", "wb").write(labels(3))
open(f"{d}/t10k-images-idx3-ubyte", "wb").write(images(2, 28, 28))
open(f"{d}/t10k-labels-idx1-ubyte", "wb").write(labels(2))
PY
"$BIN" train --model mlp-100 --epochs 1 --quiet --out "$WORK/good.safetensors" >/dev/null 2>&1

row() {
  local label=$1; shift
  local code=0
  /usr/bin/time -f %M -o "$WORK/rss" "$BIN" "$@" >/dev/null 2>"$WORK/err" || code=$?
  if [ "$code" != 1 ]; then
    echo "expected a refusal (exit code 1) from: $* (got $code)" >&2
    cat "$WORK/err" >&2
    exit 1
  fi
  # time(1) writes "Command exited with non-zero status 1" before the figure
  tail -n 1 "$WORK/rss" | awk -v l="$label" '{ printf "| %s | %.1f MiB |\n", l, $1 / 1024 }'
}
echo "| input | peak RSS |"
echo "|---|---|"
row '`kdprune train --model mlp-100000-100000` (10.08 × 10⁹ parameters, 40.3 GB)' \
  train --model mlp-100000-100000 --out "$WORK/a.safetensors"
row '`kdprune train --model lenet5-x5000`' train --model lenet5-x5000 --out "$WORK/a.safetensors"
row '`kdprune eval` of a 16-byte checkpoint whose config asks for 1.6 × 10¹⁹ parameters' \
  eval "$WORK/huge-config.safetensors"
row '`kdprune eval` of a checkpoint whose header length says 2⁶⁰ bytes' \
  eval "$WORK/huge-header.safetensors"
row '`kdprune eval` of a checkpoint whose config asks for 20,000 × 64 weights, holding 2 × 2' \
  eval "$WORK/lying-config.safetensors"
row '`kdprune train --dataset fashion-mnist` on a gzip of 1 GiB behind a 3-image header' \
  train --dataset fashion-mnist --data-dir "$WORK/idx-bomb" --out "$WORK/a.safetensors"
row '`kdprune prune --criterion snip --score-batches 1000000000000`' \
  prune --checkpoint "$WORK/good.safetensors" --sparsity 0.5 --criterion snip \
  --score-batches 1000000000000 --out "$WORK/p.safetensors"
