//! Flag groups shared by several subcommands, and what they parse into.

use std::path::PathBuf;

use clap::Args;
use kd_core::losses::{Beta, DkdConfig, LogitStd, RkdConfig, DEFAULT_ALPHA, DEFAULT_TEMPERATURE};
use kd_core::{LossConfig, TermParams};
use kdprune_cli::data::{hub_options, AugmentChoice, Source};
use kdprune_cli::jobs::{DataSpec, ObjectiveSpec, Optim};
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
    /// Train on only N samples of the training set (the first N of a
    /// shuffle by the seed; the normalisation stays the whole set's): a
    /// budget for slow networks on CPU.
    #[arg(long, value_name = "N")]
    pub train_samples: Option<usize>,
    /// Test on only N samples of the test set (chosen the same way by the
    /// seed, so `eval` with the same N and seed sees the same ones): a
    /// quicker, noisier accuracy.
    #[arg(long, value_name = "N")]
    pub test_samples: Option<usize>,
}

impl DataArgs {
    /// The data these flags name.
    pub fn spec(&self) -> DataSpec {
        DataSpec {
            dataset: self.dataset.clone(),
            source: Source::new(self.data_dir.as_deref(), self.hub.options()),
            seed: self.seed,
            train_samples: self.train_samples,
            test_samples: self.test_samples,
        }
    }
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
    /// Never touch the network: read the hf-hub cache only, for the dataset
    /// (with --hub) and for `hub:` checkpoints (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
}

impl HubArgs {
    /// The Hub options when `--hub` is given.
    pub fn options(&self) -> Option<HubOptions> {
        self.hub.then(|| {
            hub_options(
                self.hub_cache.clone(),
                self.hub_revision.clone(),
                self.offline,
            )
        })
    }
}

/// How to optimise.
#[derive(Args, Clone, Debug)]
pub struct OptimArgs {
    /// Epochs (at least 1; `kdprune eval` scores a checkpoint as it is).
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
    pub epochs: usize,
    /// Mini-batch size.
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
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

impl OptimArgs {
    /// The optimisation these flags describe.
    pub fn optim(&self) -> Optim {
        Optim {
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            nesterov: !self.no_nesterov,
            warmup_epochs: self.warmup_epochs,
            augment: self.augment,
        }
    }
}

/// The hyper-parameters of the logit distillation terms.
#[derive(Args, Clone, Debug)]
pub struct KdArgs {
    /// Temperature T of kd, ca-kld and dkd.
    #[arg(long, default_value_t = DEFAULT_TEMPERATURE)]
    pub temperature: f64,
    /// Weight α of the distillation term, L = α·KD + (1−α)·CE (the default
    /// weight of kd/ca-kld in a loss specification, 1−α that of ce beside them).
    #[arg(long, default_value_t = DEFAULT_ALPHA)]
    pub alpha: f64,
    /// CA-KLD β: `confidence`, `raw-confidence` (the teacher's top-1
    /// probability of its raw logits at T = 1) or a number in [0, 1].
    #[arg(long, default_value = "confidence")]
    pub beta: String,
    /// CA-KLD's logit standardisation: divide by the `population` or the
    /// `sample` standard deviation.
    #[arg(long, default_value = "population")]
    pub logit_std: LogitStd,
}

/// A fixed-form loss: `α·KD + (1−α)·CE` or plain CE.
#[derive(Args, Clone, Debug)]
pub struct LossArgs {
    /// Loss: ce, kd (Hinton), ca-kld (needs --teacher for kd and ca-kld).
    #[arg(long, default_value = "ce")]
    pub loss: String,
    #[command(flatten)]
    pub kd: KdArgs,
}

impl LossArgs {
    /// The loss these flags describe, `name` instead of `--loss` if given.
    pub fn config(&self, name: Option<&str>) -> anyhow::Result<LossConfig> {
        let beta: Beta = self.kd.beta.parse()?;
        Ok(LossConfig::named(
            name.unwrap_or(&self.loss),
            self.kd.temperature,
            self.kd.alpha,
            beta,
        )?
        .with_logit_std(self.kd.logit_std))
    }
}

/// The objective: which loss terms, their weights and hyper-parameters.
#[derive(Args, Clone, Debug)]
pub struct ObjectiveArgs {
    /// Loss: NAME[:WEIGHT] terms joined by `,` or `+`, NAME one of ce, kd
    /// (Hinton), ca-kld, dkd, fitnet, at, rkd. Examples: `kd` (= ce:0.1+kd:0.9
    /// with --alpha 0.9), `ce:0.1,kd:0.9`, `at` (= ce:1+at:1000), `kd+at:1000`.
    /// Default weights: kd/ca-kld α, dkd 1, fitnet 100, at 1000, rkd 1; CE is
    /// added unless named, with weight 1−α beside kd/ca-kld, else 1 (`ce:0`
    /// drops it). Every term but ce needs --teacher.
    /// [default: kd for distill, ce for retrain]
    #[arg(long, verbatim_doc_comment)]
    pub loss: Option<String>,
    /// Feature pairs of fitnet/at/rkd: `s.NAME=t.NAME` joined by `,` (NAME alone:
    /// the same name on both sides), used by every feature term. Defaults: at,
    /// every feature map both models share by name; fitnet, the last shared map
    /// (else the first shared vector); rkd, the student's last feature with the
    /// teacher's last feature.
    #[arg(long, verbatim_doc_comment)]
    pub feature_pairs: Option<String>,
    #[command(flatten)]
    pub kd: KdArgs,
    /// DKD weight of the target-class term (TCKD).
    #[arg(long, default_value_t = DkdConfig::default().alpha)]
    pub dkd_alpha: f64,
    /// DKD weight of the non-target term (NCKD).
    #[arg(long, default_value_t = DkdConfig::default().beta)]
    pub dkd_beta: f64,
    /// DKD warm-up epochs, factor min(epoch/warm-up, 1) (0: none; the paper
    /// warms up over 20 of its 240 epochs).
    #[arg(long, default_value_t = DkdConfig::default().warmup_epochs)]
    pub dkd_warmup: usize,
    /// Attention-transfer exponent p of |f|^p.
    #[arg(long, default_value_t = kd_core::losses::AttentionConfig::default().p)]
    pub at_p: f64,
    /// RKD weight of the distance loss.
    #[arg(long, default_value_t = RkdConfig::default().distance_weight)]
    pub rkd_distance_weight: f64,
    /// RKD weight of the angle loss.
    #[arg(long, default_value_t = RkdConfig::default().angle_weight)]
    pub rkd_angle_weight: f64,
}

impl ObjectiveArgs {
    /// The objective these flags describe, `default` when `--loss` is absent.
    pub fn spec(&self, default: &str) -> anyhow::Result<ObjectiveSpec> {
        Ok(ObjectiveSpec {
            loss: self.loss.clone().unwrap_or_else(|| default.into()),
            params: TermParams {
                alpha: self.kd.alpha,
                temperature: self.kd.temperature,
                beta: self.kd.beta.parse()?,
                std: self.kd.logit_std,
                dkd_alpha: self.dkd_alpha,
                dkd_beta: self.dkd_beta,
                dkd_warmup: self.dkd_warmup,
                at_p: self.at_p,
                rkd_distance: self.rkd_distance_weight,
                rkd_angle: self.rkd_angle_weight,
            },
            feature_pairs: self.feature_pairs.clone(),
        })
    }
}

/// Where `kdprune eval` runs the network.
#[derive(Clone, Copy, Debug)]
pub enum Engine {
    /// kdprune's inference runtime with this layer choice.
    Runtime(kdprune_models::infer::LayerChoice),
    /// candle's training forward pass.
    Candle,
}

/// `--layers`: `auto` (sparse at or below the runtime's crossover density
/// for the layer's kind),
/// `dense`, `sparse`, a density such as `0.2` (sparse at or below it), or
/// `candle` (the training forward pass instead of the runtime).
pub fn parse_layers(s: &str) -> Result<Engine, String> {
    use kdprune_models::infer::LayerChoice;
    match s {
        "auto" => Ok(Engine::Runtime(LayerChoice::default())),
        "dense" => Ok(Engine::Runtime(LayerChoice::Dense)),
        "sparse" => Ok(Engine::Runtime(LayerChoice::Sparse)),
        "candle" => Ok(Engine::Candle),
        other => match other.parse::<f64>() {
            Ok(d) if (0.0..=1.0).contains(&d) => Ok(Engine::Runtime(LayerChoice::Auto(d))),
            _ => Err(format!(
                "'{other}': expected auto, dense, sparse, candle or a density in [0, 1]"
            )),
        },
    }
}

/// A count of at least 1 (`--epochs`, `--batch-size`): 0 is refused while
/// parsing, before any data is read.
pub fn at_least_one(s: &str) -> Result<usize, String> {
    count(
        s,
        "must be at least 1 (kdprune eval scores a checkpoint without training)",
    )
}

/// A count of at least 1 (samples, batches).
pub fn positive_count(s: &str) -> Result<usize, String> {
    count(s, "must be at least 1")
}

/// `s` as a count, 0 refused with `zero`.
fn count(s: &str, zero: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err(zero.into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a count: {e}")),
    }
}
