//! [`ObjectiveLoss`]: an [`Objective`] bound to a student and a teacher
//! (feature names checked, FitNets regressors built and seeded), computing
//! the objective batch by batch.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use super::{FeaturePair, Objective, Term, WeightedTerm};
use crate::init::{seeded_varmap, Init, ParamSpec};
use crate::losses::{
    at_loss, ca_kld_with, cross_entropy, dkd_loss, fitnet_loss, hinton_kd, rkd_loss, DkdConfig,
    FitNetConfig, FitNetRegressor, LossConfig, RkdConfig,
};
use crate::network::{ModelOutput, Network};
use crate::{KdError, Result};

/// The value of an objective on one batch: the total and each weighted term.
#[derive(Clone, Debug)]
pub struct LossParts {
    /// `Σ_i w_i · term_i`, the scalar to differentiate.
    pub total: Tensor,
    /// `(name, w_i · term_i)` for the terms of non-zero weight, in objective order.
    pub terms: Vec<(&'static str, Tensor)>,
}

/// Salt of the regressors' initialisation stream (`seed ^ REGRESSOR_SALT`).
pub const REGRESSOR_SALT: u64 = 0xF17_0E55;

/// An [`Objective`] bound to a student and a teacher: every feature name checked
/// against the models, and the FitNets regressors built, with their own
/// [`VarMap`] (never part of the student's checkpoint) and a seeded
/// PyTorch-default initialisation.
///
/// Regressor variables are named `fitnet<i>.conv.weight`, `fitnet<i>.bn.weight`,
/// `fitnet<i>.bn.bias` (maps) or `fitnet<i>.linear.weight`, `fitnet<i>.linear.bias`
/// (vectors), `i` the pair's position; they train with the student
/// ([`ObjectiveLoss::trainable_vars`]).
pub struct ObjectiveLoss {
    objective: Objective,
    legacy: Option<LossConfig>,
    regressors: Vec<FitNetRegressor>,
    varmap: VarMap,
}

impl ObjectiveLoss {
    /// Validates `objective`, checks its feature names and shapes on one forward
    /// pass of each model over `probe` (eval mode; a few samples `[n, C, H, W]`,
    /// needed only when the objective has a feature term),
    /// and builds the regressors, initialised from `seed ^ REGRESSOR_SALT`.
    ///
    /// Errors: [`KdError::InvalidConfig`] for a missing teacher or an unknown
    /// feature name (the message lists the model's features),
    /// [`KdError::ShapeMismatch`] for a pair the term cannot compare.
    pub fn new(
        objective: &Objective,
        student: &dyn Network,
        teacher: Option<&dyn Network>,
        probe: Option<&Tensor>,
        seed: u64,
    ) -> Result<Self> {
        objective.validate()?;
        let legacy = objective.as_loss_config();
        let mut varmap = VarMap::new();
        let mut regressors = Vec::new();
        if objective.needs_teacher() && teacher.is_none() {
            return Err(KdError::InvalidConfig(format!(
                "the objective {objective} needs a teacher"
            )));
        }
        let feature_terms: Vec<&WeightedTerm> = objective
            .active()
            .filter(|t| t.term.is_feature_term())
            .collect();
        if let (false, Some(teacher)) = (feature_terms.is_empty(), teacher) {
            let probe = probe.ok_or_else(|| {
                KdError::InvalidConfig(format!(
                    "the objective {objective} compares features: it needs a probe batch"
                ))
            })?;
            let s_out = student.forward_t(probe, false)?;
            let t_out = teacher.forward_t(probe, false)?;
            for wt in &feature_terms {
                for pair in wt.term.pairs() {
                    let s = find_feature(&s_out, &pair.student, "student")?;
                    let t = find_feature(&t_out, &pair.teacher, "teacher")?;
                    check_pair_shapes(&wt.term, pair, s, t)?;
                }
            }
            if let Some(Term::Fitnet {
                pairs,
                bn_momentum,
                bn_eps,
            }) = feature_terms
                .iter()
                .map(|t| &t.term)
                .find(|t| matches!(t, Term::Fitnet { .. }))
            {
                let cfg = FitNetConfig {
                    weight: 1.0,
                    bn_momentum: *bn_momentum,
                    bn_eps: *bn_eps,
                };
                let shapes: Vec<(Vec<usize>, Vec<usize>)> = pairs
                    .iter()
                    .map(|p| {
                        Ok((
                            find_feature(&s_out, &p.student, "student")?.dims().to_vec(),
                            find_feature(&t_out, &p.teacher, "teacher")?.dims().to_vec(),
                        ))
                    })
                    .collect::<Result<_>>()?;
                varmap = seeded_regressors(&shapes, seed ^ REGRESSOR_SALT, student.device())?;
                let vb = VarBuilder::from_varmap(&varmap, DType::F32, student.device());
                for (i, p) in pairs.iter().enumerate() {
                    let s = find_feature(&s_out, &p.student, "student")?;
                    let t = find_feature(&t_out, &p.teacher, "teacher")?;
                    regressors.push(FitNetRegressor::for_features(
                        s,
                        t,
                        &cfg,
                        vb.pp(format!("fitnet{i}")),
                    )?);
                }
            }
        }
        Ok(Self {
            objective: objective.clone(),
            legacy,
            regressors,
            varmap,
        })
    }

    /// The objective.
    pub fn objective(&self) -> &Objective {
        &self.objective
    }

    /// The regressors' variables, sorted by name (empty without a fitnet term).
    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        let data = match self.varmap.data().lock() {
            Ok(d) => d,
            Err(poisoned) => poisoned.into_inner(),
        };
        let sorted: BTreeMap<String, Var> =
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        sorted.into_iter().collect()
    }

    /// The objective on one batch: student output (train-mode forward), the
    /// teacher's output (its logits, and its features when
    /// [`Objective::needs_features`]), `u32` labels `[N]`, the 1-based `epoch`
    /// (DKD's warm-up) and whether the regressors run in train mode (batch
    /// statistics, running statistics updated).
    ///
    /// Teacher tensors are detached. Objectives equal to a [`LossConfig`] are
    /// computed by [`LossConfig::loss`] (their `terms` are then empty).
    pub fn loss(
        &mut self,
        student: &ModelOutput,
        teacher: Option<&ModelOutput>,
        labels: &Tensor,
        epoch: usize,
        train: bool,
    ) -> Result<LossParts> {
        if let Some(cfg) = &self.legacy {
            let total = cfg.loss(&student.logits, teacher.map(|t| &t.logits), labels)?;
            return Ok(LossParts {
                total,
                terms: Vec::new(),
            });
        }
        let teacher_out = || {
            teacher.ok_or_else(|| {
                KdError::InvalidConfig(format!(
                    "the objective {} needs the teacher's output, none was given",
                    self.objective
                ))
            })
        };
        let mut terms = Vec::new();
        for wt in self.objective.terms.iter().filter(|t| t.weight > 0.0) {
            let zs = &student.logits;
            let value = match &wt.term {
                Term::Ce => cross_entropy(zs, labels)?,
                Term::Kd { temperature } => {
                    hinton_kd(zs, &teacher_out()?.logits.detach(), *temperature)?
                }
                Term::CaKld {
                    temperature,
                    beta,
                    eps,
                    std,
                } => ca_kld_with(
                    zs,
                    &teacher_out()?.logits.detach(),
                    *temperature,
                    *beta,
                    *eps,
                    *std,
                )?,
                Term::Dkd {
                    alpha,
                    beta,
                    temperature,
                    warmup_epochs,
                } => {
                    let cfg = DkdConfig {
                        alpha: *alpha,
                        beta: *beta,
                        temperature: *temperature,
                        warmup_epochs: *warmup_epochs,
                    };
                    dkd_loss(zs, &teacher_out()?.logits, labels, &cfg, epoch)?
                }
                Term::Fitnet { pairs, .. } => {
                    let t_out = teacher_out()?;
                    let mut total: Option<Tensor> = None;
                    for (pair, regressor) in pairs.iter().zip(self.regressors.iter_mut()) {
                        let s = find_feature(student, &pair.student, "student")?;
                        let t = find_feature(t_out, &pair.teacher, "teacher")?;
                        let hint = fitnet_loss(&regressor.forward_t(s, train)?, t)?;
                        total = Some(match total {
                            None => hint,
                            Some(acc) => (acc + hint)?,
                        });
                    }
                    total.ok_or_else(|| KdError::Other("fitnet: no regressor".into()))?
                }
                Term::At { pairs, p } => {
                    let t_out = teacher_out()?;
                    let tensors = pairs
                        .iter()
                        .map(|pair| {
                            Ok((
                                find_feature(student, &pair.student, "student")?.clone(),
                                find_feature(t_out, &pair.teacher, "teacher")?.clone(),
                            ))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    at_loss(&tensors, *p)?
                }
                Term::Rkd {
                    pairs,
                    distance_weight,
                    angle_weight,
                } => {
                    let t_out = teacher_out()?;
                    let cfg = RkdConfig {
                        distance_weight: *distance_weight,
                        angle_weight: *angle_weight,
                    };
                    let mut total: Option<Tensor> = None;
                    for pair in pairs {
                        let s = find_feature(student, &pair.student, "student")?;
                        let t = find_feature(t_out, &pair.teacher, "teacher")?;
                        let v = rkd_loss(s, t, &cfg)?;
                        total = Some(match total {
                            None => v,
                            Some(acc) => (acc + v)?,
                        });
                    }
                    total.ok_or_else(|| KdError::Other("rkd: no pair".into()))?
                }
            };
            let weighted = if wt.weight == 1.0 {
                value.to_dtype(DType::F32)?
            } else {
                (value.to_dtype(DType::F32)? * wt.weight)?
            };
            terms.push((wt.term.name(), weighted));
        }
        let mut total: Option<Tensor> = None;
        for (_, v) in &terms {
            total = Some(match total {
                None => v.clone(),
                Some(acc) => (acc + v)?,
            });
        }
        // `validate` guarantees a term of non-zero weight.
        let total = total.ok_or_else(|| KdError::InvalidConfig("no loss term".into()))?;
        Ok(LossParts { total, terms })
    }
}

/// The feature `name` of `out`, or an error listing the features it has.
fn find_feature<'a>(out: &'a ModelOutput, name: &str, side: &str) -> Result<&'a Tensor> {
    out.feature(name).ok_or_else(|| {
        let names: Vec<&str> = out.features.iter().map(|(n, _)| n.as_str()).collect();
        KdError::InvalidConfig(format!(
            "the {side} has no feature `{name}`; its features are: {}",
            names.join(", ")
        ))
    })
}

/// Whether `term` can compare this pair of features (shapes from the probe batch).
fn check_pair_shapes(term: &Term, pair: &FeaturePair, s: &Tensor, t: &Tensor) -> Result<()> {
    let (sd, td) = (s.dims(), t.dims());
    let ok = match term {
        Term::At { .. } => sd.len() == 4 && td.len() == 4,
        Term::Fitnet { .. } => {
            (sd.len() == 4 && td.len() == 4 && sd[2..] == td[2..])
                || (sd.len() == 2 && td.len() == 2)
        }
        _ => true,
    };
    if ok {
        return Ok(());
    }
    let need = match term {
        Term::At { .. } => "two feature maps [N, C, H, W]",
        _ => "two feature maps [N, C, H, W] with the same H, W, or two vectors [N, D]",
    };
    Err(KdError::ShapeMismatch(format!(
        "{} pair {pair}: needs {need}, got student {:?} and teacher {:?} (batch dim first)",
        term.name(),
        sd.get(1..).unwrap_or(&[]),
        td.get(1..).unwrap_or(&[])
    )))
}

/// Seeded variables of every regressor parameter: weights and biases from
/// PyTorch's default `U(−1/√fan_in, 1/√fan_in)` (one
/// `ChaCha8Rng::seed_from_u64(seed)` stream consumed in sorted-name order, as
/// the models' own initialisation does), BatchNorm `γ = 1`, `β = 0`.
fn seeded_regressors(
    shapes: &[(Vec<usize>, Vec<usize>)],
    seed: u64,
    device: &Device,
) -> Result<VarMap> {
    let spec = |name: String, shape: Vec<usize>, fan_in: usize, init: Init| ParamSpec {
        name,
        shape,
        fan_in,
        init,
    };
    let mut specs = Vec::new();
    for (i, (s, t)) in shapes.iter().enumerate() {
        let (cs, ct) = (s[1], t[1]);
        if s.len() == 4 {
            specs.push(spec(
                format!("fitnet{i}.conv.weight"),
                vec![ct, cs, 1, 1],
                cs,
                Init::Uniform,
            ));
            specs.push(spec(
                format!("fitnet{i}.bn.weight"),
                vec![ct],
                cs,
                Init::Ones,
            ));
            specs.push(spec(
                format!("fitnet{i}.bn.bias"),
                vec![ct],
                cs,
                Init::Zeros,
            ));
        } else {
            specs.push(spec(
                format!("fitnet{i}.linear.weight"),
                vec![ct, cs],
                cs,
                Init::Uniform,
            ));
            specs.push(spec(
                format!("fitnet{i}.linear.bias"),
                vec![ct],
                cs,
                Init::Uniform,
            ));
        }
    }
    Ok(seeded_varmap(&specs, seed, device)?.0)
}
