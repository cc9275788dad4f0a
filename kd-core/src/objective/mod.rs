//! [`Objective`]: a training objective as a weighted sum of loss terms, on the
//! logits and on named intermediate features of a student and a frozen teacher,
//! and [`ObjectiveLoss`], an objective bound to a pair of models (feature names
//! checked, FitNets regressors built and seeded).
//!
//! ```text
//! L = Σ_i w_i · term_i
//! logit terms    ce   CE(z_s, y)
//!                kd   T² · KL(p_T ‖ p_S)                         (Hinton)
//!                ca-kld  T² · (β·KL(P_S‖P_T) + (1−β)·KL(P_T‖P_S))  (standardised logits)
//!                dkd  min(epoch/warm-up, 1) · (α·TCKD + β·NCKD)
//! feature terms  fitnet  Σ_pairs mean((r(f_s) − f_t)²)            (trainable regressor r)
//!                at   Σ_pairs mean((A(f_s) − A(f_t))²)            (attention maps)
//!                rkd  Σ_pairs w_D·Huber(ψ_D) + w_A·Huber(ψ_A)      (relations in the batch)
//! ```
//!
//! The project-wide `L = α·KD + (1−α)·CE` is the objective `ce:(1−α) + kd:α`
//! ([`Objective::from`] a [`LossConfig`]); the feature methods add their term to
//! the task loss, `ce:1 + at:1000`, as their papers do.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::losses::ca_kld::check_eps;
use crate::losses::kl::check_temperature;
use crate::losses::{
    AttentionConfig, Beta, DkdConfig, FitNetConfig, LogitStd, LossConfig, RkdConfig, DEFAULT_EPS,
    DEFAULT_TEMPERATURE,
};
use crate::{KdError, Result};

mod bound;
mod spec;

pub use bound::{LossParts, ObjectiveLoss, REGRESSOR_SALT};
pub use spec::{parse_feature_pairs, TermParams};

/// A student feature matched with a teacher feature, by the names of
/// [`crate::ModelOutput::features`]. Written `s.conv2=t.conv2` ([`FromStr`] also reads
/// `conv2=conv2` and `conv2`, the same name on both sides).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FeaturePair {
    /// Name of the student's feature.
    pub student: String,
    /// Name of the teacher's feature.
    pub teacher: String,
}

impl FeaturePair {
    /// The pair `s.student=t.teacher`.
    pub fn new(student: impl Into<String>, teacher: impl Into<String>) -> Self {
        Self {
            student: student.into(),
            teacher: teacher.into(),
        }
    }
}

impl fmt::Display for FeaturePair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s.{}=t.{}", self.student, self.teacher)
    }
}

impl FromStr for FeaturePair {
    type Err = KdError;

    /// `s.NAME=t.NAME`, `NAME=NAME` or `NAME`; the `s.` / `t.` prefixes are optional.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            KdError::InvalidConfig(format!(
                "feature pair `{s}` is not of the form s.NAME=t.NAME (or NAME for the same name on both sides)"
            ))
        };
        let (student, teacher) = match s.split_once('=') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (s.trim(), s.trim()),
        };
        let student = student.strip_prefix("s.").unwrap_or(student);
        let teacher = teacher.strip_prefix("t.").unwrap_or(teacher);
        if student.is_empty() || teacher.is_empty() || teacher.contains('=') {
            return Err(bad());
        }
        Ok(Self::new(student, teacher))
    }
}

fn default_eps() -> f64 {
    DEFAULT_EPS
}
fn default_bn_momentum() -> f64 {
    FitNetConfig::default().bn_momentum
}
fn default_bn_eps() -> f64 {
    FitNetConfig::default().bn_eps
}
fn default_at_p() -> f64 {
    AttentionConfig::default().p
}
fn default_rkd_distance() -> f64 {
    RkdConfig::default().distance_weight
}
fn default_rkd_angle() -> f64 {
    RkdConfig::default().angle_weight
}
fn default_dkd_alpha() -> f64 {
    DkdConfig::default().alpha
}
fn default_dkd_beta() -> f64 {
    DkdConfig::default().beta
}
fn default_dkd_warmup() -> usize {
    DkdConfig::default().warmup_epochs
}
fn default_temperature() -> f64 {
    DEFAULT_TEMPERATURE
}

/// One unweighted loss term; serialised with a `kind` tag, e.g.
/// `{"kind": "at", "pairs": [{"student": "conv2", "teacher": "conv2"}], "p": 2.0}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Term {
    /// `CE(z_s, y)`, see [`cross_entropy`](crate::losses::cross_entropy).
    Ce,
    /// Hinton's `T² · KL(p_T ‖ p_S)`, see [`hinton_kd`](crate::losses::hinton_kd).
    Kd {
        /// Softmax temperature `T > 0`.
        #[serde(default = "default_temperature")]
        temperature: f64,
    },
    /// CA-KLD on standardised logits, see [`ca_kld()`](crate::losses::ca_kld()).
    CaKld {
        /// Temperature `T > 0`.
        #[serde(default = "default_temperature")]
        temperature: f64,
        /// Mix of reverse and forward KL.
        #[serde(default)]
        beta: Beta,
        /// `ε > 0` of the standardisation.
        #[serde(default = "default_eps")]
        eps: f64,
        /// Population (default) or sample standard deviation.
        #[serde(default)]
        std: LogitStd,
    },
    /// Decoupled KD, `min(epoch / warmup_epochs, 1) · (α·TCKD + β·NCKD)`, see
    /// [`dkd_terms`](crate::losses::dkd_terms); `epoch` is 1-based and `warmup_epochs = 0` disables the warm-up.
    Dkd {
        /// Weight `α ≥ 0` of TCKD (the paper's name, not the project-wide α).
        #[serde(default = "default_dkd_alpha")]
        alpha: f64,
        /// Weight `β ≥ 0` of NCKD.
        #[serde(default = "default_dkd_beta")]
        beta: f64,
        /// Temperature `T > 0`.
        #[serde(default = "default_temperature")]
        temperature: f64,
        /// Epochs of linear warm-up.
        #[serde(default = "default_dkd_warmup")]
        warmup_epochs: usize,
    },
    /// FitNets hints `Σ_pairs mean((r(f_s) − f_t)²)`, one trainable regressor `r` per
    /// pair (1×1 conv + BatchNorm + ReLU for maps, linear for vectors), see
    /// [`FitNetRegressor`](crate::losses::FitNetRegressor).
    Fitnet {
        /// Student/teacher features; maps need equal `H, W`.
        pairs: Vec<FeaturePair>,
        /// Momentum of the regressor's BatchNorm running statistics.
        #[serde(default = "default_bn_momentum")]
        bn_momentum: f64,
        /// `ε` of the regressor's BatchNorm.
        #[serde(default = "default_bn_eps")]
        bn_eps: f64,
    },
    /// Attention transfer `Σ_pairs mean((A(f_s) − A(f_t))²)` on feature maps
    /// `[N, C, H, W]`, see [`at_loss`](crate::losses::at_loss).
    At {
        /// Student/teacher feature maps.
        pairs: Vec<FeaturePair>,
        /// Exponent `p ≥ 1` of `|f|^p`.
        #[serde(default = "default_at_p")]
        p: f64,
    },
    /// Relational KD `Σ_pairs w_D·Huber(ψ_D^S, ψ_D^T) + w_A·Huber(ψ_A^S, ψ_A^T)` on
    /// the samples of the batch, see [`rkd_loss`](crate::losses::rkd_loss).
    Rkd {
        /// Student/teacher embeddings (any shape `[N, …]`, widths may differ).
        pairs: Vec<FeaturePair>,
        /// Weight `w_D` of the distance loss.
        #[serde(default = "default_rkd_distance")]
        distance_weight: f64,
        /// Weight `w_A` of the angle loss.
        #[serde(default = "default_rkd_angle")]
        angle_weight: f64,
    },
}

impl Term {
    /// The short name used in loss specifications and logs: `ce`, `kd`, `ca-kld`,
    /// `dkd`, `fitnet`, `at`, `rkd`.
    pub fn name(&self) -> &'static str {
        match self {
            Term::Ce => "ce",
            Term::Kd { .. } => "kd",
            Term::CaKld { .. } => "ca-kld",
            Term::Dkd { .. } => "dkd",
            Term::Fitnet { .. } => "fitnet",
            Term::At { .. } => "at",
            Term::Rkd { .. } => "rkd",
        }
    }

    /// The feature pairs of a feature term; empty for a logit term.
    pub fn pairs(&self) -> &[FeaturePair] {
        match self {
            Term::Fitnet { pairs, .. } | Term::At { pairs, .. } | Term::Rkd { pairs, .. } => pairs,
            _ => &[],
        }
    }

    /// Whether the term compares intermediate features (fitnet, at, rkd).
    pub fn is_feature_term(&self) -> bool {
        matches!(
            self,
            Term::Fitnet { .. } | Term::At { .. } | Term::Rkd { .. }
        )
    }

    /// Whether the term needs the teacher (all but `ce`).
    pub fn needs_teacher(&self) -> bool {
        !matches!(self, Term::Ce)
    }

    /// Checks the hyper-parameters (NaN rejected everywhere) and, for a feature
    /// term, at least one pair.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Term::Ce => Ok(()),
            Term::Kd { temperature } => check_temperature(temperature),
            Term::CaKld {
                temperature,
                beta,
                eps,
                ..
            } => {
                check_temperature(temperature)?;
                beta.check()?;
                check_eps(eps)
            }
            Term::Dkd {
                alpha,
                beta,
                temperature,
                warmup_epochs,
            } => DkdConfig {
                alpha,
                beta,
                temperature,
                warmup_epochs,
            }
            .validate(),
            Term::Fitnet {
                ref pairs,
                bn_momentum,
                bn_eps,
            } => {
                check_pairs(self.name(), pairs)?;
                FitNetConfig {
                    weight: 1.0,
                    bn_momentum,
                    bn_eps,
                }
                .validate()
            }
            Term::At { ref pairs, p } => {
                check_pairs(self.name(), pairs)?;
                AttentionConfig { p, weight: 1.0 }.validate()
            }
            Term::Rkd {
                ref pairs,
                distance_weight,
                angle_weight,
            } => {
                check_pairs(self.name(), pairs)?;
                RkdConfig {
                    distance_weight,
                    angle_weight,
                }
                .validate()
            }
        }
    }
}

fn check_pairs(name: &str, pairs: &[FeaturePair]) -> Result<()> {
    if pairs.is_empty() {
        return Err(KdError::InvalidConfig(format!(
            "the {name} term needs at least one feature pair"
        )));
    }
    Ok(())
}

/// A term with its weight in the sum; serialised flat,
/// `{"weight": 0.9, "kind": "kd", "temperature": 4.0}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightedTerm {
    /// Weight `w ≥ 0` of the term (a term of weight 0 is not computed).
    pub weight: f64,
    /// The term.
    #[serde(flatten)]
    pub term: Term,
}

/// A complete training objective `L = Σ_i w_i · term_i`, as serde data
/// (`{"terms": [...]}`, see [`WeightedTerm`]).
///
/// Displayed as its loss specification, e.g. `ce:0.1+kd:0.9` or `ce:1+at:1000`
/// (weights rounded to 12 significant digits).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    /// The terms, in the order they are summed.
    pub terms: Vec<WeightedTerm>,
}

impl Objective {
    /// An objective from `(weight, term)` pairs.
    pub fn new(terms: impl IntoIterator<Item = (f64, Term)>) -> Self {
        Self {
            terms: terms
                .into_iter()
                .map(|(weight, term)| WeightedTerm { weight, term })
                .collect(),
        }
    }

    /// Checks every term and weight: weights finite and `≥ 0` (NaN rejected), at
    /// least one weight `> 0`, each kind at most once.
    pub fn validate(&self) -> Result<()> {
        if self.terms.is_empty() {
            return Err(KdError::InvalidConfig(
                "the objective has no loss term".into(),
            ));
        }
        let mut seen = Vec::new();
        for t in &self.terms {
            let name = t.term.name();
            if !(t.weight.is_finite() && t.weight >= 0.0) {
                return Err(KdError::InvalidConfig(format!(
                    "weight of {name} must be finite and >= 0, got {}",
                    t.weight
                )));
            }
            if seen.contains(&name) {
                return Err(KdError::InvalidConfig(format!(
                    "{name} appears twice in the objective"
                )));
            }
            seen.push(name);
            t.term.validate()?;
        }
        if self.active().next().is_none() {
            return Err(KdError::InvalidConfig(
                "every weight of the objective is 0, leaving no loss term".into(),
            ));
        }
        Ok(())
    }

    /// The terms of non-zero weight.
    pub(crate) fn active(&self) -> impl Iterator<Item = &WeightedTerm> {
        self.terms.iter().filter(|t| t.weight > 0.0)
    }

    /// Whether a term of non-zero weight needs the teacher.
    pub fn needs_teacher(&self) -> bool {
        self.active().any(|t| t.term.needs_teacher())
    }

    /// Whether a term of non-zero weight compares intermediate features: the
    /// teacher then runs on every batch (its logits cannot come from a table).
    pub fn needs_features(&self) -> bool {
        self.active().any(|t| t.term.is_feature_term())
    }

    /// The [`LossConfig`] this objective equals exactly, if any: `ce:1`,
    /// `ce:(1−α) + kd:α`, `ce:(1−α) + ca-kld:α` (the CE weight bit-equal to `1 − α`,
    /// a missing CE term counting as weight 0). [`ObjectiveLoss`] computes
    /// these through [`LossConfig::loss`], whose fused sum differs from the
    /// sum of terms in its last bits: kept so that results made before the
    /// general objective existed are reproduced bit for bit (and so their
    /// epochs report no per-term figures).
    pub fn as_loss_config(&self) -> Option<LossConfig> {
        let mut ce = 0.0;
        let mut distill = None;
        for t in &self.terms {
            match t.term {
                Term::Ce => ce = t.weight,
                Term::Kd { .. } | Term::CaKld { .. } if distill.is_none() => {
                    distill = Some((t.weight, &t.term));
                }
                _ => return None,
            }
        }
        let cfg = match distill {
            None if ce == 1.0 => LossConfig::CrossEntropy,
            None => return None,
            Some((alpha, _)) if !(0.0..=1.0).contains(&alpha) || ce != 1.0 - alpha => return None,
            Some((alpha, &Term::Kd { temperature })) => LossConfig::Hinton { temperature, alpha },
            Some((
                alpha,
                &Term::CaKld {
                    temperature,
                    beta,
                    eps,
                    std,
                },
            )) => LossConfig::CaKld {
                temperature,
                alpha,
                beta,
                eps,
                std,
            },
            Some(_) => return None,
        };
        Some(cfg)
    }
}

impl From<LossConfig> for Objective {
    /// `ce:1`, or `ce:(1−α) + kd:α` / `ce:(1−α) + ca-kld:α`.
    fn from(loss: LossConfig) -> Self {
        match loss {
            LossConfig::CrossEntropy => Objective::new([(1.0, Term::Ce)]),
            LossConfig::Hinton { temperature, alpha } => {
                Objective::new([(1.0 - alpha, Term::Ce), (alpha, Term::Kd { temperature })])
            }
            LossConfig::CaKld {
                temperature,
                alpha,
                beta,
                eps,
                std,
            } => Objective::new([
                (1.0 - alpha, Term::Ce),
                (
                    alpha,
                    Term::CaKld {
                        temperature,
                        beta,
                        eps,
                        std,
                    },
                ),
            ]),
        }
    }
}

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            // Rounded to 12 significant digits: `1 − 0.9` prints as 0.1.
            let w: f64 = format!("{:.11e}", t.weight).parse().unwrap_or(t.weight);
            write!(f, "{}:{w}", t.term.name())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_pairs_parse_and_print() {
        let p: FeaturePair = "s.conv2=t.conv3".parse().unwrap();
        assert_eq!(p, FeaturePair::new("conv2", "conv3"));
        assert_eq!(p.to_string(), "s.conv2=t.conv3");
        assert_eq!(
            "fc1".parse::<FeaturePair>().unwrap(),
            FeaturePair::new("fc1", "fc1")
        );
        assert_eq!(
            "fc1=fc2".parse::<FeaturePair>().unwrap(),
            FeaturePair::new("fc1", "fc2")
        );
        for bad in ["", "=", "s.=t.x", "a=b=c"] {
            assert!(bad.parse::<FeaturePair>().is_err(), "{bad}");
        }
    }

    #[test]
    fn loss_configs_round_trip_exactly() {
        for cfg in [
            LossConfig::CrossEntropy,
            LossConfig::Hinton {
                temperature: 4.0,
                alpha: 0.9,
            },
            LossConfig::CaKld {
                temperature: 2.0,
                alpha: 0.7,
                beta: Beta::Fixed(0.3),
                eps: 1e-7,
                std: LogitStd::Sample,
            },
            LossConfig::Hinton {
                temperature: 4.0,
                alpha: 1.0,
            },
        ] {
            let obj = Objective::from(cfg);
            assert_eq!(obj.as_loss_config(), Some(cfg), "{obj}");
        }
        // 1 − 0.9 is not 0.1 in binary: an explicit `ce:0.1 + kd:0.9` takes the general path.
        let obj = Objective::new([(0.1, Term::Ce), (0.9, Term::Kd { temperature: 4.0 })]);
        assert_eq!(obj.as_loss_config(), None);
        let obj = Objective::new([(1.0, Term::Ce), (1.0, Term::Kd { temperature: 4.0 })]);
        assert_eq!(obj.as_loss_config(), None);
        assert_eq!(obj.to_string(), "ce:1+kd:1");
        let obj = Objective::from(LossConfig::Hinton {
            temperature: 4.0,
            alpha: 0.9,
        });
        assert_eq!(obj.to_string(), "ce:0.1+kd:0.9");
    }

    #[test]
    fn validation_rejects_bad_weights_and_duplicates() {
        let at = |w: f64| {
            Objective::new([
                (1.0, Term::Ce),
                (
                    w,
                    Term::At {
                        pairs: vec![FeaturePair::new("conv2", "conv2")],
                        p: 2.0,
                    },
                ),
            ])
        };
        assert!(at(1000.0).validate().is_ok());
        for w in [f64::NAN, -1.0, f64::INFINITY] {
            let e = at(w).validate().unwrap_err().to_string();
            assert!(e.contains("weight of at"), "{e}");
        }
        let dup = Objective::new([(1.0, Term::Ce), (0.5, Term::Ce)]);
        assert!(dup.validate().unwrap_err().to_string().contains("twice"));
        let zero = Objective::new([(0.0, Term::Ce)]);
        assert!(zero.validate().is_err());
        let no_pairs = Objective::new([(
            1.0,
            Term::Rkd {
                pairs: vec![],
                distance_weight: 25.0,
                angle_weight: 50.0,
            },
        )]);
        assert!(no_pairs.validate().is_err());
    }

    #[test]
    fn serde_round_trip_with_defaults() {
        let json = r#"{"terms": [{"weight": 1.0, "kind": "ce"},
            {"weight": 100.0, "kind": "fitnet", "pairs": [{"student": "conv2", "teacher": "conv2"}]},
            {"weight": 1.0, "kind": "dkd"}]}"#;
        let obj: Objective = serde_json::from_str(json).unwrap();
        assert_eq!(
            obj.terms[1].term,
            Term::Fitnet {
                pairs: vec![FeaturePair::new("conv2", "conv2")],
                bn_momentum: 0.1,
                bn_eps: 1e-5,
            }
        );
        assert_eq!(
            obj.terms[2].term,
            Term::Dkd {
                alpha: 1.0,
                beta: 8.0,
                temperature: 4.0,
                warmup_epochs: 0,
            }
        );
        let back: Objective = serde_json::from_str(&serde_json::to_string(&obj).unwrap()).unwrap();
        assert_eq!(back, obj);
    }
}
