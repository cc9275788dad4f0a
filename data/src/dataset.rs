//! The in-memory dataset, the train/test split, dataset names and [`load`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::{Device, Tensor};

use crate::error::{DataError, Result};
use crate::normalize::Normalization;

/// Images and labels held in memory as raw bytes.
///
/// `images` holds `len() * channels * height * width` pixel values, sample after
/// sample, each sample `[C, H, W]` row-major. Pixels are scaled to `[0, 1]` by
/// dividing by `max_value` when a batch is built.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Short name of the dataset (`digits`, `fashion-mnist`, ...).
    pub name: String,
    /// Raw pixel values, `N*C*H*W`, row-major.
    pub images: Vec<u8>,
    /// One label per sample, each below `num_classes`.
    pub labels: Vec<u8>,
    /// Channels per image.
    pub channels: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Number of classes; labels are `0..num_classes`.
    pub num_classes: usize,
    /// The largest possible raw pixel value (16 for digits, 255 for IDX files).
    pub max_value: f32,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the dataset holds no sample.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per sample: `C * H * W`.
    pub fn sample_dim(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The pixels of sample `i` (`C*H*W` bytes), or `None` when `i >= len()`.
    pub fn sample(&self, i: usize) -> Option<&[u8]> {
        let d = self.sample_dim();
        self.images.get(i * d..(i + 1) * d)
    }

    /// A new dataset with the samples at `idx`, in that order (repeats allowed).
    ///
    /// # Panics
    /// If an index is `>= len()`: indices are produced by the program
    /// (splits, batchers), never read from user input.
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        let d = self.sample_dim();
        let mut images = Vec::with_capacity(idx.len() * d);
        let mut labels = Vec::with_capacity(idx.len());
        for &i in idx {
            images.extend_from_slice(&self.images[i * d..(i + 1) * d]);
            labels.push(self.labels[i]);
        }
        Dataset {
            name: self.name.clone(),
            images,
            labels,
            channels: self.channels,
            height: self.height,
            width: self.width,
            num_classes: self.num_classes,
            max_value: self.max_value,
        }
    }

    /// The samples at `idx` as tensors on `device`: f32 images `[B, C, H, W]` with
    /// `x = ((pixel / max_value) - mean[c]) / std[c]`, and u32 labels `[B]`.
    ///
    /// Fails with [`DataError::Invalid`] for an index `>= len()` or a non-positive
    /// std, and with [`DataError::Mismatch`] when `norm` does not have one entry
    /// per channel.
    pub fn batch(
        &self,
        idx: &[usize],
        norm: &Normalization,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let tables = self.prepare_batch(idx, norm)?;
        let plane = self.height * self.width;
        let d = self.sample_dim();
        let mut x = Vec::with_capacity(idx.len() * d);
        let mut y = Vec::with_capacity(idx.len());
        for &i in idx {
            let sample = &self.images[i * d..(i + 1) * d];
            for (c, table) in tables.iter().enumerate() {
                x.extend(
                    sample[c * plane..(c + 1) * plane]
                        .iter()
                        .map(|&p| table[p as usize]),
                );
            }
            y.push(u32::from(self.labels[i]));
        }
        let b = idx.len();
        let x = Tensor::from_vec(x, (b, self.channels, self.height, self.width), device)?;
        let y = Tensor::from_vec(y, b, device)?;
        Ok((x, y))
    }

    /// Checks `norm` and `idx` for a batch and returns, per channel, the table
    /// mapping each raw byte `p` to `((p / max_value) - mean[c]) / std[c]`.
    pub(crate) fn prepare_batch(
        &self,
        idx: &[usize],
        norm: &Normalization,
    ) -> Result<Vec<[f32; 256]>> {
        norm.check(self.channels)?;
        if let Some(&bad) = idx.iter().find(|&&i| i >= self.len()) {
            return Err(DataError::Invalid(format!(
                "sample index {bad} out of range for dataset '{}' of {} samples",
                self.name,
                self.len()
            )));
        }
        // A lookup per pixel: the formula is evaluated 256*C times per batch.
        Ok((0..self.channels)
            .map(|c| {
                let mut t = [0f32; 256];
                for (p, v) in t.iter_mut().enumerate() {
                    *v = ((p as f32 / self.max_value) - norm.mean[c]) / norm.std[c];
                }
                t
            })
            .collect())
    }
}

/// A training set and a held-out test set of the same dataset.
#[derive(Clone, Debug)]
pub struct Split {
    /// Samples to train on.
    pub train: Dataset,
    /// Samples to evaluate on.
    pub test: Dataset,
}

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
    match name {
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
    }
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
