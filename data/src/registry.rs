//! The datasets the crate knows by name, and [`load`]: each name dispatched
//! to its loader.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::dataset::Split;
use crate::error::{DataError, Result};

/// The datasets [`load`] and [`crate::load_from_hub`] know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetName {
    /// The embedded UCI digits (1,797 images of 1x8x8, 10 classes).
    Digits,
    /// Fashion-MNIST (70,000 images of 1x28x28, 10 classes).
    FashionMnist,
    /// MNIST (70,000 images of 1x28x28, 10 classes).
    Mnist,
    /// CIFAR-10 (60,000 images of 3x32x32, 10 classes).
    Cifar10,
    /// CIFAR-100 with its fine labels (60,000 images of 3x32x32, 100 classes).
    Cifar100,
    /// TinyImageNet (110,000 images of 3x64x64, 200 classes; the labelled
    /// validation part is the test set).
    TinyImageNet,
}

impl DatasetName {
    /// Every known dataset, in the order error messages list them.
    pub const ALL: [DatasetName; 6] = [
        DatasetName::Digits,
        DatasetName::FashionMnist,
        DatasetName::Mnist,
        DatasetName::Cifar10,
        DatasetName::Cifar100,
        DatasetName::TinyImageNet,
    ];

    /// The canonical name, as accepted by `from_str` and printed by `Display`.
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::Digits => "digits",
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::Mnist => "mnist",
            DatasetName::Cifar10 => "cifar10",
            DatasetName::Cifar100 => "cifar100",
            DatasetName::TinyImageNet => "tiny-imagenet",
        }
    }

    /// Number of classes of the dataset.
    pub fn num_classes(self) -> usize {
        match self {
            DatasetName::Cifar100 => 100,
            DatasetName::TinyImageNet => crate::tiny_imagenet::TINY_IMAGENET_CLASSES,
            _ => 10,
        }
    }

    /// The image shape `(channels, height, width)`.
    pub fn image_shape(self) -> (usize, usize, usize) {
        match self {
            DatasetName::Digits => (1, 8, 8),
            DatasetName::FashionMnist | DatasetName::Mnist => (1, 28, 28),
            DatasetName::Cifar10 | DatasetName::Cifar100 => (3, 32, 32),
            DatasetName::TinyImageNet => (3, 64, 64),
        }
    }

    /// What a `data_dir` for [`load`] must hold (empty for the embedded digits).
    pub fn expected_files(self) -> &'static str {
        match self {
            DatasetName::Digits => "",
            DatasetName::FashionMnist | DatasetName::Mnist => {
                "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], \
                 t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]"
            }
            DatasetName::Cifar10 => "data_batch_1.bin ... data_batch_5.bin, test_batch.bin",
            DatasetName::Cifar100 => "train.bin, test.bin",
            DatasetName::TinyImageNet => {
                "wnids.txt, train/<wnid>/images/*.JPEG, val/val_annotations.txt, val/images/*.JPEG"
            }
        }
    }
}

impl FromStr for DatasetName {
    type Err = DataError;

    /// Parses `digits`, `fashion-mnist` (or `fashion_mnist`), `mnist`, `cifar10`
    /// (or `cifar-10`), `cifar100` (or `cifar-100`) and `tiny-imagenet` (or
    /// `tiny_imagenet`, `tinyimagenet`), ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "digits" => Ok(DatasetName::Digits),
            "fashion-mnist" | "fashion_mnist" => Ok(DatasetName::FashionMnist),
            "mnist" => Ok(DatasetName::Mnist),
            "cifar10" | "cifar-10" => Ok(DatasetName::Cifar10),
            "cifar100" | "cifar-100" => Ok(DatasetName::Cifar100),
            "tiny-imagenet" | "tiny_imagenet" | "tinyimagenet" => Ok(DatasetName::TinyImageNet),
            _ => Err(DataError::UnknownDataset {
                name: s.to_string(),
                known: DatasetName::ALL
                    .iter()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Loads a dataset as a train/test split from local files.
///
/// - `digits`: the embedded data, split 80/20 per class by [`crate::stratified_split`]
///   with `seed`; `data_dir` is ignored.
/// - `fashion-mnist`, `mnist`: the IDX files of `data_dir` ([`crate::load_idx_dir`]).
/// - `cifar10`: the binary batches of `data_dir` ([`crate::load_cifar10_dir`]).
/// - `cifar100`: `train.bin` / `test.bin` of `data_dir`, fine labels
///   ([`crate::load_cifar100_dir`]).
/// - `tiny-imagenet`: the folder layout of `tiny-imagenet-200.zip`
///   ([`crate::load_tiny_imagenet_dir`]); it must list 200 classes.
///
/// File-backed datasets use the official train/test split (`seed` is unused) and
/// also accept the parent of their folder: `DIR/<name>` (`DIR/cifar10`, ...) or
/// the folder name of the official archive (`DIR/cifar-10-batches-bin`,
/// `DIR/cifar-100-binary`, `DIR/tiny-imagenet-200`). Without `data_dir` they
/// fail with [`DataError::MissingDataDir`]; [`crate::load_from_hub`] reads them
/// from the Hugging Face Hub instead.
pub fn load(name: DatasetName, data_dir: Option<&Path>, seed: u64) -> Result<Split> {
    let need_dir = || {
        data_dir.ok_or_else(|| DataError::MissingDataDir {
            dataset: name.to_string(),
            expected: name.expected_files().to_string(),
        })
    };
    let n = name.as_str();
    let split = match name {
        DatasetName::Digits => crate::split::stratified_split(&crate::digits::digits()?, 0.2, seed),
        DatasetName::FashionMnist | DatasetName::Mnist => {
            let dir = need_dir()?;
            // IDX files may be gzipped, so `has_idx_files` looks for either name.
            let sub = dir.join(n);
            let dir = if !crate::idx::has_idx_files(dir) && crate::idx::has_idx_files(&sub) {
                sub
            } else {
                dir.to_path_buf()
            };
            crate::idx::load_idx_dir(&dir, n, name.num_classes())
        }
        DatasetName::Cifar10 => crate::cifar::load_cifar10_dir(&resolve_dir(
            need_dir()?,
            crate::cifar::CIFAR10_TEST_FILE,
            &["cifar-10-batches-bin", n],
        )),
        DatasetName::Cifar100 => crate::cifar::load_cifar100_dir(
            &resolve_dir(
                need_dir()?,
                crate::cifar::CIFAR100_TRAIN_FILE,
                &["cifar-100-binary", n],
            ),
            crate::cifar::Cifar100Labels::Fine,
        ),
        DatasetName::TinyImageNet => {
            let dir = resolve_dir(need_dir()?, "wnids.txt", &["tiny-imagenet-200", n]);
            let split = crate::tiny_imagenet::load_tiny_imagenet_dir(&dir)?;
            if split.train.num_classes != name.num_classes() {
                return Err(DataError::Mismatch(format!(
                    "{} lists {} classes, TinyImageNet has {}",
                    dir.join("wnids.txt").display(),
                    split.train.num_classes,
                    name.num_classes()
                )));
            }
            Ok(split)
        }
    }?;
    split.check_usable(&data_dir.map_or_else(|| n.to_string(), |d| d.display().to_string()))?;
    Ok(split)
}

/// `dir` when it holds `marker`, else the first `dir/<sub>` that does, else `dir`
/// (so that the loader's error names the file expected in `dir`).
fn resolve_dir(dir: &Path, marker: &str, subdirs: &[&str]) -> PathBuf {
    if dir.join(marker).exists() {
        return dir.to_path_buf();
    }
    subdirs
        .iter()
        .map(|s| dir.join(s))
        .find(|d| d.join(marker).exists())
        .unwrap_or_else(|| dir.to_path_buf())
}
