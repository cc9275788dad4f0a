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
    /// train_lr, search_samples, train_samples, baseline); defaults: a
    /// 5-cell search network at 8 channels, 10 epochs, an 8-cell network at
    /// 16 channels trained 20 epochs.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A zoo network (e.g. resnet20) trained exactly as the searched one
    /// and reported beside it (overrides the config's `baseline`).
    #[arg(long)]
    pub baseline: Option<String>,
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
            let mut config = match &a.config {
                Some(path) => DartsSearchConfig::load(path)?,
                None => DartsSearchConfig::default(),
            };
            if a.baseline.is_some() {
                config.baseline = a.baseline;
            }
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
            if let Some(b) = &report.baseline {
                let acc = b.test_accuracy.last().copied().unwrap_or(f64::NAN);
                println!(
                    "baseline {}: parameters: {}  MACs: {}  test accuracy: {acc:.4}",
                    b.model, b.params, b.macs
                );
            }
            println!("saved {}", job.out.display());
            Ok(())
        }
    }
}
