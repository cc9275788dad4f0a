//! Pruning schedules and their drivers.
//!
//! The arithmetic, as pure functions of steps, sparsities, named tensors and
//! masks:
//!
//! - [`GmpSchedule`]: Zhu & Gupta's cubic gradual magnitude pruning schedule;
//! - [`imp_sparsities`]: the cumulative sparsities of iterative magnitude
//!   pruning (IMP, lottery tickets) at a fixed rate per round;
//! - [`colt_round`]: one round of COLT (cyclic overlapping lottery tickets):
//!   prune each copy by global magnitude, intersect the masks;
//! - [`rewind`]: reset weights to stored values under a mask (lottery-ticket
//!   weight rewinding).
//!
//! The drivers, which run a whole method over the caller's model and
//! training through the [`Learner`] trait: [`one_shot`] (score once, prune,
//! retrain under the fixed mask), [`gmp`] (masks growing while training),
//! [`imp`] (prune, rewind, retrain, round after round) and [`colt`] (IMP
//! over copies trained on different data, masks intersected). Around every
//! optimizer step the caller's training applies a [`StepPruner`]: it masks
//! the gradients before the step and the weights after it, and lets a
//! growing schedule update its masks.

mod colt;
mod gmp;
mod imp;
mod one_shot;
mod rewind;

use candle_core::Var;

use crate::{MaskSet, NamedTensors, Result};

pub use colt::{colt, colt_round};
pub use gmp::{gmp, GmpPruner, GmpSchedule};
pub use imp::{imp, imp_sparsities, MAX_IMP_ROUNDS};
pub use one_shot::one_shot;
pub use rewind::rewind;

/// One training stage a driver asks of its [`Learner`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Retraining after one-shot pruning, under the fixed mask.
    Retrain,
    /// Fine-tuning while gradual magnitude pruning grows the mask.
    Gmp,
    /// Round `k` (0-based) of iterative magnitude pruning, after rewinding.
    ImpRound(usize),
    /// Round `round` (0-based) of COLT for copy `copy`, on that copy's data.
    ColtRound {
        /// The round, 0-based.
        round: usize,
        /// The copy, 0-based.
        copy: usize,
    },
    /// COLT's final ticket, rewound and trained on all the data.
    ColtFinal,
}

impl Stage {
    /// A salt that gives every stage its own batch order when xor-ed into the
    /// run seed (`seed ^ salt`): distinct per stage kind, round and copy,
    /// except that COLT's final ticket shares the salt of round 0's first
    /// copy (they train on different data: all of it, and one half).
    pub fn salt(self) -> u64 {
        const RETRAIN: u64 = 0x5254_0000;
        const GMP: u64 = 0x474D_5000;
        const IMP: u64 = 0x494D_5000;
        const COLT: u64 = 0x434F_4C54;
        match self {
            Stage::Retrain => RETRAIN,
            Stage::Gmp => GMP,
            Stage::ImpRound(round) => IMP ^ round as u64,
            Stage::ColtRound { round, copy } => {
                // Copies 0 and 1 (COLT's two halves) in the low bit, any
                // further copy above bit 32, so that no two collide.
                let copy = copy as u64;
                COLT ^ ((round as u64) << 1 | (copy & 1)) ^ ((copy >> 1) << 32)
            }
            Stage::ColtFinal => COLT,
        }
    }

    /// A label for progress output: `retrain`, `gmp`, `imp round 2`,
    /// `colt round 1 copy 2`, `colt final` (rounds and copies 1-based).
    pub fn label(self) -> String {
        match self {
            Stage::Retrain => "retrain".into(),
            Stage::Gmp => "gmp".into(),
            Stage::ImpRound(round) => format!("imp round {}", round + 1),
            Stage::ColtRound { round, copy } => {
                format!("colt round {} copy {}", round + 1, copy + 1)
            }
            Stage::ColtFinal => "colt final".into(),
        }
    }
}

/// The masks a training run enforces around every optimizer step.
///
/// The caller's training loop, at every step: masks the gradients with
/// [`StepPruner::masks`] before the optimizer reads them
/// ([`MaskSet::apply_to_grads`]); after the step calls
/// [`StepPruner::update`] and, when it reports new masks, clears the
/// optimizer's state (momentum) at the newly pruned coordinates; then masks
/// the weights ([`MaskSet::apply_to_vars`]). A pruned weight is then exactly
/// zero after every step and no optimizer state remains at it.
pub trait StepPruner {
    /// The masks in force.
    fn masks(&self) -> &MaskSet;

    /// Called after optimizer step `step` (0-based, counted from the start of
    /// the stage) with the weights as the step left them, before they are
    /// masked; returns whether the masks changed. A fixed mask never changes.
    fn update(&mut self, _step: u64, _vars: &[(String, Var)]) -> Result<bool> {
        Ok(false)
    }
}

impl StepPruner for MaskSet {
    fn masks(&self) -> &MaskSet {
        self
    }
}

/// The caller's model and training, as the drivers see them.
///
/// Errors of the caller's own code go through [`crate::PruneError::external`].
pub trait Learner {
    /// What a training stage reports (per-epoch figures, say).
    type Report: Default;

    /// The current values of the prunable weights, by name.
    fn weights(&self) -> Result<NamedTensors>;

    /// `w ← w ⊙ m` for every masked weight.
    fn apply(&mut self, masks: &MaskSet) -> Result<()>;

    /// Every tensor back to the learner's rewind point, then `masks` applied.
    fn rewind(&mut self, masks: &MaskSet) -> Result<()>;

    /// Trains for `stage` with `pruner` enforced around every optimizer step.
    fn train(&mut self, stage: Stage, pruner: &mut dyn StepPruner) -> Result<Self::Report>;
}

/// What a driver leaves: the final masks (also applied to the learner's
/// weights), the report of the last training stage, and the optimizer step
/// of that stage from which the masks stayed fixed (0 unless they grew
/// during the stage, as with GMP).
#[derive(Clone, Debug)]
pub struct Outcome<R> {
    /// The final masks.
    pub masks: MaskSet,
    /// The report of the last training stage.
    pub report: R,
    /// The last step of the last stage at which the masks changed (0 when
    /// they were fixed throughout it).
    pub masks_fixed_from_step: u64,
}
