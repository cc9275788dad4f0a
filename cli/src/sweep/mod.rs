//! Sweeps: pruning methods × target sparsities × seeds, each cell a full
//! prune-and-retrain, with its cost.
//!
//! Per seed, the teacher and the dense student (with a copy of its weights at
//! `rewind_epoch` for the lottery-ticket schemes) are trained once and saved
//! under `models_dir/seed<seed>/` (see [`SweepConfig::models_dir`]), the
//! KD-tuned student (for the teacher-guided score) under `out/seed<seed>/`;
//! all are reused by every cell and by a later invocation.
//! Every finished cell is written at once to `out/cells/` (atomically), so an
//! interrupted sweep resumes where it stopped; `out/recipe.toml` records the
//! settings the cells depend on, and a sweep with other settings refuses to
//! mix its cells with them.
//!
//! The methods run through prune-core's drivers ([`prune_core::schedule`]):
//! one-shot criteria, GMP, IMP and COLT, over a [`CellLearner`].
//!
//! Costs count training and scoring passes of samples through a network
//! (student forward and backward, teacher forward; test evaluations are not
//! counted) and the wall time of the cell, plus, for the teacher-guided
//! score, the KD fine-tuning it needs (shared by its cells of one seed, and
//! counted in each). The teacher and the dense student are common to every
//! method and not counted.

mod cell;
pub mod config;
mod grid;
pub mod plot;
pub mod results;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use kd_core::{LossConfig, NoHook, TrainData, TrainReport};
use kdprune_data::Dataset;
use kdprune_models::Model;
use prune_core::schedule::{colt, gmp, imp, one_shot, Learner, Stage, StepPruner};
use prune_core::{MaskSet, NamedTensors, PruneError, Scope};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::checkpoints::{
    apply_masks, clone_model, filter, load_model, load_teacher, measure, new_model, prunable_names,
    save_stage, select,
};
use crate::claim::Claim;
use crate::data::{Data, DataView};
use crate::files::write_atomic;
use crate::scoring::ModelScoring;
use crate::training::{salt, train, PruneHook, Snapshot};
pub use config::{Method, ModelsRecipe, SweepConfig};
pub use results::CellResult;

/// Salt of the shuffle that splits the training set into COLT's two halves.
const COLT_SPLIT_SALT: u64 = 0x434F_4C54;

/// Runs every cell of `cfg` not finished before (on `device`, progress on
/// stderr when `verbose`) and writes the results: `results.csv`,
/// `results.json`, `table.md` (which quotes `command`, the command that
/// regenerates it) and the plots. Returns every cell of the grid.
pub fn run_sweep(
    cfg: &SweepConfig,
    command: &str,
    device: &Device,
    verbose: bool,
) -> Result<Vec<CellResult>> {
    cfg.validate()?;
    crate::files::check_out_dir(&cfg.out)?;
    if cfg.out.join("config.toml").is_file() && !cfg.out.join("recipe.toml").exists() {
        bail!(
            "{} is a run folder (kdprune run); a sweep needs a folder of its own (out)",
            cfg.out.display()
        );
    }
    let s = &cfg.settings;
    let methods: Vec<(String, Method)> = cfg
        .methods
        .iter()
        .map(|m| Ok((m.clone(), Method::parse(m)?)))
        .collect::<Result<_>>()?;
    let out = cfg.out.clone();
    std::fs::create_dir_all(out.join("cells"))
        .with_context(|| format!("cannot create {}", out.display()))?;
    check_recipe(
        &out.join("recipe.toml"),
        &cfg.fingerprint()?,
        "cells",
        |old| cfg.same_fingerprint(old),
    )?;
    let models_dir = cfg.models_dir();
    std::fs::create_dir_all(&models_dir)
        .with_context(|| format!("cannot create {}", models_dir.display()))?;
    let models = cfg.models_recipe();
    check_recipe(
        &models_dir.join("models.toml"),
        &models.to_toml()?,
        "teachers and dense students",
        |old| Ok(models.same_as(old)),
    )?;
    write_atomic(&out.join("sweep.toml"), toml::to_string(cfg)?)?;

    let total = methods.len() * cfg.sparsities.len() * cfg.seeds.len();
    let mut cells = Vec::with_capacity(total);
    // Cells another process holds a claim on (several workers, one folder).
    let mut elsewhere: Vec<PathBuf> = Vec::new();
    let mut done = 0usize;
    for &seed in &cfg.seeds {
        let data = s.load_data(seed)?;
        let mut ctx: Option<SeedModels> = None;
        for (name, method) in &methods {
            for &sparsity in &cfg.sparsities {
                done += 1;
                let file = out.join("cells").join(cell_file_name(name, sparsity, seed));
                if let Some(cell) = read_cell(&file)? {
                    if verbose {
                        eprintln!("[{done}/{total}] {name} s={sparsity} seed {seed}: done before, skipped");
                    }
                    cells.push(cell);
                    continue;
                }
                let Some(_claim) = Claim::try_new(&file.with_extension("lock"))? else {
                    if verbose {
                        eprintln!("[{done}/{total}] {name} s={sparsity} seed {seed}: another worker has it");
                    }
                    elsewhere.push(file);
                    continue;
                };
                // Another worker may have finished it between the two looks.
                if let Some(cell) = read_cell(&file)? {
                    cells.push(cell);
                    continue;
                }
                if ctx.is_none() {
                    // One worker trains a seed's teacher and dense student;
                    // the others wait for it and load them.
                    let lock = cfg.models_dir().join(format!("seed{seed}.lock"));
                    let _models = Claim::wait(&lock, || {
                        if verbose {
                            eprintln!("  waiting for another worker's seed {seed} models");
                        }
                    })?;
                    ctx = Some(SeedModels::prepare(cfg, &data, seed, device, verbose)?);
                }
                let ctx = ctx.as_mut().expect("prepared above");
                if verbose {
                    eprintln!("[{done}/{total}] {name} s={sparsity} seed {seed}");
                }
                let cell = Cell {
                    cfg,
                    data: &data,
                    seed,
                    verbose,
                }
                .run(name, method, sparsity, ctx)
                .with_context(|| format!("cell {name} s={sparsity} seed {seed} failed"))?;
                if verbose {
                    eprintln!(
                        "  {name} s={sparsity} seed {seed}: accuracy {:.2} % (best {:.2} %), sparsity {:.4}, {:.1} epochs, {:.1} s",
                        100.0 * cell.final_accuracy,
                        100.0 * cell.best_accuracy,
                        cell.measured_sparsity,
                        cell.epochs,
                        cell.seconds
                    );
                }
                write_atomic(&file, serde_json::to_string_pretty(&cell)?)?;
                cells.push(cell);
            }
        }
    }
    // Cells of other workers: taken if they have finished meanwhile; if not,
    // the last worker (or `--report-only`) writes the tables.
    let mut missing = 0;
    for file in &elsewhere {
        match read_cell(file)? {
            Some(cell) => cells.push(cell),
            None => missing += 1,
        }
    }
    if missing > 0 {
        eprintln!(
            "{missing} of {total} cells are still being computed by other workers: the last one to finish writes the tables (or run `kdprune sweep --config … --report-only` then)"
        );
        return Ok(cells);
    }
    write_report(cfg, &cells, command)?;
    Ok(cells)
}

/// `kdprune sweep --report-only`: the tables, CSV/JSON and plots of a sweep
/// folder from its finished cells, computing nothing; fails, naming the
/// first ones, when cells are missing.
pub fn sweep_report(cfg: &SweepConfig, command: &str) -> Result<Vec<CellResult>> {
    cfg.validate()?;
    let mut cells = Vec::new();
    let mut missing = Vec::new();
    for &seed in &cfg.seeds {
        for name in &cfg.methods {
            for &sparsity in &cfg.sparsities {
                let file = cfg
                    .out
                    .join("cells")
                    .join(cell_file_name(name, sparsity, seed));
                match read_cell(&file)? {
                    Some(cell) => cells.push(cell),
                    None => missing.push(format!("{name} s={sparsity} seed {seed}")),
                }
            }
        }
    }
    if !missing.is_empty() {
        bail!(
            "{} has {} unfinished cells (first: {}); run the sweep to compute them",
            cfg.out.display(),
            missing.len(),
            missing[..missing.len().min(3)].join(", ")
        );
    }
    write_report(cfg, &cells, command)?;
    Ok(cells)
}

fn write_report(cfg: &SweepConfig, cells: &[CellResult], command: &str) -> Result<()> {
    let s = &cfg.settings;
    let out = &cfg.out;
    let title = format!(
        "{}: {} student, {} teacher, {} seed(s)",
        s.dataset,
        s.student_model,
        s.teacher_model,
        cfg.seeds.len()
    );
    results::write_results(out, cells, &cfg.methods, &cfg.sparsities, &title, command)
}

/// `magnitude_s0.9_seed0.json`; `:` of a method name becomes `-`.
fn cell_file_name(method: &str, sparsity: f64, seed: u64) -> String {
    format!("{}_s{sparsity}_seed{seed}.json", method.replace(':', "-"))
}

/// A finished cell, if its file exists.
pub(crate) fn read_cell(path: &Path) -> Result<Option<CellResult>> {
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let cell = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a finished cell (delete it to recompute the cell)",
            path.display()
        )
    })?;
    Ok(Some(cell))
}

/// Refuses to mix `what` computed under other settings into this sweep:
/// `path` records the settings of the first sweep that wrote there
/// (`recipe`), and `same` tells whether a recorded one is the same.
fn check_recipe(
    path: &Path,
    recipe: &str,
    what: &str,
    same: impl Fn(&str) -> Result<bool>,
) -> Result<()> {
    match std::fs::read_to_string(path) {
        Ok(old) if !same(&old)? => bail!(
            "{} holds {what} computed with other settings (see {}); use another folder, or delete it",
            path.parent().unwrap_or(Path::new(".")).display(),
            path.display()
        ),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_atomic(path, recipe),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Training and scoring cost of a cell.
#[derive(Clone, Copy, Debug, Default)]
struct Cost {
    epochs: f64,
    forward: u64,
    backward: u64,
    seconds: f64,
}

impl Cost {
    /// Training for `epochs` epochs on `n` of the `full` training samples,
    /// under the teacher when `teacher`: its forward passes run over all
    /// `full` samples once when its logits are cached (no augmentation),
    /// else every epoch.
    fn training(n: usize, full: usize, epochs: usize, teacher: bool, augmented: bool) -> Cost {
        let passes = (n * epochs) as u64;
        let teacher_forwards = if !teacher || epochs == 0 {
            0
        } else if augmented {
            (full * epochs) as u64
        } else {
            full as u64
        };
        Cost {
            epochs: epochs as f64 * n as f64 / full as f64,
            forward: passes + teacher_forwards,
            backward: passes,
            seconds: 0.0,
        }
    }

    fn add(self, o: Cost) -> Cost {
        Cost {
            epochs: self.epochs + o.epochs,
            forward: self.forward + o.forward,
            backward: self.backward + o.backward,
            seconds: self.seconds + o.seconds,
        }
    }
}

/// The models of one seed that every cell starts from.
struct SeedModels {
    teacher: Model,
    dense: Model,
    dense_accuracy: f64,
    /// Every tensor of the dense student at the end of epoch `rewind_epoch`.
    rewind: NamedTensors,
    /// The dense student fine-tuned under the teacher, and what that cost.
    kd_tuned: Option<(Model, Cost)>,
    /// `out/seed<seed>`, where the KD-tuned student is kept.
    dir: PathBuf,
}

impl SeedModels {
    /// Trains (or loads, from an earlier invocation) the teacher and the dense
    /// student of `seed`.
    fn prepare(
        cfg: &SweepConfig,
        data: &Data,
        seed: u64,
        device: &Device,
        verbose: bool,
    ) -> Result<Self> {
        let s = &cfg.settings;
        let shared = cfg.models_dir().join(format!("seed{seed}"));
        let dir = cfg.out.join(format!("seed{seed}"));
        let views = data.views(s.augment_for(data));
        let teacher_path = shared.join("teacher.safetensors");
        let teacher = if teacher_path.exists() {
            load_teacher(&teacher_path, data, seed, device)?
        } else {
            let teacher = new_model(&s.teacher_model, data, seed ^ salt::TEACHER, device)?;
            let tc = s.train_config(
                s.teacher_epochs,
                s.lr,
                LossConfig::CrossEntropy,
                seed ^ salt::TEACHER,
            );
            train(
                &teacher,
                None,
                &views.train_data(),
                &tc,
                &mut NoHook,
                "teacher",
                verbose,
            )?;
            save_stage(&teacher_path, &teacher, None, data, seed, "teacher")?;
            teacher
        };
        let dense_path = shared.join("dense.safetensors");
        let rewind_path = shared.join("rewind.safetensors");
        let (dense, rewind) = if dense_path.exists() && rewind_path.exists() {
            let rewind = load_model(&rewind_path, device)?.0.tensors()?;
            (load_model(&dense_path, device)?.0, rewind)
        } else {
            let dense = new_model(&s.student_model, data, seed ^ salt::STUDENT, device)?;
            let tc = s.train_config(
                s.student_epochs,
                s.lr,
                LossConfig::CrossEntropy,
                seed ^ salt::STUDENT,
            );
            let steps = data.split.train.len().div_ceil(s.batch_size);
            let mut snapshot = Snapshot {
                at_step: (cfg.rewind_epoch * steps).checked_sub(1),
                model: &dense,
                taken: None,
            };
            if snapshot.at_step.is_none() {
                snapshot.taken = Some(dense.tensors()?);
            }
            train(
                &dense,
                None,
                &views.train_data(),
                &tc,
                &mut snapshot,
                "dense",
                verbose,
            )?;
            let rewind = snapshot
                .taken
                .context("the rewind point was never reached")?;
            let at_rewind = clone_model(&dense)?;
            at_rewind.load_tensors(&rewind)?;
            save_stage(&rewind_path, &at_rewind, None, data, seed, "rewind")?;
            save_stage(&dense_path, &dense, None, data, seed, "dense")?;
            (dense, rewind)
        };
        let dense_accuracy = kd_core::evaluate(&dense, &views.test, 512)?;
        Ok(SeedModels {
            teacher,
            dense,
            dense_accuracy,
            rewind,
            kd_tuned: None,
            dir,
        })
    }

    /// The dense student fine-tuned under the teacher (the teacher-guided
    /// score's starting point), trained on first use.
    fn kd_tuned(
        &mut self,
        cfg: &SweepConfig,
        data: &Data,
        seed: u64,
        verbose: bool,
    ) -> Result<(&Model, Cost)> {
        if self.kd_tuned.is_none() {
            let s = &cfg.settings;
            let path = self.dir.join("kd_tuned.safetensors");
            let cost_path = self.dir.join("kd_tuned.json");
            let n = data.split.train.len();
            let augmented = !s.augment_for(data).is_identity();
            let mut cost = Cost::training(n, n, s.kd_epochs, true, augmented);
            let model = if path.exists() && cost_path.exists() {
                let secs: f64 = std::fs::read_to_string(&cost_path)?.trim().parse()?;
                cost.seconds = secs;
                load_model(&path, self.dense.device())?.0
            } else {
                let start = Instant::now();
                let model = clone_model(&self.dense)?;
                let tc = s.train_config(
                    s.kd_epochs,
                    s.finetune_lr,
                    s.kd_loss_config()?,
                    seed ^ salt::KD,
                );
                let views = data.views(s.augment_for(data));
                train(
                    &model,
                    Some(&self.teacher),
                    &views.train_data(),
                    &tc,
                    &mut NoHook,
                    "kd_tuned",
                    verbose,
                )?;
                cost.seconds = start.elapsed().as_secs_f64();
                save_stage(&path, &model, None, data, seed, "kd_tuned")?;
                write_atomic(&cost_path, format!("{}\n", cost.seconds))?;
                model
            };
            self.kd_tuned = Some((model, cost));
        }
        let (m, c) = self.kd_tuned.as_ref().expect("set above");
        Ok((m, *c))
    }
}

/// A copy of the student trained by prune-core's drivers: it knows the
/// sweep's schedule of every [`Stage`], trains on its own part of the data
/// (a COLT copy on its half), rewinds to the seed's rewind point, and adds
/// the cost of its training up.
pub struct CellLearner<'a> {
    cfg: &'a SweepConfig,
    model: Model,
    train: DataView<'a>,
    test: DataView<'a>,
    /// Samples of the whole training set (the teacher's table covers them).
    full_len: usize,
    teacher: &'a Model,
    rewind: &'a NamedTensors,
    prunable: &'a [String],
    seed: u64,
    verbose: bool,
    /// The cell's cost, shared by the learners of one cell so that it adds
    /// up in training order.
    cost: &'a std::cell::Cell<Cost>,
}

impl CellLearner<'_> {
    /// Cost of `epochs` epochs on this learner's samples, with or without
    /// the teacher.
    fn train_cost(&self, epochs: usize, teacher: bool) -> Cost {
        Cost::training(
            self.train.ds.len(),
            self.full_len,
            epochs,
            teacher,
            !self.train.augment.is_identity(),
        )
    }
}

impl Learner for CellLearner<'_> {
    type Report = TrainReport;

    fn weights(&self) -> prune_core::Result<NamedTensors> {
        let tensors = self.model.tensors().map_err(PruneError::external)?;
        select(&tensors, self.prunable).map_err(PruneError::external)
    }

    fn apply(&mut self, masks: &MaskSet) -> prune_core::Result<()> {
        apply_masks(&self.model, masks).map_err(PruneError::external)
    }

    /// `θ ← θ_rewind ⊙ m` for the weights, `θ_rewind` for everything else
    /// (biases, batch-norm parameters and statistics).
    fn rewind(&mut self, masks: &MaskSet) -> prune_core::Result<()> {
        self.model
            .load_tensors(self.rewind)
            .map_err(PruneError::external)?;
        self.apply(masks)
    }

    fn train(
        &mut self,
        stage: Stage,
        pruner: &mut dyn StepPruner,
    ) -> prune_core::Result<TrainReport> {
        let (cfg, s) = (self.cfg, &self.cfg.settings);
        let (epochs, lr, loss) = match stage {
            Stage::Retrain => (
                s.retrain_epochs,
                s.finetune_lr,
                cfg.retrain_loss_config().map_err(PruneError::external)?,
            ),
            Stage::Gmp => (cfg.gmp_epochs, s.finetune_lr, LossConfig::CrossEntropy),
            Stage::ImpRound(_) => (cfg.imp_round_epochs, s.lr, LossConfig::CrossEntropy),
            Stage::ColtRound { .. } | Stage::ColtFinal => {
                (cfg.colt_round_epochs, s.lr, LossConfig::CrossEntropy)
            }
        };
        let teacher = loss.needs_teacher().then_some(self.teacher);
        let tc = s.train_config(epochs, lr, loss, self.seed ^ stage.salt());
        let data = TrainData {
            train: &self.train,
            test: &self.test,
        };
        let report = train(
            &self.model,
            teacher,
            &data,
            &tc,
            &mut PruneHook(pruner),
            &stage.label(),
            self.verbose,
        )
        .map_err(PruneError::external)?;
        self.cost.set(
            self.cost
                .get()
                .add(self.train_cost(epochs, teacher.is_some())),
        );
        Ok(report)
    }
}

/// One cell's context.
struct Cell<'a> {
    cfg: &'a SweepConfig,
    data: &'a Data,
    seed: u64,
    verbose: bool,
}

impl Cell<'_> {
    fn run(
        &self,
        name: &str,
        method: &Method,
        sparsity: f64,
        ctx: &mut SeedModels,
    ) -> Result<CellResult> {
        let s = &self.cfg.settings;
        let start = Instant::now();
        let prunable = prunable_names(ctx.dense.config(), &filter(s.keep_first, s.keep_last));
        if prunable.is_empty() {
            bail!("the student has no prunable weights");
        }
        let meter = std::cell::Cell::new(Cost::default());
        let (model, report, fixed_from_step) = match method {
            Method::OneShot(criterion, from_kd) => self.one_shot(
                criterion.as_ref(),
                *from_kd,
                sparsity,
                &prunable,
                ctx,
                &meter,
            )?,
            Method::Gmp => {
                let mut learner =
                    self.learner(clone_model(&ctx.dense)?, &prunable, ctx, None, &meter);
                let steps = self.steps_per_epoch() * self.cfg.gmp_epochs;
                let o = gmp(
                    &mut learner,
                    sparsity,
                    steps as u64,
                    self.cfg.gmp_ramp_fraction,
                    self.cfg.gmp_frequency,
                )?;
                (learner.model, o.report, o.masks_fixed_from_step)
            }
            Method::Imp => {
                let mut learner =
                    self.learner(clone_model(&ctx.dense)?, &prunable, ctx, None, &meter);
                let o = imp(&mut learner, self.cfg.imp_rate, sparsity)?;
                (learner.model, o.report, 0)
            }
            Method::Colt => self.colt(sparsity, &prunable, ctx, &meter)?,
        };
        let extra = meter.get();
        let (measured, _) = measure(&model, &prunable)?;
        let final_accuracy = kd_core::evaluate(&model, &self.data.test_view(), 512)?;
        let steps = self.steps_per_epoch() as u64;
        let best_accuracy = report
            .epochs
            .iter()
            .filter(|e| e.epoch as u64 * steps > fixed_from_step)
            .map(|e| e.test_accuracy)
            .fold(final_accuracy, f64::max);
        let cost = extra.add(Cost {
            seconds: start.elapsed().as_secs_f64(),
            ..Cost::default()
        });
        Ok(CellResult {
            method: name.to_string(),
            sparsity,
            seed: self.seed,
            measured_sparsity: measured,
            final_accuracy,
            best_accuracy,
            dense_accuracy: ctx.dense_accuracy,
            epochs: cost.epochs,
            forward_passes: cost.forward,
            backward_passes: cost.backward,
            seconds: cost.seconds,
        })
    }

    fn steps_per_epoch(&self) -> usize {
        self.data
            .split
            .train
            .len()
            .div_ceil(self.cfg.settings.batch_size)
    }

    /// A learner over `model`, trained on `part` of the training set (all of
    /// it when `None`).
    fn learner<'a>(
        &'a self,
        model: Model,
        prunable: &'a [String],
        ctx: &'a SeedModels,
        part: Option<&'a Dataset>,
        cost: &'a std::cell::Cell<Cost>,
    ) -> CellLearner<'a> {
        let data = self.data;
        let augment = self.cfg.settings.augment_for(data);
        CellLearner {
            cfg: self.cfg,
            model,
            train: DataView::new(part.unwrap_or(&data.split.train), &data.norm, augment),
            test: data.test_view(),
            full_len: data.split.train.len(),
            teacher: &ctx.teacher,
            rewind: &ctx.rewind,
            prunable,
            seed: self.seed,
            verbose: self.verbose,
            cost,
        }
    }

    /// Score once, prune to `sparsity`, retrain under the mask.
    fn one_shot(
        &self,
        criterion: &dyn prune_core::Importance,
        from_kd: bool,
        sparsity: f64,
        prunable: &[String],
        ctx: &mut SeedModels,
        meter: &std::cell::Cell<Cost>,
    ) -> Result<(Model, TrainReport, u64)> {
        let s = &self.cfg.settings;
        let (base, cost) = if from_kd {
            let (m, c) = ctx.kd_tuned(self.cfg, self.data, self.seed, self.verbose)?;
            (clone_model(m)?, c)
        } else {
            (clone_model(&ctx.dense)?, Cost::default())
        };
        let mut scoring = ModelScoring::checked(
            criterion,
            &base,
            Some(&ctx.teacher),
            self.data,
            prunable,
            s.scoring(self.seed)?,
        )?;
        let (forward, backward) = criterion.passes((s.score_batches * s.batch_size) as u64);
        meter.set(cost.add(Cost {
            forward,
            backward,
            ..Cost::default()
        }));
        let mut learner = self.learner(base, prunable, ctx, None, meter);
        let o = one_shot(
            &mut learner,
            criterion,
            &mut scoring,
            sparsity,
            Scope::Global,
            &MaskSet::new(),
        )?;
        Ok((learner.model, o.report, 0))
    }

    /// COLT: two copies trained on the two halves of the training set,
    /// pruned by magnitude, masks intersected, rewound; the final ticket
    /// trains on the whole training set.
    fn colt(
        &self,
        sparsity: f64,
        prunable: &[String],
        ctx: &SeedModels,
        meter: &std::cell::Cell<Cost>,
    ) -> Result<(Model, TrainReport, u64)> {
        let train = &self.data.split.train;
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
            self.seed ^ COLT_SPLIT_SALT,
        ));
        let (a, b) = order.split_at(train.len() / 2);
        let halves: [Dataset; 2] = [train.subset(a), train.subset(b)];
        let mut copies = [
            self.learner(
                clone_model(&ctx.dense)?,
                prunable,
                ctx,
                Some(&halves[0]),
                meter,
            ),
            self.learner(
                clone_model(&ctx.dense)?,
                prunable,
                ctx,
                Some(&halves[1]),
                meter,
            ),
        ];
        let mut ticket = self.learner(clone_model(&ctx.dense)?, prunable, ctx, None, meter);
        let o = colt(&mut copies, &mut ticket, self.cfg.colt_rate, sparsity)?;
        Ok((ticket.model, o.report, 0))
    }
}
