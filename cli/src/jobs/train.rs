//! Training jobs: a model from scratch (`train`), a student under a teacher
//! with any objective (`distill`), a pruned checkpoint under its fixed mask
//! (`retrain`), gradual magnitude pruning while fine-tuning (`compress`'s
//! `criterion = "gmp"`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use kd_core::objective::parse_feature_pairs;
use kd_core::{feature_shapes, EpochStats, LossConfig, NoHook, Objective, TermParams, TrainConfig};
use kdprune_data::Augment;
use kdprune_models::elastic::ElasticKernels;
use kdprune_models::Model;
use prune_core::schedule::{GmpPruner, GmpSchedule};
use prune_core::ParamFilter;
use serde::Serialize;

use super::{shown, DataSpec, Optim};
use crate::checkpoints::metadata;
use crate::checkpoints::{
    apply_masks, check_fits, load_model, load_teacher, new_model, prunable_names, save_model,
};
use crate::data::Data;
use crate::files::write_atomic;
use crate::method::DatasetInfo;
use crate::resume::ResumeFile;
use crate::training::{train_resumable, PruneHook};

/// A training objective as the command line gives it.
#[derive(Clone, Debug)]
pub struct ObjectiveSpec {
    /// The loss specification, e.g. `kd`, `ce:0.1,kd:0.9`, `kd+at:1000`.
    pub loss: String,
    /// Hyper-parameters of its terms.
    pub params: TermParams,
    /// Feature pairs of the feature terms (`s.NAME=t.NAME,…`), else each
    /// term's defaults.
    pub feature_pairs: Option<String>,
}

impl ObjectiveSpec {
    /// The parsed specification (feature pairs not yet resolved).
    pub fn parse(&self) -> Result<Objective> {
        let objective = Objective::parse(&self.loss, &self.params)
            .with_context(|| format!("invalid --loss `{}`", self.loss))?;
        if self.feature_pairs.is_some() && !objective.needs_features() {
            bail!(
                "--feature-pairs is used only by the feature losses fitnet, at and rkd; --loss `{}` has none",
                self.loss
            );
        }
        Ok(objective)
    }

    /// The objective for `student` on `data` and the teacher it needs, loaded
    /// from `teacher` ([`teacher_for`], [`with_feature_pairs`]).
    pub fn resolve(
        &self,
        teacher: Option<&Path>,
        student: &Model,
        data: &Data,
        seed: u64,
        device: &Device,
        verbose: bool,
    ) -> Result<(Objective, Option<Model>)> {
        let parsed = self.parse()?;
        let teacher = teacher_for(&parsed, &self.loss, teacher, data, seed, device, verbose)?;
        let objective = with_feature_pairs(
            parsed,
            self.feature_pairs.as_deref(),
            student,
            teacher.as_ref(),
            data,
        )?;
        Ok((objective, teacher))
    }
}

/// The teacher `objective` needs, loaded from `path` (checked against the
/// data and its split); an error names the missing `--teacher` when it needs
/// one and none is given. A teacher it does not use is not loaded (a note
/// says so on stderr when `verbose`).
pub fn teacher_for(
    objective: &Objective,
    loss: &str,
    path: Option<&Path>,
    data: &Data,
    seed: u64,
    device: &Device,
    verbose: bool,
) -> Result<Option<Model>> {
    if !objective.needs_teacher() {
        if let (Some(p), true) = (path, verbose) {
            eprintln!(
                "note: --loss {loss} does not use a teacher; {} is ignored",
                p.display()
            );
        }
        return Ok(None);
    }
    let Some(path) = path else {
        bail!("--loss {loss} needs a teacher: pass --teacher CKPT");
    };
    Ok(Some(load_teacher(path, data, seed, device)?))
}

/// `objective` for this student and teacher: its feature terms' pairs (those
/// of weight 0 too, which validation checks) from `feature_pairs`, the text
/// of `--feature-pairs` (checked against the models' features, found on a
/// zero batch of two samples), or each term's defaults.
pub fn with_feature_pairs(
    mut objective: Objective,
    feature_pairs: Option<&str>,
    student: &Model,
    teacher: Option<&Model>,
    data: &Data,
) -> Result<Objective> {
    if objective.terms.iter().any(|t| t.term.is_feature_term()) {
        let given = feature_pairs
            .map(parse_feature_pairs)
            .transpose()
            .context("invalid --feature-pairs")?;
        let teacher = teacher.context("the feature losses need --teacher CKPT")?;
        let (c, h, w) = data.input_shape();
        let probe = Tensor::zeros((2, c, h, w), DType::F32, student.device())?;
        let s = feature_shapes(student, &probe)?;
        let t = feature_shapes(teacher, &probe)?;
        objective.resolve_feature_pairs(given.as_deref(), &s, &t)?;
    }
    objective.validate()?;
    Ok(objective)
}

/// `kdprune train`: a model from its seeded initialisation, with a loss that
/// may involve a teacher.
#[derive(Clone, Debug)]
pub struct TrainJob {
    /// Architecture name (`lenet-300-100`, `resnet20`, …).
    pub model: String,
    /// The data.
    pub data: DataSpec,
    /// The optimisation.
    pub optim: Optim,
    /// The loss.
    pub loss: LossConfig,
    /// The teacher's checkpoint (for a distillation loss).
    pub teacher: Option<PathBuf>,
    /// A dense checkpoint of the same architecture to start from instead of
    /// the seeded initialisation (KD fine-tuning of a trained student, as
    /// `kdprune run`'s `kd_tuned` stage does).
    pub init: Option<PathBuf>,
    /// Kernel sizes drawn per batch for a model with elastic kernels
    /// (Once-for-All progressive shrinking; [`ElasticKernels`]); empty: the
    /// model as it is.
    pub elastic_kernels: Vec<usize>,
    /// The output checkpoint.
    pub out: PathBuf,
    /// Progress on stderr.
    pub verbose: bool,
    /// Continue from the resume point an interrupted run of the same
    /// settings left (a resume point is saved at the end of every epoch).
    pub resume: bool,
    /// Also save a resume point every this many optimizer steps.
    pub save_every: Option<usize>,
}

/// Salt of the elastic kernel draws' seed (the run's seed xor this).
const ELASTIC_SALT: u64 = 0x0FA0_0FA0_0FA0_0FA0;

/// What a training job leaves: the final test accuracy and the checkpoint.
#[derive(Clone, Debug)]
pub struct Trained {
    /// Test accuracy after the last epoch (none for 0 epochs).
    pub accuracy: Option<f64>,
    /// The checkpoint written.
    pub out: PathBuf,
}

/// Trains and saves the model.
pub fn train_model(job: &TrainJob, device: &Device) -> Result<Trained> {
    crate::files::check_out_file(&job.out)?;
    let (data, seed) = job.data.load(None)?;
    let objective = Objective::from(job.loss);
    let teacher = teacher_for(
        &objective,
        job.loss.name(),
        job.teacher.as_deref(),
        &data,
        seed,
        device,
        job.verbose,
    )?;
    let model = new_model(&job.model, &data, seed, device)?;
    if let Some(init) = &job.init {
        let (start, masks, _) = load_model(init, device)?;
        anyhow::ensure!(
            masks.is_empty(),
            "--init {} has masks: retrain a pruned checkpoint with kdprune retrain",
            init.display()
        );
        anyhow::ensure!(
            start.config() == model.config(),
            "--init {} holds {}, not the --model {}",
            init.display(),
            start.config(),
            model.config()
        );
        model.load_tensors(&start.tensors()?)?;
    }
    let cfg = job.optim.train_config(objective, seed);
    let views = data.views(job.optim.augment.resolve(data.name));
    let config_name = model.config().to_string();
    let mut parts: Vec<&dyn std::fmt::Debug> = vec![
        &"train",
        &cfg,
        &config_name,
        &data.name,
        &job.teacher,
        &job.init,
    ];
    if !job.elastic_kernels.is_empty() {
        parts.push(&job.elastic_kernels);
    }
    let resume = ResumeFile::beside(&job.out, fingerprint(&parts));
    let elastic = if job.elastic_kernels.is_empty() {
        None
    } else {
        Some(
            ElasticKernels::new(&model, &job.elastic_kernels, seed ^ ELASTIC_SALT)
                .context("--elastic-kernels")?,
        )
    };
    let student: &dyn kd_core::Network = match &elastic {
        Some(e) => e,
        None => &model,
    };
    let report = train_resumable(
        student,
        teacher.as_ref(),
        &views.train_data(),
        &cfg,
        &mut NoHook,
        "train",
        job.verbose,
        Some((&resume, job.resume)),
        job.save_every,
    )?;
    let mut meta = metadata(data.name, seed, "train", &data.norm);
    if !job.elastic_kernels.is_empty() {
        let sizes: Vec<String> = job.elastic_kernels.iter().map(|k| k.to_string()).collect();
        meta.insert("elastic_kernels".into(), sizes.join(","));
    }
    save_model(&job.out, &model, None, meta)?;
    resume.remove()?;
    Ok(Trained {
        accuracy: report.final_accuracy(),
        out: job.out.clone(),
    })
}

/// `kdprune retrain`: a pruned checkpoint trained under its fixed mask.
#[derive(Clone, Debug)]
pub struct RetrainJob {
    /// The pruned checkpoint (with masks).
    pub checkpoint: PathBuf,
    /// The teacher's checkpoint (for every term but ce).
    pub teacher: Option<PathBuf>,
    /// The data (defaults: the checkpoint's).
    pub data: DataSpec,
    /// The optimisation.
    pub optim: Optim,
    /// The objective.
    pub objective: ObjectiveSpec,
    /// The output checkpoint.
    pub out: PathBuf,
    /// Progress on stderr.
    pub verbose: bool,
    /// Continue from the resume point an interrupted run of the same
    /// settings left (a resume point is saved at the end of every epoch).
    pub resume: bool,
    /// Also save a resume point every this many optimizer steps.
    pub save_every: Option<usize>,
}

/// What fine-tuning a checkpoint (retraining, GMP) works on.
struct Tuning {
    model: Model,
    masks: prune_core::MaskSet,
    data: Data,
    seed: u64,
    cfg: TrainConfig,
    teacher: Option<Model>,
}

impl Tuning {
    /// The checkpoint of `job` (its masks and config checked by `check`
    /// before the data is read), its data, objective and teacher.
    fn start(
        job: &RetrainJob,
        device: &Device,
        check: impl FnOnce(&prune_core::MaskSet, &kdprune_models::ModelConfig) -> Result<()>,
    ) -> Result<Self> {
        let (model, masks, ckpt) = load_model(&job.checkpoint, device)?;
        check(&masks, &ckpt.config)?;
        let (data, seed) = job.data.load(Some(&ckpt.metadata))?;
        check_fits(&model, &data, "the checkpoint")?;
        let (objective, teacher) = job.objective.resolve(
            job.teacher.as_deref(),
            &model,
            &data,
            seed,
            device,
            job.verbose,
        )?;
        // `ce`, `kd` and `ca-kld` give the objective of their `LossConfig`, so
        // they retrain exactly as the fixed-form losses do.
        let cfg = job.optim.train_config(objective, seed);
        Ok(Self {
            model,
            masks,
            data,
            seed,
            cfg,
            teacher,
        })
    }

    /// Trains with `pruner` around every step (label `stage`), then saves
    /// the model with `masks(pruner)` and the stage's metadata.
    /// With `resumable`, a resume point is kept beside the output (a
    /// pruner whose masks change is not resumable: its state is not saved).
    fn run<P: prune_core::StepPruner>(
        self,
        job: &RetrainJob,
        stage: &str,
        mut pruner: P,
        masks: impl FnOnce(P) -> prune_core::MaskSet,
        extra: &[(&str, String)],
        resumable: bool,
    ) -> Result<Trained> {
        let views = self.data.views(job.optim.augment.resolve(self.data.name));
        let resume = ResumeFile::beside(
            &job.out,
            fingerprint(&[
                &stage,
                &self.cfg,
                &job.checkpoint,
                &self.data.name,
                &job.teacher,
            ]),
        );
        let report = train_resumable(
            &self.model,
            self.teacher.as_ref(),
            &views.train_data(),
            &self.cfg,
            &mut PruneHook(&mut pruner),
            stage,
            job.verbose,
            resumable.then_some((&resume, job.resume)),
            job.save_every,
        )?;
        let mut meta = metadata(self.data.name, self.seed, stage, &self.data.norm);
        meta.insert("loss".into(), self.cfg.objective.to_string());
        for (k, v) in extra {
            meta.insert((*k).into(), v.clone());
        }
        save_model(&job.out, &self.model, Some(&masks(pruner)), meta)?;
        resume.remove()?;
        Ok(Trained {
            accuracy: report.final_accuracy(),
            out: job.out.clone(),
        })
    }

    /// Optimizer steps of the whole run.
    fn steps(&self) -> usize {
        self.data.split.train.len().div_ceil(self.cfg.batch_size) * self.cfg.epochs
    }
}

/// Retrains with the mask enforced around every step and saves the result
/// with its masks. A structurally pruned checkpoint (channels removed, no
/// masks) is fine-tuned as it is.
pub fn retrain_checkpoint(job: &RetrainJob, device: &Device) -> Result<Trained> {
    crate::files::check_out_file(&job.out)?;
    let t = Tuning::start(job, device, |masks, config| {
        let structured = *config != config.with_default_widths();
        anyhow::ensure!(
            !masks.is_empty() || structured,
            "{} has no masks: prune it first (kdprune prune)",
            job.checkpoint.display()
        );
        Ok(())
    })?;
    apply_masks(&t.model, &t.masks)?;
    let fixed = t.masks.clone();
    t.run(job, "retrained", fixed, |m| m, &[], true)
}

/// Gradual magnitude pruning (Zhu & Gupta 2017) while fine-tuning a
/// checkpoint under any objective — with a teacher, the guide's GMP under
/// distillation. The sparsity rises from 0 to `sparsity` on
/// [`GmpSchedule::ramp`]'s cubic schedule over `ramp_fraction` of the
/// steps, the masks updated every `frequency` steps by one global magnitude
/// threshold among the weights still kept; the remaining steps train under
/// the final mask. The prunable weights are those of `kdprune prune`.
#[derive(Clone, Debug)]
pub struct GmpJob {
    /// The checkpoint to fine-tune (masks it holds are replaced), teacher,
    /// data, optimisation, objective and output, as for retraining.
    pub tune: RetrainJob,
    /// Final sparsity of the prunable weights, in [0, 1).
    pub sparsity: f64,
    /// Fraction of the steps over which the sparsity rises, in (0, 1].
    pub ramp_fraction: f64,
    /// Steps between two mask updates, ≥ 1.
    pub frequency: u64,
}

/// Runs a [`GmpJob`] and saves the fine-tuned model with its final masks.
pub fn gmp_checkpoint(job: &GmpJob, device: &Device) -> Result<Trained> {
    crate::files::check_out_file(&job.tune.out)?;
    prune_core::check_sparsity(job.sparsity)?;
    let j = &job.tune;
    let t = Tuning::start(j, device, |_, _| Ok(()))?;
    let steps = t.steps() as u64;
    let schedule = GmpSchedule::ramp(job.sparsity, steps, job.ramp_fraction, job.frequency)?;
    let prunable = prunable_names(t.model.config(), &ParamFilter::default());
    anyhow::ensure!(!prunable.is_empty(), "the model has no prunable weights");
    let pruner = GmpPruner::new(schedule, prunable);
    let extra = [("sparsity", job.sparsity.to_string())];
    t.run(j, "gmp", pruner, GmpPruner::into_masks, &extra, false)
}

/// `kdprune distill`: a fresh student trained under a frozen teacher.
#[derive(Clone, Debug)]
pub struct DistillJob {
    /// The teacher's checkpoint (needed by every term but ce).
    pub teacher: Option<PathBuf>,
    /// The student's architecture, trained from its seeded initialisation.
    pub student_model: String,
    /// The objective.
    pub objective: ObjectiveSpec,
    /// The data.
    pub data: DataSpec,
    /// The optimisation.
    pub optim: Optim,
    /// Output folder: `student.safetensors` and `report.json`.
    pub out: PathBuf,
    /// Progress on stderr.
    pub verbose: bool,
    /// Continue from the resume point an interrupted run of the same
    /// settings left (a resume point is saved at the end of every epoch).
    pub resume: bool,
    /// Also save a resume point every this many optimizer steps.
    pub save_every: Option<usize>,
}

/// `report.json` of `kdprune distill`.
#[derive(Clone, Debug, Serialize)]
pub struct DistillReport {
    /// Schema version: 2 (version 1 had the augmentation inside `config`).
    pub version: u32,
    /// `distill`.
    pub command: &'static str,
    /// The objective as a specification, e.g. `ce:1+at:1000`.
    pub loss: String,
    /// The training run.
    pub config: TrainConfig,
    /// The augmentation of the training batches.
    pub augment: Augment,
    /// The data.
    pub dataset: DatasetInfo,
    /// The student.
    pub student: ModelInfo,
    /// The teacher, when the objective used one.
    pub teacher: Option<ModelInfo>,
    /// Final test accuracy of the student, in [0, 1].
    pub accuracy: f64,
    /// Wall time of the training (teacher evaluation excluded).
    pub seconds: f64,
    /// Per-epoch figures.
    pub epochs: Vec<EpochStats>,
}

/// A model of a distillation report.
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    /// Architecture name.
    pub model: String,
    /// Parameters.
    pub params: usize,
    /// Checkpoint (relative to the output folder for the student).
    pub checkpoint: String,
    /// Test accuracy in [0, 1].
    pub accuracy: f64,
}

/// Trains the student, saves it and writes the report; returns the report
/// and the student's checkpoint.
pub fn distill_student(job: &DistillJob, device: &Device) -> Result<(DistillReport, PathBuf)> {
    crate::files::check_out_dir(&job.out)?;
    let (data, seed) = job.data.load(None)?;
    // A bad specification fails before the student is built.
    job.objective.parse()?;
    let student = new_model(&job.student_model, &data, seed, device)?;
    let (objective, teacher) = job.objective.resolve(
        job.teacher.as_deref(),
        &student,
        &data,
        seed,
        device,
        job.verbose,
    )?;
    let cfg = job.optim.train_config(objective, seed);
    let augment = job.optim.augment.resolve(data.name);
    if job.verbose {
        eprintln!(
            "kdprune distill: {} ({} train / {} test), student {}, teacher {}, loss {}",
            data.name,
            data.split.train.len(),
            data.split.test.len(),
            job.student_model,
            job.teacher
                .as_ref()
                .filter(|_| teacher.is_some())
                .map_or("none".into(), |p| p.display().to_string()),
            cfg.objective
        );
    }
    std::fs::create_dir_all(&job.out)
        .with_context(|| format!("cannot create {}", job.out.display()))?;
    let start = Instant::now();
    let views = data.views(augment);
    let resume = ResumeFile::new(
        job.out.join("resume.safetensors"),
        fingerprint(&[
            &"distill",
            &cfg,
            &student.config().to_string(),
            &data.name,
            &job.teacher,
        ]),
    );
    let history = train_resumable(
        &student,
        teacher.as_ref(),
        &views.train_data(),
        &cfg,
        &mut NoHook,
        "distill",
        job.verbose,
        Some((&resume, job.resume)),
        job.save_every,
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let accuracy = match history.final_accuracy() {
        Some(acc) => acc,
        None => kd_core::evaluate(&student, &views.test, 512)?,
    };
    let file = "student.safetensors";
    let mut meta = metadata(data.name, seed, "distilled", &data.norm);
    meta.insert("loss".into(), cfg.objective.to_string());
    let student_path = job.out.join(file);
    save_model(&student_path, &student, None, meta)?;
    let teacher_info = match (&teacher, &job.teacher) {
        (Some(t), Some(path)) => Some(ModelInfo {
            model: t.config().name(),
            params: t.config().num_params(),
            checkpoint: shown(path),
            accuracy: kd_core::evaluate(t, &views.test, 512)?,
        }),
        _ => None,
    };
    let report = DistillReport {
        version: 2,
        command: "distill",
        loss: cfg.objective.to_string(),
        config: cfg,
        augment,
        dataset: DatasetInfo::of(&data),
        student: ModelInfo {
            model: student.config().name(),
            params: student.config().num_params(),
            checkpoint: file.into(),
            accuracy,
        },
        teacher: teacher_info,
        accuracy,
        seconds,
        epochs: history.epochs,
    };
    write_atomic(
        &job.out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    resume.remove()?;
    Ok((report, student_path))
}

/// What identifies a run for its resume point: the debug text of the
/// settings that shape it (a resume point of other settings is refused).
fn fingerprint(parts: &[&dyn std::fmt::Debug]) -> String {
    parts
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(" | ")
}
