//! ResNet-18/34/50 (He et al. 2016) in the CIFAR variant: a 3×3 stride-1 stem
//! without max-pool, four stages of 64/128/256/512 channels (×4 after a
//! bottleneck), global average pooling, a linear head.
//!
//! ```text
//! stem:   conv1 3×3 (C→64) · bn1 · ReLU                    feature "stem"
//! layer1…layer4: blocks, stride 2 first in layers 2–4       features "layer1"…"layer4"
//! pool:   global average → fc                               feature "pool"
//! basic:       conv1 3×3 · bn1 · ReLU · conv2 3×3 · bn2
//! bottleneck:  conv1 1×1 · bn1 · ReLU · conv2 3×3 · bn2 · ReLU · conv3 1×1 (×4) · bn3
//! ```
//! then `+ shortcut` and ReLU; the shortcut is a 1×1 convolution with batch
//! norm (`shortcut.conv`, `shortcut.bn`) where the shape changes.

use candle_core::{Result, Tensor};

use super::layers::{BatchNorm2d, Builder, Conv};
use super::{feature, head, run_stages, InputPlan, StageBlock};
use crate::ops::Kernels;
use kd_core::ModelOutput;

/// The block type and blocks per stage of ResNet-18/34/50 (`None` for
/// the other networks).
pub fn layout(arch: super::ZooArch) -> Option<(Block, [usize; 4])> {
    use super::ZooArch;
    match arch {
        ZooArch::ResNet18 => Some((Block::Basic, [2, 2, 2, 2])),
        ZooArch::ResNet34 => Some((Block::Basic, [3, 4, 6, 3])),
        ZooArch::ResNet50 => Some((Block::Bottleneck, [3, 4, 6, 3])),
        _ => None,
    }
}

/// Residual block type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    /// Two 3×3 convolutions (expansion 1).
    Basic,
    /// 1×1, 3×3, 1×1 with expansion 4.
    Bottleneck,
}

impl Block {
    /// Output channels per `planes`: 1 (basic) or 4 (bottleneck).
    pub fn expansion(self) -> usize {
        match self {
            Block::Basic => 1,
            Block::Bottleneck => 4,
        }
    }
}

#[derive(Clone, Debug)]
struct Residual {
    convs: Vec<(Conv, BatchNorm2d)>,
    shortcut: Option<(Conv, BatchNorm2d)>,
}

impl Residual {
    /// A block from `cin` stream channels to `cout`, its inner widths at
    /// most `planes` (structured pruning may narrow them: `conv1`, and a
    /// bottleneck's `conv2`), with a projection shortcut if `projection`.
    fn new(
        b: &mut Builder,
        kind: Block,
        (cin, planes, cout): (usize, usize, usize),
        stride: usize,
        projection: bool,
        hw: (usize, usize),
    ) -> Result<(Self, (usize, usize))> {
        let m1 = b.width("conv1", planes)?;
        // (in, out, kernel, stride) of each convolution.
        let layout: Vec<(usize, usize, usize, usize)> = match kind {
            Block::Basic => vec![(cin, m1, 3, stride), (m1, cout, 3, 1)],
            Block::Bottleneck => {
                let m2 = b.width("conv2", planes)?;
                vec![(cin, m1, 1, 1), (m1, m2, 3, stride), (m2, cout, 1, 1)]
            }
        };
        let mut convs = Vec::new();
        let mut out = hw;
        for (i, &(ci, co, k, s)) in layout.iter().enumerate() {
            let (conv, next) = b.conv(
                &format!("conv{}", i + 1),
                (ci, co),
                k,
                s,
                k / 2,
                1,
                false,
                out,
            )?;
            convs.push((conv, b.bn(&format!("bn{}", i + 1), co)?));
            out = next;
        }
        let shortcut = if projection {
            Some(b.scope("shortcut", |b| {
                let (conv, _) = b.conv("conv", (cin, cout), 1, stride, 0, 1, false, hw)?;
                Ok((conv, b.bn("bn", cout)?))
            })?)
        } else {
            None
        };
        Ok((Self { convs, shortcut }, out))
    }
}

impl StageBlock for Residual {
    fn forward(&self, xs: &Tensor, train: bool, k: Kernels) -> Result<Tensor> {
        let mut h = xs.clone();
        let last = self.convs.len() - 1;
        for (i, (conv, bn)) in self.convs.iter().enumerate() {
            h = bn.forward(&conv.forward(&h, k)?, train, i < last, k)?;
        }
        let short = match &self.shortcut {
            Some((conv, bn)) => bn.forward(&conv.forward(xs, k)?, train, false, k)?,
            None => xs.clone(),
        };
        (h + short)?.relu()
    }
}

/// ResNet-18/34/50, CIFAR variant; see the module documentation.
#[derive(Clone, Debug)]
pub struct ResNet {
    plan: InputPlan,
    conv1: Conv,
    bn1: BatchNorm2d,
    stages: Vec<Vec<Residual>>,
    fc: candle_nn::Linear,
}

impl ResNet {
    /// `blocks` per stage, e.g. `[2, 2, 2, 2]` for ResNet-18.
    pub fn new(
        kind: Block,
        blocks: [usize; 4],
        in_channels: usize,
        plan: InputPlan,
        classes: usize,
        b: &mut Builder,
    ) -> Result<Self> {
        // the stem's width and each projected stage's stream may be
        // narrowed (structured pruning); the shortcuts stay the published
        // network's
        let stem = b.width("conv1", 64)?;
        let (conv1, mut hw) = b.conv(
            "conv1",
            (in_channels, stem),
            3,
            plan.stem_stride,
            1,
            1,
            false,
            plan.size,
        )?;
        let bn1 = b.bn("bn1", stem)?;
        let (mut cin, mut published) = (stem, 64);
        let mut stages = Vec::new();
        for (s, (&n, planes)) in blocks.iter().zip([64, 128, 256, 512]).enumerate() {
            let full = planes * kind.expansion();
            let projected = s > 0 || published != full;
            let cout = if projected {
                b.width(&format!("layer{}", s + 1), full)?
            } else {
                cin
            };
            let stage = b.scope(&format!("layer{}", s + 1), |b| {
                let mut out = Vec::new();
                for i in 0..n {
                    let stride = if s > 0 && i == 0 { 2 } else { 1 };
                    // a block whose shortcut is the identity may be removed
                    let identity = !(projected && i == 0);
                    if identity && !b.block_kept(&i.to_string())? {
                        continue;
                    }
                    let (block, next) = b.scope(&i.to_string(), |b| {
                        Residual::new(
                            b,
                            kind,
                            (cin, planes, cout),
                            stride,
                            projected && i == 0,
                            hw,
                        )
                    })?;
                    out.push(block);
                    hw = next;
                    cin = cout;
                }
                Ok(out)
            })?;
            stages.push(stage);
            published = full;
        }
        let fc = b.linear("fc", cin, classes)?;
        Ok(Self {
            plan,
            conv1,
            bn1,
            stages,
            fc,
        })
    }

    /// Forward pass; see the module documentation for the features.
    pub fn forward_t(&self, xs: &Tensor, train: bool, k: Kernels) -> Result<ModelOutput> {
        let xs = self.plan.apply(xs)?;
        let h = self
            .bn1
            .forward(&self.conv1.forward(&xs, k)?, train, true, k)?;
        let mut features = vec![feature("stem", &h)];
        let h = run_stages(h, &self.stages, "layer", train, k, &mut features)?;
        head(&h, &self.fc, features)
    }
}
