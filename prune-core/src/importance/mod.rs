//! Importance scores: one `f32` tensor per parameter, of the parameter's
//! shape; higher means more important (pruned last). One file per criterion.
//!
//! - magnitude `|θ|` ([`Magnitude`], [`magnitude`]); random `U[0, 1)`
//!   ([`Random`], [`random`]);
//! - SNIP `|θ ⊙ ∂L_CE/∂θ|` ([`Snip`], [`snip`], [`SaliencyAccumulator`]);
//! - teacher-guided `|θ ⊙ ∂L/∂θ|`, `L` chosen by [`GradientSource`]
//!   ([`TeacherGuided`], [`teacher_guided`]);
//! - EPSD self-distillation `|θ ⊙ ∂L_SD/∂θ|` ([`SelfDistill`], [`self_distill`]);
//! - LAMP `w_u² / Σ_{v≥u} w_v²` within each layer ([`Lamp`], [`lamp`]);
//! - GraSP `θ ⊙ H·g`, the negated paper score ([`Grasp`], [`grasp`],
//!   [`hessian_gradient_product`]);
//! - SynFlow `|θ ⊙ ∂R/∂θ|`, iterated ([`SynFlow`], [`synflow`], [`synflow_scores`]).
//!
//! A criterion is a type implementing [`Importance`]; it reads the model
//! through a [`ScoringContext`] the caller implements (weights, gradients of a
//! named [`Loss`] on calibration batches): this crate never sees a model. A
//! new criterion is one file with one `impl Importance`; callers take
//! `&dyn Importance`, so a criterion defined outside the crate works
//! everywhere a built-in one does. [`by_name`] builds the built-in ones from
//! their command-line names ([`BUILTIN`]).

mod grasp;
mod lamp;
mod magnitude;
mod random;
mod saliency;
mod self_distill;
mod synflow;
mod teacher_guided;

use std::fmt;

use crate::{MaskSet, NamedTensors, PruneError, Result, Scope, Scores};

pub use grasp::{grasp, hessian_gradient_product, Grasp};
pub use lamp::{lamp, Lamp};
pub use magnitude::{magnitude, Magnitude};
pub use random::{random, Random};
pub use saliency::{snip, SaliencyAccumulator, Snip};
pub use self_distill::{self_distill, SelfDistill};
pub use synflow::{
    synflow, synflow_scores, synflow_within, SynFlow, SynFlowOutcome, DEFAULT_SYNFLOW_ROUNDS,
    MAX_SYNFLOW_ROUNDS,
};
pub use teacher_guided::{teacher_guided, GradientSource, TeacherGuided};

/// What a criterion reads of the model, so that a caller can check its inputs
/// before any work (a teacher, calibration batches).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// Gradients of the model (handed in through the [`ScoringContext`]).
    pub gradients: bool,
    /// Calibration batches of training data.
    pub data: bool,
    /// A frozen teacher.
    pub teacher: bool,
}

impl Needs {
    /// The weights alone (magnitude, LAMP, random).
    pub const WEIGHTS: Needs = Needs {
        gradients: false,
        data: false,
        teacher: false,
    };
    /// Gradients on calibration batches (SNIP, GraSP, EPSD).
    pub const DATA: Needs = Needs {
        gradients: true,
        data: true,
        teacher: false,
    };
}

/// The loss whose gradient a criterion asks of its [`ScoringContext`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// Cross-entropy of the model on the labels.
    CrossEntropy,
    /// The distillation objective under the frozen teacher, or one of its
    /// terms, as the [`GradientSource`] says.
    Distillation(GradientSource),
    /// A self-distillation loss: the model's outputs against its own detached
    /// predictions on a second view of the batch (EPSD), with the caller's
    /// temperature and weight.
    SelfDistillation,
}

/// The model side of scoring, implemented by the caller over its model and
/// data. Gradients are taken in training mode on the caller's calibration
/// batches (the same batches for every call with the same index) and on a
/// model whose state scoring may change freely: scoring must leave the
/// caller's own model untouched.
pub trait ScoringContext {
    /// The values of the prunable weights being scored, by name.
    fn weights(&self) -> Result<NamedTensors>;
    /// The seed of criteria that draw random numbers.
    fn seed(&self) -> u64;
    /// The number of calibration batches.
    fn batches(&self) -> usize;
    /// `∂L/∂θ` of every prunable weight on calibration batch `batch`, at the
    /// weights set last by [`ScoringContext::set_weights`] (at first, the
    /// values of [`ScoringContext::weights`]).
    fn gradient(&mut self, loss: Loss, batch: usize) -> Result<NamedTensors>;
    /// Moves the prunable weights at which gradients are taken to `values`
    /// (the other parameters keep theirs).
    fn set_weights(&mut self, values: &NamedTensors) -> Result<()>;
    /// `∂R/∂θ` of the synaptic flow `R = Σ f(1)`: the network with its
    /// prunable weights at `linear` and every other parameter replaced by its
    /// absolute value (batch norms in evaluation mode on absolute running
    /// statistics), run on one all-ones input.
    fn synaptic_flow_gradient(&mut self, linear: &NamedTensors) -> Result<NamedTensors>;
}

/// A pruning criterion.
pub trait Importance: fmt::Debug {
    /// The name on the command line and in reports, e.g. `teacher-guided:kd`.
    fn name(&self) -> String;

    /// What the criterion reads of the model.
    fn needs(&self) -> Needs;

    /// Scores of the prunable weights, higher = kept longer.
    fn score(&self, ctx: &mut dyn ScoringContext) -> Result<Scores>;

    /// Masks pruning exactly `round(s·n)` of the `n` prunable weights under
    /// `scope` (`round(s·n_t)` per tensor for [`Scope::PerLayer`]), choosing
    /// among the weights `kept` still keeps: a weight `kept` prunes stays
    /// pruned. By default the lowest [`Importance::score`]s are pruned
    /// ([`Scope::select_within`]); iterative criteria override it.
    fn prune(
        &self,
        ctx: &mut dyn ScoringContext,
        sparsity: f64,
        scope: Scope,
        kept: &MaskSet,
    ) -> Result<MaskSet> {
        scope.select_within(&self.score(ctx)?, kept, sparsity)
    }

    /// Sample passes through the network `(forward, backward)` that scoring
    /// spends on `samples` calibration samples, for cost accounting.
    fn passes(&self, samples: u64) -> (u64, u64) {
        if self.needs().data {
            (samples, samples)
        } else {
            (0, 0)
        }
    }
}

/// The names [`by_name`] knows, in the order the documentation lists them.
pub const BUILTIN: [&str; 8] = [
    "magnitude",
    "random",
    "snip",
    "teacher-guided",
    "lamp",
    "grasp",
    "synflow",
    "self-distill",
];

/// A built-in criterion from its name, with its default settings:
/// `magnitude`, `random`, `snip`, `teacher-guided` (also
/// `teacher-guided:kd` and `teacher-guided:ce` for the gradient of one term
/// only, `teacher-guided:mix` or `:mixture` for the default, see
/// [`GradientSource`]), `lamp`, `grasp`,
/// `synflow` ([`DEFAULT_SYNFLOW_ROUNDS`] rounds) or `self-distill`.
pub fn by_name(name: &str) -> Result<Box<dyn Importance>> {
    let (base, suffix) = match name.split_once(':') {
        Some((b, s)) => (b, Some(s)),
        None => (name, None),
    };
    let criterion: Box<dyn Importance> = match base {
        "magnitude" => Box::new(Magnitude),
        "random" => Box::new(Random),
        "snip" => Box::new(Snip),
        "lamp" => Box::new(Lamp),
        "grasp" => Box::new(Grasp),
        "synflow" => Box::new(SynFlow::default()),
        "self-distill" => Box::new(SelfDistill),
        "teacher-guided" => {
            // `:mix` is the short spelling of `mixture` on the command line.
            let source = match suffix {
                None | Some("mix") => GradientSource::Mixture,
                Some(s) => s.parse()?,
            };
            return Ok(Box::new(TeacherGuided { source }));
        }
        _ => return Err(PruneError::UnknownCriterion(name.to_string())),
    };
    match suffix {
        Some(s) => Err(PruneError::UnexpectedSuffix {
            criterion: base.to_string(),
            suffix: s.to_string(),
        }),
        None => Ok(criterion),
    }
}

/// `Σ_b |θ ⊙ ∂L/∂θ|` over every calibration batch of `ctx`: the saliency of
/// SNIP, of the teacher-guided score and of EPSD, which differ in `loss` only.
pub(crate) fn accumulate(ctx: &mut dyn ScoringContext, loss: Loss) -> Result<Scores> {
    let weights = ctx.weights()?;
    let mut acc = SaliencyAccumulator::new();
    for b in 0..ctx.batches() {
        acc.add_batch(&weights, &ctx.gradient(loss, b)?)?;
    }
    acc.finish()
}
