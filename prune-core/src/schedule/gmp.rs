//! Gradual magnitude pruning (Zhu & Gupta, "To prune, or not to prune:
//! exploring the efficacy of pruning for model compression", ICLR-W 2018).

use serde::{Deserialize, Serialize};

use crate::select::check_sparsity;
use crate::{PruneError, Result};

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
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GmpSchedule {
    /// Sparsity `s_i` at (and before) `begin_step`, in `[0, 1)`.
    pub initial: f64,
    /// Sparsity `s_f` at (and after) `end_step`, in `[initial, 1)`.
    #[serde(rename = "final")]
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
