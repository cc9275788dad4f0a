//! The configuration of `kdprune sweep`: one TOML file, every key optional.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kd_core::LossConfig;
use prune_core::{importance, Importance, PruneError};
use serde::{Deserialize, Serialize};

use crate::data::AugmentChoice;
use crate::settings::{from_toml, from_toml_file, Settings};

/// Every knob of a sweep: the [`Settings`] it shares with a run of the
/// method, and its own. Field names are the TOML keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SweepConfig {
    /// Data, models, schedules, distillation and scoring.
    #[serde(flatten)]
    pub settings: Settings,
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
    /// Loss of the retraining after one-shot pruning: `ce`, or `kd` for the
    /// `kd_loss` under the teacher.
    pub retrain_loss: String,
    /// Gradual magnitude pruning (Zhu & Gupta): epochs of training from the
    /// dense student, and the fraction of them over which sparsity rises
    /// cubically from 0 (the rest trains under the final mask).
    pub gmp_epochs: usize,
    /// The fraction of GMP's steps over which the sparsity rises.
    pub gmp_ramp_fraction: f64,
    /// Steps between two GMP mask updates.
    pub gmp_frequency: u64,
    /// Iterative magnitude pruning: fraction of the remaining weights removed
    /// per round.
    pub imp_rate: f64,
    /// Epochs of training per IMP round.
    pub imp_round_epochs: usize,
    /// The epoch of dense training the lottery-ticket schemes rewind to.
    pub rewind_epoch: usize,
    /// COLT: fraction removed per round (before the intersection).
    pub colt_rate: f64,
    /// Epochs per round of each COLT copy on its half of the training set.
    pub colt_round_epochs: usize,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            settings: Settings::default(),
            out: PathBuf::from("runs/sweep"),
            models_dir: None,
            methods: vec!["magnitude".into(), "teacher-guided".into()],
            sparsities: vec![0.9, 0.95, 0.98, 0.99],
            seeds: vec![0, 1, 2],
            retrain_loss: "ce".into(),
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
#[derive(Debug)]
pub enum Method {
    /// Prune the dense student once with the criterion (the student
    /// fine-tuned under the teacher when the flag is set — always for the
    /// teacher-guided score), retrain under the mask.
    OneShot(Box<dyn Importance>, bool),
    /// Gradual magnitude pruning during fine-tuning.
    Gmp,
    /// Iterative magnitude pruning with weight rewinding.
    Imp,
    /// Cyclic overlapping lottery tickets.
    Colt,
}

impl Method {
    /// A criterion of [`prune_core::importance::by_name`] — `magnitude`,
    /// `random`, `lamp`, `snip`, `grasp`, `synflow`, `self-distill`,
    /// `teacher-guided` (also `teacher-guided:kd` and `teacher-guided:ce` for
    /// the gradient of one term only) — or a scheme, `gmp`, `imp`, `colt`. A
    /// criterion followed by `@kd` scores the KD-tuned student instead of the
    /// dense one (`magnitude@kd`: what the KD fine-tuning alone gives,
    /// without the teacher-guided score).
    pub fn parse(name: &str) -> Result<Self> {
        let (base, at_kd) = match name.split_once('@') {
            Some((b, "kd")) => (b, true),
            Some((_, other)) => {
                bail!("method `{name}`: the only `@` suffix is `@kd`, got `@{other}`")
            }
            None => (name, false),
        };
        let (scheme, suffix) = match base.split_once(':') {
            Some((b, s)) => (b, Some(s)),
            None => (base, None),
        };
        let method = match scheme {
            "gmp" => Method::Gmp,
            "imp" => Method::Imp,
            "colt" => Method::Colt,
            _ => {
                let criterion = importance::by_name(base).map_err(|e| match e {
                    PruneError::UnknownCriterion(_) => {
                        anyhow::anyhow!(
                            "unknown method `{name}`: not a scheme (gmp, imp, colt); {e}"
                        )
                    }
                    other => anyhow::anyhow!("method `{name}`: {other}"),
                })?;
                let from_kd = at_kd || scheme == "teacher-guided";
                return Ok(Method::OneShot(criterion, from_kd));
            }
        };
        if at_kd {
            bail!("method `{name}`: the scheme {scheme} always starts from the dense student");
        }
        if let Some(s) = suffix {
            bail!("method `{name}`: the scheme {scheme} takes no suffix `:{s}`");
        }
        Ok(method)
    }
}

impl SweepConfig {
    /// Reads a TOML file (unknown keys are an error, missing keys take defaults).
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        from_toml_file(path, "sweep config")
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
        self.settings.validate()?;
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
        if self.rewind_epoch > self.settings.student_epochs {
            bail!(
                "rewind_epoch {} is past the {} epochs of dense training",
                self.rewind_epoch,
                self.settings.student_epochs
            );
        }
        self.retrain_loss_config()?;
        Ok(())
    }

    /// The loss of retraining after one-shot pruning.
    pub fn retrain_loss_config(&self) -> Result<LossConfig> {
        match self.retrain_loss.as_str() {
            "ce" => Ok(LossConfig::CrossEntropy),
            "kd" => self.settings.kd_loss_config(),
            other => bail!("retrain_loss must be `ce` or `kd`, got `{other}`"),
        }
    }

    /// What a finished cell depends on besides its method, sparsity and
    /// seed: a cell computed under another value of these is stale. Where
    /// the files come from (the folder of the output, of the shared models,
    /// of the hf-hub cache, offline or not) does not count.
    pub fn fingerprint(&self) -> Result<String> {
        let mut c = self.clone();
        c.methods.clear();
        c.sparsities.clear();
        c.seeds.clear();
        c.out = PathBuf::new();
        c.models_dir = None;
        c.settings.hub_cache = None;
        c.settings.offline = false;
        Ok(toml::to_string(&c)?)
    }

    /// Whether `recipe`, a [`SweepConfig::fingerprint`] written by this or an
    /// earlier version (whose missing keys take their defaults), describes the
    /// same cells as this configuration.
    pub fn same_fingerprint(&self, recipe: &str) -> Result<bool> {
        let ours = self.fingerprint()?;
        Ok(recipe == ours
            || from_toml::<SweepConfig>(recipe, "recipe")
                .and_then(|old| old.fingerprint())
                .is_ok_and(|old| old == ours))
    }

    /// What the teachers, dense students and rewind points depend on.
    pub fn models_recipe(&self) -> ModelsRecipe {
        let s = &self.settings;
        ModelsRecipe {
            dataset: s.dataset.clone(),
            data_dir: s.data_dir.clone(),
            hub: s.hub,
            hub_revision: s.hub_revision.clone(),
            augment: s.augment,
            train_samples: s.train_samples,
            test_samples: s.test_samples,
            teacher_model: s.teacher_model.clone(),
            student_model: s.student_model.clone(),
            teacher_epochs: s.teacher_epochs,
            student_epochs: s.student_epochs,
            batch_size: s.batch_size,
            lr: s.lr,
            momentum: s.momentum,
            nesterov: s.nesterov,
            weight_decay: s.weight_decay,
            warmup_epochs: s.warmup_epochs,
            rewind_epoch: self.rewind_epoch,
        }
    }

    /// Where the per-seed shared models live.
    pub fn models_dir(&self) -> PathBuf {
        self.models_dir.clone().unwrap_or_else(|| self.out.clone())
    }
}

/// What a sweep's teachers, dense students and rewind points depend on,
/// recorded as `models.toml` beside them. Keys missing from a file an
/// earlier version wrote take the values that version used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelsRecipe {
    dataset: String,
    data_dir: Option<PathBuf>,
    hub: bool,
    hub_revision: Option<String>,
    augment: AugmentChoice,
    train_samples: Option<usize>,
    test_samples: Option<usize>,
    teacher_model: String,
    student_model: String,
    teacher_epochs: usize,
    student_epochs: usize,
    batch_size: usize,
    lr: f64,
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
    warmup_epochs: usize,
    rewind_epoch: usize,
}

impl Default for ModelsRecipe {
    fn default() -> Self {
        SweepConfig::default().models_recipe()
    }
}

impl ModelsRecipe {
    /// The recipe as the text of `models.toml`.
    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string(self)?)
    }

    /// Whether `text`, a `models.toml`, records this recipe.
    pub fn same_as(&self, text: &str) -> bool {
        toml::from_str::<ModelsRecipe>(text).is_ok_and(|old| &old == self)
    }
}

fn has_duplicates(items: impl Iterator<Item = String>) -> bool {
    let mut seen = std::collections::BTreeSet::new();
    items.into_iter().any(|i| !seen.insert(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `OneShot(criterion name, from the KD-tuned student)`, or the scheme.
    fn parsed(name: &str) -> String {
        match Method::parse(name).unwrap() {
            Method::OneShot(c, from_kd) => format!("{} {from_kd}", c.name()),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn methods_parse_with_their_suffixes() {
        assert_eq!(parsed("teacher-guided:ce"), "teacher-guided:ce true");
        assert_eq!(parsed("teacher-guided"), "teacher-guided true");
        assert_eq!(parsed("magnitude@kd"), "magnitude true");
        assert!(Method::parse("imp@kd").is_err());
        assert!(Method::parse("magnitude@dense").is_err());
        assert_eq!(parsed("imp"), "Imp");
        assert_eq!(parsed("magnitude"), "magnitude false");
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
            settings: Settings {
                retrain_epochs: 3,
                ..a.settings.clone()
            },
            ..a.clone()
        };
        assert_eq!(a.fingerprint().unwrap(), b.fingerprint().unwrap());
        assert_ne!(a.fingerprint().unwrap(), c.fingerprint().unwrap());
        assert!(a.same_fingerprint(&b.fingerprint().unwrap()).unwrap());
        assert!(!a.same_fingerprint(&c.fingerprint().unwrap()).unwrap());
    }

    /// A recipe of an earlier version, without the keys added since (they
    /// take the values that version used), describes the same cells and models.
    #[test]
    fn earlier_recipes_without_the_new_keys_still_match() {
        let a = SweepConfig::default();
        let old: String = a
            .fingerprint()
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("nesterov") && !l.starts_with("warmup_epochs"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(a.same_fingerprint(&old).unwrap());
        let models = a.models_recipe();
        let old_models: String = models
            .to_toml()
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("nesterov") && !l.starts_with("warmup_epochs"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(models.same_as(&old_models));
        let other = SweepConfig {
            rewind_epoch: 2,
            ..a.clone()
        };
        assert!(!other.models_recipe().same_as(&old_models));
    }
}
