//! The CNN model zoo of the pruning and distillation literature, CIFAR
//! variants, with batch normalisation.
//!
//! | name | network | shortcut / notes |
//! |---|---|---|
//! | `resnet20`, `resnet32`, `resnet44`, `resnet56`, `resnet110` | He et al. 2016, §4.2: 3 stages of 16/32/64 channels, `6n+2` layers | option A: identity, stride-2 subsampling and zero channels |
//! | `resnet8x4`, `resnet32x4` | the same with 32 stem and 64/128/256 channels (the distillation benchmark pair) | option B: 1×1 conv + BN |
//! | `resnet18`, `resnet34`, `resnet50` | He et al. 2016 ImageNet widths, CIFAR stem (3×3, stride 1, no max-pool) | 1×1 conv + BN; bottlenecks for 50 |
//! | `vgg11`, `vgg13`, `vgg16`, `vgg19` | Simonyan & Zisserman 2015 with BN after every conv, one linear head on 512 channels | conv biases kept |
//! | `wrn-16-4`, `wrn-40-2` | Zagoruyko & Komodakis 2016, pre-activation, no dropout | 1×1 conv where widths change |
//! | `mobilenetv2` | Sandler et al. 2018, CIFAR strides (stem and the 24-channel stage at stride 1) | ReLU rather than ReLU6 |
//! | `efficientnet-b0` | Tan & Le 2019: MBConv blocks with squeeze-and-excitation and SiLU, the same CIFAR strides | no dropout, no stochastic depth |
//! | `efficientnet-b0-k7` | the same with every depthwise kernel 7×7 and elastic (Once-for-All): it runs its centre 5×5 or 3×3 when asked | centre crop |
//!
//! Every network ends with global average pooling and a linear layer, and
//! returns the output of its stem and of every stage as named features
//! (`stem`, `layer1`…, `pool`). Inputs smaller than 32×32 (28×28 MNIST, 8×8
//! digits) are zero-padded to 32×32 inside the network; inputs of 64×64 or
//! more (TinyImageNet) take stride 2 in the stem, so the stages see the
//! CIFAR sizes. Convolutions carry no bias (VGG's keep theirs), batch norms
//! start at γ = 1, β = 0, everything else at PyTorch's default
//! `U(−1/√fan_in, 1/√fan_in)`.

pub(crate) mod efficientnet;
pub mod layers;
pub mod lenet5;
pub mod mlp;
pub(crate) mod mobilenetv2;
mod resnet;
mod resnet_cifar;
mod vgg;
mod wrn;

use std::fmt;
use std::str::FromStr;

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::ops::Kernels;
use kd_core::ModelOutput;
pub use layers::{BufferSpec, Builder};
pub use resnet::{layout as resnet_layout, Block as ResNetBlock};
pub use resnet_cifar::{CifarLayout, StageEntry, Streams};
pub use wrn::layout as wrn_layout;

/// A network of the zoo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ZooArch {
    #[serde(rename = "resnet20")]
    ResNet20,
    #[serde(rename = "resnet32")]
    ResNet32,
    #[serde(rename = "resnet44")]
    ResNet44,
    #[serde(rename = "resnet56")]
    ResNet56,
    #[serde(rename = "resnet110")]
    ResNet110,
    #[serde(rename = "resnet8x4")]
    ResNet8x4,
    #[serde(rename = "resnet32x4")]
    ResNet32x4,
    #[serde(rename = "resnet18")]
    ResNet18,
    #[serde(rename = "resnet34")]
    ResNet34,
    #[serde(rename = "resnet50")]
    ResNet50,
    #[serde(rename = "vgg11")]
    Vgg11,
    #[serde(rename = "vgg13")]
    Vgg13,
    #[serde(rename = "vgg16")]
    Vgg16,
    #[serde(rename = "vgg19")]
    Vgg19,
    #[serde(rename = "wrn-16-4")]
    Wrn16x4,
    #[serde(rename = "wrn-40-2")]
    Wrn40x2,
    #[serde(rename = "mobilenetv2")]
    MobileNetV2,
    #[serde(rename = "efficientnet-b0")]
    EfficientNetB0,
    #[serde(rename = "efficientnet-b0-k7")]
    EfficientNetB0K7,
}

impl ZooArch {
    /// Every network, in listing order.
    pub const ALL: [ZooArch; 19] = [
        ZooArch::ResNet20,
        ZooArch::ResNet32,
        ZooArch::ResNet44,
        ZooArch::ResNet56,
        ZooArch::ResNet110,
        ZooArch::ResNet8x4,
        ZooArch::ResNet32x4,
        ZooArch::ResNet18,
        ZooArch::ResNet34,
        ZooArch::ResNet50,
        ZooArch::Vgg11,
        ZooArch::Vgg13,
        ZooArch::Vgg16,
        ZooArch::Vgg19,
        ZooArch::Wrn16x4,
        ZooArch::Wrn40x2,
        ZooArch::MobileNetV2,
        ZooArch::EfficientNetB0,
        ZooArch::EfficientNetB0K7,
    ];

    /// The name `from_str` accepts, e.g. `resnet56` or `wrn-40-2`.
    pub fn name(self) -> &'static str {
        match self {
            ZooArch::ResNet20 => "resnet20",
            ZooArch::ResNet32 => "resnet32",
            ZooArch::ResNet44 => "resnet44",
            ZooArch::ResNet56 => "resnet56",
            ZooArch::ResNet110 => "resnet110",
            ZooArch::ResNet8x4 => "resnet8x4",
            ZooArch::ResNet32x4 => "resnet32x4",
            ZooArch::ResNet18 => "resnet18",
            ZooArch::ResNet34 => "resnet34",
            ZooArch::ResNet50 => "resnet50",
            ZooArch::Vgg11 => "vgg11",
            ZooArch::Vgg13 => "vgg13",
            ZooArch::Vgg16 => "vgg16",
            ZooArch::Vgg19 => "vgg19",
            ZooArch::Wrn16x4 => "wrn-16-4",
            ZooArch::Wrn40x2 => "wrn-40-2",
            ZooArch::MobileNetV2 => "mobilenetv2",
            ZooArch::EfficientNetB0 => "efficientnet-b0",
            ZooArch::EfficientNetB0K7 => "efficientnet-b0-k7",
        }
    }

    /// One line about the network, for listings.
    pub fn description(self) -> &'static str {
        match self {
            ZooArch::ResNet20
            | ZooArch::ResNet32
            | ZooArch::ResNet44
            | ZooArch::ResNet56
            | ZooArch::ResNet110 => "CIFAR ResNet (He et al. 2016), 16/32/64, shortcut A",
            ZooArch::ResNet8x4 | ZooArch::ResNet32x4 => {
                "CIFAR ResNet, 32/64/128/256, shortcut B (KD benchmark pair)"
            }
            ZooArch::ResNet18 | ZooArch::ResNet34 => "ResNet, basic blocks, CIFAR stem",
            ZooArch::ResNet50 => "ResNet, bottlenecks, CIFAR stem",
            ZooArch::Vgg11 | ZooArch::Vgg13 | ZooArch::Vgg16 | ZooArch::Vgg19 => {
                "VGG with batch norm, CIFAR head"
            }
            ZooArch::Wrn16x4 | ZooArch::Wrn40x2 => "wide ResNet (Zagoruyko & Komodakis 2016)",
            ZooArch::MobileNetV2 => "MobileNetV2, CIFAR strides",
            ZooArch::EfficientNetB0 => "EfficientNet-B0 (MBConv-SE, SiLU), CIFAR strides",
            ZooArch::EfficientNetB0K7 => {
                "EfficientNet-B0 with elastic 7x7 depthwise kernels (Once-for-All)"
            }
        }
    }
}

impl fmt::Display for ZooArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ZooArch {
    type Err = String;

    /// The canonical names, case-insensitive, `_` read as `-`; `vgg16-bn`
    /// and `vgg16_bn` name `vgg16`, `wrn40-2` names `wrn-40-2`.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let norm = s.to_ascii_lowercase().replace('_', "-");
        let norm = norm.strip_suffix("-bn").unwrap_or(&norm);
        let norm = match norm {
            "wrn16-4" => "wrn-16-4",
            "wrn40-2" => "wrn-40-2",
            "mobilenet-v2" => "mobilenetv2",
            "efficientnetb0" => "efficientnet-b0",
            other => other,
        };
        ZooArch::ALL
            .into_iter()
            .find(|a| a.name() == norm)
            .ok_or_else(|| format!("unknown zoo model '{s}'"))
    }
}

/// How a network adapts an input size to the CIFAR layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputPlan {
    /// Zero rows above/below and columns left/right added to the input.
    pub pad: (usize, usize, usize, usize),
    /// Stride of the stem convolution (2 for inputs of 64×64 or more).
    pub stem_stride: usize,
    /// Size the stem sees, after padding.
    pub size: (usize, usize),
}

impl InputPlan {
    /// Pads inputs under 32 pixels to 32; strides the stem on inputs of 64 or more.
    pub fn new(height: usize, width: usize) -> Self {
        let grow = |len: usize| {
            let extra = 32usize.saturating_sub(len);
            (extra / 2, extra - extra / 2)
        };
        let ((top, bottom), (left, right)) = (grow(height), grow(width));
        let size = (height + top + bottom, width + left + right);
        let stem_stride = if size.0.min(size.1) >= 64 { 2 } else { 1 };
        Self {
            pad: (top, bottom, left, right),
            stem_stride,
            size,
        }
    }

    /// `xs` with the zero padding.
    pub fn apply(&self, xs: &Tensor) -> Result<Tensor> {
        let (top, bottom, left, right) = self.pad;
        let xs = if top + bottom > 0 {
            xs.pad_with_zeros(2, top, bottom)?
        } else {
            xs.clone()
        };
        if left + right > 0 {
            xs.pad_with_zeros(3, left, right)
        } else {
            Ok(xs)
        }
    }
}

/// A built zoo network.
#[derive(Clone, Debug)]
pub enum Network {
    ResNetCifar(resnet_cifar::ResNetCifar),
    ResNet(resnet::ResNet),
    Vgg(vgg::Vgg),
    Wrn(wrn::Wrn),
    MobileNetV2(mobilenetv2::MobileNetV2),
    EfficientNet(efficientnet::EfficientNet),
}

/// Builds `arch` for `C×H×W` inputs and `classes` outputs with `b`.
pub fn build(
    arch: ZooArch,
    input: (usize, usize, usize),
    classes: usize,
    b: &mut Builder,
) -> Result<Network> {
    let (c, h, w) = input;
    let plan = InputPlan::new(h, w);
    Ok(match arch {
        ZooArch::ResNet18 | ZooArch::ResNet34 | ZooArch::ResNet50 => {
            let (kind, blocks) = resnet::layout(arch).expect("a ResNet");
            Network::ResNet(resnet::ResNet::new(kind, blocks, c, plan, classes, b)?)
        }
        ZooArch::Vgg11 => Network::Vgg(vgg::Vgg::new(vgg::VGG11, c, plan, classes, b)?),
        ZooArch::Vgg13 => Network::Vgg(vgg::Vgg::new(vgg::VGG13, c, plan, classes, b)?),
        ZooArch::Vgg16 => Network::Vgg(vgg::Vgg::new(vgg::VGG16, c, plan, classes, b)?),
        ZooArch::Vgg19 => Network::Vgg(vgg::Vgg::new(vgg::VGG19, c, plan, classes, b)?),
        ZooArch::Wrn16x4 => Network::Wrn(wrn::Wrn::new(16, 4, c, plan, classes, b)?),
        ZooArch::Wrn40x2 => Network::Wrn(wrn::Wrn::new(40, 2, c, plan, classes, b)?),
        ZooArch::MobileNetV2 => {
            Network::MobileNetV2(mobilenetv2::MobileNetV2::new(c, plan, classes, b)?)
        }
        ZooArch::EfficientNetB0 => {
            Network::EfficientNet(efficientnet::EfficientNet::new(c, plan, classes, b)?)
        }
        ZooArch::EfficientNetB0K7 => Network::EfficientNet(
            efficientnet::EfficientNet::new_elastic(c, plan, classes, 7, b)?,
        ),
        cifar => {
            let l = CifarLayout::of(cifar)
                .ok_or_else(|| candle_core::Error::Msg(format!("{cifar}: no network layout")))?;
            Network::ResNetCifar(resnet_cifar::ResNetCifar::new(l, c, plan, classes, b)?)
        }
    })
}

impl Network {
    /// Forward pass on `[B, C, H, W]`; `train` selects batch statistics (and
    /// updates the running ones) in every batch norm.
    pub fn forward_t(&self, xs: &Tensor, train: bool, k: Kernels) -> Result<ModelOutput> {
        match self {
            Network::ResNetCifar(n) => n.forward_t(xs, train, k),
            Network::ResNet(n) => n.forward_t(xs, train, k),
            Network::Vgg(n) => n.forward_t(xs, train, k),
            Network::Wrn(n) => n.forward_t(xs, train, k),
            Network::MobileNetV2(n) => n.forward_t(xs, train, k),
            Network::EfficientNet(n) => n.forward_t(xs, train, k),
        }
    }

    /// Runs every elastic depthwise kernel at its centre `size × size` (0:
    /// whole); an error for the networks without elastic kernels.
    pub fn set_kernel(&self, size: usize) -> Result<()> {
        match self {
            Network::EfficientNet(n) => n.set_kernel(size),
            _ => candle_core::bail!("this network has no elastic kernels"),
        }
    }
}

/// Features list helper: `(name, tensor)`.
pub(crate) fn feature(name: &str, t: &Tensor) -> (String, Tensor) {
    (name.to_string(), t.clone())
}

/// A residual block of a stage.
pub(crate) trait StageBlock {
    /// The block applied to `xs`.
    fn forward(&self, xs: &Tensor, train: bool, k: Kernels) -> Result<Tensor>;
}

/// Runs `stages` block by block from `h`; the output of stage `s` becomes
/// feature `{prefix}{s + 1}`.
pub(crate) fn run_stages<B: StageBlock>(
    mut h: Tensor,
    stages: &[Vec<B>],
    prefix: &str,
    train: bool,
    k: Kernels,
    features: &mut Vec<(String, Tensor)>,
) -> Result<Tensor> {
    for (s, stage) in stages.iter().enumerate() {
        for block in stage {
            h = block.forward(&h, train, k)?;
        }
        features.push(feature(&format!("{prefix}{}", s + 1), &h));
    }
    Ok(h)
}

/// Global average pooling (feature `pool`), then the linear head `fc`.
pub(crate) fn head(
    h: &Tensor,
    fc: &candle_nn::Linear,
    mut features: Vec<(String, Tensor)>,
) -> Result<ModelOutput> {
    use candle_nn::Module;
    let pooled = layers::global_avg_pool(h)?;
    let logits = fc.forward(&pooled)?;
    features.push(feature("pool", &pooled));
    Ok(ModelOutput { logits, features })
}
