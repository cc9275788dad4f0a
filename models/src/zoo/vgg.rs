//! VGG-11/13/16/19 (Simonyan & Zisserman 2015) with batch norm after every
//! convolution and the CIFAR head: 3×3 convolutions (bias kept), 2×2
//! max-pools, global average pooling of the 512 channels, one linear layer.
//!
//! Convolution `i` (0-based, in order) is `features.{i}.conv` with batch norm
//! `features.{i}.bn`; the map after pool `s` is feature `stage{s}`
//! (`stage1`…`stage5`); the pooled vector is `pool`.

use candle_core::{Result, Tensor};

use super::layers::{BatchNorm2d, Builder, Conv};
use super::{feature, head, InputPlan};
use crate::ops::{Kernels, Pool2dConfig};
use kd_core::ModelOutput;

/// A layer list: a channel count is a 3×3 conv + BN + ReLU, 0 a max-pool.
pub type VggCfg = &'static [usize];
pub const VGG11: VggCfg = &[64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0];
pub const VGG13: VggCfg = &[
    64, 64, 0, 128, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0,
];
pub const VGG16: VggCfg = &[
    64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0,
];
pub const VGG19: VggCfg = &[
    64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512, 512, 0,
];

#[derive(Clone, Debug)]
enum Layer {
    ConvBn(Conv, BatchNorm2d),
    Pool,
}

/// VGG with batch norm; see the module documentation.
#[derive(Clone, Debug)]
pub struct Vgg {
    plan: InputPlan,
    layers: Vec<Layer>,
    fc: candle_nn::Linear,
}

impl Vgg {
    /// The network of `cfg` (one of [`VGG11`] … [`VGG19`]).
    pub fn new(
        cfg: VggCfg,
        in_channels: usize,
        plan: InputPlan,
        classes: usize,
        b: &mut Builder,
    ) -> Result<Self> {
        let mut layers = Vec::new();
        let (mut cin, mut hw) = (in_channels, plan.size);
        let mut index = 0;
        for &c in cfg {
            if c == 0 {
                if hw.0 < 2 || hw.1 < 2 {
                    candle_core::bail!("vgg: the input is too small for its five pools")
                }
                hw = (hw.0 / 2, hw.1 / 2);
                layers.push(Layer::Pool);
                continue;
            }
            let stride = if index == 0 { plan.stem_stride } else { 1 };
            let (layer, c) = b.scope("features", |b| {
                b.scope(&index.to_string(), |b| {
                    // every convolution's outputs may be pruned
                    let c = b.width("conv", c)?;
                    let (conv, out) = b.conv("conv", (cin, c), 3, stride, 1, 1, true, hw)?;
                    hw = out;
                    Ok((Layer::ConvBn(conv, b.bn("bn", c)?), c))
                })
            })?;
            layers.push(layer);
            cin = c;
            index += 1;
        }
        let fc = b.linear("fc", cin, classes)?;
        Ok(Self { plan, layers, fc })
    }

    /// Forward pass; see the module documentation for the features.
    pub fn forward_t(&self, xs: &Tensor, train: bool, k: Kernels) -> Result<ModelOutput> {
        let mut h = self.plan.apply(xs)?;
        let mut features = Vec::new();
        for layer in &self.layers {
            match layer {
                Layer::ConvBn(conv, bn) => h = bn.forward(&conv.forward(&h, k)?, train, true, k)?,
                Layer::Pool => {
                    h = k.max_pool2d(&h, &Pool2dConfig::new(2))?;
                    features.push(feature(&format!("stage{}", features.len() + 1), &h));
                }
            }
        }
        head(&h, &self.fc, features)
    }
}
