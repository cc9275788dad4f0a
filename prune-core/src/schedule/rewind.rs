//! Weight rewinding (Frankle, Dziugaite, Roy & Carbin, "Linear Mode
//! Connectivity and the Lottery Ticket Hypothesis", ICML 2020).

use std::collections::BTreeMap;

use candle_core::Var;

use crate::mask::check_shape;
use crate::{MaskSet, NamedTensors, PruneError, Result};

/// Rewinds every var of `current` to its stored value under the mask:
///
/// ```text
/// θ ← θ_stored ⊙ m       (θ ← θ_stored where no mask)
/// ```
///
/// `stored` holds the values at the rewind point (initialisation for lottery
/// tickets, an early step `k` for rewinding to iteration `k`). Kept
/// coordinates get the stored value bit for bit (after conversion to the
/// var's dtype, a no-op when they match) and pruned ones `+0.0`, through
/// [`Var::set`].
///
/// Every var needs a stored tensor of its shape and every mask a var of its
/// shape, otherwise nothing is modified and [`PruneError::MissingTensor`] or
/// [`PruneError::ShapeMismatch`] is returned.
pub fn rewind(current: &[(String, Var)], stored: &NamedTensors, mask: &MaskSet) -> Result<()> {
    let by_name: BTreeMap<&str, &Var> = current.iter().map(|(n, v)| (n.as_str(), v)).collect();
    for (name, m) in mask.iter() {
        let var = by_name
            .get(name.as_str())
            .ok_or_else(|| PruneError::MissingTensor(name.clone()))?;
        check_shape(name, var.dims(), m.dims())?;
    }
    let mut values = Vec::with_capacity(current.len());
    for (name, var) in current {
        let s = stored
            .get(name)
            .ok_or_else(|| PruneError::MissingTensor(name.clone()))?;
        check_shape(name, var.dims(), s.dims())?;
        let s = s.detach().to_dtype(var.dtype())?.to_device(var.device())?;
        let value = match mask.get(name) {
            // where(m, θ_stored, 0) rather than a product: a pruned negative
            // weight becomes +0.0, not −0.0.
            Some(m) => m
                .ne(0f64)?
                .to_device(var.device())?
                .where_cond(&s, &s.zeros_like()?)?,
            // A fresh copy: `Var::set` refuses a source sharing the var's storage.
            None => s.copy()?,
        };
        values.push((var, value));
    }
    for (var, value) in values {
        var.set(&value)?;
    }
    Ok(())
}
