//! The loss-specification grammar: `NAME[:WEIGHT]` terms joined by `,` or
//! `+` (`kd`, `ce:0.1,kd:0.9`, `kd+at:1000`), parsed into an [`Objective`]
//! ([`Objective::parse`], [`FromStr`]); its inverse is the objective's
//! `Display`.
//!
//! A term without a weight takes its default: `kd` / `ca-kld` α, `dkd` 1,
//! `fitnet` [`FitNetConfig`]'s weight (100), `at` [`AttentionConfig`]'s
//! (1000), `rkd` 1, and `ce` `1 − α` when a `kd` or `ca-kld` term is
//! present, else 1. CE is added with that default weight when the
//! specification does not name it (write `ce:0` to leave it out), so `kd` is
//! the project's `α·KD + (1−α)·CE` and `at` is `CE + 1000·AT`.
//!
//! Feature terms come out of the parser without feature pairs: fill them with
//! [`Objective::resolve_feature_pairs`] (the pairs given by the user, checked
//! against the models' features, or each term's defaults).

use std::str::FromStr;

use super::{FeaturePair, Objective, Term};
use crate::losses::{
    AttentionConfig, Beta, DkdConfig, FitNetConfig, LogitStd, RkdConfig, DEFAULT_ALPHA,
    DEFAULT_EPS, DEFAULT_TEMPERATURE,
};
use crate::network::FeatureShapes;
use crate::{KdError, Result};

/// Hyper-parameters of the terms a specification names, and α, the default
/// weight of `kd` / `ca-kld`. [`TermParams::default`] takes each loss's own
/// defaults, the one place they are written.
#[derive(Clone, Debug, PartialEq)]
pub struct TermParams {
    /// α: the default weight of kd / ca-kld, and `1 − α` that of CE beside them.
    pub alpha: f64,
    /// Temperature of kd, ca-kld and dkd.
    pub temperature: f64,
    /// CA-KLD's β.
    pub beta: Beta,
    /// CA-KLD's standard deviation of the logit standardisation.
    pub std: LogitStd,
    /// DKD's weight of the target-class term (TCKD).
    pub dkd_alpha: f64,
    /// DKD's weight of the non-target term (NCKD).
    pub dkd_beta: f64,
    /// DKD's warm-up epochs (0: none).
    pub dkd_warmup: usize,
    /// Exponent of attention transfer.
    pub at_p: f64,
    /// RKD's distance weight.
    pub rkd_distance: f64,
    /// RKD's angle weight.
    pub rkd_angle: f64,
}

impl Default for TermParams {
    fn default() -> Self {
        let dkd = DkdConfig::default();
        let rkd = RkdConfig::default();
        Self {
            alpha: DEFAULT_ALPHA,
            temperature: DEFAULT_TEMPERATURE,
            beta: Beta::default(),
            std: LogitStd::default(),
            dkd_alpha: dkd.alpha,
            dkd_beta: dkd.beta,
            dkd_warmup: dkd.warmup_epochs,
            at_p: AttentionConfig::default().p,
            rkd_distance: rkd.distance_weight,
            rkd_angle: rkd.angle_weight,
        }
    }
}

/// The names of the grammar, in the order error messages list them.
const KNOWN: &str = "ce, kd, ca-kld, dkd, fitnet, at, rkd";

/// A term of `params` by its name (`hinton` and `fitnets` are aliases),
/// feature terms without pairs.
fn term(name: &str, params: &TermParams) -> Result<Term> {
    Ok(match name {
        "ce" => Term::Ce,
        "kd" | "hinton" => Term::Kd {
            temperature: params.temperature,
        },
        "ca-kld" => Term::CaKld {
            temperature: params.temperature,
            beta: params.beta,
            eps: DEFAULT_EPS,
            std: params.std,
        },
        "dkd" => Term::Dkd {
            alpha: params.dkd_alpha,
            beta: params.dkd_beta,
            temperature: params.temperature,
            warmup_epochs: params.dkd_warmup,
        },
        "fitnet" | "fitnets" => {
            let d = FitNetConfig::default();
            Term::Fitnet {
                pairs: Vec::new(),
                bn_momentum: d.bn_momentum,
                bn_eps: d.bn_eps,
            }
        }
        "at" => Term::At {
            pairs: Vec::new(),
            p: params.at_p,
        },
        "rkd" => Term::Rkd {
            pairs: Vec::new(),
            distance_weight: params.rkd_distance,
            angle_weight: params.rkd_angle,
        },
        other => {
            return Err(KdError::InvalidConfig(format!(
                "unknown loss `{other}` (known: {KNOWN})"
            )))
        }
    })
}

/// The weight a term takes when the specification gives none.
fn default_weight(term: &Term, alpha: f64, has_alpha_term: bool) -> f64 {
    match term {
        Term::Ce if has_alpha_term => 1.0 - alpha,
        Term::Ce => 1.0,
        Term::Kd { .. } | Term::CaKld { .. } => alpha,
        Term::Dkd { .. } | Term::Rkd { .. } => 1.0,
        Term::Fitnet { .. } => FitNetConfig::default().weight,
        Term::At { .. } => AttentionConfig::default().weight,
    }
}

impl Objective {
    /// Parses a loss specification (see the module documentation) with the
    /// hyper-parameters of `params`. The result is validated but for the
    /// feature pairs, which [`Objective::resolve_feature_pairs`] fills.
    ///
    /// Errors name the problem: an unknown name, a weight that is not a
    /// finite number `≥ 0`, an empty term, a name given twice, every weight 0,
    /// α outside `[0, 1]`.
    pub fn parse(spec: &str, params: &TermParams) -> Result<Objective> {
        let bad = |msg: String| KdError::InvalidConfig(msg);
        let alpha = params.alpha;
        if !(0.0..=1.0).contains(&alpha) {
            return Err(bad(format!("alpha must lie in [0, 1], got {alpha}")));
        }
        let mut given: Vec<(Term, Option<f64>)> = Vec::new();
        for token in spec.split([',', '+']) {
            let token = token.trim();
            if token.is_empty() {
                return Err(bad(format!(
                    "empty term in loss `{spec}` (write NAME[:WEIGHT] terms separated by `,` or `+`)"
                )));
            }
            let (name, weight) = match token.split_once(':') {
                Some((n, w)) => {
                    let v: f64 = w.trim().parse().map_err(|_| {
                        bad(format!(
                            "weight `{w}` of `{n}` in loss `{spec}` is not a number"
                        ))
                    })?;
                    if !(v.is_finite() && v >= 0.0) {
                        return Err(bad(format!(
                            "weight of `{n}` in loss `{spec}` must be finite and >= 0, got {w}"
                        )));
                    }
                    (n.trim(), Some(v))
                }
                None => (token, None),
            };
            let t = term(name, params)?;
            if given.iter().any(|(g, _)| g.name() == t.name()) {
                return Err(bad(format!(
                    "`{}` appears twice in loss `{spec}`",
                    t.name()
                )));
            }
            given.push((t, weight));
        }
        let has_alpha_term = given
            .iter()
            .any(|(t, _)| matches!(t, Term::Kd { .. } | Term::CaKld { .. }));
        if !given.iter().any(|(t, _)| *t == Term::Ce) {
            given.insert(0, (Term::Ce, None));
        }
        // CE first, then the specification's order.
        given.sort_by_key(|(t, _)| *t != Term::Ce);
        let objective = Objective::new(given.into_iter().map(|(t, w)| {
            let weight = w.unwrap_or_else(|| default_weight(&t, alpha, has_alpha_term));
            (weight, t)
        }));
        if objective.terms.iter().all(|t| t.weight == 0.0) {
            return Err(bad(format!(
                "every weight of loss `{spec}` is 0, leaving no loss term"
            )));
        }
        for t in &objective.terms {
            if !t.term.is_feature_term() {
                t.term.validate()?;
            }
        }
        Ok(objective)
    }

    /// Sets the feature pairs of every feature term: `given` (each name
    /// checked against the features of the student and of the teacher), or
    /// by default — at: every feature map the two share by name; fitnet: the
    /// last shared map with the same `H, W` (else the first shared vector);
    /// rkd: the student's last feature with the teacher's last feature.
    /// Then validates the whole objective.
    ///
    /// `student` and `teacher` are the features' shapes without the batch
    /// dimension ([`crate::feature_shapes`]).
    pub fn resolve_feature_pairs(
        &mut self,
        given: Option<&[FeaturePair]>,
        student: &FeatureShapes,
        teacher: &FeatureShapes,
    ) -> Result<()> {
        if let Some(pairs) = given {
            for p in pairs {
                check_name(student, &p.student, "student")?;
                check_name(teacher, &p.teacher, "teacher")?;
            }
        }
        for wt in &mut self.terms {
            let name = wt.term.name();
            let slot = match &mut wt.term {
                Term::Fitnet { pairs, .. } | Term::At { pairs, .. } | Term::Rkd { pairs, .. } => {
                    pairs
                }
                _ => continue,
            };
            *slot = match given {
                Some(pairs) => pairs.to_vec(),
                None => default_pairs(name, student, teacher)?,
            };
        }
        self.validate()
    }
}

impl FromStr for Objective {
    type Err = KdError;

    /// [`Objective::parse`] with [`TermParams::default`].
    fn from_str(spec: &str) -> Result<Self> {
        Objective::parse(spec, &TermParams::default())
    }
}

/// Parses a list of feature pairs, `s.NAME=t.NAME` joined by `,` (or `+`);
/// `NAME` alone pairs the same name on both sides. Repeated pairs count once.
pub fn parse_feature_pairs(s: &str) -> Result<Vec<FeaturePair>> {
    let mut pairs = Vec::new();
    for token in s.split([',', '+']) {
        let pair: FeaturePair = token.trim().parse()?;
        if !pairs.contains(&pair) {
            pairs.push(pair);
        }
    }
    Ok(pairs)
}

fn describe(features: &FeatureShapes) -> String {
    features
        .iter()
        .map(|(n, d)| format!("{n} {d:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_name(features: &FeatureShapes, name: &str, side: &str) -> Result<()> {
    if !features.iter().any(|(n, _)| n == name) {
        return Err(KdError::InvalidConfig(format!(
            "the {side} has no feature `{name}`; its features are: {}",
            describe(features)
        )));
    }
    Ok(())
}

/// The default pairs of the feature term `name` (see
/// [`Objective::resolve_feature_pairs`]).
fn default_pairs(name: &str, s: &FeatureShapes, t: &FeatureShapes) -> Result<Vec<FeaturePair>> {
    let shared = |rank: usize| -> Vec<(&String, &Vec<usize>, &Vec<usize>)> {
        s.iter()
            .filter_map(|(n, sd)| {
                let (_, td) = t.iter().find(|(m, _)| m == n)?;
                (sd.len() == rank && td.len() == rank).then_some((n, sd, td))
            })
            .collect()
    };
    let pairs: Vec<FeaturePair> = match name {
        "at" => shared(3)
            .into_iter()
            .map(|(n, _, _)| FeaturePair::new(n, n))
            .collect(),
        "fitnet" => {
            let maps = shared(3);
            match maps.iter().rev().find(|(_, sd, td)| sd[1..] == td[1..]) {
                Some((n, _, _)) => vec![FeaturePair::new(*n, *n)],
                None => shared(1)
                    .first()
                    .map(|(n, _, _)| vec![FeaturePair::new(*n, *n)])
                    .unwrap_or_default(),
            }
        }
        "rkd" => match (s.last(), t.last()) {
            (Some((a, _)), Some((b, _))) => vec![FeaturePair::new(a, b)],
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    if pairs.is_empty() {
        return Err(KdError::InvalidConfig(format!(
            "no default feature pair for {name}: student features: {}; teacher features: {}; pass the pairs explicitly (s.NAME=t.NAME)",
            describe(s),
            describe(t)
        )));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(spec: &str) -> Vec<(&'static str, f64)> {
        Objective::parse(spec, &TermParams::default())
            .unwrap()
            .terms
            .into_iter()
            .map(|t| (t.term.name(), t.weight))
            .collect()
    }

    #[test]
    fn defaults_follow_the_papers() {
        assert_eq!(terms("ce"), [("ce", 1.0)]);
        assert_eq!(terms("kd"), [("ce", 1.0 - 0.9), ("kd", 0.9)]);
        assert_eq!(terms("ca-kld"), [("ce", 1.0 - 0.9), ("ca-kld", 0.9)]);
        assert_eq!(terms("dkd"), [("ce", 1.0), ("dkd", 1.0)]);
        assert_eq!(terms("fitnet"), [("ce", 1.0), ("fitnet", 100.0)]);
        assert_eq!(terms("at"), [("ce", 1.0), ("at", 1000.0)]);
        assert_eq!(terms("rkd"), [("ce", 1.0), ("rkd", 1.0)]);
        assert_eq!(terms("ce:0.1,kd:0.9"), [("ce", 0.1), ("kd", 0.9)]);
        assert_eq!(
            terms("kd+at:500"),
            [("ce", 1.0 - 0.9), ("kd", 0.9), ("at", 500.0)]
        );
        assert_eq!(terms("kd:1, ce:0"), [("ce", 0.0), ("kd", 1.0)]);
    }

    #[test]
    fn bad_specifications_are_named() {
        for (spec, needle) in [
            ("mse", "unknown loss `mse`"),
            ("kd:nan", "finite"),
            ("kd:-1", "finite"),
            ("kd:x", "not a number"),
            ("kd,,at", "empty term"),
            ("kd+kd", "twice"),
            ("ce:0", "no loss term"),
        ] {
            let e = Objective::parse(spec, &TermParams::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{spec}: {e}");
        }
        let e = Objective::parse(
            "kd",
            &TermParams {
                alpha: 1.5,
                ..TermParams::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("alpha must lie in [0, 1]"), "{e}");
    }

    #[test]
    fn feature_pairs_parse() {
        assert_eq!(
            parse_feature_pairs("s.conv2=t.conv2,fc1").unwrap(),
            [
                FeaturePair::new("conv2", "conv2"),
                FeaturePair::new("fc1", "fc1")
            ]
        );
        assert!(parse_feature_pairs("s.conv2=").is_err());
    }

    /// Display and FromStr are inverses on the names and weights.
    #[test]
    fn display_round_trips_through_from_str() {
        for spec in ["ce:0.1+kd:0.9", "ce:1+at:1000", "ce:0.5+ca-kld:0.5+dkd:2"] {
            let obj: Objective = spec.parse().unwrap();
            assert_eq!(obj.to_string(), spec);
        }
        let obj: Objective = "kd".parse().unwrap();
        assert_eq!(obj.to_string(), "ce:0.1+kd:0.9");
    }

    #[test]
    fn default_pairs_follow_the_shared_features() {
        let s: FeatureShapes = vec![
            ("conv1".into(), vec![6, 12, 12]),
            ("conv2".into(), vec![16, 4, 4]),
            ("fc1".into(), vec![120]),
        ];
        let t: FeatureShapes = vec![
            ("conv1".into(), vec![24, 12, 12]),
            ("conv2".into(), vec![64, 4, 4]),
            ("fc1".into(), vec![480]),
            ("fc2".into(), vec![336]),
        ];
        let mut obj: Objective = "kd+at+fitnet+rkd".parse().unwrap();
        obj.resolve_feature_pairs(None, &s, &t).unwrap();
        let pairs: Vec<(&str, Vec<FeaturePair>)> = obj
            .terms
            .iter()
            .filter(|t| t.term.is_feature_term())
            .map(|t| (t.term.name(), t.term.pairs().to_vec()))
            .collect();
        assert_eq!(
            pairs,
            [
                (
                    "at",
                    vec![
                        FeaturePair::new("conv1", "conv1"),
                        FeaturePair::new("conv2", "conv2")
                    ]
                ),
                ("fitnet", vec![FeaturePair::new("conv2", "conv2")]),
                ("rkd", vec![FeaturePair::new("fc1", "fc2")]),
            ]
        );
        let mut obj: Objective = "at".parse().unwrap();
        let e = obj
            .resolve_feature_pairs(Some(&[FeaturePair::new("conv9", "conv2")]), &s, &t)
            .unwrap_err()
            .to_string();
        assert!(e.contains("the student has no feature `conv9`"), "{e}");
    }
}
