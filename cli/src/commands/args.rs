//! Flag groups shared by several subcommands.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use kd_core::{SgdConfig, TrainConfig};

use crate::common::{AugmentChoice, Data, Source};
use kdprune_data::HubOptions;

/// Which data.
#[derive(Args, Clone, Debug)]
pub struct DataArgs {
    /// Dataset: digits (built in), fashion-mnist, mnist, cifar10, cifar100,
    /// tiny-imagenet [default: the checkpoint's, else digits].
    #[arg(long)]
    pub dataset: Option<String>,
    /// Folder with the dataset's published files (IDX for fashion-mnist and
    /// mnist, the binary batches for cifar10/cifar100, the original layout
    /// for tiny-imagenet).
    #[arg(long, conflicts_with = "hub")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub hub: HubArgs,
    /// Seed (split of digits, initialisation, batch order) [default: the
    /// checkpoint's, else 0].
    #[arg(long)]
    pub seed: Option<u64>,
}

/// Reading a dataset from the Hugging Face Hub.
#[derive(Args, Clone, Debug, Default)]
pub struct HubArgs {
    /// Read the dataset from its Hugging Face Hub repository (parquet; see
    /// the data crate's README for the repositories), downloading into the
    /// hf-hub cache when online.
    #[arg(long)]
    pub hub: bool,
    /// The hf-hub cache folder [default: HF_HUB_CACHE, else
    /// $HF_HOME/hub, else ~/.cache/huggingface/hub].
    #[arg(long, requires = "hub")]
    pub hub_cache: Option<PathBuf>,
    /// Branch, tag or commit of the dataset repository [default: main].
    #[arg(long, requires = "hub")]
    pub hub_revision: Option<String>,
    /// Never touch the network: read the cache only (also HF_HUB_OFFLINE=1).
    #[arg(long, requires = "hub")]
    pub offline: bool,
}

impl HubArgs {
    /// The Hub options when `--hub` is given.
    pub fn options(&self) -> Option<HubOptions> {
        self.hub.then(|| {
            let env = HubOptions::from_env();
            HubOptions {
                cache_dir: self.hub_cache.clone(),
                offline: self.offline || env.offline,
                revision: self.hub_revision.clone(),
            }
        })
    }
}

impl DataArgs {
    /// Dataset name and seed: flags, else the checkpoint's metadata, else defaults.
    pub fn resolve(&self, meta: Option<&BTreeMap<String, String>>) -> (String, u64) {
        let dataset = self
            .dataset
            .clone()
            .or_else(|| meta.and_then(|m| m.get("dataset").cloned()))
            .unwrap_or_else(|| "digits".into());
        let seed = self
            .seed
            .or_else(|| meta.and_then(|m| m.get("seed").and_then(|s| s.parse().ok())))
            .unwrap_or(0);
        (dataset, seed)
    }

    /// Where the files come from.
    pub fn source(&self) -> Source {
        Source::new(self.data_dir.as_deref(), self.hub.options())
    }

    /// Loads the data (see [`DataArgs::resolve`]).
    pub fn load(&self, meta: Option<&BTreeMap<String, String>>) -> anyhow::Result<(Data, u64)> {
        let (dataset, seed) = self.resolve(meta);
        Ok((
            crate::common::load_data(&dataset, &self.source(), seed)?,
            seed,
        ))
    }
}

/// How to optimise.
#[derive(Args, Clone, Debug)]
pub struct OptimArgs {
    /// Epochs.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Mini-batch size.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Base learning rate (cosine decay to 0).
    #[arg(long, default_value_t = 0.05)]
    pub lr: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Weight decay (not on biases).
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f64,
    /// Plain momentum instead of Nesterov.
    #[arg(long)]
    pub no_nesterov: bool,
    /// Epochs of linear warm-up.
    #[arg(long, default_value_t = 0)]
    pub warmup_epochs: usize,
    /// Training-set augmentation: auto (crop-flip for CIFAR and
    /// TinyImageNet, none otherwise), none, crop-flip (4-pixel padding, flips).
    #[arg(long, value_enum, default_value_t = AugmentChoice::Auto)]
    pub augment: AugmentChoice,
}

/// The objective.
#[derive(Args, Clone, Debug)]
pub struct LossArgs {
    /// Loss: ce, kd (Hinton), ca-kld (needs --teacher for kd and ca-kld).
    #[arg(long, default_value = "ce")]
    pub loss: String,
    /// Temperature T.
    #[arg(long, default_value_t = 4.0)]
    pub temperature: f64,
    /// Weight α of the distillation term: L = α·KD + (1−α)·CE.
    #[arg(long, default_value_t = 0.9)]
    pub alpha: f64,
    /// CA-KLD β: `confidence` or a number in [0, 1].
    #[arg(long, default_value = "confidence")]
    pub beta: String,
}

impl LossArgs {
    /// The loss these flags describe.
    pub fn config(&self) -> anyhow::Result<kd_core::LossConfig> {
        crate::config::loss_config(&self.loss, self.temperature, self.alpha, &self.beta)
    }
}

impl OptimArgs {
    /// A training configuration for `loss` on `data`.
    pub fn train_config(&self, loss: kd_core::LossConfig, seed: u64, data: &Data) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            sgd: SgdConfig {
                lr: self.lr,
                momentum: self.momentum,
                nesterov: !self.no_nesterov && self.momentum > 0.0,
                weight_decay: self.weight_decay,
            },
            warmup_epochs: self.warmup_epochs,
            min_lr: 0.0,
            loss,
            seed,
            augment: self.augment.resolve(data.name),
        }
    }
}
