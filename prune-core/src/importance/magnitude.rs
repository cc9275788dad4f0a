//! Magnitude importance.

use candle_core::DType;

use super::{Importance, Needs, ScoringContext};
use crate::{NamedTensors, Result, Scores};

/// `score = |w|` as `f32`, for every tensor of `weights`.
///
/// The selection decides global versus layer-wise magnitude pruning:
/// `select::global(&magnitude(&w)?, s)` prunes the smallest `|w|` over all
/// tensors together, `select::per_layer(&magnitude(&w)?, s)` the smallest
/// fraction `s` of every tensor ([`crate::select::Scope`] names both).
pub fn magnitude(weights: &NamedTensors) -> Result<Scores> {
    weights
        .iter()
        .map(|(name, w)| Ok((name.clone(), w.detach().to_dtype(DType::F32)?.abs()?)))
        .collect()
}

/// Global (or, with [`crate::Scope::PerLayer`], layer-wise) magnitude pruning:
/// [`magnitude`] of the weights.
#[derive(Clone, Copy, Debug, Default)]
pub struct Magnitude;

impl Importance for Magnitude {
    fn name(&self) -> String {
        "magnitude".into()
    }
    fn needs(&self) -> Needs {
        Needs::WEIGHTS
    }
    fn score(&self, ctx: &mut dyn ScoringContext) -> Result<Scores> {
        magnitude(&ctx.weights()?)
    }
}
