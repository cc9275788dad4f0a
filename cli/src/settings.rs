//! The settings a run of the method and a sweep share — data, models,
//! schedules, distillation and scoring — written once and embedded in both
//! configurations, and how a configuration is read from TOML.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kd_core::losses::{Beta, LogitStd};
use kd_core::{LossConfig, Objective, SelfDistillConfig, SgdConfig, TrainConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::data::{hub_options, AugmentChoice, Data, Source};
use crate::scoring::ScoringSettings;

fn is_population(std: &str) -> bool {
    std == "population"
}

/// What a run of the method and a sweep share. Field names are TOML keys,
/// flat beside the keys of the embedding configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
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
    /// Train on this many samples of the training set, a seeded subset
    /// ([`Data::limit_train`]): a budget for slow networks on the CPU.
    pub train_samples: Option<usize>,
    /// Test on this many samples of the test set ([`Data::limit_test`]).
    pub test_samples: Option<usize>,
    /// Teacher architecture (larger than the student).
    pub teacher_model: String,
    /// Student architecture.
    pub student_model: String,
    /// Epochs of teacher training (CE).
    pub teacher_epochs: usize,
    /// Epochs of dense student training (CE).
    pub student_epochs: usize,
    /// Epochs of KD fine-tuning of the dense student under the teacher
    /// (before teacher-guided scoring).
    pub kd_epochs: usize,
    /// Epochs of retraining under the fixed mask after one-shot pruning.
    pub retrain_epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Learning rate of training from scratch.
    pub lr: f64,
    /// Learning rate of KD fine-tuning and of retraining.
    pub finetune_lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Nesterov momentum (when the momentum is not 0).
    pub nesterov: bool,
    /// Weight decay (weights only).
    pub weight_decay: f64,
    /// Epochs of linear learning-rate warm-up.
    pub warmup_epochs: usize,
    /// Distillation loss of KD fine-tuning, teacher-guided scoring and KD
    /// retraining: `ca-kld` (the paper's) or `kd` (Hinton).
    pub kd_loss: String,
    /// Temperature T.
    pub temperature: f64,
    /// Weight α of the distillation term: L = α·KD + (1−α)·CE.
    pub alpha: f64,
    /// CA-KLD mixing weight: `confidence` (teacher's mean top-1 probability
    /// of its standardised, tempered logits), `raw-confidence` (of its raw
    /// logits at T = 1) or a number in [0, 1].
    pub beta: String,
    /// CA-KLD's logit standardisation divides by the `population` (default)
    /// or the `sample` standard deviation (written only when not the
    /// default, so configurations of before keep their text).
    #[serde(skip_serializing_if = "is_population")]
    pub logit_std: String,
    /// Batches over which gradient scores are accumulated.
    pub score_batches: usize,
    /// Keep the first prunable layer dense.
    pub keep_first: bool,
    /// Keep the last prunable layer dense.
    pub keep_last: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            dataset: "digits".into(),
            data_dir: None,
            hub: false,
            hub_cache: None,
            hub_revision: None,
            offline: false,
            augment: AugmentChoice::Auto,
            train_samples: None,
            test_samples: None,
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
            temperature: kd_core::losses::DEFAULT_TEMPERATURE,
            alpha: kd_core::losses::DEFAULT_ALPHA,
            beta: "confidence".into(),
            logit_std: "population".into(),
            score_batches: 8,
            keep_first: false,
            keep_last: false,
        }
    }
}

impl Settings {
    /// Checks the values shared settings can get wrong.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            bail!("batch_size must be ≥ 1");
        }
        if self.score_batches == 0 {
            bail!("score_batches must be ≥ 1");
        }
        self.kd_loss_config()?;
        Ok(())
    }

    /// The distillation objective of KD fine-tuning, teacher-guided scoring
    /// and KD retraining.
    pub fn kd_loss_config(&self) -> Result<LossConfig> {
        let beta: Beta = self.beta.parse()?;
        let std: LogitStd = self.logit_std.parse()?;
        Ok(
            LossConfig::named(&self.kd_loss, self.temperature, self.alpha, beta)?
                .with_logit_std(std),
        )
    }

    /// Where the dataset's files come from.
    pub fn source(&self) -> Source {
        let hub = self.hub.then(|| {
            hub_options(
                self.hub_cache.clone(),
                self.hub_revision.clone(),
                self.offline,
            )
        });
        Source::new(self.data_dir.as_deref(), hub)
    }

    /// The dataset as seed `seed` splits it, cut to `train_samples` and
    /// `test_samples` where they are set.
    pub fn load_data(&self, seed: u64) -> Result<Data> {
        let mut data = crate::data::load_data(&self.dataset, &self.source(), seed)?;
        if let Some(n) = self.train_samples {
            data.limit_train(n, seed).context("train_samples")?;
        }
        if let Some(n) = self.test_samples {
            data.limit_test(n, seed).context("test_samples")?;
        }
        Ok(data)
    }

    /// The optimisation of a stage of `epochs` at `lr` with these settings'
    /// batch size, momentum, weight decay, warm-up and augmentation.
    pub fn optim(&self, epochs: usize, lr: f64) -> Optim {
        Optim {
            epochs,
            batch_size: self.batch_size,
            lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            nesterov: self.nesterov,
            warmup_epochs: self.warmup_epochs,
            augment: self.augment,
        }
    }

    /// A training run of `epochs` at `lr` on `objective`, its batches seeded
    /// by `seed` ([`Settings::optim`], cosine decay to 0).
    pub fn train_config(
        &self,
        epochs: usize,
        lr: f64,
        objective: impl Into<Objective>,
        seed: u64,
    ) -> TrainConfig {
        self.optim(epochs, lr).train_config(objective, seed)
    }

    /// How the method and the sweep score a model of the run seeded `seed`:
    /// `score_batches` of `batch_size`, the distillation loss, and EPSD's own
    /// self-distillation recipe (T = 3, α = 0.5), not the teacher's KD settings.
    pub fn scoring(&self, seed: u64) -> Result<ScoringSettings> {
        Ok(ScoringSettings {
            batches: self.score_batches,
            batch_size: self.batch_size,
            seed,
            kd_loss: self.kd_loss_config()?,
            self_distill: SelfDistillConfig::default(),
        })
    }

    /// The augmentation of training batches on `data`.
    pub fn augment_for(&self, data: &Data) -> kdprune_data::Augment {
        self.augment.resolve(data.name)
    }
}

/// How a job optimises.
#[derive(Clone, Debug)]
pub struct Optim {
    /// Epochs.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Base learning rate (cosine decay to 0).
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay (not on biases).
    pub weight_decay: f64,
    /// Nesterov momentum (when the momentum is not 0).
    pub nesterov: bool,
    /// Epochs of linear warm-up.
    pub warmup_epochs: usize,
    /// Training-set augmentation.
    pub augment: AugmentChoice,
}

impl Optim {
    /// A training run on `objective` with these settings, seeded by `seed`.
    pub fn train_config(&self, objective: impl Into<Objective>, seed: u64) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            sgd: SgdConfig {
                lr: self.lr,
                momentum: self.momentum,
                nesterov: self.nesterov && self.momentum > 0.0,
                weight_decay: self.weight_decay,
            },
            warmup_epochs: self.warmup_epochs,
            min_lr: 0.0,
            objective: objective.into(),
            seed,
        }
    }
}

/// Reads a configuration from TOML text: missing keys take their defaults,
/// and a key the configuration does not know is an error naming it (serde's
/// `deny_unknown_fields` cannot be used beside the flattened [`Settings`], so
/// the keys are checked against the configuration read back).
pub fn from_toml<T: Serialize + DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("invalid {what}: not TOML"))?;
    let value: T = table
        .clone()
        .try_into()
        .with_context(|| format!("invalid {what}"))?;
    let known = toml::Table::try_from(&value).with_context(|| format!("invalid {what}"))?;
    if let Some(key) = table.keys().find(|k| !known.contains_key(*k)) {
        bail!("invalid {what}: unknown field `{key}`");
    }
    Ok(value)
}

/// [`from_toml`] of the file at `path`.
pub fn from_toml_file<T: Serialize + DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    from_toml(&text, &format!("{what} {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    struct Outer {
        #[serde(flatten)]
        settings: Settings,
        seed: u64,
        out: Option<PathBuf>,
    }

    #[test]
    fn flattened_keys_read_and_unknown_keys_are_named() {
        let o: Outer = from_toml("seed = 3\nbatch_size = 7\nout = \"x\"\n", "config").unwrap();
        assert_eq!((o.seed, o.settings.batch_size), (3, 7));
        assert_eq!(o.out, Some(PathBuf::from("x")));
        assert_eq!(o.settings.lr, Settings::default().lr);
        let e = format!(
            "{:#}",
            from_toml::<Outer>("seed = 1\ncolour = 3\n", "config").unwrap_err()
        );
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = format!(
            "{:#}",
            from_toml::<Outer>("seed = \"x\"\n", "config").unwrap_err()
        );
        assert!(e.contains("invalid config"), "{e}");
    }

    #[test]
    fn a_configuration_round_trips_through_toml() {
        let o = Outer {
            settings: Settings {
                hub_revision: Some("v2".into()),
                ..Settings::default()
            },
            seed: 9,
            out: None,
        };
        let text = toml::to_string(&o).unwrap();
        assert_eq!(from_toml::<Outer>(&text, "config").unwrap(), o);
    }
}
