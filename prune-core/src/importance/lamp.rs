//! LAMP, layer-adaptive magnitude-based pruning (Lee, Park, Mo, Ahn & Shin,
//! "Layer-adaptive sparsity for the magnitude-based pruning", ICLR 2021).

use candle_core::{DType, Tensor};

use super::{Importance, Needs, ScoringContext};
use crate::{NamedTensors, PruneError, Result, Scores};

/// LAMP scores, tensor by tensor: with the weights of one tensor sorted by
/// `w²` ascending (ties by flat row-major index), the weight at sorted
/// position `u` scores
///
/// ```text
/// score(u) = w_u² / Σ_{v ≥ u} w_v²
/// ```
///
/// i.e. its squared magnitude over the sum of its own and every larger (later)
/// squared magnitude. The largest non-zero weight of every tensor scores 1, so
/// one global threshold on these scores ([`crate::select::global`]) keeps
/// every layer alive while letting layer sparsities differ; within a tensor
/// the order is the magnitude order.
///
/// Sums are taken in `f64` over the `f32` values (`w²` of an `f32` is exact in
/// `f64`), added from the largest down in a fixed order, so the scores are
/// bit-reproducible; they are returned as `f32`. A weight whose suffix sum is
/// 0 (it and all larger weights are 0) scores 0. Non-finite weights are
/// [`PruneError::NonFinite`].
pub fn lamp(weights: &NamedTensors) -> Result<Scores> {
    weights
        .iter()
        .map(|(name, w)| Ok((name.clone(), lamp_tensor(name, w)?)))
        .collect()
}

fn lamp_tensor(name: &str, w: &Tensor) -> Result<Tensor> {
    let values = w
        .detach()
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?;
    if values.iter().any(|x| !x.is_finite()) {
        return Err(PruneError::NonFinite {
            name: name.to_string(),
        });
    }
    let squares: Vec<f64> = values
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .collect();
    let mut order: Vec<usize> = (0..squares.len()).collect();
    // Stable sort: equal squares keep their flat index order.
    order.sort_by(|&a, &b| squares[a].total_cmp(&squares[b]));
    let mut scores = vec![0f32; squares.len()];
    let mut suffix = 0f64;
    for &i in order.iter().rev() {
        suffix += squares[i];
        scores[i] = if suffix > 0.0 {
            (squares[i] / suffix) as f32
        } else {
            0.0
        };
    }
    Ok(Tensor::from_vec(scores, w.shape(), w.device())?)
}

/// LAMP ([`lamp`]) followed by the selection of the caller's scope (LAMP's
/// paper: one global threshold).
#[derive(Clone, Copy, Debug, Default)]
pub struct Lamp;

impl Importance for Lamp {
    fn name(&self) -> String {
        "lamp".into()
    }
    fn needs(&self) -> Needs {
        Needs::WEIGHTS
    }
    fn score(&self, ctx: &mut dyn ScoringContext) -> Result<Scores> {
        lamp(&ctx.weights()?)
    }
}
