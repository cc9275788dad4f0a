//! `kdprune compress`.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;
use kdprune_cli::compress::{run_compress, CompressConfig};
use kdprune_cli::settings::from_toml_file;

/// Flags of `kdprune compress`.
#[derive(Args, Debug)]
pub struct CompressArgs {
    /// The pipeline's TOML configuration (`configs/compress.toml` runs on
    /// digits in under a minute).
    #[arg(long)]
    pub config: PathBuf,
    /// Output folder, instead of the configuration's `out`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs or resumes the pipeline; prints each stage and the comparison.
pub fn compress(a: CompressArgs, device: &Device) -> Result<()> {
    let mut cfg: CompressConfig = from_toml_file(&a.config, "compress configuration")?;
    if let Some(out) = a.out {
        cfg.out = out;
    }
    let outcome = run_compress(&cfg, device, !a.quiet)?;
    for (stage, ran) in &outcome.stages {
        println!(
            "{stage}: {}",
            if *ran {
                "done"
            } else {
                "kept from an earlier run"
            }
        );
    }
    let (report, path) = &outcome.compare;
    print!("\n{}", report.markdown());
    println!("\nwritten to {} (and compare.json)", path.display());
    Ok(())
}
