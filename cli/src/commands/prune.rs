//! `kdprune prune`: score a checkpoint and prune it in one shot.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use prune_core::importance::Criterion;
use prune_core::{select, ParamFilter};

use super::args::{DataArgs, LossArgs};
use crate::common;

/// One threshold for all layers, or one per layer.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Scope {
    /// One global threshold (the paper's).
    Global,
    /// The same sparsity in every layer.
    Layer,
}

/// Flags of `kdprune prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Checkpoint to prune.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Criterion: teacher-guided, snip, magnitude, random.
    #[arg(long, default_value = "teacher-guided")]
    pub criterion: String,
    /// Target sparsity in [0, 1).
    #[arg(long, default_value_t = 0.9)]
    pub sparsity: f64,
    /// Selection scope.
    #[arg(long, value_enum, default_value = "global")]
    pub scope: Scope,
    /// Teacher checkpoint (teacher-guided).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Batches over which gradient scores are accumulated.
    #[arg(long, default_value_t = 8)]
    pub score_batches: usize,
    /// Mini-batch size of scoring.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Keep the first layer dense.
    #[arg(long)]
    pub keep_first: bool,
    /// Keep the last layer dense.
    #[arg(long)]
    pub keep_last: bool,
    #[command(flatten)]
    pub data: DataArgs,
    /// Loss whose gradient the teacher-guided score uses.
    #[command(flatten)]
    pub loss: LossArgs,
    /// Output checkpoint with masks.
    #[arg(long)]
    pub out: PathBuf,
}

/// Scores, selects, applies and saves.
pub fn run(a: PruneArgs) -> Result<()> {
    prune_core::check_sparsity(a.sparsity)?;
    anyhow::ensure!(a.score_batches > 0, "--score-batches must be ≥ 1");
    let criterion: Criterion = a.criterion.parse()?;
    let device = common::device();
    let (model, old_masks, ckpt) = common::load_model(&a.checkpoint, &device)?;
    let (data, seed) = a.data.load(Some(&ckpt.metadata))?;
    common::check_fits(&model, &data, "the checkpoint")?;
    let teacher = match &a.teacher {
        Some(p) => Some(common::load_teacher(p, &data, seed, &device)?),
        None => None,
    };
    let mut loss = a.loss.config()?;
    if criterion == Criterion::TeacherGuided && !loss.needs_teacher() {
        // `--loss ce` with the teacher-guided criterion would silently be SNIP.
        loss =
            crate::config::loss_config("ca-kld", a.loss.temperature, a.loss.alpha, &a.loss.beta)?;
    }
    let filter = ParamFilter {
        keep_first: a.keep_first,
        keep_last: a.keep_last,
        ..ParamFilter::default()
    };
    let prunable = common::prunable_names(model.config(), &filter);
    let scores = common::score(
        criterion,
        &model,
        teacher.as_ref(),
        &data,
        &prunable,
        &loss,
        a.score_batches,
        a.batch_size,
        seed,
    )?;
    let mut masks = match a.scope {
        Scope::Global => select::global(&scores, a.sparsity)?,
        Scope::Layer => select::per_layer(&scores, a.sparsity)?,
    };
    if !old_masks.is_empty() {
        masks = masks
            .intersect(&old_masks)
            .context("the checkpoint's masks do not match its weights")?;
    }
    common::apply_masks(&model, &masks)?;
    let acc = kd_core::evaluate(&model, &data.split.test, &data.norm, 512)?;
    let rep = prune_core::report::sparsity_report(&model.tensors()?, &prunable, Some(&masks))?;
    let meta = common::metadata(data.name, seed, "pruned", &data.norm);
    common::save_model(&a.out, &model, Some(&masks), meta)?;
    print!("{}", rep.table());
    println!("test accuracy: {acc:.4}");
    println!("saved {}", a.out.display());
    Ok(())
}
