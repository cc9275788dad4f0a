//! `kdprune train`, `kdprune distill` and `kdprune retrain`.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;
use kdprune_cli::jobs::{self, DistillJob, RetrainJob, TrainJob, Trained};

use super::args::{DataArgs, LossArgs, ObjectiveArgs, OptimArgs};

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
    /// Start from this dense checkpoint of the same --model instead of the
    /// seeded initialisation (e.g. KD fine-tuning of a trained student).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Once-for-All progressive shrinking, for a --model with elastic
    /// kernels (efficientnet-b0-k7): each batch runs every depthwise kernel
    /// at a centre size drawn from this list (e.g. `7,5`, then `7,5,3`);
    /// the per-epoch test accuracy is the smallest size's.
    #[arg(long, value_delimiter = ',')]
    pub elastic_kernels: Vec<usize>,
    /// Output checkpoint (.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// No progress bars or per-epoch lines.
    #[arg(long, short)]
    pub quiet: bool,
    /// Continue an interrupted run of the same settings from its resume
    /// point (saved at the end of every epoch beside --out); without it a
    /// run starts from the beginning.
    #[arg(long)]
    pub resume: bool,
    /// Also save the resume point every this many optimizer steps (long
    /// epochs); by default at the end of every epoch only.
    #[arg(long, value_parser = super::args::at_least_one)]
    pub save_every: Option<usize>,
}

/// Flags of `kdprune retrain`: a pruned checkpoint under its fixed mask,
/// with any objective of `kdprune distill`.
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
    /// Continue an interrupted run of the same settings from its resume
    /// point (saved at the end of every epoch beside --out); without it a
    /// run starts from the beginning.
    #[arg(long)]
    pub resume: bool,
    /// Also save the resume point every this many optimizer steps (long
    /// epochs); by default at the end of every epoch only.
    #[arg(long, value_parser = super::args::at_least_one)]
    pub save_every: Option<usize>,
}

/// Flags of `kdprune distill`.
#[derive(Args, Debug)]
pub struct DistillArgs {
    /// Teacher checkpoint (needed by every loss term but ce).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Student architecture, trained from its seeded initialisation.
    #[arg(long, default_value = "lenet5")]
    pub student_model: String,
    #[command(flatten)]
    pub objective: ObjectiveArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub optim: OptimArgs,
    /// Output folder: student.safetensors and report.json.
    #[arg(long)]
    pub out: PathBuf,
    /// No progress bars or per-epoch lines.
    #[arg(long, short)]
    pub quiet: bool,
    /// Continue an interrupted run of the same settings from its resume
    /// point (saved at the end of every epoch beside --out); without it a
    /// run starts from the beginning.
    #[arg(long)]
    pub resume: bool,
    /// Also save the resume point every this many optimizer steps (long
    /// epochs); by default at the end of every epoch only.
    #[arg(long, value_parser = super::args::at_least_one)]
    pub save_every: Option<usize>,
}

fn print(trained: &Trained) {
    if let Some(acc) = trained.accuracy {
        println!("test accuracy: {acc:.4}");
    }
    println!("saved {}", trained.out.display());
}

/// Trains and saves the model.
pub fn train(a: TrainArgs, device: &Device) -> Result<()> {
    let job = TrainJob {
        model: a.model,
        data: a.data.spec(),
        optim: a.optim.optim(),
        loss: a.loss.config(None)?,
        teacher: a.teacher,
        init: a.init,
        elastic_kernels: a.elastic_kernels,
        out: a.out,
        verbose: !a.quiet,
        resume: a.resume,
        save_every: a.save_every,
    };
    print(&jobs::train_model(&job, device)?);
    Ok(())
}

/// Retrains with the mask enforced around every step.
pub fn retrain(a: RetrainArgs, device: &Device) -> Result<()> {
    let job = RetrainJob {
        checkpoint: a.checkpoint,
        teacher: a.teacher,
        data: a.data.spec(),
        optim: a.optim.optim(),
        objective: a.objective.spec("ce")?,
        out: a.out,
        verbose: !a.quiet,
        resume: a.resume,
        save_every: a.save_every,
    };
    print(&jobs::retrain_checkpoint(&job, device)?);
    Ok(())
}

/// Trains the student, saves it and writes the report.
pub fn distill(a: DistillArgs, device: &Device) -> Result<()> {
    let job = DistillJob {
        teacher: a.teacher,
        student_model: a.student_model,
        objective: a.objective.spec("kd")?,
        data: a.data.spec(),
        optim: a.optim.optim(),
        out: a.out,
        verbose: !a.quiet,
        resume: a.resume,
        save_every: a.save_every,
    };
    let (report, student) = jobs::distill_student(&job, device)?;
    println!("test accuracy: {:.4}", report.accuracy);
    println!("saved {}", student.display());
    Ok(())
}
