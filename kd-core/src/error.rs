//! The error type shared by every kd-core module.

/// Everything that can go wrong in kd-core: tensor errors from Candle, invalid
/// hyper-parameters, shape mismatches between student, teacher and labels, and a
/// training loss that stopped being finite.
#[derive(Debug, thiserror::Error)]
pub enum KdError {
    /// A tensor operation failed inside Candle.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// An error of the caller's code behind a trait of this crate (a batch
    /// that could not be built by a [`crate::Samples`], a model's state that
    /// could not be read by a [`crate::Network`]), passed through unchanged.
    #[error(transparent)]
    External(Box<dyn std::error::Error + Send + Sync>),
    /// A hyper-parameter is out of range (temperature, α, β, ε, learning rate, …).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The training loss became NaN or ±∞; `value` is the offending loss.
    #[error("loss became NaN/inf at epoch {epoch}, step {step}")]
    NonFiniteLoss {
        /// Epoch (as counted by the training loop) in which the loss diverged.
        epoch: usize,
        /// Optimizer step since the start of the run, 1-based.
        step: usize,
        /// The non-finite loss value.
        value: f32,
    },
    /// Tensors that must agree in shape (or dtype) do not.
    #[error("shape mismatch: {0}")]
    ShapeMismatch(String),
    /// Any other failure, described in words.
    #[error("{0}")]
    Other(String),
}

impl KdError {
    /// Wraps an error of the caller's code ([`KdError::External`]).
    pub fn external(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        KdError::External(e.into())
    }
}

/// `Result` with [`KdError`] as the error type.
pub type Result<T> = std::result::Result<T, KdError>;
