//! kd-core's training loop as the method uses it: progress bars, the hook
//! that enforces prune-core's masks around every optimizer step, a snapshot
//! hook for lottery-ticket rewinding, and the salts that give every stage of
//! a run its own random stream.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use candle_core::backprop::GradStore;
use candle_core::Var;
use indicatif::{ProgressBar, ProgressStyle};
use kd_core::{
    EpochStats, FitOptions, KdError, Progress, ResumePoint, Sgd, StepHook, StepInfo, TeacherCache,
    TrainConfig, TrainData, TrainReport,
};
use kdprune_models::Model;
use prune_core::{NamedTensors, StepPruner};

use crate::resume::ResumeFile;

/// Salts xor-ed into the run seed, one per stage that draws from it, so that
/// the stages' streams are independent. The stages of pruning schedules take
/// [`prune_core::Stage::salt`].
pub mod salt {
    /// Teacher initialisation and batch order.
    pub const TEACHER: u64 = 0x7EAC_4E50;
    /// Dense student initialisation and batch order.
    pub const STUDENT: u64 = 0x57D0_E170;
    /// Batch order of the KD fine-tuning before teacher-guided scoring.
    pub const KD: u64 = 0x4B44;
    /// Calibration batches of scoring (and the view of self-distillation).
    pub const SCORE: u64 = 0x5C0E_0000;
}

/// Progress of a training run on stderr: a bar per epoch (drawn only when
/// stderr is a terminal) and one line per epoch, prefixed by a label;
/// nothing at all unless `verbose`.
///
/// When stderr is not a terminal (a log file, a batch job), a line with the
/// step, the loss, the rate and the time left is printed every
/// [`LOG_EVERY`] instead of the bar, so that logs show progress.
pub struct Bars {
    label: String,
    verbose: bool,
    bar: Option<ProgressBar>,
    terminal: bool,
    /// Epoch, epochs, steps of the epoch, steps done, its start, the last log line.
    epoch: (usize, usize, usize, usize, Instant, Instant),
}

/// How often a progress line is logged when stderr is not a terminal.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

impl Bars {
    /// Progress labelled `label`, shown when `verbose`.
    pub fn new(label: impl Into<String>, verbose: bool) -> Self {
        let now = Instant::now();
        Self {
            label: label.into(),
            verbose,
            bar: None,
            terminal: std::io::stderr().is_terminal(),
            epoch: (0, 0, 0, 0, now, now),
        }
    }
}

impl Progress for Bars {
    fn start_epoch(&mut self, epoch: usize, epochs: usize, steps: usize) {
        if !self.verbose {
            return;
        }
        // Draws on stderr only when it is a terminal (indicatif hides it otherwise).
        let now = Instant::now();
        self.epoch = (epoch, epochs, steps, 0, now, now);
        let bar = ProgressBar::new(steps as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "  {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, {per_sec}, {eta} left)",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(format!("[{}] epoch {epoch}/{epochs}", self.label));
        self.bar = Some(bar);
    }

    fn step(&mut self, loss: f32) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("loss {loss:.4}"));
            bar.inc(1);
        }
        if !self.verbose || self.terminal {
            return;
        }
        let (epoch, epochs, steps, done, start, last) = &mut self.epoch;
        *done += 1;
        if last.elapsed() >= LOG_EVERY && *done < *steps {
            *last = Instant::now();
            let spent = start.elapsed().as_secs_f64();
            let rate = *done as f64 / spent.max(1e-9);
            eprintln!(
                "  [{}] epoch {epoch}/{epochs} step {done}/{steps}  loss {loss:.4}  ({rate:.1} steps/s, {:.0}s left in the epoch)",
                self.label,
                (*steps - *done) as f64 / rate.max(1e-9)
            );
        }
    }

    fn end_steps(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn end_epoch(&mut self, stats: &EpochStats, epochs: usize) {
        if !self.verbose {
            return;
        }
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
            "  [{}] epoch {}/{epochs}  loss {:.4}{terms}  test acc {:.2}%  lr {:.4}  ({:.1}s)",
            self.label,
            stats.epoch,
            stats.train_loss,
            100.0 * stats.test_accuracy,
            stats.lr,
            stats.seconds
        );
    }

    fn note(&mut self, text: &str) {
        if self.verbose {
            eprintln!("  {text}");
        }
    }
}

/// A prune-core [`StepPruner`] as kd-core's [`StepHook`]: gradients masked
/// before every optimizer step, the pruner updated after it — and when its
/// masks grow, the optimizer's momentum cleared at the newly pruned
/// coordinates — then the weights masked. So a pruned weight is exactly zero
/// after every step and no momentum is ever left at it, under a fixed mask
/// and under a growing one (GMP) alike.
pub struct PruneHook<'a>(pub &'a mut dyn StepPruner);

impl StepHook for PruneHook<'_> {
    fn before_step(
        &mut self,
        grads: &mut GradStore,
        vars: &[(String, Var)],
    ) -> kd_core::Result<()> {
        self.0
            .masks()
            .apply_to_grads(grads, vars)
            .map_err(KdError::external)
    }

    fn after_step(
        &mut self,
        vars: &[(String, Var)],
        info: &StepInfo,
        optimizer: &mut Sgd,
    ) -> kd_core::Result<()> {
        let grew = self
            .0
            .update(info.step as u64, vars)
            .map_err(KdError::external)?;
        if grew {
            optimizer.mask_state(self.0.masks().iter())?;
        }
        self.0
            .masks()
            .apply_to_vars(vars)
            .map_err(KdError::external)
    }
}

/// Keeps a copy of every tensor of `model` after optimizer step `at_step`
/// (`None`: never): the rewind point of lottery-ticket schemes.
pub struct Snapshot<'a> {
    /// The step after which the copy is taken.
    pub at_step: Option<usize>,
    /// The model being trained.
    pub model: &'a Model,
    /// The copy, once taken.
    pub taken: Option<NamedTensors>,
}

impl StepHook for Snapshot<'_> {
    fn after_step(
        &mut self,
        _vars: &[(String, Var)],
        info: &StepInfo,
        _optimizer: &mut Sgd,
    ) -> kd_core::Result<()> {
        if Some(info.step) == self.at_step {
            // `Model::tensors` already returns detached copies.
            self.taken = Some(self.model.tensors().map_err(KdError::external)?);
        }
        Ok(())
    }
}

/// Trains `model` (teacher frozen, used only when the objective needs it)
/// with `hook` around every step, the teacher's logits cached in memory,
/// progress labelled `label` when `verbose`.
pub fn train(
    model: &Model,
    teacher: Option<&Model>,
    data: &TrainData<'_>,
    config: &TrainConfig,
    hook: &mut dyn StepHook,
    label: &str,
    verbose: bool,
) -> Result<TrainReport> {
    train_resumable(
        model, teacher, data, config, hook, label, verbose, None, None,
    )
}

/// [`train`] with a resume point: when `resume` is given with `continue_`
/// set and its file exists, training continues from it (said on stderr);
/// either way a resume point is saved there at the end of every epoch but
/// the last, and every `save_every` steps when given. The caller removes it
/// once its own output is written.
#[allow(clippy::too_many_arguments)]
pub fn train_resumable(
    model: &dyn kd_core::Network,
    teacher: Option<&Model>,
    data: &TrainData<'_>,
    config: &TrainConfig,
    hook: &mut dyn StepHook,
    label: &str,
    verbose: bool,
    resume: Option<(&ResumeFile, bool)>,
    save_every: Option<usize>,
) -> Result<TrainReport> {
    let start = match resume {
        Some((file, true)) => {
            let point = file.load(model.device())?;
            match &point {
                Some(p) => eprintln!(
                    "[{label}] resuming from {}: {} of {} epochs done{}, step {}",
                    file.path().display(),
                    p.epochs_done,
                    config.epochs,
                    if p.batches_done > 0 {
                        format!(" and {} batches of the next", p.batches_done)
                    } else {
                        String::new()
                    },
                    p.step
                ),
                None => eprintln!(
                    "[{label}] no resume point at {}: starting from the beginning",
                    file.path().display()
                ),
            }
            point
        }
        _ => None,
    };
    let mut save = |point: &ResumePoint| -> kd_core::Result<()> {
        if let Some((file, _)) = resume {
            file.save(point)
                .map_err(|e| KdError::Other(format!("{e:#}")))?;
        }
        Ok(())
    };
    let options = FitOptions {
        hook,
        progress: &mut Bars::new(label, verbose),
        teacher_cache: TeacherCache::Memory,
        resume: start,
        on_epoch: Some(&mut save),
        save_every: save_every.filter(|_| resume.is_some()),
    };
    let teacher = teacher.map(|t| t as &dyn kd_core::Network);
    kd_core::fit(model, teacher, data, config, options)
        .with_context(|| format!("training stage `{label}` failed"))
}
