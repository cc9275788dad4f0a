#!/usr/bin/env bash
# The accuracy table of docs/results/structured-fashion-mnist.md from the
# TSV lines scripts/structured_fashion_mnist.sh writes (model, seed,
# criterion, MAC target, retraining, accuracy, parameters, MACs): per
# model, criterion, target and retraining, the accuracy's mean ± sample std
# over the seeds there are, its paired difference to the same seeds'
# dense networks (mean ± std over the seeds), the parameters, and the
# MACs against the dense network's.
#
#   scripts/structured_table.sh [runs/structured-fashion-mnist/results.tsv]
set -euo pipefail
IN=${1:-runs/structured-fashion-mnist/results.tsv}
[ -f "$IN" ] || { echo "no results in $IN (run scripts/structured_fashion_mnist.sh)" >&2; exit 1; }
awk -F'\t' '
  $3 == "dense" { dacc[$1, $2] = $6; dmacs[$1] = $8; dparams[$1] = $7; next }
  {
    k = $1 SUBSEP $3 SUBSEP $4 SUBSEP $5
    if (!(k in n)) order[++rows] = k
    n[k]++; s[k] += $6; ss[k] += $6 * $6; d[k] += $6 - dacc[$1, $2]; dd[k] += ($6 - dacc[$1, $2]) ^ 2
    params[k] = $7; macs[k] = $8
  }
  function pm(sum, sq, m) {
    mean = sum / m
    sd = m > 1 ? sqrt((sq - m * mean * mean) / (m - 1)) : 0
    if (sd < 0 || sd != sd) sd = 0
    if (m > 1) return sprintf("%.2f ± %.2f", 100 * mean, 100 * sd)
    return sprintf("%.2f", 100 * mean)
  }
  # the paired difference: mean ± sample std, signed
  function pmd(sum, sq, m,   mean, sd) {
    mean = sum / m
    sd = m > 1 ? sqrt((sq - m * mean * mean) / (m - 1)) : 0
    if (sd < 0 || sd != sd) sd = 0
    if (m > 1) return sprintf("%+.2f ± %.2f", 100 * mean, 100 * sd)
    return sprintf("%+.2f", 100 * mean)
  }
  END {
    for (m in dmacs) {
      dn = 0; dsum = 0; dsq = 0
      for (key in dacc) { split(key, p, SUBSEP); if (p[1] == m) { dn++; dsum += dacc[key]; dsq += dacc[key] ^ 2 } }
      printf "dense %s: %s %%, %d seed%s; %d parameters, %.1f M MACs\n\n", m, pm(dsum, dsq, dn), dn, (dn > 1 ? "s" : ""), dparams[m], dmacs[m] / 1e6
    }
    print "| model | criterion | `--target-macs` | MACs | parameters | retraining | seeds | accuracy (%) | vs dense, same seeds (points) |"
    print "|---|---|---|---|---|---|---|---|---|"
    fflush()
    for (i = 1; i <= rows; i++) {
      k = order[i]; split(k, p, SUBSEP)
      printf "| %s | %s | %s | %.2f× fewer | %d | %s | %d | %s | %s |\n", p[1], p[2], p[3], dmacs[p[1]] / macs[k], params[k], p[4] == "kd" ? "KD" : "CE", n[k], pm(s[k], ss[k], n[k]), pmd(d[k], dd[k], n[k]) | "sort -t\"|\" -k2,2 -k4,4r -k3,3 -k7,7"
    }
  }' "$IN"
