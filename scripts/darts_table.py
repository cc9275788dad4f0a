"""The table of DARTS searches (report.json of `kdprune search darts`), each
against its baseline: python3 scripts/darts_table.py runs/darts/fmnist-seed*/report.json
"""
import json
import statistics
import sys


def mean_std(xs):
    return (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)


rows = [json.load(open(p)) for p in sys.argv[1:]]
print("| seed | normal cell | reduction cell | params | MACs | test acc | baseline | params | MACs | test acc | searched − baseline |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
ours, base, diff = [], [], []
for r in rows:
    g = r["genotype"]
    cell = lambda side: " ".join(f"{op}←{i}" for op, i in g[side])
    b = r.get("baseline") or {}
    acc = r["test_accuracy"][-1]
    ours.append(acc)
    if b:
        bacc = b["test_accuracy"][-1]
        base.append(bacc)
        diff.append(acc - bacc)
        tail = f"{b['model']} | {b['params']:,} | {b['macs'] / 1e6:.1f} M | {bacc:.4f} | {acc - bacc:+.4f}"
    else:
        tail = "– | | | | "
    print(f"| {r['seed']} | {cell('normal')} | {cell('reduce')} | {r['params']:,} | {r['macs'] / 1e6:.1f} M | {acc:.4f} | {tail} |")
m, s = mean_std(ours)
line = f"searched: {m:.4f} ± {s:.4f} (n = {len(ours)})"
if base:
    bm, bs = mean_std(base)
    dm, ds = mean_std(diff)
    line += f"; baseline: {bm:.4f} ± {bs:.4f}; paired difference {dm:+.4f} ± {ds:.4f}"
print()
print(line)
secs = [(r["search_secs"], r["train_secs"], (r.get("baseline") or {}).get("train_secs", 0.0)) for r in rows]
print("seconds (search, final training, baseline training): " + "; ".join(f"{a:.0f}, {b:.0f}, {c:.0f}" for a, b, c in secs))
