//! Self-distillation saliency, as in EPSD (Chen, Liu, Zhu, Che, Ma, Zhang,
//! Mou, Chang & Tang, "EPSD: Early Pruning with Self-Distillation for
//! Efficient Model Compression", AAAI 2024).

use super::{accumulate, Importance, Loss, Needs, SaliencyAccumulator, ScoringContext};
use crate::{NamedTensors, Result, Scores};

/// EPSD saliency on one batch: `S = |θ ⊙ ∂L_SD/∂θ|` in `f32`, `grads` holding
/// the gradient of the self-distillation loss `L_SD` (the network's own
/// softened predictions as targets, e.g. CE plus a KL term between its outputs
/// on two views; the loss is built by the caller, in kd-core).
///
/// The accumulator is SNIP's ([`super::snip`]) with a different loss: weights
/// whose removal least disturbs the self-distillation signal are pruned first
/// ("distillable" weights are kept). To average over several batches, feed
/// each batch's `∂L_SD/∂θ` to a [`SaliencyAccumulator`]; the criterion is named
/// [`SelfDistill`].
pub fn self_distill(weights: &NamedTensors, sd_grads: &NamedTensors) -> Result<Scores> {
    let mut acc = SaliencyAccumulator::new();
    acc.add_batch(weights, sd_grads)?;
    acc.finish()
}

/// EPSD: [`SaliencyAccumulator`] over the context's calibration batches with
/// the gradient of its self-distillation loss ([`Loss::SelfDistillation`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct SelfDistill;

impl Importance for SelfDistill {
    fn name(&self) -> String {
        "self-distill".into()
    }
    fn needs(&self) -> Needs {
        Needs::DATA
    }
    fn score(&self, ctx: &mut dyn ScoringContext) -> Result<Scores> {
        accumulate(ctx, Loss::SelfDistillation)
    }
    /// The batch and its second view forward, one backward.
    fn passes(&self, samples: u64) -> (u64, u64) {
        (2 * samples, samples)
    }
}
