//! `kdprune retrain`: train a pruned checkpoint under its fixed mask.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;

use super::args::{DataArgs, LossArgs, OptimArgs};
use crate::common::{self, MaskHook};

/// Flags of `kdprune retrain`.
#[derive(Args, Debug)]
pub struct RetrainArgs {
    /// Pruned checkpoint (with masks).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Teacher checkpoint (for --loss kd or ca-kld).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub optim: OptimArgs,
    #[command(flatten)]
    pub loss: LossArgs,
    /// Output checkpoint.
    #[arg(long)]
    pub out: PathBuf,
    /// No progress bars or per-epoch lines.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Retrains with the mask enforced around every step.
pub fn run(a: RetrainArgs) -> Result<()> {
    let device = Device::Cpu;
    let (model, masks, ckpt) = common::load_model(&a.checkpoint, &device)?;
    anyhow::ensure!(
        !masks.is_empty(),
        "{} has no masks: prune it first (kdprune prune)",
        a.checkpoint.display()
    );
    let (data, seed) = a.data.load(Some(&ckpt.metadata))?;
    common::check_fits(&model, &data, "the checkpoint")?;
    let loss = a.loss.config()?;
    let teacher = common::teacher_for(&loss, a.teacher.as_deref(), &data, seed, &device)?;
    common::apply_masks(&model, &masks)?;
    let cfg = a.optim.train_config(loss, seed);
    let mut hook = MaskHook(&masks);
    common::train_and_save(
        &model,
        teacher.as_ref(),
        &data,
        &cfg,
        &mut hook,
        Some(&masks),
        "retrained",
        seed,
        &a.out,
        !a.quiet,
    )?;
    Ok(())
}
