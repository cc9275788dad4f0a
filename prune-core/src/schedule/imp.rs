//! Iterative magnitude pruning (Frankle & Carbin, "The Lottery Ticket
//! Hypothesis: Finding Sparse, Trainable Neural Networks", ICLR 2019).

use super::{Learner, Outcome, Stage};
use crate::importance::magnitude;
use crate::select::{check_sparsity, global_within};
use crate::{MaskSet, PruneError, Result};

/// Most rounds [`imp_sparsities`] produces.
pub const MAX_IMP_ROUNDS: usize = 10_000;

/// Rounds closer than this to the target end the sequence (guards against
/// `1 − (1 − p)^k` landing one ulp below a target it reaches exactly).
const TARGET_TOLERANCE: f64 = 1e-9;

/// The cumulative sparsity after each IMP round when every round prunes a
/// fraction `p` of the weights still alive:
///
/// ```text
/// s_k = 1 − (1 − p)^k,   k = 1, 2, …, K
/// ```
///
/// with `K` the first round where `s_K ≥ target` (within `1e-9`); `s_K` is
/// replaced by `target` exactly. Each entry is meant for
/// [`crate::select::global_within`] under the previous round's mask. A target
/// of 0 gives an empty sequence.
///
/// Errors: [`PruneError::InvalidRate`] unless `0 < p < 1`,
/// [`PruneError::InvalidSparsity`] unless `target ∈ [0, 1)`,
/// [`PruneError::InvalidRounds`] when more than [`MAX_IMP_ROUNDS`] rounds
/// would be needed.
pub fn imp_sparsities(rate_per_round: f64, target: f64) -> Result<Vec<f64>> {
    if !(rate_per_round.is_finite() && rate_per_round > 0.0 && rate_per_round < 1.0) {
        return Err(PruneError::InvalidRate(rate_per_round));
    }
    check_sparsity(target)?;
    let mut out = Vec::new();
    if target == 0.0 {
        return Ok(out);
    }
    let kept = 1.0 - rate_per_round;
    for k in 1..=MAX_IMP_ROUNDS {
        let s = 1.0 - kept.powi(k as i32);
        if s >= target - TARGET_TOLERANCE {
            out.push(target);
            return Ok(out);
        }
        out.push(s);
    }
    let needed = ((1.0 - target).ln() / kept.ln()).ceil();
    Err(PruneError::InvalidRounds {
        rounds: if needed.is_finite() {
            needed as usize
        } else {
            usize::MAX
        },
        max: MAX_IMP_ROUNDS,
    })
}

/// Iterative magnitude pruning with rewinding: for each cumulative sparsity
/// of [`imp_sparsities`]`(rate, sparsity)`, the learner's weights are pruned
/// by global magnitude among those still kept
/// ([`crate::select::global_within`]), every tensor is rewound to the
/// learner's rewind point under the new masks, and the learner trains round
/// `k` ([`Stage::ImpRound`]) under them. The report is the last round's (the
/// default report when `sparsity` is 0 and no round runs).
pub fn imp<L: Learner>(learner: &mut L, rate: f64, sparsity: f64) -> Result<Outcome<L::Report>> {
    let mut masks = MaskSet::new();
    let mut report = L::Report::default();
    for (round, s) in imp_sparsities(rate, sparsity)?.into_iter().enumerate() {
        masks = global_within(&magnitude(&learner.weights()?)?, &masks, s)?;
        learner.rewind(&masks)?;
        report = learner.train(Stage::ImpRound(round), &mut masks.clone())?;
    }
    Ok(Outcome {
        masks,
        report,
        masks_fixed_from_step: 0,
    })
}
