//! The epoch loop: a student trained on a loss that may involve a frozen
//! teacher, with hooks around every optimizer step (the CLI uses them to
//! enforce pruning masks without kd-core knowing about masks).
//!
//! When the training inputs are not augmented (the default,
//! [`Augment::NONE`]), the frozen teacher's logits of a sample are the same in
//! every epoch: [`TeacherCache`] computes them once (and can keep them on disk
//! between runs), which halves the cost of a distillation epoch when the
//! teacher costs about what the student's forward and backward cost. With
//! augmentation (`config.augment`, drawn per batch from the run seed) the
//! teacher sees each augmented batch and nothing is cached.
//!
//! [`distill`] trains on a general [`Objective`] (logit and feature terms, e.g.
//! `ce:1 + at:1000`); [`fit`] and [`fit_with`] are [`distill`] with the
//! objective of a [`LossConfig`]. An objective with a feature term runs the
//! teacher on every batch (its features are not cached), and trains the
//! FitNets regressors, when there are any, together with the student.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var, D};
use indicatif::{ProgressBar, ProgressStyle};
use kdprune_data::{Augment, Augmenter, Batcher, Dataset, Normalization};
use kdprune_models::{Model, ModelOutput};
use serde::{Deserialize, Serialize};

use crate::losses::LossConfig;
use crate::objective::{Objective, ObjectiveLoss};
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
    /// Seed of the batch order (and, salted, of the augmentation).
    pub seed: u64,
    /// Training-set augmentation (random crop from zero padding, flips);
    /// [`Augment::NONE`] by default.
    #[serde(default)]
    pub augment: Augment,
}

impl TrainConfig {
    /// Checks the values a user can get wrong.
    pub fn validate(&self) -> Result<()> {
        check_schedule(self.batch_size, self.min_lr, &self.sgd)?;
        self.loss.validate()
    }
}

impl TrainConfig {
    /// The same run with another objective (the `loss` field is replaced).
    pub fn with_objective(&self, objective: Objective) -> DistillConfig {
        DistillConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            sgd: self.sgd.clone(),
            warmup_epochs: self.warmup_epochs,
            min_lr: self.min_lr,
            objective,
            seed: self.seed,
            augment: self.augment,
        }
    }
}

/// Everything that defines one run of [`distill`]: a [`TrainConfig`] whose loss
/// is a general [`Objective`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DistillConfig {
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
    /// The weighted loss terms.
    pub objective: Objective,
    /// Seed of the batch order, (`seed ^ REGRESSOR_SALT`) of the regressors
    /// and, salted, of the augmentation.
    pub seed: u64,
    /// Training-set augmentation; with anything but [`Augment::NONE`] the
    /// teacher sees each augmented batch, so its logits are not cached.
    #[serde(default)]
    pub augment: Augment,
}

impl DistillConfig {
    /// Checks the values a user can get wrong.
    pub fn validate(&self) -> Result<()> {
        check_schedule(self.batch_size, self.min_lr, &self.sgd)?;
        self.objective.validate()
    }
}

/// The checks [`TrainConfig`] and [`DistillConfig`] share: batch size,
/// final learning rate and optimizer settings.
fn check_schedule(batch_size: usize, min_lr: f64, sgd: &SgdConfig) -> Result<()> {
    if batch_size == 0 {
        return Err(KdError::InvalidConfig("batch size must be ≥ 1".into()));
    }
    if !(min_lr.is_finite() && min_lr >= 0.0) {
        return Err(KdError::InvalidConfig(format!(
            "min_lr must be ≥ 0, got {min_lr}"
        )));
    }
    sgd.validate()
}

impl From<&TrainConfig> for DistillConfig {
    /// The run of `config`, its [`LossConfig`] as an [`Objective`].
    fn from(config: &TrainConfig) -> Self {
        config.with_objective(Objective::from(config.loss))
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
    /// Mean of each weighted term of a general objective over the epoch's
    /// batches (empty for objectives equal to a [`LossConfig`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub terms: BTreeMap<String, f64>,
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

/// Where [`fit_with`] takes the frozen teacher's logits from.
///
/// Every variant gives the same training, bit for bit: the teacher is always
/// run on exactly `batch_size` rows (a short batch is padded), and a sample's
/// logits then do not depend on the batch it comes in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TeacherCache {
    /// Run the teacher on every batch of every epoch.
    Off,
    /// Run the teacher once over the training set before the first epoch and
    /// look each batch's logits up in that table (`N × classes` floats); not
    /// used when the inputs are augmented (the teacher then sees each batch).
    #[default]
    Memory,
    /// As [`TeacherCache::Memory`], and keep the table in
    /// `DIR/teacher-logits-<key>.safetensors`, `key` a hash of the teacher's
    /// weights, the dataset (name, sample count, pixels), the normalisation
    /// and the batch size: a later run with the same inputs loads it instead
    /// of running the teacher. A file that does not match is recomputed and
    /// replaced.
    Disk(PathBuf),
}

/// How [`fit_with`] reports and where it takes the teacher's logits from.
#[derive(Clone, Debug, Default)]
pub struct FitOptions<'a> {
    /// Prefix of the progress bar and of the per-epoch line.
    pub label: &'a str,
    /// Print the progress bar and one line per epoch to stderr.
    pub verbose: bool,
    /// Source of the teacher's logits.
    pub teacher_cache: TeacherCache,
}

/// Trains `student` (teacher frozen, used only when the loss needs it), with
/// the teacher's logits cached in memory ([`TeacherCache::Memory`]).
///
/// `label` prefixes the progress bar and the per-epoch line printed to stderr
/// when `verbose` is set. A non-finite loss stops the run with
/// [`KdError::NonFiniteLoss`] naming the epoch and step. Same as [`fit_with`]
/// with those options.
pub fn fit(
    student: &Model,
    teacher: Option<&Model>,
    data: &TrainData<'_>,
    config: &TrainConfig,
    hook: &mut dyn StepHook,
    label: &str,
    verbose: bool,
) -> Result<TrainReport> {
    let options = FitOptions {
        label,
        verbose,
        teacher_cache: TeacherCache::Memory,
    };
    fit_with(student, teacher, data, config, hook, &options)
}

/// Trains `student` (teacher frozen, used only when the loss needs it), with
/// the teacher's logits taken as `options.teacher_cache` says.
///
/// Without augmentation caching changes nothing but the time:
/// [`TeacherCache::Off`], `Memory` and `Disk` give bit-identical runs (with
/// augmentation the cache is not used).
pub fn fit_with(
    student: &Model,
    teacher: Option<&Model>,
    data: &TrainData<'_>,
    config: &TrainConfig,
    hook: &mut dyn StepHook,
    options: &FitOptions<'_>,
) -> Result<TrainReport> {
    config.validate()?;
    if config.loss.needs_teacher() && teacher.is_none() {
        return Err(KdError::InvalidConfig(format!(
            "the {} loss needs a teacher",
            config.loss.name()
        )));
    }
    distill(
        student,
        teacher,
        data,
        &DistillConfig::from(config),
        hook,
        options,
    )
}

/// Trains `student` on `config.objective` under a frozen teacher (eval mode,
/// detached; used only when a term of non-zero weight needs it).
///
/// * Objectives of logit terms only take the teacher's logits as
///   `options.teacher_cache` says; an objective with a feature term (fitnet,
///   at, rkd) runs the teacher on every batch, on exactly `batch_size` rows as
///   the cache does, so its logits are the same bits in both cases.
/// * Feature names and shapes are checked before the first step, on a probe
///   batch of two training samples ([`ObjectiveLoss::new`]): an unknown name is
///   a [`KdError::InvalidConfig`] listing the model's features.
/// * The FitNets regressors (own variables, initialised from
///   `config.seed ^ REGRESSOR_SALT`) are updated by the same optimizer as the
///   student and are not part of `student`; `hook` sees the student's
///   variables only.
/// * A non-finite loss stops the run with [`KdError::NonFiniteLoss`].
///
/// Same inputs, same seed → bit-identical results on the same machine.
pub fn distill(
    student: &Model,
    teacher: Option<&Model>,
    data: &TrainData<'_>,
    config: &DistillConfig,
    hook: &mut dyn StepHook,
    options: &FitOptions<'_>,
) -> Result<TrainReport> {
    let (label, verbose) = (options.label, options.verbose);
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
        Some(source.batch(&idx, data.norm, &device)?.0)
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
    let augmenter = Augmenter::new(config.augment, config.seed);
    let augmented = !config.augment.is_identity();
    let teacher_for_table = teacher
        .filter(|_| config.epochs > 0 && !data.train.is_empty() && !needs_features && !augmented);
    let table = match (teacher_for_table, &options.teacher_cache) {
        (Some(t), TeacherCache::Memory) => {
            Some(teacher_table(t, data, config.batch_size, &device)?)
        }
        (Some(t), TeacherCache::Disk(dir)) => Some(teacher_table_on_disk(
            t,
            data,
            config.batch_size,
            &device,
            dir,
            verbose,
        )?),
        _ => None,
    };
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
        let mut term_sums: BTreeMap<String, f64> = BTreeMap::new();
        let mut lr = config.sgd.lr;
        let batches = batcher.epoch(epoch);
        for (b, idx) in batches.iter().enumerate() {
            let (xs, ys) = if augmented {
                augmenter.batch(data.train, idx, data.norm, epoch, b, &device)?
            } else {
                data.train.batch(idx, data.norm, &device)?
            };
            let teacher_out = match (&table, teacher) {
                (Some(table), _) => {
                    let rows: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
                    Some(ModelOutput {
                        logits: table.index_select(&Tensor::new(rows, &device)?, 0)?,
                        features: Vec::new(),
                    })
                }
                (None, Some(t)) => Some(teacher_output(t, &xs, config.batch_size, needs_features)?),
                (None, None) => None,
            };
            let student_out = student.forward_t(&xs, true)?;
            let parts = loss_fn.loss(&student_out, teacher_out.as_ref(), &ys, epoch + 1, true)?;
            let loss = parts.total;
            let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
            if !value.is_finite() {
                bar.finish_and_clear();
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
            hook.after_step(&vars, &info)?;
            loss_sum += value as f64;
            step += 1;
            bar.set_message(format!("loss {value:.4}"));
            bar.inc(1);
        }
        bar.finish_and_clear();
        let test_accuracy = evaluate(student, data.test, data.norm, 512)?;
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
        if verbose {
            let terms: Vec<String> = stats
                .terms
                .iter()
                .map(|(k, v)| format!("{k} {v:.4}"))
                .collect();
            let terms = if terms.is_empty() {
                String::new()
            } else {
                format!(" ({})", terms.join(", "))
            };
            eprintln!(
                "  [{label}] epoch {}/{}  loss {:.4}{terms}  test acc {:.2}%  lr {:.4}  ({:.1}s)",
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

/// The teacher's output on `xs` (eval mode, detached), run on exactly `rows`
/// rows so that a sample's logits do not depend on the batch it is in; the
/// features are kept only when `with_features` is set.
fn teacher_output(
    teacher: &Model,
    xs: &Tensor,
    rows: usize,
    with_features: bool,
) -> Result<ModelOutput> {
    let n = xs.dim(0)?;
    let out = if n >= rows {
        teacher.forward_t(xs, false)?
    } else {
        let mut dims = xs.dims().to_vec();
        dims[0] = rows - n;
        let padding = Tensor::zeros(dims, xs.dtype(), xs.device())?;
        teacher.forward_t(&Tensor::cat(&[xs, &padding], 0)?, false)?
    };
    let cut = |t: &Tensor| -> Result<Tensor> {
        Ok(if n >= rows {
            t.detach()
        } else {
            t.narrow(0, 0, n)?.detach()
        })
    };
    let features = if with_features {
        out.features
            .iter()
            .map(|(name, t)| Ok((name.clone(), cut(t)?)))
            .collect::<Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    Ok(ModelOutput {
        logits: cut(&out.logits)?,
        features,
    })
}

/// The teacher's logits of `xs` (eval mode, detached), the teacher always
/// run on exactly `rows` rows: a shorter batch is padded with zero images
/// and the padding's logits dropped.
///
/// The matrix kernels pick their blocking and summation order from the
/// matrix sizes, so the same sample gives other bits in a batch of another
/// size; at a fixed size, a row's result does not depend on the other rows.
/// Padding makes a sample's logits the same in every batch, which is what
/// lets [`TeacherCache`] reproduce the uncached run exactly.
fn teacher_logits(teacher: &Model, xs: &Tensor, rows: usize) -> Result<Tensor> {
    Ok(teacher_output(teacher, xs, rows, false)?.logits)
}

/// The teacher's logits of every training sample, `[N, classes]` in sample
/// order, computed `batch_size` samples at a time as [`teacher_logits`] does.
fn teacher_table(
    teacher: &Model,
    data: &TrainData<'_>,
    batch_size: usize,
    device: &Device,
) -> Result<Tensor> {
    let n = data.train.len();
    let mut parts = Vec::with_capacity(n.div_ceil(batch_size.max(1)));
    for start in (0..n).step_by(batch_size.max(1)) {
        let idx: Vec<usize> = (start..n.min(start + batch_size)).collect();
        let (xs, _) = data.train.batch(&idx, data.norm, device)?;
        parts.push(teacher_logits(teacher, &xs, batch_size)?);
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// Format of the on-disk table; part of the key, so a change of format
/// never reads an old file.
const TEACHER_CACHE_VERSION: u32 = 1;

/// [`teacher_table`], loaded from `dir` when a file with the same key is
/// there, else computed and written there (`NAME.tmp`, then renamed).
fn teacher_table_on_disk(
    teacher: &Model,
    data: &TrainData<'_>,
    batch_size: usize,
    device: &Device,
    dir: &Path,
    verbose: bool,
) -> Result<Tensor> {
    let key = teacher_cache_key(teacher, data, batch_size)?;
    let path = dir.join(format!(
        "teacher-logits-{:016x}.safetensors",
        fnv1a(key.as_bytes())
    ));
    let rows = data.train.len();
    if let Ok(stored) = candle_core::safetensors::load(&path, device) {
        let same_key = stored
            .get("key")
            .and_then(|k| k.to_vec1::<u8>().ok())
            .is_some_and(|k| k == key.as_bytes());
        match stored.get("logits") {
            Some(t) if same_key && t.dims().first() == Some(&rows) && t.rank() == 2 => {
                return Ok(t.clone());
            }
            _ => {
                if verbose {
                    eprintln!(
                        "  teacher cache {} does not match this run: recomputing",
                        path.display()
                    );
                }
            }
        }
    }
    let table = teacher_table(teacher, data, batch_size, device)?;
    let io = |e: std::io::Error| KdError::Other(format!("teacher cache {}: {e}", path.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("safetensors.tmp");
    let key_bytes = key.as_bytes().to_vec();
    let tensors = HashMap::from([
        ("logits".to_string(), table.to_dtype(DType::F32)?),
        (
            "key".to_string(),
            Tensor::from_vec(key_bytes.clone(), key_bytes.len(), &Device::Cpu)?,
        ),
    ]);
    candle_core::safetensors::save(&tensors, &tmp)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(table)
}

/// What the teacher's logits of this run depend on, as text: the format
/// version, hashes of the teacher's tensors (names, shapes, values) and of
/// the training pixels, the dataset's name and size, the normalisation and
/// the batch size (see [`teacher_logits`]).
fn teacher_cache_key(teacher: &Model, data: &TrainData<'_>, batch_size: usize) -> Result<String> {
    let mut weights = Fnv1a::new();
    for (name, t) in teacher
        .tensors()
        .map_err(|e| KdError::Other(e.to_string()))?
    {
        weights.write(name.as_bytes());
        for d in t.dims() {
            weights.write(&(*d as u64).to_le_bytes());
        }
        for v in t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()? {
            weights.write(&v.to_le_bytes());
        }
    }
    let ds = data.train;
    let norm: Vec<String> = data
        .norm
        .mean
        .iter()
        .chain(&data.norm.std)
        .map(|v| format!("{:08x}", v.to_bits()))
        .collect();
    Ok(format!(
        "v{TEACHER_CACHE_VERSION} teacher={:016x} dataset={:?} samples={} shape={}x{}x{} \
         max={:08x} pixels={:016x} norm={} batch={batch_size}",
        weights.finish(),
        ds.name,
        ds.len(),
        ds.channels,
        ds.height,
        ds.width,
        ds.max_value.to_bits(),
        fnv1a(&ds.images),
        norm.join(","),
    ))
}

/// 64-bit FNV-1a, a stable hash (unlike `std`'s, whose algorithm may change
/// between releases) for the names of cache files.
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = Fnv1a::new();
    h.write(bytes);
    h.finish()
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
    Ok((scalar, gradients_of(student, &value)?))
}

/// `∂value/∂θ` of every trainable parameter of `model`, by name (zeros where
/// the graph does not reach a parameter).
pub fn gradients_of(model: &Model, value: &Tensor) -> Result<BTreeMap<String, Tensor>> {
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
