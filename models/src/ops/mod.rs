//! CPU kernels for convolution and pooling, wired into candle as custom ops
//! with their own backward passes.
//!
//! - [`conv2d`]: im2col + GEMM (the `gemm` crate), stride, padding, dilation
//!   and groups (a direct kernel for depthwise layers), parallel over the batch;
//!   both gradients (input and weight).
//! - [`max_pool2d`], [`avg_pool2d`]: any kernel, stride and padding, forward
//!   and backward (candle has a backward only for kernel = stride, and its
//!   max-pool backward scales the gradient of a window maximum by `1/(kh·kw)`).
//! - [`batch_norm_train`] (with a fused ReLU) and [`batch_norm_add_relu_train`]
//!   (the end of a residual block: batch norm, shortcut sum and ReLU in one
//!   pass, shortcut A included): training-mode batch norm, sums in f64.
//! - [`basic_block_train`]: a whole residual basic block (conv · BN · ReLU ·
//!   conv · BN, + shortcut, ReLU) as one op, so that candle's autograd does
//!   not zero-fill and add a gradient buffer for each of its nine nodes.
//! - [`transformer`]: the erf GELU, softmax and layer norm over the last
//!   axis, each one pass with its backward (the BERT encoder's).
//!
//! They run on f32 tensors on the CPU. The networks choose through [`Kernels`]:
//! [`Kernels::Auto`] takes these kernels on the CPU and candle's own ops on
//! CUDA/Metal; [`Kernels::Candle`] takes candle's ops everywhere (pooling then
//! comes from differentiable candle ops, [`max_pool2d_candle`] and
//! [`avg_pool2d_candle`], whose gradients are right).
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use candle_nn::Conv2dConfig;
//! use kdprune_models::ops::{self, Pool2dConfig};
//!
//! let dev = Device::Cpu;
//! let x = Tensor::randn(0f32, 1.0, (2, 3, 8, 8), &dev)?;
//! let w = Var::randn(0f32, 0.1, (4, 3, 3, 3), &dev)?;
//! let cfg = Conv2dConfig { padding: 1, ..Default::default() };
//! let y = ops::conv2d(&x, w.as_tensor(), None, &cfg)?;
//! let y = ops::max_pool2d(&y, &Pool2dConfig::new(2))?;
//! assert_eq!(y.dims(), &[2, 4, 4, 4]);
//! let grads = y.sum_all()?.backward()?;
//! assert_eq!(grads.get(w.as_tensor()).unwrap().dims(), &[4, 3, 3, 3]);
//! # Ok::<(), candle_core::Error>(())
//! ```

mod batch_norm;
mod block;
pub(crate) mod conv;
pub(crate) mod cpu;
pub(crate) mod gemm;
mod pool;
pub mod sparse;
pub mod transformer;

pub use batch_norm::{
    batch_norm_add_relu_train, batch_norm_add_relu_train_candle, batch_norm_train,
    batch_norm_train_candle, Shortcut,
};
pub use block::{basic_block_train, basic_block_train_candle, BlockBn, BlockConv, BlockOutput};

use candle_core::{bail, DType, Result, Tensor};
use candle_nn::{Conv2dConfig, Module};
use serde::{Deserialize, Serialize};

use conv::{Conv2dOp, ConvParams};
pub use pool::Pool2dConfig;
use pool::{AvgPool2dOp, MaxPool2dOp};

/// 2-D convolution `[N, C, H, W] ⊛ [O, C/g, KH, KW] (+ bias [O]) → [N, O, OH, OW]`
/// with kdprune's CPU kernel (im2col + GEMM, parallel over the batch), with
/// gradients for the input, the weight and the bias.
///
/// `y[n,o,i,j] = b[o] + Σ_{c∈group(o)} Σ_{a,b} w[o,c,a,b]·x[n,c,i·s+a·d−p, j·s+b·d−p]`,
/// `OH = ⌊(H + 2p − d·(KH−1) − 1)/s⌋ + 1`, as candle's `conv2d` and PyTorch's
/// `Conv2d`. Only f32 tensors on the CPU; see [`Kernels`] for a dispatch that
/// falls back to candle elsewhere.
pub fn conv2d(
    xs: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cfg: &Conv2dConfig,
) -> Result<Tensor> {
    let params = ConvParams::from(cfg);
    let (xs, weight) = (xs.contiguous()?, weight.contiguous()?);
    match bias {
        None => xs.apply_op2(&weight, Conv2dOp { params }),
        // The bias is added inside the kernel, and its gradient summed there:
        // a broadcast add would cost a pass over the output and a slow reduction.
        Some(b) => xs.apply_op3(&weight, &b.contiguous()?, Conv2dOp { params }),
    }
}

/// Max-pooling of `[N, C, H, W]` with kdprune's CPU kernel (any kernel, stride
/// and padding; the gradient goes to the window maximum, as in PyTorch).
///
/// `y[n,c,i,j] = max_{a<kh, b<kw} x[n,c,i·sh−ph+a, j·sw−pw+b]` over the
/// positions inside the image. Only f32 tensors on the CPU.
pub fn max_pool2d(xs: &Tensor, cfg: &Pool2dConfig) -> Result<Tensor> {
    xs.contiguous()?.apply_op1(MaxPool2dOp {
        cfg: *cfg,
        relu: false,
    })
}

/// `relu(max_pool2d(xs))` in one kernel, with its gradient: the ReLU's
/// forward and backward passes cost nothing beyond the pool's (a network
/// that pools then rectifies, as LeNet-5 does, saves two passes over the
/// pooled map and their buffers).
///
/// `y = max(0, max-pool(x))` (a NaN stays NaN); the gradient reaches the
/// window maximum where `y > 0`, as `relu(max_pool2d(x))` in PyTorch. Only
/// f32 tensors on the CPU.
pub fn max_pool2d_relu(xs: &Tensor, cfg: &Pool2dConfig) -> Result<Tensor> {
    xs.contiguous()?.apply_op1(MaxPool2dOp {
        cfg: *cfg,
        relu: true,
    })
}

/// Average-pooling of `[N, C, H, W]` with kdprune's CPU kernel (any kernel,
/// stride and padding), with its gradient.
///
/// `y[n,c,i,j] = (1/(kh·kw)) Σ_{a<kh, b<kw} x[n,c,i·sh−ph+a, j·sw−pw+b]`, padded
/// positions counting as zeros (PyTorch's `AvgPool2d` with
/// `count_include_pad=True`). Only f32 tensors on the CPU.
pub fn avg_pool2d(xs: &Tensor, cfg: &Pool2dConfig) -> Result<Tensor> {
    xs.contiguous()?.apply_op1(AvgPool2dOp { cfg: *cfg })
}

/// Max-pooling built from candle's differentiable ops, on any device, with
/// the same definition and gradient as [`max_pool2d`] (except that tied
/// maxima share the gradient).
///
/// Kernel = stride without padding is a reshape and two `max` reductions;
/// anything else pads with −∞ and takes the maximum over the `kh·kw` strided
/// views gathered by `index_select`.
pub fn max_pool2d_candle(xs: &Tensor, cfg: &Pool2dConfig) -> Result<Tensor> {
    let (b, c, h, w) = xs.dims4()?;
    let (oh, ow) = checked_output_size(cfg, h, w)?;
    if cfg.kernel == cfg.stride && cfg.padding == (0, 0) {
        let (kh, kw) = cfg.kernel;
        let xs = xs
            .narrow(2, 0, oh * kh)?
            .narrow(3, 0, ow * kw)?
            .contiguous()?;
        return xs.reshape((b, c, oh, kh, ow, kw))?.max(5)?.max(3);
    }
    let padded = pad_hw(xs, cfg.padding, f32::NEG_INFINITY)?;
    window_views(&padded, cfg, oh, ow)?.max(4)
}

/// Average-pooling built from candle's differentiable ops, on any device,
/// with the same definition as [`avg_pool2d`] (padded zeros counted).
///
/// Kernel = stride without padding is candle's `avg_pool2d` on the input
/// cropped to whole windows (candle's backward upsamples the gradient to the
/// full input, which misplaces it when a row or column is left over);
/// anything else pads with zeros and averages the `kh·kw` strided views
/// gathered by `index_select`.
pub fn avg_pool2d_candle(xs: &Tensor, cfg: &Pool2dConfig) -> Result<Tensor> {
    let (_, _, h, w) = xs.dims4()?;
    let (oh, ow) = checked_output_size(cfg, h, w)?;
    if cfg.kernel == cfg.stride && cfg.padding == (0, 0) {
        let (kh, kw) = cfg.kernel;
        let xs = xs.narrow(2, 0, oh * kh)?.narrow(3, 0, ow * kw)?;
        return xs.contiguous()?.avg_pool2d(cfg.kernel);
    }
    let padded = pad_hw(xs, cfg.padding, 0.0)?;
    window_views(&padded, cfg, oh, ow)?.mean(4)
}

fn checked_output_size(cfg: &Pool2dConfig, h: usize, w: usize) -> Result<(usize, usize)> {
    if 2 * cfg.padding.0 > cfg.kernel.0 || 2 * cfg.padding.1 > cfg.kernel.1 {
        bail!("pool2d: padding must be at most half the kernel, got {cfg:?}")
    }
    match cfg.output_size(h, w) {
        Some(size) => Ok(size),
        None => bail!("pool2d: the window of {cfg:?} does not fit a {h}x{w} input"),
    }
}

/// `xs` with `(ph, pw)` rows/columns of `value` on each side of dims 2 and 3.
fn pad_hw(xs: &Tensor, (ph, pw): (usize, usize), value: f32) -> Result<Tensor> {
    let mut xs = xs.clone();
    for (dim, p) in [(2, ph), (3, pw)] {
        if p > 0 {
            let mut dims = xs.dims().to_vec();
            dims[dim] = p;
            let fill = Tensor::full(value, dims, xs.device())?.to_dtype(xs.dtype())?;
            xs = Tensor::cat(&[&fill, &xs, &fill], dim)?;
        }
    }
    Ok(xs)
}

/// `[N, C, OH, OW, kh·kw]`: for every window offset `(a, b)`, the view
/// `x[.., i·sh + a, j·sw + b]` of the (already padded) input.
fn window_views(xs: &Tensor, cfg: &Pool2dConfig, oh: usize, ow: usize) -> Result<Tensor> {
    let dev = xs.device();
    let mut views = Vec::with_capacity(cfg.kernel.0 * cfg.kernel.1);
    for a in 0..cfg.kernel.0 {
        let rows: Vec<u32> = (0..oh).map(|i| (i * cfg.stride.0 + a) as u32).collect();
        let by_rows = xs.index_select(&Tensor::new(rows, dev)?, 2)?;
        for b in 0..cfg.kernel.1 {
            let cols: Vec<u32> = (0..ow).map(|j| (j * cfg.stride.1 + b) as u32).collect();
            views.push(by_rows.index_select(&Tensor::new(cols, dev)?, 3)?);
        }
    }
    Tensor::stack(&views, 4)
}

/// Which implementation of convolution and pooling a network uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kernels {
    /// kdprune's kernels ([`conv2d`], [`max_pool2d`], [`avg_pool2d`]) for f32
    /// tensors on the CPU; candle's ops on any other device or dtype.
    #[default]
    Auto,
    /// candle's ops everywhere: `candle_nn::Conv2d`, [`max_pool2d_candle`],
    /// [`avg_pool2d_candle`] (the reference the kernels are measured against).
    Candle,
}

impl Kernels {
    /// Whether kdprune's kernels run for `xs`.
    pub fn native(self, xs: &Tensor) -> bool {
        self == Kernels::Auto && xs.device().is_cpu() && xs.dtype() == DType::F32
    }

    /// `layer` applied to `xs` (weight, bias and configuration from the layer).
    pub fn conv2d(self, layer: &candle_nn::Conv2d, xs: &Tensor) -> Result<Tensor> {
        if self.native(xs) {
            conv2d(xs, layer.weight(), layer.bias(), layer.config())
        } else {
            layer.forward(xs)
        }
    }

    /// Max-pooling of `xs` ([`max_pool2d`] or [`max_pool2d_candle`]).
    pub fn max_pool2d(self, xs: &Tensor, cfg: &Pool2dConfig) -> Result<Tensor> {
        if self.native(xs) {
            max_pool2d(xs, cfg)
        } else {
            max_pool2d_candle(xs, cfg)
        }
    }

    /// `relu(max-pool(xs))` ([`max_pool2d_relu`], or [`max_pool2d_candle`]
    /// followed by candle's `relu`).
    pub fn max_pool2d_relu(self, xs: &Tensor, cfg: &Pool2dConfig) -> Result<Tensor> {
        if self.native(xs) {
            max_pool2d_relu(xs, cfg)
        } else {
            max_pool2d_candle(xs, cfg)?.relu()
        }
    }

    /// Average-pooling of `xs` ([`avg_pool2d`] or [`avg_pool2d_candle`]).
    pub fn avg_pool2d(self, xs: &Tensor, cfg: &Pool2dConfig) -> Result<Tensor> {
        if self.native(xs) {
            avg_pool2d(xs, cfg)
        } else {
            avg_pool2d_candle(xs, cfg)
        }
    }

    /// Training-mode batch norm, ReLU fused when `relu`: the output and the
    /// batch `(mean, biased variance)` ([`batch_norm_train`] or
    /// [`batch_norm_train_candle`]).
    pub fn batch_norm_train(
        self,
        xs: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f64,
        relu: bool,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        if self.native(xs) {
            batch_norm_train(xs, gamma, beta, eps, relu)
        } else {
            batch_norm_train_candle(xs, gamma, beta, eps, relu)
        }
    }

    /// The end of a residual block, training mode:
    /// `max(0, batch_norm(xs) + shortcut(residual))` and the batch
    /// `(mean, biased variance)` of `xs` ([`batch_norm_add_relu_train`] or
    /// [`batch_norm_add_relu_train_candle`]).
    pub fn batch_norm_add_relu_train(
        self,
        xs: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f64,
        residual: &Tensor,
        shortcut: Shortcut,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        if self.native(xs) && self.native(residual) {
            batch_norm_add_relu_train(xs, gamma, beta, eps, residual, shortcut)
        } else {
            batch_norm_add_relu_train_candle(xs, gamma, beta, eps, residual, shortcut)
        }
    }
}
