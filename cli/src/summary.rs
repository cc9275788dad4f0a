//! Figures over seeds: mean ± sample std, per-seed values and paired
//! differences, from the reports of `kdprune run` and `kdprune distill` and
//! from the cells of a sweep — the tables the documentation quotes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::stats::{signed, Summary};

/// Values of one row and column by seed.
type BySeed = BTreeMap<u64, f64>;

/// A table of per-seed values: rows (in first-seen order) × columns.
#[derive(Default)]
struct Table {
    rows: Vec<String>,
    columns: Vec<String>,
    values: BTreeMap<(String, String), BySeed>,
}

impl Table {
    fn insert(&mut self, row: &str, column: &str, seed: u64, value: f64) -> Result<()> {
        if !self.rows.iter().any(|r| r == row) {
            self.rows.push(row.to_string());
        }
        if !self.columns.iter().any(|c| c == column) {
            self.columns.push(column.to_string());
        }
        let cell = self
            .values
            .entry((row.to_string(), column.to_string()))
            .or_default();
        if cell.insert(seed, value).is_some() {
            bail!("two values for `{row}`, {column}, seed {seed}");
        }
        Ok(())
    }

    fn get(&self, row: &str, column: &str) -> Option<&BySeed> {
        self.values.get(&(row.to_string(), column.to_string()))
    }

    fn header(&self, first: &str, column: impl Fn(&str) -> String) -> String {
        let mut s = format!("| {first} |");
        for c in &self.columns {
            s.push_str(&format!(" {} |", column(c)));
        }
        s.push_str("\n|---|");
        s.push_str(&"---:|".repeat(self.columns.len()));
        s.push('\n');
        s
    }

    /// Mean ± std over seeds, in % of the [0, 1] values.
    fn means(&self, first: &str) -> String {
        let mut s = self.header(first, |c| {
            let n = self
                .rows
                .iter()
                .filter_map(|r| self.get(r, c))
                .map(BTreeMap::len)
                .max()
                .unwrap_or(0);
            format!("{c} (n = {n})")
        });
        for r in &self.rows {
            s.push_str(&format!("| {r} |"));
            for c in &self.columns {
                let v: Vec<f64> = self
                    .get(r, c)
                    .map(|b| b.values().copied().collect())
                    .unwrap_or_default();
                match Summary::of(&v) {
                    Some(sum) => s.push_str(&format!(" {} |", sum.show(100.0))),
                    None => s.push_str(" – |"),
                }
            }
            s.push('\n');
        }
        s
    }

    /// Every seed's value, `a / b / c` in seed order, in %.
    fn per_seed(&self, first: &str) -> String {
        let mut s = self.header(first, |c| format!("{c}, seeds {}", self.seeds(c)));
        for r in &self.rows {
            s.push_str(&format!("| {r} |"));
            for c in &self.columns {
                let text = match self.get(r, c) {
                    Some(b) => b
                        .values()
                        .map(|v| format!("{:.2}", 100.0 * v))
                        .collect::<Vec<_>>()
                        .join(" / "),
                    None => "–".into(),
                };
                s.push_str(&format!(" {text} |"));
            }
            s.push('\n');
        }
        s
    }

    /// The seeds of a column, `0 / 1 / 2`.
    fn seeds(&self, column: &str) -> String {
        let mut seeds: Vec<u64> = self
            .rows
            .iter()
            .filter_map(|r| self.get(r, column))
            .flat_map(|b| b.keys().copied())
            .collect();
        seeds.sort_unstable();
        seeds.dedup();
        seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" / ")
    }

    /// A table of `row − baseline` for every row but the baseline, each
    /// cell `show` of the differences in points (seed order, only the seeds
    /// both have; `–` when none).
    fn pairs(
        &self,
        baseline: &str,
        header: String,
        show: impl Fn(&[f64]) -> String,
    ) -> Result<String> {
        if !self.rows.iter().any(|r| r == baseline) {
            bail!(
                "no `{baseline}` to pair with; the rows are: {}",
                self.rows.join(", ")
            );
        }
        let mut s = header;
        for r in self.rows.iter().filter(|r| *r != baseline) {
            s.push_str(&format!("| {r} |"));
            for c in &self.columns {
                let d: Vec<f64> = match (self.get(r, c), self.get(baseline, c)) {
                    (Some(a), Some(b)) => a
                        .iter()
                        .filter_map(|(seed, x)| b.get(seed).map(|y| 100.0 * (x - y)))
                        .collect(),
                    _ => Vec::new(),
                };
                let text = if d.is_empty() { "–".into() } else { show(&d) };
                s.push_str(&format!(" {text} |"));
            }
            s.push('\n');
        }
        Ok(s)
    }

    /// `row − baseline` per seed, in points, for the seeds both have; every
    /// row but the baseline.
    fn paired(&self, first: &str, baseline: &str) -> Result<String> {
        let header = self.header(first, |c| format!("{c}, seeds {}", self.seeds(c)));
        self.pairs(baseline, header, |d| {
            d.iter().map(|&x| signed(x)).collect::<Vec<_>>().join(" / ")
        })
    }

    /// `row − baseline` as mean ± sample std over the seeds both have, in
    /// points, with n; every row but the baseline.
    fn paired_means(&self, first: &str, baseline: &str) -> Result<String> {
        self.pairs(baseline, self.header(first, str::to_string), |d| {
            let n = d.len();
            match Summary::of(d) {
                Some(Summary {
                    mean,
                    std: Some(std),
                    ..
                }) => format!("{} ± {std:.2} (n = {n})", signed(mean)),
                Some(Summary { mean, .. }) => format!("{} (n = {n})", signed(mean)),
                None => "–".into(),
            }
        })
    }
}

/// What [`summarize`] prints besides the means.
#[derive(Clone, Debug, Default)]
pub struct SummaryOptions {
    /// Every seed's value.
    pub per_seed: bool,
    /// Per-seed differences of every row to this one (a stage of `run`, a
    /// label of `distill`, a method of a sweep).
    pub paired: Option<String>,
}

/// What was summarised, as Markdown tables.
pub struct SummaryTables {
    /// Markdown: the means, then the per-seed and paired tables asked for.
    pub markdown: String,
}

#[derive(Deserialize)]
struct RunReport {
    config: RunPart,
    stages: Vec<StagePart>,
}

#[derive(Deserialize)]
struct RunPart {
    sparsity: f64,
    seed: u64,
}

#[derive(Deserialize)]
struct StagePart {
    name: String,
    accuracy: f64,
}

#[derive(Deserialize)]
struct DistillReport {
    accuracy: f64,
    config: DistillPart,
}

#[derive(Deserialize)]
struct DistillPart {
    seed: u64,
}

/// Means over seeds (and, as asked, per-seed values and paired differences)
/// of `inputs`:
///
/// - `report.json` files of `kdprune run`: a row per stage, a column per
///   sparsity (`s = 0.90`);
/// - `report.json` files of `kdprune distill`: a row per run folder name
///   (the loss's label, e.g. `kd` of `runs/distill/seed0/kd/report.json`);
/// - sweep folders (with `cells/`): a row per method, a column per sparsity,
///   in the sweep's order.
///
/// Values are test accuracies in %; differences in points.
pub fn summarize(inputs: &[PathBuf], options: &SummaryOptions) -> Result<SummaryTables> {
    if inputs.is_empty() {
        bail!("nothing to summarise: give report.json files or sweep folders");
    }
    let mut table = Table::default();
    let mut kinds = Vec::new();
    for path in inputs {
        let kind = if path.is_dir() {
            read_sweep(path, &mut table)?;
            "sweep"
        } else {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a kdprune report", path.display()))?;
            if json.get("command").and_then(|c| c.as_str()) == Some("distill") {
                let r: DistillReport = serde_json::from_value(json)
                    .with_context(|| format!("{} is not a distill report", path.display()))?;
                let label = path
                    .parent()
                    .and_then(Path::file_name)
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| path.display().to_string());
                table.insert(&label, "accuracy %", r.config.seed, r.accuracy)?;
                "distill"
            } else {
                let r: RunReport = serde_json::from_value(json)
                    .with_context(|| format!("{} is not a kdprune report", path.display()))?;
                let column = format!("s = {:.2}", r.config.sparsity);
                for st in r.stages {
                    table.insert(&st.name, &column, r.config.seed, st.accuracy)?;
                }
                "run"
            }
        };
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    if kinds.len() > 1 {
        bail!("cannot summarise {} together", kinds.join(" and "));
    }
    if kinds[0] == "run" {
        // `s = 0.90` before `s = 0.95`, whatever order the files came in.
        table.columns.sort();
    }
    let first = match kinds[0] {
        "run" => "stage",
        "distill" => "loss",
        _ => "method",
    };
    let mut md = table.means(first);
    if options.per_seed {
        md.push_str("\nPer seed (%):\n\n");
        md.push_str(&table.per_seed(first));
    }
    if let Some(baseline) = &options.paired {
        md.push_str(&format!(
            "\nPaired difference to `{baseline}` (points, per seed):\n\n"
        ));
        md.push_str(&table.paired(first, baseline)?);
        md.push_str(&format!(
            "\nPaired difference to `{baseline}`, mean ± std over seeds (points):\n\n"
        ));
        md.push_str(&table.paired_means(first, baseline)?);
    }
    Ok(SummaryTables { markdown: md })
}

/// The final accuracies of a sweep folder's cells, rows and columns in the
/// order of its `sweep.toml`.
fn read_sweep(dir: &Path, table: &mut Table) -> Result<()> {
    let cfg_path = dir.join("sweep.toml");
    let cfg = crate::sweep::SweepConfig::from_toml_file(&cfg_path)
        .with_context(|| format!("{} is not a sweep folder", dir.display()))?;
    let cells_dir = dir.join("cells");
    let mut cells = Vec::new();
    for entry in std::fs::read_dir(&cells_dir)
        .with_context(|| format!("cannot list {}", cells_dir.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            cells.extend(crate::sweep::read_cell(&path)?);
        }
    }
    // The sweep's order first, so that the table reads like its table.md.
    for m in &cfg.methods {
        for s in &cfg.sparsities {
            for c in cells.iter().filter(|c| &c.method == m && c.sparsity == *s) {
                table.insert(m, &s.to_string(), c.seed, c.final_accuracy)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_seed_and_paired_tables() {
        let mut t = Table::default();
        for (seed, a, b) in [(0, 0.9, 0.88), (1, 0.8, 0.805), (2, 0.7, 0.71)] {
            t.insert("magnitude", "0.9", seed, a).unwrap();
            t.insert("teacher-guided", "0.9", seed, b).unwrap();
        }
        let means = t.means("method");
        assert!(means.contains("| magnitude | 80.00 ± 10.00 |"), "{means}");
        let per = t.per_seed("method");
        assert!(per.contains("| 0.9, seeds 0 / 1 / 2 |"), "{per}");
        assert!(
            per.contains("| teacher-guided | 88.00 / 80.50 / 71.00 |"),
            "{per}"
        );
        let paired = t.paired("method", "magnitude").unwrap();
        // 88 − 90 = −2.00, 80.5 − 80 = +0.50, 71 − 70 = +1.00
        assert!(
            paired.contains("| teacher-guided | −2.00 / +0.50 / +1.00 |"),
            "{paired}"
        );
        assert!(!paired.contains("| magnitude |"), "{paired}");
        // statistics.mean([-2, 0.5, 1]), statistics.stdev([-2, 0.5, 1])
        // -> -0.16666666666666666 1.6072751268321592
        let means = t.paired_means("method", "magnitude").unwrap();
        assert!(
            means.contains("| teacher-guided | −0.17 ± 1.61 (n = 3) |"),
            "{means}"
        );
        assert!(!means.contains("| magnitude |"), "{means}");
        assert!(t.paired_means("method", "lamp").is_err());
        assert!(t.paired("method", "lamp").is_err());
        assert!(t.insert("magnitude", "0.9", 0, 0.5).is_err());
    }
}
