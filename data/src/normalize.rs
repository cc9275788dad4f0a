//! Per-channel normalisation of the `[0, 1]`-scaled pixels.

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// The smallest standard deviation `Normalization::fit` (beside [`crate::Dataset`]) returns, so that a
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
