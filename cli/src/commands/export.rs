//! `kdprune export`.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;
use kdprune_cli::jobs;
use kdprune_models::checkpoint::Encoding;

use super::args::DataArgs;

/// Flags of `kdprune export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Checkpoint to export (any encoding).
    pub checkpoint: PathBuf,
    /// `dense`: PyTorch state_dict names, no masks; `sparse`: compressed-tensors'
    /// sparse-bitmask (size ∝ non-zeros, masks kept); `int8`: compressed-tensors'
    /// int-quantized (INT8 weights per output channel); `sparse-int8`: both, the
    /// INT8 weights' non-zeros bitmask-encoded (the smallest file); `kdprune`:
    /// the native file.
    #[arg(long, value_parser = parse_encoding)]
    pub format: Encoding,
    /// File to write.
    #[arg(long)]
    pub out: PathBuf,
    /// `int8`, `sparse-int8`: training batches of 64 over which each linear layer's input
    /// scale is calibrated (static activations); 0 quantises activations
    /// per batch (dynamic).
    #[arg(long, default_value_t = 0)]
    pub calibration_batches: usize,
    #[command(flatten)]
    pub data: DataArgs,
}

fn parse_encoding(s: &str) -> std::result::Result<Encoding, String> {
    s.parse()
}

/// Prints what was written and its size against the input.
pub fn export(a: ExportArgs, device: &Device) -> Result<()> {
    let calibration = jobs::Calibration {
        batches: a.calibration_batches,
        data: a.data.spec(),
    };
    let report = jobs::export_checkpoint(&a.checkpoint, a.format, &a.out, &calibration, device)?;
    println!("{}", report.line());
    Ok(())
}
