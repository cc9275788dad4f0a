//! Scoring a model with any prune-core criterion: [`ModelScoring`] is the
//! [`ScoringContext`] of kdprune's models and datasets (calibration batches,
//! the losses whose gradients the criteria ask for), and [`prune_masks`] /
//! [`scores`] are the one entry point for every criterion, built-in or not.
//!
//! Scoring never changes the caller's model: gradients are taken on a copy
//! (train-mode forwards move batch-norm running statistics).

use anyhow::Result;
use candle_core::{DType, Tensor};
use kd_core::{LossConfig, SelfDistillConfig};
use kdprune_data::{Augment, Augmenter, DatasetName};
use kdprune_models::Model;
use prune_core::{
    GradientSource, Importance, Loss, MaskSet, NamedTensors, PruneError, Scope, Scores,
    ScoringContext,
};

use crate::checkpoints::select;
use crate::data::{AugmentChoice, Data};
use crate::training::salt;

/// The most passes over the training set the calibration batches may make:
/// scores settle long before, and the batch list is held in memory.
pub const MAX_SCORE_PASSES: usize = 100;

/// How a model is scored: the calibration batches and the losses.
#[derive(Clone, Debug)]
pub struct ScoringSettings {
    /// Calibration batches (the first ones of the seeded shuffled order of
    /// the training set, `seed ^ salt::SCORE`).
    pub batches: usize,
    /// Samples per calibration batch.
    pub batch_size: usize,
    /// The run seed.
    pub seed: u64,
    /// The distillation objective of [`Loss::Distillation`] (its mixture; the
    /// KD term alone is the same with α = 1).
    pub kd_loss: LossConfig,
    /// The loss of [`Loss::SelfDistillation`] (EPSD's recipe by default).
    pub self_distill: SelfDistillConfig,
}

/// One calibration batch: training-set indices and where they sit in the
/// seeded batch order (epoch, position), which also seeds their augmentation.
struct CalibrationBatch {
    idx: Vec<usize>,
    epoch: usize,
    step: usize,
    /// Inputs and labels, built on first use.
    tensors: Option<(Tensor, Tensor)>,
}

/// kdprune's side of scoring: a model, an optional frozen teacher and a
/// dataset, as a prune-core [`ScoringContext`].
pub struct ModelScoring<'a> {
    /// The student's architecture and device, to build the scratch copy.
    config: kdprune_models::ModelConfig,
    device: candle_core::Device,
    teacher: Option<&'a Model>,
    data: &'a Data,
    prunable: Vec<String>,
    settings: ScoringSettings,
    /// The prunable weights being scored.
    weights: NamedTensors,
    /// Every tensor of the student as it came (for the gradients at moved
    /// weights, and the absolute values of SynFlow).
    original: NamedTensors,
    /// The copy gradients are taken on, made on first use.
    scratch: Option<Model>,
    /// `|t|` of every float tensor of `original` (SynFlow), made on first use.
    absolute: Option<NamedTensors>,
    /// The prunable weights set last by `set_weights` (none: `original`'s).
    moved: Option<NamedTensors>,
    /// Whether the scratch copy holds the linearised network of the
    /// synaptic flow, to be reloaded before any other gradient.
    linearised: bool,
    batches: Vec<CalibrationBatch>,
}

impl<'a> ModelScoring<'a> {
    /// The context of `student`'s weights named `prunable`, scored on
    /// `data` (and under `teacher` where a loss needs it). The context keeps
    /// a copy of the student's tensors: the student itself is not borrowed.
    pub fn new(
        student: &Model,
        teacher: Option<&'a Model>,
        data: &'a Data,
        prunable: &[String],
        settings: ScoringSettings,
    ) -> Result<Self> {
        anyhow::ensure!(
            settings.batches == 0 || !data.split.train.is_empty(),
            "dataset `{}` has no training samples to score on",
            data.name
        );
        let n = data.split.train.len();
        let per_batch = settings.batch_size.min(n).max(1);
        anyhow::ensure!(
            settings.batches.saturating_mul(per_batch) <= MAX_SCORE_PASSES.saturating_mul(n.max(1)),
            "--score-batches {} at batch size {} would score more than {MAX_SCORE_PASSES} passes over the {n} training samples; use at most {}",
            settings.batches,
            settings.batch_size,
            MAX_SCORE_PASSES * n.max(1) / per_batch
        );
        let original = student.tensors()?;
        let weights = select(&original, prunable)?;
        let batches = calibration_order(data, &settings);
        Ok(Self {
            config: student.config().clone(),
            device: student.device().clone(),
            teacher,
            data,
            prunable: prunable.to_vec(),
            settings,
            weights,
            original,
            scratch: None,
            absolute: None,
            moved: None,
            linearised: false,
            batches,
        })
    }

    /// [`ModelScoring::new`] for `criterion`, once [`check_inputs`] has
    /// found what it needs.
    pub fn checked(
        criterion: &dyn Importance,
        student: &Model,
        teacher: Option<&'a Model>,
        data: &'a Data,
        prunable: &[String],
        settings: ScoringSettings,
    ) -> Result<Self> {
        check_inputs(criterion, teacher.is_some(), &settings)?;
        Self::new(student, teacher, data, prunable, settings)
    }

    /// The copy of the student gradients are taken on.
    fn scratch(&mut self) -> Result<&Model> {
        if self.scratch.is_none() {
            let copy = Model::new(self.config.clone(), 0, &self.device)?;
            copy.load_tensors(&self.original)?;
            self.scratch = Some(copy);
        }
        Ok(self.scratch.as_ref().expect("set above"))
    }

    /// Inputs and labels of calibration batch `b`.
    fn batch(&mut self, b: usize) -> Result<(Tensor, Tensor)> {
        let device = self.device.clone();
        let (data, cal) = (self.data, &mut self.batches[b]);
        if cal.tensors.is_none() {
            cal.tensors = Some(data.split.train.batch(&cal.idx, &data.norm, &device)?);
        }
        Ok(cal.tensors.clone().expect("set above"))
    }

    /// Loads `original`, with the prunable weights set last, into the
    /// scratch copy.
    fn load_weights(&mut self) -> Result<()> {
        let mut all = self.original.clone();
        if let Some(moved) = &self.moved {
            all.extend(moved.iter().map(|(n, t)| (n.clone(), t.clone())));
        }
        self.scratch()?.load_tensors(&all)?;
        self.linearised = false;
        Ok(())
    }

    fn gradient_of(&mut self, loss: Loss, b: usize) -> Result<NamedTensors> {
        anyhow::ensure!(
            b < self.batches.len(),
            "calibration batch {b} of {}",
            self.batches.len()
        );
        if self.linearised {
            self.load_weights()?;
        }
        let (xs, ys) = self.batch(b)?;
        let grads = match loss {
            Loss::CrossEntropy => self.loss_gradient(&xs, &ys, LossConfig::CrossEntropy)?,
            Loss::Distillation(source) => {
                let loss = match source {
                    GradientSource::Mixture => self.settings.kd_loss,
                    GradientSource::Kd => self.settings.kd_loss.with_alpha(1.0),
                    GradientSource::Ce => LossConfig::CrossEntropy,
                };
                anyhow::ensure!(
                    self.teacher.is_some() || !loss.needs_teacher(),
                    "the teacher-guided score needs a teacher (--teacher CKPT)"
                );
                self.loss_gradient(&xs, &ys, loss)?
            }
            Loss::SelfDistillation => {
                let cfg = self.settings.self_distill;
                cfg.validate()?;
                let view = Augmenter::new(
                    self_distill_view(self.data.name),
                    self.settings.seed ^ salt::SCORE,
                );
                let (data, cal) = (self.data, &self.batches[b]);
                let device = self.device.clone();
                let (xv, _) = view.batch(
                    &data.split.train,
                    &cal.idx,
                    &data.norm,
                    cal.epoch,
                    cal.step,
                    &device,
                )?;
                let scratch = self.scratch()?;
                let view_logits = scratch.forward_t(&xv, true)?.logits.detach();
                let logits = scratch.forward_t(&xs, true)?.logits;
                let value = kd_core::losses::self_distill_loss(&logits, &view_logits, &ys, &cfg)?;
                check_finite(&value)?;
                kd_core::gradients_of(scratch, &value)?
            }
        };
        select(&grads, &self.prunable)
    }

    /// `∂L/∂θ` of every parameter of the scratch copy on one batch.
    fn loss_gradient(
        &mut self,
        xs: &Tensor,
        ys: &Tensor,
        loss: LossConfig,
    ) -> Result<NamedTensors> {
        let teacher = self.teacher;
        let scratch = self.scratch()?;
        let teacher = teacher.map(|t| t as &dyn kd_core::Network);
        Ok(kd_core::loss_gradients(scratch, teacher, xs, ys, &loss)?.1)
    }

    fn flow_gradient(&mut self, linear: &NamedTensors) -> Result<NamedTensors> {
        if self.absolute.is_none() {
            let absolute = self
                .original
                .iter()
                .map(|(n, t)| {
                    let t = if t.dtype().is_float() {
                        t.abs()?
                    } else {
                        t.clone()
                    };
                    Ok((n.clone(), t))
                })
                .collect::<Result<NamedTensors>>()?;
            self.absolute = Some(absolute);
        }
        let mut values = self.absolute.clone().expect("set above");
        values.extend(linear.iter().map(|(n, t)| (n.clone(), t.clone())));
        let (c, h, w) = self.data.input_shape();
        self.linearised = true;
        let scratch = self.scratch()?;
        scratch.load_tensors(&values)?;
        let ones = Tensor::ones((1, c, h, w), DType::F32, scratch.device())?;
        let flow = scratch.forward_t(&ones, false)?.logits.sum_all()?;
        let value = flow.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        anyhow::ensure!(
            value.is_finite(),
            "the synaptic flow is {value}: a deep network can overflow f32 in the linearised forward pass"
        );
        let grads = kd_core::gradients_of(scratch, &flow)?;
        select(&grads, &self.prunable)
    }
}

/// An error unless the scalar `value` is finite.
fn check_finite(value: &Tensor) -> Result<()> {
    let scalar = value.to_dtype(DType::F32)?.to_scalar::<f32>()?;
    anyhow::ensure!(scalar.is_finite(), "the scoring objective is {scalar}");
    Ok(())
}

impl ScoringContext for ModelScoring<'_> {
    fn weights(&self) -> prune_core::Result<NamedTensors> {
        Ok(self.weights.clone())
    }

    fn seed(&self) -> u64 {
        self.settings.seed
    }

    fn batches(&self) -> usize {
        self.batches.len()
    }

    fn gradient(&mut self, loss: Loss, batch: usize) -> prune_core::Result<NamedTensors> {
        self.gradient_of(loss, batch).map_err(PruneError::external)
    }

    fn set_weights(&mut self, values: &NamedTensors) -> prune_core::Result<()> {
        self.moved = Some(values.clone());
        self.load_weights().map_err(PruneError::external)
    }

    fn synaptic_flow_gradient(
        &mut self,
        linear: &NamedTensors,
    ) -> prune_core::Result<NamedTensors> {
        self.flow_gradient(linear).map_err(PruneError::external)
    }
}

/// The first `settings.batches` batches of the seeded shuffled order of the
/// training set (epochs follow one another when one is not enough): the
/// batches every data-driven criterion scores on.
fn calibration_order(data: &Data, settings: &ScoringSettings) -> Vec<CalibrationBatch> {
    let batcher = kd_core::Batcher::new(
        data.split.train.len(),
        settings.batch_size,
        true,
        settings.seed ^ salt::SCORE,
    );
    let mut out = Vec::with_capacity(settings.batches);
    let mut epoch = 0;
    while out.len() < settings.batches && !batcher.is_empty() {
        for (step, idx) in batcher.epoch(epoch).into_iter().enumerate() {
            if out.len() == settings.batches {
                break;
            }
            out.push(CalibrationBatch {
                idx,
                epoch,
                step,
                tensors: None,
            });
        }
        epoch += 1;
    }
    out
}

/// The second view self-distillation compares against: the dataset's
/// training augmentation (crop-flip on the natural-image datasets), and a
/// random shift of up to one pixel where that is none (digits, the MNISTs),
/// since an identical view leaves the KL term without gradient.
pub fn self_distill_view(name: DatasetName) -> Augment {
    match AugmentChoice::Auto.resolve(name) {
        a if a.is_identity() => Augment {
            pad: 1,
            flip: false,
        },
        a => a,
    }
}

/// Checks that `criterion` can run with what it is given: a teacher when it
/// needs one, calibration batches when it reads data.
pub fn check_inputs(
    criterion: &dyn Importance,
    teacher: bool,
    settings: &ScoringSettings,
) -> Result<()> {
    let needs = criterion.needs();
    anyhow::ensure!(
        !needs.teacher || teacher,
        "the {} score needs a teacher (--teacher CKPT)",
        criterion.name()
    );
    // With cross-entropy as its distillation loss the score would be SNIP's.
    anyhow::ensure!(
        !needs.teacher || settings.kd_loss.needs_teacher(),
        "the {} score needs a distillation loss (kd or ca-kld), not {}",
        criterion.name(),
        settings.kd_loss.name()
    );
    anyhow::ensure!(
        !needs.data || settings.batches > 0,
        "--score-batches must be ≥ 1 for the {} criterion",
        criterion.name()
    );
    Ok(())
}

/// The masks `criterion` prunes at `sparsity` under `scope`, among the
/// weights `kept` keeps, of `student`'s weights named `prunable` (see
/// [`Importance::prune`]): the one scoring dispatch of every command.
#[allow(clippy::too_many_arguments)]
pub fn prune_masks(
    criterion: &dyn Importance,
    student: &Model,
    teacher: Option<&Model>,
    data: &Data,
    prunable: &[String],
    settings: ScoringSettings,
    sparsity: f64,
    scope: Scope,
    kept: &MaskSet,
) -> Result<MaskSet> {
    let mut ctx = ModelScoring::checked(criterion, student, teacher, data, prunable, settings)?;
    Ok(criterion.prune(&mut ctx, sparsity, scope, kept)?)
}

/// The scores of `criterion` for `student`'s weights named `prunable`.
pub fn scores(
    criterion: &dyn Importance,
    student: &Model,
    teacher: Option<&Model>,
    data: &Data,
    prunable: &[String],
    settings: ScoringSettings,
) -> Result<Scores> {
    let mut ctx = ModelScoring::checked(criterion, student, teacher, data, prunable, settings)?;
    Ok(criterion.score(&mut ctx)?)
}
