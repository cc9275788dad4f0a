//! `kdprune run`: the paper's method end to end, with a report.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use kd_core::{LossConfig, NoHook, SgdConfig, StepHook, TrainConfig};
use kdprune_models::Model;
use prune_core::importance::Criterion;
use prune_core::{select, MaskSet, ParamFilter};

use super::args::HubArgs;
use crate::common::{self, AugmentChoice, Data, MaskHook};
use crate::config::RunConfig;
use crate::report::{write_atomic, DatasetInfo, Report, Stage};

/// Flags of `kdprune run`; each overrides the config file, which overrides the defaults.
#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// TOML file with any of the keys below (snake_case); flags win over it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Dataset: digits (built in), fashion-mnist, mnist, cifar10, cifar100,
    /// tiny-imagenet [default: digits].
    #[arg(long)]
    pub dataset: Option<String>,
    /// Folder with the dataset's files.
    #[arg(long, conflicts_with = "hub")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub hub: HubArgs,
    /// Training-set augmentation: auto, none, crop-flip [default: auto].
    #[arg(long, value_enum)]
    pub augment: Option<AugmentChoice>,
    /// Seed [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Target sparsity in [0, 1) [default: 0.9].
    #[arg(long)]
    pub sparsity: Option<f64>,
    /// Teacher architecture [default: mlp-1200-1200].
    #[arg(long)]
    pub teacher_model: Option<String>,
    /// Student architecture [default: lenet-300-100].
    #[arg(long)]
    pub student_model: Option<String>,
    /// Teacher epochs [default: 15].
    #[arg(long)]
    pub teacher_epochs: Option<usize>,
    /// Dense student epochs [default: 15].
    #[arg(long)]
    pub student_epochs: Option<usize>,
    /// KD fine-tuning epochs [default: 5].
    #[arg(long)]
    pub kd_epochs: Option<usize>,
    /// Retraining epochs under the mask [default: 10].
    #[arg(long)]
    pub retrain_epochs: Option<usize>,
    /// Mini-batch size [default: 64].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Learning rate from scratch [default: 0.05].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Learning rate of fine-tuning and retraining [default: 0.01].
    #[arg(long)]
    pub finetune_lr: Option<f64>,
    /// Distillation loss: ca-kld or kd [default: ca-kld].
    #[arg(long)]
    pub kd_loss: Option<String>,
    /// Temperature T [default: 4].
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Weight α of the distillation term, L = α·KD + (1−α)·CE [default: 0.9].
    #[arg(long)]
    pub alpha: Option<f64>,
    /// CA-KLD β: confidence or a number in [0, 1] [default: confidence].
    #[arg(long)]
    pub beta: Option<String>,
    /// Batches of teacher-guided scoring [default: 8].
    #[arg(long)]
    pub score_batches: Option<usize>,
    /// Keep the first layer dense.
    #[arg(long)]
    pub keep_first: bool,
    /// Keep the last layer dense.
    #[arg(long)]
    pub keep_last: bool,
    /// Output folder [default: runs/<dataset>-s<sparsity>-seed<seed>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Reuse this trained teacher instead of training one.
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Reuse this trained dense student instead of training one.
    #[arg(long)]
    pub student: Option<PathBuf>,
    /// No progress bars or per-epoch lines.
    #[arg(long, short)]
    pub quiet: bool,
}

impl RunArgs {
    /// Defaults ← config file ← flags.
    pub fn resolve(&self) -> Result<RunConfig> {
        let mut c = match &self.config {
            Some(p) => RunConfig::from_toml_file(p)?,
            None => RunConfig::default(),
        };
        macro_rules! over {
            ($($f:ident),*) => { $( if let Some(v) = &self.$f { c.$f = v.clone(); } )* };
        }
        over!(
            dataset,
            seed,
            sparsity,
            teacher_model,
            student_model,
            teacher_epochs,
            student_epochs,
            kd_epochs,
            retrain_epochs,
            batch_size,
            lr,
            finetune_lr,
            kd_loss,
            temperature,
            alpha,
            beta,
            score_batches,
            augment
        );
        if self.data_dir.is_some() {
            c.data_dir = self.data_dir.clone();
            c.hub = false;
        }
        if self.hub.hub {
            c.hub = true;
            c.data_dir = None;
        }
        if self.hub.hub_cache.is_some() {
            c.hub_cache = self.hub.hub_cache.clone();
        }
        if self.hub.hub_revision.is_some() {
            c.hub_revision = self.hub.hub_revision.clone();
        }
        c.offline |= self.hub.offline;
        if self.out.is_some() {
            c.out = self.out.clone();
        }
        if self.teacher.is_some() {
            c.teacher_checkpoint = self.teacher.clone();
        }
        if self.student.is_some() {
            c.student_checkpoint = self.student.clone();
        }
        c.keep_first |= self.keep_first;
        c.keep_last |= self.keep_last;
        c.validate()?;
        Ok(c)
    }
}

struct Runner<'a> {
    cfg: &'a RunConfig,
    data: &'a Data,
    out: PathBuf,
    prunable: Vec<String>,
    verbose: bool,
    stages: Vec<Stage>,
}

impl Runner<'_> {
    fn train_config(&self, epochs: usize, lr: f64, loss: LossConfig, salt: u64) -> TrainConfig {
        TrainConfig {
            epochs,
            batch_size: self.cfg.batch_size,
            sgd: SgdConfig {
                lr,
                momentum: self.cfg.momentum,
                nesterov: self.cfg.nesterov && self.cfg.momentum > 0.0,
                weight_decay: self.cfg.weight_decay,
            },
            warmup_epochs: self.cfg.warmup_epochs,
            min_lr: 0.0,
            loss,
            seed: self.cfg.seed ^ salt,
            augment: self.cfg.augment.resolve(self.data.name),
        }
    }

    fn train(
        &self,
        label: &str,
        model: &Model,
        teacher: Option<&Model>,
        cfg: &TrainConfig,
        hook: &mut dyn StepHook,
    ) -> Result<()> {
        kd_core::fit(
            model,
            teacher,
            &self.data.train_data(),
            cfg,
            hook,
            label,
            self.verbose,
        )
        .with_context(|| format!("training stage `{label}` failed"))?;
        Ok(())
    }

    /// Evaluates, measures, saves and records a stage.
    fn finish(
        &mut self,
        name: &str,
        model: &Model,
        masks: Option<&MaskSet>,
        start: Instant,
    ) -> Result<()> {
        let accuracy = kd_core::evaluate(model, &self.data.split.test, &self.data.norm, 512)?;
        let prunable = common::prunable_names(model.config(), &self.filter());
        let (sparsity, nonzero) = common::measure(model, &prunable)?;
        if let Some(m) = masks {
            let rep = prune_core::report::sparsity_report(&model.tensors()?, &prunable, Some(m))?;
            if rep.violations() > 0 {
                bail!(
                    "stage `{name}`: {} masked weights are not zero",
                    rep.violations()
                );
            }
        }
        let file = format!("{name}.safetensors");
        let meta = common::metadata(self.data.name, self.cfg.seed, name, &self.data.norm);
        common::save_model(&self.out.join(&file), model, masks, meta)?;
        let seconds = start.elapsed().as_secs_f64();
        if self.verbose {
            eprintln!(
                "{name}: accuracy {:.2} %, sparsity {sparsity:.4}, {nonzero} non-zero parameters, {seconds:.1} s",
                100.0 * accuracy
            );
        }
        self.stages.push(Stage {
            name: name.into(),
            accuracy,
            sparsity,
            nonzero,
            seconds,
            checkpoint: file,
        });
        Ok(())
    }

    fn filter(&self) -> ParamFilter {
        ParamFilter {
            keep_first: self.cfg.keep_first,
            keep_last: self.cfg.keep_last,
            ..ParamFilter::default()
        }
    }

    /// Retrains a copy of `pruned` under `masks` with `loss`.
    fn retrain(
        &mut self,
        name: &str,
        pruned: &Model,
        teacher: Option<&Model>,
        masks: &MaskSet,
        loss: LossConfig,
        salt: u64,
    ) -> Result<()> {
        let start = Instant::now();
        let model = common::clone_model(pruned)?;
        let tc = self.train_config(self.cfg.retrain_epochs, self.cfg.finetune_lr, loss, salt);
        self.train(name, &model, teacher, &tc, &mut MaskHook(masks))?;
        self.finish(name, &model, Some(masks), start)
    }
}

/// Every retraining uses the same batch order, so the variants are paired.
const RETRAIN_SALT: u64 = 0x5254_0000;

/// Runs the seven stages and writes the report.
pub fn run(args: RunArgs) -> Result<()> {
    let cfg = args.resolve()?;
    let verbose = !args.quiet;
    let device = common::device();
    let hub = HubArgs {
        hub: cfg.hub,
        hub_cache: cfg.hub_cache.clone(),
        hub_revision: cfg.hub_revision.clone(),
        offline: cfg.offline,
    }
    .options();
    let source = common::Source::new(cfg.data_dir.as_deref(), hub);
    let data = common::load_data(&cfg.dataset, &source, cfg.seed)?;
    // Unknown architecture names fail now, not after the teacher has trained.
    for (name, ckpt) in [
        (&cfg.teacher_model, &cfg.teacher_checkpoint),
        (&cfg.student_model, &cfg.student_checkpoint),
    ] {
        if ckpt.is_none() {
            kdprune_models::ModelConfig::from_name(name, data.input_shape(), data.num_classes())?;
        }
    }
    let out = cfg.out_dir();
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    write_atomic(&out.join("config.toml"), &toml::to_string(&cfg)?)?;
    let kd_loss = cfg.kd_loss_config()?;

    if verbose {
        let describe = |name: &str, ckpt: &Option<PathBuf>| match ckpt {
            Some(p) => format!("{} (trained)", p.display()),
            None => name.to_string(),
        };
        eprintln!(
            "kdprune run: {} ({} train / {} test), teacher {}, student {}, sparsity {}, seed {} → {}",
            data.name,
            data.split.train.len(),
            data.split.test.len(),
            describe(&cfg.teacher_model, &cfg.teacher_checkpoint),
            describe(&cfg.student_model, &cfg.student_checkpoint),
            cfg.sparsity,
            cfg.seed,
            out.display()
        );
    }
    let mut r = Runner {
        cfg: &cfg,
        data: &data,
        out: out.clone(),
        prunable: Vec::new(),
        verbose,
        stages: Vec::new(),
    };

    // 1. teacher (CE), or a trained one
    let start = Instant::now();
    let teacher = match &cfg.teacher_checkpoint {
        Some(p) => common::load_teacher(p, &data, cfg.seed, &device)?,
        None => {
            let teacher = common::new_model(
                &cfg.teacher_model,
                &data,
                cfg.seed ^ common::TEACHER_SALT,
                &device,
            )?;
            let tc = r.train_config(
                cfg.teacher_epochs,
                cfg.lr,
                LossConfig::CrossEntropy,
                common::TEACHER_SALT,
            );
            r.train("teacher", &teacher, None, &tc, &mut NoHook)?;
            teacher
        }
    };
    r.finish("teacher", &teacher, None, start)?;

    // 2. dense student (CE), or a trained one
    let start = Instant::now();
    let student = match &cfg.student_checkpoint {
        Some(p) => {
            let (m, _, ckpt) = common::load_model(p, &device)?;
            common::check_fits(&m, &data, "the student checkpoint")?;
            common::check_same_split(&ckpt, p, &data, cfg.seed)?;
            m
        }
        None => {
            let student = common::new_model(
                &cfg.student_model,
                &data,
                cfg.seed ^ common::STUDENT_SALT,
                &device,
            )?;
            let tc = r.train_config(
                cfg.student_epochs,
                cfg.lr,
                LossConfig::CrossEntropy,
                common::STUDENT_SALT,
            );
            r.train("dense", &student, None, &tc, &mut NoHook)?;
            student
        }
    };
    r.finish("dense", &student, None, start)?;
    r.prunable = common::prunable_names(student.config(), &r.filter());
    if r.prunable.is_empty() {
        bail!(
            "the student `{}` has no prunable weights with this filter",
            student.config().name()
        );
    }

    // 3. KD fine-tuning under the frozen teacher: α·KD + (1−α)·CE
    let start = Instant::now();
    let tuned = common::clone_model(&student)?;
    let tc = r.train_config(cfg.kd_epochs, cfg.finetune_lr, kd_loss, 0x4B44);
    r.train("kd_tuned", &tuned, Some(&teacher), &tc, &mut NoHook)?;
    r.finish("kd_tuned", &tuned, None, start)?;

    // 4–5. teacher-guided importance |θ ⊙ ∂L/∂θ|, one global threshold
    let start = Instant::now();
    let scores = common::score(
        Criterion::TeacherGuided,
        &tuned,
        Some(&teacher),
        &data,
        &r.prunable,
        &kd_loss,
        cfg.score_batches,
        cfg.batch_size,
        cfg.seed,
    )?;
    let masks = select::global(&scores, cfg.sparsity)?;
    let pruned = common::clone_model(&tuned)?;
    common::apply_masks(&pruned, &masks)?;
    r.finish("pruned_one_shot", &pruned, Some(&masks), start)?;

    // 6–7. retraining under the fixed mask, with and without KD
    r.retrain(
        "retrained_kd",
        &pruned,
        Some(&teacher),
        &masks,
        kd_loss,
        RETRAIN_SALT,
    )?;
    r.retrain(
        "retrained_no_kd",
        &pruned,
        None,
        &masks,
        LossConfig::CrossEntropy,
        RETRAIN_SALT,
    )?;

    // baseline: global magnitude pruning of the same KD-tuned student, retrained without KD
    let start = Instant::now();
    let mag_scores = common::score(
        Criterion::Magnitude,
        &tuned,
        None,
        &data,
        &r.prunable,
        &kd_loss,
        0,
        cfg.batch_size,
        cfg.seed,
    )?;
    let mag_masks = select::global(&mag_scores, cfg.sparsity)?;
    let mag = common::clone_model(&tuned)?;
    common::apply_masks(&mag, &mag_masks)?;
    r.finish("magnitude_one_shot", &mag, Some(&mag_masks), start)?;
    r.retrain(
        "magnitude_retrained",
        &mag,
        None,
        &mag_masks,
        LossConfig::CrossEntropy,
        RETRAIN_SALT,
    )?;

    let report = Report {
        version: 1,
        config: cfg.clone(),
        dataset: DatasetInfo {
            name: data.name.to_string(),
            train: data.split.train.len(),
            test: data.split.test.len(),
            num_classes: data.num_classes(),
        },
        stages: r.stages,
    };
    write_atomic(
        &out.join("report.json"),
        &serde_json::to_string_pretty(&report)?,
    )?;
    write_atomic(&out.join("report.md"), &report.markdown()?)?;
    println!("{}", report.table());
    println!("report: {}", out.join("report.md").display());
    Ok(())
}
