//! The paper's method end to end (arXiv 2511.16653): teacher, dense student,
//! KD fine-tuning under the frozen teacher, teacher-guided importance, one
//! global threshold, retraining under the fixed mask with and without KD,
//! and a global-magnitude baseline — with its configuration and report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use kd_core::{LossConfig, NoHook};
use kdprune_models::{Model, ModelConfig};
use prune_core::importance::{Magnitude, TeacherGuided};
use prune_core::{Importance, MaskSet, Scope, Stage};
use serde::{Deserialize, Serialize};

use crate::checkpoints::{
    apply_masks, clone_model, filter, load_model, load_teacher, load_trained, measure, new_model,
    prunable_names, save_stage,
};
use crate::data::{Data, Views};
use crate::files::write_atomic;
use crate::resume::ResumeFile;
use crate::scoring::prune_masks;
use crate::settings::{from_toml_file, Settings};
use crate::training::{salt, train_resumable, PruneHook};

/// Every knob of the end-to-end job: the shared [`Settings`] and the run's
/// own. Field names are the TOML keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunConfig {
    /// Data, models, schedules, distillation and scoring.
    #[serde(flatten)]
    pub settings: Settings,
    /// Seed of initialisation, split and batch order.
    pub seed: u64,
    /// Fraction of the prunable weights removed, in [0, 1).
    pub sparsity: f64,
    /// Output folder (default `runs/<dataset>-s<sparsity>-seed<seed>`).
    pub out: Option<PathBuf>,
    /// A trained teacher to reuse instead of training one.
    pub teacher_checkpoint: Option<PathBuf>,
    /// A trained dense student to reuse instead of training one.
    pub student_checkpoint: Option<PathBuf>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            settings: Settings::default(),
            seed: 0,
            sparsity: 0.9,
            out: None,
            teacher_checkpoint: None,
            student_checkpoint: None,
        }
    }
}

impl RunConfig {
    /// Reads a TOML file (unknown keys are an error, missing keys take defaults).
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self> {
        from_toml_file(path, "config file")
    }

    /// The output folder, resolved.
    pub fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            PathBuf::from(format!(
                "runs/{}-s{}-seed{}",
                self.settings.dataset, self.sparsity, self.seed
            ))
        })
    }

    /// Checks ranges before any work starts.
    pub fn validate(&self) -> Result<()> {
        prune_core::check_sparsity(self.sparsity).map_err(anyhow::Error::from)?;
        self.settings.validate()
    }
}

/// One row of the results table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageResult {
    /// Stable stage name (`teacher`, `dense`, `kd_tuned`, `pruned_one_shot`,
    /// `retrained_kd`, `retrained_no_kd`, `magnitude_one_shot`, `magnitude_retrained`).
    pub name: String,
    /// Test accuracy in [0, 1].
    pub accuracy: f64,
    /// Measured fraction of exact zeros among the prunable weights.
    pub sparsity: f64,
    /// Non-zero parameters of the whole model.
    pub nonzero: usize,
    /// Wall time of the stage in seconds.
    pub seconds: f64,
    /// Checkpoint file of the stage, relative to the run folder.
    pub checkpoint: String,
}

/// Facts about the data of a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// The dataset's name.
    pub name: String,
    /// Training samples.
    pub train: usize,
    /// Test samples.
    pub test: usize,
    /// Classes.
    pub num_classes: usize,
}

impl DatasetInfo {
    /// The facts of `data`.
    pub fn of(data: &Data) -> Self {
        Self {
            name: data.name.to_string(),
            train: data.split.train.len(),
            test: data.split.test.len(),
            num_classes: data.num_classes(),
        }
    }
}

/// The whole report (schema version 1), `report.json` of a run folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// Schema version.
    pub version: u32,
    /// The resolved configuration.
    pub config: RunConfig,
    /// The data.
    pub dataset: DatasetInfo,
    /// One row per stage, in run order.
    pub stages: Vec<StageResult>,
}

impl Report {
    /// The aligned table printed to the terminal and embedded in `report.md`.
    pub fn table(&self) -> String {
        let mut s = String::from(
            "| stage | accuracy | sparsity | non-zero params | seconds |\n|---|---:|---:|---:|---:|\n",
        );
        for st in &self.stages {
            s.push_str(&format!(
                "| {} | {:.2} % | {:.4} | {} | {:.1} |\n",
                st.name,
                100.0 * st.accuracy,
                st.sparsity,
                st.nonzero,
                st.seconds
            ));
        }
        s
    }

    /// Markdown report: the table and the resolved configuration.
    pub fn markdown(&self) -> Result<String> {
        Ok(format!(
            "# kdprune run\n\nDataset `{}` ({} train / {} test, {} classes), teacher `{}`, student `{}`, \
             target sparsity {}, seed {}.\n\n{}\n## Configuration\n\n```toml\n{}```\n",
            self.dataset.name,
            self.dataset.train,
            self.dataset.test,
            self.dataset.num_classes,
            self.config.settings.teacher_model,
            self.config.settings.student_model,
            self.config.sparsity,
            self.config.seed,
            self.table(),
            toml::to_string(&self.config)?
        ))
    }
}

/// The run in progress: its configuration, data and the stages done.
struct Runner<'a> {
    cfg: &'a RunConfig,
    data: &'a Data,
    views: Views<'a>,
    out: PathBuf,
    verbose: bool,
    stages: Vec<StageResult>,
    /// Stages an interrupted run of the same settings finished, in order.
    reused: Vec<StageResult>,
    /// Save a stage's resume point every this many steps too.
    save_every: Option<usize>,
}

/// The stages of a run, in the order they finish.
const STAGES: [&str; 8] = [
    "teacher",
    "dense",
    "kd_tuned",
    "pruned_one_shot",
    "retrained_kd",
    "retrained_no_kd",
    "magnitude_one_shot",
    "magnitude_retrained",
];

impl Runner<'_> {
    /// The model (and masks) of stage `name` when an earlier run of this
    /// folder finished it: its checkpoint is loaded and its figures kept.
    fn reuse(&mut self, name: &str, device: &Device) -> Result<Option<(Model, MaskSet)>> {
        let k = self.stages.len();
        match self.reused.get(k) {
            Some(st) if st.name == name => {
                let st = st.clone();
                let (model, masks, _) = load_model(&self.out.join(&st.checkpoint), device)?;
                if self.verbose {
                    eprintln!("{}: finished before, reused", self.label(name));
                }
                self.stages.push(st);
                self.save_progress(false)?;
                Ok(Some((model, masks)))
            }
            _ => Ok(None),
        }
    }

    /// Rewrites `progress.json` with the stages finished so far.
    fn save_progress(&self, complete: bool) -> Result<()> {
        let progress = Progress {
            finished: self.stages.clone(),
            complete,
        };
        write_atomic(
            &self.out.join(PROGRESS_FILE),
            serde_json::to_string_pretty(&progress)?,
        )
    }

    /// The resume point of stage `name` inside the run folder:
    /// `NAME.resume`, written at every epoch end of the stage and removed
    /// once the stage's checkpoint is written. The folder's settings are
    /// already those of `config.toml`, so the stage name is its fingerprint.
    fn resume_file(&self, name: &str) -> ResumeFile {
        ResumeFile::new(
            self.out.join(format!("{name}.resume")),
            format!("kdprune run, stage {name}"),
        )
    }

    /// Trains `model` for stage `name`, continuing from the stage's resume
    /// point when an interrupted run of this folder left one (said on
    /// stderr), saving one at each epoch end.
    fn train_stage(
        &self,
        name: &str,
        model: &Model,
        teacher: Option<&Model>,
        config: &kd_core::TrainConfig,
        hook: &mut dyn kd_core::StepHook,
    ) -> Result<()> {
        let file = self.resume_file(name);
        let found = file.path().is_file();
        train_resumable(
            model,
            teacher,
            &self.views.train_data(),
            config,
            hook,
            &self.label(name),
            self.verbose,
            Some((&file, found)),
            self.save_every,
        )?;
        Ok(())
    }

    /// `stage k/8 NAME`: the progress label of the stage about to finish.
    fn label(&self, name: &str) -> String {
        format!("stage {}/{} {name}", self.stages.len() + 1, STAGES.len())
    }

    /// Evaluates, measures, saves and records a stage.
    fn finish(
        &mut self,
        name: &str,
        model: &Model,
        masks: Option<&MaskSet>,
        start: Instant,
    ) -> Result<()> {
        let cfg = self.cfg;
        let s = &cfg.settings;
        let accuracy = kd_core::evaluate(model, &self.views.test, 512)?;
        let prunable = prunable_names(model.config(), &filter(s.keep_first, s.keep_last));
        let (sparsity, nonzero) = measure(model, &prunable)?;
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
        save_stage(
            &self.out.join(&file),
            model,
            masks,
            self.data,
            cfg.seed,
            name,
        )?;
        self.resume_file(name).remove()?;
        let seconds = start.elapsed().as_secs_f64();
        if self.verbose {
            eprintln!(
                "{}: accuracy {:.2} %, sparsity {sparsity:.4}, {nonzero} non-zero parameters, {seconds:.1} s",
                self.label(name),
                100.0 * accuracy
            );
        }
        self.stages.push(StageResult {
            name: name.into(),
            accuracy,
            sparsity,
            nonzero,
            seconds,
            checkpoint: file,
        });
        self.save_progress(false)
    }

    /// A model trained from scratch with cross-entropy (teacher or dense
    /// student), or the trained one given.
    fn trained(
        &mut self,
        stage: &str,
        architecture: &str,
        checkpoint: Option<&std::path::Path>,
        epochs: usize,
        salt: u64,
        device: &Device,
    ) -> Result<Model> {
        if let Some((model, _)) = self.reuse(stage, device)? {
            return Ok(model);
        }
        let cfg = self.cfg;
        let s = &cfg.settings;
        let seed = cfg.seed;
        let start = Instant::now();
        let model = match checkpoint {
            Some(p) if stage == "teacher" => load_teacher(p, self.data, seed, device)?,
            Some(p) => load_trained(p, self.data, seed, device, "the student checkpoint")?,
            None => {
                let model = new_model(architecture, self.data, seed ^ salt, device)?;
                let tc = s.train_config(epochs, s.lr, LossConfig::CrossEntropy, seed ^ salt);
                self.train_stage(stage, &model, None, &tc, &mut NoHook)?;
                model
            }
        };
        self.finish(stage, &model, None, start)?;
        Ok(model)
    }

    /// Retrains a copy of `pruned` under `masks` with `loss` (the batch order
    /// of every retraining is the same, so the variants are paired).
    fn retrain(
        &mut self,
        name: &str,
        pruned: &Model,
        teacher: Option<&Model>,
        masks: &MaskSet,
        loss: LossConfig,
    ) -> Result<()> {
        if self.reuse(name, pruned.device())?.is_some() {
            return Ok(());
        }
        let cfg = self.cfg;
        let s = &cfg.settings;
        let start = Instant::now();
        let model = clone_model(pruned)?;
        let tc = s.train_config(
            s.retrain_epochs,
            s.finetune_lr,
            loss,
            cfg.seed ^ Stage::Retrain.salt(),
        );
        let mut fixed = masks.clone();
        self.train_stage(name, &model, teacher, &tc, &mut PruneHook(&mut fixed))?;
        self.finish(name, &model, Some(masks), start)
    }

    /// One-shot masks of `criterion` on `model` at the run's sparsity.
    fn prune(
        &self,
        criterion: &dyn Importance,
        model: &Model,
        teacher: Option<&Model>,
        prunable: &[String],
    ) -> Result<MaskSet> {
        let settings = self.cfg.settings.scoring(self.cfg.seed)?;
        prune_masks(
            criterion,
            model,
            teacher,
            self.data,
            prunable,
            settings,
            self.cfg.sparsity,
            Scope::Global,
            &MaskSet::new(),
        )
    }
}

/// Runs the seven stages and the baseline on `device`, writing every
/// checkpoint, `config.toml`, `report.json` and `report.md` into the output
/// folder; progress on stderr when `verbose`. An existing run folder of the
/// same settings is continued ([`run_method_with`]).
pub fn run_method(cfg: &RunConfig, device: &Device, verbose: bool) -> Result<Report> {
    let options = RunOptions {
        verbose,
        ..RunOptions::default()
    };
    run_method_with(cfg, device, &options)
}

/// How [`run_method_with`] runs: none of it changes the results.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Progress on stderr.
    pub verbose: bool,
    /// Start a run folder of other settings over instead of refusing it.
    pub force: bool,
    /// Inside a stage, also save its resume point every this many optimizer
    /// steps; by default at the end of every epoch only.
    pub save_every: Option<usize>,
}

/// The files of a run folder that say what it holds: the settings, the
/// finished stages (rewritten after each), the report (written last).
const CONFIG_FILE: &str = "config.toml";
const PROGRESS_FILE: &str = "progress.json";

/// What a run folder's `progress.json` holds: the stages finished so far
/// and whether the report was written.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Progress {
    /// Finished stages, in order, with their figures.
    pub finished: Vec<StageResult>,
    /// Every stage finished and the report written.
    pub complete: bool,
}

/// Prepares the run folder `out` for `config` (its TOML text): a new or
/// empty folder is created; a run folder of the same settings is continued
/// (its finished stages are returned and reused); a run folder of other
/// settings, a sweep folder or any other non-empty folder is refused —
/// unless `force`, which removes the run's own files first. Only then is
/// `config.toml` written.
pub fn prepare_run_folder(out: &Path, config: &str, force: bool) -> Result<Vec<StageResult>> {
    let non_empty = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some());
    if non_empty {
        if out.join("recipe.toml").exists() || out.join("cells").is_dir() {
            bail!(
                "{} is a sweep folder; kdprune run needs a folder of its own (--out)",
                out.display()
            );
        }
        let old = std::fs::read_to_string(out.join(CONFIG_FILE)).ok();
        match (old, force) {
            (_, true) => {
                for name in STAGES
                    .iter()
                    .flat_map(|s| [format!("{s}.safetensors"), format!("{s}.resume")])
                    .chain([CONFIG_FILE, PROGRESS_FILE, "report.json", "report.md"].map(String::from))
                {
                    let path = out.join(name);
                    if path.exists() {
                        std::fs::remove_file(&path)
                            .with_context(|| format!("cannot remove {}", path.display()))?;
                    }
                }
            }
            (None, false) => bail!(
                "{} is not empty and holds no run (no {CONFIG_FILE}); use another --out",
                out.display()
            ),
            (Some(old), false) if old != config => bail!(
                "{} holds a run of other settings (see its {CONFIG_FILE}); use another --out, or --force to start it over",
                out.display()
            ),
            (Some(_), false) => {
                let progress: Progress = match std::fs::read_to_string(out.join(PROGRESS_FILE)) {
                    Ok(text) => serde_json::from_str(&text).with_context(|| {
                        format!("{} is damaged", out.join(PROGRESS_FILE).display())
                    })?,
                    Err(_) => Progress::default(),
                };
                // A stage counts only with its checkpoint, and only after
                // every stage before it.
                let reused: Vec<StageResult> = progress
                    .finished
                    .into_iter()
                    .zip(STAGES)
                    .take_while(|(st, name)| {
                        st.name == *name && out.join(&st.checkpoint).is_file()
                    })
                    .map(|(st, _)| st)
                    .collect();
                return Ok(reused);
            }
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    write_atomic(&out.join(CONFIG_FILE), config)?;
    Ok(Vec::new())
}

/// [`run_method`] with [`RunOptions`]: `force` starts a run folder of other
/// settings over; an interrupted stage continues from its resume point.
pub fn run_method_with(cfg: &RunConfig, device: &Device, options: &RunOptions) -> Result<Report> {
    let RunOptions {
        verbose,
        force,
        save_every,
    } = options.clone();
    cfg.validate()?;
    crate::files::check_out_dir(&cfg.out_dir())?;
    let s = &cfg.settings;
    let data = s.load_data(cfg.seed)?;
    // Unknown architecture names fail now, not after the teacher has trained.
    for (name, ckpt) in [
        (&s.teacher_model, &cfg.teacher_checkpoint),
        (&s.student_model, &cfg.student_checkpoint),
    ] {
        if ckpt.is_none() {
            ModelConfig::from_name(name, data.input_shape(), data.num_classes())?;
        }
    }
    let kd_loss = s.kd_loss_config()?;
    s.scoring(cfg.seed)?;
    // Checkpoints given are checked (architecture, data split) before the
    // folder is touched; the stages load them again.
    if let Some(p) = &cfg.teacher_checkpoint {
        load_teacher(p, &data, cfg.seed, device)?;
    }
    if let Some(p) = &cfg.student_checkpoint {
        load_trained(p, &data, cfg.seed, device, "the student checkpoint")?;
    }
    let out = cfg.out_dir();
    let reused = prepare_run_folder(&out, &toml::to_string(cfg)?, force)?;
    if verbose && !reused.is_empty() {
        eprintln!(
            "continuing {}: {} of {} stages finished ({}), reused",
            out.display(),
            reused.len(),
            STAGES.len(),
            reused
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

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
            describe(&s.teacher_model, &cfg.teacher_checkpoint),
            describe(&s.student_model, &cfg.student_checkpoint),
            cfg.sparsity,
            cfg.seed,
            out.display()
        );
    }
    let mut r = Runner {
        cfg,
        data: &data,
        views: data.views(s.augment_for(&data)),
        out: out.clone(),
        verbose,
        stages: Vec::new(),
        reused,
        save_every,
    };

    // 1–2. teacher and dense student (CE), or trained ones
    let teacher = r.trained(
        "teacher",
        &s.teacher_model,
        cfg.teacher_checkpoint.as_deref(),
        s.teacher_epochs,
        salt::TEACHER,
        device,
    )?;
    let student = r.trained(
        "dense",
        &s.student_model,
        cfg.student_checkpoint.as_deref(),
        s.student_epochs,
        salt::STUDENT,
        device,
    )?;
    let prunable = prunable_names(student.config(), &filter(s.keep_first, s.keep_last));
    if prunable.is_empty() {
        bail!(
            "the student `{}` has no prunable weights with this filter",
            student.config().name()
        );
    }

    // 3. KD fine-tuning under the frozen teacher: α·KD + (1−α)·CE
    let tuned = match r.reuse("kd_tuned", device)? {
        Some((model, _)) => model,
        None => {
            let start = Instant::now();
            let tuned = clone_model(&student)?;
            let tc = s.train_config(s.kd_epochs, s.finetune_lr, kd_loss, cfg.seed ^ salt::KD);
            r.train_stage("kd_tuned", &tuned, Some(&teacher), &tc, &mut NoHook)?;
            r.finish("kd_tuned", &tuned, None, start)?;
            tuned
        }
    };

    // 4–5. teacher-guided importance |θ ⊙ ∂L/∂θ|, one global threshold
    let (pruned, masks) = match r.reuse("pruned_one_shot", device)? {
        Some(done) => done,
        None => {
            let start = Instant::now();
            let masks = r.prune(&TeacherGuided::default(), &tuned, Some(&teacher), &prunable)?;
            let pruned = clone_model(&tuned)?;
            apply_masks(&pruned, &masks)?;
            r.finish("pruned_one_shot", &pruned, Some(&masks), start)?;
            (pruned, masks)
        }
    };

    // 6–7. retraining under the fixed mask, with and without KD
    r.retrain("retrained_kd", &pruned, Some(&teacher), &masks, kd_loss)?;
    r.retrain(
        "retrained_no_kd",
        &pruned,
        None,
        &masks,
        LossConfig::CrossEntropy,
    )?;

    // baseline: global magnitude pruning of the same KD-tuned student, retrained without KD
    let (mag, mag_masks) = match r.reuse("magnitude_one_shot", device)? {
        Some(done) => done,
        None => {
            let start = Instant::now();
            let mag_masks = r.prune(&Magnitude, &tuned, None, &prunable)?;
            let mag = clone_model(&tuned)?;
            apply_masks(&mag, &mag_masks)?;
            r.finish("magnitude_one_shot", &mag, Some(&mag_masks), start)?;
            (mag, mag_masks)
        }
    };
    r.retrain(
        "magnitude_retrained",
        &mag,
        None,
        &mag_masks,
        LossConfig::CrossEntropy,
    )?;

    let report = Report {
        version: 1,
        config: cfg.clone(),
        dataset: DatasetInfo::of(&data),
        stages: r.stages.clone(),
    };
    write_atomic(
        &out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    write_atomic(&out.join("report.md"), report.markdown()?)?;
    r.save_progress(true)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `config.toml` a run writes reads back as the same configuration
    /// (the shared settings are flattened: the keys stay flat), and a file of
    /// the keys a user writes takes defaults for the rest.
    #[test]
    fn the_saved_configuration_reads_back() {
        let cfg = RunConfig {
            sparsity: 0.95,
            seed: 3,
            teacher_checkpoint: Some("t.safetensors".into()),
            settings: Settings {
                kd_loss: "kd".into(),
                hub_revision: Some("main".into()),
                ..Settings::default()
            },
            ..RunConfig::default()
        };
        let text = toml::to_string(&cfg).unwrap();
        assert!(text.contains("sparsity = 0.95") && text.contains("kd_loss = \"kd\""));
        let back: RunConfig = crate::settings::from_toml(&text, "config").unwrap();
        assert_eq!(back, cfg);
        let partial: RunConfig =
            crate::settings::from_toml("student_epochs = 2\nseed = 1\n", "config").unwrap();
        assert_eq!(partial.settings.student_epochs, 2);
        assert_eq!(partial.seed, 1);
        assert_eq!(partial.sparsity, RunConfig::default().sparsity);
    }
}
