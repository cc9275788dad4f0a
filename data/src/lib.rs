//! Datasets for kdprune: the embedded UCI digits, IDX (MNIST-style) directories,
//! CIFAR-10/100 binary batches, the TinyImageNet folder layout, the same
//! datasets as parquet files from the Hugging Face Hub, a seeded stratified
//! split, per-channel normalisation and seeded augmentation. (The batch
//! order of training is the training loop's: `kd_core::Batcher`.)
//!
//! Images stay raw bytes in `[N, C, H, W]` order whatever the source; tensors are
//! built per batch.
//!
//! ```
//! use kdprune_data::{load, Augment, Augmenter, DatasetName, Normalization};
//! use candle_core::Device;
//!
//! let split = load(DatasetName::Digits, None, 42)?;
//! let norm = Normalization::fit(&split.train);
//! let first: Vec<usize> = (0..64).collect();
//! let (x, y) = split.train.batch(&first, &norm, &Device::Cpu)?;
//! assert_eq!(x.dims(), &[64, 1, 8, 8]);
//! assert_eq!(y.dims(), &[64]);
//! // Training batches: random 1-pixel shifts and flips, replayable from the seed.
//! let aug = Augmenter::new(Augment { pad: 1, flip: true }, 42);
//! let (xa, _) = aug.batch(&split.train, &first, &norm, 0, 0, &Device::Cpu)?;
//! assert_eq!(xa.dims(), &[64, 1, 8, 8]);
//! # Ok::<(), kdprune_data::DataError>(())
//! ```

pub mod augment;
pub mod cifar;
pub mod dataset;
pub mod decode;
pub mod digits;
pub mod error;
pub mod hub;
pub mod idx;
pub mod normalize;
pub mod parquet_table;
pub mod registry;
pub mod split;
pub mod text;
pub mod tiny_imagenet;

pub use augment::{Augment, Augmenter, Placement};
pub use cifar::{
    load_cifar100_dir, load_cifar10_dir, read_cifar_bin, Cifar100Labels, CifarKind, CifarRecords,
};
pub use dataset::{Dataset, Split};
pub use decode::decode_chw;
pub use digits::digits;
pub use error::{DataError, Result};
pub use hub::{
    load_from_hub, load_hub_dataset, load_parquet_files, DownloadBar, HubDataset, HubOptions,
};
pub use idx::{load_idx_dir, read_idx_images, read_idx_labels};
pub use normalize::Normalization;
pub use parquet_table::{read_image_table, ImageTable};
pub use registry::{load, DatasetName};
pub use split::stratified_split;
pub use tiny_imagenet::load_tiny_imagenet_dir;
