//! The export encodings of a checkpoint: `dense` (what PyTorch loads),
//! `sparse` (compressed-tensors' `sparse-bitmask`, size ∝ non-zeros),
//! `int8` (compressed-tensors' `int-quantized`) and `sparse-int8` (both: the
//! i8 values bitmask-encoded).
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
//! | `int8` | every f32 tensor of rank ≥ 2 as i8 `NAME`, f32 `NAME_scale` `[out, 1]`, `MODULE.input_scale` `[1]` when calibrated; the rest as in `sparse` | `mask.NAME.bitmask` for every mask |
//! | `sparse-int8` | as `int8`, the i8 values bitmask-encoded as in `sparse` (`NAME.compressed` i8); a masked weight's bitmask is its mask (kept values that rounded to 0 stored as zeros) | as in `sparse` |
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
    /// Both: the INT8 weights' non-zero integers in the `sparse-bitmask`
    /// layout (`NAME.compressed` i8), their scales as in [`Encoding::Int8`]
    /// — compressed-tensors' layout of a model that is both sparse and
    /// quantised, with both configs in the metadata.
    SparseInt8,
}

impl Encoding {
    /// The names [`Encoding::from_str`] accepts, for help texts.
    pub const NAMES: &'static str = "kdprune, dense, sparse, int8, sparse-int8";
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encoding::Native => "kdprune",
            Encoding::Dense => "dense",
            Encoding::Sparse => SPARSE_BITMASK,
            Encoding::Int8 => INT_QUANTIZED,
            Encoding::SparseInt8 => SPARSE_INT8,
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
            SPARSE_INT8 => Ok(Encoding::SparseInt8),
            other => Err(format!(
                "unknown checkpoint encoding '{other}' (known: {})",
                Encoding::NAMES
            )),
        }
    }
}

/// compressed-tensors' name of the encoding.
const SPARSE_BITMASK: &str = "sparse-bitmask";
/// kdprune's name of the sparse and INT8 encoding.
const SPARSE_INT8: &str = "sparse-int8";
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
        Encoding::Int8 => int8_entries(path, ckpt, metadata, false),
        Encoding::SparseInt8 => int8_entries(path, ckpt, metadata, true),
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
    let mut stats = SparsityStats::default();
    let mut patterns: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    for (name, t) in &ckpt.tensors {
        if !is_encoded(t) {
            let (dtype, bytes) = tensor_bytes(path, name, t)?;
            entries.push((name.clone(), dtype, t.dims().to_vec(), bytes));
            continue;
        }
        let encoded = BitmaskTensor::compress(&f32_values(t)?, t.dims());
        stats.add(name, &encoded);
        entries.extend(bitmask_entries(
            name,
            &encoded,
            StDtype::F32,
            f32_bytes(&encoded.compressed),
        ));
        patterns.insert(name.as_str(), encoded.bitmask);
    }
    entries.extend(mask_entries(path, ckpt, &patterns, metadata)?);
    metadata.insert("sparsity_config".to_string(), stats.config());
    Ok(entries)
}

/// The zeros and targets of the bitmask-encoded tensors of a file, for its
/// `sparsity_config`.
#[derive(Default)]
struct SparsityStats {
    zeros: usize,
    total: usize,
    targets: Vec<String>,
}

impl SparsityStats {
    fn add<T: bitmask::Element>(&mut self, name: &str, encoded: &BitmaskTensor<T>) {
        let n: usize = encoded.shape.iter().product();
        self.total += n;
        self.zeros += n - encoded.compressed.len();
        self.targets.push(name.to_string());
    }

    /// The `sparsity_config` JSON (`format`, `global_sparsity`,
    /// `sparsity_structure`, `targets`, `ignore`).
    fn config(&self) -> String {
        let sparsity = if self.total == 0 {
            0.0
        } else {
            self.zeros as f64 / self.total as f64
        };
        serde_json::json!({
            "format": SPARSE_BITMASK,
            "global_sparsity": sparsity,
            "sparsity_structure": "unstructured",
            "targets": self.targets,
            "ignore": [],
        })
        .to_string()
    }
}

/// The four tensors of `encoded` under `name` (values as `dtype` `values`).
fn bitmask_entries<T: bitmask::Element>(
    name: &str,
    encoded: &BitmaskTensor<T>,
    dtype: StDtype,
    values: Vec<u8>,
) -> [Entry; 4] {
    let shape: Vec<i64> = encoded.shape.iter().map(|&d| d as i64).collect();
    [
        (
            format!("{name}.shape"),
            StDtype::I64,
            vec![shape.len()],
            i64_bytes(&shape),
        ),
        (
            format!("{name}.compressed"),
            dtype,
            vec![encoded.compressed.len()],
            values,
        ),
        (
            format!("{name}.bitmask"),
            StDtype::U8,
            bitmask::bitmask_shape(&encoded.shape),
            encoded.bitmask.clone(),
        ),
        (
            format!("{name}.row_offsets"),
            StDtype::I64,
            bitmask::row_offsets_shape(&encoded.shape),
            i64_bytes(&encoded.row_offsets),
        ),
    ]
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
        Encoding::Int8 | Encoding::SparseInt8 => {
            unreachable!("INT8 files are read by int8_tensors")
        }
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

/// The names `NAME` of a file's bitmask-encoded tensors (those with both
/// `NAME.shape` and `NAME.compressed`).
fn encoded_names(st: &SafeTensors<'_>) -> BTreeSet<String> {
    let names: BTreeSet<String> = st.names().into_iter().map(str::to_string).collect();
    names
        .iter()
        .filter_map(|n| n.strip_suffix(".shape"))
        .filter(|base| names.contains(&format!("{base}.compressed")))
        .map(str::to_string)
        .collect()
}

/// Whether `n` is a part (`NAME.shape`, …) of one of the `encoded` tensors.
fn is_part_of(encoded: &BTreeSet<String>, n: &str) -> bool {
    PARTS.iter().any(|p| {
        n.strip_suffix(p)
            .and_then(|b| b.strip_suffix('.'))
            .is_some_and(|b| encoded.contains(b))
    })
}

/// The dense values of the bitmask-encoded tensor `name` (`NAME.compressed`
/// of `dtype`, decoded by `decode`), its shape and its bitmask, every part
/// checked against the others.
fn read_bitmask<T: bitmask::Element>(
    path: &Path,
    st: &SafeTensors<'_>,
    name: &str,
    dtype: StDtype,
    decode: impl Fn(&[u8]) -> Vec<T>,
) -> Result<(Vec<usize>, Vec<T>, Vec<u8>)> {
    let shape_view = part(path, st, name, "shape", StDtype::I64)?;
    if shape_view.shape().len() != 1 {
        return Err(invalid(path, format!("'{name}.shape' is not a vector")));
    }
    let shape = i64_values(shape_view.data())
        .into_iter()
        .map(|d| usize::try_from(d).map_err(|_| invalid(path, format!("'{name}.shape' holds {d}"))))
        .collect::<Result<Vec<usize>>>()?;
    let compressed = decode(part(path, st, name, "compressed", dtype)?.data());
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
    Ok((shape, values, t.bitmask))
}

/// Fails on a `mask.NAME.bitmask` whose tensor has no listed mask.
fn check_stray_masks(
    path: &Path,
    st: &SafeTensors<'_>,
    encoded: &BTreeSet<String>,
    masks: &BTreeMap<String, Tensor>,
) -> Result<()> {
    if let Some(stray) = st.names().into_iter().find(|n| {
        n.starts_with(MASK_PREFIX)
            && n.ends_with(".bitmask")
            && !is_part_of(encoded, n)
            && !masks.contains_key(&n[MASK_PREFIX.len()..n.len() - ".bitmask".len()])
    }) {
        return Err(invalid(
            path,
            format!("'{stray}' masks no tensor listed in '{MASKS_KEY}'"),
        ));
    }
    Ok(())
}

/// Whether `n` is a stored mask (`mask.NAME.bitmask`).
fn is_packed_mask(n: &str) -> bool {
    n.starts_with(MASK_PREFIX) && n.ends_with(".bitmask")
}

fn sparse_tensors(
    path: &Path,
    st: &SafeTensors<'_>,
    metadata: &HashMap<String, String>,
    device: &Device,
) -> Result<TensorsAndMasks> {
    let encoded = encoded_names(st);
    let mut tensors = BTreeMap::new();
    let mut patterns: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    for name in &encoded {
        let (shape, values, bits) = read_bitmask(path, st, name, StDtype::F32, f32_values_of)?;
        tensors.insert(name.clone(), Tensor::from_vec(values, shape, device)?);
        patterns.insert(name, bits);
    }
    for name in st.names() {
        if is_part_of(&encoded, name) || is_packed_mask(name) {
            continue;
        }
        let view = st
            .tensor(name)
            .map_err(|e| invalid(path, format!("'{name}': {e}")))?;
        tensors.insert(name.to_string(), plain(path, name, &view, device)?);
    }
    let masks = read_masks(path, st, metadata, &tensors, &patterns, device)?;
    check_stray_masks(path, st, &encoded, &masks)?;
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
/// sparse file. With `sparse`, the i8 values are bitmask-encoded
/// ([`Encoding::SparseInt8`]).
fn int8_entries(
    path: &Path,
    ckpt: &Checkpoint,
    metadata: &mut HashMap<String, String>,
    sparse: bool,
) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut static_inputs = false;
    let mut stats = SparsityStats::default();
    let mut patterns: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
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
        if sparse {
            // The mask as the bitmask where it covers every non-zero: a kept
            // weight that rounded to 0 is then a stored 0, not a reason to
            // store the whole mask beside.
            let kept = match ckpt.masks.get(name) {
                Some(m) => {
                    let (_, bytes) = tensor_bytes(path, name, m)?;
                    check_mask_values(path, name, &bytes)?;
                    let kept: Vec<bool> = bytes.iter().map(|b| *b == 1).collect();
                    (kept.len() == q.values.len()).then_some(kept)
                }
                None => None,
            };
            let encoded = kept
                .and_then(|k| BitmaskTensor::compress_kept(&q.values, &q.shape, &k))
                .unwrap_or_else(|| BitmaskTensor::compress(&q.values, &q.shape));
            stats.add(name, &encoded);
            let bytes = encoded.compressed.iter().map(|v| *v as u8).collect();
            entries.extend(bitmask_entries(name, &encoded, StDtype::I8, bytes));
            patterns.insert(name.as_str(), encoded.bitmask);
        } else {
            entries.push((
                name.clone(),
                StDtype::I8,
                q.shape.clone(),
                q.values.iter().map(|v| *v as u8).collect(),
            ));
        }
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
    entries.extend(mask_entries(path, ckpt, &patterns, metadata)?);
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
    if sparse {
        metadata.insert("sparsity_config".to_string(), stats.config());
    }
    Ok(entries)
}

/// Tensors (weights dequantised), masks, and the INT8 weights by name.
pub(crate) type Int8Parts = (
    BTreeMap<String, Tensor>,
    BTreeMap<String, Tensor>,
    BTreeMap<String, QuantizedWeight>,
);

/// The scales of INT8 weight `name` with `rows` output channels:
/// `NAME_scale` `[rows, 1]` and the optional `MODULE.input_scale`.
fn read_scales(
    path: &Path,
    st: &SafeTensors<'_>,
    name: &str,
    rows: usize,
) -> Result<(Vec<f32>, Option<f32>)> {
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
    Ok((f32_values_of(scale_view.data()), input_scale))
}

/// The tensors (weights dequantised), masks and INT8 weights of an INT8
/// file; with `sparse`, of a [`Encoding::SparseInt8`] file.
pub(crate) fn int8_tensors(
    path: &Path,
    st: &SafeTensors<'_>,
    metadata: &HashMap<String, String>,
    sparse: bool,
    device: &Device,
) -> Result<Int8Parts> {
    let mut tensors = BTreeMap::new();
    let mut quantized = BTreeMap::new();
    let mut patterns: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    let encoded = if sparse {
        encoded_names(st)
    } else {
        BTreeSet::new()
    };
    // The INT8 weights: bitmask-encoded i8 values, or plain i8 tensors.
    let mut weights: Vec<(String, Vec<usize>, Vec<i8>)> = Vec::new();
    for name in &encoded {
        let (shape, values, bits) = read_bitmask(path, st, name, StDtype::I8, |b: &[u8]| {
            b.iter().map(|v| *v as i8).collect()
        })?;
        weights.push((name.clone(), shape, values));
        patterns.insert(name, bits);
    }
    let names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    for name in &names {
        if sparse {
            break;
        }
        let view = st
            .tensor(name)
            .map_err(|e| invalid(path, format!("'{name}': {e}")))?;
        if view.dtype() == StDtype::I8 {
            let values = view.data().iter().map(|b| *b as i8).collect();
            weights.push((name.clone(), view.shape().to_vec(), values));
        }
    }
    for (name, shape, values) in weights {
        let rows = shape.first().copied().unwrap_or(1);
        let (scales, input_scale) = read_scales(path, st, &name, rows)?;
        let q = QuantizedWeight {
            shape: shape.clone(),
            values,
            scales,
            input_scale,
        };
        q.check()
            .map_err(|e| invalid(path, format!("INT8 weight '{name}': {e}")))?;
        tensors.insert(
            name.clone(),
            Tensor::from_vec(q.dequantize(), shape, device)?,
        );
        quantized.insert(name, q);
    }
    let is_part = |n: &str| {
        quantized
            .keys()
            .any(|w| n == scale_name(w) || n == input_scale_name(w))
            || is_packed_mask(n)
            || is_part_of(&encoded, n)
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
    let masks = read_masks(path, st, metadata, &tensors, &patterns, device)?;
    if sparse {
        check_stray_masks(path, st, &encoded, &masks)?;
    }
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
