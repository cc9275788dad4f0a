//! GraSP, gradient signal preservation (Wang, Zhang & Grosse, "Picking
//! Winning Tickets Before Training by Preserving Gradient Flow", ICLR 2020).

use candle_core::DType;

use super::saliency::check_finite;
use super::{Importance, Loss, Needs, ScoringContext};
use crate::mask::check_shape;
use crate::{NamedTensors, PruneError, Result, Scores};

/// The Hessian–gradient product `H·g` by a forward finite difference of
/// gradients, since Candle has no double backward:
///
/// ```text
/// H·g ≈ (∇L(θ + ε·g) − ∇L(θ)) / ε,      g = ∇L(θ)
/// ```
///
/// `params` are the parameter values θ (every tensor the closure needs),
/// `grads` the gradient `g` at θ (only the parameters to differentiate; a
/// parameter without a gradient is not perturbed), and `grad_at` returns the
/// gradient at given parameter values, at least for every name of `grads`.
/// It is called once, with θ + ε·g.
///
/// The result has `grads`' names, shapes and dtypes. The arithmetic runs in
/// `f32` (`f64` for `f64` gradients), so it works on every Candle device. The error is `O(ε·‖g‖²·‖∇³L‖)` plus rounding of about
/// `ulp(g)/ε`; the perturbation is rounded to the parameters' dtype, so with
/// `f32` parameters choose `ε` such that `ε·|g|` is about `1e-3·|θ|` (exact for
/// any `ε` on a quadratic loss up to that rounding).
///
/// Errors: [`PruneError::InvalidEpsilon`] unless `ε` is finite and positive,
/// [`PruneError::NoPrunableParameters`] for empty `grads`,
/// [`PruneError::MissingTensor`] / [`PruneError::ShapeMismatch`] when a
/// gradient has no parameter, or the closure's answer lacks a name or changes
/// a shape; the closure's own error is returned unchanged.
pub fn hessian_gradient_product<E, F>(
    params: &NamedTensors,
    grads: &NamedTensors,
    epsilon: f64,
    mut grad_at: F,
) -> std::result::Result<NamedTensors, E>
where
    F: FnMut(&NamedTensors) -> std::result::Result<NamedTensors, E>,
    E: From<PruneError>,
{
    let shifted_params = perturb(params, grads, epsilon)?;
    let shifted_grads = grad_at(&shifted_params)?;
    Ok(difference_quotient(grads, &shifted_grads, epsilon)?)
}

/// GraSP importance `I = θ ⊙ (H·g)` in `f32` for every tensor of `weights`,
/// `hessian_grad` holding `H·g` under the same names (e.g. from
/// [`hessian_gradient_product`]).
///
/// The paper scores `S(−θ) = −θ ⊙ H·g`, the first-order change of the
/// gradient norm `gᵀg` when `θ` is removed, and prunes the weights with the
/// **highest** `S`: removing them reduces gradient flow least (or increases
/// it). This function returns `I = −S` so that the crate-wide convention holds
/// unchanged: [`crate::select::global`] prunes the **lowest** `I`, i.e. the
/// highest `S`, and keeps the largest `I`. Scores may be negative.
///
/// Fails with [`PruneError::MissingTensor`], [`PruneError::ShapeMismatch`] or
/// [`PruneError::NonFinite`].
pub fn grasp(weights: &NamedTensors, hessian_grad: &NamedTensors) -> Result<Scores> {
    if weights.is_empty() {
        return Err(PruneError::NoPrunableParameters);
    }
    weights
        .iter()
        .map(|(name, w)| {
            let hg = hessian_grad
                .get(name)
                .ok_or_else(|| PruneError::MissingTensor(name.clone()))?;
            check_shape(name, w.dims(), hg.dims())?;
            let w = w.detach().to_dtype(DType::F32)?;
            let hg = hg.detach().to_dtype(DType::F32)?.to_device(w.device())?;
            let score = w.mul(&hg)?;
            check_finite(name, &score.abs()?)?;
            Ok((name.clone(), score))
        })
        .collect()
}

/// `θ + ε·g` for every parameter with a gradient, the others unchanged; in
/// each parameter's dtype and device.
fn perturb(params: &NamedTensors, grads: &NamedTensors, epsilon: f64) -> Result<NamedTensors> {
    if !(epsilon.is_finite() && epsilon > 0.0) {
        return Err(PruneError::InvalidEpsilon(epsilon));
    }
    if grads.is_empty() {
        return Err(PruneError::NoPrunableParameters);
    }
    if let Some(name) = grads.keys().find(|n| !params.contains_key(*n)) {
        return Err(PruneError::MissingTensor(name.clone()));
    }
    params
        .iter()
        .map(|(name, theta)| {
            let theta = theta.detach();
            let shifted = match grads.get(name) {
                Some(g) => {
                    check_shape(name, theta.dims(), g.dims())?;
                    let step = g
                        .detach()
                        .to_dtype(work_dtype(g.dtype()))?
                        .affine(epsilon, 0.0)?
                        .to_dtype(theta.dtype())?
                        .to_device(theta.device())?;
                    theta.add(&step)?
                }
                None => theta,
            };
            Ok((name.clone(), shifted))
        })
        .collect()
}

/// `(g' − g) / ε` in [`work_dtype`], returned in `g`'s dtype, for every name
/// of `grads`.
fn difference_quotient(
    grads: &NamedTensors,
    shifted: &NamedTensors,
    epsilon: f64,
) -> Result<NamedTensors> {
    grads
        .iter()
        .map(|(name, g)| {
            let g2 = shifted
                .get(name)
                .ok_or_else(|| PruneError::MissingTensor(name.clone()))?;
            check_shape(name, g.dims(), g2.dims())?;
            let work = work_dtype(g.dtype());
            let g1 = g.detach().to_dtype(work)?;
            let g2 = g2.detach().to_dtype(work)?.to_device(g.device())?;
            let hg = g2.sub(&g1)?.affine(1.0 / epsilon, 0.0)?;
            Ok((name.clone(), hg.to_dtype(g.dtype())?))
        })
        .collect()
}

/// `f64` stays `f64`; everything else (`f32`, half types) is computed in `f32`.
fn work_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// GraSP scores `I = θ ⊙ H·g` of the prunable weights (Wang et al. 2020).
///
/// `g` is the mean cross-entropy gradient of the prunable weights over the
/// context's calibration batches, `H·g` the finite difference
/// `(g(θ + εg) − g(θ)) / ε` over the same batches
/// ([`hessian_gradient_product`]), with `ε = 10⁻³·‖θ‖/‖g‖` so that the step
/// moves the weights by about 0.1 % (the advice for `f32`). [`grasp`]
/// returns the negated paper score: selection prunes the lowest `I`, i.e. the
/// highest paper score `−θ ⊙ H·g`, the weights whose removal reduces gradient
/// flow least.
#[derive(Clone, Copy, Debug, Default)]
pub struct Grasp;

impl Grasp {
    /// `(1/B) Σ_b ∂CE/∂θ` at the context's current weights, summed in batch order.
    fn mean_gradient(ctx: &mut dyn ScoringContext) -> Result<NamedTensors> {
        let batches = ctx.batches();
        let mut sum = NamedTensors::new();
        for b in 0..batches {
            for (n, g) in ctx.gradient(Loss::CrossEntropy, b)? {
                let total = match sum.remove(&n) {
                    Some(s) => s.add(&g)?,
                    None => g,
                };
                sum.insert(n, total);
            }
        }
        let scale = 1.0 / batches as f64;
        sum.into_iter()
            .map(|(n, s)| Ok((n, s.affine(scale, 0.0)?)))
            .collect()
    }
}

impl Importance for Grasp {
    fn name(&self) -> String {
        "grasp".into()
    }
    fn needs(&self) -> Needs {
        Needs::DATA
    }
    fn score(&self, ctx: &mut dyn ScoringContext) -> Result<Scores> {
        if ctx.batches() == 0 {
            return Err(PruneError::NeedsBatches("grasp".into()));
        }
        let weights = ctx.weights()?;
        let g = Self::mean_gradient(ctx)?;
        let (theta_norm, g_norm) = (l2_norm(&weights)?, l2_norm(&g)?);
        if !(g_norm > 0.0 && g_norm.is_finite()) {
            return Err(PruneError::NoGradientFlow(g_norm));
        }
        let epsilon = 1e-3 * theta_norm.max(f64::MIN_POSITIVE) / g_norm;
        let hg = hessian_gradient_product(&weights, &g, epsilon, |shifted| {
            ctx.set_weights(shifted)?;
            Self::mean_gradient(ctx)
        })?;
        grasp(&weights, &hg)
    }
    /// The gradient at `θ` and at `θ + εg`.
    fn passes(&self, samples: u64) -> (u64, u64) {
        (2 * samples, 2 * samples)
    }
}

/// `‖t‖₂` over all tensors of `tensors`, in `f64`.
fn l2_norm(tensors: &NamedTensors) -> Result<f64> {
    let mut sq = 0f64;
    for t in tensors.values() {
        sq += t
            .to_dtype(DType::F64)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?;
    }
    Ok(sq.sqrt())
}
