//! Random importance, the control criterion.

use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{NamedTensors, Result, Scores};

/// Uniform `[0, 1)` `f32` scores of each weight's shape, drawn from one
/// `ChaCha8Rng::seed_from_u64(seed)` stream, tensors visited in name order
/// and each filled in flat row-major order. The weights' values are ignored.
pub fn random(weights: &NamedTensors, seed: u64) -> Result<Scores> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    weights
        .iter()
        .map(|(name, w)| {
            let values: Vec<f32> = (0..w.elem_count()).map(|_| rng.random::<f32>()).collect();
            Ok((
                name.clone(),
                Tensor::from_vec(values, w.shape(), w.device())?,
            ))
        })
        .collect()
}
