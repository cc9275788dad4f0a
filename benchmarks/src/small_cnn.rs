//! The small CNN of the train-step benchmark.
//!
//! ```text
//! [B,C,H,W] → conv1 (C→32, 3×3, pad 1) → max-pool 2 → ReLU
//!           → conv2 (32→64, 3×3, pad 1) → max-pool 2 → ReLU
//!           → flatten → fc (64·H/4·W/4 → classes)
//! ```
//! ReLU after the pool is the same function as before it (both are
//! monotone) on a quarter of the elements; `benchmarks/pytorch_reference.py`
//! builds the same network.

use candle_core::{Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, Module, VarBuilder};
use kdprune_models::ops::{Kernels, Pool2dConfig};

/// Which convolution and max-pool kernels the network takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CnnKernels {
    /// Convolutions and pools through [`Kernels`] (on the CPU, each pool
    /// and the ReLU after it are one kernel).
    Models(Kernels),
    /// candle's `Conv2d`, candle's own `max_pool2d` (whose backward scales
    /// the gradient, but costs what a plain candle network costs) and `relu`.
    BareCandle,
}

/// conv 3×3 (C→32) → pool → conv 3×3 (32→64) → pool → linear.
#[derive(Clone, Debug)]
pub struct SmallCnn {
    conv1: Conv2d,
    conv2: Conv2d,
    fc: Linear,
    kernels: CnnKernels,
}

impl SmallCnn {
    /// Builds the layers from `vb` (paths `conv1`, `conv2`, `fc`) for
    /// `in_channels × height × width` inputs.
    pub fn new(
        in_channels: usize,
        (height, width): (usize, usize),
        num_classes: usize,
        kernels: CnnKernels,
        vb: VarBuilder,
    ) -> Result<Self> {
        let same = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        Ok(Self {
            conv1: candle_nn::conv2d(in_channels, 32, 3, same, vb.pp("conv1"))?,
            conv2: candle_nn::conv2d(32, 64, 3, same, vb.pp("conv2"))?,
            fc: candle_nn::linear(64 * (height / 4) * (width / 4), num_classes, vb.pp("fc"))?,
            kernels,
        })
    }

    /// Logits `[B, classes]` of `[B, C, H, W]`.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let block = |conv: &Conv2d, xs: &Tensor| -> Result<Tensor> {
            match self.kernels {
                CnnKernels::Models(k) => {
                    k.max_pool2d_relu(&k.conv2d(conv, xs)?, &Pool2dConfig::new(2))
                }
                CnnKernels::BareCandle => conv.forward(xs)?.max_pool2d(2)?.relu(),
            }
        };
        let h = block(&self.conv1, xs)?;
        let h = block(&self.conv2, &h)?;
        self.fc.forward(&h.flatten_from(1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn logits_have_one_row_per_image_and_kernels_agree() {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let net = SmallCnn::new(3, (8, 8), 10, CnnKernels::Models(Kernels::Auto), vb).unwrap();
        let xs = Tensor::randn(0f32, 1.0, (2, 3, 8, 8), &dev).unwrap();
        let ours = net.forward(&xs).unwrap();
        assert_eq!(ours.dims(), &[2, 10]);
        let bare = SmallCnn {
            kernels: CnnKernels::BareCandle,
            ..net
        };
        let theirs = bare.forward(&xs).unwrap();
        let diff = (ours - theirs)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-4, "{diff}");
    }
}
