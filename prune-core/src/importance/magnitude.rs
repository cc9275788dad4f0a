//! Magnitude importance.

use candle_core::DType;

use crate::{NamedTensors, Result, Scores};

/// `score = |w|` as `f32`, for every tensor of `weights`.
pub fn magnitude(weights: &NamedTensors) -> Result<Scores> {
    weights
        .iter()
        .map(|(name, w)| Ok((name.clone(), w.detach().to_dtype(DType::F32)?.abs()?)))
        .collect()
}
