//! `kdprune train`: one model, from scratch or under a teacher.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;
use kd_core::{NoHook, TrainData};

use super::args::{DataArgs, LossArgs, OptimArgs};
use crate::common;

/// Flags of `kdprune train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Architecture: lenet-300-100, mlp-<w1>-<w2>-..., lenet5.
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
    let device = Device::Cpu;
    let (data, seed) = a.data.load(None)?;
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
    let model = common::new_model(&a.model, &data, seed, &device)?;
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
        &mut NoHook,
        "train",
        !a.quiet,
    )?;
    let meta = common::metadata(data.name, seed, "train", &data.norm);
    common::save_model(&a.out, &model, None, meta)?;
    if let Some(acc) = report.final_accuracy() {
        println!("test accuracy: {acc:.4}");
    }
    println!("saved {}", a.out.display());
    Ok(())
}
