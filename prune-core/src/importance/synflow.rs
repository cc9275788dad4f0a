//! SynFlow, iterative synaptic flow pruning (Tanaka, Kunin, Yamins & Ganguli,
//! "Pruning neural networks without any data by iteratively conserving
//! synaptic flow", NeurIPS 2020).

use candle_core::DType;

use super::saliency::check_finite;
use super::{Importance, Needs, ScoringContext};
use crate::mask::check_shape;
use crate::select::{check_sparsity, global_within};
use crate::{MaskSet, NamedTensors, PruneError, Result, Scope, Scores};

/// The paper's number of pruning rounds.
pub const DEFAULT_SYNFLOW_ROUNDS: usize = 100;

/// Most rounds [`synflow`] accepts.
pub const MAX_SYNFLOW_ROUNDS: usize = 100_000;

/// Final masks and scores of an iterative [`synflow`] run.
#[derive(Clone, Debug)]
pub struct SynFlowOutcome {
    /// The masks after the last round, at exactly `round(s·n)` pruned weights.
    pub masks: MaskSet,
    /// The scores of the last round (computed under the previous round's
    /// mask, so weights pruned earlier score 0).
    pub scores: Scores,
}

/// One round of SynFlow scores, `S = |∂R/∂θ ⊙ θ|` in `f32`, with the
/// synaptic-flow objective
///
/// ```text
/// R = 1ᵀ (∏_l |θ_l| ⊙ m_l) 1
/// ```
///
/// i.e. the sum of the outputs of the linearised network (every parameter
/// replaced by its absolute value, pruned ones by 0) on an all-ones input.
///
/// `params` are the weights to score. `grad_of_flow` receives
/// `|θ| ⊙ m` under the same names (`m` from `masks`; tensors without a mask
/// are unmasked) and must return `∂R/∂θ` at those values for each name: run the
/// network on an all-ones input with these weights (and the caller's other
/// parameters, such as biases, also replaced by their absolute values; batch
/// norm in eval mode), sum the output, backward. No data is needed. Deep
/// networks overflow `f32` here; `f64` (or a rescaled input) keeps `R` finite.
///
/// Scores are taken against `|θ| ⊙ m`, so pruned weights score 0. Fails with
/// [`PruneError::NonFinite`] when a score overflows, and the errors of
/// missing names or shapes; the closure's own error is returned unchanged.
pub fn synflow_scores<E, F>(
    params: &NamedTensors,
    masks: &MaskSet,
    mut grad_of_flow: F,
) -> std::result::Result<Scores, E>
where
    F: FnMut(&NamedTensors) -> std::result::Result<NamedTensors, E>,
    E: From<PruneError>,
{
    let linear = linearised(params, masks)?;
    let grads = grad_of_flow(&linear)?;
    Ok(flow_scores(&linear, &grads)?)
}

/// Iterative SynFlow: `rounds` rounds (the paper uses
/// [`DEFAULT_SYNFLOW_ROUNDS`]); round `k = 1..=n` re-scores under the current
/// mask with [`synflow_scores`] and prunes to the exponential target
///
/// ```text
/// s_k = 1 − (1 − s)^(k/n)
/// ```
///
/// by one global threshold over the weights still kept
/// ([`crate::select::global_within`]: earlier prunings are never undone). The
/// last round uses `s` itself, so the result prunes exactly `round(s·n)` of
/// the `n` weights, like [`crate::select::global`]. Each round calls
/// `grad_of_flow` once.
///
/// Errors: [`PruneError::InvalidSparsity`], [`PruneError::InvalidRounds`]
/// unless `1 ≤ rounds ≤` [`MAX_SYNFLOW_ROUNDS`],
/// [`PruneError::NoPrunableParameters`], and those of [`synflow_scores`].
pub fn synflow<E, F>(
    params: &NamedTensors,
    sparsity: f64,
    rounds: usize,
    grad_of_flow: F,
) -> std::result::Result<SynFlowOutcome, E>
where
    F: FnMut(&NamedTensors) -> std::result::Result<NamedTensors, E>,
    E: From<PruneError>,
{
    synflow_within(params, &MaskSet::new(), sparsity, rounds, grad_of_flow)
}

/// [`synflow`] starting from the masks `start` (weights it prunes stay
/// pruned and score 0 from the first round on): the rounds prune to the same
/// exponential targets among the weights still kept, and the last one to
/// exactly `max(round(s·n), already pruned)`.
pub fn synflow_within<E, F>(
    params: &NamedTensors,
    start: &MaskSet,
    sparsity: f64,
    rounds: usize,
    mut grad_of_flow: F,
) -> std::result::Result<SynFlowOutcome, E>
where
    F: FnMut(&NamedTensors) -> std::result::Result<NamedTensors, E>,
    E: From<PruneError>,
{
    check_sparsity(sparsity)?;
    if rounds == 0 || rounds > MAX_SYNFLOW_ROUNDS {
        return Err(PruneError::InvalidRounds {
            rounds,
            max: MAX_SYNFLOW_ROUNDS,
        }
        .into());
    }
    if params.is_empty() {
        return Err(PruneError::NoPrunableParameters.into());
    }
    let mut masks = start.clone();
    let mut scores = Scores::new();
    for k in 1..=rounds {
        let target = if k == rounds {
            sparsity
        } else {
            1.0 - (1.0 - sparsity).powf(k as f64 / rounds as f64)
        };
        scores = synflow_scores(params, &masks, &mut grad_of_flow)?;
        masks = global_within(&scores, &masks, target)?;
    }
    Ok(SynFlowOutcome { masks, scores })
}

/// SynFlow as a criterion: [`synflow_within`] over `rounds` rounds, each
/// asking the context for the gradient of the synaptic flow
/// ([`ScoringContext::synaptic_flow_gradient`]). Data-free. Its scores
/// ([`Importance::score`]) are one round's on the unpruned network; its masks
/// ([`Importance::prune`]) come from the iteration, by one global threshold
/// per round (the per-layer scope is refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynFlow {
    /// Pruning rounds (the paper: [`DEFAULT_SYNFLOW_ROUNDS`]).
    pub rounds: usize,
}

impl Default for SynFlow {
    fn default() -> Self {
        Self {
            rounds: DEFAULT_SYNFLOW_ROUNDS,
        }
    }
}

impl Importance for SynFlow {
    fn name(&self) -> String {
        "synflow".into()
    }
    fn needs(&self) -> Needs {
        Needs {
            data: false,
            ..Needs::DATA
        }
    }
    fn score(&self, ctx: &mut dyn ScoringContext) -> Result<Scores> {
        let weights = ctx.weights()?;
        synflow_scores(&weights, &MaskSet::new(), |linear| {
            ctx.synaptic_flow_gradient(linear)
        })
    }
    fn prune(
        &self,
        ctx: &mut dyn ScoringContext,
        sparsity: f64,
        scope: Scope,
        kept: &MaskSet,
    ) -> Result<MaskSet> {
        if scope != Scope::Global {
            return Err(PruneError::UnsupportedScope {
                criterion: self.name(),
                scope,
            });
        }
        let weights = ctx.weights()?;
        let outcome = synflow_within(&weights, kept, sparsity, self.rounds, |linear| {
            ctx.synaptic_flow_gradient(linear)
        })?;
        Ok(outcome.masks)
    }
    /// One forward and one backward pass of one input per round.
    fn passes(&self, _samples: u64) -> (u64, u64) {
        (self.rounds as u64, self.rounds as u64)
    }
}

/// `|θ| ⊙ m` for every parameter (unmasked where `masks` has no entry).
fn linearised(params: &NamedTensors, masks: &MaskSet) -> Result<NamedTensors> {
    if let Some(name) = masks.names().find(|n| !params.contains_key(*n)) {
        return Err(PruneError::MissingTensor(name.to_string()));
    }
    params
        .iter()
        .map(|(name, theta)| {
            let abs = theta.detach().abs()?;
            let value = match masks.get(name) {
                Some(m) => {
                    check_shape(name, abs.dims(), m.dims())?;
                    let m = m.to_dtype(abs.dtype())?.to_device(abs.device())?;
                    abs.mul(&m)?
                }
                None => abs,
            };
            Ok((name.clone(), value))
        })
        .collect()
}

/// `|g ⊙ θ|` in `f32` for every name of `linear`.
fn flow_scores(linear: &NamedTensors, grads: &NamedTensors) -> Result<Scores> {
    linear
        .iter()
        .map(|(name, theta)| {
            let g = grads
                .get(name)
                .ok_or_else(|| PruneError::MissingTensor(name.clone()))?;
            check_shape(name, theta.dims(), g.dims())?;
            let g = g
                .detach()
                .to_dtype(theta.dtype())?
                .to_device(theta.device())?;
            let score = g.mul(theta)?.abs()?.to_dtype(DType::F32)?;
            check_finite(name, &score)?;
            Ok((name.clone(), score))
        })
        .collect()
}
