//! Self-distillation saliency, as in EPSD (Chen, Liu, Zhu, Che, Ma, Zhang,
//! Mou, Chang & Tang, "EPSD: Early Pruning with Self-Distillation for
//! Efficient Model Compression", AAAI 2024).

use crate::{NamedTensors, Result, Scores};

use super::SaliencyAccumulator;

/// EPSD saliency on one batch: `S = |θ ⊙ ∂L_SD/∂θ|` in `f32`, `grads` holding
/// the gradient of the self-distillation loss `L_SD` (the network's own
/// softened predictions as targets, e.g. CE plus a KL term between its outputs
/// on two views; the loss is built by the caller, in kd-core).
///
/// The accumulator is SNIP's ([`super::snip`]) with a different loss: weights
/// whose removal least disturbs the self-distillation signal are pruned first
/// ("distillable" weights are kept). To average over several batches, feed
/// each batch's `∂L_SD/∂θ` to a [`SaliencyAccumulator`]; the criterion is named
/// [`super::Criterion::SelfDistill`].
pub fn self_distill(weights: &NamedTensors, sd_grads: &NamedTensors) -> Result<Scores> {
    let mut acc = SaliencyAccumulator::new();
    acc.add_batch(weights, sd_grads)?;
    acc.finish()
}
