//! The resolved configuration of `kdprune run`: defaults, then a TOML file,
//! then command-line flags. The result is saved in the run folder.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kd_core::losses::Beta;
use serde::{Deserialize, Serialize};

/// Every knob of the end-to-end job. Field names are the TOML keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// `digits` (built in), `fashion-mnist` or `mnist`.
    pub dataset: String,
    /// Folder with the IDX files (needed for fashion-mnist and mnist).
    pub data_dir: Option<PathBuf>,
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
