//! The error type of the crate.

use std::path::PathBuf;

/// Everything that can go wrong while loading, splitting or batching data.
/// Variants that concern a file name it.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be opened, read or decompressed.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file is shorter than its header says (`expected` and `got` are byte counts).
    #[error("{path} is truncated: expected {expected} bytes, got {got}")]
    Truncated {
        path: PathBuf,
        expected: usize,
        got: usize,
    },
    /// A file does not start with the magic number of the expected IDX kind.
    #[error("{path} is not the expected IDX file: magic number {found:#010x}, expected {expected:#010x}")]
    BadMagic {
        path: PathBuf,
        expected: u32,
        found: u32,
    },
    /// Two things that must agree do not (sample counts, image sizes, channel counts).
    #[error("mismatch: {0}")]
    Mismatch(String),
    /// A label is not below the number of classes.
    #[error("{path}: label {label} of sample {index} is not below the number of classes ({num_classes})")]
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: u8,
        num_classes: usize,
    },
    /// A dataset name that [`crate::DatasetName`] does not know.
    #[error("unknown dataset '{name}' (known: {known})")]
    UnknownDataset { name: String, known: String },
    /// A file-backed dataset was requested without a data directory;
    /// `expected` describes the files the directory must hold.
    #[error("dataset '{dataset}' is read from files: pass --data-dir DIR (a directory holding {expected}), or load it from the Hugging Face Hub")]
    MissingDataDir { dataset: String, expected: String },
    /// A file exists but its content is not what its format requires (a
    /// record size, an image that does not decode, a parquet file that does
    /// not parse, a missing column).
    #[error("{path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
    /// The Hugging Face Hub client failed (network, missing revision, a file
    /// absent from the local cache in offline mode, ...).
    #[error("Hugging Face Hub dataset {repo} (cache {}): {source}", cache.display())]
    Hub {
        repo: String,
        cache: PathBuf,
        // Boxed: the client's error is large and rare.
        #[source]
        source: Box<hf_hub::HFError>,
    },
    /// Offline, and the dataset's files are not in the hf-hub cache.
    #[error(
        "Hugging Face Hub dataset {repo} (revision {revision}) is not in the cache {} and offline mode forbids downloading it: run the command once without --offline (and without HF_HUB_OFFLINE) where the Hub can be reached, or point --hub-cache (HF_HUB_CACHE) at a cache that holds it",
        cache.display()
    )]
    HubNotCached {
        repo: String,
        revision: String,
        cache: PathBuf,
    },
    /// A text source (the embedded digits CSV) has a malformed line (1-based).
    #[error("{what}, line {line}: {message}")]
    Parse {
        what: String,
        line: usize,
        message: String,
    },
    /// An error from candle while building tensors.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An argument out of its domain (a fraction outside [0, 1], an index out of range, ...).
    #[error("invalid argument: {0}")]
    Invalid(String),
}

/// `Result` with [`DataError`].
pub type Result<T> = std::result::Result<T, DataError>;
