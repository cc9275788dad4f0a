//! Gradient saliency `|θ ⊙ ∂L/∂θ|`, the score of SNIP (Lee, Ajanthan & Torr,
//! "SNIP: Single-shot network pruning based on connection sensitivity",
//! ICLR 2019; `L` = cross-entropy), of teacher-guided pruning (`L` = the
//! distillation loss, [`super::teacher_guided`]) and of EPSD
//! (`L` = a self-distillation loss, [`super::self_distill`]).

use candle_core::{DType, Tensor};

use super::{accumulate, Importance, Loss, Needs, ScoringContext};
use crate::mask::check_shape;
use crate::{NamedTensors, PruneError, Result, Scores};

/// SNIP connection sensitivity on one batch: `S = |θ ⊙ ∂L_CE/∂θ|` in `f32`,
/// for every tensor of `weights`, `grads` holding `∂L_CE/∂θ` under the same
/// names (extra gradients are ignored).
///
/// SNIP (Lee et al. 2019) scores `|∂L/∂m|` for a multiplicative mask `m` at
/// `m = 1`, which is `|θ ⊙ ∂L/∂θ|`; a weight that does not affect the loss
/// scores 0. The loss is the caller's: this is [`SaliencyAccumulator`] over a
/// single batch (use the accumulator to sum several).
pub fn snip(weights: &NamedTensors, grads: &NamedTensors) -> Result<Scores> {
    let mut acc = SaliencyAccumulator::new();
    acc.add_batch(weights, grads)?;
    acc.finish()
}

/// SNIP: [`SaliencyAccumulator`] over the context's calibration batches with
/// the gradient of the cross-entropy.
#[derive(Clone, Copy, Debug, Default)]
pub struct Snip;

impl Importance for Snip {
    fn name(&self) -> String {
        "snip".into()
    }
    fn needs(&self) -> Needs {
        Needs::DATA
    }
    fn score(&self, ctx: &mut dyn ScoringContext) -> Result<Scores> {
        accumulate(ctx, Loss::CrossEntropy)
    }
}

/// Accumulates `S = Σ_b |θ ⊙ g_b|` over batches `b`, where `g_b = ∂L/∂θ` on
/// batch `b`. The criterion is set by the loss whose gradient the caller
/// hands in; this type only multiplies, takes absolute values and sums, in `f32`.
#[derive(Clone, Debug, Default)]
pub struct SaliencyAccumulator {
    sums: NamedTensors,
    batches: usize,
}

impl SaliencyAccumulator {
    /// An accumulator with no batches.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `|w ⊙ g|` for every `w` of `weights`, `g` being the gradient of the
    /// same name in `grads` (extra gradients are ignored).
    ///
    /// Fails, leaving the sums unchanged, when a gradient is missing, a shape
    /// differs, the names differ from the first batch's, or a sum becomes
    /// non-finite.
    pub fn add_batch(&mut self, weights: &NamedTensors, grads: &NamedTensors) -> Result<()> {
        if weights.is_empty() {
            return Err(PruneError::NoPrunableParameters);
        }
        if self.batches > 0 {
            if let Some(name) = self.sums.keys().find(|n| !weights.contains_key(*n)) {
                return Err(PruneError::MissingTensor(name.clone()));
            }
        }
        let mut next = NamedTensors::new();
        for (name, w) in weights {
            let g = grads
                .get(name)
                .ok_or_else(|| PruneError::MissingTensor(name.clone()))?;
            check_shape(name, w.dims(), g.dims())?;
            let w = w.detach().to_dtype(DType::F32)?;
            let g = g.detach().to_dtype(DType::F32)?.to_device(w.device())?;
            let batch = w.mul(&g)?.abs()?;
            let sum = match self.sums.get(name) {
                Some(prev) => {
                    check_shape(name, prev.dims(), batch.dims())?;
                    prev.add(&batch)?
                }
                None if self.batches > 0 => {
                    return Err(PruneError::MissingTensor(name.clone()));
                }
                None => batch,
            };
            check_finite(name, &sum)?;
            next.insert(name.clone(), sum);
        }
        self.sums = next;
        self.batches += 1;
        Ok(())
    }

    /// Number of batches added.
    pub fn batches(&self) -> usize {
        self.batches
    }

    /// The summed scores; [`PruneError::NoBatches`] if nothing was added.
    pub fn finish(self) -> Result<Scores> {
        if self.batches == 0 {
            return Err(PruneError::NoBatches);
        }
        Ok(self.sums)
    }
}

/// `NonFinite` unless every element of the non-negative `t` is finite; runs
/// on the tensor's device and reads back one byte.
pub(crate) fn check_finite(name: &str, t: &Tensor) -> Result<()> {
    if t.elem_count() == 0 {
        return Ok(());
    }
    // `x < ∞` is false for both +∞ and NaN.
    let all_finite = t.lt(f64::INFINITY)?.min_all()?.to_scalar::<u8>()?;
    if all_finite == 1 {
        Ok(())
    } else {
        Err(PruneError::NonFinite {
            name: name.to_string(),
        })
    }
}
