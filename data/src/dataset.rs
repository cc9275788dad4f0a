//! The in-memory dataset, the train/test split, dataset names and [`load`].

use std::fmt;
use std::path::Path;
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
        norm.check(self.channels)?;
        if let Some(&bad) = idx.iter().find(|&&i| i >= self.len()) {
            return Err(DataError::Invalid(format!(
                "sample index {bad} out of range for dataset '{}' of {} samples",
                self.name,
                self.len()
            )));
        }
        // One table per channel maps each possible byte to its normalised value,
        // so every pixel costs a lookup and the formula is evaluated 256*C times.
        let tables: Vec<[f32; 256]> = (0..self.channels)
            .map(|c| {
                let mut t = [0f32; 256];
                for (p, v) in t.iter_mut().enumerate() {
                    *v = ((p as f32 / self.max_value) - norm.mean[c]) / norm.std[c];
                }
                t
            })
            .collect();
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
}

/// A training set and a held-out test set of the same dataset.
#[derive(Clone, Debug)]
pub struct Split {
    /// Samples to train on.
    pub train: Dataset,
    /// Samples to evaluate on.
    pub test: Dataset,
}

/// The datasets [`load`] knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetName {
    /// The embedded UCI digits (1,797 images of 1x8x8, 10 classes).
    Digits,
    /// Fashion-MNIST from IDX files (70,000 images of 1x28x28, 10 classes).
    FashionMnist,
    /// MNIST from IDX files (70,000 images of 1x28x28, 10 classes).
    Mnist,
}

impl DatasetName {
    /// Every known dataset, in the order error messages list them.
    pub const ALL: [DatasetName; 3] = [
        DatasetName::Digits,
        DatasetName::FashionMnist,
        DatasetName::Mnist,
    ];

    /// The canonical name, as accepted by `from_str` and printed by `Display`.
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::Digits => "digits",
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::Mnist => "mnist",
        }
    }

    /// Number of classes of the dataset.
    pub fn num_classes(self) -> usize {
        10
    }
}

impl FromStr for DatasetName {
    type Err = DataError;

    /// Parses `digits`, `fashion-mnist` (or `fashion_mnist`) and `mnist`,
    /// ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "digits" => Ok(DatasetName::Digits),
            "fashion-mnist" | "fashion_mnist" => Ok(DatasetName::FashionMnist),
            "mnist" => Ok(DatasetName::Mnist),
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

/// Loads a dataset as a train/test split.
///
/// - `digits`: the embedded data, split 80/20 per class by [`crate::stratified_split`]
///   with `seed`; `data_dir` is ignored.
/// - `fashion-mnist`, `mnist`: the IDX files of `data_dir` (or of its subdirectory
///   named after the dataset, e.g. `DIR/fashion-mnist`), with the official
///   train/test split; `seed` is unused. Without `data_dir` this fails with
///   [`DataError::MissingDataDir`].
pub fn load(name: DatasetName, data_dir: Option<&Path>, seed: u64) -> Result<Split> {
    match name {
        DatasetName::Digits => crate::split::stratified_split(&crate::digits::digits()?, 0.2, seed),
        DatasetName::FashionMnist | DatasetName::Mnist => {
            let dir = data_dir.ok_or_else(|| DataError::MissingDataDir {
                dataset: name.to_string(),
            })?;
            let sub = dir.join(name.as_str());
            // Accept the parent of a per-dataset folder too (`--data-dir datasets`).
            let dir = if !crate::idx::has_idx_files(dir) && crate::idx::has_idx_files(&sub) {
                sub
            } else {
                dir.to_path_buf()
            };
            crate::idx::load_idx_dir(&dir, name.as_str(), name.num_classes())
        }
    }
}
