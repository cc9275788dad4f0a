//! The configuration of `kdprune sweep`: one TOML file, every key optional.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kd_core::LossConfig;
use prune_core::importance::Criterion;
use serde::{Deserialize, Serialize};

use crate::common::AugmentChoice;
use crate::config::{loss_config, parse_beta};

/// Every knob of a sweep. Field names are the TOML keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SweepConfig {
    /// `digits` (built in), `fashion-mnist`, `mnist`, `cifar10`, ...
    pub dataset: String,
    /// Folder with the dataset's published files.
    pub data_dir: Option<PathBuf>,
    /// Read the dataset from the Hugging Face Hub instead.
    pub hub: bool,
    /// Training-set augmentation: `auto`, `none`, `crop-flip`.
    pub augment: AugmentChoice,
    /// Output folder: one file per finished cell, the results, and the
    /// per-seed KD-tuned students.
    pub out: PathBuf,
    /// Folder of the per-seed teachers, dense students and rewind points
    /// (default: `out`). Sweeps that differ only after dense training (in
    /// their scoring, retraining or schemes) can share one and train those
    /// models once.
    pub models_dir: Option<PathBuf>,
    /// Methods, one row each (see [`Method::parse`]).
    pub methods: Vec<String>,
    /// Target sparsities of the prunable weights.
    pub sparsities: Vec<f64>,
    /// Seeds; teachers and dense students are trained once per seed.
    pub seeds: Vec<u64>,
    /// Teacher architecture.
    pub teacher_model: String,
    /// Student architecture.
    pub student_model: String,
    /// Epochs of teacher training (CE).
    pub teacher_epochs: usize,
    /// Epochs of dense student training (CE).
    pub student_epochs: usize,
    /// Epochs of KD fine-tuning before teacher-guided scoring.
    pub kd_epochs: usize,
    /// Epochs of retraining after one-shot pruning.
    pub retrain_epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Learning rate of training from scratch.
    pub lr: f64,
    /// Learning rate of fine-tuning, retraining and the iterative schemes.
    pub finetune_lr: f64,
    /// SGD momentum (Nesterov) and weight decay (weights only).
    pub momentum: f64,
    pub weight_decay: f64,
    /// Distillation loss of KD fine-tuning and teacher-guided scoring:
    /// `ca-kld` or `kd` (Hinton).
    pub kd_loss: String,
    /// Temperature T of the distillation loss.
    pub temperature: f64,
    /// Weight α of the distillation term: L = α·KD + (1−α)·CE.
    pub alpha: f64,
    /// CA-KLD β: `confidence` or a number in [0, 1].
    pub beta: String,
    /// Batches over which gradient scores are accumulated.
    pub score_batches: usize,
    /// Loss of the retraining after one-shot pruning: `ce`, or `kd` for the
    /// `kd_loss` under the teacher.
    pub retrain_loss: String,
    /// Keep the first / last prunable layer dense.
    pub keep_first: bool,
    pub keep_last: bool,
    /// Gradual magnitude pruning (Zhu & Gupta): epochs of training from the
    /// dense student, and the fraction of them over which sparsity rises
    /// cubically from 0 (the rest trains under the final mask).
    pub gmp_epochs: usize,
    pub gmp_ramp_fraction: f64,
    /// Steps between two GMP mask updates.
    pub gmp_frequency: u64,
    /// Iterative magnitude pruning: fraction of the remaining weights removed
    /// per round, epochs per round, and the epoch of dense training the
    /// weights are rewound to.
    pub imp_rate: f64,
    pub imp_round_epochs: usize,
    pub rewind_epoch: usize,
    /// COLT: fraction removed per round (before the intersection) and epochs
    /// per round of each copy on its half of the training set.
    pub colt_rate: f64,
    pub colt_round_epochs: usize,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            dataset: "digits".into(),
            data_dir: None,
            hub: false,
            augment: AugmentChoice::Auto,
            out: PathBuf::from("runs/sweep"),
            models_dir: None,
            methods: vec!["magnitude".into(), "teacher-guided".into()],
            sparsities: vec![0.9, 0.95, 0.98, 0.99],
            seeds: vec![0, 1, 2],
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
            weight_decay: 5e-4,
            kd_loss: "ca-kld".into(),
            temperature: 4.0,
            alpha: 0.9,
            beta: "confidence".into(),
            score_batches: 8,
            retrain_loss: "ce".into(),
            keep_first: false,
            keep_last: false,
            gmp_epochs: 10,
            gmp_ramp_fraction: 0.75,
            gmp_frequency: 10,
            imp_rate: 0.5,
            imp_round_epochs: 3,
            rewind_epoch: 1,
            colt_rate: 0.5,
            colt_round_epochs: 3,
        }
    }
}

/// One row of the sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Score the dense student (the KD-tuned one when the flag is set, always
    /// for the teacher-guided score) with `criterion` and `source`, prune
    /// once, retrain under the mask.
    OneShot(Criterion, GradientLoss, bool),
    /// Gradual magnitude pruning during fine-tuning.
    Gmp,
    /// Iterative magnitude pruning with weight rewinding.
    Imp,
    /// Cyclic overlapping lottery tickets.
    Colt,
}

/// Which loss's gradient a teacher-guided score takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradientLoss {
    /// `kd_loss` as configured (α·KD + (1−α)·CE): the paper's.
    Mixture,
    /// The distillation term alone (α = 1).
    KdOnly,
    /// Cross-entropy alone (SNIP on the KD-tuned student).
    CeOnly,
}

impl Method {
    /// `magnitude`, `random`, `lamp`, `snip`, `grasp`, `synflow`,
    /// `self-distill`, `teacher-guided` (also `teacher-guided:kd` and
    /// `teacher-guided:ce` for the gradient of one term only), `gmp`, `imp`,
    /// `colt`. A criterion followed by `@kd` scores the KD-tuned student
    /// instead of the dense one (`magnitude@kd`: what the KD fine-tuning alone
    /// gives, without the teacher-guided score).
    pub fn parse(name: &str) -> Result<Self> {
        let (name_base, at_kd) = match name.split_once('@') {
            Some((b, "kd")) => (b, true),
            Some((_, other)) => {
                bail!("method `{name}`: the only `@` suffix is `@kd`, got `@{other}`")
            }
            None => (name, false),
        };
        let (base, suffix) = match name_base.split_once(':') {
            Some((b, s)) => (b, Some(s)),
            None => (name_base, None),
        };
        let method = match base {
            "gmp" => Method::Gmp,
            "imp" => Method::Imp,
            "colt" => Method::Colt,
            other => {
                let criterion: Criterion = other.parse().map_err(|e| {
                    anyhow::anyhow!(
                        "unknown method `{name}` ({e}); expected a criterion \
                         (magnitude, random, lamp, snip, grasp, synflow, self-distill, \
                         teacher-guided[:kd|:ce]) or a scheme (gmp, imp, colt)"
                    )
                })?;
                let source = match (criterion, suffix) {
                    (_, None) => GradientLoss::Mixture,
                    (Criterion::TeacherGuided, Some("kd")) => GradientLoss::KdOnly,
                    (Criterion::TeacherGuided, Some("ce")) => GradientLoss::CeOnly,
                    (Criterion::TeacherGuided, Some("mix")) => GradientLoss::Mixture,
                    (_, Some(s)) => bail!(
                        "method `{name}`: only teacher-guided takes a gradient suffix (:kd, :ce, :mix), got `:{s}`"
                    ),
                };
                let from_kd = at_kd || criterion == Criterion::TeacherGuided;
                return Ok(Method::OneShot(criterion, source, from_kd));
            }
        };
        if at_kd {
            bail!("method `{name}`: the scheme {base} always starts from the dense student");
        }
        if let Some(s) = suffix {
            bail!("method `{name}`: the scheme {base} takes no suffix `:{s}`");
        }
        Ok(method)
    }
}

impl SweepConfig {
    /// Reads a TOML file (unknown keys are an error, missing keys take defaults).
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read sweep config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid sweep config {}", path.display()))
    }

    /// Checks every value before any work starts.
    pub fn validate(&self) -> Result<()> {
        if self.methods.is_empty() || self.sparsities.is_empty() || self.seeds.is_empty() {
            bail!("methods, sparsities and seeds must each name at least one value");
        }
        for m in &self.methods {
            Method::parse(m)?;
        }
        for &s in &self.sparsities {
            prune_core::check_sparsity(s)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("sparsities: {s}"))?;
        }
        for (name, list_has_dup) in [
            (
                "methods",
                has_duplicates(self.methods.iter().map(|m| m.to_string())),
            ),
            (
                "sparsities",
                has_duplicates(self.sparsities.iter().map(|s| s.to_string())),
            ),
            (
                "seeds",
                has_duplicates(self.seeds.iter().map(|s| s.to_string())),
            ),
        ] {
            if list_has_dup {
                bail!("{name} lists a value twice");
            }
        }
        if self.batch_size == 0 || self.score_batches == 0 {
            bail!("batch_size and score_batches must be ≥ 1");
        }
        for (name, v) in [("imp_rate", self.imp_rate), ("colt_rate", self.colt_rate)] {
            if !(v > 0.0 && v < 1.0) {
                bail!("{name} must be in (0, 1), got {v}");
            }
        }
        if !(self.gmp_ramp_fraction > 0.0 && self.gmp_ramp_fraction <= 1.0) {
            bail!(
                "gmp_ramp_fraction must be in (0, 1], got {}",
                self.gmp_ramp_fraction
            );
        }
        if self.gmp_frequency == 0 {
            bail!("gmp_frequency must be ≥ 1");
        }
        if self.gmp_epochs == 0
            && self
                .methods
                .iter()
                .any(|m| matches!(Method::parse(m), Ok(Method::Gmp)))
        {
            bail!("gmp_epochs must be ≥ 1");
        }
        if self.rewind_epoch > self.student_epochs {
            bail!(
                "rewind_epoch {} is past the {} epochs of dense training",
                self.rewind_epoch,
                self.student_epochs
            );
        }
        parse_beta(&self.beta)?;
        self.kd_loss_config()?.validate()?;
        self.retrain_loss_config()?;
        Ok(())
    }

    /// The distillation objective of KD fine-tuning and teacher-guided scoring.
    pub fn kd_loss_config(&self) -> Result<LossConfig> {
        loss_config(&self.kd_loss, self.temperature, self.alpha, &self.beta)
    }

    /// The loss of retraining after one-shot pruning.
    pub fn retrain_loss_config(&self) -> Result<LossConfig> {
        match self.retrain_loss.as_str() {
            "ce" => Ok(LossConfig::CrossEntropy),
            "kd" => self.kd_loss_config(),
            other => bail!("retrain_loss must be `ce` or `kd`, got `{other}`"),
        }
    }

    /// What a finished cell depends on besides its method, sparsity and
    /// seed: a cell computed under another value of these is stale.
    pub fn fingerprint(&self) -> Result<String> {
        let mut c = self.clone();
        c.methods.clear();
        c.sparsities.clear();
        c.seeds.clear();
        c.out = PathBuf::new();
        c.models_dir = None;
        Ok(toml::to_string(&c)?)
    }

    /// What the teachers, dense students and rewind points depend on.
    pub fn models_fingerprint(&self) -> Result<String> {
        #[derive(Serialize)]
        struct Models<'a> {
            dataset: &'a str,
            data_dir: &'a Option<PathBuf>,
            hub: bool,
            augment: AugmentChoice,
            teacher_model: &'a str,
            student_model: &'a str,
            teacher_epochs: usize,
            student_epochs: usize,
            batch_size: usize,
            lr: f64,
            momentum: f64,
            weight_decay: f64,
            rewind_epoch: usize,
        }
        Ok(toml::to_string(&Models {
            dataset: &self.dataset,
            data_dir: &self.data_dir,
            hub: self.hub,
            augment: self.augment,
            teacher_model: &self.teacher_model,
            student_model: &self.student_model,
            teacher_epochs: self.teacher_epochs,
            student_epochs: self.student_epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            rewind_epoch: self.rewind_epoch,
        })?)
    }

    /// Where the per-seed shared models live.
    pub fn models_dir(&self) -> PathBuf {
        self.models_dir.clone().unwrap_or_else(|| self.out.clone())
    }
}

fn has_duplicates(items: impl Iterator<Item = String>) -> bool {
    let mut seen = std::collections::BTreeSet::new();
    items.into_iter().any(|i| !seen.insert(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_parse_with_their_suffixes() {
        assert_eq!(
            Method::parse("teacher-guided:ce").unwrap(),
            Method::OneShot(Criterion::TeacherGuided, GradientLoss::CeOnly, true)
        );
        assert_eq!(
            Method::parse("magnitude@kd").unwrap(),
            Method::OneShot(Criterion::Magnitude, GradientLoss::Mixture, true)
        );
        assert!(Method::parse("imp@kd").is_err());
        assert!(Method::parse("magnitude@dense").is_err());
        assert_eq!(Method::parse("imp").unwrap(), Method::Imp);
        assert_eq!(
            Method::parse("magnitude").unwrap(),
            Method::OneShot(Criterion::Magnitude, GradientLoss::Mixture, false)
        );
        assert!(Method::parse("magnitude:ce").is_err());
        assert!(Method::parse("gmp:kd").is_err());
        let err = Method::parse("obd").unwrap_err().to_string();
        assert!(err.contains("unknown method `obd`"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_before_any_work() {
        let ok = SweepConfig::default();
        ok.validate().unwrap();
        for bad in [
            SweepConfig {
                sparsities: vec![0.9, 1.2],
                ..ok.clone()
            },
            SweepConfig {
                methods: vec!["magnitude".into(), "magnitude".into()],
                ..ok.clone()
            },
            SweepConfig {
                imp_rate: 1.0,
                ..ok.clone()
            },
            SweepConfig {
                retrain_loss: "mse".into(),
                ..ok.clone()
            },
            SweepConfig {
                seeds: vec![],
                ..ok.clone()
            },
            SweepConfig {
                methods: vec!["gmp".into()],
                gmp_epochs: 0,
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        // gmp_epochs only matters when gmp is swept.
        SweepConfig {
            methods: vec!["magnitude".into()],
            gmp_epochs: 0,
            ..ok.clone()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn the_fingerprint_ignores_the_grid_but_not_the_recipe() {
        let a = SweepConfig::default();
        let b = SweepConfig {
            seeds: vec![5],
            methods: vec!["imp".into()],
            ..a.clone()
        };
        let c = SweepConfig {
            retrain_epochs: 3,
            ..a.clone()
        };
        assert_eq!(a.fingerprint().unwrap(), b.fingerprint().unwrap());
        assert_ne!(a.fingerprint().unwrap(), c.fingerprint().unwrap());
    }
}
