//! Importance scores: one `f32` tensor per parameter, of the parameter's
//! shape; higher means more important (pruned last).

mod magnitude;
mod random;
mod saliency;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::PruneError;

pub use magnitude::magnitude;
pub use random::random;
pub use saliency::SaliencyAccumulator;

/// The importance criteria the project implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Criterion {
    /// `|θ|` ([`magnitude`]).
    Magnitude,
    /// Uniform `[0, 1)` noise ([`random`]): the baseline every criterion must beat.
    Random,
    /// `|θ ⊙ ∂CE/∂θ|` summed over batches ([`SaliencyAccumulator`]).
    Snip,
    /// `|θ ⊙ ∂L_KD/∂θ|` summed over batches, `L_KD` being the distillation
    /// loss under the frozen teacher ([`SaliencyAccumulator`]).
    TeacherGuided,
}

impl Criterion {
    /// Every criterion, in declaration order.
    pub const ALL: [Criterion; 4] = [
        Criterion::Magnitude,
        Criterion::Random,
        Criterion::Snip,
        Criterion::TeacherGuided,
    ];

    /// The kebab-case name used on the command line and in configs.
    pub fn name(self) -> &'static str {
        match self {
            Criterion::Magnitude => "magnitude",
            Criterion::Random => "random",
            Criterion::Snip => "snip",
            Criterion::TeacherGuided => "teacher-guided",
        }
    }

    /// Whether scoring needs gradients (and thus data batches).
    pub fn needs_gradients(self) -> bool {
        matches!(self, Criterion::Snip | Criterion::TeacherGuided)
    }
}

impl fmt::Display for Criterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Criterion {
    type Err = PruneError;

    /// Parses `magnitude`, `random`, `snip` or `teacher-guided`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Criterion::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| PruneError::UnknownCriterion(s.to_string()))
    }
}
