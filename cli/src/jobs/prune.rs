//! `kdprune prune`: a checkpoint scored by any criterion and pruned in one
//! shot to an exact sparsity.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;
use kd_core::{LossConfig, SelfDistillConfig};
use kdprune_models::structured::{
    channel_groups, removable_blocks, remove_blocks, remove_channels,
};
use prune_core::group::{GroupCriterion, GroupRatios};
use prune_core::importance::GradientSource;
use prune_core::importance::{self, Loss};
use prune_core::{Importance, Scope, SparsityReport};

use super::DataSpec;
use crate::checkpoints::{
    apply_masks, check_fits, filter, load_model, load_teacher, metadata, prunable_names,
    save_model, select,
};
use crate::scoring::{check_inputs, prune_masks, ModelScoring, ScoringSettings};

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
    crate::files::check_out_file(&job.out)?;
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

/// `kdprune prune --structured channels`: whole channels of the declared
/// groups removed (the network becomes smaller and dense).
#[derive(Debug)]
pub struct StructuredPruneJob {
    /// The checkpoint to prune.
    pub checkpoint: PathBuf,
    /// How channels are scored.
    pub criterion: GroupCriterion,
    /// How many each group loses.
    pub ratios: GroupRatios,
    /// Prune in rounds of `step` (a fraction of the channels left, scored
    /// anew each round) until the MACs fall to this fraction of the
    /// network's; `ratios.ratio` is then unused.
    pub target_macs: Option<f64>,
    /// The fraction of each round with `target_macs`.
    pub step: f64,
    /// The teacher's checkpoint (teacher-guided).
    pub teacher: Option<PathBuf>,
    /// Calibration batches of the gradient criteria.
    pub score_batches: usize,
    /// Samples per calibration batch.
    pub batch_size: usize,
    /// The distillation loss of the teacher-guided score.
    pub kd_loss: LossConfig,
    /// The data (defaults: the checkpoint's).
    pub data: DataSpec,
    /// The output checkpoint.
    pub out: PathBuf,
}

/// What a structured pruning job leaves.
#[derive(Clone, Debug)]
pub struct StructuredOutcome {
    /// Per group: name, channels before, channels after.
    pub widths: Vec<(String, usize, usize)>,
    /// Parameters before and after.
    pub params: (usize, usize),
    /// Multiply–accumulates of one sample's forward pass, before and after.
    pub macs: (u64, u64),
    /// Scoring-and-removal rounds (1 without a MAC target).
    pub rounds: usize,
    /// Test accuracy of the smaller model (before any retraining).
    pub accuracy: f64,
    /// The checkpoint written.
    pub out: PathBuf,
}

/// Scores the declared channel groups, keeps the channels `ratios` say,
/// removes the others and saves the smaller model.
pub fn prune_structured(job: &StructuredPruneJob, device: &Device) -> Result<StructuredOutcome> {
    crate::files::check_out_file(&job.out)?;
    let (model, _, ckpt) = load_model(&job.checkpoint, device)?;
    let groups = channel_groups(&ckpt.config)?;
    // the ratios, names and target are checked before any data is read
    job.ratios.validate(&groups)?;
    if let Some(t) = job.target_macs {
        anyhow::ensure!(
            t.is_finite() && t > 0.0 && t < 1.0,
            "--target-macs must be a fraction in (0, 1) of the network's MACs, got {t}"
        );
        anyhow::ensure!(
            job.step.is_finite() && job.step > 0.0 && job.step < 1.0,
            "--step must be in (0, 1), got {}",
            job.step
        );
    }
    let (data, seed) = job.data.load(Some(&ckpt.metadata))?;
    check_fits(&model, &data, "the checkpoint")?;
    let teacher = match (&job.teacher, job.criterion) {
        (Some(p), _) => Some(load_teacher(p, &data, seed, device)?),
        (None, GroupCriterion::TeacherGuided) => {
            anyhow::bail!("--criterion teacher-guided needs --teacher")
        }
        (None, _) => None,
    };
    let full_macs = ckpt.config.macs();
    // the fewest channels each group may keep over all rounds: at most
    // --max-ratio of its original width gone, at least one channel kept,
    // rounded up to a multiple of --round-to
    let floor: BTreeMap<String, usize> = groups
        .iter()
        .map(|g| {
            let most = (job.ratios.max_ratio * g.channels as f64).floor() as usize;
            let least = (g.channels - most.min(g.channels - 1)).max(1);
            let round = job.ratios.round_to.max(1);
            (
                g.name.clone(),
                (least.div_ceil(round) * round).min(g.channels),
            )
        })
        .collect();
    let (mut current, mut current_model) = (ckpt.clone(), model);
    let mut rounds = 0;
    loop {
        let groups_now = channel_groups(&current.config)?;
        let scores = group_scores(
            job,
            &groups_now,
            &current_model,
            teacher.as_ref(),
            &data,
            seed,
        )?;
        let ratios = match job.target_macs {
            // small steps, each a fraction of the channels left — per
            // group at least --round-to channels, or rounding up would
            // undo the step
            Some(_) => {
                let round = job.ratios.round_to;
                let per_group: BTreeMap<String, f64> = if round > 1 && !job.ratios.global {
                    groups_now
                        .iter()
                        .filter(|g| g.channels > round)
                        .map(|g| {
                            (
                                g.name.clone(),
                                job.step.max(round as f64 / g.channels as f64),
                            )
                        })
                        .filter(|(_, r)| *r < 1.0)
                        .collect()
                } else {
                    BTreeMap::new()
                };
                let most = per_group.values().fold(job.step, |m, r| m.max(*r));
                GroupRatios {
                    ratio: job.step,
                    max_ratio: most,
                    per_group,
                    ..job.ratios.clone()
                }
            }
            None => job.ratios.clone(),
        };
        let mut kept = prune_core::group::select_channels(&groups_now, &scores, &ratios)?;
        for g in &groups_now {
            // never below the floor of the group's original width
            let k = kept
                .get_mut(&g.name)
                .expect("select_channels keeps every group");
            if k.len() < floor[&g.name] {
                let s = &scores[&g.name];
                let mut best: Vec<usize> = (0..g.channels).collect();
                best.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
                best.truncate(floor[&g.name].min(g.channels));
                best.sort_unstable();
                *k = best;
            }
        }
        let next = remove_channels(&current, &kept)?;
        let progressed = next.config.macs() < current.config.macs();
        current = next;
        current_model = current.to_model(device)?;
        rounds += 1;
        let Some(target) = job.target_macs else { break };
        let reached = current.config.macs() as f64 / full_macs as f64;
        if reached <= target {
            break;
        }
        anyhow::ensure!(
            progressed && rounds < 200,
            "--target-macs {target}: stopped at {reached:.3} of the MACs after {rounds} rounds; \
             every group is at its floor (--max-ratio, --round-to, at least one channel kept)"
        );
    }
    let accuracy = kd_core::evaluate(&current_model, &data.test_view(), 512)?;
    let count = |c: &kdprune_models::ModelConfig| -> usize {
        c.param_specs()
            .iter()
            .map(|s| s.shape.iter().product::<usize>())
            .sum()
    };
    let now: BTreeMap<String, usize> = current.config.width_groups().into_iter().collect();
    let widths = groups
        .iter()
        .map(|g| (g.name.clone(), g.channels, now[&g.name]))
        .collect();
    let mut meta = metadata(data.name, seed, "structured", &data.norm);
    meta.insert(
        "structured_criterion".into(),
        format!("{:?}", job.criterion),
    );
    save_model(&job.out, &current_model, None, meta)?;
    Ok(StructuredOutcome {
        widths,
        params: (count(&ckpt.config), count(&current.config)),
        macs: (full_macs, current.config.macs()),
        rounds,
        accuracy,
        out: job.out.clone(),
    })
}

/// Each group's channel scores for `model` under the job's criterion.
fn group_scores(
    job: &StructuredPruneJob,
    groups: &[prune_core::group::ChannelGroup],
    model: &kdprune_models::Model,
    teacher: Option<&kdprune_models::Model>,
    data: &crate::data::Data,
    seed: u64,
) -> Result<BTreeMap<String, Vec<f64>>> {
    let tensors = model.tensors()?;
    let settings = ScoringSettings {
        batches: job.score_batches,
        batch_size: job.batch_size,
        seed,
        kd_loss: job.kd_loss,
        self_distill: SelfDistillConfig::default(),
    };
    let weights: Vec<String> = groups
        .iter()
        .flat_map(|g| g.members.iter())
        .filter(|m| m.role == prune_core::group::Role::Weight)
        .map(|m| m.tensor.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut scores = BTreeMap::new();
    match job.criterion {
        GroupCriterion::TeacherGuided => {
            // the paper's per-weight score, summed over each group
            let tg = importance::by_name("teacher-guided")?;
            let per_weight =
                crate::scoring::scores(tg.as_ref(), model, teacher, data, &weights, settings)?;
            for g in groups {
                scores.insert(g.name.clone(), g.sum_scores(&per_weight)?);
            }
        }
        GroupCriterion::Taylor => {
            anyhow::ensure!(
                job.score_batches > 0,
                "--score-batches must be ≥ 1 for taylor"
            );
            let grads = summed_gradients(
                model,
                None,
                data,
                &weights,
                settings,
                Loss::CrossEntropy,
                job.score_batches,
            )?;
            for g in groups {
                scores.insert(
                    g.name.clone(),
                    g.scores(job.criterion, &tensors, Some(&grads))?,
                );
            }
        }
        criterion => {
            for g in groups {
                scores.insert(g.name.clone(), g.scores(criterion, &tensors, None)?);
            }
        }
    }
    Ok(scores)
}

/// The gradients of `loss` for `weights`, summed over the first `batches`
/// calibration batches.
fn summed_gradients(
    model: &kdprune_models::Model,
    teacher: Option<&kdprune_models::Model>,
    data: &crate::data::Data,
    weights: &[String],
    settings: ScoringSettings,
    loss: Loss,
    batches: usize,
) -> Result<prune_core::NamedTensors> {
    let mut ctx = ModelScoring::new(model, teacher, data, weights, settings)?;
    let mut sum: Option<prune_core::NamedTensors> = None;
    for b in 0..batches {
        let g = prune_core::ScoringContext::gradient(&mut ctx, loss, b)?;
        sum = Some(match sum {
            None => g,
            Some(s) => s
                .into_iter()
                .map(|(n, t)| {
                    let add = (&t + &g[&n])?;
                    Ok((n, add))
                })
                .collect::<Result<_>>()?,
        });
    }
    Ok(sum.unwrap_or_default())
}

/// `kdprune prune --structured blocks`: the least important residual
/// blocks removed whole.
#[derive(Debug)]
pub struct BlockPruneJob {
    /// The checkpoint to prune.
    pub checkpoint: PathBuf,
    /// Fraction of the removable blocks to remove, in [0, 1) (rounded).
    pub ratio: f64,
    /// With a teacher, the gradient is the distillation objective's;
    /// without, cross-entropy's.
    pub teacher: Option<PathBuf>,
    /// Calibration batches.
    pub score_batches: usize,
    /// Samples per calibration batch.
    pub batch_size: usize,
    /// The distillation loss (with a teacher).
    pub kd_loss: LossConfig,
    /// The data (defaults: the checkpoint's).
    pub data: DataSpec,
    /// The output checkpoint.
    pub out: PathBuf,
}

/// What block removal leaves.
#[derive(Clone, Debug)]
pub struct BlockOutcome {
    /// Every removable block with its importance (mean |g·w|), in order.
    pub scores: Vec<(String, f64)>,
    /// The blocks removed.
    pub removed: Vec<String>,
    /// Parameters before and after.
    pub params: (usize, usize),
    /// Multiply–accumulates per sample, before and after.
    pub macs: (u64, u64),
    /// Test accuracy of the shorter model (before any retraining).
    pub accuracy: f64,
    /// The checkpoint written.
    pub out: PathBuf,
}

/// Scores each removable residual block by the guide's layer importance
/// (the mean of |g·w| over its convolutions' weights), removes the lowest
/// `ratio` of them and saves the shorter network.
pub fn prune_blocks(job: &BlockPruneJob, device: &Device) -> Result<BlockOutcome> {
    crate::files::check_out_file(&job.out)?;
    anyhow::ensure!(
        job.ratio.is_finite() && (0.0..1.0).contains(&job.ratio),
        "--ratio must be in [0, 1) of the removable blocks, got {}",
        job.ratio
    );
    anyhow::ensure!(job.score_batches > 0, "--score-batches must be ≥ 1");
    let (model, _, ckpt) = load_model(&job.checkpoint, device)?;
    let blocks = removable_blocks(&ckpt.config)?;
    anyhow::ensure!(
        !blocks.is_empty(),
        "{} has no residual block with an identity shortcut left to remove",
        ckpt.config.name()
    );
    let k = (job.ratio * blocks.len() as f64).round() as usize;
    let (data, seed) = job.data.load(Some(&ckpt.metadata))?;
    check_fits(&model, &data, "the checkpoint")?;
    let teacher = match &job.teacher {
        Some(p) => Some(load_teacher(p, &data, seed, device)?),
        None => None,
    };
    let weights: Vec<String> = blocks.iter().flat_map(|(_, w)| w.iter().cloned()).collect();
    let settings = ScoringSettings {
        batches: job.score_batches,
        batch_size: job.batch_size,
        seed,
        kd_loss: job.kd_loss,
        self_distill: SelfDistillConfig::default(),
    };
    let loss = match teacher {
        Some(_) => Loss::Distillation(GradientSource::Mixture),
        None => Loss::CrossEntropy,
    };
    let grads = summed_gradients(
        &model,
        teacher.as_ref(),
        &data,
        &weights,
        settings,
        loss,
        job.score_batches,
    )?;
    let tensors = model.tensors()?;
    let scores = blocks
        .iter()
        .map(|(b, w)| {
            Ok((
                b.clone(),
                prune_core::group::block_importance(w, &tensors, &grads)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let removed = prune_core::group::select_blocks(&scores, k)?;
    let short = remove_blocks(&ckpt, &removed)?;
    let short_model = short.to_model(device)?;
    let accuracy = kd_core::evaluate(&short_model, &data.test_view(), 512)?;
    let count = |c: &kdprune_models::ModelConfig| -> usize {
        c.param_specs()
            .iter()
            .map(|s| s.shape.iter().product::<usize>())
            .sum()
    };
    let mut meta = metadata(data.name, seed, "structured", &data.norm);
    meta.insert("structured_removed_blocks".into(), removed.join(","));
    save_model(&job.out, &short_model, None, meta)?;
    Ok(BlockOutcome {
        scores,
        removed,
        params: (count(&ckpt.config), count(&short.config)),
        macs: (ckpt.config.macs(), short.config.macs()),
        accuracy,
        out: job.out.clone(),
    })
}
