//! `kdprune compress`: the whole pipeline of the guide in one command —
//! teacher (trained or loaded), a student distilled under it, pruned in one
//! shot (or gradually while fine-tuning), retrained under its mask, exported
//! sparse, INT8 and both, and compared.
//!
//! Every stage writes its checkpoint into the output folder and records its
//! recipe (the configuration it ran with and its inputs' recipes) in
//! `stages.json`; a second run keeps a stage whose recipe is unchanged and
//! whose file exists, so an interrupted run resumes where it stopped. A
//! stage found with another recipe is an error rather than a silent mix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use candle_core::Device;
use kd_core::losses::{Beta, DEFAULT_ALPHA, DEFAULT_TEMPERATURE};
use kd_core::{LossConfig, SelfDistillConfig, TermParams};
use kdprune_models::checkpoint::Encoding;
use kdprune_models::infer::LayerChoice;
use prune_core::{importance, Scope};
use serde::{Deserialize, Serialize};

use crate::compare::{compare, CompareJob, CompareReport};
use crate::data::{AugmentChoice, Source};
use crate::files::write_atomic;
use crate::jobs::{
    self, distill_student, prune_checkpoint, retrain_checkpoint, train_model, Calibration,
    DataSpec, DistillJob, ObjectiveSpec, Optim, PruneJob, RetrainJob, TrainJob,
};

/// The pipeline's configuration (`compress.toml`); every key but `out` has a
/// default, and an unknown key is an error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressConfig {
    /// Dataset name.
    #[serde(default = "default_dataset")]
    pub dataset: String,
    /// Folder of the dataset's files (IDX for the MNISTs).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Seed (digits' split, initialisation, batch order).
    #[serde(default)]
    pub seed: u64,
    /// Output folder.
    pub out: PathBuf,
    /// The teacher.
    #[serde(default)]
    pub teacher: TeacherStage,
    /// The distilled student.
    #[serde(default)]
    pub student: StudentStage,
    /// One-shot pruning.
    #[serde(default)]
    pub prune: PruneStage,
    /// Retraining under the mask.
    #[serde(default)]
    pub retrain: RetrainStage,
    /// The exports and the comparison.
    #[serde(default)]
    pub export: ExportStage,
}

fn default_dataset() -> String {
    "digits".to_string()
}

/// `[teacher]`: a checkpoint to load, or a model to train.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TeacherStage {
    /// Load this checkpoint instead of training.
    pub checkpoint: Option<PathBuf>,
    /// Architecture to train.
    pub model: String,
    /// Epochs.
    pub epochs: usize,
    /// Learning rate (cosine decay).
    pub lr: f64,
}

impl Default for TeacherStage {
    fn default() -> Self {
        Self {
            checkpoint: None,
            model: "mlp-1200-1200".to_string(),
            epochs: 15,
            lr: 0.05,
        }
    }
}

/// `[student]`: distilled from scratch under the teacher.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StudentStage {
    /// Architecture.
    pub model: String,
    /// Any `kdprune distill` loss (`kd`, `ca-kld`, `ce:0.1,kd:0.9`, `kd+at:1000`, …).
    pub loss: String,
    /// Epochs.
    pub epochs: usize,
    /// Learning rate.
    pub lr: f64,
}

impl Default for StudentStage {
    fn default() -> Self {
        Self {
            model: "lenet-300-100".to_string(),
            loss: "ca-kld".to_string(),
            epochs: 15,
            lr: 0.05,
        }
    }
}

/// `[prune]`: one shot to a target sparsity, or gradually while fine-tuning
/// (`criterion = "gmp"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PruneStage {
    /// Any `kdprune prune` criterion (`teacher-guided`, `magnitude`, `snip`,
    /// …), or `gmp`: gradual magnitude pruning while fine-tuning under
    /// `loss` ([`GmpStage`]).
    pub criterion: String,
    /// Target sparsity of the prunable weights.
    pub sparsity: f64,
    /// `global` or `layer`.
    pub scope: String,
    /// Calibration batches of the gradient criteria.
    pub score_batches: usize,
    /// The distillation loss of the teacher-guided score (`ca-kld`, `kd`);
    /// with `gmp`, the objective of the fine-tuning (any `distill` loss).
    pub loss: String,
    /// `[prune.gmp]`: the fine-tuning of `criterion = "gmp"` (defaults when
    /// absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gmp: Option<GmpStage>,
}

/// `[prune.gmp]`: gradual magnitude pruning (Zhu & Gupta 2017) while
/// fine-tuning the distilled student (see [`jobs::GmpJob`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GmpStage {
    /// Epochs of fine-tuning.
    pub epochs: usize,
    /// Learning rate (cosine decay).
    pub lr: f64,
    /// Fraction of the steps over which the sparsity rises.
    pub ramp_fraction: f64,
    /// Steps between two mask updates.
    pub frequency: u64,
}

impl Default for GmpStage {
    fn default() -> Self {
        Self {
            epochs: 5,
            lr: 0.01,
            ramp_fraction: 0.75,
            frequency: 10,
        }
    }
}

impl PruneStage {
    /// The GMP settings when the criterion is `gmp`.
    fn gradual(&self) -> Option<GmpStage> {
        (self.criterion == GMP).then(|| self.gmp.clone().unwrap_or_default())
    }
}

/// The criterion name of gradual magnitude pruning.
const GMP: &str = "gmp";

impl Default for PruneStage {
    fn default() -> Self {
        Self {
            criterion: "teacher-guided".to_string(),
            sparsity: 0.9,
            scope: "global".to_string(),
            score_batches: 8,
            loss: "ca-kld".to_string(),
            gmp: None,
        }
    }
}

/// `[retrain]`: under the fixed mask.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrainStage {
    /// Any `kdprune retrain` loss (`ce` retrains without the teacher).
    pub loss: String,
    /// Epochs.
    pub epochs: usize,
    /// Learning rate.
    pub lr: f64,
}

impl Default for RetrainStage {
    fn default() -> Self {
        Self {
            loss: "ca-kld".to_string(),
            epochs: 10,
            lr: 0.01,
        }
    }
}

/// `[export]`: the compressed files and the comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportStage {
    /// Training batches calibrating the INT8 activations (0: per batch).
    pub calibration_batches: usize,
    /// Timed passes per latency of the comparison (≥ 20).
    pub compare_rounds: usize,
}

impl Default for ExportStage {
    fn default() -> Self {
        Self {
            calibration_batches: 8,
            compare_rounds: 20,
        }
    }
}

/// What [`run_compress`] leaves.
#[derive(Clone, Debug)]
pub struct CompressOutcome {
    /// Each stage and whether it ran (`false`: kept from an earlier run).
    pub stages: Vec<(String, bool)>,
    /// The comparison of teacher, student, retrained student, sparse, INT8
    /// and sparse INT8 files.
    pub compare: CompressCompare,
}

/// The comparison and where it was written.
pub type CompressCompare = (CompareReport, PathBuf);

/// The file of each stage's recipe.
const STAGES_FILE: &str = "stages.json";

/// Stages already made: name → recipe.
struct Ledger {
    path: PathBuf,
    recipes: BTreeMap<String, String>,
}

impl Ledger {
    fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(STAGES_FILE);
        let recipes = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{} is not a stage ledger", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(Self { path, recipes })
    }

    /// Runs `make` unless `out` exists with the same recipe; returns whether it ran.
    fn stage(
        &mut self,
        name: &str,
        recipe: &str,
        out: &Path,
        make: impl FnOnce() -> Result<()>,
    ) -> Result<bool> {
        match self.recipes.get(name) {
            Some(r) if r == recipe && out.exists() => return Ok(false),
            Some(r) if r != recipe && out.exists() => bail!(
                "stage `{name}` in {} was made with another configuration; give another `out` or remove the folder",
                self.path.parent().map_or_else(String::new, |p| p.display().to_string())
            ),
            _ => {}
        }
        make().with_context(|| format!("stage `{name}`"))?;
        ensure!(out.exists(), "stage `{name}` left no {}", out.display());
        self.recipes.insert(name.to_string(), recipe.to_string());
        write_atomic(
            &self.path,
            serde_json::to_string_pretty(&self.recipes)? + "\n",
        )?;
        Ok(true)
    }
}

fn optim(epochs: usize, lr: f64) -> Optim {
    Optim {
        epochs,
        batch_size: 64,
        lr,
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: true,
        warmup_epochs: 0,
        augment: AugmentChoice::Auto,
    }
}

fn objective(loss: &str) -> ObjectiveSpec {
    ObjectiveSpec {
        loss: loss.to_string(),
        params: TermParams::default(),
        feature_pairs: None,
    }
}

/// Checks what can be checked before any work.
fn validate(cfg: &CompressConfig) -> Result<()> {
    prune_core::check_sparsity(cfg.prune.sparsity)?;
    ensure!(
        cfg.export.compare_rounds >= 20,
        "export.compare_rounds must be at least 20"
    );
    objective(&cfg.student.loss).parse()?;
    objective(&cfg.retrain.loss).parse()?;
    match cfg.prune.gradual() {
        Some(gmp) => {
            objective(&cfg.prune.loss).parse()?;
            ensure!(gmp.epochs > 0, "prune.gmp.epochs must be at least 1");
            ensure!(
                gmp.ramp_fraction > 0.0 && gmp.ramp_fraction <= 1.0,
                "prune.gmp.ramp_fraction must be in (0, 1], got {}",
                gmp.ramp_fraction
            );
            ensure!(gmp.frequency > 0, "prune.gmp.frequency must be at least 1");
            ensure!(
                gmp.lr.is_finite() && gmp.lr > 0.0,
                "prune.gmp.lr must be positive, got {}",
                gmp.lr
            );
        }
        None => {
            ensure!(
                cfg.prune.gmp.is_none(),
                "[prune.gmp] applies to criterion = \"gmp\" only, not \"{}\"",
                cfg.prune.criterion
            );
            importance::by_name(&cfg.prune.criterion)?;
            parse_scope(&cfg.prune.scope)?;
            LossConfig::named(
                &cfg.prune.loss,
                DEFAULT_TEMPERATURE,
                DEFAULT_ALPHA,
                Beta::default(),
            )?;
        }
    }
    if let Some(t) = &cfg.teacher.checkpoint {
        ensure!(
            t.exists(),
            "teacher.checkpoint {} does not exist",
            t.display()
        );
    }
    Ok(())
}

fn parse_scope(s: &str) -> Result<Scope> {
    Ok(match s {
        "layer" => Scope::PerLayer,
        other => other.parse()?,
    })
}

/// Runs (or resumes) the pipeline; `verbose` shows progress bars.
pub fn run_compress(
    cfg: &CompressConfig,
    device: &Device,
    verbose: bool,
) -> Result<CompressOutcome> {
    validate(cfg)?;
    crate::files::check_out_dir(&cfg.out)?;
    std::fs::create_dir_all(&cfg.out)
        .with_context(|| format!("cannot create {}", cfg.out.display()))?;
    let data = DataSpec {
        dataset: Some(cfg.dataset.clone()),
        source: Source::new(cfg.data_dir.as_deref(), None),
        seed: Some(cfg.seed),
        train_samples: None,
        test_samples: None,
    };
    let dir = &cfg.out;
    let mut ledger = Ledger::open(dir)?;
    let mut stages = Vec::new();
    let base = serde_json::json!({"dataset": cfg.dataset, "seed": cfg.seed}).to_string();

    // teacher
    let teacher_recipe = format!("{base}|teacher:{}", serde_json::to_string(&cfg.teacher)?);
    let teacher = match &cfg.teacher.checkpoint {
        Some(path) => path.clone(),
        None => {
            let out = dir.join("teacher.safetensors");
            let job = TrainJob {
                model: cfg.teacher.model.clone(),
                data: data.clone(),
                optim: optim(cfg.teacher.epochs, cfg.teacher.lr),
                loss: LossConfig::CrossEntropy,
                teacher: None,
                init: None,
                elastic_kernels: Vec::new(),
                out: out.clone(),
                verbose,
                // a stage cut short continues from its last epoch
                resume: true,
                save_every: None,
            };
            let ran = ledger.stage("teacher", &teacher_recipe, &out, || {
                train_model(&job, device).map(drop)
            })?;
            stages.push(("teacher".to_string(), ran));
            out
        }
    };

    // student, distilled
    let student_recipe = format!(
        "{teacher_recipe}|student:{}",
        serde_json::to_string(&cfg.student)?
    );
    let student_dir = dir.join("student");
    let student = student_dir.join("student.safetensors");
    let job = DistillJob {
        teacher: Some(teacher.clone()),
        student_model: cfg.student.model.clone(),
        objective: objective(&cfg.student.loss),
        data: data.clone(),
        optim: optim(cfg.student.epochs, cfg.student.lr),
        out: student_dir.clone(),
        verbose,
        // a stage cut short continues from its last epoch
        resume: true,
        save_every: None,
    };
    let ran = ledger.stage("student", &student_recipe, &student, || {
        distill_student(&job, device).map(drop)
    })?;
    stages.push(("student".to_string(), ran));

    // pruned: in one shot, or gradually while fine-tuning
    let prune_cfg = PruneStage {
        gmp: cfg.prune.gradual(),
        ..cfg.prune.clone()
    };
    let prune_recipe = format!(
        "{student_recipe}|prune:{}",
        serde_json::to_string(&prune_cfg)?
    );
    let pruned = dir.join("pruned.safetensors");
    let ran = match &prune_cfg.gmp {
        Some(gmp) => {
            let job = jobs::GmpJob {
                tune: RetrainJob {
                    checkpoint: student.clone(),
                    teacher: Some(teacher.clone()),
                    data: data.clone(),
                    optim: optim(gmp.epochs, gmp.lr),
                    objective: objective(&cfg.prune.loss),
                    out: pruned.clone(),
                    verbose,
                    // a stage cut short continues from its last epoch
                    resume: true,
                    save_every: None,
                },
                sparsity: cfg.prune.sparsity,
                ramp_fraction: gmp.ramp_fraction,
                frequency: gmp.frequency,
            };
            ledger.stage("prune", &prune_recipe, &pruned, || {
                jobs::gmp_checkpoint(&job, device).map(drop)
            })?
        }
        None => {
            let job = PruneJob {
                checkpoint: student.clone(),
                criterion: importance::by_name(&cfg.prune.criterion)?,
                sparsity: cfg.prune.sparsity,
                scope: parse_scope(&cfg.prune.scope)?,
                teacher: Some(teacher.clone()),
                score_batches: cfg.prune.score_batches,
                batch_size: 64,
                kd_loss: LossConfig::named(
                    &cfg.prune.loss,
                    DEFAULT_TEMPERATURE,
                    DEFAULT_ALPHA,
                    Beta::default(),
                )?,
                self_distill: SelfDistillConfig::default(),
                keep_first: false,
                keep_last: false,
                data: data.clone(),
                out: pruned.clone(),
            };
            ledger.stage("prune", &prune_recipe, &pruned, || {
                prune_checkpoint(&job, device).map(drop)
            })?
        }
    };
    stages.push(("prune".to_string(), ran));

    // retrained under the mask
    let retrain_recipe = format!(
        "{prune_recipe}|retrain:{}",
        serde_json::to_string(&cfg.retrain)?
    );
    let retrained = dir.join("retrained.safetensors");
    let job = RetrainJob {
        checkpoint: pruned.clone(),
        teacher: Some(teacher.clone()),
        data: data.clone(),
        optim: optim(cfg.retrain.epochs, cfg.retrain.lr),
        objective: objective(&cfg.retrain.loss),
        out: retrained.clone(),
        verbose,
        // a stage cut short continues from its last epoch
        resume: true,
        save_every: None,
    };
    let ran = ledger.stage("retrain", &retrain_recipe, &retrained, || {
        retrain_checkpoint(&job, device).map(drop)
    })?;
    stages.push(("retrain".to_string(), ran));

    // exports
    let sparse = dir.join("retrained.sparse.safetensors");
    let calibration = Calibration {
        batches: 0,
        data: data.clone(),
    };
    let ran = ledger.stage("export-sparse", &retrain_recipe, &sparse, || {
        jobs::export_checkpoint(&retrained, Encoding::Sparse, &sparse, &calibration, device)
            .map(drop)
    })?;
    stages.push(("export-sparse".to_string(), ran));
    let int8 = dir.join("retrained.int8.safetensors");
    let int8_recipe = format!("{retrain_recipe}|int8:{}", cfg.export.calibration_batches);
    let calibration = Calibration {
        batches: cfg.export.calibration_batches,
        data: data.clone(),
    };
    let ran = ledger.stage("export-int8", &int8_recipe, &int8, || {
        jobs::export_checkpoint(&retrained, Encoding::Int8, &int8, &calibration, device).map(drop)
    })?;
    stages.push(("export-int8".to_string(), ran));
    let sparse_int8 = dir.join("retrained.sparse-int8.safetensors");
    let ran = ledger.stage("export-sparse-int8", &int8_recipe, &sparse_int8, || {
        jobs::export_checkpoint(
            &retrained,
            Encoding::SparseInt8,
            &sparse_int8,
            &calibration,
            device,
        )
        .map(drop)
    })?;
    stages.push(("export-sparse-int8".to_string(), ran));

    // the comparison (always measured anew: latencies belong to this run)
    let report = compare(&CompareJob {
        checkpoints: vec![teacher, student, retrained, sparse, int8, sparse_int8],
        data,
        rounds: cfg.export.compare_rounds,
        choice: LayerChoice::default(),
    })?;
    let md = dir.join("compare.md");
    write_atomic(&md, report.markdown())?;
    write_atomic(
        &dir.join("compare.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    Ok(CompressOutcome {
        stages,
        compare: (report, md),
    })
}
