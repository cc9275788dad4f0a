//! CA-KLD: context-aware KL divergence on standardised logits.
//!
//! Reading implemented here (the exact CA-KLD formula is not published):
//! `ẑ = standardize(z) / T` for student and teacher, `P = softmax(ẑ)`,
//! `β` = the teacher's mean top-1 confidence on the batch (or a fixed value), and
//! `CA-KLD = T² · (β·KL(P_S‖P_T) + (1−β)·KL(P_T‖P_S))`.
//! A confident teacher weights the mode-seeking reverse KL; an uncertain one the
//! mass-covering forward KL.

use candle_core::{DType, Tensor, D};

use super::kl::{check_logits, check_pair, check_temperature, kl_div};
use crate::{KdError, Result};

/// How the mixing weight `β` of CA-KLD is chosen.
///
/// Serialised in kebab-case: `"confidence"` or `{"fixed": 0.5}`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Beta {
    /// `β = (1/N) Σ_n max_k P_T[n, k]`, the teacher's mean top-1 probability on the
    /// batch, taken as a constant (no gradient).
    Confidence,
    /// `β = (1/N) Σ_n max_k softmax(z_T)[n, k]`: the teacher's mean top-1
    /// probability from its raw logits at T = 1 (no standardisation, no
    /// temperature), a constant. With standardised logits at T = 4 and ten
    /// classes, [`Beta::Confidence`] cannot exceed about 0.20 (a one-hot-like
    /// teacher gives `softmax([3, −1/3, …]/4)` ≈ 0.2036), so it barely moves;
    /// this one spans (1/K, 1).
    RawConfidence,
    /// A fixed `β ∈ [0, 1]`.
    Fixed(f64),
}

impl Default for Beta {
    /// [`Beta::Confidence`], the adaptive weighting.
    fn default() -> Self {
        Beta::Confidence
    }
}

impl Beta {
    /// Rejects a fixed `β` outside `[0, 1]` (or NaN).
    pub(crate) fn check(&self) -> Result<()> {
        match *self {
            Beta::Confidence | Beta::RawConfidence => Ok(()),
            Beta::Fixed(b) if (0.0..=1.0).contains(&b) => Ok(()),
            Beta::Fixed(b) => Err(KdError::InvalidConfig(format!(
                "fixed beta must lie in [0, 1], got {b}"
            ))),
        }
    }
}

impl std::str::FromStr for Beta {
    type Err = KdError;

    /// `confidence`, `raw-confidence`, or a fixed number in `[0, 1]`.
    fn from_str(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case("confidence") {
            return Ok(Beta::Confidence);
        }
        if s.eq_ignore_ascii_case("raw-confidence") {
            return Ok(Beta::RawConfidence);
        }
        let v: f64 = s.parse().map_err(|_| {
            KdError::InvalidConfig(format!(
                "beta must be `confidence`, `raw-confidence` or a number in [0, 1], got `{s}`"
            ))
        })?;
        let beta = Beta::Fixed(v);
        beta.check()?;
        Ok(beta)
    }
}

/// Rejects an `ε` that is not finite and positive.
pub(crate) fn check_eps(eps: f64) -> Result<()> {
    if eps.is_finite() && eps > 0.0 {
        Ok(())
    } else {
        Err(KdError::InvalidConfig(format!(
            "eps must be finite and > 0, got {eps}"
        )))
    }
}

/// Which standard deviation the logit standardisation divides by.
///
/// Serialised in kebab-case: `"population"` (the default) or `"sample"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogitStd {
    /// `sqrt((1/K) Σ_k (z_k − mean(z))²)`, PyTorch's `std(unbiased=False)`.
    #[default]
    Population,
    /// `sqrt((1/(K−1)) Σ_k (z_k − mean(z))²)`, PyTorch's default `std()`, as
    /// some logit-standardisation KD code computes it: the standardised
    /// logits are `sqrt((K−1)/K)` times the population ones (0.949 at
    /// K = 10), a slightly higher effective temperature.
    Sample,
}

impl std::str::FromStr for LogitStd {
    type Err = KdError;

    /// `population` or `sample`.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "population" => Ok(LogitStd::Population),
            "sample" => Ok(LogitStd::Sample),
            _ => Err(KdError::InvalidConfig(format!(
                "the logit std must be `population` or `sample`, got `{s}`"
            ))),
        }
    }
}

/// Per-sample standardisation along the last dimension:
/// `(z − mean(z)) / (std(z) + ε)` with the population standard deviation
/// `std(z) = sqrt((1/K) Σ_k (z_k − mean(z))²)`.
///
/// Computed in `f32`; differentiable, with a finite gradient even for a constant
/// row (whose output is all zeros).
pub fn standardize(logits: &Tensor, eps: f64) -> Result<Tensor> {
    standardize_with(logits, eps, LogitStd::Population)
}

/// [`standardize`] with the standard deviation of `std`: for
/// [`LogitStd::Sample`], `sqrt((1/(K−1)) Σ_k (z_k − mean(z))²)` (`K ≥ 2`).
pub fn standardize_with(logits: &Tensor, eps: f64, std: LogitStd) -> Result<Tensor> {
    check_eps(eps)?;
    if logits.rank() == 0 {
        return Err(KdError::ShapeMismatch(
            "standardize needs at least one dimension".to_string(),
        ));
    }
    let k = logits.dim(D::Minus1)?;
    if std == LogitStd::Sample && k < 2 {
        return Err(KdError::ShapeMismatch(format!(
            "the sample std needs at least 2 logits per row, got {k}"
        )));
    }
    let z = logits.to_dtype(DType::F32)?;
    let centred = z.broadcast_sub(&z.mean_keepdim(D::Minus1)?)?;
    let var = match std {
        LogitStd::Population => centred.sqr()?.mean_keepdim(D::Minus1)?,
        LogitStd::Sample => (centred.sqr()?.sum_keepdim(D::Minus1)? / (k - 1) as f64)?,
    };
    // sqrt has an infinite derivative at 0 (NaN gradients for a constant row); a floor
    // of 1e-24 on the variance changes std by at most 1e-12, far below any useful ε.
    let std = var.maximum(1e-24f64)?.sqrt()?;
    Ok(centred.broadcast_div(&(std + eps)?)?)
}

/// Log-probabilities `log softmax(standardize(z, ε) / T)`.
fn standardized_log_probs(logits: &Tensor, t: f64, eps: f64, std: LogitStd) -> Result<Tensor> {
    let z = (standardize_with(logits, eps, std)? / t)?;
    Ok(candle_nn::ops::log_softmax(&z, D::Minus1)?)
}

/// `β` from the teacher's standardised, tempered log-probabilities `log_pt`
/// (or its raw `logits` for [`Beta::RawConfidence`]): fixed, or the mean
/// top-1 probability.
fn beta_value(log_pt: &Tensor, logits: &Tensor, beta: Beta) -> Result<f64> {
    // `detach` plus a host read makes β a constant of the loss.
    let top1 = |log_p: &Tensor| -> Result<f64> {
        let t = log_p.detach().exp()?.max(D::Minus1)?.mean_all()?;
        Ok(f64::from(t.to_dtype(DType::F32)?.to_scalar::<f32>()?))
    };
    match beta {
        Beta::Fixed(b) => Ok(b),
        Beta::Confidence => top1(log_pt),
        Beta::RawConfidence => top1(&candle_nn::ops::log_softmax(
            &logits.to_dtype(DType::F32)?,
            D::Minus1,
        )?),
    }
}

/// CA-KLD distillation term on student and teacher logits `[N, K]`:
///
/// `ẑ = standardize(z, ε) / T`, `P_S = softmax(ẑ_s)`, `P_T = softmax(ẑ_t)`,
/// `loss = T² · (β·KL(P_S‖P_T) + (1−β)·KL(P_T‖P_S))`,
///
/// with batch-mean KLs and `β` from [`Beta`] (for [`Beta::Confidence`],
/// `β = (1/N) Σ_n max_k P_T[n, k]`; for [`Beta::RawConfidence`] the same of
/// `softmax(z_t)`; a constant without gradient). Only the
/// distillation term; the teacher is not detached here.
pub fn ca_kld(student: &Tensor, teacher: &Tensor, t: f64, beta: Beta, eps: f64) -> Result<Tensor> {
    ca_kld_with(student, teacher, t, beta, eps, LogitStd::Population)
}

/// [`ca_kld`] with the standardisation's standard deviation chosen by `std`.
pub fn ca_kld_with(
    student: &Tensor,
    teacher: &Tensor,
    t: f64,
    beta: Beta,
    eps: f64,
    std: LogitStd,
) -> Result<Tensor> {
    check_pair(student, teacher)?;
    check_temperature(t)?;
    beta.check()?;
    let log_ps = standardized_log_probs(student, t, eps, std)?;
    let log_pt = standardized_log_probs(teacher, t, eps, std)?;
    let b = beta_value(&log_pt, teacher, beta)?;
    let reverse = kl_div(&log_ps, &log_pt)?;
    let forward = kl_div(&log_pt, &log_ps)?;
    let mixed = ((reverse * b)? + (forward * (1.0 - b))?)?;
    Ok((mixed * (t * t))?)
}

/// The value `β` takes in [`ca_kld`] for this teacher batch (for logging): the fixed
/// value, or `(1/N) Σ_n max_k softmax(standardize(z_t, ε) / T)[n, k]`.
pub fn ca_kld_beta(teacher: &Tensor, t: f64, beta: Beta, eps: f64) -> Result<f64> {
    check_logits(teacher, "teacher logits")?;
    check_temperature(t)?;
    check_eps(eps)?;
    beta.check()?;
    match beta {
        Beta::Fixed(b) => Ok(b),
        _ => beta_value(
            &standardized_log_probs(teacher, t, eps, LogitStd::Population)?,
            teacher,
            beta,
        ),
    }
}
