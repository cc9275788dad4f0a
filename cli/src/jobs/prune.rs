//! `kdprune prune`: a checkpoint scored by any criterion and pruned in one
//! shot to an exact sparsity.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;
use kd_core::{LossConfig, SelfDistillConfig};
use prune_core::{Importance, Scope, SparsityReport};

use super::DataSpec;
use crate::checkpoints::{
    apply_masks, check_fits, filter, load_model, load_teacher, metadata, prunable_names,
    save_model, select,
};
use crate::scoring::{check_inputs, prune_masks, ScoringSettings};

/// What to prune and how.
#[derive(Debug)]
pub struct PruneJob {
    /// The checkpoint to prune (its masks, if any, stay: pruned weights
    /// stay pruned).
    pub checkpoint: PathBuf,
    /// The criterion.
    pub criterion: Box<dyn Importance>,
    /// Target sparsity of the prunable weights, in [0, 1).
    pub sparsity: f64,
    /// One global threshold or one per layer.
    pub scope: Scope,
    /// The teacher's checkpoint (teacher-guided).
    pub teacher: Option<PathBuf>,
    /// Calibration batches of the data-driven criteria.
    pub score_batches: usize,
    /// Samples per calibration batch.
    pub batch_size: usize,
    /// The distillation loss of the teacher-guided score.
    pub kd_loss: LossConfig,
    /// The self-distillation loss of EPSD.
    pub self_distill: SelfDistillConfig,
    /// Keep the first prunable layer dense.
    pub keep_first: bool,
    /// Keep the last prunable layer dense.
    pub keep_last: bool,
    /// The data (defaults: the checkpoint's).
    pub data: DataSpec,
    /// The output checkpoint, with masks.
    pub out: PathBuf,
}

/// What a pruning job leaves.
#[derive(Clone, Debug)]
pub struct PruneOutcome {
    /// Per-layer sparsity of the pruned weights, checked against the masks.
    pub report: SparsityReport,
    /// Test accuracy of the pruned model (before any retraining).
    pub accuracy: f64,
    /// The checkpoint written.
    pub out: PathBuf,
}

/// Scores, selects among the weights the checkpoint still keeps, applies and
/// saves: exactly `round(s·n)` of the `n` prunable weights end up pruned
/// (`round(s·n_t)` per layer with the per-layer scope), whatever masks the
/// checkpoint had. A target below the checkpoint's own sparsity is refused.
pub fn prune_checkpoint(job: &PruneJob, device: &Device) -> Result<PruneOutcome> {
    prune_core::check_sparsity(job.sparsity)?;
    let scoring = ScoringSettings {
        batches: job.score_batches,
        batch_size: job.batch_size,
        seed: 0,
        kd_loss: job.kd_loss,
        self_distill: job.self_distill,
    };
    let criterion = job.criterion.as_ref();
    check_inputs(criterion, true, &scoring)?;
    let (model, kept, ckpt) = load_model(&job.checkpoint, device)?;
    let (data, seed) = job.data.load(Some(&ckpt.metadata))?;
    check_fits(&model, &data, "the checkpoint")?;
    let teacher = match &job.teacher {
        Some(p) => Some(load_teacher(p, &data, seed, device)?),
        None => None,
    };
    let prunable = prunable_names(model.config(), &filter(job.keep_first, job.keep_last));
    if !kept.is_empty() {
        anyhow::ensure!(
            kept.names().all(|n| prunable.iter().any(|p| p == n)),
            "{} masks weights this filter does not prune (keep the same --keep-first / --keep-last)",
            job.checkpoint.display()
        );
        let weights = select(&model.tensors()?, &prunable)?;
        let n: usize = weights.values().map(|t| t.elem_count()).sum();
        let already = kept
            .pruned_count()
            .context("the checkpoint's masks do not match its weights")?;
        anyhow::ensure!(
            already <= prune_core::select::prune_count(n, job.sparsity),
            "{} is already {:.4} sparse ({already} of {n} prunable weights pruned), more than the target {}",
            job.checkpoint.display(),
            already as f64 / n as f64,
            job.sparsity
        );
    }
    let masks = prune_masks(
        criterion,
        &model,
        teacher.as_ref(),
        &data,
        &prunable,
        ScoringSettings { seed, ..scoring },
        job.sparsity,
        job.scope,
        &kept,
    )?;
    apply_masks(&model, &masks)?;
    let accuracy = kd_core::evaluate(&model, &data.test_view(), 512)?;
    let report = prune_core::report::sparsity_report(&model.tensors()?, &prunable, Some(&masks))?;
    save_model(
        &job.out,
        &model,
        Some(&masks),
        metadata(data.name, seed, "pruned", &data.norm),
    )?;
    Ok(PruneOutcome {
        report,
        accuracy,
        out: job.out.clone(),
    })
}
