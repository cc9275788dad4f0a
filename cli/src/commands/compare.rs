//! `kdprune compare`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use kdprune_cli::compare::{compare as run_compare, CompareJob};
use kdprune_cli::files::write_atomic;
use kdprune_models::infer::LayerChoice;

use super::args::DataArgs;

/// Flags of `kdprune compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Checkpoints (any encoding); ratios are against the first.
    #[arg(required = true, num_args = 1..)]
    pub checkpoints: Vec<PathBuf>,
    /// Timed forward passes per latency (median; after 3 warm-up passes).
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// Which layers the inference runtime runs sparse: `auto`, `dense`,
    /// `sparse` or a density.
    #[arg(long, default_value = "auto", value_parser = super::infer::parse_choice)]
    pub layers: LayerChoice,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
}

/// Prints the Markdown table (and writes the JSON).
pub fn compare(a: CompareArgs) -> Result<()> {
    let report = run_compare(&CompareJob {
        checkpoints: a.checkpoints,
        data: a.data.spec(),
        rounds: a.rounds,
        choice: a.layers,
    })?;
    print!("{}", report.markdown());
    if let Some(path) = a.json {
        write_atomic(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    Ok(())
}
