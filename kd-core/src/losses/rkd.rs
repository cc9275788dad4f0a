//! Relational knowledge distillation (Park et al., 2019): the student matches the
//! teacher's pairwise distances and triplet angles between the samples of a batch,
//! not the individual outputs, so student and teacher widths may differ.
//!
//! ```text
//! ψ_D(i, j)    = ‖e_i − e_j‖ / μ,   μ = mean of the off-diagonal distances
//! ψ_A(i, j, k) = ⟨(e_j − e_i)/‖e_j − e_i‖, (e_k − e_i)/‖e_k − e_i‖⟩   (cosine of the angle at anchor i)
//! RKD          = w_D · Huber(ψ_D^S, ψ_D^T) + w_A · Huber(ψ_A^S, ψ_A^T)
//! ```
//!
//! `Huber` is the smooth-L1 loss with `δ = 1`, averaged over all entries. As in the
//! paper, the relational term is added to the task loss, `L = CE + RKD`, rather than
//! mixed with `α`.

use candle_core::{DType, Tensor, D};

use crate::{KdError, Result};

/// Floor on squared distances before the square root (the diagonal is 0, where the
/// derivative of `sqrt` is infinite).
const DIST_EPS: f64 = 1e-12;

/// Weights of the two relational terms.
///
/// Serialised as `{"distance_weight": 25.0, "angle_weight": 50.0}`; missing keys take
/// these defaults (the paper's values).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RkdConfig {
    /// Weight `w_D ≥ 0` of the distance loss.
    pub distance_weight: f64,
    /// Weight `w_A ≥ 0` of the angle loss.
    pub angle_weight: f64,
}

impl Default for RkdConfig {
    /// `distance_weight = 25`, `angle_weight = 50`.
    fn default() -> Self {
        Self {
            distance_weight: 25.0,
            angle_weight: 50.0,
        }
    }
}

impl RkdConfig {
    /// Checks both weights finite and `≥ 0`, and not both 0 (NaN rejected).
    pub fn validate(&self) -> Result<()> {
        for (name, w) in [
            ("distance_weight", self.distance_weight),
            ("angle_weight", self.angle_weight),
        ] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(KdError::InvalidConfig(format!(
                    "rkd {name} must be finite and >= 0, got {w}"
                )));
            }
        }
        if self.distance_weight == 0.0 && self.angle_weight == 0.0 {
            return Err(KdError::InvalidConfig(
                "rkd weights are both 0, leaving no loss term".to_string(),
            ));
        }
        Ok(())
    }
}

/// Flattens `[N, …]` to `[N, D]` in `f32` and checks `N ≥ 2`, `D ≥ 1`.
fn embeddings(x: &Tensor, what: &str) -> Result<Tensor> {
    let dims = x.dims();
    if dims.is_empty() || dims[0] < 2 || x.elem_count() == 0 {
        return Err(KdError::ShapeMismatch(format!(
            "{what} must be a non-empty [N, ...] tensor with N >= 2, got {dims:?}"
        )));
    }
    let e = x.to_dtype(DType::F32)?;
    Ok(if dims.len() == 1 {
        e.unsqueeze(1)?
    } else {
        e.flatten_from(1)?
    })
}

/// Flattened student and (detached) teacher embeddings with the same `N`.
fn pair(student: &Tensor, teacher: &Tensor) -> Result<(Tensor, Tensor)> {
    let s = embeddings(student, "student embeddings")?;
    let t = embeddings(&teacher.detach(), "teacher embeddings")?;
    if s.dim(0)? != t.dim(0)? {
        return Err(KdError::ShapeMismatch(format!(
            "student batch {} and teacher batch {} differ",
            s.dim(0)?,
            t.dim(0)?
        )));
    }
    Ok((s, t))
}

/// Smooth-L1 (Huber, `δ = 1`) averaged over all entries:
/// `mean(h(a − b))`, `h(x) = x²/2` if `|x| < 1`, else `|x| − 1/2`.
fn smooth_l1(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let abs = (a - b)?.abs()?;
    // With m = min(|x|, 1): m²/2 + (|x| − m) is x²/2 below 1 and |x| − 1/2 above.
    let m = abs.minimum(1f64)?;
    let h = ((m.sqr()? * 0.5)? + (abs - m)?)?;
    Ok(h.mean_all()?)
}

/// Pairwise distances divided by their off-diagonal mean,
/// `ψ_D(i, j) = ‖e_i − e_j‖ / μ`, `μ = (1/(N(N−1))) Σ_{i≠j} ‖e_i − e_j‖`, `[N, N]`
/// with a zero diagonal. Squared distances are floored at `1e-12` before the root.
fn normalized_distances(e: &Tensor) -> Result<Tensor> {
    let n = e.dim(0)?;
    // Direct differences rather than ‖a‖² + ‖b‖² − 2a·b: no cancellation in f32.
    let diff = e.unsqueeze(1)?.broadcast_sub(&e.unsqueeze(0)?)?;
    let d = diff.sqr()?.sum(D::Minus1)?.maximum(DIST_EPS)?.sqrt()?;
    let off_diagonal =
        (Tensor::ones((n, n), DType::F32, e.device())? - Tensor::eye(n, DType::F32, e.device())?)?;
    let d = (d * off_diagonal)?;
    let mean = (d.sum_all()? / (n * (n - 1)) as f64)?;
    Ok(d.broadcast_div(&mean)?)
}

/// Cosines of the angles at every anchor, `ψ_A(i, j, k)` for all `(i, j, k)`,
/// flattened to `[N³]`. Difference vectors are normalised with
/// `v / max(‖v‖, 1e-12)`, so the degenerate `j = i` or `k = i` entries are 0.
fn angles(e: &Tensor) -> Result<Tensor> {
    // diff[i, j] = e_j − e_i
    let diff = e.unsqueeze(0)?.broadcast_sub(&e.unsqueeze(1)?)?;
    let norm = diff
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .maximum(1e-24f64)?
        .sqrt()?;
    let unit = diff.broadcast_div(&norm)?.contiguous()?;
    let gram = unit.matmul(&unit.transpose(1, 2)?.contiguous()?)?;
    Ok(gram.flatten_all()?)
}

/// RKD distance loss `Huber(ψ_D^S, ψ_D^T)`, the mean over all `N²` entries of the
/// smooth-L1 between the student's and the teacher's normalised distance matrices.
///
/// Embeddings are `[N, …]` (flattened to `[N, D]`, `N ≥ 2`); student and teacher
/// widths may differ. The teacher is detached here.
pub fn rkd_distance_loss(student: &Tensor, teacher: &Tensor) -> Result<Tensor> {
    let (s, t) = pair(student, teacher)?;
    smooth_l1(&normalized_distances(&s)?, &normalized_distances(&t)?)
}

/// RKD angle loss `Huber(ψ_A^S, ψ_A^T)`, the mean over all `N³` triplets `(i, j, k)`
/// of the smooth-L1 between the cosines of the angles `∠(e_j, e_i, e_k)` of student
/// and teacher (degenerate triplets contribute 0 on both sides).
///
/// Embeddings are `[N, …]` (flattened to `[N, D]`, `N ≥ 2`); memory grows as
/// `N²·D + N³`. The teacher is detached here.
pub fn rkd_angle_loss(student: &Tensor, teacher: &Tensor) -> Result<Tensor> {
    let (s, t) = pair(student, teacher)?;
    smooth_l1(&angles(&s)?, &angles(&t)?)
}

/// The RKD term `w_D · rkd_distance_loss + w_A · rkd_angle_loss` with the weights of
/// `cfg`; a term whose weight is exactly 0 is not computed. The teacher is detached.
pub fn rkd_loss(student: &Tensor, teacher: &Tensor, cfg: &RkdConfig) -> Result<Tensor> {
    cfg.validate()?;
    let distance = (cfg.distance_weight > 0.0)
        .then(|| rkd_distance_loss(student, teacher))
        .transpose()?;
    let angle = (cfg.angle_weight > 0.0)
        .then(|| rkd_angle_loss(student, teacher))
        .transpose()?;
    match (distance, angle) {
        (Some(d), Some(a)) => Ok(((d * cfg.distance_weight)? + (a * cfg.angle_weight)?)?),
        (Some(d), None) => Ok((d * cfg.distance_weight)?),
        (None, Some(a)) => Ok((a * cfg.angle_weight)?),
        // `validate` rejects two zero weights.
        (None, None) => Err(KdError::InvalidConfig(
            "rkd weights are both 0, leaving no loss term".to_string(),
        )),
    }
}
