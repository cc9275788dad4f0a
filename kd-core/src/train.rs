//! The epoch loop: any [`Network`] trained on an [`Objective`] that may
//! involve a frozen teacher, with a hook around every optimizer step (a
//! pruning library enforces its masks there without kd-core knowing about
//! masks) and progress reported to a caller's [`Progress`].
//!
//! When the training batches are not augmented, the frozen teacher's logits
//! of a sample are the same in every epoch: [`TeacherCache`] computes them
//! once (and can keep them on disk between runs). An objective with a
//! feature term runs the teacher on every batch (its features are not
//! cached) and trains the FitNets regressors, when there are any, together
//! with the student.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var, D};
use serde::{Deserialize, Serialize};

use crate::batcher::Batcher;
use crate::data::{Samples, TrainData};
use crate::network::{ModelOutput, Network};
use crate::objective::{Objective, ObjectiveLoss};
use crate::optim::{Sgd, SgdConfig};
use crate::progress::{EpochStats, Progress};
use crate::schedule::LrSchedule;
use crate::teacher_cache::{build_table, teacher_output, TeacherCache};
use crate::{KdError, LossConfig, Result};

/// Everything that defines one training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Samples per optimizer step.
    pub batch_size: usize,
    /// Optimizer settings (shared by the student and the FitNets regressors).
    pub sgd: SgdConfig,
    /// Epochs of linear warm-up before the cosine decay.
    pub warmup_epochs: usize,
    /// Learning rate reached at the end of the cosine decay.
    pub min_lr: f64,
    /// The weighted loss terms (`ce:1` for plain training; a [`LossConfig`]
    /// converts with `into()`).
    pub objective: Objective,
    /// Seed of the batch order, of the training batches' augmentation
    /// ([`Samples::train_batch`]) and (`seed ^ REGRESSOR_SALT`) of the
    /// FitNets regressors.
    pub seed: u64,
}

impl Default for TrainConfig {
    /// 10 epochs of cross-entropy at batch 64 with [`SgdConfig::default`],
    /// no warm-up, cosine decay to 0, seed 0.
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 64,
            sgd: SgdConfig::default(),
            warmup_epochs: 0,
            min_lr: 0.0,
            objective: LossConfig::CrossEntropy.into(),
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// Checks the values a user can get wrong: batch size, final learning
    /// rate, optimizer settings and the objective.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(KdError::InvalidConfig("batch size must be ≥ 1".into()));
        }
        if !(self.min_lr.is_finite() && self.min_lr >= 0.0) {
            return Err(KdError::InvalidConfig(format!(
                "min_lr must be ≥ 0, got {}",
                self.min_lr
            )));
        }
        self.sgd.validate()?;
        self.objective.validate()
    }
}

/// What a hook sees after each optimizer step.
#[derive(Clone, Copy, Debug)]
pub struct StepInfo {
    /// Epoch, 0-based.
    pub epoch: usize,
    /// Optimizer step since the start of the run, 0-based.
    pub step: usize,
    /// Loss of the batch before the step.
    pub loss: f32,
    /// Learning rate used by the step.
    pub lr: f64,
}

/// Called around every optimizer step.
pub trait StepHook {
    /// After backward, before the optimizer reads the gradients.
    fn before_step(&mut self, _grads: &mut GradStore, _vars: &[(String, Var)]) -> Result<()> {
        Ok(())
    }
    /// After the optimizer has written the parameters; the hook may change
    /// them and the optimizer's state (see [`Sgd::mask_state`]).
    fn after_step(
        &mut self,
        _vars: &[(String, Var)],
        _info: &StepInfo,
        _optimizer: &mut Sgd,
    ) -> Result<()> {
        Ok(())
    }
}

/// A hook that does nothing.
pub struct NoHook;
impl StepHook for NoHook {}

/// The history of a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrainReport {
    /// One entry per epoch.
    pub epochs: Vec<EpochStats>,
}

impl TrainReport {
    /// Test accuracy after the last epoch (`None` for a run of 0 epochs).
    pub fn final_accuracy(&self) -> Option<f64> {
        self.epochs.last().map(|e| e.test_accuracy)
    }
}

/// How [`fit`] calls back: the step hook, the progress sink, and where the
/// teacher's logits come from.
pub struct FitOptions<'a> {
    /// Called around every optimizer step.
    pub hook: &'a mut dyn StepHook,
    /// Told about every step and epoch.
    pub progress: &'a mut dyn Progress,
    /// Source of the teacher's logits.
    pub teacher_cache: TeacherCache,
    /// Where to continue from: a [`ResumePoint`] an earlier, interrupted
    /// run of the same configuration saved (`None`: from the start).
    pub resume: Option<ResumePoint>,
    /// Called with the resume point at the end of every epoch but the last
    /// (the caller saves it, atomically); `None`: no resume points.
    pub on_epoch: Option<&'a mut SaveResumePoint<'a>>,
    /// Also call `on_epoch` every this many optimizer steps within an epoch
    /// (`None`: at epoch ends only).
    pub save_every: Option<usize>,
}

/// What [`FitOptions::on_epoch`] calls: saves a resume point.
pub type SaveResumePoint<'a> = dyn FnMut(&ResumePoint) -> Result<()> + 'a;

/// Everything [`fit`] carries from one epoch to the next: continuing from
/// it gives the same bits as a run that was never interrupted. The batch
/// order and the augmentation are functions of the seed and the epoch, and
/// the teacher's logits are recomputed, so no random state is needed.
#[derive(Clone, Debug)]
pub struct ResumePoint {
    /// Epochs finished.
    pub epochs_done: usize,
    /// Batches of the next epoch already trained (0 at an epoch's end).
    pub batches_done: usize,
    /// The running sums of that epoch's loss and terms over those batches.
    pub loss_sum: f64,
    /// Per term.
    pub term_sums: BTreeMap<String, f64>,
    /// Optimizer steps taken.
    pub step: usize,
    /// The student's [`Network::state`] (parameters and buffers).
    pub network: BTreeMap<String, Tensor>,
    /// The objective's own variables (FitNets regressors).
    pub objective_vars: BTreeMap<String, Tensor>,
    /// The optimizer's momentum buffers ([`Sgd::state`]).
    pub optimizer: BTreeMap<String, Tensor>,
    /// The finished epochs' figures.
    pub report: TrainReport,
}

/// Trains `student` on `config.objective` under a frozen teacher (eval mode,
/// detached; used only when a term of non-zero weight needs it).
///
/// * Objectives of logit terms only take the teacher's logits as
///   `options.teacher_cache` says (without augmentation caching changes
///   nothing but the time: [`TeacherCache::Off`], `Memory` and `Disk` give
///   bit-identical runs); an objective with a feature term runs the teacher
///   on every batch, on exactly `batch_size` rows as the cache does (or the
///   training set's size when that is smaller), so its logits are the same
///   bits in both cases.
/// * Feature names and shapes are checked before the first step, on a probe
///   batch of two training samples ([`ObjectiveLoss::new`]): an unknown name is
///   a [`KdError::InvalidConfig`] listing the model's features.
/// * The FitNets regressors (own variables, initialised from
///   `config.seed ^ REGRESSOR_SALT`) are updated by the same optimizer as the
///   student and are not part of `student`; the hook sees the student's
///   variables only.
/// * The batch order is [`Batcher`]`(n, batch_size, shuffled, config.seed)`;
///   training batches come from [`Samples::train_batch`], the test accuracy
///   of each epoch from [`evaluate`] on `data.test`.
/// * A non-finite loss stops the run with [`KdError::NonFiniteLoss`] naming
///   the epoch and step.
///
/// Same inputs, same seed → bit-identical results on the same machine.
pub fn fit(
    student: &dyn Network,
    teacher: Option<&dyn Network>,
    data: &TrainData<'_>,
    config: &TrainConfig,
    options: FitOptions<'_>,
) -> Result<TrainReport> {
    let FitOptions {
        hook,
        progress,
        teacher_cache,
        resume,
        mut on_epoch,
        save_every,
    } = options;
    config.validate()?;
    let objective = &config.objective;
    if objective.needs_teacher() && teacher.is_none() {
        return Err(KdError::InvalidConfig(format!(
            "the objective {objective} needs a teacher"
        )));
    }
    let device = student.device().clone();
    let teacher = teacher.filter(|_| objective.needs_teacher());
    let needs_features = objective.needs_features();
    let probe = if needs_features {
        let source = if data.train.is_empty() {
            data.test
        } else {
            data.train
        };
        let idx: Vec<usize> = (0..source.len().min(2)).collect();
        if idx.is_empty() {
            return Err(KdError::InvalidConfig(
                "cannot check feature pairs on an empty dataset".into(),
            ));
        }
        Some(source.batch(&idx, &device)?.0)
    } else {
        None
    };
    let mut loss_fn = ObjectiveLoss::new(objective, student, teacher, probe.as_ref(), config.seed)?;
    let vars = student.named_vars();
    let mut all_vars = vars.clone();
    all_vars.extend(loss_fn.trainable_vars());
    let mut sgd = Sgd::new(&all_vars, config.sgd.clone())?;
    let batcher = Batcher::new(data.train.len(), config.batch_size, true, config.seed);
    let steps_per_epoch = batcher.num_batches();
    let schedule = LrSchedule::Cosine {
        warmup_steps: config.warmup_epochs * steps_per_epoch,
        total_steps: config.epochs * steps_per_epoch,
        min_lr: config.min_lr,
    };
    // No table when nothing will be trained, when the teacher's features are
    // needed, or when the inputs are augmented (each batch is new).
    let augmented = data.train.is_augmented();
    // The teacher runs on batches padded to this many rows: no batch is
    // longer than the training set, so a batch size far above it does not
    // size the padding.
    let teacher_rows = config.batch_size.min(data.train.len()).max(1);
    let table = match teacher {
        Some(t) if config.epochs > 0 && !data.train.is_empty() && !needs_features && !augmented => {
            build_table(
                &teacher_cache,
                t,
                data.train,
                teacher_rows,
                &device,
                progress,
            )?
        }
        _ => None,
    };
    let mut report = TrainReport::default();
    let mut step = 0usize;
    let mut first_epoch = 0;
    let mut partial: (usize, f64, BTreeMap<String, f64>) = (0, 0.0, BTreeMap::new());
    if let Some(point) = resume {
        if point.epochs_done > config.epochs
            || point.report.epochs.len() != point.epochs_done
            || point.batches_done >= steps_per_epoch.max(1)
            || (point.batches_done > 0 && point.epochs_done == config.epochs)
        {
            return Err(KdError::InvalidConfig(format!(
                "the resume point has {} epochs done ({} reported) of a run of {}",
                point.epochs_done,
                point.report.epochs.len(),
                config.epochs
            )));
        }
        student.load_state(&point.network)?;
        let objective_vars = loss_fn.trainable_vars();
        if objective_vars.len() != point.objective_vars.len() {
            return Err(KdError::InvalidConfig(
                "the resume point's objective variables do not match this objective".into(),
            ));
        }
        for (name, var) in &objective_vars {
            let t = point.objective_vars.get(name).ok_or_else(|| {
                KdError::InvalidConfig(format!("the resume point has no `{name}`"))
            })?;
            var.set(&t.to_device(&device)?.copy()?)?;
        }
        sgd.set_state(&point.optimizer)?;
        step = point.step;
        first_epoch = point.epochs_done;
        partial = (point.batches_done, point.loss_sum, point.term_sums);
        report = point.report;
    }
    // A copy of everything `fit` carries, for `on_epoch`.
    let snapshot = |epochs_done: usize,
                    batches_done: usize,
                    loss_sum: f64,
                    term_sums: &BTreeMap<String, f64>,
                    step: usize,
                    sgd: &Sgd,
                    report: &TrainReport,
                    objective_vars: Vec<(String, Var)>|
     -> Result<ResumePoint> {
        // Copies: a variable's storage changes in place at the next step.
        let network = student
            .state()?
            .into_iter()
            .map(|(n, t)| Ok((n, t.copy()?)))
            .collect::<Result<_>>()?;
        let objective_vars = objective_vars
            .into_iter()
            .map(|(n, v)| Ok((n, v.as_tensor().copy()?)))
            .collect::<Result<_>>()?;
        Ok(ResumePoint {
            epochs_done,
            batches_done,
            loss_sum,
            term_sums: term_sums.clone(),
            step,
            network,
            objective_vars,
            optimizer: sgd.state(),
            report: report.clone(),
        })
    };
    for epoch in first_epoch..config.epochs {
        let start = Instant::now();
        progress.start_epoch(epoch + 1, config.epochs, steps_per_epoch);
        let (skip, mut loss_sum, mut term_sums) = if epoch == first_epoch {
            std::mem::take(&mut partial)
        } else {
            (0, 0.0f64, BTreeMap::new())
        };
        let mut lr = config.sgd.lr;
        let batches = batcher.epoch(epoch);
        for (b, idx) in batches.iter().enumerate().skip(skip) {
            let (xs, ys) = data
                .train
                .train_batch(idx, config.seed, epoch, b, &device)?;
            let teacher_out = match (&table, teacher) {
                (Some(table), _) => {
                    let rows: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
                    Some(ModelOutput::logits(
                        table.index_select(&Tensor::new(rows, &device)?, 0)?,
                    ))
                }
                (None, Some(t)) => Some(teacher_output(t, &xs, teacher_rows, needs_features)?),
                (None, None) => None,
            };
            let student_out = student.forward_t(&xs, true)?;
            let parts = loss_fn.loss(&student_out, teacher_out.as_ref(), &ys, epoch + 1, true)?;
            let loss = parts.total;
            let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
            if !value.is_finite() {
                progress.end_steps();
                return Err(KdError::NonFiniteLoss {
                    epoch: epoch + 1,
                    step: step + 1,
                    value,
                });
            }
            for (name, t) in &parts.terms {
                let v = t.to_dtype(DType::F32)?.to_scalar::<f32>()?;
                *term_sums.entry((*name).to_string()).or_default() += f64::from(v);
            }
            let mut grads = loss.backward()?;
            hook.before_step(&mut grads, &vars)?;
            lr = schedule.lr(config.sgd.lr, step);
            sgd.step(&grads, lr)?;
            let info = StepInfo {
                epoch,
                step,
                loss: value,
                lr,
            };
            hook.after_step(&vars, &info, &mut sgd)?;
            loss_sum += value as f64;
            step += 1;
            progress.step(value);
            if let (Some(save), Some(every)) = (on_epoch.as_mut(), save_every) {
                if every > 0 && step.is_multiple_of(every) && b + 1 < batches.len() {
                    save(&snapshot(
                        epoch,
                        b + 1,
                        loss_sum,
                        &term_sums,
                        step,
                        &sgd,
                        &report,
                        loss_fn.trainable_vars(),
                    )?)?;
                }
            }
        }
        progress.end_steps();
        let test_accuracy = evaluate(student, data.test, 512)?;
        let n_batches = batches.len().max(1) as f64;
        let stats = EpochStats {
            epoch: epoch + 1,
            train_loss: loss_sum / n_batches,
            test_accuracy,
            lr,
            seconds: start.elapsed().as_secs_f64(),
            terms: term_sums
                .into_iter()
                .map(|(k, v)| (k, v / n_batches))
                .collect(),
        };
        progress.end_epoch(&stats, config.epochs);
        report.epochs.push(stats);
        if let Some(save) = on_epoch.as_mut() {
            if epoch + 1 < config.epochs {
                save(&snapshot(
                    epoch + 1,
                    0,
                    0.0,
                    &BTreeMap::new(),
                    step,
                    &sgd,
                    &report,
                    loss_fn.trainable_vars(),
                )?)?;
            }
        }
    }
    Ok(report)
}

/// Top-1 accuracy of `model` (eval mode) on `samples`, in [0, 1], evaluated
/// `batch_size` samples at a time in sample order.
pub fn evaluate(model: &dyn Network, samples: &dyn Samples, batch_size: usize) -> Result<f64> {
    if samples.is_empty() {
        return Err(KdError::InvalidConfig(
            "cannot evaluate on an empty dataset".into(),
        ));
    }
    let batcher = Batcher::new(samples.len(), batch_size.max(1), false, 0);
    let mut correct = 0usize;
    for idx in batcher.epoch(0) {
        let (xs, ys) = samples.batch(&idx, model.device())?;
        let pred = model.forward_t(&xs, false)?.logits.argmax(D::Minus1)?;
        let hits = pred
            .eq(&ys)?
            .to_dtype(DType::U32)?
            .sum_all()?
            .to_scalar::<u32>()?;
        correct += hits as usize;
    }
    Ok(correct as f64 / samples.len() as f64)
}

/// Refreshes the running statistics of `model`'s batch norms for the
/// network as it now runs (a Once-for-All sub-network, say): training-mode
/// forward passes over `count` samples of `samples` (whole batches of
/// `batch_size`, at least one), drawn by `seed`, their outputs dropped and
/// no parameter moved.
///
/// The statistics are exponential averages (momentum 0.1 in the zoo), so
/// after `k` batches the old ones keep a weight of `0.9^k`: 2,048 samples
/// at batch 32 leave 0.9^64 ≈ 0.1 %. Returns the number of batches run.
pub fn recalibrate_batch_norm(
    model: &dyn Network,
    samples: &dyn Samples,
    count: usize,
    batch_size: usize,
    seed: u64,
) -> Result<usize> {
    if samples.is_empty() || count == 0 {
        return Err(KdError::InvalidConfig(
            "batch-norm recalibration needs at least one sample".into(),
        ));
    }
    let batch_size = batch_size.max(1);
    let batches = (count.min(samples.len()) / batch_size).max(1);
    let batcher = Batcher::new(samples.len(), batch_size, true, seed);
    for idx in batcher.epoch(0).into_iter().take(batches) {
        let (xs, _) = samples.batch(&idx, model.device())?;
        model.forward_t(&xs, true)?;
    }
    Ok(batches)
}

/// Loss value and `∂L/∂θ` of every trainable parameter of `student` on one
/// batch (train-mode forward; the teacher, when the loss needs it, in eval
/// mode). This is what importance scores such as SNIP or the teacher-guided
/// score consume. A non-finite loss is [`KdError::NonFiniteLoss`].
pub fn loss_gradients(
    student: &dyn Network,
    teacher: Option<&dyn Network>,
    xs: &Tensor,
    ys: &Tensor,
    loss: &LossConfig,
) -> Result<(f32, BTreeMap<String, Tensor>)> {
    let teacher_logits = match teacher {
        Some(t) if loss.needs_teacher() => Some(t.forward_t(xs, false)?.logits.detach()),
        _ => None,
    };
    let logits = student.forward_t(xs, true)?.logits;
    let value = loss.loss(&logits, teacher_logits.as_ref(), ys)?;
    let scalar = value.to_dtype(DType::F32)?.to_scalar::<f32>()?;
    if !scalar.is_finite() {
        return Err(KdError::NonFiniteLoss {
            epoch: 0,
            step: 0,
            value: scalar,
        });
    }
    Ok((scalar, gradients_of(student, &value)?))
}

/// `∂value/∂θ` of every trainable parameter of `model`, by name (zeros where
/// the graph does not reach a parameter).
pub fn gradients_of(model: &dyn Network, value: &Tensor) -> Result<BTreeMap<String, Tensor>> {
    let grads = value.backward()?;
    let mut out = BTreeMap::new();
    for (name, var) in model.named_vars() {
        let g = match grads.get(var.as_tensor()) {
            Some(g) => g.clone(),
            None => var.as_tensor().zeros_like()?,
        };
        out.insert(name, g);
    }
    Ok(out)
}
