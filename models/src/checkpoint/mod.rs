//! Checkpoints: weights, pruning masks and metadata in one safetensors file,
//! in one of four [`Encoding`]s that [`load`] tells apart by the file's
//! `kdprune.encoding` metadata.
//!
//! The native encoding ([`save`]), the one training writes:
//!
//! | entry | content |
//! |---|---|
//! | tensor `<name>` | a model tensor (`fc1.weight`, …), stored in its own dtype |
//! | tensor `mask.<name>` | the u8 mask (values 0/1) of tensor `<name>`, same shape |
//! | metadata `kdprune.format` | `"1"` |
//! | metadata `kdprune.model` | the [`ModelConfig`] as JSON |
//! | other metadata | free-form strings from the caller (dataset, seed, stage, …) |
//!
//! The export encodings ([`save_as`]): `dense` (PyTorch `state_dict` tensors,
//! no masks) and `sparse` (compressed-tensors' `sparse-bitmask`, see
//! [`bitmask`] and [`encodings`]).
//!
//! Keys starting with `kdprune.` are reserved for the format.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype as StDtype, SafeTensors, TensorView};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::model::Model;
use crate::quant::QuantizedWeight;

pub mod bitmask;
pub mod encodings;

pub use encodings::Encoding;

/// Metadata key of the [`Encoding`] (absent in native files).
pub const ENCODING_KEY: &str = "kdprune.encoding";
/// Metadata key of the format version.
pub const FORMAT_KEY: &str = "kdprune.format";
/// The format version written and accepted.
pub const FORMAT_VERSION: &str = "1";
/// Metadata key of the JSON [`ModelConfig`].
pub const MODEL_KEY: &str = "kdprune.model";
/// Prefix of the metadata keys owned by the format.
pub const RESERVED_PREFIX: &str = "kdprune.";
/// Prefix of mask tensor names in the file.
pub const MASK_PREFIX: &str = "mask.";

/// Everything a checkpoint file holds.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The architecture the tensors belong to.
    pub config: ModelConfig,
    /// Model tensors by name.
    pub tensors: BTreeMap<String, Tensor>,
    /// Pruning masks (u8, 0 = pruned, 1 = kept) keyed by the name of their tensor
    /// (stored as `mask.<name>` in the file).
    pub masks: BTreeMap<String, Tensor>,
    /// Free-form metadata (dataset, seed, stage, …); no key may start with `kdprune.`.
    pub metadata: BTreeMap<String, String>,
    /// The INT8 weights of a quantised checkpoint ([`Encoding::Int8`]) by
    /// tensor name, exactly as stored; `tensors` holds their dequantised
    /// values, so every command reads such a file. Empty otherwise.
    pub quantized: BTreeMap<String, QuantizedWeight>,
}

impl Checkpoint {
    /// A checkpoint of `model`'s current tensors (copies) with the given masks and metadata.
    pub fn from_model(
        model: &Model,
        masks: BTreeMap<String, Tensor>,
        metadata: BTreeMap<String, String>,
    ) -> Result<Self> {
        Ok(Self {
            config: model.config().clone(),
            tensors: model.tensors()?,
            masks,
            metadata,
            quantized: BTreeMap::new(),
        })
    }

    /// Builds a model of `self.config` on `device` holding these tensors; the
    /// names and shapes must match the architecture exactly (see
    /// [`Model::load_tensors`]). Masks are not applied.
    pub fn to_model(&self, device: &Device) -> Result<Model> {
        self.build_model(device, false)
    }

    /// [`Checkpoint::to_model`] for inference ([`Model::new_frozen`]): no
    /// forward pass records a graph; not trainable.
    pub fn to_frozen_model(&self, device: &Device) -> Result<Model> {
        self.build_model(device, true)
    }

    fn build_model(&self, device: &Device, frozen: bool) -> Result<Model> {
        // The tensors' shapes are compared with the config's before the model
        // is built, so a config that asks for more than the file holds fails
        // without allocating what it asks for (same checks, same order as
        // `Model::load_tensors`: stray names, then parameters and buffers by name).
        let params: BTreeMap<String, Vec<usize>> = self.config.param_shapes().into_iter().collect();
        let buffers: BTreeMap<String, Vec<usize>> = self
            .config
            .buffer_specs()
            .into_iter()
            .map(|b| (b.name, b.shape))
            .collect();
        if let Some(extra) = self
            .tensors
            .keys()
            .find(|n| !params.contains_key(*n) && !buffers.contains_key(*n))
        {
            return Err(ModelError::UnexpectedTensor(extra.clone()));
        }
        for (name, expected) in params.into_iter().chain(buffers) {
            let t = self
                .tensors
                .get(&name)
                .ok_or_else(|| ModelError::MissingTensor(name.clone()))?;
            if t.dims() != expected.as_slice() {
                return Err(ModelError::ShapeMismatch {
                    name,
                    expected,
                    got: t.dims().to_vec(),
                });
            }
        }
        let model = if frozen {
            Model::new_frozen(self.config.clone(), 0, device)?
        } else {
            Model::new(self.config.clone(), 0, device)?
        };
        model.load_tensors(&self.tensors)?;
        Ok(model)
    }

    /// Errors with [`ModelError::ArchitectureMismatch`] unless this checkpoint's
    /// configuration equals `expected`.
    pub fn expect_config(&self, expected: &ModelConfig) -> Result<()> {
        if &self.config == expected {
            Ok(())
        } else {
            Err(ModelError::ArchitectureMismatch {
                expected: expected.to_string(),
                found: self.config.to_string(),
            })
        }
    }
}

pub(crate) fn invalid(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Raw little-endian bytes of a tensor, as safetensors stores them, and its
/// safetensors dtype (u8, u32, i64, f32, f64; another dtype is an error naming
/// `name` and `path`). Shared by the checkpoint writers and resume points.
pub fn tensor_bytes(path: &Path, name: &str, t: &Tensor) -> Result<(StDtype, Vec<u8>)> {
    let flat = t.flatten_all()?.to_device(&Device::Cpu)?;
    let bytes = match t.dtype() {
        DType::U8 => flat.to_vec1::<u8>()?,
        DType::U32 => flat
            .to_vec1::<u32>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::I64 => flat
            .to_vec1::<i64>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::F32 => flat
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::F64 => flat
            .to_vec1::<f64>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        other => {
            return Err(invalid(
                path,
                format!("tensor '{name}' has dtype {other:?}; supported: u8, u32, i64, f32, f64"),
            ))
        }
    };
    Ok((t.dtype().into(), bytes))
}

/// Checks a mask against its tensor: u8, same shape, values in {0, 1}.
pub(crate) fn check_mask(
    path: &Path,
    name: &str,
    mask: &Tensor,
    tensors: &BTreeMap<String, Tensor>,
) -> Result<()> {
    let weight = tensors.get(name).ok_or_else(|| {
        invalid(
            path,
            format!("mask for '{name}', which is not a tensor of the checkpoint"),
        )
    })?;
    if mask.dtype() != DType::U8 {
        return Err(invalid(
            path,
            format!("mask of '{name}' has dtype {:?}, expected u8", mask.dtype()),
        ));
    }
    if mask.dims() != weight.dims() {
        return Err(invalid(
            path,
            format!(
                "mask of '{name}' has shape {:?}, its tensor {:?}",
                mask.dims(),
                weight.dims()
            ),
        ));
    }
    Ok(())
}

pub(crate) fn check_mask_values(path: &Path, name: &str, values: &[u8]) -> Result<()> {
    match values.iter().find(|&&v| v > 1) {
        Some(v) => Err(invalid(
            path,
            format!("mask of '{name}' holds {v}; masks hold only 0 and 1"),
        )),
        None => Ok(()),
    }
}

/// `<path>.tmp`, next to `path`.
/// `<path>.<pid>.tmp`: one per process, so that two processes writing the
/// same file (workers sharing a folder) never rename each other's.
fn tmp_path(path: &Path) -> PathBuf {
    let mut name: OsString = path.as_os_str().to_owned();
    name.push(format!(".{}.tmp", std::process::id()));
    PathBuf::from(name)
}

/// One tensor of a file being written: name, dtype, shape, little-endian bytes.
pub(crate) type Entry = (String, StDtype, Vec<usize>, Vec<u8>);

/// Writes `ckpt` to `path` atomically in the native encoding: the file is
/// written to `<path>.tmp`, synced, then renamed over `path`; missing parent
/// directories are created.
///
/// Refuses (with [`ModelError::Checkpoint`]) metadata keys starting with
/// `kdprune.`, tensor names starting with `mask.`, and masks that are not u8
/// 0/1 tensors shaped like a tensor of the checkpoint.
pub fn save(path: &Path, ckpt: &Checkpoint) -> Result<()> {
    save_as(path, ckpt, Encoding::Native)
}

/// Writes `ckpt` to `path` atomically in `encoding` (see [`save`] for what is
/// refused; [`Encoding::Dense`] drops the masks).
pub fn save_as(path: &Path, ckpt: &Checkpoint, encoding: Encoding) -> Result<()> {
    if let Some(key) = ckpt
        .metadata
        .keys()
        .find(|k| k.starts_with(RESERVED_PREFIX))
    {
        return Err(invalid(
            path,
            format!("metadata key '{key}' uses the reserved prefix '{RESERVED_PREFIX}'"),
        ));
    }
    if let Some(name) = ckpt.tensors.keys().find(|n| n.starts_with(MASK_PREFIX)) {
        return Err(invalid(
            path,
            format!("tensor name '{name}' uses the mask prefix '{MASK_PREFIX}'"),
        ));
    }
    for (name, mask) in &ckpt.masks {
        check_mask(path, name, mask, &ckpt.tensors)?;
    }
    let config_json = serde_json::to_string(&ckpt.config)
        .map_err(|e| invalid(path, format!("cannot serialise the model config: {e}")))?;
    let mut metadata: HashMap<String, String> = ckpt
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata.insert(FORMAT_KEY.to_string(), FORMAT_VERSION.to_string());
    metadata.insert(MODEL_KEY.to_string(), config_json);
    let entries = match encoding {
        Encoding::Native => native_entries(path, ckpt)?,
        other => {
            metadata.insert(ENCODING_KEY.to_string(), other.to_string());
            encodings::entries(path, ckpt, other, &mut metadata)?
        }
    };
    write_file(path, &entries, metadata)
}

/// The tensors of the native encoding: every tensor, then `mask.<name>`.
fn native_entries(path: &Path, ckpt: &Checkpoint) -> Result<Vec<Entry>> {
    let mut entries: Vec<Entry> = Vec::new();
    for (name, t) in &ckpt.tensors {
        let (dtype, bytes) = tensor_bytes(path, name, t)?;
        entries.push((name.clone(), dtype, t.dims().to_vec(), bytes));
    }
    for (name, mask) in &ckpt.masks {
        let (dtype, bytes) = tensor_bytes(path, name, mask)?;
        check_mask_values(path, name, &bytes)?;
        entries.push((
            format!("{MASK_PREFIX}{name}"),
            dtype,
            mask.dims().to_vec(),
            bytes,
        ));
    }
    Ok(entries)
}

/// Writes `tensors` as a plain safetensors file with `metadata`: header keys
/// sorted (the same tensors give the same bytes), through `<path>.tmp`,
/// synced, then renamed. For files that are not kdprune checkpoints (a
/// DARTS network, a resume point).
pub fn write_tensors(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let entries = tensors
        .iter()
        .map(|(name, t)| {
            let (dtype, bytes) = tensor_bytes(path, name, t)?;
            Ok((name.clone(), dtype, t.dims().to_vec(), bytes))
        })
        .collect::<Result<Vec<Entry>>>()?;
    write_file(path, &entries, metadata)
}

/// Serialises `entries` with `metadata` (header keys sorted) and writes them
/// to `path` through `<path>.tmp`, synced, then renamed.
fn write_file(path: &Path, entries: &[Entry], metadata: HashMap<String, String>) -> Result<()> {
    let views = entries
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|view| (name.as_str(), view))
                .map_err(|e| invalid(path, format!("tensor '{name}': {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let buffer = safetensors::serialize(views, Some(metadata))
        .map_err(|e| invalid(path, format!("cannot serialise: {e}")))?;
    let buffer = canonical_header(buffer).map_err(|e| invalid(path, e))?;

    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| ModelError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    write_atomic(path, &buffer)
}

/// Writes `bytes` to `path` through `<path>.tmp`, synced, then renamed; the
/// temporary file is removed on failure.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    if let Err(source) = write() {
        // Best effort: a partial temporary file is useless.
        let _ = std::fs::remove_file(&tmp);
        return Err(ModelError::Io { path: tmp, source });
    }
    if let Err(source) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(ModelError::Io {
            path: path.to_path_buf(),
            source,
        });
    }
    Ok(())
}

/// Reads a checkpoint in any [`Encoding`], placing the tensors on `device`;
/// values come back bit-identical (a sparse file's zeros as `+0.0`).
///
/// Errors name the file: unreadable ([`ModelError::Io`]); not a safetensors
/// file, truncated, without kdprune metadata, of another format version or
/// encoding, with a malformed config JSON, with an unsupported dtype, with a
/// mask that is not a u8 0/1 tensor shaped like its tensor, or with encoded
/// parts that disagree (named tensor) ([`ModelError::Checkpoint`]).
pub fn load(path: &Path, device: &Device) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| invalid(path, format!("not a safetensors file (or truncated): {e}")))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        invalid(
            path,
            format!("not a valid safetensors file (or truncated): {e}"),
        )
    })?;

    let file_metadata = header
        .metadata()
        .as_ref()
        .ok_or_else(|| invalid(path, "no kdprune metadata (the file has no __metadata__)"))?;
    let format = file_metadata.get(FORMAT_KEY).ok_or_else(|| {
        invalid(
            path,
            format!("no kdprune metadata ('{FORMAT_KEY}' missing)"),
        )
    })?;
    if format != FORMAT_VERSION {
        return Err(invalid(
            path,
            format!("unsupported format version '{format}' (this build reads '{FORMAT_VERSION}')"),
        ));
    }
    let encoding = match file_metadata.get(ENCODING_KEY) {
        None => Encoding::Native,
        Some(e) => e.parse::<Encoding>().map_err(|e| invalid(path, e))?,
    };
    let config_json = file_metadata
        .get(MODEL_KEY)
        .ok_or_else(|| invalid(path, format!("no model config ('{MODEL_KEY}' missing)")))?;
    let config: ModelConfig = serde_json::from_str(config_json)
        .map_err(|e| invalid(path, format!("bad model config JSON in '{MODEL_KEY}': {e}")))?;
    config
        .validate()
        .map_err(|e| invalid(path, format!("model config in '{MODEL_KEY}': {e}")))?;
    let metadata: BTreeMap<String, String> = file_metadata
        .iter()
        .filter(|(k, _)| {
            !k.starts_with(RESERVED_PREFIX)
                && (encoding == Encoding::Native || !encodings::is_format_key(k))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();

    let (tensors, masks, quantized) = match encoding {
        Encoding::Native => {
            let (t, m) = native_tensors(path, &st, device)?;
            (t, m, BTreeMap::new())
        }
        Encoding::Int8 => encodings::int8_tensors(path, &st, file_metadata, false, device)?,
        Encoding::SparseInt8 => encodings::int8_tensors(path, &st, file_metadata, true, device)?,
        other => {
            let (t, m) = encodings::tensors(path, &st, other, file_metadata, device)?;
            (t, m, BTreeMap::new())
        }
    };
    for (name, mask) in &masks {
        check_mask(path, name, mask, &tensors)?;
    }
    for (name, t) in &tensors {
        check_finite(path, name, t)?;
    }
    Ok(Checkpoint {
        config,
        tensors,
        masks,
        metadata,
        quantized,
    })
}

/// The [`Encoding`] of the checkpoint at `path`, from its header alone
/// (the tensors are not read). Errors as [`load`] for a file that is not a
/// kdprune checkpoint.
pub fn file_encoding(path: &Path) -> Result<Encoding> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|e| invalid(path, format!("not a safetensors file (or truncated): {e}")))?;
    let n = u64::from_le_bytes(len);
    // safetensors' own bound on a header; no allocation sized by the file beyond it.
    const MAX_HEADER: u64 = 100_000_000;
    if n > MAX_HEADER {
        return Err(invalid(
            path,
            format!("header of {n} bytes exceeds {MAX_HEADER}"),
        ));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header)
        .map_err(|e| invalid(path, format!("not a safetensors file (or truncated): {e}")))?;
    let json: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| invalid(path, format!("not a safetensors header: {e}")))?;
    let meta = json.get("__metadata__");
    if meta.and_then(|m| m.get(FORMAT_KEY)).is_none() {
        return Err(invalid(
            path,
            format!("no kdprune metadata ('{FORMAT_KEY}' missing)"),
        ));
    }
    match meta
        .and_then(|m| m.get(ENCODING_KEY))
        .and_then(|v| v.as_str())
    {
        None => Ok(Encoding::Native),
        Some(e) => e.parse::<Encoding>().map_err(|e| invalid(path, e)),
    }
}

/// The tensors and masks of a native file.
fn native_tensors(path: &Path, st: &SafeTensors<'_>, device: &Device) -> Result<TensorsAndMasks> {
    let mut tensors = BTreeMap::new();
    let mut masks = BTreeMap::new();
    for (name, view) in st.iter() {
        let dtype = DType::try_from(view.dtype()).map_err(|_| {
            invalid(
                path,
                format!("tensor '{name}' has unsupported dtype {:?}", view.dtype()),
            )
        })?;
        let tensor = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), device)?;
        match name.strip_prefix(MASK_PREFIX) {
            Some(weight) => {
                if dtype != DType::U8 {
                    return Err(invalid(
                        path,
                        format!("mask of '{weight}' has dtype {dtype:?}, expected u8"),
                    ));
                }
                check_mask_values(path, weight, view.data())?;
                masks.insert(weight.to_string(), tensor);
            }
            None => {
                tensors.insert(name.to_string(), tensor);
            }
        }
    }
    Ok((tensors, masks))
}

/// Fails on a floating-point tensor holding a NaN or an infinity (a run
/// that diverged, or a damaged file): every command would otherwise
/// evaluate or train on it without a word.
fn check_finite(path: &Path, name: &str, t: &Tensor) -> Result<()> {
    if !t.dtype().is_float() {
        return Ok(());
    }
    let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(invalid(
            path,
            format!(
                "tensor '{name}' holds {} at index {i}: the weights are not finite",
                values[i]
            ),
        ));
    }
    Ok(())
}

/// Tensors by name and masks by the name of their tensor.
pub(crate) type TensorsAndMasks = (BTreeMap<String, Tensor>, BTreeMap<String, Tensor>);

/// Rewrites the JSON header of a serialised safetensors buffer with sorted
/// keys. `safetensors::serialize` takes the metadata as a `HashMap`, whose
/// iteration order changes from run to run; sorting makes the same checkpoint
/// the same bytes (same seed → identical files). Data offsets are relative to
/// the end of the header, so only the header and its length change.
fn canonical_header(buffer: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
    let bad = || "serialised buffer has no valid header".to_string();
    let len_bytes: [u8; 8] = buffer
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(bad)?;
    let n = usize::try_from(u64::from_le_bytes(len_bytes)).map_err(|_| bad())?;
    let header = buffer.get(8..8 + n).ok_or_else(bad)?;
    // serde_json's `Value` keeps objects in a BTreeMap: sorted keys.
    let value: serde_json::Value = serde_json::from_slice(header).map_err(|e| e.to_string())?;
    let mut json = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
    // The format pads the header with spaces to a multiple of 8 bytes.
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + buffer.len() - 8 - n);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&buffer[8 + n..]);
    Ok(out)
}
