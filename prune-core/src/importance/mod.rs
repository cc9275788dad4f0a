//! Importance scores: one `f32` tensor per parameter, of the parameter's
//! shape; higher means more important (pruned last). One file per criterion.
//!
//! - magnitude `|θ|` ([`magnitude`]); random `U[0, 1)` ([`random`]);
//! - SNIP `|θ ⊙ ∂L_CE/∂θ|` ([`snip`], [`SaliencyAccumulator`]);
//! - teacher-guided `|θ ⊙ ∂L/∂θ|`, `L` chosen by [`GradientSource`]
//!   ([`teacher_guided`]);
//! - EPSD self-distillation `|θ ⊙ ∂L_SD/∂θ|` ([`self_distill`]);
//! - LAMP `w_u² / Σ_{v≥u} w_v²` within each layer ([`lamp`]);
//! - GraSP `θ ⊙ H·g`, the negated paper score ([`grasp`],
//!   [`hessian_gradient_product`]);
//! - SynFlow `|θ ⊙ ∂R/∂θ|`, iterated ([`synflow`], [`synflow_scores`]).
//!
//! Gradients and forward passes come from the caller, as gradient maps or as
//! closures `FnMut(&NamedTensors) -> Result<NamedTensors, E>` returning a
//! gradient at given parameter values: this crate never sees a model.

mod grasp;
mod lamp;
mod magnitude;
mod random;
mod saliency;
mod self_distill;
mod synflow;
mod teacher_guided;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::PruneError;

pub use grasp::{grasp, hessian_gradient_product};
pub use lamp::lamp;
pub use magnitude::magnitude;
pub use random::random;
pub use saliency::{snip, SaliencyAccumulator};
pub use self_distill::self_distill;
pub use synflow::{
    synflow, synflow_scores, SynFlowOutcome, DEFAULT_SYNFLOW_ROUNDS, MAX_SYNFLOW_ROUNDS,
};
pub use teacher_guided::{teacher_guided, GradientSource};

/// The importance criteria the project implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Criterion {
    /// `|θ|` ([`magnitude`]); layer-wise with [`crate::select::per_layer`],
    /// global with [`crate::select::global`].
    Magnitude,
    /// Uniform `[0, 1)` noise ([`random`]): the baseline every criterion must beat.
    Random,
    /// `|θ ⊙ ∂CE/∂θ|` summed over batches ([`snip`], [`SaliencyAccumulator`]).
    Snip,
    /// `|θ ⊙ ∂L/∂θ|` summed over batches, `L` being the distillation
    /// loss under the frozen teacher, or CE / the mixture as chosen by a
    /// [`GradientSource`] ([`teacher_guided`], [`SaliencyAccumulator`]).
    TeacherGuided,
    /// LAMP, `w_u² / Σ_{v≥u} w_v²` within each layer, then one global
    /// threshold ([`lamp`]; Lee et al. 2021).
    Lamp,
    /// GraSP, `θ ⊙ H·g` with `H·g` by finite differences of gradients
    /// ([`grasp`], [`hessian_gradient_product`]; Wang et al. 2020).
    Grasp,
    /// SynFlow, `|θ ⊙ ∂R/∂θ|` of the linearised network on an all-ones input,
    /// iterated with an exponential schedule ([`synflow`]; Tanaka et al. 2020).
    Synflow,
    /// EPSD, `|θ ⊙ ∂L_SD/∂θ|` with a self-distillation loss `L_SD`
    /// ([`self_distill`]; Chen et al. 2024).
    SelfDistill,
}

impl Criterion {
    /// Every criterion, in declaration order.
    pub const ALL: [Criterion; 8] = [
        Criterion::Magnitude,
        Criterion::Random,
        Criterion::Snip,
        Criterion::TeacherGuided,
        Criterion::Lamp,
        Criterion::Grasp,
        Criterion::Synflow,
        Criterion::SelfDistill,
    ];

    /// The kebab-case name used on the command line and in configs.
    pub fn name(self) -> &'static str {
        match self {
            Criterion::Magnitude => "magnitude",
            Criterion::Random => "random",
            Criterion::Snip => "snip",
            Criterion::TeacherGuided => "teacher-guided",
            Criterion::Lamp => "lamp",
            Criterion::Grasp => "grasp",
            Criterion::Synflow => "synflow",
            Criterion::SelfDistill => "self-distill",
        }
    }

    /// Whether scoring needs gradients of the model (handed in by the caller
    /// or computed by a caller's closure).
    pub fn needs_gradients(self) -> bool {
        !matches!(
            self,
            Criterion::Magnitude | Criterion::Random | Criterion::Lamp
        )
    }

    /// Whether scoring needs data batches (SynFlow is data-free: it runs the
    /// network on an all-ones input).
    pub fn needs_data(self) -> bool {
        self.needs_gradients() && self != Criterion::Synflow
    }
}

impl fmt::Display for Criterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Criterion {
    type Err = PruneError;

    /// Parses `magnitude`, `random`, `snip`, `teacher-guided`, `lamp`,
    /// `grasp`, `synflow` or `self-distill`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Criterion::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| PruneError::UnknownCriterion(s.to_string()))
    }
}
