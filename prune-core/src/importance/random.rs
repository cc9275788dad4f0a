//! Random importance, the control criterion.

use candle_core::Tensor;

use super::{Importance, Needs, ScoringContext};
use crate::rng::SeededRng;
use crate::{NamedTensors, Result, Scores};

/// Uniform `[0, 1)` `f32` scores of each weight's shape, drawn from one
/// [`SeededRng`] stream of `seed` (the stream of
/// `rand_chacha::ChaCha8Rng::seed_from_u64(seed)`), tensors visited in name
/// order and each filled in flat row-major order. The weights' values are
/// ignored.
pub fn random(weights: &NamedTensors, seed: u64) -> Result<Scores> {
    let mut rng = SeededRng::new(seed);
    weights
        .iter()
        .map(|(name, w)| {
            let values: Vec<f32> = (0..w.elem_count()).map(|_| rng.next_f32()).collect();
            Ok((
                name.clone(),
                Tensor::from_vec(values, w.shape(), w.device())?,
            ))
        })
        .collect()
}

/// [`random`] scores from the context's seed: the baseline every criterion
/// must beat.
#[derive(Clone, Copy, Debug, Default)]
pub struct Random;

impl Importance for Random {
    fn name(&self) -> String {
        "random".into()
    }
    fn needs(&self) -> Needs {
        Needs::WEIGHTS
    }
    fn score(&self, ctx: &mut dyn ScoringContext) -> Result<Scores> {
        random(&ctx.weights()?, ctx.seed())
    }
}
