//! `kdprune retrain`: train a pruned checkpoint under its fixed mask, with
//! any objective of `kdprune distill` (`--loss ca-kld`, `--loss ce:1,at:1000`, …).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use kd_core::{FitOptions, LossConfig, TeacherCache};

use super::args::{DataArgs, OptimArgs};
use super::distill::{teacher_for, ObjectiveArgs};
use crate::common::{self, MaskHook};

/// Flags of `kdprune retrain`.
#[derive(Args, Debug)]
pub struct RetrainArgs {
    /// Pruned checkpoint (with masks).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Teacher checkpoint (for every --loss term but ce).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub optim: OptimArgs,
    #[command(flatten)]
    pub objective: ObjectiveArgs,
    /// Output checkpoint.
    #[arg(long)]
    pub out: PathBuf,
    /// No progress bars or per-epoch lines.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Retrains with the mask enforced around every step.
pub fn run(a: RetrainArgs) -> Result<()> {
    let device = common::device();
    let (model, masks, ckpt) = common::load_model(&a.checkpoint, &device)?;
    anyhow::ensure!(
        !masks.is_empty(),
        "{} has no masks: prune it first (kdprune prune)",
        a.checkpoint.display()
    );
    let (data, seed) = a.data.load(Some(&ckpt.metadata))?;
    common::check_fits(&model, &data, "the checkpoint")?;
    let loss = a.objective.loss.clone().unwrap_or_else(|| "ce".into());
    let spec = a.objective.spec(&loss)?;
    let teacher = teacher_for(&spec, &loss, a.teacher.as_deref(), &data, seed, &device)?;
    let objective = a
        .objective
        .objective(&spec, &model, teacher.as_ref(), &data)?;
    common::apply_masks(&model, &masks)?;
    // `ce`, `kd` and `ca-kld` give the objective of their `LossConfig`, so
    // they retrain exactly as before the general objectives existed.
    let cfg = a
        .optim
        .train_config(LossConfig::CrossEntropy, seed, &data)
        .with_objective(objective);
    let options = FitOptions {
        label: "retrained",
        verbose: !a.quiet,
        teacher_cache: TeacherCache::Memory,
    };
    let report = kd_core::distill(
        &model,
        teacher.as_ref(),
        &data.train_data(),
        &cfg,
        &mut MaskHook(&masks),
        &options,
    )
    .context("retraining failed")?;
    let mut meta = common::metadata(data.name, seed, "retrained", &data.norm);
    meta.insert("loss".into(), cfg.objective.to_string());
    common::save_model(&a.out, &model, Some(&masks), meta)?;
    if let Some(acc) = report.final_accuracy() {
        println!("test accuracy: {acc:.4}");
    }
    println!("saved {}", a.out.display());
    Ok(())
}
