//! Building blocks of the zoo: a builder that records every parameter (name,
//! shape, fan-in, initialisation), buffer and multiply–accumulate while it
//! creates the layers, and the layers themselves.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::Conv2dConfig;

use crate::ops::{BlockBn, BlockConv, Kernels, Shortcut};
use kd_core::init::{Init, ParamSpec};

/// A non-trainable tensor of a network (batch-norm running statistics).
#[derive(Clone, Debug, PartialEq)]
pub struct BufferSpec {
    /// Tensor name, e.g. `layer1.0.bn1.running_mean`.
    pub name: String,
    /// Shape (`[C]`).
    pub shape: Vec<usize>,
    /// Initial value of every element (0 for a mean, 1 for a variance).
    pub fill: f32,
}

/// Creates layers and records what they hold.
///
/// In a dry run ([`Builder::dry`]) the layers get zero-cost broadcast
/// placeholders: only the records (parameter specs, buffers, MACs) matter.
pub struct Builder {
    device: Device,
    dry: bool,
    /// Layers get detached views of their parameters ([`Builder::frozen`]).
    frozen: bool,
    prefix: Vec<String>,
    /// Parameters in creation (forward) order.
    pub specs: Vec<ParamSpec>,
    /// Buffers in creation order.
    pub buffers: Vec<BufferSpec>,
    /// The trainable variables created (empty in a dry run).
    pub vars: BTreeMap<String, Var>,
    /// The buffer variables created (empty in a dry run).
    pub buffer_vars: BTreeMap<String, Var>,
    /// Multiply–accumulates of one forward pass on one sample (convolutions
    /// and linear layers).
    pub macs: u64,
    /// Widths that replace the network's defaults, by layer name.
    widths: BTreeMap<String, usize>,
    /// The layers that asked for a width ([`Builder::width`]), with the
    /// width they got, in creation order.
    pub width_groups: Vec<(String, usize)>,
    /// The residual blocks that may be removed ([`Builder::block_kept`]),
    /// with whether they are kept, in creation order.
    pub blocks: Vec<(String, bool)>,
}

impl Builder {
    /// A builder that allocates zero-initialised variables on `device`.
    pub fn new(device: &Device) -> Self {
        Self {
            device: device.clone(),
            dry: false,
            frozen: false,
            prefix: Vec::new(),
            specs: Vec::new(),
            buffers: Vec::new(),
            vars: BTreeMap::new(),
            buffer_vars: BTreeMap::new(),
            macs: 0,
            widths: BTreeMap::new(),
            width_groups: Vec::new(),
            blocks: Vec::new(),
        }
    }

    /// This builder handing the layers detached views of the parameter
    /// variables: the same storage (setting a variable changes the layer),
    /// but no operation on them records a graph, so a forward pass frees
    /// each activation as soon as the next layer has used it. For inference
    /// only: gradients never reach the variables.
    pub fn frozen(mut self) -> Self {
        self.frozen = true;
        self
    }

    /// This builder with `widths` replacing the default output channels of
    /// the layers named in it ([`Builder::width`]).
    pub fn with_widths(mut self, widths: BTreeMap<String, usize>) -> Self {
        self.widths = widths;
        self
    }

    /// The output channels of layer `prefix.name`: its entry in the widths,
    /// else `default`. Records the layer as one whose width may change.
    pub fn width(&mut self, name: &str, default: usize) -> Result<usize> {
        let full = self.full_name(name);
        let w = self.widths.get(&full).copied().unwrap_or(default);
        if w == 0 || w > default {
            candle_core::bail!("width of {full} must be in 1..={default}, got {w}")
        }
        self.width_groups.push((full, w));
        Ok(w)
    }

    /// Whether residual block `prefix.name` (one whose shortcut is the
    /// identity) is kept: a width of 0 in the widths removes it (structured
    /// block removal), no entry keeps it. Records the block as removable.
    pub fn block_kept(&mut self, name: &str) -> Result<bool> {
        let full = self.full_name(name);
        let kept = match self.widths.get(&full) {
            None => true,
            Some(0) => false,
            Some(w) => {
                candle_core::bail!("block {full} is kept (no entry) or removed (0), got {w}")
            }
        };
        self.blocks.push((full, kept));
        Ok(kept)
    }

    /// Fails when a width names a layer that took none (or a block that
    /// cannot be removed).
    pub fn check_widths(&self) -> Result<()> {
        for name in self.widths.keys() {
            if !self.width_groups.iter().any(|(n, _)| n == name)
                && !self.blocks.iter().any(|(n, _)| n == name)
            {
                let known: Vec<&str> = self.width_groups.iter().map(|(n, _)| n.as_str()).collect();
                candle_core::bail!(
                    "no layer `{name}` takes a width (those that do: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )
            }
        }
        Ok(())
    }

    /// The device the variables are allocated on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A builder that records shapes and MACs without allocating.
    pub fn dry() -> Self {
        Self {
            dry: true,
            ..Self::new(&Device::Cpu)
        }
    }

    /// Runs `f` with `name` appended to the name prefix.
    pub fn scope<T>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.prefix.push(name.to_string());
        let out = f(self);
        self.prefix.pop();
        out
    }

    fn full_name(&self, name: &str) -> String {
        let mut parts = self.prefix.clone();
        parts.push(name.to_string());
        parts.join(".")
    }

    fn placeholder(&self, shape: &[usize], fill: f32) -> Result<Tensor> {
        Tensor::full(fill, 1, &self.device)?.broadcast_as(shape)
    }

    /// A trainable parameter `prefix.name`.
    pub fn param(
        &mut self,
        name: &str,
        shape: &[usize],
        fan_in: usize,
        init: Init,
    ) -> Result<Tensor> {
        let name = self.full_name(name);
        self.specs.push(ParamSpec {
            name: name.clone(),
            shape: shape.to_vec(),
            fan_in,
            init,
        });
        if self.dry {
            return self.placeholder(shape, 0.0);
        }
        let var = Var::zeros(shape, DType::F32, &self.device)?;
        let t = if self.frozen {
            var.as_tensor().detach()
        } else {
            var.as_tensor().clone()
        };
        self.vars.insert(name, var);
        Ok(t)
    }

    /// A buffer `prefix.name` filled with `fill`.
    pub fn buffer(&mut self, name: &str, shape: &[usize], fill: f32) -> Result<Option<Var>> {
        let name = self.full_name(name);
        self.buffers.push(BufferSpec {
            name: name.clone(),
            shape: shape.to_vec(),
            fill,
        });
        if self.dry {
            return Ok(None);
        }
        let var = Var::from_tensor(&Tensor::full(fill, shape, &self.device)?)?;
        self.buffer_vars.insert(name, var.clone());
        Ok(Some(var))
    }

    /// A `k×k` convolution `prefix.name` of an `hw`-sized input; returns the
    /// layer and its output size. The weight is `[out, in/groups, k, k]`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        name: &str,
        (cin, cout): (usize, usize),
        k: usize,
        stride: usize,
        padding: usize,
        groups: usize,
        bias: bool,
        (h, w): (usize, usize),
    ) -> Result<(Conv, (usize, usize))> {
        if h + 2 * padding < k || w + 2 * padding < k {
            candle_core::bail!(
                "{}: a {k}x{k} kernel does not fit a {h}x{w} map",
                self.full_name(name)
            )
        }
        let out = (
            (h + 2 * padding - k) / stride + 1,
            (w + 2 * padding - k) / stride + 1,
        );
        let fan_in = cin / groups * k * k;
        let (weight, bias) = self.scope(name, |b| {
            let weight = b.param("weight", &[cout, cin / groups, k, k], fan_in, Init::Uniform)?;
            let bias = if bias {
                Some(b.param("bias", &[cout], fan_in, Init::Uniform)?)
            } else {
                None
            };
            Ok((weight, bias))
        })?;
        self.macs += (out.0 * out.1 * cout * fan_in) as u64;
        let cfg = Conv2dConfig {
            padding,
            stride,
            dilation: 1,
            groups,
            cudnn_fwd_algo: None,
        };
        Ok((
            Conv {
                layer: candle_nn::Conv2d::new(weight, bias, cfg),
            },
            out,
        ))
    }

    /// A depthwise `k×k` convolution `prefix.name` of `c` channels at
    /// `dilation`, padded to keep the size at stride 1 (`dilation·(k−1)/2`,
    /// `k` odd), without bias; returns the layer and its output size.
    pub fn conv_dilated(
        &mut self,
        name: &str,
        c: usize,
        k: usize,
        stride: usize,
        dilation: usize,
        (h, w): (usize, usize),
    ) -> Result<(Conv, (usize, usize))> {
        let padding = dilation * (k - 1) / 2;
        let span = dilation * (k - 1) + 1;
        if h + 2 * padding < span || w + 2 * padding < span {
            candle_core::bail!(
                "{}: a {k}x{k} kernel at dilation {dilation} does not fit a {h}x{w} map",
                self.full_name(name)
            )
        }
        let out = (
            (h + 2 * padding - span) / stride + 1,
            (w + 2 * padding - span) / stride + 1,
        );
        let weight = self.scope(name, |b| {
            b.param("weight", &[c, 1, k, k], k * k, Init::Uniform)
        })?;
        self.macs += (out.0 * out.1 * c * k * k) as u64;
        let cfg = Conv2dConfig {
            padding,
            stride,
            dilation,
            groups: c,
            cudnn_fwd_algo: None,
        };
        Ok((
            Conv {
                layer: candle_nn::Conv2d::new(weight, None, cfg),
            },
            out,
        ))
    }

    /// A batch norm `prefix.name` over `c` channels.
    pub fn bn(&mut self, name: &str, c: usize) -> Result<BatchNorm2d> {
        self.scope(name, |b| {
            let weight = b.param("weight", &[c], c, Init::Ones)?;
            let bias = b.param("bias", &[c], c, Init::Zeros)?;
            let running_mean = b.buffer("running_mean", &[c], 0.0)?;
            let running_var = b.buffer("running_var", &[c], 1.0)?;
            Ok(BatchNorm2d {
                weight,
                bias,
                running: running_mean.zip(running_var),
            })
        })
    }

    /// A linear layer `prefix.name` with bias.
    pub fn linear(&mut self, name: &str, cin: usize, cout: usize) -> Result<candle_nn::Linear> {
        let (weight, bias) = self.scope(name, |b| {
            Ok((
                b.param("weight", &[cout, cin], cin, Init::Uniform)?,
                b.param("bias", &[cout], cin, Init::Uniform)?,
            ))
        })?;
        self.macs += (cin * cout) as u64;
        Ok(candle_nn::Linear::new(weight, Some(bias)))
    }
}

/// A 2-D convolution: kdprune's CPU kernel for f32 on the CPU, candle's op
/// elsewhere (see [`Kernels`]).
///
/// The two agree to f32 rounding. A comparison of whole-network gradients
/// can still show an isolated difference of a few 1e-3 where a pre-activation
/// lies within rounding of zero (1e-8 in ResNet-20 at a fresh
/// initialisation): the ReLU passes the gradient in one run and not in the
/// other. That is a kink of the function, not an error of either kernel.
#[derive(Clone, Debug)]
pub struct Conv {
    layer: candle_nn::Conv2d,
}

impl Conv {
    /// The convolution of `xs` with the kernels `k`.
    pub fn forward(&self, xs: &Tensor, k: Kernels) -> Result<Tensor> {
        k.conv2d(&self.layer, xs)
    }

    /// The weight, `[out, in/groups, k, k]`.
    pub(crate) fn weight(&self) -> &Tensor {
        self.layer.weight()
    }

    /// Weight and configuration, for a fused block; `None` with a bias.
    pub(crate) fn block_conv(&self) -> Option<BlockConv<'_>> {
        self.layer.bias().is_none().then(|| BlockConv {
            weight: self.layer.weight(),
            cfg: self.layer.config(),
        })
    }
}

/// Batch normalisation over the channels of `[N, C, H, W]` (PyTorch's
/// `BatchNorm2d`: ε = 1e-5, momentum 0.1).
///
/// Training mode normalises with the batch statistics (biased variance) and
/// moves the running statistics towards them, the variance unbiased:
/// `r ← 0.9·r + 0.1·batch`. Evaluation mode normalises with the running
/// statistics. The running statistics are buffers: not trained, not pruned,
/// not decayed, but saved with the checkpoint.
#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    /// `(running_mean, running_var)`; `None` in a dry build.
    running: Option<(Var, Var)>,
}

/// PyTorch's `BatchNorm2d` defaults.
pub const BN_EPS: f64 = 1e-5;
/// Weight of the batch statistics in the running average.
pub const BN_MOMENTUM: f64 = 0.1;

impl BatchNorm2d {
    /// Normalised `xs`, then ReLU when `relu`.
    pub fn forward(&self, xs: &Tensor, train: bool, relu: bool, k: Kernels) -> Result<Tensor> {
        if train {
            self.check_train(xs)?;
            let (y, mean, var) = k.batch_norm_train(xs, &self.weight, &self.bias, BN_EPS, relu)?;
            self.update_running(xs, &mean, &var)?;
            return Ok(y);
        }
        let y = self.eval(xs)?;
        if relu {
            y.relu()
        } else {
            Ok(y)
        }
    }

    /// `max(0, bn(xs) + shortcut(residual))`: the end of a residual block,
    /// one kernel in training mode on the CPU (see
    /// [`Kernels::batch_norm_add_relu_train`]).
    pub fn forward_add_relu(
        &self,
        xs: &Tensor,
        residual: &Tensor,
        shortcut: Shortcut,
        train: bool,
        k: Kernels,
    ) -> Result<Tensor> {
        if train {
            self.check_train(xs)?;
            let (y, mean, var) = k.batch_norm_add_relu_train(
                xs,
                &self.weight,
                &self.bias,
                BN_EPS,
                residual,
                shortcut,
            )?;
            self.update_running(xs, &mean, &var)?;
            return Ok(y);
        }
        (self.eval(xs)? + shortcut.apply_candle(residual, xs.dims())?)?.relu()
    }

    /// `γ` and `β`, for a fused block.
    pub(crate) fn block_bn(&self) -> BlockBn<'_> {
        BlockBn {
            gamma: &self.weight,
            beta: &self.bias,
        }
    }

    fn check_train(&self, xs: &Tensor) -> Result<()> {
        let (n, _, h, w) = xs.dims4()?;
        if n * h * w < 2 {
            candle_core::bail!(
                "batch norm in training mode needs more than one value per channel, got input {:?}",
                xs.dims()
            )
        }
        Ok(())
    }

    /// Moves the running statistics towards the batch `(mean, biased
    /// variance)` of `xs` (the batch norm's input).
    pub(crate) fn update_running(&self, xs: &Tensor, mean: &Tensor, var: &Tensor) -> Result<()> {
        let Some((running_mean, running_var)) = &self.running else {
            candle_core::bail!("batch norm of a dry build cannot run")
        };
        let (n, _, h, w) = xs.dims4()?;
        let m = n * h * w;
        let unbiased = (var.detach() * (m as f64 / (m - 1) as f64))?;
        let new_mean =
            ((running_mean.as_tensor() * (1.0 - BN_MOMENTUM))? + (mean.detach() * BN_MOMENTUM)?)?;
        let new_var =
            ((running_var.as_tensor() * (1.0 - BN_MOMENTUM))? + (unbiased * BN_MOMENTUM)?)?;
        running_mean.set(&new_mean.to_dtype(DType::F32)?)?;
        running_var.set(&new_var.to_dtype(DType::F32)?)?;
        Ok(())
    }

    /// Evaluation mode: `xs` normalised with the running statistics.
    fn eval(&self, xs: &Tensor) -> Result<Tensor> {
        let Some((running_mean, running_var)) = &self.running else {
            candle_core::bail!("batch norm of a dry build cannot run")
        };
        let (_, c, _, _) = xs.dims4()?;
        let inv_std = (running_var.as_tensor().detach() + BN_EPS)?
            .sqrt()?
            .recip()?;
        let scale = (&self.weight * inv_std)?;
        let shift = (&self.bias - (running_mean.as_tensor().detach() * &scale)?)?;
        xs.broadcast_mul(&scale.reshape((1, c, 1, 1))?)?
            .broadcast_add(&shift.reshape((1, c, 1, 1))?)
    }
}

/// Mean over the spatial dims: `[N, C, H, W] → [N, C]`.
pub fn global_avg_pool(xs: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = xs.dims4()?;
    xs.reshape((n, c, h * w))?.mean(2)
}
