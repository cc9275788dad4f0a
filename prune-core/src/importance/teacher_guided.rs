//! Teacher-guided saliency `|θ ⊙ ∂L/∂θ|`, `L` involving a frozen teacher, and
//! the choice of which loss's gradient to use.

use std::fmt;
use std::str::FromStr;

use super::{accumulate, Importance, Loss, Needs, ScoringContext};
use crate::{NamedTensors, PruneError, Result, Scores};

use super::SaliencyAccumulator;

/// Which loss the caller differentiates for teacher-guided saliency
/// `S = |θ ⊙ ∂L/∂θ|`. prune-core never computes a loss: the caller builds `L`
/// from this choice, takes `∂L/∂θ`, and hands the gradients over (through a
/// [`ScoringContext`], or to [`teacher_guided`] / a [`SaliencyAccumulator`]).
///
/// `α` is the weight of the distillation term, as everywhere in the project:
/// the distillation objective is `L = α·KD + (1−α)·CE`.
///
/// Named `mixture`, `kd` and `ce` (the criterion names of [`super::by_name`]
/// also take `mix` for the mixture: `teacher-guided:mix`).
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GradientSource {
    /// `L = α·KD + (1−α)·CE`: the training loss of the distillation run, with
    /// the caller's `α` and temperature. The paper's choice.
    #[default]
    Mixture,
    /// `L = KD(student(x), teacher(x))` alone (`α = 1`): the teacher's soft
    /// targets only.
    Kd,
    /// `L = CE(student(x), y)` alone (`α = 0`): the labels only — SNIP on the
    /// student.
    Ce,
}

impl GradientSource {
    /// Every source, in declaration order.
    pub const ALL: [GradientSource; 3] = [
        GradientSource::Mixture,
        GradientSource::Kd,
        GradientSource::Ce,
    ];

    /// The lower-case name used in configs.
    pub fn name(self) -> &'static str {
        match self {
            GradientSource::Mixture => "mixture",
            GradientSource::Kd => "kd",
            GradientSource::Ce => "ce",
        }
    }

    /// Whether the loss needs the teacher's outputs (`mixture` and `kd`).
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

    /// Parses `mixture`, `kd` or `ce`; anything else is
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

/// The paper's criterion: `Σ_b |θ ⊙ ∂L/∂θ|` over the calibration batches,
/// `L` the distillation loss under the frozen teacher (or one of its terms,
/// per `source`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TeacherGuided {
    /// Which loss's gradient is taken.
    pub source: GradientSource,
}

impl Importance for TeacherGuided {
    /// `teacher-guided`, or `teacher-guided:kd` / `teacher-guided:ce` for
    /// one term only.
    fn name(&self) -> String {
        match self.source {
            GradientSource::Mixture => "teacher-guided".into(),
            s => format!("teacher-guided:{s}"),
        }
    }
    fn needs(&self) -> Needs {
        Needs {
            teacher: self.source.needs_teacher(),
            ..Needs::DATA
        }
    }
    fn score(&self, ctx: &mut dyn ScoringContext) -> Result<Scores> {
        accumulate(ctx, Loss::Distillation(self.source))
    }
    /// The student's and the teacher's forward, the student's backward.
    fn passes(&self, samples: u64) -> (u64, u64) {
        (2 * samples, samples)
    }
}
