#!/usr/bin/env bash
# Token-level LM distillation on the WordNet glosses text
# (docs/results/transformers-wordnet.md, "Token-level LM distillation"):
# a 4-layer causal teacher trained from scratch, then 2-layer students of
# the same width, each seed once on the cross-entropy alone and once on
# token-level KD (alpha 0.5, T 1) under the teacher; test perplexity.
#
#   scripts/lm_wordnet.sh     # about 45 minutes of one core per seed and the teacher
#
# Variables: SHARED (default ../shared), OUT (default runs/lm), SEEDS
# (default "0 1 2"), TEACHER_EPOCHS (default 2), EPOCHS (student epochs,
# default 1), THREADS (default 1), PARALLEL (students trained at once,
# default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
OUT=${OUT:-runs/lm}
SEEDS=${SEEDS:-0 1 2}
TEACHER_EPOCHS=${TEACHER_EPOCHS:-2}
EPOCHS=${EPOCHS:-1}
THREADS=${THREADS:-1}
PARALLEL=${PARALLEL:-1}
DATA="$SHARED/datasets/wordnet-glosses"
TOK="$SHARED/models/all-MiniLM-L6-v2/tokenizer.json"
K=${BIN:-target/release/kdprune}
[ -n "${NO_BUILD:-}" ] || cargo build --release -p kdprune-cli >&2
export RAYON_NUM_THREADS=$THREADS
mkdir -p "$OUT"
T="$OUT/teacher-l4-e$TEACHER_EPOCHS"
[ -d "$T" ] || $K train-lm --data-dir "$DATA" --tokenizer "$TOK" --layers 4 --epochs "$TEACHER_EPOCHS" \
    --seed 0 --out "$T" > "$T.log" 2>&1
jobs_run=0
for seed in $SEEDS; do
  for kind in ce kd; do
    s="$OUT/student-l2-$kind-e$EPOCHS-seed$seed"
    [ -d "$s" ] && continue
    if [ "$kind" = ce ]; then
      extra=(--teacher "$T" --alpha 0)
    else
      extra=(--teacher "$T" --alpha 0.5 --temperature 1)
    fi
    $K train-lm --data-dir "$DATA" --layers 2 --epochs "$EPOCHS" --seed "$seed" "${extra[@]}" \
        --out "$s" > "$s.log" 2>&1 &
    jobs_run=$((jobs_run + 1))
    if [ "$jobs_run" -ge "$PARALLEL" ]; then wait -n; jobs_run=$((jobs_run - 1)); fi
  done
done
wait
# the table: test perplexity per seed, mean ± std, paired KD − CE
python3 - "$OUT" "$T" "$EPOCHS" "$SEEDS" <<'PY'
import json, statistics, sys
out, teacher, epochs, seeds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split()
rt = json.load(open(f"{teacher}/report.json"))
def ppl(kind, s):
    r = json.load(open(f"{out}/student-l2-{kind}-e{epochs}-seed{s}/report.json"))
    return r["test"]["perplexity"], r["params"], r["epochs"][0]["sequences_per_second"]
ce = [ppl("ce", s) for s in seeds]; kd = [ppl("kd", s) for s in seeds]
def ms(v):
    return f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}"
print("| model | parameters | epochs | test perplexity | per seed |")
print("|---|---|---|---|---|")
print(f"| teacher, 4 layers (seed 0) | {rt['params']:,} | {len(rt['epochs'])} | {rt['test']['perplexity']:.2f} | |")
for name, v in (("student, 2 layers, CE alone", ce), ("student, 2 layers, token KD (α 0.5, T 1)", kd)):
    print(f"| {name} | {v[0][1]:,} | {epochs} | {ms([x[0] for x in v])} | {', '.join(f'{x[0]:.2f}' for x in v)} |")
d = [k[0] - c[0] for k, c in zip(kd, ce)]
print(f"\nKD − CE, paired by seed: {ms(d)} ({', '.join(f'{x:+.2f}' for x in d)}); "
      f"vocabulary {rt['vocab_size']:,} pieces, [UNK] {100 * rt['test_unknown_share']:.3f} % of test tokens; "
      f"teacher {rt['epochs'][0]['sequences_per_second']:.0f} training sequences/s, "
      f"students {statistics.mean(x[2] for x in ce):.0f} (CE) and {statistics.mean(x[2] for x in kd):.0f} (KD) on {__import__('os').environ.get('RAYON_NUM_THREADS', '?')} thread(s)")
PY
