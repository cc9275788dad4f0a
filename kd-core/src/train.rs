//! The epoch loop: a student trained on a loss that may involve a frozen
//! teacher, with hooks around every optimizer step (the CLI uses them to
//! enforce pruning masks without kd-core knowing about masks).

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var, D};
use indicatif::{ProgressBar, ProgressStyle};
use kdprune_data::{Batcher, Dataset, Normalization};
use kdprune_models::Model;
use serde::{Deserialize, Serialize};

use crate::losses::LossConfig;
use crate::optim::{Sgd, SgdConfig};
use crate::schedule::LrSchedule;
use crate::{KdError, Result};

/// Everything that defines one training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Samples per optimizer step.
    pub batch_size: usize,
    /// Optimizer settings.
    pub sgd: SgdConfig,
    /// Epochs of linear warm-up before the cosine decay.
    pub warmup_epochs: usize,
    /// Learning rate reached at the end of the cosine decay.
    pub min_lr: f64,
    /// The objective (CE, Hinton KD, CA-KLD).
    pub loss: LossConfig,
    /// Seed of the batch order.
    pub seed: u64,
}

impl TrainConfig {
    /// Checks the values a user can get wrong.
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
        self.loss.validate()
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
    /// After the optimizer has written the parameters.
    fn after_step(&mut self, _vars: &[(String, Var)], _info: &StepInfo) -> Result<()> {
        Ok(())
    }
}

/// A hook that does nothing.
pub struct NoHook;
impl StepHook for NoHook {}

/// Per-epoch figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochStats {
    /// Epoch, 1-based (as printed).
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Test accuracy at the end of the epoch, in [0, 1].
    pub test_accuracy: f64,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Wall time of the epoch, evaluation included.
    pub seconds: f64,
}

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

/// Data a run trains and evaluates on.
pub struct TrainData<'a> {
    /// Training set.
    pub train: &'a Dataset,
    /// Held-out set for the per-epoch accuracy.
    pub test: &'a Dataset,
    /// Normalisation applied to both.
    pub norm: &'a Normalization,
}

/// Trains `student` (teacher frozen, used only when the loss needs it).
///
/// `label` prefixes the progress bar and the per-epoch line printed to stderr
/// when `verbose` is set. A non-finite loss stops the run with
/// [`KdError::NonFiniteLoss`] naming the epoch and step.
pub fn fit(
    student: &Model,
    teacher: Option<&Model>,
    data: &TrainData<'_>,
    config: &TrainConfig,
    hook: &mut dyn StepHook,
    label: &str,
    verbose: bool,
) -> Result<TrainReport> {
    config.validate()?;
    if config.loss.needs_teacher() && teacher.is_none() {
        return Err(KdError::InvalidConfig(format!(
            "the {} loss needs a teacher",
            config.loss.name()
        )));
    }
    let vars = student.named_vars();
    let mut sgd = Sgd::new(&vars, config.sgd.clone())?;
    let batcher = Batcher::new(data.train.len(), config.batch_size, true, config.seed);
    let steps_per_epoch = batcher.num_batches();
    let schedule = LrSchedule::Cosine {
        warmup_steps: config.warmup_epochs * steps_per_epoch,
        total_steps: config.epochs * steps_per_epoch,
        min_lr: config.min_lr,
    };
    let device = student.device().clone();
    let mut report = TrainReport::default();
    let mut step = 0usize;
    for epoch in 0..config.epochs {
        let start = Instant::now();
        let bar = progress_bar(
            steps_per_epoch as u64,
            label,
            epoch + 1,
            config.epochs,
            verbose,
        );
        let mut loss_sum = 0.0f64;
        let mut lr = config.sgd.lr;
        let batches = batcher.epoch(epoch);
        for idx in &batches {
            let (xs, ys) = data.train.batch(idx, data.norm, &device)?;
            let teacher_logits = match teacher {
                Some(t) if config.loss.needs_teacher() => {
                    Some(t.forward_t(&xs, false)?.logits.detach())
                }
                _ => None,
            };
            let logits = student.forward_t(&xs, true)?.logits;
            let loss = config.loss.loss(&logits, teacher_logits.as_ref(), &ys)?;
            let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
            if !value.is_finite() {
                bar.finish_and_clear();
                return Err(KdError::NonFiniteLoss {
                    epoch: epoch + 1,
                    step: step + 1,
                    value,
                });
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
            hook.after_step(&vars, &info)?;
            loss_sum += value as f64;
            step += 1;
            bar.set_message(format!("loss {value:.4}"));
            bar.inc(1);
        }
        bar.finish_and_clear();
        let test_accuracy = evaluate(student, data.test, data.norm, 512)?;
        let stats = EpochStats {
            epoch: epoch + 1,
            train_loss: loss_sum / batches.len().max(1) as f64,
            test_accuracy,
            lr,
            seconds: start.elapsed().as_secs_f64(),
        };
        if verbose {
            eprintln!(
                "  [{label}] epoch {}/{}  loss {:.4}  test acc {:.2}%  lr {:.4}  ({:.1}s)",
                stats.epoch,
                config.epochs,
                stats.train_loss,
                100.0 * stats.test_accuracy,
                stats.lr,
                stats.seconds
            );
        }
        report.epochs.push(stats);
    }
    Ok(report)
}

fn progress_bar(len: u64, label: &str, epoch: usize, epochs: usize, verbose: bool) -> ProgressBar {
    if !verbose {
        return ProgressBar::hidden();
    }
    // Draws on stderr only when it is a terminal (indicatif hides it otherwise).
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("  {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("[{label}] epoch {epoch}/{epochs}"));
    bar
}

/// Top-1 accuracy of `model` (eval mode) on `ds`, in [0, 1].
pub fn evaluate(
    model: &Model,
    ds: &Dataset,
    norm: &Normalization,
    batch_size: usize,
) -> Result<f64> {
    if ds.is_empty() {
        return Err(KdError::InvalidConfig(
            "cannot evaluate on an empty dataset".into(),
        ));
    }
    let batcher = Batcher::new(ds.len(), batch_size.max(1), false, 0);
    let mut correct = 0usize;
    for idx in batcher.epoch(0) {
        let (xs, ys) = ds.batch(&idx, norm, model.device())?;
        let pred = model.forward_t(&xs, false)?.logits.argmax(D::Minus1)?;
        let hits = pred
            .eq(&ys)?
            .to_dtype(DType::U32)?
            .sum_all()?
            .to_scalar::<u32>()?;
        correct += hits as usize;
    }
    Ok(correct as f64 / ds.len() as f64)
}

/// Loss value and `∂L/∂θ` of every trainable parameter of `student` on one batch
/// (train-mode forward; the teacher, when the loss needs it, in eval mode).
/// This is what importance scores such as SNIP or the teacher-guided score consume.
pub fn loss_gradients(
    student: &Model,
    teacher: Option<&Model>,
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
    let grads = value.backward()?;
    let mut out = BTreeMap::new();
    for (name, var) in student.named_vars() {
        let g = match grads.get(var.as_tensor()) {
            Some(g) => g.clone(),
            None => var.as_tensor().zeros_like()?,
        };
        out.insert(name, g);
    }
    Ok((scalar, out))
}
