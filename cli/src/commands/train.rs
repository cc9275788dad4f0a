//! `kdprune train`: one model, from scratch or under a teacher.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use kd_core::NoHook;

use super::args::{DataArgs, LossArgs, OptimArgs};
use crate::common;

/// Flags of `kdprune train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Architecture: lenet-300-100, mlp-<w1>-<w2>-..., lenet5[-xK], or a zoo
    /// CNN (resnet20, vgg11, wrn-16-4, ...; `kdprune models` lists them).
    #[arg(long, default_value = "lenet-300-100")]
    pub model: String,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub optim: OptimArgs,
    #[command(flatten)]
    pub loss: LossArgs,
    /// Teacher checkpoint (for --loss kd or ca-kld).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Output checkpoint (.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// No progress bars or per-epoch lines.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Trains and saves the model.
pub fn run(a: TrainArgs) -> Result<()> {
    let device = common::device();
    let (data, seed) = a.data.load(None)?;
    let loss = a.loss.config()?;
    let teacher = common::teacher_for(&loss, a.teacher.as_deref(), &data, seed, &device)?;
    let model = common::new_model(&a.model, &data, seed, &device)?;
    let cfg = a.optim.train_config(loss, seed, &data);
    common::train_and_save(
        &model,
        teacher.as_ref(),
        &data,
        &cfg,
        &mut NoHook,
        None,
        "train",
        seed,
        &a.out,
        !a.quiet,
    )?;
    Ok(())
}
