//! `kdprune distill`: a fresh student trained under a frozen teacher with any
//! weighted sum of logit losses (ce, kd, ca-kld, dkd) and feature losses
//! (fitnet, at, rkd); and the objective flags it shares with `kdprune retrain`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::Args;
use kd_core::train::EpochStats;
use kd_core::{
    DistillConfig, FeaturePair, FitOptions, LossConfig, NoHook, Objective, TeacherCache,
};
use kdprune_models::Model;
use serde::Serialize;

use super::args::{DataArgs, OptimArgs};
use crate::common::{self, Data};
use crate::config::{parse_feature_pairs, LossName, LossSpec, TermParams};
use crate::report::{write_atomic, DatasetInfo};

/// The objective: which loss terms, their weights and hyper-parameters.
#[derive(Args, Clone, Debug)]
pub struct ObjectiveArgs {
    /// Loss: NAME[:WEIGHT] terms joined by `,` or `+`, NAME one of ce, kd
    /// (Hinton), ca-kld, dkd, fitnet, at, rkd. Examples: `kd` (= ce:0.1+kd:0.9
    /// with --alpha 0.9), `ce:0.1,kd:0.9`, `at` (= ce:1+at:1000), `kd+at:1000`.
    /// Default weights: kd/ca-kld α, dkd 1, fitnet 100, at 1000, rkd 1; CE is
    /// added unless named, with weight 1−α beside kd/ca-kld, else 1 (`ce:0`
    /// drops it). Every term but ce needs --teacher.
    /// [default: kd for distill, ce for retrain]
    #[arg(long, verbatim_doc_comment)]
    pub loss: Option<String>,
    /// Feature pairs of fitnet/at/rkd: `s.NAME=t.NAME` joined by `,` (NAME alone:
    /// the same name on both sides), used by every feature term. Defaults: at,
    /// every feature map both models share by name; fitnet, the last shared map
    /// (else the first shared vector); rkd, the student's last feature with the
    /// teacher's last feature.
    #[arg(long, verbatim_doc_comment)]
    pub feature_pairs: Option<String>,
    /// Temperature T of kd, ca-kld and dkd.
    #[arg(long, default_value_t = 4.0)]
    pub temperature: f64,
    /// α: the default weight of kd/ca-kld (and 1−α of ce beside them).
    #[arg(long, default_value_t = 0.9)]
    pub alpha: f64,
    /// CA-KLD β: `confidence` or a number in [0, 1].
    #[arg(long, default_value = "confidence")]
    pub beta: String,
    /// DKD weight of the target-class term (TCKD).
    #[arg(long, default_value_t = 1.0)]
    pub dkd_alpha: f64,
    /// DKD weight of the non-target term (NCKD).
    #[arg(long, default_value_t = 8.0)]
    pub dkd_beta: f64,
    /// DKD warm-up epochs, factor min(epoch/warm-up, 1) (0: none).
    #[arg(long, default_value_t = 0)]
    pub dkd_warmup: usize,
    /// Attention-transfer exponent p of |f|^p.
    #[arg(long, default_value_t = 2.0)]
    pub at_p: f64,
    /// RKD weight of the distance loss.
    #[arg(long, default_value_t = 25.0)]
    pub rkd_distance_weight: f64,
    /// RKD weight of the angle loss.
    #[arg(long, default_value_t = 50.0)]
    pub rkd_angle_weight: f64,
}

impl ObjectiveArgs {
    /// The parsed `--loss` (`default` when absent).
    pub fn spec(&self, default: &str) -> Result<LossSpec> {
        let spec = self.loss.as_deref().unwrap_or(default);
        let parsed = LossSpec::parse(spec, self.alpha)
            .with_context(|| format!("invalid --loss `{spec}`"))?;
        if self.feature_pairs.is_some() && parsed.feature_terms().is_empty() {
            bail!("--feature-pairs is used only by the feature losses fitnet, at and rkd; --loss `{spec}` has none");
        }
        Ok(parsed)
    }

    fn params(&self) -> TermParams {
        TermParams {
            temperature: self.temperature,
            beta: self.beta.clone(),
            dkd_alpha: self.dkd_alpha,
            dkd_beta: self.dkd_beta,
            dkd_warmup: self.dkd_warmup,
            at_p: self.at_p,
            rkd_distance: self.rkd_distance_weight,
            rkd_angle: self.rkd_angle_weight,
        }
    }

    /// The objective of `spec` for this student and teacher: feature pairs
    /// from `--feature-pairs` (checked against the models' features) or the
    /// defaults of each feature term.
    pub fn objective(
        &self,
        spec: &LossSpec,
        student: &Model,
        teacher: Option<&Model>,
        data: &Data,
    ) -> Result<Objective> {
        let given = self
            .feature_pairs
            .as_deref()
            .map(parse_feature_pairs)
            .transpose()
            .context("invalid --feature-pairs")?;
        let features = match (spec.feature_terms().is_empty(), teacher) {
            (false, Some(t)) => Some((features(student, data)?, features(t, data)?)),
            _ => None,
        };
        spec.objective(&self.params(), |name| {
            let (s, t) = features
                .as_ref()
                .context("the feature losses need --teacher CKPT")?;
            match &given {
                Some(pairs) => {
                    for p in pairs {
                        check_name(s, &p.student, "student")?;
                        check_name(t, &p.teacher, "teacher")?;
                    }
                    Ok(pairs.clone())
                }
                None => default_pairs(name, s, t),
            }
        })
    }
}

/// `(name, dims without the batch)` of every feature of `model`, in forward order.
type Features = Vec<(String, Vec<usize>)>;

/// The features of `model` on a zero batch of two samples of `data`'s shape.
fn features(model: &Model, data: &Data) -> Result<Features> {
    let (c, h, w) = data.input_shape();
    let probe = Tensor::zeros((2, c, h, w), DType::F32, model.device())?;
    let out = model.forward_t(&probe, false)?;
    Ok(out
        .features
        .iter()
        .map(|(n, t)| (n.clone(), t.dims()[1..].to_vec()))
        .collect())
}

fn describe(features: &Features) -> String {
    features
        .iter()
        .map(|(n, d)| format!("{n} {d:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_name(features: &Features, name: &str, side: &str) -> Result<()> {
    if !features.iter().any(|(n, _)| n == name) {
        bail!(
            "the {side} has no feature `{name}`; its features are: {}",
            describe(features)
        );
    }
    Ok(())
}

/// The default pairs of a feature term (see `--feature-pairs`).
fn default_pairs(name: LossName, s: &Features, t: &Features) -> Result<Vec<FeaturePair>> {
    let shared = |rank: usize| -> Vec<(&String, &Vec<usize>, &Vec<usize>)> {
        s.iter()
            .filter_map(|(n, sd)| {
                let (_, td) = t.iter().find(|(m, _)| m == n)?;
                (sd.len() == rank && td.len() == rank).then_some((n, sd, td))
            })
            .collect()
    };
    let pairs: Vec<FeaturePair> = match name {
        LossName::At => shared(3)
            .into_iter()
            .map(|(n, _, _)| FeaturePair::new(n, n))
            .collect(),
        LossName::Fitnet => {
            let maps = shared(3);
            match maps.iter().rev().find(|(_, sd, td)| sd[1..] == td[1..]) {
                Some((n, _, _)) => vec![FeaturePair::new(*n, *n)],
                None => shared(1)
                    .first()
                    .map(|(n, _, _)| vec![FeaturePair::new(*n, *n)])
                    .unwrap_or_default(),
            }
        }
        LossName::Rkd => match (s.last(), t.last()) {
            (Some((a, _)), Some((b, _))) => vec![FeaturePair::new(a, b)],
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    if pairs.is_empty() {
        bail!(
            "no default feature pair for {}: student features: {}; teacher features: {}; pass --feature-pairs s.NAME=t.NAME",
            name.as_str(),
            describe(s),
            describe(t)
        );
    }
    Ok(pairs)
}

/// Loads the teacher when the loss needs one (an error names the missing
/// `--teacher`); a teacher the loss does not use is not loaded.
pub fn teacher_for(
    spec: &LossSpec,
    loss: &str,
    path: Option<&Path>,
    data: &Data,
    seed: u64,
    device: &Device,
) -> Result<Option<Model>> {
    if !spec.needs_teacher() {
        if let Some(p) = path {
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
    Ok(Some(common::load_teacher(path, data, seed, device)?))
}

/// Flags of `kdprune distill`.
#[derive(Args, Debug)]
pub struct DistillArgs {
    /// Teacher checkpoint (needed by every loss term but ce).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Student architecture, trained from its seeded initialisation.
    #[arg(long, default_value = "lenet5")]
    pub student_model: String,
    #[command(flatten)]
    pub objective: ObjectiveArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub optim: OptimArgs,
    /// Output folder: student.safetensors and report.json.
    #[arg(long)]
    pub out: PathBuf,
    /// No progress bars or per-epoch lines.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `report.json` of `kdprune distill`.
#[derive(Serialize)]
struct DistillReport<'a> {
    version: u32,
    command: &'static str,
    /// The objective as a specification, e.g. `ce:1+at:1000`.
    loss: String,
    config: &'a DistillConfig,
    dataset: DatasetInfo,
    student: ModelInfo,
    teacher: Option<ModelInfo>,
    /// Final test accuracy of the student, in [0, 1].
    accuracy: f64,
    /// Wall time of the training (teacher evaluation excluded).
    seconds: f64,
    epochs: &'a [EpochStats],
}

#[derive(Serialize)]
struct ModelInfo {
    model: String,
    params: usize,
    checkpoint: String,
    accuracy: f64,
}

/// Trains the student, saves it and writes the report.
pub fn run(a: DistillArgs) -> Result<()> {
    let device = common::device();
    let (data, seed) = a.data.load(None)?;
    let loss = a.objective.loss.clone().unwrap_or_else(|| "kd".into());
    let spec = a.objective.spec(&loss)?;
    let student = common::new_model(&a.student_model, &data, seed, &device)?;
    let teacher = teacher_for(&spec, &loss, a.teacher.as_deref(), &data, seed, &device)?;
    let objective = a
        .objective
        .objective(&spec, &student, teacher.as_ref(), &data)?;
    let cfg = a
        .optim
        .train_config(LossConfig::CrossEntropy, seed, &data)
        .with_objective(objective);
    let verbose = !a.quiet;
    if verbose {
        eprintln!(
            "kdprune distill: {} ({} train / {} test), student {}, teacher {}, loss {}",
            data.name,
            data.split.train.len(),
            data.split.test.len(),
            a.student_model,
            a.teacher
                .as_ref()
                .filter(|_| teacher.is_some())
                .map_or("none".into(), |p| p.display().to_string()),
            cfg.objective
        );
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let start = Instant::now();
    let options = FitOptions {
        label: "distill",
        verbose,
        teacher_cache: TeacherCache::Memory,
    };
    let history = kd_core::distill(
        &student,
        teacher.as_ref(),
        &data.train_data(),
        &cfg,
        &mut NoHook,
        &options,
    )
    .context("distillation failed")?;
    let seconds = start.elapsed().as_secs_f64();
    let accuracy = match history.final_accuracy() {
        Some(acc) => acc,
        None => kd_core::evaluate(&student, &data.split.test, &data.norm, 512)?,
    };
    let file = "student.safetensors";
    let mut meta = common::metadata(data.name, seed, "distilled", &data.norm);
    meta.insert("loss".into(), cfg.objective.to_string());
    common::save_model(&a.out.join(file), &student, None, meta)?;
    let teacher_info = match (&teacher, &a.teacher) {
        (Some(t), Some(path)) => Some(ModelInfo {
            model: t.config().name(),
            params: t.config().num_params(),
            checkpoint: path.display().to_string(),
            accuracy: kd_core::evaluate(t, &data.split.test, &data.norm, 512)?,
        }),
        _ => None,
    };
    let report = DistillReport {
        version: 1,
        command: "distill",
        loss: cfg.objective.to_string(),
        config: &cfg,
        dataset: DatasetInfo {
            name: data.name.to_string(),
            train: data.split.train.len(),
            test: data.split.test.len(),
            num_classes: data.num_classes(),
        },
        student: ModelInfo {
            model: student.config().name(),
            params: student.config().num_params(),
            checkpoint: file.into(),
            accuracy,
        },
        teacher: teacher_info,
        accuracy,
        seconds,
        epochs: &history.epochs,
    };
    write_atomic(
        &a.out.join("report.json"),
        &serde_json::to_string_pretty(&report)?,
    )?;
    println!("test accuracy: {accuracy:.4}");
    println!("saved {}", a.out.join(file).display());
    Ok(())
}
