//! LeNet-5 (LeCun et al., 1998) with ReLU and max-pooling, in its common modern form.
//!
//! ```text
//! [B,C,H,W] → conv1 (C→6, 5×5, pad 2) → ReLU → maxpool 2   feature "conv1" [B,6,H/2,W/2]
//!           → conv2 (6→16, 5×5, pad p) → ReLU → maxpool 2  feature "conv2" [B,16,h2,w2]
//!           → flatten → fc1 (→120) → ReLU                  feature "fc1"   [B,120]
//!           → fc2 (→84) → ReLU                             feature "fc2"   [B,84]
//!           → fc3 (→classes)                               logits          [B,classes]
//! ```
//! `p = 0` when the map after the first pool is at least 10×10 (28×28 MNIST:
//! 28 → 14 → 10 → 5, the classic 16·5·5 = 400 inputs of fc1); otherwise `p = 2`
//! so that small images still fit (8×8 digits: 8 → 4 → 4 → 2). Pools take the
//! floor of odd sizes, as PyTorch's `MaxPool2d(2)` does (see [`max_pool2`]).
//!
//! `lenet5-xK` multiplies every width (6, 16, 120, 84) by `K`: `lenet5-x4` is a
//! 24/64/480/336 network, a stronger CNN teacher for a `lenet5` student with
//! the same feature names and spatial sizes.
//!
//! Convolutions and pools run on kdprune's CPU kernels on the CPU and on
//! candle's ops elsewhere ([`Kernels::Auto`]); [`LeNet5::with_kernels`] picks
//! another choice.

use candle_core::{Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, Module, VarBuilder};

use crate::ops::{Kernels, Pool2dConfig};
use kd_core::init::ParamSpec;
use kd_core::ModelOutput;

/// Channels after conv1 and conv2, widths of fc1 and fc2.
const C1: usize = 6;
const C2: usize = 16;
const F1: usize = 120;
const F2: usize = 84;
const K: usize = 5;

/// Spatial sizes of LeNet-5 for one input size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Padding of conv2 (0 or 2).
    pub conv2_padding: usize,
    /// `(h, w)` after the first pool.
    pub pool1: (usize, usize),
    /// `(h, w)` after the second pool.
    pub pool2: (usize, usize),
    /// Inputs of fc1, `16·K·h2·w2`.
    pub flat_dim: usize,
    /// Width multiplier `K` (1 for the classic network).
    pub scale: usize,
    /// Output widths of conv1, conv2, fc1 and fc2: `6K, 16K, 120K, 84K`, or
    /// narrower after structured pruning ([`Geometry::with_widths`]).
    pub widths: [usize; 4],
}

/// The layers whose widths structured pruning may narrow.
pub const WIDTH_LAYERS: [&str; 4] = ["conv1", "conv2", "fc1", "fc2"];

impl Geometry {
    /// Sizes for an `height × width` input, or `None` when it is smaller than 4×4
    /// (a pool would leave nothing).
    pub fn new(height: usize, width: usize) -> Option<Self> {
        Self::with_scale(height, width, 1)
    }

    /// Sizes for an `height × width` input with every width multiplied by
    /// `scale`, or `None` when the input is smaller than 4×4, `scale` is 0, or
    /// a size does not fit a `usize`.
    pub fn with_scale(height: usize, width: usize, scale: usize) -> Option<Self> {
        if height < 4 || width < 4 || scale == 0 {
            return None;
        }
        // conv1 keeps the size (pad 2, kernel 5); the pool halves it.
        let pool1 = (height / 2, width / 2);
        let conv2_padding = if pool1.0 >= 10 && pool1.1 >= 10 { 0 } else { 2 };
        let conv2 = (
            pool1.0 + 2 * conv2_padding + 1 - K,
            pool1.1 + 2 * conv2_padding + 1 - K,
        );
        let pool2 = (conv2.0 / 2, conv2.1 / 2);
        // Checked: the scale and the input size may come from a file.
        let times = |base: usize| base.checked_mul(scale);
        Some(Self {
            conv2_padding,
            pool1,
            pool2,
            flat_dim: times(C2)?.checked_mul(pool2.0)?.checked_mul(pool2.1)?,
            scale,
            widths: [times(C1)?, times(C2)?, times(F1)?, times(F2)?],
        })
    }

    /// This geometry with the widths `widths` names (`conv1`, `conv2`,
    /// `fc1`, `fc2`; each in `1..=` its published width); an error names an
    /// unknown layer or a width out of range.
    pub fn with_widths(
        mut self,
        widths: &std::collections::BTreeMap<String, usize>,
    ) -> std::result::Result<Self, String> {
        for (name, &w) in widths {
            let i = WIDTH_LAYERS.iter().position(|l| l == name).ok_or_else(|| {
                format!(
                    "no layer `{name}` takes a width (those that do: {})",
                    WIDTH_LAYERS.join(", ")
                )
            })?;
            if w == 0 || w > self.widths[i] {
                return Err(format!(
                    "width of {name} must be in 1..={}, got {w}",
                    self.widths[i]
                ));
            }
            self.widths[i] = w;
        }
        self.flat_dim = self.widths[1] * self.pool2.0 * self.pool2.1;
        Ok(self)
    }
}

/// Parameters in forward order (conv weights `[out, in, 5, 5]`, linear weights `[out, in]`).
/// `geometry` must come from [`Geometry::new`] for the same input.
pub(crate) fn param_specs(
    in_channels: usize,
    geometry: &Geometry,
    num_classes: usize,
) -> Vec<ParamSpec> {
    let [c1, c2, f1, f2] = geometry.widths;
    let layers: [(&str, Vec<usize>); 5] = [
        ("conv1", vec![c1, in_channels, K, K]),
        ("conv2", vec![c2, c1, K, K]),
        ("fc1", vec![f1, geometry.flat_dim]),
        ("fc2", vec![f2, f1]),
        ("fc3", vec![num_classes, f2]),
    ];
    layers
        .into_iter()
        .flat_map(|(name, shape)| {
            let fan_in: usize = shape[1..].iter().product();
            let out = shape[0];
            [
                ParamSpec {
                    name: format!("{name}.weight"),
                    shape,
                    fan_in,
                    init: Default::default(),
                },
                ParamSpec {
                    name: format!("{name}.bias"),
                    shape: vec![out],
                    fan_in,
                    init: Default::default(),
                },
            ]
        })
        .collect()
}

/// Multiply–accumulates of one forward pass (convolutions and linear layers).
pub(crate) fn macs(
    in_channels: usize,
    (height, width): (usize, usize),
    geometry: &Geometry,
    num_classes: usize,
) -> u64 {
    let [c1, c2, f1, f2] = geometry.widths;
    let p = geometry.conv2_padding;
    let conv2 = (
        geometry.pool1.0 + 2 * p + 1 - K,
        geometry.pool1.1 + 2 * p + 1 - K,
    );
    let conv1 = height * width * c1 * in_channels * K * K;
    let conv2 = conv2.0 * conv2.1 * c2 * c1 * K * K;
    let fcs = geometry.flat_dim * f1 + f1 * f2 + f2 * num_classes;
    (conv1 + conv2 + fcs) as u64
}

/// The LeNet-5 network; see the module documentation for the layout.
#[derive(Clone, Debug)]
pub struct LeNet5 {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
    kernels: Kernels,
}

/// 2×2 max-pool with stride 2, floor of odd sizes (PyTorch's `MaxPool2d(2)`),
/// from candle's differentiable ops on any device.
///
/// Built from a reshape `[B,C,H,W] → [B,C,H/2,2,W/2,2]` and two `max`
/// reductions rather than candle's `max_pool2d`, whose backward pass scales the
/// gradient of the window maximum by 1/4 (it multiplies by the window average of
/// the argmax mask); a `max` reduction sends the full gradient to the maximum,
/// as PyTorch does. An odd last row/column is dropped first, as floor pooling
/// does. Same as [`crate::ops::max_pool2d_candle`] with a 2×2 window.
pub fn max_pool2(xs: &Tensor) -> Result<Tensor> {
    crate::ops::max_pool2d_candle(xs, &Pool2dConfig::new(2))
}

impl LeNet5 {
    /// Builds the layers from `vb` (paths `conv1`, `conv2`, `fc1`, `fc2`, `fc3`).
    pub fn new(
        in_channels: usize,
        geometry: &Geometry,
        num_classes: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let conv = |padding| Conv2dConfig {
            padding,
            ..Default::default()
        };
        let [c1, c2, f1, f2] = geometry.widths;
        Ok(Self {
            conv1: candle_nn::conv2d(in_channels, c1, K, conv(2), vb.pp("conv1"))?,
            conv2: candle_nn::conv2d(c1, c2, K, conv(geometry.conv2_padding), vb.pp("conv2"))?,
            fc1: candle_nn::linear(geometry.flat_dim, f1, vb.pp("fc1"))?,
            fc2: candle_nn::linear(f1, f2, vb.pp("fc2"))?,
            fc3: candle_nn::linear(f2, num_classes, vb.pp("fc3"))?,
            kernels: Kernels::Auto,
        })
    }

    /// The same network running its convolutions and pools on `kernels`
    /// (the default is [`Kernels::Auto`]).
    pub fn with_kernels(self, kernels: Kernels) -> Self {
        Self { kernels, ..self }
    }

    /// Forward pass on `[B, C, H, W]`. `train` is accepted for symmetry: the
    /// network has no train-only layers.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Result<ModelOutput> {
        let _ = train;
        // relu(pool(x)) = pool(relu(x)) since both are monotone; pooling first
        // makes ties (all-zero windows after ReLU) impossible in practice.
        let k = self.kernels;
        let pool = Pool2dConfig::new(2);
        let c1 = k.max_pool2d_relu(&k.conv2d(&self.conv1, xs)?, &pool)?;
        let c2 = k.max_pool2d_relu(&k.conv2d(&self.conv2, &c1)?, &pool)?;
        let f1 = self.fc1.forward(&c2.flatten_from(1)?)?.relu()?;
        let f2 = self.fc2.forward(&f1)?.relu()?;
        let logits = self.fc3.forward(&f2)?;
        Ok(ModelOutput {
            logits,
            features: vec![
                ("conv1".to_string(), c1),
                ("conv2".to_string(), c2),
                ("fc1".to_string(), f1),
                ("fc2".to_string(), f2),
            ],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn geometry_of_common_inputs() {
        let mnist = Geometry::new(28, 28).unwrap();
        assert_eq!(
            (
                mnist.conv2_padding,
                mnist.pool1,
                mnist.pool2,
                mnist.flat_dim
            ),
            (0, (14, 14), (5, 5), 400)
        );
        assert_eq!(Geometry::with_scale(28, 28, 4).unwrap().flat_dim, 1600);
        assert!(Geometry::with_scale(28, 28, 0).is_none());
        let digits = Geometry::new(8, 8).unwrap();
        assert_eq!(
            (
                digits.conv2_padding,
                digits.pool1,
                digits.pool2,
                digits.flat_dim
            ),
            (2, (4, 4), (2, 2), 64)
        );
        assert!(Geometry::new(3, 28).is_none());
    }

    #[test]
    fn kdprune_and_candle_kernels_agree_on_outputs_and_gradients() {
        use candle_nn::VarMap;
        let dev = Device::Cpu;
        for (c, h, w) in [(1, 28, 28), (3, 9, 7)] {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &dev);
            let geometry = Geometry::new(h, w).unwrap();
            let net = LeNet5::new(c, &geometry, 10, vb).unwrap();
            let xs = Tensor::randn(0f32, 1.0, (3, c, h, w), &dev).unwrap();
            let run = |kernels: Kernels| {
                let out = net
                    .clone()
                    .with_kernels(kernels)
                    .forward_t(&xs, true)
                    .unwrap();
                let grads = out
                    .logits
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let mut values = vec![out.logits.clone()];
                let mut names: Vec<_> = varmap.data().lock().unwrap().clone().into_iter().collect();
                names.sort_by(|a, b| a.0.cmp(&b.0));
                values.extend(names.iter().map(|(_, v)| grads.get(v).unwrap().clone()));
                values
            };
            for (ours, theirs) in run(Kernels::Auto).iter().zip(run(Kernels::Candle)) {
                let scale = theirs
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                let diff = (ours - &theirs)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(
                    diff <= 1e-5 * scale.max(1e-12),
                    "{c}x{h}x{w}: {diff} of {scale}"
                );
            }
        }
    }

    #[test]
    fn pool_gradient_is_one_at_the_window_maximum() {
        // import torch, torch.nn.functional as F
        // x = torch.tensor([[[[1., 2.], [3., 8.]]]], requires_grad=True)
        // F.max_pool2d(x, 2).sum().backward(); x.grad.flatten().tolist()  # [0.0, 0.0, 0.0, 1.0]
        let x = Var::from_vec(vec![1f32, 2., 3., 8.], (1, 1, 2, 2), &Device::Cpu).unwrap();
        let y = max_pool2(x.as_tensor()).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [8.0]);
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g = grads
            .get(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(g, [0., 0., 0., 1.]);
    }

    #[test]
    fn pool_forward_equals_candle_max_pool2d() {
        let values: Vec<f32> = (0..2 * 3 * 6 * 4)
            .map(|i| ((i * 37) % 101) as f32 - 50.0)
            .collect();
        let x = Tensor::from_vec(values, (2, 3, 6, 4), &Device::Cpu).unwrap();
        let ours = max_pool2(&x).unwrap();
        let reference = x.max_pool2d(2).unwrap();
        assert_eq!(ours.dims(), &[2, 3, 3, 2]);
        assert_eq!(
            ours.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            reference.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn odd_pool_gradient_hits_the_window_maximum() {
        // 3×3 input: the only full 2×2 window is the top-left one, its maximum
        // is 8 at (1, 1); d(sum of pooled)/dx is 1 there and 0 elsewhere.
        // x = torch.tensor([1., 2., 9., 3., 8., 9., 9., 9., 9.]).reshape(1, 1, 3, 3).requires_grad_()
        // F.max_pool2d(x, 2).sum().backward(); x.grad.flatten().tolist()
        // # [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
        let x = Var::from_vec(
            vec![1f32, 2., 9., 3., 8., 9., 9., 9., 9.],
            (1, 1, 3, 3),
            &Device::Cpu,
        )
        .unwrap();
        let y = max_pool2(x.as_tensor()).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [8.0]);
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g = grads
            .get(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(g, [0., 0., 0., 0., 1., 0., 0., 0., 0.]);
    }
}
