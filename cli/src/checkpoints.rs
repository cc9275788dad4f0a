//! Models from names and checkpoints: building, copying, saving with
//! metadata and masks, loading with the checks that keep a user from
//! evaluating on the wrong data.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use kdprune_data::{DatasetName, Normalization};
use kdprune_models::checkpoint::{self, Checkpoint};
use kdprune_models::{Model, ModelConfig};
use prune_core::{MaskSet, NamedTensors, ParamFilter};

use crate::data::Data;

/// A freshly initialised model of the named architecture for `data`.
pub fn new_model(name: &str, data: &Data, seed: u64, device: &Device) -> Result<Model> {
    let cfg = ModelConfig::from_name(name, data.input_shape(), data.num_classes())?;
    Ok(Model::new(cfg, seed, device)?)
}

/// A deep copy of `model` (same config, same values).
pub fn clone_model(model: &Model) -> Result<Model> {
    let copy = Model::new(model.config().clone(), 0, model.device())?;
    copy.load_tensors(&model.tensors()?)?;
    Ok(copy)
}

/// Names of the prunable weights of `cfg`, in forward order.
pub fn prunable_names(cfg: &ModelConfig, filter: &ParamFilter) -> Vec<String> {
    filter.prunable(&cfg.param_shapes())
}

/// The filter of the `keep_first` / `keep_last` settings.
pub fn filter(keep_first: bool, keep_last: bool) -> ParamFilter {
    ParamFilter {
        keep_first,
        keep_last,
        ..ParamFilter::default()
    }
}

/// The tensors named in `names`.
pub fn select(tensors: &NamedTensors, names: &[String]) -> Result<NamedTensors> {
    names
        .iter()
        .map(|n| {
            let t = tensors
                .get(n)
                .with_context(|| format!("model has no tensor `{n}`"))?;
            Ok((n.clone(), t.clone()))
        })
        .collect()
}

/// Measured sparsity of the prunable weights and the number of non-zero
/// parameters of the whole model.
pub fn measure(model: &Model, prunable: &[String]) -> Result<(f64, usize)> {
    let tensors = model.tensors()?;
    let report = prune_core::report::sparsity_report(&tensors, prunable, None)?;
    let mut nonzero = 0usize;
    for t in tensors.values() {
        let nz = t
            .ne(0f32)?
            .to_dtype(DType::U32)?
            .sum_all()?
            .to_scalar::<u32>()?;
        nonzero += nz as usize;
    }
    Ok((report.global_sparsity(), nonzero))
}

/// Applies `masks` to the weights of `model` (w ← w ⊙ m).
pub fn apply_masks(model: &Model, masks: &MaskSet) -> Result<()> {
    masks.apply_to_vars(&model.named_vars())?;
    Ok(())
}

/// Metadata stored with every checkpoint: the dataset, the seed, the stage
/// that wrote it and the normalisation of the data.
pub fn metadata(
    dataset: DatasetName,
    seed: u64,
    stage: &str,
    norm: &Normalization,
) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("dataset".into(), dataset.to_string());
    m.insert("seed".into(), seed.to_string());
    m.insert("stage".into(), stage.into());
    if let Ok(n) = serde_json::to_string(norm) {
        m.insert("normalization".into(), n);
    }
    m
}

/// Writes `model` (and its masks) atomically.
pub fn save_model(
    path: &Path,
    model: &Model,
    masks: Option<&MaskSet>,
    meta: BTreeMap<String, String>,
) -> Result<()> {
    let ckpt = Checkpoint {
        config: model.config().clone(),
        tensors: model.tensors()?,
        masks: match masks {
            Some(m) => m.to_u8()?,
            None => BTreeMap::new(),
        },
        metadata: meta,
        quantized: BTreeMap::new(),
    };
    checkpoint::save(path, &ckpt)
        .with_context(|| format!("cannot write checkpoint {}", path.display()))
}

/// [`save_model`] with the [`metadata`] of `data`, `seed` and `stage`.
pub fn save_stage(
    path: &Path,
    model: &Model,
    masks: Option<&MaskSet>,
    data: &Data,
    seed: u64,
    stage: &str,
) -> Result<()> {
    save_model(
        path,
        model,
        masks,
        metadata(data.name, seed, stage, &data.norm),
    )
}

/// Loads a checkpoint and builds its model; also returns its masks.
pub fn load_model(path: &Path, device: &Device) -> Result<(Model, MaskSet, Checkpoint)> {
    load(path, device, false)
}

/// [`load_model`] for evaluation only ([`Checkpoint::to_frozen_model`]): no
/// forward pass records a graph, so large networks evaluate in a fraction of
/// the memory; not trainable.
pub fn load_frozen_model(path: &Path, device: &Device) -> Result<(Model, MaskSet, Checkpoint)> {
    load(path, device, true)
}

fn load(path: &Path, device: &Device, frozen: bool) -> Result<(Model, MaskSet, Checkpoint)> {
    let ckpt = checkpoint::load(path, device)
        .with_context(|| format!("cannot load checkpoint {}", path.display()))?;
    let model = if frozen {
        ckpt.to_frozen_model(device)
    } else {
        ckpt.to_model(device)
    };
    let model = model.with_context(|| {
        format!(
            "checkpoint {} does not match its architecture",
            path.display()
        )
    })?;
    let masks = MaskSet::from_u8(&ckpt.masks, device)
        .with_context(|| format!("invalid masks in {}", path.display()))?;
    Ok((model, masks, ckpt))
}

/// Fails with a clear message when `model` was not built for `data`'s inputs
/// (a structurally pruned network fits where its unpruned one does).
pub fn check_fits(model: &Model, data: &Data, what: &str) -> Result<()> {
    let cfg = model.config();
    let expected = ModelConfig::from_name(&cfg.name(), data.input_shape(), data.num_classes())?;
    anyhow::ensure!(
        expected == cfg.with_default_widths(),
        "{what} ({}) was built for other inputs than dataset `{}` ({:?}, {} classes)",
        cfg.name(),
        data.name,
        data.input_shape(),
        data.num_classes()
    );
    Ok(())
}

/// Loads a trained model that must fit `data` and its split (a teacher, a
/// dense student): [`load_model`], [`check_fits`] and [`check_same_split`];
/// `what` names it in errors.
pub fn load_trained(
    path: &Path,
    data: &Data,
    seed: u64,
    device: &Device,
    what: &str,
) -> Result<Model> {
    let (model, _, ckpt) = load_model(path, device)?;
    check_fits(&model, data, what)?;
    check_same_split(&ckpt, path, data, seed)?;
    Ok(model)
}

/// Loads a teacher checkpoint and checks it fits the data and its split.
pub fn load_teacher(path: &Path, data: &Data, seed: u64, device: &Device) -> Result<Model> {
    load_trained(path, data, seed, device, "the teacher")
}

/// Fails when a checkpoint was trained on another dataset or, for datasets
/// whose train/test split depends on the seed (digits), on another split:
/// its "test" accuracy would then include training samples.
pub fn check_same_split(ckpt: &Checkpoint, path: &Path, data: &Data, seed: u64) -> Result<()> {
    let meta = &ckpt.metadata;
    if let Some(ds) = meta.get("dataset") {
        anyhow::ensure!(
            ds == &data.name.to_string(),
            "{} was trained on `{ds}`, not on `{}`",
            path.display(),
            data.name
        );
    }
    if data.name == DatasetName::Digits {
        if let Some(s) = meta.get("seed").and_then(|s| s.parse::<u64>().ok()) {
            anyhow::ensure!(
                s == seed,
                "{} was trained on the digits split of seed {s}; pass --seed {s} (the split depends on the seed)",
                path.display()
            );
        }
    }
    Ok(())
}
