//! `kdprune sweep`: pruning methods × target sparsities × seeds, each cell a
//! full prune-and-retrain, with its cost.
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
//! Costs count training and scoring passes of samples through a network
//! (student forward and backward, teacher forward; test evaluations are not
//! counted) and the wall time of the cell, plus, for the teacher-guided
//! score, the KD fine-tuning it needs (shared by its cells of one seed, and
//! counted in each). The teacher and the dense student are common to every
//! method and not counted.

pub mod config;
pub mod results;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::Var;
use clap::Args;
use kd_core::{
    LossConfig, NoHook, SgdConfig, StepHook, StepInfo, TrainConfig, TrainData, TrainReport,
};
use kdprune_data::{Dataset, HubOptions};
use kdprune_models::Model;
use prune_core::importance::{self, Criterion};
use prune_core::schedule::{colt_round, imp_sparsities, GmpSchedule};
use prune_core::{select, MaskSet, NamedTensors, ParamFilter};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::common::{self, Data, MaskHook, Source};
use crate::report::write_atomic;
use config::{GradientLoss, Method, SweepConfig};
use results::CellResult;

/// Flags of `kdprune sweep`.
#[derive(Args, Debug)]
pub struct SweepArgs {
    /// TOML file with the sweep's settings (every key optional; see the README).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output folder [default: the config's `out`, else runs/sweep].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress bars or per-epoch lines.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Salts of the batch orders, so that every stage of a seed differs.
const KD_SALT: u64 = 0x4B44;
const RETRAIN_SALT: u64 = 0x5254_0000;
const GMP_SALT: u64 = 0x474D_5000;
const IMP_SALT: u64 = 0x494D_5000;
const COLT_SALT: u64 = 0x434F_4C54;

/// Runs the sweep and writes its results.
pub fn sweep(args: SweepArgs) -> Result<()> {
    let mut cfg = match &args.config {
        Some(p) => SweepConfig::from_toml_file(p)?,
        None => SweepConfig::default(),
    };
    if let Some(out) = &args.out {
        cfg.out = out.clone();
    }
    cfg.validate()?;
    let verbose = !args.quiet;
    let methods: Vec<(String, Method)> = cfg
        .methods
        .iter()
        .map(|m| Ok((m.clone(), Method::parse(m)?)))
        .collect::<Result<_>>()?;
    let out = cfg.out.clone();
    std::fs::create_dir_all(out.join("cells"))
        .with_context(|| format!("cannot create {}", out.display()))?;
    check_recipe(&out.join("recipe.toml"), &cfg.fingerprint()?, "cells")?;
    let models_dir = cfg.models_dir();
    std::fs::create_dir_all(&models_dir)
        .with_context(|| format!("cannot create {}", models_dir.display()))?;
    check_recipe(
        &models_dir.join("models.toml"),
        &cfg.models_fingerprint()?,
        "teachers and dense students",
    )?;
    write_atomic(&out.join("sweep.toml"), &toml::to_string(&cfg)?)?;

    let hub = cfg.hub.then(HubOptions::from_env);
    let source = Source::new(cfg.data_dir.as_deref(), hub);
    let total = methods.len() * cfg.sparsities.len() * cfg.seeds.len();
    let mut cells = Vec::with_capacity(total);
    let mut done = 0usize;
    for &seed in &cfg.seeds {
        let data = common::load_data(&cfg.dataset, &source, seed)?;
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
                if ctx.is_none() {
                    ctx = Some(SeedModels::prepare(&cfg, &data, seed, verbose)?);
                }
                let ctx = ctx.as_mut().expect("prepared above");
                if verbose {
                    eprintln!("[{done}/{total}] {name} s={sparsity} seed {seed}");
                }
                let cell = Cell {
                    cfg: &cfg,
                    data: &data,
                    seed,
                    verbose,
                }
                .run(name, *method, sparsity, ctx)
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
                write_atomic(&file, &serde_json::to_string_pretty(&cell)?)?;
                cells.push(cell);
            }
        }
    }
    let command = match &args.config {
        Some(p) => format!(
            "kdprune sweep --config {} --out {}",
            p.display(),
            out.display()
        ),
        None => format!("kdprune sweep --out {}", out.display()),
    };
    let title = format!(
        "{}: {} student, {} teacher, {} seed(s)",
        cfg.dataset,
        cfg.student_model,
        cfg.teacher_model,
        cfg.seeds.len()
    );
    results::write_results(
        &out,
        &cells,
        &cfg.methods,
        &cfg.sparsities,
        &title,
        &command,
    )?;
    println!(
        "{} cells; results in {}",
        cells.len(),
        out.join("table.md").display()
    );
    Ok(())
}

/// `magnitude_s0.9_seed0.json`; `:` of a method name becomes `-`.
fn cell_file_name(method: &str, sparsity: f64, seed: u64) -> String {
    format!("{}_s{sparsity}_seed{seed}.json", method.replace(':', "-"))
}

/// A finished cell, if its file exists.
fn read_cell(path: &Path) -> Result<Option<CellResult>> {
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
/// `path` records the settings of the first sweep that wrote there.
fn check_recipe(path: &Path, recipe: &str, what: &str) -> Result<()> {
    match std::fs::read_to_string(path) {
        Ok(old) if old != recipe => bail!(
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
    fn prepare(cfg: &SweepConfig, data: &Data, seed: u64, verbose: bool) -> Result<Self> {
        let shared = cfg.models_dir().join(format!("seed{seed}"));
        let dir = cfg.out.join(format!("seed{seed}"));
        let device = common::device();
        let teacher_path = shared.join("teacher.safetensors");
        let teacher = if teacher_path.exists() {
            common::load_teacher(&teacher_path, data, seed, &device)?
        } else {
            let teacher = common::new_model(
                &cfg.teacher_model,
                data,
                seed ^ common::TEACHER_SALT,
                &device,
            )?;
            let tc = train_config(
                cfg,
                data,
                cfg.teacher_epochs,
                cfg.lr,
                LossConfig::CrossEntropy,
                seed ^ common::TEACHER_SALT,
            );
            fit(
                &teacher,
                None,
                &data.train_data(),
                &tc,
                &mut NoHook,
                "teacher",
                verbose,
            )?;
            save(&teacher_path, &teacher, data, seed, "teacher")?;
            teacher
        };
        let dense_path = shared.join("dense.safetensors");
        let rewind_path = shared.join("rewind.safetensors");
        let (dense, rewind) = if dense_path.exists() && rewind_path.exists() {
            let rewind = common::load_model(&rewind_path, &device)?.0.tensors()?;
            (common::load_model(&dense_path, &device)?.0, rewind)
        } else {
            let dense = common::new_model(
                &cfg.student_model,
                data,
                seed ^ common::STUDENT_SALT,
                &device,
            )?;
            let tc = train_config(
                cfg,
                data,
                cfg.student_epochs,
                cfg.lr,
                LossConfig::CrossEntropy,
                seed ^ common::STUDENT_SALT,
            );
            let steps = data.split.train.len().div_ceil(cfg.batch_size);
            let mut snapshot = Snapshot {
                at_step: (cfg.rewind_epoch * steps).checked_sub(1),
                model: &dense,
                taken: None,
            };
            if snapshot.at_step.is_none() {
                snapshot.taken = Some(dense.tensors()?);
            }
            fit(
                &dense,
                None,
                &data.train_data(),
                &tc,
                &mut snapshot,
                "dense",
                verbose,
            )?;
            let rewind = snapshot
                .taken
                .context("the rewind point was never reached")?;
            let at_rewind = common::clone_model(&dense)?;
            at_rewind.load_tensors(&rewind)?;
            save(&rewind_path, &at_rewind, data, seed, "rewind")?;
            save(&dense_path, &dense, data, seed, "dense")?;
            (dense, rewind)
        };
        let dense_accuracy = accuracy(&dense, data)?;
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
            let path = self.dir.join("kd_tuned.safetensors");
            let cost_path = self.dir.join("kd_tuned.json");
            let n = data.split.train.len() as u64;
            let epochs = cfg.kd_epochs as u64;
            let mut cost = Cost {
                epochs: cfg.kd_epochs as f64,
                forward: n * epochs + teacher_forwards(cfg, data, cfg.kd_epochs),
                backward: n * epochs,
                seconds: 0.0,
            };
            let model = if path.exists() && cost_path.exists() {
                let secs: f64 = std::fs::read_to_string(&cost_path)?.trim().parse()?;
                cost.seconds = secs;
                common::load_model(&path, &common::device())?.0
            } else {
                let start = Instant::now();
                let model = common::clone_model(&self.dense)?;
                let tc = train_config(
                    cfg,
                    data,
                    cfg.kd_epochs,
                    cfg.finetune_lr,
                    cfg.kd_loss_config()?,
                    seed ^ KD_SALT,
                );
                fit(
                    &model,
                    Some(&self.teacher),
                    &data.train_data(),
                    &tc,
                    &mut NoHook,
                    "kd_tuned",
                    verbose,
                )?;
                cost.seconds = start.elapsed().as_secs_f64();
                save(&path, &model, data, seed, "kd_tuned")?;
                write_atomic(&cost_path, format!("{}\n", cost.seconds))?;
                model
            };
            self.kd_tuned = Some((model, cost));
        }
        let (m, c) = self.kd_tuned.as_ref().expect("set above");
        Ok((m, *c))
    }
}

/// Keeps a copy of every tensor after optimizer step `at_step`.
struct Snapshot<'a> {
    at_step: Option<usize>,
    model: &'a Model,
    taken: Option<NamedTensors>,
}

impl StepHook for Snapshot<'_> {
    fn after_step(&mut self, _vars: &[(String, Var)], info: &StepInfo) -> kd_core::Result<()> {
        if Some(info.step) == self.at_step {
            // `Model::tensors` already returns detached copies.
            let copy = self
                .model
                .tensors()
                .map_err(|e| kd_core::KdError::Other(e.to_string()))?;
            self.taken = Some(copy);
        }
        Ok(())
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
        method: Method,
        sparsity: f64,
        ctx: &mut SeedModels,
    ) -> Result<CellResult> {
        let start = Instant::now();
        let prunable = common::prunable_names(ctx.dense.config(), &self.filter());
        if prunable.is_empty() {
            bail!("the student has no prunable weights");
        }
        let (model, report, final_from_step, extra) = match method {
            Method::OneShot(criterion, source, from_kd) => {
                self.one_shot(criterion, source, from_kd, sparsity, &prunable, ctx)?
            }
            Method::Gmp => self.gmp(sparsity, &prunable, ctx)?,
            Method::Imp => self.imp(sparsity, &prunable, ctx)?,
            Method::Colt => self.colt(sparsity, &prunable, ctx)?,
        };
        let (measured, _) = common::measure(&model, &prunable)?;
        let final_accuracy = accuracy(&model, self.data)?;
        let steps = self.steps_per_epoch();
        let best_accuracy = report
            .epochs
            .iter()
            .filter(|e| e.epoch * steps > final_from_step)
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

    fn filter(&self) -> ParamFilter {
        ParamFilter {
            keep_first: self.cfg.keep_first,
            keep_last: self.cfg.keep_last,
            ..ParamFilter::default()
        }
    }

    fn steps_per_epoch(&self) -> usize {
        self.data.split.train.len().div_ceil(self.cfg.batch_size)
    }

    /// Cost of `epochs` epochs on `n` samples, with or without the teacher.
    fn train_cost(&self, epochs: usize, n: usize, teacher: bool) -> Cost {
        let passes = (n * epochs) as u64;
        Cost {
            epochs: epochs as f64 * n as f64 / self.data.split.train.len() as f64,
            forward: passes
                + if teacher {
                    teacher_forwards(self.cfg, self.data, epochs)
                } else {
                    0
                },
            backward: passes,
            seconds: 0.0,
        }
    }

    /// Score once, prune to `sparsity`, retrain under the mask.
    fn one_shot(
        &self,
        criterion: Criterion,
        source: GradientLoss,
        from_kd: bool,
        sparsity: f64,
        prunable: &[String],
        ctx: &mut SeedModels,
    ) -> Result<(Model, TrainReport, usize, Cost)> {
        let kd_loss = self.cfg.kd_loss_config()?;
        let (base, mut cost) = if from_kd {
            let (m, c) = ctx.kd_tuned(self.cfg, self.data, self.seed, self.verbose)?;
            (common::clone_model(m)?, c)
        } else {
            (common::clone_model(&ctx.dense)?, Cost::default())
        };
        let score_loss = match source {
            GradientLoss::Mixture => kd_loss,
            GradientLoss::KdOnly => with_alpha(kd_loss, 1.0),
            GradientLoss::CeOnly => LossConfig::CrossEntropy,
        };
        let masks = if criterion == Criterion::Synflow {
            // Data-free and iterative: one all-ones input per round.
            let rounds = importance::DEFAULT_SYNFLOW_ROUNDS;
            cost = cost.add(Cost {
                forward: rounds as u64,
                backward: rounds as u64,
                ..Cost::default()
            });
            common::synflow_masks(&base, self.data, prunable, sparsity, rounds)?
        } else {
            let scores = if criterion == Criterion::SelfDistill {
                // EPSD's own recipe (T = 3, α = 0.5), not the teacher's KD settings.
                common::self_distill_scores(
                    &base,
                    self.data,
                    prunable,
                    &kd_core::SelfDistillConfig::default(),
                    self.cfg.score_batches,
                    self.cfg.batch_size,
                    self.seed,
                )?
            } else {
                common::score(
                    criterion,
                    &base,
                    Some(&ctx.teacher),
                    self.data,
                    prunable,
                    &score_loss,
                    self.cfg.score_batches,
                    self.cfg.batch_size,
                    self.seed,
                )?
            };
            if criterion.needs_data() {
                let n = (self.cfg.score_batches * self.cfg.batch_size) as u64;
                // Passes per scoring sample: GraSP takes the gradient at θ and
                // at θ + εg; EPSD runs a second (detached) view; the
                // teacher-guided score runs the teacher.
                let (forward, backward) = match criterion {
                    Criterion::Grasp => (2, 2),
                    Criterion::SelfDistill | Criterion::TeacherGuided => (2, 1),
                    _ => (1, 1),
                };
                cost = cost.add(Cost {
                    forward: n * forward,
                    backward: n * backward,
                    ..Cost::default()
                });
            }
            select::global(&scores, sparsity)?
        };
        common::apply_masks(&base, &masks)?;
        let retrain_loss = self.cfg.retrain_loss_config()?;
        let teacher = retrain_loss.needs_teacher().then_some(&ctx.teacher);
        let tc = train_config(
            self.cfg,
            self.data,
            self.cfg.retrain_epochs,
            self.cfg.finetune_lr,
            retrain_loss,
            self.seed ^ RETRAIN_SALT,
        );
        let report = fit(
            &base,
            teacher,
            &self.data.train_data(),
            &tc,
            &mut MaskHook(&masks),
            "retrain",
            self.verbose,
        )?;
        let n = self.data.split.train.len();
        cost = cost.add(self.train_cost(self.cfg.retrain_epochs, n, teacher.is_some()));
        Ok((base, report, 0, cost))
    }

    /// Gradual magnitude pruning while fine-tuning the dense student.
    fn gmp(
        &self,
        sparsity: f64,
        prunable: &[String],
        ctx: &SeedModels,
    ) -> Result<(Model, TrainReport, usize, Cost)> {
        let model = common::clone_model(&ctx.dense)?;
        let steps = self.steps_per_epoch() * self.cfg.gmp_epochs;
        if steps == 0 {
            // `validate` refuses gmp_epochs = 0 up front; this still guards
            // against an empty training set.
            bail!("gmp_epochs must be ≥ 1");
        }
        let freq = self.cfg.gmp_frequency;
        // The last update falls on a multiple of the frequency inside the ramp,
        // and before the last step, so that the final mask trains too.
        let ramp = ((self.cfg.gmp_ramp_fraction * steps as f64) as u64).min(steps as u64 - 1);
        let end = ramp / freq * freq;
        let schedule = GmpSchedule::new(0.0, sparsity, 0, end, freq)?;
        let mut hook = GmpHook {
            schedule,
            prunable,
            masks: MaskSet::new(),
        };
        let tc = train_config(
            self.cfg,
            self.data,
            self.cfg.gmp_epochs,
            self.cfg.finetune_lr,
            LossConfig::CrossEntropy,
            self.seed ^ GMP_SALT,
        );
        let report = fit(
            &model,
            None,
            &self.data.train_data(),
            &tc,
            &mut hook,
            "gmp",
            self.verbose,
        )?;
        let n = self.data.split.train.len();
        Ok((
            model,
            report,
            end as usize,
            self.train_cost(self.cfg.gmp_epochs, n, false),
        ))
    }

    /// Iterative magnitude pruning with rewinding to `rewind_epoch`.
    fn imp(
        &self,
        sparsity: f64,
        prunable: &[String],
        ctx: &SeedModels,
    ) -> Result<(Model, TrainReport, usize, Cost)> {
        let model = common::clone_model(&ctx.dense)?;
        let mut masks = MaskSet::new();
        let mut cost = Cost::default();
        let mut report = TrainReport::default();
        let n = self.data.split.train.len();
        for (round, s) in imp_sparsities(self.cfg.imp_rate, sparsity)?
            .into_iter()
            .enumerate()
        {
            let weights = common::select(&model.tensors()?, prunable)?;
            masks = select::global_within(&importance::magnitude(&weights)?, &masks, s)?;
            rewind(&model, &ctx.rewind, &masks)?;
            let tc = train_config(
                self.cfg,
                self.data,
                self.cfg.imp_round_epochs,
                self.cfg.lr,
                LossConfig::CrossEntropy,
                self.seed ^ IMP_SALT ^ round as u64,
            );
            let label = format!("imp round {}", round + 1);
            report = fit(
                &model,
                None,
                &self.data.train_data(),
                &tc,
                &mut MaskHook(&masks),
                &label,
                self.verbose,
            )?;
            cost = cost.add(self.train_cost(self.cfg.imp_round_epochs, n, false));
        }
        Ok((model, report, 0, cost))
    }

    /// COLT: two copies trained on the two halves of the training set,
    /// pruned by magnitude, masks intersected, rewound; the final ticket
    /// trains on the whole training set.
    fn colt(
        &self,
        sparsity: f64,
        prunable: &[String],
        ctx: &SeedModels,
    ) -> Result<(Model, TrainReport, usize, Cost)> {
        let train = &self.data.split.train;
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
            self.seed ^ COLT_SALT,
        ));
        let (a, b) = order.split_at(train.len() / 2);
        let halves: [Dataset; 2] = [train.subset(a), train.subset(b)];
        let copies = [
            common::clone_model(&ctx.dense)?,
            common::clone_model(&ctx.dense)?,
        ];
        let mut masks = MaskSet::new();
        let mut cost = Cost::default();
        let epochs = self.cfg.colt_round_epochs;
        for (round, s) in imp_sparsities(self.cfg.colt_rate, sparsity)?
            .into_iter()
            .enumerate()
        {
            let mut weights = Vec::with_capacity(2);
            for (k, (copy, half)) in copies.iter().zip(&halves).enumerate() {
                rewind(copy, &ctx.rewind, &masks)?;
                // A view of one half: the test set and normalisation are borrowed.
                let data = TrainData {
                    train: half,
                    ..self.data.train_data()
                };
                let tc = train_config(
                    self.cfg,
                    self.data,
                    epochs,
                    self.cfg.lr,
                    LossConfig::CrossEntropy,
                    self.seed ^ COLT_SALT ^ ((round as u64) << 1 | k as u64),
                );
                let label = format!("colt round {} copy {}", round + 1, k + 1);
                fit(
                    copy,
                    None,
                    &data,
                    &tc,
                    &mut MaskHook(&masks),
                    &label,
                    self.verbose,
                )?;
                cost = cost.add(self.train_cost(epochs, half.len(), false));
                weights.push(common::select(&copy.tensors()?, prunable)?);
            }
            masks = colt_round(&weights, &masks, s)?;
            if masks.sparsity()? >= sparsity {
                break;
            }
        }
        let model = common::clone_model(&copies[0])?;
        rewind(&model, &ctx.rewind, &masks)?;
        let tc = train_config(
            self.cfg,
            self.data,
            epochs,
            self.cfg.lr,
            LossConfig::CrossEntropy,
            self.seed ^ COLT_SALT,
        );
        let report = fit(
            &model,
            None,
            &self.data.train_data(),
            &tc,
            &mut MaskHook(&masks),
            "colt final",
            self.verbose,
        )?;
        let n = self.data.split.train.len();
        cost = cost.add(self.train_cost(epochs, n, false));
        Ok((model, report, 0, cost))
    }
}

/// Gradual magnitude pruning as a training hook: at every update step of the
/// schedule, the prunable weights are pruned by global magnitude to the
/// schedule's sparsity among those still kept (never regrowing); between
/// updates the mask is enforced like [`MaskHook`].
struct GmpHook<'a> {
    schedule: GmpSchedule,
    prunable: &'a [String],
    masks: MaskSet,
}

impl StepHook for GmpHook<'_> {
    fn before_step(
        &mut self,
        grads: &mut GradStore,
        vars: &[(String, Var)],
    ) -> kd_core::Result<()> {
        MaskHook(&self.masks).before_step(grads, vars)
    }

    fn after_step(&mut self, vars: &[(String, Var)], info: &StepInfo) -> kd_core::Result<()> {
        let step = info.step as u64;
        if self.schedule.is_update_step(step) {
            let s = self.schedule.sparsity_at(step);
            let weights: NamedTensors = vars
                .iter()
                .filter(|(n, _)| self.prunable.contains(n))
                .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
                .collect();
            let other = |e: prune_core::PruneError| kd_core::KdError::Other(e.to_string());
            let scores = importance::magnitude(&weights).map_err(other)?;
            self.masks = select::global_within(&scores, &self.masks, s).map_err(other)?;
        }
        MaskHook(&self.masks).after_step(vars, info)
    }
}

/// `θ ← θ_rewind ⊙ m` for the weights, `θ_rewind` for everything else
/// (biases, batch-norm parameters and statistics).
fn rewind(model: &Model, stored: &NamedTensors, masks: &MaskSet) -> Result<()> {
    model.load_tensors(stored)?;
    common::apply_masks(model, masks)
}

/// Teacher forward passes of a distillation run of `epochs` epochs: once per
/// sample when its logits are cached (no augmentation), else every epoch.
fn teacher_forwards(cfg: &SweepConfig, data: &Data, epochs: usize) -> u64 {
    let n = data.split.train.len() as u64;
    if epochs == 0 {
        0
    } else if cfg.augment.resolve(data.name).is_identity() {
        n
    } else {
        n * epochs as u64
    }
}

/// `loss` with its distillation weight α replaced.
fn with_alpha(loss: LossConfig, alpha: f64) -> LossConfig {
    match loss {
        LossConfig::CrossEntropy => LossConfig::CrossEntropy,
        LossConfig::Hinton { temperature, .. } => LossConfig::Hinton { temperature, alpha },
        LossConfig::CaKld {
            temperature,
            beta,
            eps,
            ..
        } => LossConfig::CaKld {
            temperature,
            alpha,
            beta,
            eps,
        },
    }
}

fn train_config(
    cfg: &SweepConfig,
    data: &Data,
    epochs: usize,
    lr: f64,
    loss: LossConfig,
    seed: u64,
) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: cfg.batch_size,
        sgd: SgdConfig {
            lr,
            momentum: cfg.momentum,
            nesterov: cfg.momentum > 0.0,
            weight_decay: cfg.weight_decay,
        },
        warmup_epochs: 0,
        min_lr: 0.0,
        loss,
        seed,
        augment: cfg.augment.resolve(data.name),
    }
}

fn fit(
    model: &Model,
    teacher: Option<&Model>,
    data: &TrainData<'_>,
    cfg: &TrainConfig,
    hook: &mut dyn StepHook,
    label: &str,
    verbose: bool,
) -> Result<TrainReport> {
    kd_core::fit(model, teacher, data, cfg, hook, label, verbose)
        .with_context(|| format!("training stage `{label}` failed"))
}

fn save(path: &Path, model: &Model, data: &Data, seed: u64, stage: &str) -> Result<()> {
    let meta: BTreeMap<String, String> = common::metadata(data.name, seed, stage, &data.norm);
    common::save_model(path, model, None, meta)
}

fn accuracy(model: &Model, data: &Data) -> Result<f64> {
    Ok(kd_core::evaluate(model, &data.split.test, &data.norm, 512)?)
}
