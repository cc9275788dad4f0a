//! COLT, cyclic overlapping lottery tickets (Hossain, Rakib, Elahi, Mohammed
//! & Rahman, "COLT: Cyclic Overlapping Lottery Tickets for Faster Pruning of
//! Convolutional Neural Networks", IEEE TAI 2024).

use super::{imp_sparsities, Learner, Outcome, Stage};
use crate::importance::magnitude;
use crate::select::global_within;
use crate::{MaskSet, NamedTensors, PruneError, Result};

/// One COLT pruning round: every copy (the same network trained on a
/// different data split) is pruned by global magnitude among the weights
/// `current` still keeps, to the cumulative `sparsity`
/// ([`crate::select::global_within`] on `|θ|`), and the masks are intersected:
///
/// ```text
/// m = ∧_c  global_within(|θ_c|, current, s)
/// ```
///
/// A weight survives only if every copy keeps it (the tickets' overlap), so
/// the result prunes at least `round(s·n)` weights, more when the copies
/// disagree, and never regrows a weight `current` prunes.
///
/// Every copy must hold the same names (the prunable weights), and every mask
/// of `current` one of them: otherwise [`PruneError::MissingTensor`];
/// [`PruneError::NoPrunableParameters`] without copies.
pub fn colt_round(copies: &[NamedTensors], current: &MaskSet, sparsity: f64) -> Result<MaskSet> {
    let (first, rest) = copies
        .split_first()
        .ok_or(PruneError::NoPrunableParameters)?;
    for copy in rest {
        let missing = first
            .keys()
            .find(|n| !copy.contains_key(*n))
            .or_else(|| copy.keys().find(|n| !first.contains_key(*n)));
        if let Some(name) = missing {
            return Err(PruneError::MissingTensor(name.clone()));
        }
    }
    let mut out = global_within(&magnitude(first)?, current, sparsity)?;
    for copy in rest {
        out = out.intersect(&global_within(&magnitude(copy)?, current, sparsity)?)?;
    }
    Ok(out)
}

/// COLT: rounds of [`colt_round`] at the cumulative sparsities of
/// [`imp_sparsities`]`(rate, sparsity)`. In each round every copy is rewound
/// under the current masks and trains ([`Stage::ColtRound`]) on its own data
/// (the caller's: COLT's copies see disjoint parts of the training set); the
/// copies' masks are intersected, and the rounds stop once the intersection
/// reaches `sparsity`. The `ticket` is then rewound under the final masks and
/// trains on all the data ([`Stage::ColtFinal`]).
///
/// Because the copies disagree, the final sparsity may exceed `sparsity`.
/// [`PruneError::NoPrunableParameters`] without copies.
pub fn colt<L: Learner>(
    copies: &mut [L],
    ticket: &mut L,
    rate: f64,
    sparsity: f64,
) -> Result<Outcome<L::Report>> {
    if copies.is_empty() {
        return Err(PruneError::NoPrunableParameters);
    }
    let mut masks = MaskSet::new();
    for (round, s) in imp_sparsities(rate, sparsity)?.into_iter().enumerate() {
        let mut weights = Vec::with_capacity(copies.len());
        for (copy, learner) in copies.iter_mut().enumerate() {
            learner.rewind(&masks)?;
            learner.train(Stage::ColtRound { round, copy }, &mut masks.clone())?;
            weights.push(learner.weights()?);
        }
        masks = colt_round(&weights, &masks, s)?;
        if masks.sparsity()? >= sparsity {
            break;
        }
    }
    ticket.rewind(&masks)?;
    let report = ticket.train(Stage::ColtFinal, &mut masks.clone())?;
    Ok(Outcome {
        masks,
        report,
        masks_fixed_from_step: 0,
    })
}
