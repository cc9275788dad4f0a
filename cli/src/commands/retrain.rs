//! `kdprune retrain`: train a pruned checkpoint under its fixed mask.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;
use kd_core::TrainData;

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
    let teacher = match &a.teacher {
        Some(p) => Some(common::load_teacher(p, &data, seed, &device)?),
        None => None,
    };
    anyhow::ensure!(
        !loss.needs_teacher() || teacher.is_some(),
        "--loss {} needs --teacher CKPT",
        a.loss.loss
    );
    common::apply_masks(&model, &masks)?;
    let cfg = a.optim.train_config(loss, seed);
    let td = TrainData {
        train: &data.split.train,
        test: &data.split.test,
        norm: &data.norm,
    };
    let report = kd_core::fit(
        &model,
        teacher.as_ref(),
        &td,
        &cfg,
        &mut MaskHook(&masks),
        "retrain",
        !a.quiet,
    )?;
    let meta = common::metadata(data.name, seed, "retrained", &data.norm);
    common::save_model(&a.out, &model, Some(&masks), meta)?;
    if let Some(acc) = report.final_accuracy() {
        println!("test accuracy: {acc:.4}");
    }
    println!("saved {}", a.out.display());
    Ok(())
}
