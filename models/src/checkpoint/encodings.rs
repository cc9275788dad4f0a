//! The export encodings of a checkpoint: `dense` (what PyTorch loads) and
//! `sparse` (compressed-tensors' `sparse-bitmask`, size ∝ non-zeros).
//!
//! Both keep kdprune's metadata (`kdprune.format`, `kdprune.encoding`,
//! `kdprune.model` and the caller's keys) in the safetensors `__metadata__`,
//! beside `format: "pt"`, so every kdprune command reads them back and other
//! tools see an ordinary file.
//!
//! | encoding | tensors | masks |
//! |---|---|---|
//! | `dense` | every tensor under its PyTorch `state_dict` name, plus `<bn>.num_batches_tracked` (i64 scalar 0) beside each batch norm's running statistics, as `load_state_dict(strict=True)` wants | dropped |
//! | `sparse` | every f32 tensor of rank ≥ 2 (linear and convolution weights) as `NAME.shape`, `NAME.compressed`, `NAME.bitmask`, `NAME.row_offsets` ([`super::bitmask`]); the rest (biases, batch norms) as in `dense` without `num_batches_tracked` | metadata `kdprune.masks` lists the masked tensors; a mask equal to its tensor's non-zero pattern is that bitmask, any other is stored packed the same way as `mask.NAME.bitmask` |
//!
//! A sparse file also carries `sparsity_config` (JSON: `format`,
//! `global_sparsity`, `sparsity_structure`, `targets`), the block
//! compressed-tensors keeps in a model's `config.json`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype as StDtype, SafeTensors, TensorView};

use super::bitmask::{self, BitmaskTensor};
use super::{
    check_mask_values, invalid, tensor_bytes, Checkpoint, Entry, TensorsAndMasks, MASK_PREFIX,
};
use crate::error::Result;
use crate::quant::QuantizedWeight;

/// How a checkpoint file stores its tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// kdprune's own: every tensor dense, masks as `mask.<name>` u8 tensors
    /// (what training writes).
    Native,
    /// Plain safetensors under PyTorch `state_dict` names, no masks.
    Dense,
    /// compressed-tensors' `sparse-bitmask`: non-zeros and a bitmask per weight.
    Sparse,
    /// compressed-tensors' `int-quantized`: INT8 weights with per-channel
    /// scales (and calibrated input scales), see [`crate::quant`].
    Int8,
}

impl Encoding {
    /// The names [`Encoding::from_str`] accepts, for help texts.
    pub const NAMES: &'static str = "kdprune, dense, sparse, int8";
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encoding::Native => "kdprune",
            Encoding::Dense => "dense",
            Encoding::Sparse => SPARSE_BITMASK,
            Encoding::Int8 => INT_QUANTIZED,
        })
    }
}

impl FromStr for Encoding {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "kdprune" | "native" => Ok(Encoding::Native),
            "dense" => Ok(Encoding::Dense),
            "sparse" | SPARSE_BITMASK => Ok(Encoding::Sparse),
            "int8" | INT_QUANTIZED => Ok(Encoding::Int8),
            other => Err(format!(
                "unknown checkpoint encoding '{other}' (known: {})",
                Encoding::NAMES
            )),
        }
    }
}

/// compressed-tensors' name of the encoding.
const SPARSE_BITMASK: &str = "sparse-bitmask";
/// Metadata key listing the masked tensors of a sparse file (JSON array).
const MASKS_KEY: &str = "kdprune.masks";
/// The keys an export adds for other tools; not the caller's metadata.
const TOOL_KEYS: [&str; 3] = ["format", "sparsity_config", "quantization_config"];
/// The suffix of the batch-norm step counter PyTorch keeps in a `state_dict`.
const NUM_BATCHES_TRACKED: &str = ".num_batches_tracked";
/// The suffixes of a bitmask-encoded tensor's parts.
const PARTS: [&str; 4] = ["shape", "compressed", "bitmask", "row_offsets"];

/// Whether `key` is metadata an export adds for other tools (kept out of the
/// loaded checkpoint's metadata).
pub(crate) fn is_format_key(key: &str) -> bool {
    TOOL_KEYS.contains(&key)
}

fn i64_bytes(values: &[i64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f32_values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_device(&Device::Cpu)?.to_vec1::<f32>()?)
}

/// The tensors of `ckpt` in `encoding` (not [`Encoding::Native`]); adds the
/// encoding's metadata to `metadata`.
pub(crate) fn entries(
    path: &Path,
    ckpt: &Checkpoint,
    encoding: Encoding,
    metadata: &mut HashMap<String, String>,
) -> Result<Vec<Entry>> {
    metadata.insert("format".to_string(), "pt".to_string());
    match encoding {
        Encoding::Native => unreachable!("native files are written by checkpoint::save_as"),
        Encoding::Dense => dense_entries(path, ckpt),
        Encoding::Sparse => sparse_entries(path, ckpt, metadata),
        Encoding::Int8 => int8_entries(path, ckpt, metadata),
    }
}

fn dense_entries(path: &Path, ckpt: &Checkpoint) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for (name, t) in &ckpt.tensors {
        let (dtype, bytes) = tensor_bytes(path, name, t)?;
        entries.push((name.clone(), dtype, t.dims().to_vec(), bytes));
        if let Some(bn) = name.strip_suffix(".running_mean") {
            entries.push((
                format!("{bn}{NUM_BATCHES_TRACKED}"),
                StDtype::I64,
                Vec::new(),
                i64_bytes(&[0]),
            ));
        }
    }
    Ok(entries)
}

/// Whether `t` is stored bitmask-encoded in a sparse file.
fn is_encoded(t: &Tensor) -> bool {
    t.rank() >= 2 && t.dtype() == DType::F32
}

fn sparse_entries(
    path: &Path,
    ckpt: &Checkpoint,
    metadata: &mut HashMap<String, String>,
) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let (mut zeros, mut total) = (0usize, 0usize);
    let mut targets = Vec::new();
    let mut patterns: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    for (name, t) in &ckpt.tensors {
        if !is_encoded(t) {
            let (dtype, bytes) = tensor_bytes(path, name, t)?;
            entries.push((name.clone(), dtype, t.dims().to_vec(), bytes));
            continue;
        }
        let values = f32_values(t)?;
        let encoded = BitmaskTensor::compress(&values, t.dims());
        total += values.len();
        zeros += values.len() - encoded.compressed.len();
        targets.push(name.clone());
        let shape: Vec<i64> = t.dims().iter().map(|&d| d as i64).collect();
        entries.push((
            format!("{name}.shape"),
            StDtype::I64,
            vec![shape.len()],
            i64_bytes(&shape),
        ));
        entries.push((
            format!("{name}.compressed"),
            StDtype::F32,
            vec![encoded.compressed.len()],
            f32_bytes(&encoded.compressed),
        ));
        let bitmask_shape = bitmask::bitmask_shape(t.dims());
        entries.push((
            format!("{name}.bitmask"),
            StDtype::U8,
            bitmask_shape,
            encoded.bitmask.clone(),
        ));
        entries.push((
            format!("{name}.row_offsets"),
            StDtype::I64,
            bitmask::row_offsets_shape(t.dims()),
            i64_bytes(&encoded.row_offsets),
        ));
        patterns.insert(name.as_str(), encoded.bitmask);
    }
    entries.extend(mask_entries(path, ckpt, &patterns, metadata)?);
    let sparsity = if total == 0 {
        0.0
    } else {
        zeros as f64 / total as f64
    };
    let config = serde_json::json!({
        "format": SPARSE_BITMASK,
        "global_sparsity": sparsity,
        "sparsity_structure": "unstructured",
        "targets": targets,
        "ignore": [],
    });
    metadata.insert("sparsity_config".to_string(), config.to_string());
    Ok(entries)
}

/// The tensors and masks of a file in `encoding` (not [`Encoding::Native`]).
pub(crate) fn tensors(
    path: &Path,
    st: &SafeTensors<'_>,
    encoding: Encoding,
    metadata: &HashMap<String, String>,
    device: &Device,
) -> Result<TensorsAndMasks> {
    match encoding {
        Encoding::Native => unreachable!("native files are read by checkpoint::load"),
        Encoding::Dense => {
            let mut tensors = BTreeMap::new();
            for (name, view) in st.iter() {
                if name.ends_with(NUM_BATCHES_TRACKED) {
                    continue;
                }
                tensors.insert(name.to_string(), plain(path, name, &view, device)?);
            }
            Ok((tensors, BTreeMap::new()))
        }
        Encoding::Sparse => sparse_tensors(path, st, metadata, device),
        Encoding::Int8 => unreachable!("INT8 files are read by int8_tensors"),
    }
}

/// A tensor stored as it is.
fn plain(path: &Path, name: &str, view: &TensorView<'_>, device: &Device) -> Result<Tensor> {
    let dtype = DType::try_from(view.dtype()).map_err(|_| {
        invalid(
            path,
            format!("tensor '{name}' has unsupported dtype {:?}", view.dtype()),
        )
    })?;
    Ok(Tensor::from_raw_buffer(
        view.data(),
        dtype,
        view.shape(),
        device,
    )?)
}

/// The part `NAME.part` of a bitmask-encoded tensor, checked for `dtype`.
fn part<'a>(
    path: &Path,
    st: &'a SafeTensors<'_>,
    name: &str,
    part: &str,
    dtype: StDtype,
) -> Result<TensorView<'a>> {
    let view = st
        .tensor(&format!("{name}.{part}"))
        .map_err(|_| invalid(path, format!("'{name}': no '{name}.{part}' in the file")))?;
    if view.dtype() != dtype {
        return Err(invalid(
            path,
            format!(
                "'{name}.{part}' has dtype {:?}, expected {dtype:?}",
                view.dtype()
            ),
        ));
    }
    Ok(view)
}

fn i64_values(data: &[u8]) -> Vec<i64> {
    data.chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

fn sparse_tensors(
    path: &Path,
    st: &SafeTensors<'_>,
    metadata: &HashMap<String, String>,
    device: &Device,
) -> Result<TensorsAndMasks> {
    let names: BTreeSet<String> = st.names().into_iter().map(str::to_string).collect();
    let encoded: BTreeSet<&str> = names
        .iter()
        .filter_map(|n| n.strip_suffix(".shape"))
        .filter(|base| names.contains(&format!("{base}.compressed")))
        .collect();
    let part_of_encoded = |n: &str| {
        PARTS.iter().any(|p| {
            n.strip_suffix(p)
                .and_then(|b| b.strip_suffix('.'))
                .is_some_and(|b| encoded.contains(b))
        })
    };
    let mut tensors = BTreeMap::new();
    let mut patterns: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    for &name in &encoded {
        let shape_view = part(path, st, name, "shape", StDtype::I64)?;
        if shape_view.shape().len() != 1 {
            return Err(invalid(path, format!("'{name}.shape' is not a vector")));
        }
        let shape = i64_values(shape_view.data())
            .into_iter()
            .map(|d| {
                usize::try_from(d).map_err(|_| invalid(path, format!("'{name}.shape' holds {d}")))
            })
            .collect::<Result<Vec<usize>>>()?;
        let compressed: Vec<f32> = part(path, st, name, "compressed", StDtype::F32)?
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        let bitmask_view = part(path, st, name, "bitmask", StDtype::U8)?;
        let row_offsets = i64_values(part(path, st, name, "row_offsets", StDtype::I64)?.data());
        let t = BitmaskTensor {
            shape: shape.clone(),
            compressed,
            bitmask: bitmask_view.data().to_vec(),
            row_offsets,
        };
        let values = t
            .decompress()
            .map_err(|e| invalid(path, format!("'{name}': {e}")))?;
        if !shape.is_empty() && bitmask_view.shape() != bitmask::bitmask_shape(&shape).as_slice() {
            return Err(invalid(
                path,
                format!(
                    "'{name}.bitmask' has shape {:?}, a tensor of shape {shape:?} needs {:?}",
                    bitmask_view.shape(),
                    bitmask::bitmask_shape(&shape)
                ),
            ));
        }
        tensors.insert(name.to_string(), Tensor::from_vec(values, shape, device)?);
        patterns.insert(name, t.bitmask);
    }
    for name in &names {
        if part_of_encoded(name) {
            continue;
        }
        if name.starts_with(MASK_PREFIX) && name.ends_with(".bitmask") {
            continue;
        }
        let view = st
            .tensor(name)
            .map_err(|e| invalid(path, format!("'{name}': {e}")))?;
        tensors.insert(name.clone(), plain(path, name, &view, device)?);
    }
    let masks = read_masks(path, st, metadata, &tensors, &patterns, device)?;
    if let Some(stray) = names.iter().find(|n| {
        n.starts_with(MASK_PREFIX)
            && n.ends_with(".bitmask")
            && !part_of_encoded(n)
            && !masks.contains_key(&n[MASK_PREFIX.len()..n.len() - ".bitmask".len()])
    }) {
        return Err(invalid(
            path,
            format!("'{stray}' masks no tensor listed in '{MASKS_KEY}'"),
        ));
    }
    Ok((tensors, masks))
}

/// `(rows, row_len)` of a shape packed along its last axis (a scalar is one
/// row of one).
fn rows_of(dims: &[usize]) -> (usize, usize) {
    match dims.split_last() {
        Some((&last, lead)) => (lead.iter().product::<usize>(), last),
        None => (1, 1),
    }
}

/// The masks of `ckpt` for a sparse or INT8 file: each packed like a
/// bitmask as `mask.NAME.bitmask`, unless it equals `patterns[NAME]` (the
/// tensor's own bitmask); the list of masked tensors goes to `metadata`.
fn mask_entries(
    path: &Path,
    ckpt: &Checkpoint,
    patterns: &BTreeMap<&str, Vec<u8>>,
    metadata: &mut HashMap<String, String>,
) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for (name, mask) in &ckpt.masks {
        let (_, bytes) = tensor_bytes(path, name, mask)?;
        check_mask_values(path, name, &bytes)?;
        let dims = mask.dims();
        let (rows, row_len) = rows_of(dims);
        let packed = bitmask::pack_rows(|i| bytes[i] == 1, rows, row_len);
        if patterns.get(name.as_str()) != Some(&packed) {
            let shape = if dims.is_empty() {
                vec![1]
            } else {
                bitmask::bitmask_shape(dims)
            };
            entries.push((
                format!("{MASK_PREFIX}{name}.bitmask"),
                StDtype::U8,
                shape,
                packed,
            ));
        }
    }
    let masked: Vec<&String> = ckpt.masks.keys().collect();
    metadata.insert(
        MASKS_KEY.to_string(),
        serde_json::to_string(&masked).expect("a list of strings serialises"),
    );
    Ok(entries)
}

/// The masks listed in a sparse or INT8 file's metadata: `mask.NAME.bitmask`
/// where stored, else the tensor's bitmask in `patterns`.
fn read_masks(
    path: &Path,
    st: &SafeTensors<'_>,
    metadata: &HashMap<String, String>,
    tensors: &BTreeMap<String, Tensor>,
    patterns: &BTreeMap<&str, Vec<u8>>,
    device: &Device,
) -> Result<BTreeMap<String, Tensor>> {
    let masked: Vec<String> = match metadata.get(MASKS_KEY) {
        Some(json) => serde_json::from_str(json)
            .map_err(|e| invalid(path, format!("bad '{MASKS_KEY}' metadata: {e}")))?,
        None => Vec::new(),
    };
    let mut masks = BTreeMap::new();
    for name in masked {
        let weight = tensors.get(&name).ok_or_else(|| {
            invalid(
                path,
                format!("mask for '{name}', which is not a tensor of the checkpoint"),
            )
        })?;
        let dims = weight.dims().to_vec();
        let (rows, row_len) = rows_of(&dims);
        let stored = format!("{MASK_PREFIX}{name}.bitmask");
        let packed = match st.tensor(&stored) {
            Ok(view) if view.dtype() == StDtype::U8 => view.data().to_vec(),
            Ok(view) => {
                return Err(invalid(
                    path,
                    format!("'{stored}' has dtype {:?}, expected U8", view.dtype()),
                ))
            }
            Err(_) => patterns.get(name.as_str()).cloned().ok_or_else(|| {
                invalid(path, format!("mask of '{name}': no '{stored}' in the file"))
            })?,
        };
        let bits = bitmask::unpack_rows(&packed, rows, row_len)
            .map_err(|e| invalid(path, format!("mask of '{name}': {e}")))?;
        let values: Vec<u8> = bits.into_iter().map(u8::from).collect();
        masks.insert(name, Tensor::from_vec(values, dims, device)?);
    }
    Ok(masks)
}

/// compressed-tensors' name of the INT8 format.
const INT_QUANTIZED: &str = "int-quantized";

/// `NAME_scale`: the per-channel scales of weight `NAME` (`fc1.weight` →
/// `fc1.weight_scale`, compressed-tensors' name).
fn scale_name(name: &str) -> String {
    format!("{name}_scale")
}

/// `MODULE.input_scale` for weight `MODULE.weight` (compressed-tensors' name
/// of a static activation scale).
fn input_scale_name(name: &str) -> String {
    format!(
        "{}.input_scale",
        name.strip_suffix(".weight").unwrap_or(name)
    )
}

/// The tensors of an INT8 file: every f32 weight of rank ≥ 2 as i8 values
/// `NAME` with f32 scales `NAME_scale` `[out, 1]` (and `MODULE.input_scale`
/// `[1]` when calibrated), taken from `ckpt.quantized` or quantised here
/// (activations then per batch); the rest as in `dense`; masks as in a
/// sparse file.
fn int8_entries(
    path: &Path,
    ckpt: &Checkpoint,
    metadata: &mut HashMap<String, String>,
) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut static_inputs = false;
    for (name, t) in &ckpt.tensors {
        if !is_encoded(t) {
            let (dtype, bytes) = tensor_bytes(path, name, t)?;
            entries.push((name.clone(), dtype, t.dims().to_vec(), bytes));
            continue;
        }
        let q = match ckpt.quantized.get(name) {
            Some(q) => q.clone(),
            None => QuantizedWeight::quantize(&f32_values(t)?, t.dims()),
        };
        if q.shape != t.dims() {
            return Err(invalid(
                path,
                format!(
                    "INT8 weight '{name}' has shape {:?}, its tensor {:?}",
                    q.shape,
                    t.dims()
                ),
            ));
        }
        q.check()
            .map_err(|e| invalid(path, format!("INT8 weight '{name}': {e}")))?;
        entries.push((
            name.clone(),
            StDtype::I8,
            q.shape.clone(),
            q.values.iter().map(|v| *v as u8).collect(),
        ));
        entries.push((
            scale_name(name),
            StDtype::F32,
            vec![q.scales.len(), 1],
            f32_bytes(&q.scales),
        ));
        if let Some(s) = q.input_scale {
            static_inputs = true;
            entries.push((
                input_scale_name(name),
                StDtype::F32,
                vec![1],
                f32_bytes(&[s]),
            ));
        }
    }
    entries.extend(mask_entries(path, ckpt, &BTreeMap::new(), metadata)?);
    let config = serde_json::json!({
        "quant_method": "compressed-tensors",
        "format": INT_QUANTIZED,
        "config_groups": {"group_0": {
            "targets": ["Linear", "Conv2d"],
            "weights": {"num_bits": 8, "type": "int", "symmetric": true, "strategy": "channel", "dynamic": false},
            "input_activations": {"num_bits": 8, "type": "int", "symmetric": true, "strategy": "tensor", "dynamic": !static_inputs},
        }},
    });
    metadata.insert("quantization_config".to_string(), config.to_string());
    Ok(entries)
}

/// Tensors (weights dequantised), masks, and the INT8 weights by name.
pub(crate) type Int8Parts = (
    BTreeMap<String, Tensor>,
    BTreeMap<String, Tensor>,
    BTreeMap<String, QuantizedWeight>,
);

/// The tensors (weights dequantised), masks and INT8 weights of an INT8 file.
pub(crate) fn int8_tensors(
    path: &Path,
    st: &SafeTensors<'_>,
    metadata: &HashMap<String, String>,
    device: &Device,
) -> Result<Int8Parts> {
    let mut tensors = BTreeMap::new();
    let mut quantized = BTreeMap::new();
    let names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    for name in &names {
        let view = st
            .tensor(name)
            .map_err(|e| invalid(path, format!("'{name}': {e}")))?;
        if view.dtype() != StDtype::I8 {
            continue;
        }
        let shape = view.shape().to_vec();
        let rows = shape.first().copied().unwrap_or(1);
        let scale_view = part_named(path, st, &scale_name(name), StDtype::F32)?;
        if scale_view.shape() != [rows, 1] {
            return Err(invalid(
                path,
                format!(
                    "'{}' has shape {:?}, expected [{rows}, 1]",
                    scale_name(name),
                    scale_view.shape()
                ),
            ));
        }
        let input_scale = match st.tensor(&input_scale_name(name)) {
            Ok(v) if v.dtype() == StDtype::F32 && v.data().len() == 4 => {
                Some(f32_values_of(v.data())[0])
            }
            Ok(_) => {
                return Err(invalid(
                    path,
                    format!("'{}' is not one f32", input_scale_name(name)),
                ));
            }
            Err(_) => None,
        };
        let q = QuantizedWeight {
            shape: shape.clone(),
            values: view.data().iter().map(|b| *b as i8).collect(),
            scales: f32_values_of(scale_view.data()),
            input_scale,
        };
        q.check()
            .map_err(|e| invalid(path, format!("INT8 weight '{name}': {e}")))?;
        tensors.insert(
            name.clone(),
            Tensor::from_vec(q.dequantize(), shape, device)?,
        );
        quantized.insert(name.clone(), q);
    }
    let is_part = |n: &str| {
        quantized
            .keys()
            .any(|w| n == scale_name(w) || n == input_scale_name(w))
            || (n.starts_with(MASK_PREFIX) && n.ends_with(".bitmask"))
    };
    for name in &names {
        if quantized.contains_key(name) || is_part(name) {
            continue;
        }
        let view = st
            .tensor(name)
            .map_err(|e| invalid(path, format!("'{name}': {e}")))?;
        tensors.insert(name.clone(), plain(path, name, &view, device)?);
    }
    let masks = read_masks(path, st, metadata, &tensors, &BTreeMap::new(), device)?;
    Ok((tensors, masks, quantized))
}

fn f32_values_of(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect()
}

/// The tensor `name`, checked for `dtype`.
fn part_named<'a>(
    path: &Path,
    st: &'a SafeTensors<'_>,
    name: &str,
    dtype: StDtype,
) -> Result<TensorView<'a>> {
    let view = st
        .tensor(name)
        .map_err(|_| invalid(path, format!("no '{name}' in the file")))?;
    if view.dtype() != dtype {
        return Err(invalid(
            path,
            format!("'{name}' has dtype {:?}, expected {dtype:?}", view.dtype()),
        ));
    }
    Ok(view)
}
