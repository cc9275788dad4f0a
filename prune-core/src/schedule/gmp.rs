//! Gradual magnitude pruning (Zhu & Gupta, "To prune, or not to prune:
//! exploring the efficacy of pruning for model compression", ICLR-W 2018).

use candle_core::Var;

use super::{Learner, Outcome, Stage, StepPruner};
use crate::importance::magnitude;
use crate::select::{check_sparsity, global_within};
use crate::{MaskSet, NamedTensors, PruneError, Result};

/// The cubic sparsity schedule of gradual magnitude pruning: with
/// `t0 = begin_step`, `n·Δt = end_step − begin_step` and `Δt = frequency`,
///
/// ```text
/// s_t = s_f + (s_i − s_f) · (1 − (t − t0) / (n·Δt))³,   t ∈ [t0, t0 + n·Δt]
/// ```
///
/// evaluated only at update steps `t0, t0 + Δt, t0 + 2Δt, …` and at
/// `end_step`, and held constant in between: `s_i` before `begin_step`, `s_f`
/// from `end_step` on. Pruning is fast at first and slows down as the
/// network has fewer weights left.
///
/// The fields are public for configs (`final_` is serialised as `"final"`);
/// [`GmpSchedule::new`] and [`GmpSchedule::validate`] check them.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GmpSchedule {
    /// Sparsity `s_i` at (and before) `begin_step`, in `[0, 1)`.
    pub initial: f64,
    /// Sparsity `s_f` at (and after) `end_step`, in `[initial, 1)`.
    #[cfg_attr(feature = "serde", serde(rename = "final"))]
    pub final_: f64,
    /// First pruning step `t0`.
    pub begin_step: u64,
    /// Last pruning step `t0 + n·Δt`, `≥ begin_step`.
    pub end_step: u64,
    /// Steps `Δt` between two mask updates, `≥ 1`.
    pub frequency: u64,
}

impl GmpSchedule {
    /// A validated schedule (see [`GmpSchedule::validate`]).
    pub fn new(
        initial: f64,
        final_: f64,
        begin_step: u64,
        end_step: u64,
        frequency: u64,
    ) -> Result<Self> {
        let schedule = Self {
            initial,
            final_,
            begin_step,
            end_step,
            frequency,
        };
        schedule.validate()?;
        Ok(schedule)
    }

    /// [`PruneError::InvalidSparsity`] unless both sparsities are in `[0, 1)`,
    /// [`PruneError::DecreasingSparsity`] if `final_ < initial`,
    /// [`PruneError::InvalidStepRange`] if `end_step < begin_step`,
    /// [`PruneError::ZeroFrequency`] if `frequency == 0`.
    pub fn validate(&self) -> Result<()> {
        check_sparsity(self.initial)?;
        check_sparsity(self.final_)?;
        if self.final_ < self.initial {
            return Err(PruneError::DecreasingSparsity {
                initial: self.initial,
                final_: self.final_,
            });
        }
        if self.end_step < self.begin_step {
            return Err(PruneError::InvalidStepRange {
                begin: self.begin_step,
                end: self.end_step,
            });
        }
        if self.frequency == 0 {
            return Err(PruneError::ZeroFrequency);
        }
        Ok(())
    }

    /// The schedule of a gradual pruning run of `total_steps` optimizer
    /// steps from 0 to `final_`: the sparsity rises over the first
    /// `ramp_fraction` of the steps, the last update falling on a multiple of
    /// `frequency` inside the ramp and before the last step (so the final
    /// mask trains too): `end = min(⌊ramp_fraction·total⌋, total − 1)`
    /// rounded down to a multiple of `frequency`.
    ///
    /// Errors: [`PruneError::InvalidRampFraction`] unless
    /// `0 < ramp_fraction ≤ 1`, [`PruneError::ZeroFrequency`],
    /// [`PruneError::NoTrainingSteps`] when `total_steps` is 0, and those of
    /// [`GmpSchedule::new`].
    pub fn ramp(final_: f64, total_steps: u64, ramp_fraction: f64, frequency: u64) -> Result<Self> {
        if !(ramp_fraction > 0.0 && ramp_fraction <= 1.0) {
            return Err(PruneError::InvalidRampFraction(ramp_fraction));
        }
        if frequency == 0 {
            return Err(PruneError::ZeroFrequency);
        }
        if total_steps == 0 {
            return Err(PruneError::NoTrainingSteps);
        }
        let ramp = ((ramp_fraction * total_steps as f64) as u64).min(total_steps - 1);
        let end = ramp / frequency * frequency;
        GmpSchedule::new(0.0, final_, 0, end, frequency)
    }

    /// Whether the mask is recomputed at `step`: `begin_step + j·frequency`
    /// up to `end_step`, and `end_step` itself.
    pub fn is_update_step(&self, step: u64) -> bool {
        if step < self.begin_step || step > self.end_step {
            return false;
        }
        step == self.end_step || (step - self.begin_step).is_multiple_of(self.frequency.max(1))
    }

    /// The target sparsity in force at `step`: the formula at the latest
    /// update step `≤ step`, `initial` before `begin_step`, `final_` from
    /// `end_step` on.
    pub fn sparsity_at(&self, step: u64) -> f64 {
        if step < self.begin_step {
            return self.initial;
        }
        if step >= self.end_step {
            return self.final_;
        }
        let frequency = self.frequency.max(1);
        let elapsed = (step - self.begin_step) / frequency * frequency;
        let progress = elapsed as f64 / (self.end_step - self.begin_step) as f64;
        self.final_ + (self.initial - self.final_) * (1.0 - progress).powi(3)
    }
}

/// Gradual magnitude pruning as a [`StepPruner`]: at every update step of the
/// schedule the named weights are pruned by global magnitude to the
/// schedule's sparsity among those still kept (never regrowing); between
/// updates the masks stay as they are.
#[derive(Clone, Debug)]
pub struct GmpPruner {
    schedule: GmpSchedule,
    prunable: Vec<String>,
    masks: MaskSet,
}

impl GmpPruner {
    /// A pruner of the weights named `prunable`, with no mask yet.
    pub fn new(schedule: GmpSchedule, prunable: Vec<String>) -> Self {
        Self {
            schedule,
            prunable,
            masks: MaskSet::new(),
        }
    }

    /// The masks, consumed.
    pub fn into_masks(self) -> MaskSet {
        self.masks
    }
}

impl StepPruner for GmpPruner {
    fn masks(&self) -> &MaskSet {
        &self.masks
    }

    fn update(&mut self, step: u64, vars: &[(String, Var)]) -> Result<bool> {
        if !self.schedule.is_update_step(step) {
            return Ok(false);
        }
        let s = self.schedule.sparsity_at(step);
        let weights: NamedTensors = vars
            .iter()
            .filter(|(n, _)| self.prunable.contains(n))
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        self.masks = global_within(&magnitude(&weights)?, &self.masks, s)?;
        Ok(true)
    }
}

/// Gradual magnitude pruning while the learner trains ([`Stage::Gmp`]) for
/// `total_steps` optimizer steps: [`GmpSchedule::ramp`] from 0 to `sparsity`
/// over `ramp_fraction` of the steps, masks updated every `frequency` steps
/// by a [`GmpPruner`]. The outcome's `masks_fixed_from_step` is the last
/// update step.
pub fn gmp<L: Learner>(
    learner: &mut L,
    sparsity: f64,
    total_steps: u64,
    ramp_fraction: f64,
    frequency: u64,
) -> Result<Outcome<L::Report>> {
    let schedule = GmpSchedule::ramp(sparsity, total_steps, ramp_fraction, frequency)?;
    let prunable = learner.weights()?.into_keys().collect();
    let mut pruner = GmpPruner::new(schedule, prunable);
    let report = learner.train(Stage::Gmp, &mut pruner)?;
    Ok(Outcome {
        masks: pruner.into_masks(),
        report,
        masks_fixed_from_step: schedule.end_step,
    })
}
