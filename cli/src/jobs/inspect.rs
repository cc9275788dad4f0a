//! Looking at checkpoints and architectures: test accuracy, the mask
//! invariant, the zoo with its sizes.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::Device;
use kdprune_data::DatasetName;
use kdprune_models::Checkpoint;
use kdprune_models::{ModelConfig, ZooArch};
use prune_core::{MaskSet, ParamFilter, SparsityReport};

use super::DataSpec;
use crate::checkpoints::{check_fits, load_frozen_model, load_model, prunable_names};
use crate::infer::{runtime_accuracy, runtime_net};
use kdprune_models::infer::{LayerChoice, LayerInfo};

/// Test accuracy of the checkpoint at `path` on `data` (defaults: the
/// checkpoint's dataset and seed); with `expected`, fails unless the
/// checkpoint holds that architecture.
///
/// On the CPU, networks the inference runtime covers (MLPs, LeNet-5, the
/// CIFAR ResNets) run on
/// it, each layer dense or sparse by its density (`choice`); the others, and
/// every network on a GPU, through candle. The report says which.
pub fn evaluate_checkpoint(
    path: &Path,
    expected: Option<&str>,
    data: &DataSpec,
    choice: LayerChoice,
    device: &Device,
) -> Result<Evaluation> {
    evaluate(path, expected, data, Some(choice), None, device)
}

/// [`evaluate_checkpoint`] through candle's forward pass, not the runtime.
pub fn evaluate_checkpoint_with_candle(
    path: &Path,
    expected: Option<&str>,
    data: &DataSpec,
    device: &Device,
) -> Result<Evaluation> {
    evaluate(path, expected, data, None, None, device)
}

/// [`evaluate_checkpoint_with_candle`] with every elastic depthwise kernel
/// run at its centre `kernel × kernel` (a Once-for-All sub-network, without
/// retraining); with `recalibrate`, its batch norms' running statistics are
/// first recomputed on that many training samples at that kernel size
/// ([`kd_core::recalibrate_batch_norm`], drawn by the data's seed), as
/// Once-for-All does for each sub-network it evaluates.
pub fn evaluate_checkpoint_at_kernel(
    path: &Path,
    expected: Option<&str>,
    data: &DataSpec,
    kernel: usize,
    recalibrate: Option<usize>,
    device: &Device,
) -> Result<Evaluation> {
    evaluate(
        path,
        expected,
        data,
        None,
        Some((kernel, recalibrate)),
        device,
    )
}

/// Samples per batch-norm recalibration batch.
const RECALIBRATION_BATCH: usize = 32;

fn evaluate(
    path: &Path,
    expected: Option<&str>,
    data: &DataSpec,
    choice: Option<LayerChoice>,
    kernel: Option<(usize, Option<usize>)>,
    device: &Device,
) -> Result<Evaluation> {
    let (model, _, ckpt) = load_frozen_model(path, device)?;
    if let Some((k, _)) = kernel {
        model
            .set_kernel(k)
            .with_context(|| format!("--kernel {k} for {}", path.display()))?;
    }
    let (data, seed) = data.load(Some(&ckpt.metadata))?;
    if let Some(name) = expected {
        let expected = ModelConfig::from_name(name, data.input_shape(), data.num_classes())?;
        ckpt.expect_config(&expected)?;
    }
    check_fits(&model, &data, "the checkpoint")?;
    if let Some((_, Some(count))) = kernel {
        let train = data.views(kdprune_data::Augment::NONE).train;
        kd_core::recalibrate_batch_norm(&model, &train, count, RECALIBRATION_BATCH, seed)
            .context("--recalibrate-bn")?;
    }
    let test = data.test_view();
    if let (true, Some(choice)) = (device.is_cpu(), choice) {
        if let Ok(net) = runtime_net(&ckpt, choice) {
            return Ok(Evaluation {
                accuracy: runtime_accuracy(&net, &test, 512)?,
                layers: Some(net.layers()),
            });
        }
    }
    Ok(Evaluation {
        accuracy: kd_core::evaluate(&model, &test, 512)?,
        layers: None,
    })
}

/// What [`evaluate_checkpoint`] measured.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// Test accuracy.
    pub accuracy: f64,
    /// The runtime's layers (dense or sparse), or `None` when candle ran it.
    pub layers: Option<Vec<LayerInfo>>,
}

/// Per-layer sparsity of the checkpoint at `path`, checked against its masks
/// (the masked weights, or the default prunable ones when it has none).
pub fn verify_checkpoint(path: &Path, device: &Device) -> Result<SparsityReport> {
    let (_, _, ckpt) = load_model(path, device)?;
    mask_report(&ckpt, device)
}

/// [`verify_checkpoint`] of a checkpoint already loaded.
pub(super) fn mask_report(ckpt: &Checkpoint, device: &Device) -> Result<SparsityReport> {
    let masks = MaskSet::from_u8(&ckpt.masks, device)?;
    let names: Vec<String> = if masks.is_empty() {
        prunable_names(&ckpt.config, &ParamFilter::default())
    } else {
        masks.names().map(String::from).collect()
    };
    Ok(prune_core::report::sparsity_report(
        &ckpt.tensors,
        &names,
        Some(&masks),
    )?)
}

/// A checkpoint's architecture against the same network unpruned: each
/// declared channel group's width, and the parameters and MACs of both.
#[derive(Clone, Debug, PartialEq)]
pub struct WidthReport {
    /// The architecture, e.g. `resnet20 (input 1x8x8, 10 classes)`.
    pub model: String,
    /// Per channel group: name, the network's width, the checkpoint's (0
    /// for a layer of a removed block).
    pub groups: Vec<(String, usize, usize)>,
    /// The residual blocks removed whole.
    pub removed_blocks: Vec<String>,
    /// Parameters: the unpruned network's, the checkpoint's.
    pub params: (usize, usize),
    /// Multiply–accumulates of one sample's forward pass, likewise.
    pub macs: (u64, u64),
}

/// The [`WidthReport`] of the checkpoint at `path` (`kdprune models
/// --checkpoint`).
pub fn checkpoint_widths(path: &Path) -> Result<WidthReport> {
    let ckpt = kdprune_models::checkpoint::load(path, &Device::Cpu)
        .with_context(|| format!("cannot load checkpoint {}", path.display()))?;
    let now = &ckpt.config;
    let full = now.with_default_widths();
    let defaults = full.width_groups();
    let current: std::collections::BTreeMap<String, usize> =
        now.width_groups().into_iter().collect();
    Ok(WidthReport {
        model: now.to_string(),
        groups: defaults
            .into_iter()
            .map(|(name, d)| {
                // a layer the checkpoint lacks is in a removed block
                let w = current.get(&name).copied().unwrap_or(0);
                (name, d, w)
            })
            .collect(),
        removed_blocks: now
            .residual_blocks()
            .into_iter()
            .filter(|(_, kept)| !kept)
            .map(|(b, _)| b)
            .collect(),
        params: (full.num_params(), now.num_params()),
        macs: (full.macs(), now.macs()),
    })
}

/// One architecture of the zoo, sized for a dataset.
#[derive(Clone, Debug)]
pub struct ZooEntry {
    /// Its name.
    pub name: String,
    /// What it is.
    pub description: &'static str,
    /// Parameters and multiply-accumulates of one forward pass, or why it
    /// cannot take the dataset's input.
    pub size: std::result::Result<(usize, u64), String>,
}

/// Every architecture, sized for `dataset`'s input shape and classes.
pub fn model_zoo(dataset: DatasetName) -> Vec<ZooEntry> {
    let input = dataset.image_shape();
    let classes = dataset.num_classes();
    let mut names: Vec<(String, &'static str)> = vec![
        ("lenet-300-100".into(), "MLP 300-100 (LeCun et al. 1998)"),
        (
            "mlp-1200-1200".into(),
            "MLP 1200-1200 (Hinton et al. 2015's teacher)",
        ),
        ("lenet5".into(), "LeNet-5, ReLU and max-pool"),
        ("lenet5-x4".into(), "LeNet-5 with 4x widths"),
    ];
    names.extend(
        ZooArch::ALL
            .iter()
            .map(|a| (a.name().to_string(), a.description())),
    );
    names
        .into_iter()
        .map(|(name, description)| {
            let size = ModelConfig::from_name(&name, input, classes)
                .map(|cfg| (cfg.num_params(), cfg.macs()))
                .map_err(|e| e.to_string());
            ZooEntry {
                name,
                description,
                size,
            }
        })
        .collect()
}
