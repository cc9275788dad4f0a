//! Binary pruning masks keyed by parameter name, and their application to
//! weights, gradients and plain tensor maps.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};

use crate::{NamedTensors, PruneError, Result};

/// Pruning masks: parameter name → `f32` tensor of the weight's shape holding
/// 1 where the weight is kept and 0 where it is pruned.
#[derive(Clone, Debug, Default)]
pub struct MaskSet {
    masks: BTreeMap<String, Tensor>,
}

impl MaskSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the mask of `name`, converted to `f32`.
    ///
    /// Fails with [`PruneError::InvalidMask`] when any value is not exactly 0 or 1.
    pub fn insert(&mut self, name: impl Into<String>, mask: Tensor) -> Result<()> {
        let name = name.into();
        let mask = mask.to_dtype(DType::F32)?;
        let values = mask.flatten_all()?.to_vec1::<f32>()?;
        if values.iter().any(|&v| v != 0.0 && v != 1.0) {
            return Err(PruneError::InvalidMask { name });
        }
        self.masks.insert(name, mask);
        Ok(())
    }

    /// Adds a mask the caller built from 0/1 `f32` values (selection does).
    pub(crate) fn insert_trusted(&mut self, name: String, mask: Tensor) {
        self.masks.insert(name, mask);
    }

    /// The mask of `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.masks.get(name)
    }

    /// Whether `name` has a mask.
    pub fn contains(&self, name: &str) -> bool {
        self.masks.contains_key(name)
    }

    /// Masked parameter names in name order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.masks.keys().map(String::as_str)
    }

    /// `(name, mask)` pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.masks.iter()
    }

    /// Number of masked parameters.
    pub fn len(&self) -> usize {
        self.masks.len()
    }

    /// Whether no parameter is masked.
    pub fn is_empty(&self) -> bool {
        self.masks.is_empty()
    }

    /// Number of pruned coordinates (mask = 0) over all masks.
    pub fn pruned_count(&self) -> Result<usize> {
        self.masks.values().map(count_zeros).sum()
    }

    /// Number of coordinates covered by the masks.
    pub fn total_count(&self) -> usize {
        self.masks.values().map(Tensor::elem_count).sum()
    }

    /// `pruned_count / total_count` (0 for an empty set).
    pub fn sparsity(&self) -> Result<f64> {
        let total = self.total_count();
        if total == 0 {
            return Ok(0.0);
        }
        Ok(self.pruned_count()? as f64 / total as f64)
    }

    /// `w ← w ⊙ m` for every masked parameter, through [`Var::set`].
    ///
    /// Every mask must name one of `vars` with the same shape, otherwise
    /// nothing is modified and [`PruneError::MissingTensor`] or
    /// [`PruneError::ShapeMismatch`] is returned. Vars without a mask are untouched.
    pub fn apply_to_vars(&self, vars: &[(String, Var)]) -> Result<()> {
        let pairs = self.pair_with_vars(vars)?;
        for (_, mask, var) in pairs {
            let w = var.as_tensor();
            let m = mask.to_dtype(w.dtype())?.to_device(w.device())?;
            var.set(&w.detach().mul(&m)?)?;
        }
        Ok(())
    }

    /// `g ← g ⊙ m` in `grads` for every masked parameter.
    ///
    /// Call it after `backward` and before the optimizer step: the optimizer
    /// (and its momentum buffers) then never sees a gradient on a pruned
    /// coordinate. Every mask must name one of `vars` with the same shape;
    /// a masked var without a gradient in `grads` is skipped, since no
    /// optimizer updates it.
    pub fn apply_to_grads(&self, grads: &mut GradStore, vars: &[(String, Var)]) -> Result<()> {
        let pairs = self.pair_with_vars(vars)?;
        for (name, mask, var) in pairs {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            check_shape(name, var.dims(), g.dims())?;
            let m = mask.to_dtype(g.dtype())?.to_device(g.device())?;
            let masked = g.mul(&m)?;
            grads.insert(var.as_tensor(), masked);
        }
        Ok(())
    }

    /// `t ← t ⊙ m` for every masked entry of `tensors` (e.g. a checkpoint).
    ///
    /// Every mask must name a tensor of the same shape, otherwise nothing is
    /// modified.
    pub fn apply_to_tensors(&self, tensors: &mut NamedTensors) -> Result<()> {
        for (name, mask) in &self.masks {
            let t = tensors
                .get(name)
                .ok_or_else(|| PruneError::MissingTensor(name.clone()))?;
            check_shape(name, t.dims(), mask.dims())?;
        }
        for (name, mask) in &self.masks {
            if let Some(t) = tensors.get_mut(name) {
                let m = mask.to_dtype(t.dtype())?.to_device(t.device())?;
                *t = t.mul(&m)?;
            }
        }
        Ok(())
    }

    /// The element-wise AND of two sets: a coordinate is kept only when both
    /// keep it. A name present in one set only keeps that set's mask.
    pub fn intersect(&self, other: &MaskSet) -> Result<MaskSet> {
        let mut out = self.clone();
        for (name, theirs) in &other.masks {
            let combined = match self.masks.get(name) {
                Some(ours) => {
                    check_shape(name, ours.dims(), theirs.dims())?;
                    ours.mul(&theirs.to_device(ours.device())?)?
                }
                None => theirs.clone(),
            };
            out.masks.insert(name.clone(), combined);
        }
        Ok(out)
    }

    /// `u8` copies of the masks (for checkpoints: a quarter of the `f32` size).
    pub fn to_u8(&self) -> Result<NamedTensors> {
        self.masks
            .iter()
            .map(|(name, m)| Ok((name.clone(), m.to_dtype(DType::U8)?)))
            .collect()
    }

    /// Rebuilds a set from stored masks of any dtype (e.g. [`MaskSet::to_u8`]),
    /// validating that they hold only 0/1 and placing the `f32` masks on `device`.
    pub fn from_u8(map: &NamedTensors, device: &Device) -> Result<MaskSet> {
        let mut out = MaskSet::new();
        for (name, t) in map {
            out.insert(name.clone(), t.to_device(device)?)?;
        }
        Ok(out)
    }

    /// Consumes the set, returning the `f32` masks.
    pub fn into_inner(self) -> BTreeMap<String, Tensor> {
        self.masks
    }

    /// Pairs each mask with its var, checking names and shapes up front so a
    /// failure leaves everything unmodified.
    fn pair_with_vars<'a>(
        &'a self,
        vars: &'a [(String, Var)],
    ) -> Result<Vec<(&'a str, &'a Tensor, &'a Var)>> {
        let by_name: BTreeMap<&str, &Var> = vars.iter().map(|(n, v)| (n.as_str(), v)).collect();
        self.masks
            .iter()
            .map(|(name, mask)| {
                let var = by_name
                    .get(name.as_str())
                    .ok_or_else(|| PruneError::MissingTensor(name.clone()))?;
                check_shape(name, var.dims(), mask.dims())?;
                Ok((name.as_str(), mask, *var))
            })
            .collect()
    }
}

/// `ShapeMismatch` unless `got == expected`.
pub(crate) fn check_shape(name: &str, expected: &[usize], got: &[usize]) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(PruneError::ShapeMismatch {
            name: name.to_string(),
            expected: expected.to_vec(),
            got: got.to_vec(),
        })
    }
}

/// Number of elements equal to zero, counted on the tensor's device.
pub(crate) fn count_zeros(t: &Tensor) -> Result<usize> {
    if t.elem_count() == 0 {
        return Ok(0);
    }
    let n = t
        .eq(0f64)?
        .to_dtype(DType::U32)?
        .sum_all()?
        .to_scalar::<u32>()?;
    Ok(n as usize)
}
