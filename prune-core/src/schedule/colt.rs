//! COLT, cyclic overlapping lottery tickets (Hossain, Rakib, Elahi, Mohammed
//! & Rahman, "COLT: Cyclic Overlapping Lottery Tickets for Faster Pruning of
//! Convolutional Neural Networks", IEEE TAI 2024).

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
