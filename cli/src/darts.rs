//! `kdprune search darts`: DARTS's first-order search (Liu et al. 2019,
//! §2.3 with ξ = 0), the discretisation of its cell, and the discrete
//! network trained from scratch.
//!
//! The training set is split once, by the seed, into two halves: each search
//! step first moves the architecture parameters on a batch of the second
//! half (Adam, β = (0.5, 0.999), decoupled weight decay — DARTS couples it),
//! then the weights on a batch of the first (SGD with momentum, cosine
//! learning rate; DARTS also clips the gradient norm at 5, here not). The
//! genotype is derived after every epoch; the last one is trained from its
//! own seeded initialisation on the whole training set and tested (the
//! search may see fewer samples: `search_samples`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use kd_core::{
    Batcher, LossConfig, LrSchedule, NoHook, Progress, Samples, Sgd, SgdConfig, TrainConfig,
};
use kdprune_data::Augment;
use kdprune_models::darts::{DartsConfig, DartsNetwork, Genotype};
use serde::{Deserialize, Serialize};

use crate::files::write_atomic;
use crate::jobs::DataSpec;
use crate::training::{train_resumable, Bars};

/// The search's and the final training's settings (`--config FILE`, TOML;
/// every field optional).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DartsSearchConfig {
    /// Channels of the search network's first cells.
    pub channels: usize,
    /// Cells of the search network.
    pub layers: usize,
    /// Search epochs (passes over the weights' half).
    pub epochs: usize,
    /// Batch size of the search and of the final training.
    pub batch_size: usize,
    /// Weights' learning rate (cosine to `min_lr`).
    pub lr: f64,
    /// Weights' final learning rate.
    pub min_lr: f64,
    /// Weights' momentum.
    pub momentum: f64,
    /// Weights' L2 weight decay.
    pub weight_decay: f64,
    /// Architecture parameters' learning rate (Adam).
    pub alpha_lr: f64,
    /// Architecture parameters' weight decay.
    pub alpha_weight_decay: f64,
    /// Channels of the discrete network.
    pub train_channels: usize,
    /// Cells of the discrete network.
    pub train_layers: usize,
    /// Epochs of the discrete network's training.
    pub train_epochs: usize,
    /// Its learning rate (SGD, Nesterov momentum 0.9, weight decay 3e-4,
    /// cosine to 0).
    pub train_lr: f64,
    /// Search on only this many training samples (the first of the
    /// seeded shuffle, half for each side): a budget. The final training
    /// always uses the whole training set.
    pub search_samples: Option<usize>,
    /// Train the discrete network on only this many training samples (the
    /// first of the same shuffle): a budget for tests and quick looks; a
    /// comparison with a network trained on the whole set leaves it unset.
    pub train_samples: Option<usize>,
    /// A network of the zoo (`resnet20`, …) trained exactly as the discrete
    /// network (same samples, epochs, optimiser, batch order and seed) and
    /// tested beside it: the hand-designed reference of a search.
    pub baseline: Option<String>,
}

impl Default for DartsSearchConfig {
    /// DARTS's CIFAR settings scaled down for two CPU cores: a search network
    /// of 5 cells at C = 8, a discrete one of 8 cells at C = 16.
    fn default() -> Self {
        Self {
            channels: 8,
            layers: 5,
            epochs: 10,
            batch_size: 64,
            lr: 0.025,
            min_lr: 0.001,
            momentum: 0.9,
            weight_decay: 3e-4,
            alpha_lr: 3e-4,
            alpha_weight_decay: 1e-3,
            train_channels: 16,
            train_layers: 8,
            train_epochs: 20,
            train_lr: 0.025,
            search_samples: None,
            train_samples: None,
            baseline: None,
        }
    }
}

impl DartsSearchConfig {
    /// The settings of `path` (TOML).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid DARTS config {}", path.display()))
    }

    fn validate(&self) -> Result<()> {
        let positive = [
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("train_epochs", self.train_epochs),
        ];
        for (name, v) in positive {
            anyhow::ensure!(v > 0, "{name} must be at least 1");
        }
        for (name, v) in [
            ("lr", self.lr),
            ("alpha_lr", self.alpha_lr),
            ("train_lr", self.train_lr),
        ] {
            anyhow::ensure!(v.is_finite() && v > 0.0, "{name} must be > 0, got {v}");
        }
        for (name, v) in [
            ("min_lr", self.min_lr),
            ("momentum", self.momentum),
            ("weight_decay", self.weight_decay),
            ("alpha_weight_decay", self.alpha_weight_decay),
        ] {
            anyhow::ensure!(v.is_finite() && v >= 0.0, "{name} must be ≥ 0, got {v}");
        }
        Ok(())
    }
}

/// One DARTS search and the training of its cell.
#[derive(Clone, Debug)]
pub struct DartsSearchJob {
    /// The data (default digits) and the seed.
    pub data: DataSpec,
    /// The settings.
    pub config: DartsSearchConfig,
    /// Output folder: `report.json`, `model.safetensors`.
    pub out: PathBuf,
    /// Progress on stderr.
    pub verbose: bool,
}

/// What a search leaves (also `report.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DartsReport {
    /// Dataset and seed.
    pub dataset: String,
    /// The seed of the split, initialisations and batch orders.
    pub seed: u64,
    /// The settings.
    pub config: DartsSearchConfig,
    /// The genotype derived after each search epoch.
    pub genotypes: Vec<Genotype>,
    /// The final genotype (the last of `genotypes`).
    pub genotype: Genotype,
    /// Parameters of the search network (architecture parameters excluded).
    pub search_params: usize,
    /// Parameters and MACs of the discrete network.
    pub params: usize,
    /// MACs of one sample's forward pass.
    pub macs: u64,
    /// Test accuracy of the discrete network after each training epoch.
    pub test_accuracy: Vec<f64>,
    /// Seconds of the search and of the final training.
    pub search_secs: f64,
    /// Seconds of the final training.
    pub train_secs: f64,
    /// The hand-designed reference, when the settings name one.
    pub baseline: Option<BaselineReport>,
}

/// The zoo network trained beside the discrete one.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BaselineReport {
    /// Its architecture name.
    pub model: String,
    /// Its parameters.
    pub params: usize,
    /// MACs of one sample's forward pass.
    pub macs: u64,
    /// Test accuracy after each training epoch.
    pub test_accuracy: Vec<f64>,
    /// Seconds of its training.
    pub train_secs: f64,
}

/// Salt of the seed of the split into the two halves.
const SPLIT_SALT: u64 = 0x5EA2_C45E_A2C4_5EA2;

/// Runs the search, trains the derived network, writes the folder.
pub fn search_darts(job: &DartsSearchJob, device: &Device) -> Result<DartsReport> {
    crate::files::check_out_dir(&job.out)?;
    let cfg = &job.config;
    cfg.validate()?;
    let (data, seed) = job.data.load(None)?;
    // an unknown baseline fails before the search, not after it
    let baseline_config = cfg
        .baseline
        .as_deref()
        .map(|name| {
            kdprune_models::ModelConfig::from_name(name, data.input_shape(), data.num_classes())
                .with_context(|| format!("baseline {name}"))
        })
        .transpose()?;
    let views = data.views(Augment::NONE);
    let n = views.train.len();
    anyhow::ensure!(n >= 2, "the training set needs at least 2 samples");
    let order_all = Batcher::new(n, n, true, seed ^ SPLIT_SALT)
        .epoch(0)
        .remove(0);
    let mut order = order_all.clone();
    if let Some(keep) = cfg.search_samples {
        anyhow::ensure!(keep >= 2, "search_samples must be at least 2");
        order.truncate(keep);
    }
    let n = order.len();
    let (weights_half, alpha_half) = order.split_at(n / 2);
    let net_config = |channels, layers| DartsConfig {
        input: data.input_shape(),
        classes: data.num_classes(),
        channels,
        layers,
    };
    let net = DartsNetwork::search(net_config(cfg.channels, cfg.layers), seed, device)
        .context("search network")?;
    let mut sgd = Sgd::new(
        &kd_core::Network::named_vars(&net),
        SgdConfig {
            lr: cfg.lr,
            momentum: cfg.momentum,
            nesterov: false,
            weight_decay: cfg.weight_decay,
        },
    )?;
    let alphas: Vec<_> = net.alpha_vars().into_iter().map(|(_, v)| v).collect();
    let mut adam = AdamW::new(
        alphas,
        ParamsAdamW {
            lr: cfg.alpha_lr,
            beta1: 0.5,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: cfg.alpha_weight_decay,
        },
    )?;
    let w_batches = Batcher::new(weights_half.len(), cfg.batch_size, true, seed);
    let a_batches = Batcher::new(alpha_half.len(), cfg.batch_size, true, seed ^ 1);
    let steps = w_batches.num_batches();
    let schedule = LrSchedule::Cosine {
        warmup_steps: 0,
        total_steps: cfg.epochs * steps,
        min_lr: cfg.min_lr,
    };
    let start = Instant::now();
    let mut genotypes = Vec::with_capacity(cfg.epochs);
    let mut bars = Bars::new("darts-search", job.verbose);
    let mut step = 0;
    for epoch in 0..cfg.epochs {
        let a_epoch = a_batches.epoch(epoch);
        bars.start_epoch(epoch, cfg.epochs, steps);
        let mut loss_sum = 0.0;
        for (i, batch) in w_batches.epoch(epoch).iter().enumerate() {
            // the architecture on a batch of its half ...
            let idx: Vec<usize> = a_epoch[i % a_epoch.len()]
                .iter()
                .map(|&j| alpha_half[j])
                .collect();
            let (xs, ys) = views.train.batch(&idx, device)?;
            let logits = net.forward_t(&xs, true)?.logits;
            let loss = candle_nn::loss::cross_entropy(&logits, &ys)?;
            adam.step(&loss.backward()?)?;
            // ... then the weights on a batch of theirs
            let idx: Vec<usize> = batch.iter().map(|&j| weights_half[j]).collect();
            let (xs, ys) = views.train.batch(&idx, device)?;
            let logits = net.forward_t(&xs, true)?.logits;
            let loss = candle_nn::loss::cross_entropy(&logits, &ys)?;
            let value = loss.to_scalar::<f32>()?;
            if !value.is_finite() {
                bail!(
                    "the search loss is {value} at epoch {epoch}, step {i}: lower lr or alpha_lr"
                );
            }
            loss_sum += f64::from(value);
            sgd.step(&loss.backward()?, schedule.lr(cfg.lr, step))?;
            step += 1;
            bars.step(value);
        }
        bars.end_steps();
        let genotype = net.derive_genotype()?;
        if job.verbose {
            eprintln!(
                "[darts-search] epoch {}/{}: loss {:.4}; {genotype}",
                epoch + 1,
                cfg.epochs,
                loss_sum / steps as f64
            );
        }
        genotypes.push(genotype);
    }
    drop(bars);
    let search_secs = start.elapsed().as_secs_f64();
    let genotype = genotypes.last().cloned().context("no search epoch")?;

    let discrete_cfg = net_config(cfg.train_channels, cfg.train_layers);
    let discrete = DartsNetwork::discrete(discrete_cfg.clone(), genotype.clone(), seed, device)
        .context("discrete network")?;
    let train = TrainConfig {
        epochs: cfg.train_epochs,
        batch_size: cfg.batch_size,
        sgd: SgdConfig {
            lr: cfg.train_lr,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 3e-4,
        },
        warmup_epochs: 0,
        min_lr: 0.0,
        objective: LossConfig::CrossEntropy.into(),
        seed,
    };
    let start = Instant::now();
    let subset = Subset {
        inner: &views.train,
        idx: order_all
            .iter()
            .copied()
            .take(cfg.train_samples.unwrap_or(usize::MAX))
            .collect(),
    };
    anyhow::ensure!(subset.idx.len() >= 2, "train_samples must be at least 2");
    let train_data = kd_core::TrainData {
        train: &subset,
        test: &views.test,
    };
    let history = train_resumable(
        &discrete,
        None,
        &train_data,
        &train,
        &mut NoHook,
        "darts-train",
        job.verbose,
        None,
        None,
    )?;
    let train_secs = start.elapsed().as_secs_f64();
    let baseline = match (&cfg.baseline, baseline_config) {
        (Some(name), Some(model_cfg)) => {
            let model = kdprune_models::Model::new(model_cfg.clone(), seed, device)?;
            let start = Instant::now();
            let history = train_resumable(
                &model,
                None,
                &train_data,
                &train,
                &mut NoHook,
                "baseline-train",
                job.verbose,
                None,
                None,
            )?;
            Some(BaselineReport {
                model: name.clone(),
                params: model_cfg.num_params(),
                macs: model_cfg.macs(),
                test_accuracy: history.epochs.iter().map(|e| e.test_accuracy).collect(),
                train_secs: start.elapsed().as_secs_f64(),
            })
        }
        _ => None,
    };
    let report = DartsReport {
        dataset: data.name.to_string(),
        seed,
        config: cfg.clone(),
        genotypes,
        genotype: genotype.clone(),
        search_params: net.num_params(),
        params: discrete.num_params(),
        macs: discrete.macs(),
        test_accuracy: history.epochs.iter().map(|e| e.test_accuracy).collect(),
        search_secs,
        train_secs,
        baseline,
    };
    save_network(&job.out.join("model.safetensors"), &discrete, &discrete_cfg)?;
    write_atomic(
        &job.out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(report)
}

/// Some samples of a set, by index.
struct Subset<'a> {
    inner: &'a dyn Samples,
    idx: Vec<usize>,
}

impl Samples for Subset<'_> {
    fn len(&self) -> usize {
        self.idx.len()
    }

    fn batch(
        &self,
        idx: &[usize],
        device: &Device,
    ) -> kd_core::Result<(candle_core::Tensor, candle_core::Tensor)> {
        let mapped: Vec<usize> = idx.iter().map(|&i| self.idx[i]).collect();
        self.inner.batch(&mapped, device)
    }
}

/// The discrete network's weights and running statistics, with its config
/// and genotype (JSON) in the metadata.
fn save_network(path: &Path, net: &DartsNetwork, config: &DartsConfig) -> Result<()> {
    let metadata = HashMap::from([
        ("format".to_string(), "kdprune-darts".to_string()),
        ("config".to_string(), serde_json::to_string(config)?),
        (
            "genotype".to_string(),
            serde_json::to_string(net.genotype().context("a discrete network")?)?,
        ),
    ]);
    let state = kd_core::Network::state(net)?;
    Ok(kdprune_models::checkpoint::write_tensors(
        path, &state, metadata,
    )?)
}
