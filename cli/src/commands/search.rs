//! `kdprune search darts`.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::{Args, Subcommand};
use kdprune_cli::darts::{search_darts, DartsSearchConfig, DartsSearchJob};

use super::args::DataArgs;

/// Flags of `kdprune search`.
#[derive(Args, Debug)]
pub struct SearchArgs {
    #[command(subcommand)]
    pub method: SearchMethod,
}

/// The search methods.
#[derive(Subcommand, Debug)]
pub enum SearchMethod {
    /// DARTS, first order: a cell searched by gradient descent on
    /// architecture weights, discretised, and the network of that cell
    /// trained from scratch (`OUT/report.json`, `OUT/model.safetensors`).
    Darts(DartsArgs),
}

/// Flags of `kdprune search darts`.
#[derive(Args, Debug)]
pub struct DartsArgs {
    /// Settings (TOML; every field optional: channels, layers, epochs,
    /// batch_size, lr, min_lr, momentum, weight_decay, alpha_lr,
    /// alpha_weight_decay, train_channels, train_layers, train_epochs,
    /// train_lr, search_samples, train_samples); defaults: a 5-cell search network at 8 channels, 10
    /// epochs, an 8-cell network at 16 channels trained 20 epochs.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// No progress bars or per-epoch lines.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs the search and prints the genotype, the size and the accuracy.
pub fn search(a: SearchArgs, device: &Device) -> Result<()> {
    match a.method {
        SearchMethod::Darts(a) => {
            let config = match &a.config {
                Some(path) => DartsSearchConfig::load(path)?,
                None => DartsSearchConfig::default(),
            };
            let job = DartsSearchJob {
                data: a.data.spec(),
                config,
                out: a.out,
                verbose: !a.quiet,
            };
            let report = search_darts(&job, device)?;
            println!("genotype: {}", report.genotype);
            println!("parameters: {}  MACs: {}", report.params, report.macs);
            if let Some(acc) = report.test_accuracy.last() {
                println!("test accuracy: {acc:.4}");
            }
            println!("saved {}", job.out.display());
            Ok(())
        }
    }
}
