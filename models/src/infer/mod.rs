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
//! | convolution, stride 1 (per sample, samples in parallel) | im2col + GEMM (the training kernel) | [`Csr::matmul_shifted`] on the zero-padded input, no im2col |
//! | convolution, stride 2 | im2col + GEMM | im2col + [`Csr::matmul`] over the output positions |
//!
//! Supported architectures: the MLPs (`lenet-300-100`, `mlp-…`), LeNet-5
//! (`lenet5`, `lenet5-xK`) and the CIFAR ResNets (`resnet20` … `resnet110`,
//! `resnet8x4`, `resnet32x4`; batch norms folded, see `residual.rs`); the
//! other zoo CNNs run through candle.

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
use crate::zoo::CifarLayout;
pub use bert::BertRuntime;
use residual::ResidualBody;

mod bert;
mod residual;

/// Which layers [`InferenceNet`] stores sparse.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum LayerChoice {
    /// Sparse where the weight's density (non-zeros / entries) is at most
    /// the crossover `bench-infer` measured for the layer's kind
    /// ([`LayerChoice::LINEAR_CROSSOVER`], [`LayerChoice::CONV_CROSSOVER`]),
    /// dense elsewhere. The default.
    #[default]
    Measured,
    /// Sparse where the weight's density is at most the given value, for
    /// every kind of layer.
    Auto(f64),
    /// Every layer dense.
    Dense,
    /// Every layer sparse.
    Sparse,
}

impl LayerChoice {
    /// The density at or below which [`LayerChoice::Measured`] stores a
    /// linear layer sparse: where `bench-infer` measured the sparse product
    /// overtaking the dense one at batch 1 (at batch 64 it wins up to about
    /// 0.3; models/README.md, "Sparse inference").
    pub const LINEAR_CROSSOVER: f64 = 0.1;

    /// The same for convolutions: the sparse convolution reads no im2col
    /// matrix and overtakes the dense one at about 0.4 (ResNet-20,
    /// `bench-infer`'s `convs=` lines); 0.3 keeps a margin.
    pub const CONV_CROSSOVER: f64 = 0.3;

    /// Whether a weight of `density` is stored sparse; `conv` for a
    /// convolution's.
    fn sparse(self, density: f64, conv: bool) -> bool {
        match self {
            LayerChoice::Measured if conv => density <= Self::CONV_CROSSOVER,
            LayerChoice::Measured => density <= Self::LINEAR_CROSSOVER,
            LayerChoice::Auto(limit) => density <= limit,
            LayerChoice::Dense => false,
            LayerChoice::Sparse => true,
        }
    }
}

/// An f32 weight as the forward pass reads it.
#[derive(Clone, Debug)]
enum Weights {
    /// Row-major `[out, in]` (a convolution's `[out, in·kh·kw]`).
    Dense(Vec<f32>),
    Sparse(Csr),
}

/// What a linear layer multiplies with.
#[derive(Clone, Debug)]
enum LinearKernel {
    F32(Weights),
    /// INT8 weights with integer products (the linear layers of a quantised
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
    kernel: LinearKernel,
    bias: Vec<f32>,
}

/// A convolution's weights as the forward pass reads them.
#[derive(Clone, Debug)]
enum ConvWeights {
    /// `[out, in·kh·kw]`, im2col + GEMM.
    Dense(Vec<f32>),
    /// im2col + [`Csr::matmul`] (strided convolutions).
    Im2col(Csr),
    /// Stride 1: [`Csr::matmul_shifted`] on the zero-padded input, the
    /// columns being each tap's offset into it; no im2col.
    Direct {
        csr: Csr,
        /// Padded input rows and columns.
        hp: usize,
        wp: usize,
    },
}

/// A convolution of one sample, bias added (a folded batch norm's shift in
/// the ResNets).
#[derive(Clone, Debug)]
struct Conv {
    info: LayerInfo,
    /// The shape of one sample's convolution.
    shape: ConvShape,
    weights: ConvWeights,
    bias: Vec<f32>,
}

impl Conv {
    /// The convolution of shape `shape` with `weights` (`[out, in·kh·kw]`,
    /// stored as [`weights`] chose).
    fn new(shape: ConvShape, weights: Weights, info: LayerInfo, bias: Vec<f32>) -> Result<Self> {
        let weights = match weights {
            Weights::Dense(w) => ConvWeights::Dense(w),
            Weights::Sparse(csr)
                if shape.params().stride == 1
                    && shape.params().dilation == 1
                    && shape.params().groups == 1 =>
            {
                let [_, _, kh, kw] = shape.weight_dims();
                let [_, in_c, in_h, in_w] = shape.in_dims();
                let pad = shape.params().padding;
                let (hp, wp) = (in_h + 2 * pad, in_w + 2 * pad);
                // The taps of the last output row reach kw − 1 floats past
                // the padded input (junk columns): the buffer holds them.
                let len = in_c * hp * wp + kw - 1;
                let offset = |k: u32| {
                    let k = k as usize;
                    let (c, a, b) = (k / (kh * kw), (k / kw) % kh, k % kw);
                    (c * hp * wp + a * wp + b) as u32
                };
                let too_big = || {
                    ModelError::Config(format!("{}: too many inputs for u32 offsets", info.name))
                };
                u32::try_from(len).map_err(|_| too_big())?;
                ConvWeights::Direct {
                    csr: csr.with_columns(len, offset).ok_or_else(too_big)?,
                    hp,
                    wp,
                }
            }
            Weights::Sparse(csr) => ConvWeights::Im2col(csr),
        };
        Ok(Self {
            info,
            shape,
            weights,
            bias,
        })
    }

    /// The convolution of `x` (one sample, `[C, H, W]`), `[O, OH, OW]`.
    fn apply(&self, x: &[f32]) -> Vec<f32> {
        let s = &self.shape;
        match &self.weights {
            ConvWeights::Dense(w) => conv::forward(s, x, w, Some(&self.bias)),
            ConvWeights::Im2col(csr) => {
                let mut y = vec![0f32; s.out_sample()];
                with_scratch(s.col_len(), |col| {
                    im2col(s, x, col);
                    csr.matmul(
                        &col[..s.k() * s.positions()],
                        s.positions(),
                        Some(&self.bias),
                        &mut y,
                    );
                });
                y
            }
            &ConvWeights::Direct { ref csr, hp, wp } => {
                let pad = s.params().padding;
                let [_, in_c, in_h, in_w] = s.in_dims();
                let [_, o, oh, ow] = s.out_dims();
                if pad == 0 && wp == ow {
                    // 1×1, unpadded: the input is its own padded input, and
                    // the output rows have no junk columns.
                    let mut y = vec![0f32; s.out_sample()];
                    csr.matmul_shifted(x, oh * wp, Some(&self.bias), &mut y);
                    return y;
                }
                let mut padded = vec![0f32; csr.cols()];
                for (src, dst) in x
                    .chunks_exact(in_h * in_w)
                    .zip(padded.chunks_exact_mut(hp * wp))
                    .take(in_c)
                {
                    for (r, row) in src.chunks_exact(in_w).enumerate() {
                        let at = (r + pad) * wp + pad;
                        dst[at..at + in_w].copy_from_slice(row);
                    }
                }
                // The output on the padded width, then its first `ow`
                // columns of each row.
                let mut wide = vec![0f32; o * oh * wp];
                csr.matmul_shifted(&padded, oh * wp, Some(&self.bias), &mut wide);
                if wp == ow {
                    return wide;
                }
                let mut y = Vec::with_capacity(s.out_sample());
                for row in wide.chunks_exact(wp) {
                    y.extend_from_slice(&row[..ow]);
                }
                y
            }
        }
    }
}

/// The layers before the linear ones.
#[derive(Clone, Debug)]
enum Body {
    /// Convolutions, each followed by ReLU and a 2×2 max-pool (LeNet-5;
    /// none in an MLP).
    Pooled(Vec<Conv>),
    /// A CIFAR ResNet up to its global average pool.
    Residual(Box<ResidualBody>),
}

/// A network ready for inference (see the module docs).
#[derive(Clone, Debug)]
pub struct InferenceNet {
    input: (usize, usize, usize),
    body: Body,
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

/// The weight `name` (`rows × cols`; a convolution's when `conv`) stored as
/// `choice` says, and its description.
fn weights(
    name: &str,
    dense: Vec<f32>,
    rows: usize,
    cols: usize,
    choice: LayerChoice,
    conv: bool,
) -> Result<(Weights, LayerInfo)> {
    let nnz = dense.iter().filter(|v| **v != 0.0).count();
    let density = nnz as f64 / dense.len().max(1) as f64;
    let sparse = choice.sparse(density, conv);
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

/// LeNet-5's convolutions (rank-4 weights of `shapes`, forward order):
/// conv1 pads 2, conv2 as its geometry says; a 2×2 max-pool follows each.
fn pooled_convs(
    config: &ModelConfig,
    shapes: &[(String, Vec<usize>)],
    input: (usize, usize, usize),
    tensors: &BTreeMap<String, Tensor>,
    choice: LayerChoice,
) -> Result<Vec<Conv>> {
    let mut convs = Vec::new();
    // The input of the next convolution: `[1, C, H, W]` of one sample.
    let mut conv_input = [1, input.0, input.1, input.2];
    for (wname, shape) in shapes {
        let &[out, c, kh, kw] = shape.as_slice() else {
            continue;
        };
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
        let dense = values(tensors, wname, shape)?;
        let bias = values(
            tensors,
            &format!("{}.bias", bias_prefix(wname)),
            &shape[..1],
        )?;
        let (weights, info) = weights(wname, dense, out, c * kh * kw, choice, true)?;
        convs.push(Conv::new(conv, weights, info, bias)?);
    }
    Ok(convs)
}

/// `fc1` of `fc1.weight`.
fn bias_prefix(weight: &str) -> &str {
    weight.trim_end_matches(".weight")
}

impl InferenceNet {
    /// The network of `config` with `tensors` (a checkpoint's, masks applied),
    /// each weight stored as `choice` says. Errors for the zoo CNNs other
    /// than the CIFAR ResNets, and name a missing or mis-shaped tensor.
    pub fn new(
        config: &ModelConfig,
        tensors: &BTreeMap<String, Tensor>,
        choice: LayerChoice,
    ) -> Result<Self> {
        // The weights' shapes in forward order, as the architecture declares
        // them: rank 4 are convolutions, rank 2 the linear layers.
        let shapes: Vec<(String, Vec<usize>)> = config
            .param_shapes()
            .into_iter()
            .filter(|(name, shape)| name.ends_with(".weight") && shape.len() != 1)
            .collect();
        let (input, body) = match config {
            ModelConfig::Mlp { input_dim, .. } => ((1, 1, *input_dim), Body::Pooled(Vec::new())),
            ModelConfig::LeNet5 {
                in_channels,
                height,
                width,
                ..
            } => {
                let input = (*in_channels, *height, *width);
                let convs = pooled_convs(config, &shapes, input, tensors, choice)?;
                (input, Body::Pooled(convs))
            }
            ModelConfig::Cnn {
                model,
                in_channels,
                height,
                width,
                widths,
                ..
            } => {
                let input = (*in_channels, *height, *width);
                let layout = CifarLayout::of(*model).ok_or_else(|| {
                    ModelError::Config(format!(
                        "the inference runtime covers the MLPs, LeNet-5 and the CIFAR \
                         ResNets, not {model}"
                    ))
                })?;
                let body = ResidualBody::new(layout, input, widths, tensors, choice)?;
                (input, Body::Residual(Box::new(body)))
            }
        };
        let mut linears = Vec::new();
        for (wname, shape) in &shapes {
            let &[outputs, inputs] = shape.as_slice() else {
                if shape.len() == 4 {
                    continue;
                }
                return Err(ModelError::Config(format!(
                    "{wname}: a weight of shape {shape:?} has no inference layer"
                )));
            };
            let dense = values(tensors, wname, shape)?;
            let bias = values(tensors, &format!("{}.bias", bias_prefix(wname)), &[outputs])?;
            let (weights, info) = weights(wname, dense, outputs, inputs, choice, false)?;
            linears.push(Linear {
                info,
                inputs,
                outputs,
                kernel: LinearKernel::F32(weights),
                bias,
            });
        }
        Ok(Self {
            input,
            body,
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
                layer.kernel = LinearKernel::Int8(int8);
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
        let convs: Vec<&Conv> = match &self.body {
            Body::Pooled(convs) => convs.iter().collect(),
            Body::Residual(body) => body.convs(),
        };
        convs
            .into_iter()
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
        let features = match &self.body {
            Body::Pooled(convs) if convs.is_empty() => std::borrow::Cow::Borrowed(x),
            _ => std::borrow::Cow::Owned(self.conv_features(x, batch)),
        };
        // The linear layers run on [features, batch]: a sparse row then reads
        // whole rows of the batch.
        let mut act = transpose(&features, batch, features.len() / batch.max(1));
        let last = self.linears.len() - 1;
        for (i, layer) in self.linears.iter().enumerate() {
            seen(i, &act);
            let mut out = vec![0f32; layer.outputs * batch];
            match &layer.kernel {
                LinearKernel::Int8(q) => q.forward(&act, batch, &layer.bias, &mut out),
                LinearKernel::F32(Weights::Sparse(csr)) if batch == 1 => {
                    csr.matvec(&act, Some(&layer.bias), &mut out)
                }
                LinearKernel::F32(Weights::Sparse(csr)) => {
                    csr.matmul(&act, batch, Some(&layer.bias), &mut out)
                }
                LinearKernel::F32(Weights::Dense(w)) => {
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

    /// The flattened output of the layers before the linear ones,
    /// `[batch, features]`; samples in parallel.
    fn conv_features(&self, x: &[f32], batch: usize) -> Vec<f32> {
        let samples: Vec<Vec<f32>> = x
            .par_chunks(self.input_size())
            .map(|sample| match &self.body {
                Body::Pooled(convs) => {
                    let mut act = sample.to_vec();
                    for layer in convs {
                        let y = layer.apply(&act);
                        let [_, c, h, w] = layer.shape.out_dims();
                        act = max_pool2_relu(&y, c, h, w);
                    }
                    act
                }
                Body::Residual(body) => body.features(sample),
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
