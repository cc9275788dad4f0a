//! Wide ResNets WRN-d-k (Zagoruyko & Komodakis 2016): pre-activation basic
//! blocks, `n = (d − 4)/6` per stage, widths 16, 16k, 32k, 64k, no dropout.
//!
//! ```text
//! stem:   conv1 3×3 (C→16)                                   feature "stem"
//! block1…block3: n blocks, stride 2 first in blocks 2–3       features "block1"…"block3"
//! head:   bn · ReLU · global average → fc                     feature "pool"
//! block:  o = ReLU(bn1(x)); conv1 3×3 · bn2 · ReLU · conv2 3×3, + shortcut
//! ```
//! The shortcut is `x`, or a 1×1 convolution of `o` (`shortcut`) where the
//! width or the stride changes.

use candle_core::{Result, Tensor};

use super::layers::{BatchNorm2d, Builder, Conv};
use super::{feature, head, run_stages, InputPlan, StageBlock};
use crate::ops::Kernels;
use kd_core::ModelOutput;

#[derive(Clone, Debug)]
struct WideBlock {
    bn1: BatchNorm2d,
    conv1: Conv,
    bn2: BatchNorm2d,
    conv2: Conv,
    shortcut: Option<Conv>,
}

impl WideBlock {
    /// A block from `cin` stream channels to `cout`, its inner width at
    /// most `mid` (structured pruning), with a projection if `projection`.
    fn new(
        b: &mut Builder,
        (cin, mid, cout): (usize, usize, usize),
        stride: usize,
        projection: bool,
        hw: (usize, usize),
    ) -> Result<(Self, (usize, usize))> {
        let bn1 = b.bn("bn1", cin)?;
        let mid = b.width("conv1", mid)?;
        let (conv1, hw1) = b.conv("conv1", (cin, mid), 3, stride, 1, 1, false, hw)?;
        let bn2 = b.bn("bn2", mid)?;
        let (conv2, hw2) = b.conv("conv2", (mid, cout), 3, 1, 1, 1, false, hw1)?;
        let shortcut = if projection {
            Some(
                b.conv("shortcut", (cin, cout), 1, stride, 0, 1, false, hw)?
                    .0,
            )
        } else {
            None
        };
        Ok((
            Self {
                bn1,
                conv1,
                bn2,
                conv2,
                shortcut,
            },
            hw2,
        ))
    }
}

impl StageBlock for WideBlock {
    fn forward(&self, xs: &Tensor, train: bool, k: Kernels) -> Result<Tensor> {
        let o = self.bn1.forward(xs, train, true, k)?;
        let h = self
            .bn2
            .forward(&self.conv1.forward(&o, k)?, train, true, k)?;
        let h = self.conv2.forward(&h, k)?;
        let short = match &self.shortcut {
            Some(conv) => conv.forward(&o, k)?,
            None => xs.clone(),
        };
        h + short
    }
}

/// The depth and widening factor of a wide ResNet (`None` for the other
/// networks).
pub fn layout(arch: super::ZooArch) -> Option<(usize, usize)> {
    match arch {
        super::ZooArch::Wrn16x4 => Some((16, 4)),
        super::ZooArch::Wrn40x2 => Some((40, 2)),
        _ => None,
    }
}

/// WRN-d-k; see the module documentation.
#[derive(Clone, Debug)]
pub struct Wrn {
    plan: InputPlan,
    conv1: Conv,
    stages: Vec<Vec<WideBlock>>,
    bn: BatchNorm2d,
    fc: candle_nn::Linear,
}

impl Wrn {
    /// WRN-`depth`-`k` (`depth = 6n + 4`).
    pub fn new(
        depth: usize,
        k: usize,
        in_channels: usize,
        plan: InputPlan,
        classes: usize,
        b: &mut Builder,
    ) -> Result<Self> {
        if depth < 10 || !(depth - 4).is_multiple_of(6) || k == 0 {
            candle_core::bail!("WRN depth must be 6n+4 and k ≥ 1, got {depth} and {k}")
        }
        let n = (depth - 4) / 6;
        // the stem's width and each projected stage's stream may be
        // narrowed (structured pruning); the shortcuts stay the published
        // network's
        let stem = b.width("conv1", 16)?;
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
        let (mut cin, mut published) = (stem, 16);
        let mut stages = Vec::new();
        for (s, full) in [16 * k, 32 * k, 64 * k].into_iter().enumerate() {
            let projected = s > 0 || published != full;
            let cout = if projected {
                b.width(&format!("block{}", s + 1), full)?
            } else {
                cin
            };
            let stage = b.scope(&format!("block{}", s + 1), |b| {
                let mut blocks = Vec::new();
                for i in 0..n {
                    let stride = if s > 0 && i == 0 { 2 } else { 1 };
                    // a block whose shortcut is the identity may be removed
                    let identity = !(projected && i == 0);
                    if identity && !b.block_kept(&i.to_string())? {
                        continue;
                    }
                    let (block, next) = b.scope(&i.to_string(), |b| {
                        WideBlock::new(b, (cin, full, cout), stride, projected && i == 0, hw)
                    })?;
                    blocks.push(block);
                    hw = next;
                    cin = cout;
                }
                Ok(blocks)
            })?;
            stages.push(stage);
            published = full;
        }
        let bn = b.bn("bn", cin)?;
        let fc = b.linear("fc", cin, classes)?;
        Ok(Self {
            plan,
            conv1,
            stages,
            bn,
            fc,
        })
    }

    /// Forward pass; see the module documentation for the features.
    pub fn forward_t(&self, xs: &Tensor, train: bool, k: Kernels) -> Result<ModelOutput> {
        let xs = self.plan.apply(xs)?;
        let h = self.conv1.forward(&xs, k)?;
        let mut features = vec![feature("stem", &h)];
        let h = run_stages(h, &self.stages, "block", train, k, &mut features)?;
        let h = self.bn.forward(&h, train, true, k)?;
        head(&h, &self.fc, features)
    }
}
