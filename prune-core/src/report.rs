//! Measured sparsity of weights, checked against masks.

use std::fmt::Write;

use candle_core::DType;

use crate::mask::{check_shape, count_zeros};
use crate::{MaskSet, NamedTensors, PruneError, Result};

/// Counts for one tensor.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerSparsity {
    /// Parameter name.
    pub name: String,
    /// Number of elements.
    pub numel: usize,
    /// Elements whose weight is exactly 0.
    pub zeros: usize,
    /// Elements whose mask is 0 (0 when the tensor has no mask).
    pub masked: usize,
    /// Elements whose mask is 0 but whose weight is not: a pruned weight that
    /// came back. Should always be 0.
    pub violations: usize,
}

impl LayerSparsity {
    /// `zeros / numel` (0 for an empty tensor).
    pub fn sparsity(&self) -> f64 {
        ratio(self.zeros, self.numel)
    }
}

/// Per-layer counts for a set of tensors.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Debug, PartialEq)]
pub struct SparsityReport {
    /// One entry per reported tensor, in the order asked for.
    pub layers: Vec<LayerSparsity>,
}

impl SparsityReport {
    /// `Σ numel` over the layers.
    pub fn total(&self) -> usize {
        self.layers.iter().map(|l| l.numel).sum()
    }

    /// `Σ zeros` over the layers.
    pub fn zeros(&self) -> usize {
        self.layers.iter().map(|l| l.zeros).sum()
    }

    /// `Σ masked` over the layers.
    pub fn masked(&self) -> usize {
        self.layers.iter().map(|l| l.masked).sum()
    }

    /// `zeros / total` over the listed layers (0 when there are none).
    pub fn global_sparsity(&self) -> f64 {
        ratio(self.zeros(), self.total())
    }

    /// `Σ violations` over the layers.
    pub fn violations(&self) -> usize {
        self.layers.iter().map(|l| l.violations).sum()
    }

    /// A human-readable table: a header, one aligned line per layer, and a
    /// last line `global sparsity: 0.9000` (4 decimals).
    pub fn table(&self) -> String {
        let width = self
            .layers
            .iter()
            .map(|l| l.name.len())
            .chain(std::iter::once("name".len()))
            .max()
            .unwrap_or(4);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{:<width$}  {:>12}  {:>12}  {:>8}  {:>12}  {:>10}",
            "name", "numel", "zeros", "sparsity", "masked", "violations"
        );
        for l in &self.layers {
            let _ = writeln!(
                out,
                "{:<width$}  {:>12}  {:>12}  {:>8.4}  {:>12}  {:>10}",
                l.name,
                l.numel,
                l.zeros,
                l.sparsity(),
                l.masked,
                l.violations
            );
        }
        let _ = write!(out, "global sparsity: {:.4}", self.global_sparsity());
        out
    }
}

/// Counts zeros of the tensors named in `names` (in that order) and, for those
/// with a mask in `masks`, the masked coordinates and violations
/// (`mask = 0 ∧ w ≠ 0`).
pub fn sparsity_report(
    weights: &NamedTensors,
    names: &[String],
    masks: Option<&MaskSet>,
) -> Result<SparsityReport> {
    let layers = names
        .iter()
        .map(|name| {
            let w = weights
                .get(name)
                .ok_or_else(|| PruneError::MissingTensor(name.clone()))?;
            let zeros = count_zeros(w)?;
            let (masked, violations) = match masks.and_then(|m| m.get(name)) {
                Some(mask) => {
                    check_shape(name, w.dims(), mask.dims())?;
                    let mask = mask.to_device(w.device())?;
                    let pruned = mask.eq(0f64)?;
                    let nonzero = w.ne(0f64)?;
                    // Both are 0/1 u8 tensors: their product is the AND.
                    let both = pruned.mul(&nonzero)?;
                    (count_ones(&pruned)?, count_ones(&both)?)
                }
                None => (0, 0),
            };
            Ok(LayerSparsity {
                name: name.clone(),
                numel: w.elem_count(),
                zeros,
                masked,
                violations,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(SparsityReport { layers })
}

fn count_ones(t: &candle_core::Tensor) -> Result<usize> {
    if t.elem_count() == 0 {
        return Ok(0);
    }
    Ok(t.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()? as usize)
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}
