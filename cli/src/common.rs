//! Composition shared by the subcommands: data and models from names,
//! checkpoints with metadata, mask enforcement as a training hook, scoring.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use kd_core::{LossConfig, SelfDistillConfig, StepHook, StepInfo, TrainConfig, TrainData};
use kdprune_data::{Augment, Augmenter, Batcher, DatasetName, HubOptions, Normalization, Split};
use kdprune_models::checkpoint::{self, Checkpoint};
use kdprune_models::{Model, ModelConfig};
use prune_core::importance::{self, Criterion, SaliencyAccumulator};
use prune_core::{MaskSet, NamedTensors, ParamFilter, Scores};
use serde::{Deserialize, Serialize};

static DEVICE: std::sync::OnceLock<Device> = std::sync::OnceLock::new();

/// Parses `cpu`, `cuda`, `cuda:N` or `metal` into a device.
pub fn parse_device(spec: &str) -> Result<Device> {
    let spec = spec.trim().to_ascii_lowercase();
    let device = match spec.as_str() {
        "cpu" => Device::Cpu,
        "metal" => Device::new_metal(0)
            .context("cannot open the Metal device (build with `--features metal` on macOS)")?,
        _ => {
            let ordinal = match spec.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse::<usize>().ok())
                    .with_context(|| format!("bad device `{spec}`: expected cuda or cuda:N"))?,
                None => {
                    anyhow::bail!("unknown device `{spec}`: expected cpu, cuda, cuda:N or metal")
                }
            };
            Device::new_cuda(ordinal).with_context(|| {
                format!("cannot open CUDA device {ordinal} (build with `--features cuda` on a machine with an NVIDIA GPU)")
            })?
        }
    };
    Ok(device)
}

/// Sets the device every command uses (from the global `--device` flag).
pub fn select_device(spec: &str) -> Result<()> {
    let device = parse_device(spec)?;
    let _ = DEVICE.set(device);
    Ok(())
}

/// The device chosen with `--device` (the CPU when none was set).
pub fn device() -> Device {
    DEVICE.get().cloned().unwrap_or(Device::Cpu)
}

/// Salts that give independent random streams from one run seed.
pub const TEACHER_SALT: u64 = 0x7EAC_4E50;
pub const STUDENT_SALT: u64 = 0x57D0_E170;
pub const SCORE_SALT: u64 = 0x5C0E_0000;

/// A dataset split with its normalisation (fitted on the training part).
pub struct Data {
    pub name: DatasetName,
    pub split: Split,
    pub norm: Normalization,
}

impl Data {
    /// `(C, H, W)` of one sample.
    pub fn input_shape(&self) -> (usize, usize, usize) {
        let t = &self.split.train;
        (t.channels, t.height, t.width)
    }
    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.split.train.num_classes
    }
    /// The view `kd_core::fit` trains and evaluates on.
    pub fn train_data(&self) -> TrainData<'_> {
        TrainData {
            train: &self.split.train,
            test: &self.split.test,
            norm: &self.norm,
        }
    }
}

/// Training-set augmentation as a user picks it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AugmentChoice {
    /// `crop-flip` for the natural-image datasets (CIFAR-10/100,
    /// TinyImageNet), `none` for digits and the MNISTs (whose digits and
    /// garments are centred and not mirror-symmetric in meaning).
    #[default]
    Auto,
    /// No augmentation.
    None,
    /// Random crop from 4-pixel zero padding and random horizontal flip.
    CropFlip,
}

impl AugmentChoice {
    /// The augmentation for dataset `name`.
    pub fn resolve(self, name: DatasetName) -> Augment {
        match self {
            AugmentChoice::None => Augment::NONE,
            AugmentChoice::CropFlip => Augment::CROP_FLIP,
            AugmentChoice::Auto => match name {
                DatasetName::Cifar10 | DatasetName::Cifar100 | DatasetName::TinyImageNet => {
                    Augment::CROP_FLIP
                }
                DatasetName::Digits | DatasetName::Mnist | DatasetName::FashionMnist => {
                    Augment::NONE
                }
            },
        }
    }
}

/// Where a dataset's files come from.
#[derive(Clone, Debug, Default)]
pub enum Source {
    /// No files: only the built-in `digits` loads from here.
    #[default]
    Embedded,
    /// The published files in this folder.
    Dir(PathBuf),
    /// The dataset's Hugging Face Hub repository, through the hf-hub cache.
    Hub(HubOptions),
}

impl Source {
    /// From the data flags: `--hub` (with its cache, revision and offline
    /// switches) or `--data-dir`.
    pub fn new(data_dir: Option<&Path>, hub: Option<HubOptions>) -> Self {
        match (hub, data_dir) {
            (Some(options), _) => Source::Hub(options),
            (None, Some(dir)) => Source::Dir(dir.to_path_buf()),
            (None, None) => Source::Embedded,
        }
    }
}

/// Loads a dataset by name (the built-in `digits` needs no folder).
pub fn load_data(dataset: &str, source: &Source, seed: u64) -> Result<Data> {
    let name: DatasetName = dataset.parse()?;
    let split = match source {
        Source::Embedded => kdprune_data::load(name, None, seed),
        Source::Dir(dir) => kdprune_data::load(name, Some(dir), seed),
        Source::Hub(options) => kdprune_data::load_from_hub(name, options),
    }
    .with_context(|| match source {
        Source::Hub(_) => format!("cannot load dataset `{dataset}` from the Hub"),
        _ => format!("cannot load dataset `{dataset}`"),
    })?;
    let norm = Normalization::fit(&split.train);
    Ok(Data { name, split, norm })
}

/// A freshly initialised model of the named architecture for `data`.
pub fn new_model(name: &str, data: &Data, seed: u64, device: &Device) -> Result<Model> {
    let cfg = ModelConfig::from_name(name, data.input_shape(), data.num_classes())?;
    Ok(Model::new(cfg, seed, device)?)
}

/// A deep copy of `model` (same config, same values).
pub fn clone_model(model: &Model) -> Result<Model> {
    let copy = Model::new(model.config().clone(), 0, model.device())?;
    copy.load_tensors(&model.tensors()?)?;
    Ok(copy)
}

/// Names of the prunable weights of `cfg`, in forward order.
pub fn prunable_names(cfg: &ModelConfig, filter: &ParamFilter) -> Vec<String> {
    filter.prunable(&cfg.param_shapes())
}

/// The tensors named in `names`.
pub fn select(tensors: &NamedTensors, names: &[String]) -> Result<NamedTensors> {
    names
        .iter()
        .map(|n| {
            let t = tensors
                .get(n)
                .with_context(|| format!("model has no tensor `{n}`"))?;
            Ok((n.clone(), t.clone()))
        })
        .collect()
}

/// Measured sparsity of the prunable weights and the number of non-zero
/// parameters of the whole model.
pub fn measure(model: &Model, prunable: &[String]) -> Result<(f64, usize)> {
    let tensors = model.tensors()?;
    let report = prune_core::report::sparsity_report(&tensors, prunable, None)?;
    let mut nonzero = 0usize;
    for t in tensors.values() {
        let nz = t
            .ne(0f32)?
            .to_dtype(candle_core::DType::U32)?
            .sum_all()?
            .to_scalar::<u32>()?;
        nonzero += nz as usize;
    }
    Ok((report.global_sparsity(), nonzero))
}

/// Enforces a fixed mask around every optimizer step: gradients are masked
/// before the step (so momentum never sees a pruned coordinate) and weights
/// after it.
pub struct MaskHook<'a>(pub &'a MaskSet);

impl StepHook for MaskHook<'_> {
    fn before_step(
        &mut self,
        grads: &mut GradStore,
        vars: &[(String, Var)],
    ) -> kd_core::Result<()> {
        self.0
            .apply_to_grads(grads, vars)
            .map_err(|e| kd_core::KdError::Other(e.to_string()))
    }
    fn after_step(&mut self, vars: &[(String, Var)], _info: &StepInfo) -> kd_core::Result<()> {
        self.0
            .apply_to_vars(vars)
            .map_err(|e| kd_core::KdError::Other(e.to_string()))
    }
}

/// Metadata stored with every checkpoint.
pub fn metadata(
    dataset: DatasetName,
    seed: u64,
    stage: &str,
    norm: &Normalization,
) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("dataset".into(), dataset.to_string());
    m.insert("seed".into(), seed.to_string());
    m.insert("stage".into(), stage.into());
    if let Ok(n) = serde_json::to_string(norm) {
        m.insert("normalization".into(), n);
    }
    m
}

/// Writes `model` (and its masks) atomically.
pub fn save_model(
    path: &Path,
    model: &Model,
    masks: Option<&MaskSet>,
    meta: BTreeMap<String, String>,
) -> Result<()> {
    let ckpt = Checkpoint {
        config: model.config().clone(),
        tensors: model.tensors()?,
        masks: match masks {
            Some(m) => m.to_u8()?,
            None => BTreeMap::new(),
        },
        metadata: meta,
    };
    checkpoint::save(path, &ckpt)
        .with_context(|| format!("cannot write checkpoint {}", path.display()))
}

/// Loads a checkpoint and builds its model; also returns its masks.
pub fn load_model(path: &Path, device: &Device) -> Result<(Model, MaskSet, Checkpoint)> {
    let ckpt = checkpoint::load(path, device)
        .with_context(|| format!("cannot load checkpoint {}", path.display()))?;
    let model = ckpt.to_model(device).with_context(|| {
        format!(
            "checkpoint {} does not match its architecture",
            path.display()
        )
    })?;
    let masks = MaskSet::from_u8(&ckpt.masks, device)
        .with_context(|| format!("invalid masks in {}", path.display()))?;
    Ok((model, masks, ckpt))
}

/// Importance scores of the prunable weights of `student`.
///
/// Gradient criteria accumulate `|θ ⊙ ∂L/∂θ|` over `batches` seeded training
/// batches: SNIP with L = CE, teacher-guided with L = `kd_loss`. GraSP scores
/// `θ ⊙ H·g` from the CE gradient over the same batches ([`grasp_scores`]).
/// Every criterion keeps the highest scores: [`prune_core::select`] prunes
/// the lowest. Self-distillation (EPSD) takes its own `T` and `α`: use
/// [`self_distill_scores`]; SynFlow yields masks, not one set of scores: use
/// [`synflow_masks`].
#[allow(clippy::too_many_arguments)]
pub fn score(
    criterion: Criterion,
    student: &Model,
    teacher: Option<&Model>,
    data: &Data,
    prunable: &[String],
    kd_loss: &LossConfig,
    batches: usize,
    batch_size: usize,
    seed: u64,
) -> Result<Scores> {
    let weights = select(&student.tensors()?, prunable)?;
    let loss = match criterion {
        Criterion::Magnitude => return Ok(importance::magnitude(&weights)?),
        Criterion::Random => return Ok(importance::random(&weights, seed)?),
        Criterion::Lamp => return Ok(importance::lamp(&weights)?),
        Criterion::Grasp => {
            return grasp_scores(student, data, prunable, batches, batch_size, seed)
        }
        Criterion::SelfDistill => anyhow::bail!(
            "self-distillation scores take their own T and α (see `self_distill_scores`)"
        ),
        Criterion::Synflow => anyhow::bail!(
            "synflow prunes iteratively and yields masks, not one set of scores (see `synflow_masks`)"
        ),
        Criterion::Snip => LossConfig::CrossEntropy,
        Criterion::TeacherGuided => {
            anyhow::ensure!(
                teacher.is_some(),
                "the teacher-guided score needs a teacher (--teacher CKPT)"
            );
            *kd_loss
        }
    };
    let mut acc = SaliencyAccumulator::new();
    for b in scoring_batches(data, batches, batch_size, seed)? {
        let (xs, ys) = data
            .split
            .train
            .batch(&b.idx, &data.norm, student.device())?;
        let (_, grads) = kd_core::loss_gradients(student, teacher, &xs, &ys, &loss)?;
        acc.add_batch(&weights, &select(&grads, prunable)?)?;
    }
    Ok(acc.finish()?)
}

/// One scoring batch: training-set indices and where they sit in the seeded
/// batch order (epoch, position), which also seeds their augmentation.
struct ScoringBatch {
    idx: Vec<usize>,
    epoch: usize,
    step: usize,
}

/// The first `batches` batches of the seeded shuffled order of the training
/// set (epochs follow one another when one is not enough): the batches every
/// data-driven criterion scores on.
fn scoring_batches(
    data: &Data,
    batches: usize,
    batch_size: usize,
    seed: u64,
) -> Result<Vec<ScoringBatch>> {
    anyhow::ensure!(
        batches == 0 || !data.split.train.is_empty(),
        "dataset `{}` has no training samples to score on",
        data.name
    );
    let batcher = Batcher::new(data.split.train.len(), batch_size, true, seed ^ SCORE_SALT);
    let mut out = Vec::with_capacity(batches);
    let mut epoch = 0;
    while out.len() < batches {
        for (step, idx) in batcher.epoch(epoch).into_iter().enumerate() {
            if out.len() == batches {
                break;
            }
            out.push(ScoringBatch { idx, epoch, step });
        }
        epoch += 1;
    }
    Ok(out)
}

/// `∂value/∂θ` for each of `names` among the trainable variables of `model`
/// (zeros where the graph does not reach a variable).
fn weight_grads(model: &Model, value: &Tensor, names: &[String]) -> Result<NamedTensors> {
    let scalar = value.to_dtype(DType::F32)?.to_scalar::<f32>()?;
    anyhow::ensure!(scalar.is_finite(), "the scoring objective is {scalar}");
    select(&kd_core::gradients_of(model, value)?, names)
}

/// GraSP scores `I = θ ⊙ H·g` of the prunable weights (Wang et al. 2020).
///
/// `g` is the mean CE gradient (train-mode forward) of the prunable weights
/// over the scoring batches, `H·g` the finite difference
/// `(g(θ + εg) − g(θ)) / ε` over the same batches
/// ([`importance::hessian_gradient_product`]), with `ε = 10⁻³·‖θ‖/‖g‖` so the
/// step moves the weights by about 0.1 % ([`importance::grasp`]'s advice for
/// `f32`). [`importance::grasp`] returns the negated paper score: selection
/// prunes the lowest `I`, i.e. the highest paper score `−θ ⊙ H·g`, the
/// weights whose removal reduces gradient flow least. The gradients run on a
/// copy of `student`, whose batch-norm statistics are left untouched.
pub fn grasp_scores(
    student: &Model,
    data: &Data,
    prunable: &[String],
    batches: usize,
    batch_size: usize,
    seed: u64,
) -> Result<Scores> {
    anyhow::ensure!(
        batches > 0,
        "GraSP needs at least one scoring batch (--score-batches ≥ 1)"
    );
    // The batches are gathered once: the gradient is taken at θ and at θ + εg.
    let batches = scoring_batches(data, batches, batch_size, seed)?
        .iter()
        .map(|b| {
            Ok(data
                .split
                .train
                .batch(&b.idx, &data.norm, student.device())?)
        })
        .collect::<Result<Vec<_>>>()?;
    let scratch = clone_model(student)?;
    let mean_grad = |model: &Model| -> Result<NamedTensors> {
        let mut sum = NamedTensors::new();
        for (xs, ys) in &batches {
            let logits = model.forward_t(xs, true)?.logits;
            let loss = LossConfig::CrossEntropy.loss(&logits, None, ys)?;
            for (n, g) in weight_grads(model, &loss, prunable)? {
                let total = match sum.remove(&n) {
                    Some(s) => s.add(&g)?,
                    None => g,
                };
                sum.insert(n, total);
            }
        }
        let scale = 1.0 / batches.len() as f64;
        sum.into_iter()
            .map(|(n, s)| Ok((n, s.affine(scale, 0.0)?)))
            .collect()
    };
    let params = student.tensors()?;
    let weights = select(&params, prunable)?;
    let g = mean_grad(&scratch)?;
    let (theta_norm, g_norm) = (l2_norm(&weights)?, l2_norm(&g)?);
    anyhow::ensure!(
        g_norm > 0.0 && g_norm.is_finite(),
        "GraSP: the cross-entropy gradient of the prunable weights is {g_norm} on the scoring batches; there is no gradient flow to preserve"
    );
    let epsilon = 1e-3 * theta_norm.max(f64::MIN_POSITIVE) / g_norm;
    let hg = importance::hessian_gradient_product(&params, &g, epsilon, |shifted| {
        scratch.load_tensors(shifted)?;
        mean_grad(&scratch)
    })?;
    Ok(importance::grasp(&weights, &hg)?)
}

/// `‖t‖₂` over all tensors of `tensors`, in `f64`.
fn l2_norm(tensors: &NamedTensors) -> Result<f64> {
    let mut sq = 0f64;
    for t in tensors.values() {
        sq += t
            .to_dtype(DType::F64)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?;
    }
    Ok(sq.sqrt())
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

/// EPSD self-distillation scores `Σ_b |θ ⊙ ∂L_SD/∂θ|` over the scoring
/// batches ([`importance::self_distill`], accumulated like SNIP; Chen et al.
/// 2024), with
/// `L_SD = α·T²·KL(p_T(x̃) ‖ p_T(x)) + (1−α)·CE(x, y)`
/// ([`kd_core::losses::self_distill_loss`]): `x` is the batch, `x̃` the same
/// samples under [`self_distill_view`] (drawn from the run seed), whose
/// predictions are detached. Both forwards are in train mode, on a copy of
/// `student`.
pub fn self_distill_scores(
    student: &Model,
    data: &Data,
    prunable: &[String],
    cfg: &SelfDistillConfig,
    batches: usize,
    batch_size: usize,
    seed: u64,
) -> Result<Scores> {
    cfg.validate()?;
    anyhow::ensure!(
        batches > 0,
        "self-distillation scoring needs at least one batch (--score-batches ≥ 1)"
    );
    let scratch = clone_model(student)?;
    let weights = select(&student.tensors()?, prunable)?;
    let view = Augmenter::new(self_distill_view(data.name), seed ^ SCORE_SALT);
    let device = scratch.device();
    let mut acc = SaliencyAccumulator::new();
    for b in scoring_batches(data, batches, batch_size, seed)? {
        let ds = &data.split.train;
        let (xs, ys) = ds.batch(&b.idx, &data.norm, device)?;
        let (xv, _) = view.batch(ds, &b.idx, &data.norm, b.epoch, b.step, device)?;
        let view_logits = scratch.forward_t(&xv, true)?.logits.detach();
        let logits = scratch.forward_t(&xs, true)?.logits;
        let loss = kd_core::losses::self_distill_loss(&logits, &view_logits, &ys, cfg)?;
        acc.add_batch(&weights, &weight_grads(&scratch, &loss, prunable)?)?;
    }
    Ok(acc.finish()?)
}

/// SynFlow masks at `sparsity` after `rounds` rounds
/// ([`importance::synflow`]; Tanaka et al. 2020). Data-free: each round runs
/// a copy of `model` with every tensor replaced by its absolute value (the
/// prunable weights also masked, batch norms in eval mode on their absolute
/// running statistics, as the reference implementation's `linearize`) on one
/// all-ones input of `data`'s shape, and differentiates `R = Σ output`. The
/// masks prune exactly `round(s·n)` of the prunable weights, by one global
/// threshold per round.
pub fn synflow_masks(
    model: &Model,
    data: &Data,
    prunable: &[String],
    sparsity: f64,
    rounds: usize,
) -> Result<MaskSet> {
    let tensors = model.tensors()?;
    let weights = select(&tensors, prunable)?;
    let absolute: NamedTensors = tensors
        .iter()
        .map(|(n, t)| {
            let t = if t.dtype().is_float() {
                t.abs()?
            } else {
                t.clone()
            };
            Ok((n.clone(), t))
        })
        .collect::<Result<_>>()?;
    let scratch = clone_model(model)?;
    let (c, h, w) = data.input_shape();
    let ones = Tensor::ones((1, c, h, w), DType::F32, scratch.device())?;
    let outcome = importance::synflow(&weights, sparsity, rounds, |linear| {
        let mut values = absolute.clone();
        values.extend(linear.iter().map(|(n, t)| (n.clone(), t.clone())));
        scratch.load_tensors(&values)?;
        let flow = scratch.forward_t(&ones, false)?.logits.sum_all()?;
        weight_grads(&scratch, &flow, prunable)
    })
    .context("SynFlow failed (a deep network can overflow f32 in the linearised forward pass)")?;
    Ok(outcome.masks)
}

/// Applies `masks` to the weights of `model` (w ← w ⊙ m).
pub fn apply_masks(model: &Model, masks: &MaskSet) -> Result<()> {
    masks.apply_to_vars(&model.named_vars())?;
    Ok(())
}

/// Fails with a clear message when `model` was not built for `data`'s inputs.
pub fn check_fits(model: &Model, data: &Data, what: &str) -> Result<()> {
    let cfg = model.config();
    let expected = ModelConfig::from_name(&cfg.name(), data.input_shape(), data.num_classes())?;
    anyhow::ensure!(
        &expected == cfg,
        "{what} ({}) was built for other inputs than dataset `{}` ({:?}, {} classes)",
        cfg.name(),
        data.name,
        data.input_shape(),
        data.num_classes()
    );
    Ok(())
}

/// Loads a teacher checkpoint and checks it fits the data and its split.
pub fn load_teacher(path: &Path, data: &Data, seed: u64, device: &Device) -> Result<Model> {
    let (teacher, _, ckpt) = load_model(path, device)?;
    check_fits(&teacher, data, "the teacher")?;
    check_same_split(&ckpt, path, data, seed)?;
    Ok(teacher)
}

/// The teacher `loss` needs, loaded from `path`; an error names the missing
/// `--teacher` when the loss needs one and none is given.
pub fn teacher_for(
    loss: &LossConfig,
    path: Option<&Path>,
    data: &Data,
    seed: u64,
    device: &Device,
) -> Result<Option<Model>> {
    anyhow::ensure!(
        !loss.needs_teacher() || path.is_some(),
        "--loss {} needs --teacher CKPT",
        loss.name()
    );
    path.map(|p| load_teacher(p, data, seed, device))
        .transpose()
}

/// Trains `model` (with `hook` around each step), saves it with `masks` as
/// stage `stage`, and prints the final test accuracy.
#[allow(clippy::too_many_arguments)]
pub fn train_and_save(
    model: &Model,
    teacher: Option<&Model>,
    data: &Data,
    cfg: &TrainConfig,
    hook: &mut dyn StepHook,
    masks: Option<&MaskSet>,
    stage: &str,
    seed: u64,
    out: &Path,
    verbose: bool,
) -> Result<()> {
    let report = kd_core::fit(
        model,
        teacher,
        &data.train_data(),
        cfg,
        hook,
        stage,
        verbose,
    )?;
    save_model(
        out,
        model,
        masks,
        metadata(data.name, seed, stage, &data.norm),
    )?;
    if let Some(acc) = report.final_accuracy() {
        println!("test accuracy: {acc:.4}");
    }
    println!("saved {}", out.display());
    Ok(())
}

/// Fails when a checkpoint was trained on another dataset or, for datasets
/// whose train/test split depends on the seed (digits), on another split:
/// its "test" accuracy would then include training samples.
pub fn check_same_split(ckpt: &Checkpoint, path: &Path, data: &Data, seed: u64) -> Result<()> {
    let meta = &ckpt.metadata;
    if let Some(ds) = meta.get("dataset") {
        anyhow::ensure!(
            ds == &data.name.to_string(),
            "{} was trained on `{ds}`, not on `{}`",
            path.display(),
            data.name
        );
    }
    if data.name == DatasetName::Digits {
        if let Some(s) = meta.get("seed").and_then(|s| s.parse::<u64>().ok()) {
            anyhow::ensure!(
                s == seed,
                "{} was trained on the digits split of seed {s}; pass --seed {s} (the split depends on the seed)",
                path.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kd_core::{SgdConfig, TrainConfig, TrainData};
    use prune_core::select;

    /// The real optimizer (momentum 0.9, Nesterov, weight decay) under the
    /// mask hook for 69 steps: every masked weight stays exactly 0 while the
    /// kept ones train.
    #[test]
    fn masked_weights_stay_exactly_zero_under_momentum_sgd() {
        let device = Device::Cpu;
        let data = load_data("digits", &Source::Embedded, 0).unwrap();
        let model = new_model("lenet-300-100", &data, 3, &device).unwrap();
        let prunable = prunable_names(model.config(), &ParamFilter::default());
        let scores =
            importance::random(&select(&model.tensors().unwrap(), &prunable).unwrap(), 9).unwrap();
        let masks = select::global(&scores, 0.8).unwrap();
        apply_masks(&model, &masks).unwrap();
        let before = model.tensors().unwrap();
        let cfg = TrainConfig {
            epochs: 3, // 23 steps per epoch at batch 64: 69 steps
            batch_size: 64,
            sgd: SgdConfig {
                lr: 0.1,
                momentum: 0.9,
                nesterov: true,
                weight_decay: 5e-4,
            },
            warmup_epochs: 1,
            min_lr: 0.0,
            loss: LossConfig::CrossEntropy,
            seed: 0,
            augment: kdprune_data::Augment::NONE,
        };
        let td = TrainData {
            train: &data.split.train,
            test: &data.split.test,
            norm: &data.norm,
        };
        kd_core::fit(
            &model,
            None,
            &td,
            &cfg,
            &mut MaskHook(&masks),
            "test",
            false,
        )
        .unwrap();
        let after = model.tensors().unwrap();
        for (name, mask) in masks.iter() {
            let m: Vec<f32> = mask.flatten_all().unwrap().to_vec1().unwrap();
            let w: Vec<f32> = after[name].flatten_all().unwrap().to_vec1().unwrap();
            let w0: Vec<f32> = before[name].flatten_all().unwrap().to_vec1().unwrap();
            let mut kept_moved = 0;
            for i in 0..m.len() {
                if m[i] == 0.0 {
                    // ±0 both count: the mask multiplies, so a negative weight becomes −0.
                    assert!(w[i] == 0.0, "{name}[{i}] revived: {}", w[i]);
                } else if w[i] != w0[i] {
                    kept_moved += 1;
                }
            }
            assert!(kept_moved > 0, "{name}: kept weights did not train");
        }
    }
    /// A hidden unit that is dead on every input (zero incoming weights,
    /// negative bias) makes its outgoing weights irrelevant to the loss: their
    /// gradient and `H·g` are exactly 0, and so is their GraSP score, while
    /// live weights get non-zero scores.
    #[test]
    fn grasp_scores_a_weight_without_effect_on_the_loss_zero() {
        let device = Device::Cpu;
        let data = load_data("digits", &Source::Embedded, 0).unwrap();
        let model = new_model("lenet-300-100", &data, 3, &device).unwrap();
        let mut t = model.tensors().unwrap();
        let dead = 7;
        let w1 = t["fc1.weight"].clone();
        let (h, d) = w1.dims2().unwrap();
        let keep = Tensor::ones((h, d), DType::F32, &device)
            .unwrap()
            .slice_assign(
                &[dead..dead + 1, 0..d],
                &Tensor::zeros((1, d), DType::F32, &device).unwrap(),
            )
            .unwrap();
        t.insert("fc1.weight".into(), w1.mul(&keep).unwrap());
        let mut b1: Vec<f32> = t["fc1.bias"].to_vec1().unwrap();
        b1[dead] = -1.0;
        t.insert("fc1.bias".into(), Tensor::new(b1, &device).unwrap());
        model.load_tensors(&t).unwrap();

        let prunable = prunable_names(model.config(), &ParamFilter::default());
        let scores = grasp_scores(&model, &data, &prunable, 2, 32, 0).unwrap();
        let s2: Vec<Vec<f32>> = scores["fc2.weight"].to_vec2().unwrap();
        let w2: Vec<Vec<f32>> = t["fc2.weight"].to_vec2().unwrap();
        for (row, w) in s2.iter().zip(&w2) {
            assert_ne!(w[dead], 0.0);
            assert_eq!(
                row[dead], 0.0,
                "a weight out of a dead unit scored {}",
                row[dead]
            );
        }
        let live = s2.iter().flatten().filter(|s| **s != 0.0).count();
        assert!(
            live > s2.len() * (s2[0].len() - 1) / 2,
            "only {live} non-zero scores"
        );
    }
}
