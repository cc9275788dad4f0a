//! The finished cells of a sweep that belong to its table, by method row and
//! sparsity column, checked: what the table, the CSV and the plot are drawn
//! from.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use super::cell::CellResult;
use crate::stats::Summary;

/// Two sparsities are the same column when closer than this (config values
/// that went through a file and back may differ in the last bit).
const SPARSITY_TOLERANCE: f64 = 1e-9;

/// The cells that belong to the table, by method row and sparsity column.
pub(crate) struct Grid<'a> {
    pub(crate) methods: &'a [String],
    pub(crate) sparsities: &'a [f64],
    /// `cells[m][s]`: the cells of method `m` at sparsity `s`, by seed.
    pub(crate) cells: Vec<Vec<Vec<&'a CellResult>>>,
}

impl<'a> Grid<'a> {
    pub(crate) fn new(
        all: &'a [CellResult],
        methods: &'a [String],
        sparsities: &'a [f64],
    ) -> Result<Self> {
        if all.is_empty() {
            bail!("no finished cells to write");
        }
        if methods.is_empty() || sparsities.is_empty() {
            bail!("the results need at least one method and one sparsity");
        }
        for (i, m) in methods.iter().enumerate() {
            if methods[..i].contains(m) {
                bail!("method `{m}` is listed twice");
            }
        }
        for (i, &s) in sparsities.iter().enumerate() {
            if !(s.is_finite() && (0.0..1.0).contains(&s)) {
                bail!("sparsity {s} is not in [0, 1)");
            }
            if sparsities[..i]
                .iter()
                .any(|&t| (t - s).abs() < SPARSITY_TOLERANCE)
            {
                bail!("sparsity {s} is listed twice");
            }
        }
        for c in all {
            check_cell(c)?;
        }

        let mut cells = vec![vec![Vec::new(); sparsities.len()]; methods.len()];
        for c in all {
            let Some(m) = methods.iter().position(|m| *m == c.method) else {
                continue;
            };
            let Some(s) = sparsities
                .iter()
                .position(|&s| (s - c.sparsity).abs() < SPARSITY_TOLERANCE)
            else {
                continue;
            };
            cells[m][s].push(c);
        }
        let mut kept = 0;
        for row in &mut cells {
            for group in row.iter_mut() {
                group.sort_by_key(|c| c.seed);
                if let Some(w) = group.windows(2).find(|w| w[0].seed == w[1].seed) {
                    bail!(
                        "two results for method `{}`, sparsity {}, seed {}",
                        w[0].method,
                        w[0].sparsity,
                        w[0].seed
                    );
                }
                kept += group.len();
            }
        }
        if kept == 0 {
            bail!(
                "none of the {} cells belongs to methods {methods:?} × sparsities {sparsities:?}",
                all.len()
            );
        }
        Ok(Self {
            methods,
            sparsities,
            cells,
        })
    }

    /// The kept cells: method order, then sparsity order, then seed.
    pub(crate) fn ordered(&self) -> Vec<&'a CellResult> {
        self.cells.iter().flatten().flatten().copied().collect()
    }

    /// Summary of `field` over the seeds of one (method, sparsity).
    pub(crate) fn summary(
        &self,
        m: usize,
        s: usize,
        field: impl Fn(&CellResult) -> f64,
    ) -> Option<Summary> {
        let values: Vec<f64> = self.cells[m][s].iter().map(|c| field(c)).collect();
        Summary::of(&values)
    }

    /// The dense student's accuracy over seeds: per seed the mean over its
    /// cells (all equal when the cells share the seed's dense student).
    pub(crate) fn dense(&self) -> Option<Summary> {
        let mut by_seed: BTreeMap<u64, (f64, usize)> = BTreeMap::new();
        for c in self.ordered() {
            let e = by_seed.entry(c.seed).or_default();
            e.0 += c.dense_accuracy;
            e.1 += 1;
        }
        let per_seed: Vec<f64> = by_seed.values().map(|(sum, n)| sum / *n as f64).collect();
        Summary::of(&per_seed)
    }
}

/// A clear error for a cell whose numbers cannot be summarised.
fn check_cell(c: &CellResult) -> Result<()> {
    let at = || {
        format!(
            "cell method `{}`, sparsity {}, seed {}",
            c.method, c.sparsity, c.seed
        )
    };
    for (name, v, lo, hi) in [
        ("sparsity", c.sparsity, 0.0, 1.0),
        ("measured_sparsity", c.measured_sparsity, 0.0, 1.0),
        ("final_accuracy", c.final_accuracy, 0.0, 1.0),
        ("best_accuracy", c.best_accuracy, 0.0, 1.0),
        ("dense_accuracy", c.dense_accuracy, 0.0, 1.0),
        ("epochs", c.epochs, 0.0, f64::INFINITY),
        ("seconds", c.seconds, 0.0, f64::INFINITY),
    ] {
        if !v.is_finite() {
            bail!("{}: {name} is {v}", at());
        }
        if !(lo..=hi).contains(&v) {
            bail!("{}: {name} = {v} is outside [{lo}, {hi}]", at());
        }
    }
    Ok(())
}
