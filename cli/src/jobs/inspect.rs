//! Looking at checkpoints and architectures: test accuracy, the mask
//! invariant, the zoo with its sizes.

use std::path::Path;

use anyhow::Result;
use candle_core::Device;
use kdprune_data::DatasetName;
use kdprune_models::{ModelConfig, ZooArch};
use prune_core::{ParamFilter, SparsityReport};

use super::DataSpec;
use crate::checkpoints::{check_fits, load_model, prunable_names};

/// Test accuracy of the checkpoint at `path` on `data` (defaults: the
/// checkpoint's dataset and seed); with `expected`, fails unless the
/// checkpoint holds that architecture.
pub fn evaluate_checkpoint(
    path: &Path,
    expected: Option<&str>,
    data: &DataSpec,
    device: &Device,
) -> Result<f64> {
    let (model, _, ckpt) = load_model(path, device)?;
    let (data, _) = data.load(Some(&ckpt.metadata))?;
    if let Some(name) = expected {
        let expected = ModelConfig::from_name(name, data.input_shape(), data.num_classes())?;
        ckpt.expect_config(&expected)?;
    }
    check_fits(&model, &data, "the checkpoint")?;
    Ok(kd_core::evaluate(&model, &data.test_view(), 512)?)
}

/// Per-layer sparsity of the checkpoint at `path`, checked against its masks
/// (the masked weights, or the default prunable ones when it has none).
pub fn verify_checkpoint(path: &Path, device: &Device) -> Result<SparsityReport> {
    let (model, masks, _) = load_model(path, device)?;
    let names: Vec<String> = if masks.is_empty() {
        prunable_names(model.config(), &ParamFilter::default())
    } else {
        masks.names().map(String::from).collect()
    };
    Ok(prune_core::report::sparsity_report(
        &model.tensors()?,
        &names,
        Some(&masks),
    )?)
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
