//! Teacher-guided saliency `|θ ⊙ ∂L/∂θ|`, `L` involving a frozen teacher, and
//! the choice of which loss's gradient to use.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{NamedTensors, PruneError, Result, Scores};

use super::SaliencyAccumulator;

/// Which loss the caller differentiates for teacher-guided saliency
/// `S = |θ ⊙ ∂L/∂θ|`. prune-core never computes a loss: the caller (kd-core /
/// cli) builds `L` from this choice, takes `∂L/∂θ`, and hands the gradients to
/// [`teacher_guided`] or a [`SaliencyAccumulator`].
///
/// Serialised and parsed as `"ce"`, `"kd"`, `"mixture"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GradientSource {
    /// `L = CE(student(x), y)`: the labels only — plain SNIP on the student.
    Ce,
    /// `L = KD(student(x), teacher(x))`: the distillation term only (e.g.
    /// `τ² · KL(p_T^τ ‖ p_S^τ)`), the teacher's soft targets alone.
    #[default]
    Kd,
    /// `L = α·CE + (1 − α)·KD`: the training loss of the distillation run,
    /// with the caller's `α` and temperature.
    Mixture,
}

impl GradientSource {
    /// Every source, in declaration order.
    pub const ALL: [GradientSource; 3] = [
        GradientSource::Ce,
        GradientSource::Kd,
        GradientSource::Mixture,
    ];

    /// The lower-case name used on the command line and in configs.
    pub fn name(self) -> &'static str {
        match self {
            GradientSource::Ce => "ce",
            GradientSource::Kd => "kd",
            GradientSource::Mixture => "mixture",
        }
    }

    /// Whether the loss needs the teacher's outputs (`kd` and `mixture`).
    pub fn needs_teacher(self) -> bool {
        !matches!(self, GradientSource::Ce)
    }
}

impl fmt::Display for GradientSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for GradientSource {
    type Err = PruneError;

    /// Parses `ce`, `kd` or `mixture`; anything else is
    /// [`PruneError::UnknownGradientSource`].
    fn from_str(s: &str) -> Result<Self> {
        GradientSource::ALL
            .into_iter()
            .find(|g| g.name() == s)
            .ok_or_else(|| PruneError::UnknownGradientSource(s.to_string()))
    }
}

/// Teacher-guided saliency on one batch: `S = |θ ⊙ ∂L/∂θ|` in `f32`, `grads`
/// holding the gradient of the loss chosen by a [`GradientSource`].
///
/// The same accumulator as [`super::snip`]; only the loss differs. Use a
/// [`SaliencyAccumulator`] to sum over several batches.
pub fn teacher_guided(weights: &NamedTensors, grads: &NamedTensors) -> Result<Scores> {
    let mut acc = SaliencyAccumulator::new();
    acc.add_batch(weights, grads)?;
    acc.finish()
}
