//! Hinton knowledge distillation (Hinton, Vinyals & Dean, 2015).

use candle_core::Tensor;

use super::kl::{check_pair, kl_div, log_softmax_t};
use crate::Result;

/// Hinton's distillation term `T² · KL(p_T ‖ p_S)` with `p = softmax(z / T)`.
///
/// `student` and `teacher` are logits `[N, K]`; the KL is a batch mean. The `T²`
/// factor keeps the gradient magnitude independent of the temperature. Only the
/// distillation term: the cross-entropy on labels is added by
/// [`LossConfig`](super::LossConfig). The teacher is not detached here.
pub fn hinton_kd(student: &Tensor, teacher: &Tensor, t: f64) -> Result<Tensor> {
    check_pair(student, teacher)?;
    let log_ps = log_softmax_t(student, t)?;
    let log_pt = log_softmax_t(teacher, t)?;
    Ok((kl_div(&log_pt, &log_ps)? * (t * t))?)
}
