//! The crate's error type.

/// Everything that can go wrong while scoring, selecting or applying masks.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// A sparsity outside `[0, 1)` or not finite.
    #[error("sparsity must be in [0, 1), got {0}")]
    InvalidSparsity(f64),
    /// Two tensors that must have the same shape do not.
    #[error("shape mismatch for `{name}`: expected {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// Parameter name.
        name: String,
        /// Shape required (usually the weight's).
        expected: Vec<usize>,
        /// Shape found.
        got: Vec<usize>,
    },
    /// A name that must be present in a tensor map is absent.
    #[error("missing tensor `{0}`")]
    MissingTensor(String),
    /// Selection or scoring was asked to work on an empty set of parameters.
    #[error("no prunable parameters")]
    NoPrunableParameters,
    /// A score, weight or gradient holds NaN (or infinity where that is not allowed).
    #[error("non-finite value in `{name}`")]
    NonFinite {
        /// Parameter name.
        name: String,
    },
    /// A mask holds a value other than 0 and 1.
    #[error("mask `{name}` must hold only 0 and 1")]
    InvalidMask {
        /// Parameter name.
        name: String,
    },
    /// A criterion name that `importance::by_name` does not know.
    #[error(
        "unknown importance criterion `{0}`; expected one of: {names} (teacher-guided also as teacher-guided:kd, :ce or :mix)",
        names = crate::importance::BUILTIN.join(", ")
    )]
    UnknownCriterion(String),
    /// A criterion name with a suffix the criterion does not take.
    #[error("criterion `{criterion}` takes no suffix `:{suffix}` (only teacher-guided takes :kd, :ce or :mix)")]
    UnexpectedSuffix {
        /// The criterion.
        criterion: String,
        /// What followed its name.
        suffix: String,
    },
    /// A gradient-source name that `GradientSource::from_str` does not know.
    #[error("unknown gradient source `{0}`; expected one of: ce, kd, mixture")]
    UnknownGradientSource(String),
    /// A selection-scope name that `Scope::from_str` does not know.
    #[error("unknown selection scope `{0}`; expected one of: global, per-layer")]
    UnknownScope(String),
    /// A criterion that cannot select under the asked scope.
    #[error("{criterion} prunes by one global threshold per round; the {scope} scope is not supported with it")]
    UnsupportedScope {
        /// The criterion.
        criterion: String,
        /// The scope asked for.
        scope: crate::Scope,
    },
    /// A data-driven criterion given no calibration batch.
    #[error("the {0} criterion needs at least one calibration batch")]
    NeedsBatches(String),
    /// GraSP found no gradient to preserve.
    #[error("GraSP: the cross-entropy gradient of the prunable weights is {0} on the calibration batches; there is no gradient flow to preserve")]
    NoGradientFlow(f64),
    /// A finite-difference step that is not finite and positive.
    #[error("finite-difference step must be finite and > 0, got {0}")]
    InvalidEpsilon(f64),
    /// A per-round pruning rate outside `(0, 1)` or not finite.
    #[error("pruning rate per round must be in (0, 1), got {0}")]
    InvalidRate(f64),
    /// An iterative method asked for zero rounds, or a schedule that needs
    /// more rounds than allowed.
    #[error("invalid number of rounds: {rounds} (must be in 1..={max})")]
    InvalidRounds {
        /// Rounds asked for (or needed).
        rounds: usize,
        /// Largest number allowed.
        max: usize,
    },
    /// A gradual schedule whose end step precedes its begin step.
    #[error("schedule ends at step {end} before it begins at step {begin}")]
    InvalidStepRange {
        /// First pruning step.
        begin: u64,
        /// Last pruning step.
        end: u64,
    },
    /// A gradual schedule whose ramp is not a fraction in `(0, 1]` of the run.
    #[error("the ramp of a gradual schedule must be a fraction in (0, 1] of the steps, got {0}")]
    InvalidRampFraction(f64),
    /// A gradual schedule laid over a run of no training step.
    #[error(
        "a gradual schedule needs at least one training step (no epoch, or no training sample)"
    )]
    NoTrainingSteps,
    /// A gradual schedule updating every 0 steps.
    #[error("schedule frequency must be at least 1 step")]
    ZeroFrequency,
    /// A gradual schedule whose final sparsity is below its initial one
    /// (pruned weights are never regrown).
    #[error("final sparsity {final_} is below initial sparsity {initial}")]
    DecreasingSparsity {
        /// Sparsity at the begin step.
        initial: f64,
        /// Sparsity at the end step.
        final_: f64,
    },
    /// A `torch_prune` amount that is not a fraction in `[0, 1]` or asks for
    /// more units than are left.
    #[error("invalid pruning amount: {0}")]
    InvalidAmount(String),
    /// A structured method along an axis the tensor does not have (or on a
    /// tensor of rank < 2).
    #[error("`{name}`: cannot prune along dim {dim} of a tensor of rank {rank} (structured pruning needs rank ≥ 2)")]
    InvalidDim {
        /// Parameter name.
        name: String,
        /// The axis asked for.
        dim: usize,
        /// The tensor's rank.
        rank: usize,
    },
    /// A channel group name that the network does not declare.
    #[error("no channel group `{name}` (the groups: {known})")]
    UnknownGroup {
        /// The name given.
        name: String,
        /// The groups there are, comma-separated.
        known: String,
    },
    /// A group criterion that reads gradients, given none.
    #[error("the {0} group criterion needs the gradients of the loss")]
    NeedsGradients(String),
    /// `torch_prune::remove` on a parameter that carries no mask.
    #[error("`{0}` has to be pruned before its pruning can be removed")]
    NotPruned(String),
    /// `SaliencyAccumulator::finish` before any `add_batch`.
    #[error("saliency accumulator has no batches")]
    NoBatches,
    /// An error from a Candle tensor operation.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An error of the caller's side of a [`crate::importance::ScoringContext`]
    /// or a [`crate::schedule::Learner`] (a failed training run, a missing
    /// batch), passed through unchanged.
    #[error(transparent)]
    External(Box<dyn std::error::Error + Send + Sync>),
}

impl PruneError {
    /// Wraps an error of the caller's code ([`PruneError::External`]).
    pub fn external(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        PruneError::External(e.into())
    }
}

/// `Result` with [`PruneError`].
pub type Result<T> = std::result::Result<T, PruneError>;
