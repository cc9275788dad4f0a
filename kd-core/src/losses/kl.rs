//! Tempered softmax, batch-mean KL divergence and cross-entropy: the pieces every
//! distillation loss is built from.

use candle_core::{DType, Tensor, D};

use crate::{KdError, Result};

/// Rejects a temperature that is not a finite positive number.
pub(crate) fn check_temperature(t: f64) -> Result<()> {
    if t.is_finite() && t > 0.0 {
        Ok(())
    } else {
        Err(KdError::InvalidConfig(format!(
            "temperature must be finite and > 0, got {t}"
        )))
    }
}

/// Checks that `logits` is `[N, K]` with `N ≥ 1`, `K ≥ 1`, and returns `(N, K)`.
pub(crate) fn check_logits(logits: &Tensor, what: &str) -> Result<(usize, usize)> {
    match *logits.dims() {
        [n, k] if n > 0 && k > 0 => Ok((n, k)),
        ref dims => Err(KdError::ShapeMismatch(format!(
            "{what} must be a non-empty [N, K] tensor, got shape {dims:?}"
        ))),
    }
}

/// Checks that student and teacher logits are both `[N, K]` with the same shape.
pub(crate) fn check_pair(student: &Tensor, teacher: &Tensor) -> Result<()> {
    check_logits(student, "student logits")?;
    check_logits(teacher, "teacher logits")?;
    if student.dims() != teacher.dims() {
        return Err(KdError::ShapeMismatch(format!(
            "student logits {:?} and teacher logits {:?} differ",
            student.dims(),
            teacher.dims()
        )));
    }
    Ok(())
}

/// `log softmax(z / T)` along the last dimension.
///
/// `log p_k = z_k/T − log Σ_j exp(z_j/T)`, computed in `f32` with the differentiable
/// `candle_nn::ops::log_softmax`. Errors if `T` is not finite and positive.
pub fn log_softmax_t(logits: &Tensor, t: f64) -> Result<Tensor> {
    check_temperature(t)?;
    let scaled = (logits.to_dtype(DType::F32)? / t)?;
    Ok(candle_nn::ops::log_softmax(&scaled, D::Minus1)?)
}

/// `softmax(z / T)` along the last dimension: `p_k = exp(z_k/T) / Σ_j exp(z_j/T)`.
///
/// Computed in `f32` with the differentiable `candle_nn::ops::softmax`. Errors if `T`
/// is not finite and positive.
pub fn softmax_t(logits: &Tensor, t: f64) -> Result<Tensor> {
    check_temperature(t)?;
    let scaled = (logits.to_dtype(DType::F32)? / t)?;
    Ok(candle_nn::ops::softmax(&scaled, D::Minus1)?)
}

/// Batch-mean KL divergence `KL(P‖Q) = (1/N) Σ_n Σ_k P_nk (log P_nk − log Q_nk)`.
///
/// Takes log-probabilities `log_p`, `log_q` of shape `[N, K]` (e.g. from
/// [`log_softmax_t`]) and returns a scalar `f32` tensor. Gradients flow into both
/// arguments; detach the one that must stay fixed.
pub fn kl_div(log_p: &Tensor, log_q: &Tensor) -> Result<Tensor> {
    let (n, _) = check_logits(log_p, "log_p")?;
    check_logits(log_q, "log_q")?;
    if log_p.dims() != log_q.dims() {
        return Err(KdError::ShapeMismatch(format!(
            "kl_div: log_p {:?} and log_q {:?} differ",
            log_p.dims(),
            log_q.dims()
        )));
    }
    let log_p = log_p.to_dtype(DType::F32)?;
    let log_q = log_q.to_dtype(DType::F32)?;
    let p = log_p.exp()?;
    let pointwise = (p * (log_p - log_q)?)?;
    Ok((pointwise.sum_all()? / n as f64)?)
}

/// Mean cross-entropy `−(1/N) Σ_n log softmax(z_n)[y_n]` of logits `[N, K]` against
/// `u32` labels `[N]`.
///
/// Errors (instead of reading out of bounds) when a label is `≥ K`, when the labels
/// are not `u32`, or when the shapes disagree.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (n, k) = check_logits(logits, "logits")?;
    if labels.dtype() != DType::U32 {
        return Err(KdError::ShapeMismatch(format!(
            "labels must be u32, got {:?}",
            labels.dtype()
        )));
    }
    if labels.dims() != [n] {
        return Err(KdError::ShapeMismatch(format!(
            "labels must have shape [{n}] to match logits {:?}, got {:?}",
            logits.dims(),
            labels.dims()
        )));
    }
    // Some backends do not bound-check `gather`, so check the labels here.
    let max_label = labels.max(0)?.to_scalar::<u32>()?;
    if max_label as usize >= k {
        return Err(KdError::ShapeMismatch(format!(
            "label {max_label} out of range for {k} classes"
        )));
    }
    let log_p = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    let picked = log_p.gather(&labels.unsqueeze(1)?, 1)?;
    Ok((picked.sum_all()? / -(n as f64))?)
}
