//! Per-channel normalisation of the `[0, 1]`-scaled pixels.

use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::error::{DataError, Result};

/// The smallest standard deviation [`Normalization::fit`] returns, so that a
/// constant channel does not divide by zero.
pub const STD_FLOOR: f32 = 1e-6;

/// Per-channel statistics of the scaled pixel `p / max_value`; a batch holds
/// `(p / max_value - mean[c]) / std[c]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Mean of each channel.
    pub mean: Vec<f32>,
    /// Standard deviation of each channel (must be > 0).
    pub std: Vec<f32>,
}

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

    /// Mean 0 and std 1 for every channel: batches hold `p / max_value`.
    pub fn identity(channels: usize) -> Self {
        Normalization {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// Checks that there is one finite mean and one finite positive std per channel.
    pub fn check(&self, channels: usize) -> Result<()> {
        if self.mean.len() != channels || self.std.len() != channels {
            return Err(DataError::Mismatch(format!(
                "normalisation has {} means and {} stds, the dataset has {channels} channels",
                self.mean.len(),
                self.std.len()
            )));
        }
        if let Some(m) = self.mean.iter().find(|m| !m.is_finite()) {
            return Err(DataError::Invalid(format!(
                "normalisation mean {m} is not finite"
            )));
        }
        if let Some(s) = self.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(DataError::Invalid(format!(
                "normalisation std {s} is not a finite positive number"
            )));
        }
        Ok(())
    }
}
