//! `kdprune summarize`: mean ± std over seeds of several `report.json` files.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde::Deserialize;

use crate::report::write_atomic;

/// Flags of `kdprune summarize`.
#[derive(Args, Debug)]
pub struct SummarizeArgs {
    /// `report.json` files of `kdprune run` (one per seed and sparsity).
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
    /// Also write the table to this Markdown file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Deserialize)]
struct ReportFile {
    config: ConfigPart,
    stages: Vec<StagePart>,
}

#[derive(Deserialize)]
struct ConfigPart {
    sparsity: f64,
    seed: u64,
}

#[derive(Deserialize)]
struct StagePart {
    name: String,
    accuracy: f64,
}

/// Mean and sample standard deviation (n − 1); std is 0 for one value.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Prints (and optionally writes) the table: one row per stage, one column per
/// sparsity, cells `mean ± std` of test accuracy in percent over seeds.
pub fn run(a: SummarizeArgs) -> Result<()> {
    // sparsity (as printed) → stage → accuracies; stage order of the first report
    let mut cells: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    let mut seeds: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for path in &a.reports {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let r: ReportFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a kdprune report", path.display()))?;
        let key = format!("{:.2}", r.config.sparsity);
        seeds.entry(key.clone()).or_default().push(r.config.seed);
        for st in r.stages {
            if !order.contains(&st.name) {
                order.push(st.name.clone());
            }
            cells
                .entry(key.clone())
                .or_default()
                .entry(st.name)
                .or_default()
                .push(st.accuracy);
        }
    }
    let cols: Vec<&String> = cells.keys().collect();
    let mut s = String::from("| stage |");
    for c in &cols {
        let n = seeds[*c].len();
        s.push_str(&format!(" s = {c} (n = {n}) |"));
    }
    s.push_str("\n|---|");
    s.push_str(&"---:|".repeat(cols.len()));
    s.push('\n');
    for stage in &order {
        s.push_str(&format!("| {stage} |"));
        for c in &cols {
            match cells[*c].get(stage) {
                Some(v) => {
                    let (m, sd) = mean_std(v);
                    s.push_str(&format!(" {:.2} ± {:.2} |", 100.0 * m, 100.0 * sd));
                }
                None => s.push_str(" – |"),
            }
        }
        s.push('\n');
    }
    print!("{s}");
    if let Some(out) = &a.out {
        write_atomic(out, &s)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn mean_and_sample_std() {
        // import statistics; statistics.mean([1,2,4]), statistics.stdev([1,2,4])
        // -> 2.3333333333333335 1.5275252316519468
        let (m, s) = super::mean_std(&[1.0, 2.0, 4.0]);
        assert!((m - 2.333_333_333_333_333_5).abs() < 1e-12);
        assert!((s - 1.527_525_231_651_946_8).abs() < 1e-12);
        assert_eq!(super::mean_std(&[3.0]), (3.0, 0.0));
    }
}
