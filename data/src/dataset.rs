//! The in-memory dataset and the train/test split.

use candle_core::{Device, Tensor};

use crate::error::{DataError, Result};
use crate::normalize::{Normalization, STD_FLOOR};

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

impl Split {
    /// Fails with [`DataError::Invalid`] naming `source` when a split holds
    /// no sample or the images hold no pixel (a header of 0×0): nothing
    /// could be trained or evaluated, and the error says so before any work.
    pub fn check_usable(&self, source: &str) -> Result<()> {
        for (which, ds) in [("training", &self.train), ("test", &self.test)] {
            if ds.is_empty() {
                return Err(DataError::Invalid(format!(
                    "{source}: the {which} split has no images"
                )));
            }
            if ds.sample_dim() == 0 {
                return Err(DataError::Invalid(format!(
                    "{source}: the {which} images are {}x{}x{} (no pixel)",
                    ds.channels, ds.height, ds.width
                )));
            }
        }
        Ok(())
    }
}

/// Statistics of a dataset (here, beside the data they read, so that the
/// normalisation itself knows nothing of datasets).
impl Normalization {
    /// Per-channel mean and population standard deviation of the scaled pixels of `ds`:
    /// `mean_c = (1/M) Σ s`, `std_c = max(sqrt((1/M) Σ (s - mean_c)²), 1e-6)` over
    /// the `M = len * H * W` values `s = p / max_value` of channel `c`.
    /// An empty dataset gives the identity.
    pub fn fit(ds: &Dataset) -> Self {
        let c = ds.channels;
        if ds.is_empty() || c == 0 {
            return Self::identity(c);
        }
        // Pixels are bytes: a histogram per channel gives exact sums in f64
        // with one pass over the data.
        let mut hist = vec![[0u64; 256]; c];
        let plane = ds.height * ds.width;
        for sample in ds.images.chunks_exact(ds.sample_dim().max(1)) {
            for (ch, h) in hist.iter_mut().enumerate() {
                for &p in &sample[ch * plane..(ch + 1) * plane] {
                    h[p as usize] += 1;
                }
            }
        }
        let max = f64::from(ds.max_value);
        let mut mean = Vec::with_capacity(c);
        let mut std = Vec::with_capacity(c);
        for h in &hist {
            let m: u64 = h.iter().sum();
            if m == 0 {
                // Zero-sized images: nothing to measure.
                mean.push(0.0);
                std.push(1.0);
                continue;
            }
            let m = m as f64;
            let mu = h
                .iter()
                .enumerate()
                .map(|(p, &k)| (p as f64 / max) * k as f64)
                .sum::<f64>()
                / m;
            let var = h
                .iter()
                .enumerate()
                .map(|(p, &k)| (p as f64 / max - mu).powi(2) * k as f64)
                .sum::<f64>()
                / m;
            mean.push(mu as f32);
            std.push((var.sqrt() as f32).max(STD_FLOOR));
        }
        Normalization { mean, std }
    }
}
