//! `kdprune infer`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use kdprune_cli::files::write_atomic;
use kdprune_cli::infer::{infer as run_infer, InferJob};
use kdprune_models::infer::LayerChoice;

/// Flags of `kdprune infer`.
#[derive(Args, Debug)]
pub struct InferArgs {
    /// Checkpoint (any encoding) of an MLP or LeNet-5.
    pub checkpoint: PathBuf,
    /// Images: IDX image files (`*-images-idx3-ubyte`, optionally gzipped;
    /// every image) and PNG/JPEG files (one image each), sized for the model.
    #[arg(long, required = true, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// Samples per forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Which layers run sparse: `auto` (by density), `dense`, `sparse`, or a
    /// density such as `0.2` (sparse at or below it).
    #[arg(long, default_value = "auto", value_parser = parse_choice)]
    pub layers: LayerChoice,
    /// Write the JSON here (atomically) instead of to standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn parse_choice(s: &str) -> std::result::Result<LayerChoice, String> {
    match super::args::parse_layers(s)? {
        super::args::Engine::Runtime(choice) => Ok(choice),
        super::args::Engine::Candle => Err("`candle` is not a runtime layer choice".to_string()),
    }
}

/// Prints (or writes) the JSON report: the layers, the time, and per input
/// its file, index, class and logits.
pub fn infer(a: InferArgs) -> Result<()> {
    let report = run_infer(&InferJob {
        checkpoint: a.checkpoint,
        inputs: a.input,
        batch_size: a.batch_size,
        choice: a.layers,
    })?;
    let json = serde_json::to_string_pretty(&report).context("cannot serialise the report")?;
    match a.out {
        Some(path) => {
            write_atomic(&path, json + "\n")?;
            eprintln!(
                "wrote {} predictions to {}",
                report.predictions.len(),
                path.display()
            );
        }
        None => println!("{json}"),
    }
    Ok(())
}
