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
    /// A criterion name that `Criterion::from_str` does not know.
    #[error("unknown importance criterion `{0}`; expected one of: magnitude, random, snip, teacher-guided")]
    UnknownCriterion(String),
    /// `SaliencyAccumulator::finish` before any `add_batch`.
    #[error("saliency accumulator has no batches")]
    NoBatches,
    /// An error from a Candle tensor operation.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `Result` with [`PruneError`].
pub type Result<T> = std::result::Result<T, PruneError>;
