//! `kdprune export`.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;
use kdprune_cli::jobs;
use kdprune_models::checkpoint::Encoding;

/// Flags of `kdprune export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Checkpoint to export (any encoding).
    pub checkpoint: PathBuf,
    /// `dense`: PyTorch state_dict names, no masks; `sparse`: compressed-tensors'
    /// sparse-bitmask (size ∝ non-zeros, masks kept); `kdprune`: the native file.
    #[arg(long, value_parser = parse_encoding)]
    pub format: Encoding,
    /// File to write.
    #[arg(long)]
    pub out: PathBuf,
}

fn parse_encoding(s: &str) -> std::result::Result<Encoding, String> {
    s.parse()
}

/// Prints what was written and its size against the input.
pub fn export(a: ExportArgs, device: &Device) -> Result<()> {
    let report = jobs::export_checkpoint(&a.checkpoint, a.format, &a.out, device)?;
    println!("{}", report.line());
    Ok(())
}
