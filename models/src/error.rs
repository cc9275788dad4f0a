//! The error type of the crate.

use std::path::PathBuf;

use candle_core::DType;

/// Everything that can go wrong while configuring, building, loading or saving a model.
/// Variants that concern a tensor or a file name it.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// An error from candle while building or running a model.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A model name that [`crate::ModelConfig::from_name`] does not know.
    #[error("unknown model '{name}' (known: {known})")]
    UnknownModel { name: String, known: String },
    /// A configuration that cannot be built (zero widths, an input too small, a malformed name).
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// A tensor the model needs is absent from the given set.
    #[error("missing tensor '{0}'")]
    MissingTensor(String),
    /// The given set holds a tensor the model does not have.
    #[error("unexpected tensor '{0}'")]
    UnexpectedTensor(String),
    /// A tensor has another shape than the model's parameter of the same name.
    #[error("shape mismatch for tensor '{name}': expected {expected:?}, got {got:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// A tensor has another element type than the model's parameter of the same name.
    #[error("dtype mismatch for tensor '{name}': expected {expected:?}, got {got:?}")]
    DtypeMismatch {
        name: String,
        expected: DType,
        got: DType,
    },
    /// A checkpoint holds another architecture than the one asked for.
    #[error("architecture mismatch: expected {expected}, found {found}")]
    ArchitectureMismatch { expected: String, found: String },
    /// A checkpoint file is malformed, or a checkpoint cannot be written as asked.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    /// A file or directory could not be read, written, created or renamed.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, ModelError>;
