//! Decoupled knowledge distillation (Zhao et al., 2022): the KD loss split into a
//! target-class term (TCKD) and a non-target-class term (NCKD), weighted
//! separately.
//!
//! With `p = softmax(z/T)` and `y` the label of a sample:
//!
//! ```text
//! b      = [p_y, Σ_{k≠y} p_k]                                   binary target/other distribution
//! p̂      = softmax(z/T − 1000·onehot(y))                        distribution over the non-target classes
//! TCKD   = T² · (1/N) Σ_n KL(b_T ‖ b_S)
//! NCKD   = T² · (1/N) Σ_n KL(p̂_T ‖ p̂_S)
//! DKD    = min(epoch / warmup, 1) · (α·TCKD + β·NCKD)
//! ```
//!
//! Here `α` and `β` are the paper's TCKD and NCKD weights, not the project-wide
//! `α` of `α·KD + (1−α)·CE`: as in the paper, DKD is added to the task loss,
//! `L = CE + DKD`.

use candle_core::{DType, Tensor, D};

use super::kl::{check_pair, check_temperature};
use crate::{KdError, Result};

/// Logit offset that removes the target class from the non-target distribution,
/// `z/T − 1000·onehot(y)`, as in the reference implementation.
const TARGET_MASK_OFFSET: f64 = 1000.0;

/// Hyper-parameters of DKD.
///
/// Serialised as `{"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup_epochs": 0}`;
/// missing keys take the defaults: the paper's CIFAR-100 values
/// ([`DkdConfig::PAPER`]) without the warm-up, which the paper spreads over
/// 20 of its 240 epochs (kdprune's runs are short: set a warm-up of a fraction
/// of the run, or none).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DkdConfig {
    /// Weight `α ≥ 0` of TCKD (the paper's name; not the project-wide KD/CE mix).
    pub alpha: f64,
    /// Weight `β ≥ 0` of NCKD.
    pub beta: f64,
    /// Softmax temperature `T > 0`.
    pub temperature: f64,
    /// Epochs of the linear warm-up `min(epoch / warmup_epochs, 1)`; 0 disables it.
    pub warmup_epochs: usize,
}

impl DkdConfig {
    /// The paper's CIFAR-100 setting: `alpha = 1`, `beta = 8`,
    /// `temperature = 4`, `warmup_epochs = 20` (of 240).
    pub const PAPER: DkdConfig = DkdConfig {
        alpha: 1.0,
        beta: 8.0,
        temperature: 4.0,
        warmup_epochs: 20,
    };
}

impl Default for DkdConfig {
    /// [`DkdConfig::PAPER`] without the warm-up: `alpha = 1`, `beta = 8`,
    /// `temperature = 4`, `warmup_epochs = 0`. The one place the defaults of
    /// DKD are written (the objective's `dkd` term and the command line take
    /// them from here).
    fn default() -> Self {
        Self {
            warmup_epochs: 0,
            ..Self::PAPER
        }
    }
}

impl DkdConfig {
    /// Checks `alpha`, `beta` finite and `≥ 0` and `temperature` finite and `> 0`
    /// (NaN rejected).
    pub fn validate(&self) -> Result<()> {
        for (name, w) in [("alpha", self.alpha), ("beta", self.beta)] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(KdError::InvalidConfig(format!(
                    "dkd {name} must be finite and >= 0, got {w}"
                )));
            }
        }
        check_temperature(self.temperature)
    }

    /// The warm-up factor `min(epoch / warmup_epochs, 1)` for a 1-based `epoch` (the
    /// first epoch gets `1/warmup_epochs`; epoch 0 gets 0); 1 when `warmup_epochs = 0`.
    pub fn warmup_factor(&self, epoch: usize) -> f64 {
        if self.warmup_epochs == 0 {
            1.0
        } else {
            (epoch as f64 / self.warmup_epochs as f64).min(1.0)
        }
    }
}

/// The two DKD terms, each already multiplied by `T²`, unweighted.
#[derive(Clone, Debug)]
pub struct DkdTerms {
    /// `TCKD = T² · (1/N) Σ_n KL(b_T ‖ b_S)`, scalar.
    pub tckd: Tensor,
    /// `NCKD = T² · (1/N) Σ_n KL(p̂_T ‖ p̂_S)`, scalar.
    pub nckd: Tensor,
}

/// Checks `u32` labels `[N]` below `K` and returns the one-hot mask `[N, K]` in `f32`.
fn target_mask(labels: &Tensor, n: usize, k: usize) -> Result<Tensor> {
    if labels.dtype() != DType::U32 {
        return Err(KdError::ShapeMismatch(format!(
            "labels must be u32, got {:?}",
            labels.dtype()
        )));
    }
    if labels.dims() != [n] {
        return Err(KdError::ShapeMismatch(format!(
            "labels must have shape [{n}], got {:?}",
            labels.dims()
        )));
    }
    let max_label = labels.max(0)?.to_scalar::<u32>()?;
    if max_label as usize >= k {
        return Err(KdError::ShapeMismatch(format!(
            "label {max_label} out of range for {k} classes"
        )));
    }
    let classes = Tensor::arange(0u32, k as u32, labels.device())?.unsqueeze(0)?;
    Ok(labels
        .unsqueeze(1)?
        .broadcast_eq(&classes)?
        .to_dtype(DType::F32)?)
}

/// Log-probabilities of one side: `(log b [N, 2], log p̂ [N, K])`.
///
/// `log b = [log p_y, log Σ_{k≠y} p_k]` is computed as
/// `[z_y/T − lse(z/T), lse(z/T − 1000·onehot) − lse(z/T)]` (`lse` = log-sum-exp):
/// the same values as taking the log of the summed probabilities, without the
/// `log 0` that summing in probability space hits when one class dominates.
fn log_parts(logits: &Tensor, mask: &Tensor, t: f64) -> Result<(Tensor, Tensor)> {
    let z = (logits.to_dtype(DType::F32)? / t)?;
    let lse_all = z.log_sum_exp(D::Minus1)?.unsqueeze(1)?;
    let masked = (&z - (mask * TARGET_MASK_OFFSET)?)?;
    let lse_other = masked.log_sum_exp(D::Minus1)?.unsqueeze(1)?;
    let z_target = (&z * mask)?.sum_keepdim(D::Minus1)?;
    let log_b = Tensor::cat(&[(z_target - &lse_all)?, (lse_other - &lse_all)?], 1)?;
    let log_non_target = candle_nn::ops::log_softmax(&masked, D::Minus1)?;
    Ok((log_b, log_non_target))
}

/// `(1/N) Σ_n Σ_k P (log P − log Q)` from log-probabilities. `P = exp(log P)` is 0
/// where `log P` underflows, so those entries contribute exactly 0 (as `x·log x → 0`).
fn batch_kl(log_p: &Tensor, log_q: &Tensor, n: usize) -> Result<Tensor> {
    let p = log_p.exp()?;
    Ok(((p * (log_p - log_q)?)?.sum_all()? / n as f64)?)
}

/// TCKD and NCKD (each `× T²`, reduction `sum / N`) for student and teacher logits
/// `[N, K]` and `u32` labels `[N]`; see the module formulas. The teacher is
/// detached here.
pub fn dkd_terms(student: &Tensor, teacher: &Tensor, labels: &Tensor, t: f64) -> Result<DkdTerms> {
    check_pair(student, teacher)?;
    check_temperature(t)?;
    let (n, k) = student.dims2()?;
    let mask = target_mask(labels, n, k)?;
    let (log_b_s, log_nt_s) = log_parts(student, &mask, t)?;
    let (log_b_t, log_nt_t) = log_parts(&teacher.detach(), &mask, t)?;
    let t2 = t * t;
    Ok(DkdTerms {
        tckd: (batch_kl(&log_b_t, &log_b_s, n)? * t2)?,
        nckd: (batch_kl(&log_nt_t, &log_nt_s, n)? * t2)?,
    })
}

/// The DKD term `min(epoch / warmup, 1) · (α·TCKD + β·NCKD)` for student and teacher
/// logits `[N, K]`, `u32` labels `[N]` and a 1-based `epoch` (see
/// [`DkdConfig::warmup_factor`]). The teacher is detached here; the cross-entropy on
/// labels is the caller's to add.
pub fn dkd_loss(
    student: &Tensor,
    teacher: &Tensor,
    labels: &Tensor,
    cfg: &DkdConfig,
    epoch: usize,
) -> Result<Tensor> {
    cfg.validate()?;
    let terms = dkd_terms(student, teacher, labels, cfg.temperature)?;
    let loss = ((terms.tckd * cfg.alpha)? + (terms.nckd * cfg.beta)?)?;
    Ok((loss * cfg.warmup_factor(epoch))?)
}
