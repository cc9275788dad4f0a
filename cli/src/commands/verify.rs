//! `kdprune verify`: per-layer sparsity and the mask invariant of a checkpoint.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use prune_core::ParamFilter;

use crate::common;

/// Flags of `kdprune verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Checkpoint to check.
    pub checkpoint: PathBuf,
}

/// Prints the per-layer table ending in `global sparsity: 0.9000`; fails if
/// any masked weight is not exactly zero.
pub fn run(a: VerifyArgs) -> Result<()> {
    let (model, masks, _) = common::load_model(&a.checkpoint, &common::device())?;
    let names: Vec<String> = if masks.is_empty() {
        common::prunable_names(model.config(), &ParamFilter::default())
    } else {
        masks.names().map(String::from).collect()
    };
    let rep = prune_core::report::sparsity_report(&model.tensors()?, &names, Some(&masks))?;
    print!("{}", rep.table());
    if rep.violations() > 0 {
        bail!(
            "{}: {} masked weights are not zero",
            a.checkpoint.display(),
            rep.violations()
        );
    }
    Ok(())
}
