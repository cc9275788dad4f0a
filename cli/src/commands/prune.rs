//! `kdprune prune`: score a checkpoint and prune it in one shot.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use kd_core::SelfDistillConfig;
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
    /// Criterion; every one keeps the highest-scored weights and prunes the
    /// lowest: teacher-guided |θ·∂L/∂θ| (L = --loss under --teacher), snip
    /// |θ·∂CE/∂θ|, self-distill |θ·∂L_SD/∂θ| (EPSD: α·T²·KL to the model's own
    /// detached predictions on a shifted or crop-flipped view, plus (1−α)·CE;
    /// --sd-temperature, --sd-alpha), grasp θ·H·g (H·g by finite differences of the
    /// CE gradient g over the scoring batches; the weights with the highest
    /// paper score −θ·H·g are removed), synflow (data-free, --synflow-rounds
    /// rounds on an all-ones input, global scope only), magnitude |θ|, lamp,
    /// random.
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
    /// Batches over which gradient scores are accumulated (teacher-guided,
    /// snip, self-distill, grasp).
    #[arg(long, default_value_t = 8)]
    pub score_batches: usize,
    /// Temperature T of the self-distill criterion.
    #[arg(long, default_value_t = SelfDistillConfig::default().temperature)]
    pub sd_temperature: f64,
    /// Weight α of the KL term of the self-distill criterion:
    /// L_SD = α·T²·KL + (1−α)·CE (the default 0.5 is EPSD's DLB recipe, CE + T²·KL).
    #[arg(long, default_value_t = SelfDistillConfig::default().alpha)]
    pub sd_alpha: f64,
    /// Pruning rounds of synflow (exponential schedule to --sparsity).
    #[arg(long, default_value_t = prune_core::importance::DEFAULT_SYNFLOW_ROUNDS)]
    pub synflow_rounds: usize,
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
    let criterion: Criterion = a.criterion.parse()?;
    anyhow::ensure!(
        a.score_batches > 0 || !criterion.needs_data(),
        "--score-batches must be ≥ 1 for the {criterion} criterion"
    );
    anyhow::ensure!(
        criterion != Criterion::Synflow || matches!(a.scope, Scope::Global),
        "synflow prunes by one global threshold per round; --scope layer is not supported with it"
    );
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
    let mut masks = if criterion == Criterion::Synflow {
        common::synflow_masks(&model, &data, &prunable, a.sparsity, a.synflow_rounds)?
    } else {
        let scores = if criterion == Criterion::SelfDistill {
            let cfg = SelfDistillConfig {
                temperature: a.sd_temperature,
                alpha: a.sd_alpha,
            };
            common::self_distill_scores(
                &model,
                &data,
                &prunable,
                &cfg,
                a.score_batches,
                a.batch_size,
                seed,
            )?
        } else {
            common::score(
                criterion,
                &model,
                teacher.as_ref(),
                &data,
                &prunable,
                &loss,
                a.score_batches,
                a.batch_size,
                seed,
            )?
        };
        match a.scope {
            Scope::Global => select::global(&scores, a.sparsity)?,
            Scope::Layer => select::per_layer(&scores, a.sparsity)?,
        }
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
    println!("{}", rep.table());
    println!("test accuracy: {acc:.4}");
    println!("saved {}", a.out.display());
    Ok(())
}
