#!/usr/bin/env python3
"""Paired per-seed differences (B − A, points) of the final accuracy of two
sweep folders that share methods, sparsities and seeds: one row per method,
mean ± sample std over the seeds and each seed's difference.

    scripts/python/paired_cells.py runs/ablation/base runs/ablation/std-sample

Python's standard library only.
"""
import json
import statistics
import sys
from pathlib import Path


def cells(folder):
    out = {}
    for f in sorted(Path(folder, "cells").glob("*.json")):
        c = json.loads(f.read_text())
        out[(c["method"], c["sparsity"], c["seed"])] = c["final_accuracy"]
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    a, b = cells(sys.argv[1]), cells(sys.argv[2])
    shared = sorted(set(a) & set(b))
    if not shared:
        sys.exit("the two sweeps share no cell")
    methods = list(dict.fromkeys(m for m, _, _ in shared))
    sparsities = sorted({s for _, s, _ in shared})
    print("| method | " + " | ".join(f"{s:g}" for s in sparsities) + " |")
    print("|---|" + "---:|" * len(sparsities))
    for m in methods:
        row = [m]
        for s in sparsities:
            d = [100 * (b[k] - a[k]) for k in shared if k[0] == m and k[1] == s]
            sd = statistics.stdev(d) if len(d) > 1 else float("nan")
            each = ", ".join(f"{x:+.2f}" for x in d)
            row.append(f"{statistics.mean(d):+.2f} ± {sd:.2f} ({each})")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
