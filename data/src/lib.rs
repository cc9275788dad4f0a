//! Datasets for kdprune: the embedded UCI digits, IDX (MNIST-style) directories,
//! a seeded stratified split, per-channel normalisation and seeded batching.
//!
//! ```
//! use kdprune_data::{load, Batcher, DatasetName, Normalization};
//! use candle_core::Device;
//!
//! let split = load(DatasetName::Digits, None, 42)?;
//! let norm = Normalization::fit(&split.train);
//! let batcher = Batcher::new(split.train.len(), 64, true, 42);
//! let first = &batcher.epoch(0)[0];
//! let (x, y) = split.train.batch(first, &norm, &Device::Cpu)?;
//! assert_eq!(x.dims(), &[64, 1, 8, 8]);
//! assert_eq!(y.dims(), &[64]);
//! # Ok::<(), kdprune_data::DataError>(())
//! ```

pub mod batcher;
pub mod dataset;
pub mod digits;
pub mod error;
pub mod idx;
pub mod normalize;
pub mod split;

pub use batcher::Batcher;
pub use dataset::{load, Dataset, DatasetName, Split};
pub use digits::digits;
pub use error::{DataError, Result};
pub use idx::{load_idx_dir, read_idx_images, read_idx_labels};
pub use normalize::Normalization;
pub use split::stratified_split;
