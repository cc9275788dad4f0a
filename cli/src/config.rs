//! The resolved configuration of `kdprune run`: defaults, then a TOML file,
//! then command-line flags. The result is saved in the run folder.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kd_core::losses::Beta;
use kd_core::{FeaturePair, Objective, Term};
use serde::{Deserialize, Serialize};

use crate::common::AugmentChoice;

/// Every knob of the end-to-end job. Field names are the TOML keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// `digits` (built in), `fashion-mnist`, `mnist`, `cifar10`, `cifar100` or
    /// `tiny-imagenet`.
    pub dataset: String,
    /// Folder with the dataset's published files (needed for every dataset
    /// but digits, unless `hub` is set).
    pub data_dir: Option<PathBuf>,
    /// Read the dataset from its Hugging Face Hub repository instead.
    pub hub: bool,
    /// The hf-hub cache folder (default: hf-hub's resolution).
    pub hub_cache: Option<PathBuf>,
    /// Branch, tag or commit of the dataset repository (default: main).
    pub hub_revision: Option<String>,
    /// Read the hf-hub cache only (also `HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Training-set augmentation: `auto` (crop-flip for CIFAR and
    /// TinyImageNet, none otherwise), `none`, `crop-flip`.
    pub augment: AugmentChoice,
    /// Seed of initialisation, split and batch order.
    pub seed: u64,
    /// Fraction of the prunable weights removed, in [0, 1).
    pub sparsity: f64,
    /// Teacher architecture (larger than the student).
    pub teacher_model: String,
    /// Student architecture.
    pub student_model: String,
    /// Epochs of teacher training (CE).
    pub teacher_epochs: usize,
    /// Epochs of dense student training (CE).
    pub student_epochs: usize,
    /// Epochs of KD fine-tuning of the dense student under the teacher.
    pub kd_epochs: usize,
    /// Epochs of retraining under the fixed mask.
    pub retrain_epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Learning rate of training from scratch.
    pub lr: f64,
    /// Learning rate of KD fine-tuning and of retraining.
    pub finetune_lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Weight decay (weights only).
    pub weight_decay: f64,
    /// Epochs of linear learning-rate warm-up.
    pub warmup_epochs: usize,
    /// Distillation loss: `ca-kld` (the paper's) or `kd` (Hinton).
    pub kd_loss: String,
    /// Temperature T.
    pub temperature: f64,
    /// Weight α of the distillation term: L = α·KD + (1−α)·CE.
    pub alpha: f64,
    /// CA-KLD mixing weight: `confidence` (teacher's mean top-1 probability) or a number in [0, 1].
    pub beta: String,
    /// Batches over which the teacher-guided importance is accumulated.
    pub score_batches: usize,
    /// Keep the first prunable layer dense.
    pub keep_first: bool,
    /// Keep the last prunable layer dense.
    pub keep_last: bool,
    /// Output folder (default `runs/<dataset>-s<sparsity>-seed<seed>`).
    pub out: Option<PathBuf>,
    /// A trained teacher to reuse instead of training one.
    pub teacher_checkpoint: Option<PathBuf>,
    /// A trained dense student to reuse instead of training one.
    pub student_checkpoint: Option<PathBuf>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            dataset: "digits".into(),
            data_dir: None,
            hub: false,
            hub_cache: None,
            hub_revision: None,
            offline: false,
            augment: AugmentChoice::Auto,
            seed: 0,
            sparsity: 0.9,
            teacher_model: "mlp-1200-1200".into(),
            student_model: "lenet-300-100".into(),
            teacher_epochs: 15,
            student_epochs: 15,
            kd_epochs: 5,
            retrain_epochs: 10,
            batch_size: 64,
            lr: 0.05,
            finetune_lr: 0.01,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            warmup_epochs: 0,
            kd_loss: "ca-kld".into(),
            temperature: 4.0,
            alpha: 0.9,
            beta: "confidence".into(),
            score_batches: 8,
            keep_first: false,
            keep_last: false,
            out: None,
            teacher_checkpoint: None,
            student_checkpoint: None,
        }
    }
}

impl RunConfig {
    /// Reads a TOML file (unknown keys are an error, missing keys take defaults).
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// The output folder, resolved.
    pub fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            PathBuf::from(format!(
                "runs/{}-s{}-seed{}",
                self.dataset, self.sparsity, self.seed
            ))
        })
    }

    /// Checks ranges before any work starts.
    pub fn validate(&self) -> Result<()> {
        prune_core::check_sparsity(self.sparsity).map_err(anyhow::Error::from)?;
        if self.batch_size == 0 {
            bail!("batch_size must be ≥ 1");
        }
        if self.score_batches == 0 {
            bail!("score_batches must be ≥ 1");
        }
        parse_beta(&self.beta)?;
        self.kd_loss_config()?.validate()?;
        Ok(())
    }

    /// The distillation objective used for KD fine-tuning, scoring and KD retraining.
    pub fn kd_loss_config(&self) -> Result<kd_core::LossConfig> {
        loss_config(&self.kd_loss, self.temperature, self.alpha, &self.beta)
    }
}

/// `confidence` or a fixed number in [0, 1].
pub fn parse_beta(s: &str) -> Result<Beta> {
    if s.eq_ignore_ascii_case("confidence") {
        return Ok(Beta::Confidence);
    }
    let v: f64 = s
        .parse()
        .with_context(|| format!("beta must be `confidence` or a number in [0, 1], got `{s}`"))?;
    if !(0.0..=1.0).contains(&v) {
        bail!("beta must be in [0, 1], got {v}");
    }
    Ok(Beta::Fixed(v))
}

/// Builds a loss from its CLI name: `ce`, `kd` (Hinton) or `ca-kld`.
pub fn loss_config(
    name: &str,
    temperature: f64,
    alpha: f64,
    beta: &str,
) -> Result<kd_core::LossConfig> {
    let cfg = match name {
        "ce" => kd_core::LossConfig::CrossEntropy,
        "kd" | "hinton" => kd_core::LossConfig::Hinton { temperature, alpha },
        "ca-kld" => kd_core::LossConfig::CaKld {
            temperature,
            alpha,
            beta: parse_beta(beta)?,
            eps: 1e-7,
        },
        other => bail!("unknown loss `{other}` (known: ce, kd, ca-kld)"),
    };
    cfg.validate()?;
    Ok(cfg)
}

/// A loss method named in a `--loss` specification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossName {
    Ce,
    Kd,
    CaKld,
    Dkd,
    Fitnet,
    At,
    Rkd,
}

impl LossName {
    /// Every name, as written on the command line.
    pub const KNOWN: &'static str = "ce, kd, ca-kld, dkd, fitnet, at, rkd";

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "ce" => Self::Ce,
            "kd" | "hinton" => Self::Kd,
            "ca-kld" => Self::CaKld,
            "dkd" => Self::Dkd,
            "fitnet" | "fitnets" => Self::Fitnet,
            "at" => Self::At,
            "rkd" => Self::Rkd,
            other => bail!("unknown loss `{other}` (known: {})", Self::KNOWN),
        })
    }

    /// The name as written on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ce => "ce",
            Self::Kd => "kd",
            Self::CaKld => "ca-kld",
            Self::Dkd => "dkd",
            Self::Fitnet => "fitnet",
            Self::At => "at",
            Self::Rkd => "rkd",
        }
    }

    /// Whether the term compares intermediate features.
    pub fn is_feature_term(self) -> bool {
        matches!(self, Self::Fitnet | Self::At | Self::Rkd)
    }

    /// The weight a term takes when the specification gives none.
    fn default_weight(self, alpha: f64, has_alpha_term: bool) -> f64 {
        match self {
            Self::Ce if has_alpha_term => 1.0 - alpha,
            Self::Ce => 1.0,
            Self::Kd | Self::CaKld => alpha,
            Self::Dkd | Self::Rkd => 1.0,
            Self::Fitnet => 100.0,
            Self::At => 1000.0,
        }
    }
}

/// A parsed `--loss` specification: `NAME[:WEIGHT]` terms separated by `,` or
/// `+`, e.g. `kd`, `ce:0.1,kd:0.9`, `kd+at:1000`.
///
/// A term without a weight takes its default: `kd`/`ca-kld` α (`--alpha`),
/// `dkd` 1, `fitnet` 100, `at` 1000, `rkd` 1, and `ce` `1 − α` when a `kd` or
/// `ca-kld` term is present, else 1. CE is added with that default weight
/// when the specification does not name it (write `ce:0` to leave it out), so
/// `kd` is the project's `α·KD + (1−α)·CE` and `at` is `CE + 1000·AT`.
#[derive(Clone, Debug, PartialEq)]
pub struct LossSpec {
    /// `(name, weight)` in sum order, CE first.
    pub terms: Vec<(LossName, f64)>,
}

impl LossSpec {
    /// Parses a specification; `alpha` gives the default weights of `kd`, `ca-kld` and `ce`.
    pub fn parse(spec: &str, alpha: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&alpha) {
            bail!("alpha must lie in [0, 1], got {alpha}");
        }
        let mut given: Vec<(LossName, Option<f64>)> = Vec::new();
        for token in spec.split([',', '+']) {
            let token = token.trim();
            if token.is_empty() {
                bail!(
                    "empty term in loss `{spec}` (write NAME[:WEIGHT] terms separated by `,` or `+`)"
                );
            }
            let (name, weight) = match token.split_once(':') {
                Some((n, w)) => {
                    let v: f64 = w.trim().parse().with_context(|| {
                        format!("weight `{w}` of `{n}` in loss `{spec}` is not a number")
                    })?;
                    if !(v.is_finite() && v >= 0.0) {
                        bail!("weight of `{n}` in loss `{spec}` must be finite and >= 0, got {w}");
                    }
                    (n.trim(), Some(v))
                }
                None => (token, None),
            };
            let name = LossName::parse(name)?;
            if given.iter().any(|(n, _)| *n == name) {
                bail!("`{}` appears twice in loss `{spec}`", name.as_str());
            }
            given.push((name, weight));
        }
        let has_alpha_term = given
            .iter()
            .any(|(n, _)| matches!(n, LossName::Kd | LossName::CaKld));
        if !given.iter().any(|(n, _)| *n == LossName::Ce) {
            given.insert(0, (LossName::Ce, None));
        }
        // CE first, then the specification's order.
        given.sort_by_key(|(n, _)| *n != LossName::Ce);
        let terms: Vec<(LossName, f64)> = given
            .into_iter()
            .map(|(n, w)| {
                (
                    n,
                    w.unwrap_or_else(|| n.default_weight(alpha, has_alpha_term)),
                )
            })
            .collect();
        if terms.iter().all(|(_, w)| *w == 0.0) {
            bail!("every weight of loss `{spec}` is 0, leaving no loss term");
        }
        Ok(Self { terms })
    }

    /// Whether a term of non-zero weight needs a teacher.
    pub fn needs_teacher(&self) -> bool {
        self.terms
            .iter()
            .any(|(n, w)| *n != LossName::Ce && *w > 0.0)
    }

    /// The feature methods of non-zero weight (fitnet, at, rkd).
    pub fn feature_terms(&self) -> Vec<LossName> {
        self.terms
            .iter()
            .filter(|(n, w)| n.is_feature_term() && *w > 0.0)
            .map(|(n, _)| *n)
            .collect()
    }

    /// The objective, with the hyper-parameters of `params` and the feature
    /// pairs `pairs(name)` of each feature term.
    pub fn objective(
        &self,
        params: &TermParams,
        mut pairs: impl FnMut(LossName) -> Result<Vec<FeaturePair>>,
    ) -> Result<Objective> {
        let mut terms = Vec::new();
        for &(name, weight) in &self.terms {
            let term = match name {
                LossName::Ce => Term::Ce,
                LossName::Kd => Term::Kd {
                    temperature: params.temperature,
                },
                LossName::CaKld => Term::CaKld {
                    temperature: params.temperature,
                    beta: parse_beta(&params.beta)?,
                    eps: kd_core::losses::DEFAULT_EPS,
                },
                LossName::Dkd => Term::Dkd {
                    alpha: params.dkd_alpha,
                    beta: params.dkd_beta,
                    temperature: params.temperature,
                    warmup_epochs: params.dkd_warmup,
                },
                LossName::Fitnet => Term::Fitnet {
                    pairs: pairs(name)?,
                    bn_momentum: 0.1,
                    bn_eps: 1e-5,
                },
                LossName::At => Term::At {
                    pairs: pairs(name)?,
                    p: params.at_p,
                },
                LossName::Rkd => Term::Rkd {
                    pairs: pairs(name)?,
                    distance_weight: params.rkd_distance,
                    angle_weight: params.rkd_angle,
                },
            };
            terms.push((weight, term));
        }
        let objective = Objective::new(terms);
        objective.validate()?;
        Ok(objective)
    }
}

/// Hyper-parameters of the loss terms (the flags beside `--loss`).
#[derive(Clone, Debug, PartialEq)]
pub struct TermParams {
    /// Temperature of kd, ca-kld and dkd.
    pub temperature: f64,
    /// CA-KLD β: `confidence` or a number in [0, 1].
    pub beta: String,
    /// DKD's TCKD weight.
    pub dkd_alpha: f64,
    /// DKD's NCKD weight.
    pub dkd_beta: f64,
    /// DKD's warm-up epochs (0: none).
    pub dkd_warmup: usize,
    /// Exponent of attention transfer.
    pub at_p: f64,
    /// RKD distance weight.
    pub rkd_distance: f64,
    /// RKD angle weight.
    pub rkd_angle: f64,
}

/// Parses `--feature-pairs`: `s.NAME=t.NAME` pairs separated by `,` (or `+`);
/// `NAME` alone pairs the same name on both sides.
pub fn parse_feature_pairs(s: &str) -> Result<Vec<FeaturePair>> {
    let mut pairs = Vec::new();
    for token in s.split([',', '+']) {
        let pair: FeaturePair = token.trim().parse().map_err(anyhow::Error::from)?;
        if !pairs.contains(&pair) {
            pairs.push(pair);
        }
    }
    Ok(pairs)
}

#[cfg(test)]
mod loss_spec_tests {
    use super::*;

    fn terms(spec: &str) -> Vec<(&'static str, f64)> {
        LossSpec::parse(spec, 0.9)
            .unwrap()
            .terms
            .into_iter()
            .map(|(n, w)| (n.as_str(), w))
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
            let e = format!("{:#}", LossSpec::parse(spec, 0.9).unwrap_err());
            assert!(e.contains(needle), "{spec}: {e}");
        }
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
}
