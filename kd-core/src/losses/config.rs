//! [`LossConfig`]: a complete training objective, as serde data.

use candle_core::Tensor;

use super::ca_kld::{ca_kld_with, check_eps, Beta, LogitStd};
use super::hinton::hinton_kd;
use super::kl::{check_pair, check_temperature, cross_entropy};
use crate::{KdError, Result};

/// Default `ε` of the logit standardisation in CA-KLD.
pub const DEFAULT_EPS: f64 = 1e-7;

/// Default temperature `T` of the logit distillation terms (kd, ca-kld, dkd).
pub const DEFAULT_TEMPERATURE: f64 = 4.0;

/// Default weight `α` of the distillation term in `α·KD + (1−α)·CE`.
pub const DEFAULT_ALPHA: f64 = 0.9;

fn default_eps() -> f64 {
    DEFAULT_EPS
}

/// A complete training objective on student logits `[N, K]` and `u32` labels `[N]`.
///
/// `α` is always the weight of the distillation term: `L = α·KD + (1−α)·CE`
/// (α = 0 is plain CE, α = 1 pure distillation). Serialised with a `kind` tag, e.g.
/// `{"kind": "ca-kld", "temperature": 4.0, "alpha": 0.9, "beta": "confidence", "eps": 1e-7}`;
/// `beta` defaults to `"confidence"` and `eps` to [`DEFAULT_EPS`].
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LossConfig {
    /// `L = CE(z_s, y)`.
    CrossEntropy,
    /// `L = α · T² · KL(p_T ‖ p_S) + (1−α) · CE(z_s, y)`, see [`hinton_kd`].
    Hinton {
        /// Softmax temperature `T > 0`.
        temperature: f64,
        /// Weight `α ∈ [0, 1]` of the distillation term.
        alpha: f64,
    },
    /// `L = α · CA-KLD(z_s, z_t) + (1−α) · CE(z_s, y)`, see [`ca_kld`].
    CaKld {
        /// Softmax temperature `T > 0` applied to the standardised logits.
        temperature: f64,
        /// Weight `α ∈ [0, 1]` of the distillation term.
        alpha: f64,
        /// Mixing weight between reverse and forward KL.
        #[serde(default)]
        beta: Beta,
        /// `ε > 0` added to the standard deviation in the standardisation.
        #[serde(default = "default_eps")]
        eps: f64,
        /// Population (default) or sample standard deviation.
        #[serde(default)]
        std: LogitStd,
    },
}

impl LossConfig {
    /// Checks the hyper-parameters: `T` finite and `> 0`, `α ∈ [0, 1]`, a fixed `β`
    /// in `[0, 1]`, `ε` finite and `> 0`. NaN is rejected everywhere.
    pub fn validate(&self) -> Result<()> {
        match *self {
            LossConfig::CrossEntropy => Ok(()),
            LossConfig::Hinton { temperature, alpha } => {
                check_temperature(temperature)?;
                check_alpha(alpha)
            }
            LossConfig::CaKld {
                temperature,
                alpha,
                beta,
                eps,
                ..
            } => {
                check_temperature(temperature)?;
                check_alpha(alpha)?;
                beta.check()?;
                check_eps(eps)
            }
        }
    }

    /// The objective named `name` — `ce`, `kd` (also `hinton`) or `ca-kld` —
    /// with these hyper-parameters (ε of CA-KLD: [`DEFAULT_EPS`]), validated.
    pub fn named(name: &str, temperature: f64, alpha: f64, beta: Beta) -> Result<Self> {
        let cfg = match name {
            "ce" => LossConfig::CrossEntropy,
            "kd" | "hinton" => LossConfig::Hinton { temperature, alpha },
            "ca-kld" => LossConfig::CaKld {
                temperature,
                alpha,
                beta,
                eps: DEFAULT_EPS,
                std: LogitStd::Population,
            },
            other => {
                return Err(KdError::InvalidConfig(format!(
                    "unknown loss `{other}` (known: ce, kd, ca-kld)"
                )))
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The same objective with the distillation weight `α` replaced (cross-
    /// entropy is left as it is): `with_alpha(1.0)` is the distillation term
    /// alone.
    pub fn with_alpha(self, alpha: f64) -> Self {
        match self {
            LossConfig::CrossEntropy => LossConfig::CrossEntropy,
            LossConfig::Hinton { temperature, .. } => LossConfig::Hinton { temperature, alpha },
            LossConfig::CaKld {
                temperature,
                beta,
                eps,
                std,
                ..
            } => LossConfig::CaKld {
                temperature,
                alpha,
                beta,
                eps,
                std,
            },
        }
    }

    /// The same objective with CA-KLD's standardisation dividing by the
    /// `std` given (other objectives are returned as they are).
    pub fn with_logit_std(mut self, std: LogitStd) -> Self {
        if let LossConfig::CaKld { std: s, .. } = &mut self {
            *s = std;
        }
        self
    }

    /// Whether [`loss`](Self::loss) needs teacher logits (every distillation objective).
    pub fn needs_teacher(&self) -> bool {
        !matches!(self, LossConfig::CrossEntropy)
    }

    /// Short name for logs and file names: `"ce"`, `"kd"` or `"ca-kld"`.
    pub fn name(&self) -> &'static str {
        match self {
            LossConfig::CrossEntropy => "ce",
            LossConfig::Hinton { .. } => "kd",
            LossConfig::CaKld { .. } => "ca-kld",
        }
    }

    /// The scalar objective `α·KD + (1−α)·CE` for student logits `[N, K]`, optional
    /// teacher logits `[N, K]` and `u32` labels `[N]`.
    ///
    /// The teacher is required when [`needs_teacher`](Self::needs_teacher) is true
    /// (else [`KdError::InvalidConfig`]) and is detached, so gradients reach the
    /// student only. A term whose weight is exactly 0 is not computed.
    pub fn loss(
        &self,
        student: &Tensor,
        teacher: Option<&Tensor>,
        labels: &Tensor,
    ) -> Result<Tensor> {
        self.validate()?;
        let (alpha, kd) = match *self {
            LossConfig::CrossEntropy => return cross_entropy(student, labels),
            LossConfig::Hinton { temperature, alpha } => {
                let teacher = self.teacher(student, teacher)?;
                let kd = (alpha > 0.0)
                    .then(|| hinton_kd(student, &teacher, temperature))
                    .transpose()?;
                (alpha, kd)
            }
            LossConfig::CaKld {
                temperature,
                alpha,
                beta,
                eps,
                std,
            } => {
                let teacher = self.teacher(student, teacher)?;
                let kd = (alpha > 0.0)
                    .then(|| ca_kld_with(student, &teacher, temperature, beta, eps, std))
                    .transpose()?;
                (alpha, kd)
            }
        };
        let ce = (alpha < 1.0)
            .then(|| cross_entropy(student, labels))
            .transpose()?;
        match (kd, ce) {
            (Some(kd), Some(ce)) => Ok(((kd * alpha)? + (ce * (1.0 - alpha))?)?),
            (Some(kd), None) => Ok(kd),
            (None, Some(ce)) => Ok(ce),
            // `validate` guarantees α ∈ [0, 1], so at least one weight is non-zero.
            (None, None) => Err(KdError::InvalidConfig(format!(
                "alpha {alpha} leaves no loss term"
            ))),
        }
    }

    /// The detached teacher logits, or an error naming the objective that needs them.
    fn teacher(&self, student: &Tensor, teacher: Option<&Tensor>) -> Result<Tensor> {
        let teacher = teacher.ok_or_else(|| {
            KdError::InvalidConfig(format!(
                "loss '{}' needs teacher logits, none were given",
                self.name()
            ))
        })?;
        check_pair(student, teacher)?;
        Ok(teacher.detach())
    }
}

/// Rejects an `α` outside `[0, 1]` (or NaN).
fn check_alpha(alpha: f64) -> Result<()> {
    if (0.0..=1.0).contains(&alpha) {
        Ok(())
    } else {
        Err(KdError::InvalidConfig(format!(
            "alpha must lie in [0, 1], got {alpha}"
        )))
    }
}
