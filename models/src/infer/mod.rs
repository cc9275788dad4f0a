//! Inference without autograd, each layer dense or sparse by its density:
//! the runtime of a pruned model.
//!
//! [`InferenceNet::new`] takes a checkpoint's tensors (masks already applied
//! to them, as every kdprune checkpoint holds them) and stores each weight
//! either dense or as a [`Csr`] matrix, by [`LayerChoice`]. The forward pass
//! computes what [`crate::Model::forward_t`] computes in evaluation mode —
//! the same layers on plain slices, with the non-zeros summed in another
//! order (logits within 1e-5 relative; `tests/infer.rs`).
//!
//! | layer | dense | sparse |
//! |---|---|---|
//! | linear, batch 1 | GEMV (`gemm` crate) | [`Csr::matvec`] |
//! | linear, batch > 1 | GEMM on `[features, batch]` activations | [`Csr::matmul`], a row of the batch per non-zero |
//! | convolution (per sample, samples in parallel) | im2col + GEMM (the training kernel) | im2col + [`Csr::matmul`] over the output positions |
//!
//! Supported architectures: the MLPs (`lenet-300-100`, `mlp-…`) and LeNet-5
//! (`lenet5`, `lenet5-xK`); the zoo CNNs run through candle.

use std::collections::BTreeMap;
use std::fmt;

use candle_core::Tensor;
use rayon::prelude::*;

use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::ops::conv::{self, im2col, with_scratch, ConvParams, ConvShape};
use crate::ops::gemm::{matmul, MatMut, MatRef};
use crate::ops::sparse::Csr;
use crate::quant::{Int8Linear, QuantizedWeight};
use crate::zoo::lenet5::Geometry;

/// Which layers [`InferenceNet`] stores sparse.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LayerChoice {
    /// Sparse where the weight's density (non-zeros / entries) is at most the
    /// given value, dense elsewhere.
    Auto(f64),
    /// Every layer dense.
    Dense,
    /// Every layer sparse.
    Sparse,
}

impl LayerChoice {
    /// The density at or below which [`LayerChoice::default`] stores a layer
    /// sparse: where `bench-infer` measured the sparse products overtaking
    /// the dense ones (models/README.md, "Sparse inference").
    pub const CROSSOVER: f64 = 0.1;

    fn sparse(self, density: f64) -> bool {
        match self {
            LayerChoice::Auto(limit) => density <= limit,
            LayerChoice::Dense => false,
            LayerChoice::Sparse => true,
        }
    }
}

impl Default for LayerChoice {
    fn default() -> Self {
        LayerChoice::Auto(Self::CROSSOVER)
    }
}

/// A weight as the forward pass reads it.
#[derive(Clone, Debug)]
enum Weights {
    /// Row-major `[out, in]` (a convolution's `[out, in·kh·kw]`).
    Dense(Vec<f32>),
    Sparse(Csr),
    /// INT8 weights with integer products (linear layers of a quantised
    /// checkpoint).
    Int8(Int8Linear),
}

/// One layer as [`InferenceNet::layers`] describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerInfo {
    /// The weight's name, e.g. `fc1.weight`.
    pub name: String,
    /// Whether it is stored sparse.
    pub sparse: bool,
    /// Non-zeros / entries.
    pub density: f64,
    /// Whether it runs on INT8 weights.
    pub int8: bool,
}

impl fmt::Display for LayerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}{} (density {:.3})",
            self.name,
            if self.sparse { "sparse" } else { "dense" },
            if self.int8 { " int8" } else { "" },
            self.density
        )
    }
}

#[derive(Clone, Debug)]
struct Linear {
    info: LayerInfo,
    inputs: usize,
    outputs: usize,
    weights: Weights,
    bias: Vec<f32>,
}

#[derive(Clone, Debug)]
struct Conv {
    info: LayerInfo,
    /// The shape of one sample's convolution.
    shape: ConvShape,
    weights: Weights,
    bias: Vec<f32>,
}

/// A network ready for inference (see the module docs).
#[derive(Clone, Debug)]
pub struct InferenceNet {
    input: (usize, usize, usize),
    /// Convolutions, each followed by ReLU and a 2×2 max-pool (LeNet-5).
    convs: Vec<Conv>,
    /// Linear layers, ReLU between them.
    linears: Vec<Linear>,
}

/// The f32 values of tensor `name`, checked against `shape`.
fn values(tensors: &BTreeMap<String, Tensor>, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let t = tensors
        .get(name)
        .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
    if t.dims() != shape {
        return Err(ModelError::ShapeMismatch {
            name: name.to_string(),
            expected: shape.to_vec(),
            got: t.dims().to_vec(),
        });
    }
    Ok(t.flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_device(&candle_core::Device::Cpu)?
        .to_vec1::<f32>()?)
}

/// The weight `name` (`rows × cols`) stored as `choice` says, and its description.
fn weights(
    name: &str,
    dense: Vec<f32>,
    rows: usize,
    cols: usize,
    choice: LayerChoice,
) -> Result<(Weights, LayerInfo)> {
    let nnz = dense.iter().filter(|v| **v != 0.0).count();
    let density = nnz as f64 / dense.len().max(1) as f64;
    let sparse = choice.sparse(density);
    let weights = if sparse {
        Weights::Sparse(Csr::from_dense(&dense, rows, cols).ok_or_else(|| {
            ModelError::Config(format!("{name}: too many non-zeros for u32 indices"))
        })?)
    } else {
        Weights::Dense(dense)
    };
    Ok((
        weights,
        LayerInfo {
            name: name.to_string(),
            sparse,
            density,
            int8: false,
        },
    ))
}

impl InferenceNet {
    /// The network of `config` with `tensors` (a checkpoint's, masks applied),
    /// each weight stored as `choice` says. Errors for the zoo CNNs, and
    /// name a missing or mis-shaped tensor.
    pub fn new(
        config: &ModelConfig,
        tensors: &BTreeMap<String, Tensor>,
        choice: LayerChoice,
    ) -> Result<Self> {
        // The weights' shapes in forward order, as the architecture declares
        // them: rank 4 are LeNet-5's convolutions, rank 2 the linear layers.
        let input = match config {
            ModelConfig::Mlp { input_dim, .. } => (1, 1, *input_dim),
            ModelConfig::LeNet5 {
                in_channels,
                height,
                width,
                ..
            } => (*in_channels, *height, *width),
            ModelConfig::Cnn { model, .. } => {
                return Err(ModelError::Config(format!(
                    "sparse inference covers the MLPs and LeNet-5, not {model}"
                )))
            }
        };
        let weights_in_order: Vec<(String, Vec<usize>)> = config
            .param_shapes()
            .into_iter()
            .filter(|(name, _)| name.ends_with(".weight"))
            .collect();
        let mut convs = Vec::new();
        let mut linears = Vec::new();
        // The input of the next convolution: `[1, C, H, W]` of one sample.
        let mut conv_input = [1, input.0, input.1, input.2];
        for (wname, shape) in &weights_in_order {
            let layer = wname.trim_end_matches(".weight");
            let dense = values(tensors, wname, shape)?;
            let bias = values(tensors, &format!("{layer}.bias"), &shape[..1])?;
            match shape.as_slice() {
                &[out, c, kh, kw] => {
                    // LeNet-5: conv1 pads 2, conv2 as its geometry says; a
                    // 2×2 max-pool follows each.
                    let padding = match config {
                        ModelConfig::LeNet5 {
                            height,
                            width,
                            scale,
                            ..
                        } if convs.len() == 1 => {
                            Geometry::with_scale(*height, *width, *scale)
                                .ok_or_else(|| {
                                    ModelError::Config(format!(
                                        "lenet5: input {height}x{width} is smaller than 4x4"
                                    ))
                                })?
                                .conv2_padding
                        }
                        _ => 2,
                    };
                    let p = ConvParams {
                        padding,
                        stride: 1,
                        dilation: 1,
                        groups: 1,
                    };
                    let conv = ConvShape::new(&conv_input, shape, p)?;
                    let [_, _, oh, ow] = conv.out_dims();
                    conv_input = [1, out, oh / 2, ow / 2];
                    let (weights, info) = weights(wname, dense, out, c * kh * kw, choice)?;
                    convs.push(Conv {
                        info,
                        shape: conv,
                        weights,
                        bias,
                    });
                }
                &[outputs, inputs] => {
                    let (weights, info) = weights(wname, dense, outputs, inputs, choice)?;
                    linears.push(Linear {
                        info,
                        inputs,
                        outputs,
                        weights,
                        bias,
                    });
                }
                other => {
                    return Err(ModelError::Config(format!(
                        "{wname}: a weight of shape {other:?} has no inference layer"
                    )))
                }
            }
        }
        Ok(Self {
            input,
            convs,
            linears,
        })
    }

    /// [`InferenceNet::new`] on a checkpoint's tensors; the linear layers of
    /// a quantised checkpoint ([`Checkpoint::quantized`]) run on their INT8
    /// weights with integer products (dense or sparse rows by `choice`),
    /// activations quantised with the calibrated input scale or per batch.
    /// Convolutions keep f32 (the dequantised weights).
    pub fn from_checkpoint(ckpt: &Checkpoint, choice: LayerChoice) -> Result<Self> {
        let mut net = Self::new(&ckpt.config, &ckpt.tensors, choice)?;
        for layer in &mut net.linears {
            if let Some(q) = ckpt.quantized.get(&layer.info.name) {
                let int8 = quantized_layer(
                    &layer.info.name,
                    q,
                    layer.outputs,
                    layer.inputs,
                    layer.info.sparse,
                )?;
                layer.weights = Weights::Int8(int8);
                layer.info.int8 = true;
            }
        }
        Ok(net)
    }

    /// For calibration: the largest magnitude of each linear layer's input
    /// over the `batch` samples of `x` (forward order).
    pub fn linear_input_max(&self, x: &[f32], batch: usize) -> Result<Vec<f32>> {
        let mut maxima = Vec::with_capacity(self.linears.len());
        self.run(x, batch, |_, act| {
            maxima.push(act.iter().fold(0f32, |m, v| m.max(v.abs())))
        })?;
        Ok(maxima)
    }

    /// Every weight in forward order: name, dense or sparse, density.
    pub fn layers(&self) -> Vec<LayerInfo> {
        self.convs
            .iter()
            .map(|c| c.info.clone())
            .chain(self.linears.iter().map(|l| l.info.clone()))
            .collect()
    }

    /// Input `(C, H, W)` of one sample (an MLP's is `(1, 1, inputs)`; any
    /// `[B, …]` layout with that many values per sample is taken).
    pub fn input_size(&self) -> usize {
        self.input.0 * self.input.1 * self.input.2
    }

    /// Output classes.
    pub fn num_classes(&self) -> usize {
        self.linears.last().map_or(0, |l| l.outputs)
    }

    /// The logits `[batch, classes]` (row-major) of `x`, `batch` samples of
    /// [`InferenceNet::input_size`] values each.
    pub fn forward(&self, x: &[f32], batch: usize) -> Result<Vec<f32>> {
        self.run(x, batch, |_, _| {})
    }

    /// The forward pass, calling `seen(layer, input)` with each linear
    /// layer's input (`[features, batch]`) before the layer runs.
    fn run(
        &self,
        x: &[f32],
        batch: usize,
        mut seen: impl FnMut(usize, &[f32]),
    ) -> Result<Vec<f32>> {
        if x.len() != batch * self.input_size() {
            return Err(ModelError::Config(format!(
                "inference input holds {} values, {batch} samples of {:?} need {}",
                x.len(),
                self.input,
                batch * self.input_size()
            )));
        }
        let features = if self.convs.is_empty() {
            std::borrow::Cow::Borrowed(x)
        } else {
            std::borrow::Cow::Owned(self.conv_features(x, batch))
        };
        // The linear layers run on [features, batch]: a sparse row then reads
        // whole rows of the batch.
        let mut act = transpose(&features, batch, features.len() / batch.max(1));
        let last = self.linears.len() - 1;
        for (i, layer) in self.linears.iter().enumerate() {
            seen(i, &act);
            let mut out = vec![0f32; layer.outputs * batch];
            match &layer.weights {
                Weights::Int8(q) => q.forward(&act, batch, &layer.bias, &mut out),
                Weights::Sparse(csr) if batch == 1 => csr.matvec(&act, Some(&layer.bias), &mut out),
                Weights::Sparse(csr) => csr.matmul(&act, batch, Some(&layer.bias), &mut out),
                Weights::Dense(w) => {
                    matmul(
                        MatMut::row_major(&mut out, layer.outputs, batch),
                        MatRef::row_major(w, layer.outputs, layer.inputs),
                        MatRef::row_major(&act, layer.inputs, batch),
                        false,
                    );
                    for (row, b) in out.chunks_exact_mut(batch).zip(&layer.bias) {
                        row.iter_mut().for_each(|v| *v += b);
                    }
                }
            }
            if i != last {
                out.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            act = out;
        }
        Ok(transpose(&act, self.num_classes(), batch))
    }

    /// The flattened output of the convolution stages, `[batch, features]`.
    fn conv_features(&self, x: &[f32], batch: usize) -> Vec<f32> {
        let per_in = self.input_size();
        let samples: Vec<Vec<f32>> = x
            .par_chunks(per_in)
            .map(|sample| {
                let mut act = sample.to_vec();
                for layer in &self.convs {
                    let s = &layer.shape;
                    let y = match &layer.weights {
                        Weights::Dense(w) => conv::forward(s, &act, w, Some(&layer.bias)),
                        Weights::Int8(_) => unreachable!("convolutions keep f32 weights"),
                        Weights::Sparse(csr) => {
                            let mut y = vec![0f32; s.out_sample()];
                            with_scratch(s.col_len(), |col| {
                                im2col(s, &act, col);
                                csr.matmul(
                                    &col[..s.k() * s.positions()],
                                    s.positions(),
                                    Some(&layer.bias),
                                    &mut y,
                                );
                            });
                            y
                        }
                    };
                    let [_, c, h, w] = s.out_dims();
                    act = max_pool2_relu(&y, c, h, w);
                }
                act
            })
            .collect();
        debug_assert_eq!(samples.len(), batch);
        samples.concat()
    }
}

/// The runtime layer of INT8 weight `name`, checked against the layer's
/// `[rows, cols]`.
fn quantized_layer(
    name: &str,
    q: &QuantizedWeight,
    rows: usize,
    cols: usize,
    sparse: bool,
) -> Result<Int8Linear> {
    if q.shape != [rows, cols] {
        return Err(ModelError::ShapeMismatch {
            name: name.to_string(),
            expected: vec![rows, cols],
            got: q.shape.clone(),
        });
    }
    q.check()
        .map_err(|e| ModelError::Config(format!("INT8 weight '{name}': {e}")))?;
    Int8Linear::new(q, sparse)
        .ok_or_else(|| ModelError::Config(format!("{name}: too many non-zeros for u32 indices")))
}

/// `[rows, cols]` → `[cols, rows]`, in 16×16 tiles, each output row of a
/// tile written as one slice (element by element, the writes would stride
/// through the whole output).
fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    if rows <= 1 || cols <= 1 {
        return x.to_vec();
    }
    const T: usize = 16;
    let mut out = vec![0f32; x.len()];
    for r0 in (0..rows).step_by(T) {
        let r1 = (r0 + T).min(rows);
        for c0 in (0..cols).step_by(T) {
            for c in c0..(c0 + T).min(cols) {
                let o = &mut out[c * rows + r0..c * rows + r1];
                for (k, v) in o.iter_mut().enumerate() {
                    *v = x[(r0 + k) * cols + c];
                }
            }
        }
    }
    out
}

/// `max(0, max-pool 2×2 stride 2)` of `[c, h, w]`, floor mode (odd sizes
/// drop the last row/column), as LeNet-5's training forward.
fn max_pool2_relu(x: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
    let (oh, ow) = (h / 2, w / 2);
    let mut out = Vec::with_capacity(c * oh * ow);
    for plane in x.chunks_exact(h * w) {
        for i in 0..oh {
            let (r0, r1) = (&plane[2 * i * w..], &plane[(2 * i + 1) * w..]);
            for j in 0..ow {
                let m = r0[2 * j]
                    .max(r0[2 * j + 1])
                    .max(r1[2 * j])
                    .max(r1[2 * j + 1]);
                out.push(m.max(0.0));
            }
        }
    }
    out
}

/// Post-training INT8 quantisation of a checkpoint (see [`crate::quant`]):
/// every f32 weight of rank ≥ 2 quantised per output channel, its tensor
/// replaced by the dequantised values; with `calibration` batches (`(x,
/// batch)`, inputs as [`InferenceNet::forward`] takes them), each linear
/// layer's input scale is fixed at `max |input| / 127` over them (static
/// activations), else left to each batch (dynamic). Masks and metadata are
/// kept; a weight that rounds to zero under a kept mask stays kept.
pub fn quantize_checkpoint(
    ckpt: &Checkpoint,
    calibration: &[(&[f32], usize)],
) -> Result<Checkpoint> {
    let mut out = ckpt.clone();
    out.quantized.clear();
    for (name, t) in &ckpt.tensors {
        if t.rank() < 2 || t.dtype() != candle_core::DType::F32 {
            continue;
        }
        let values = t.flatten_all()?.to_vec1::<f32>()?;
        let q = QuantizedWeight::quantize(&values, t.dims());
        out.tensors.insert(
            name.clone(),
            Tensor::from_vec(q.dequantize(), t.dims(), t.device())?,
        );
        out.quantized.insert(name.clone(), q);
    }
    if !calibration.is_empty() {
        let net = InferenceNet::new(&ckpt.config, &ckpt.tensors, LayerChoice::Dense)?;
        let mut maxima = vec![0f32; net.linears.len()];
        for (x, batch) in calibration {
            for (m, v) in maxima.iter_mut().zip(net.linear_input_max(x, *batch)?) {
                *m = m.max(v);
            }
        }
        for (layer, m) in net.linears.iter().zip(maxima) {
            if let Some(q) = out.quantized.get_mut(&layer.info.name) {
                q.input_scale = Some(crate::quant::scale_of(m));
            }
        }
    }
    Ok(out)
}
