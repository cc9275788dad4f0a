//! CIFAR ResNets (He et al. 2016, §4.2): a 3×3 stem, three stages of `n`
//! basic blocks (`depth = 6n + 2`), global average pooling, a linear head.
//!
//! ```text
//! stem:   conv1 3×3 (C→w0) · bn1 · ReLU                   feature "stem"
//! layer1: n × block(w1, stride 1)                          feature "layer1"
//! layer2: n × block(w2, stride 2 first)                    feature "layer2"
//! layer3: n × block(w3, stride 2 first)                    feature "layer3"
//! pool:   global average → fc                              feature "pool"
//! block:  conv1 3×3 · bn1 · ReLU · conv2 3×3 · bn2, + shortcut, ReLU
//! ```
//! Shortcut option A (the paper's CIFAR networks, 0.27 M parameters for
//! ResNet-20): where the shape changes, the input subsampled by 2 with its
//! channels zero-padded equally on both sides — no parameters. Option B (the
//! `x4` networks): a 1×1 convolution with batch norm, named `shortcut.conv`
//! and `shortcut.bn`.

use candle_core::{Result, Tensor};

use super::layers::{BatchNorm2d, Builder, Conv, BN_EPS};
use super::{feature, head, run_stages, InputPlan, StageBlock, ZooArch};
use crate::ops::{self, Kernels};
use kd_core::ModelOutput;

/// What sets one CIFAR ResNet apart from another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CifarLayout {
    /// `6n + 2`: `n` basic blocks per stage.
    pub depth: usize,
    /// Channels of the stem and of the three stages.
    pub widths: [usize; 4],
    /// Shortcut B (projections) where the shape changes, else A.
    pub option_b: bool,
}

impl CifarLayout {
    /// The layout of `arch`, `None` for the networks that are not CIFAR ResNets.
    pub fn of(arch: ZooArch) -> Option<Self> {
        let (depth, option_b) = match arch {
            ZooArch::ResNet20 => (20, false),
            ZooArch::ResNet32 => (32, false),
            ZooArch::ResNet44 => (44, false),
            ZooArch::ResNet56 => (56, false),
            ZooArch::ResNet110 => (110, false),
            ZooArch::ResNet8x4 => (8, true),
            ZooArch::ResNet32x4 => (32, true),
            _ => return None,
        };
        let widths = if option_b {
            [32, 64, 128, 256]
        } else {
            [16, 16, 32, 64]
        };
        Some(Self {
            depth,
            widths,
            option_b,
        })
    }

    /// Basic blocks per stage.
    pub fn blocks_per_stage(&self) -> usize {
        (self.depth - 2) / 6
    }

    /// The stride of block `i` of stage `s` (both from 0).
    pub fn stride(stage: usize, block: usize) -> usize {
        if stage > 0 && block == 0 {
            2
        } else {
            1
        }
    }
}

/// How a stage's first block reaches its stream from the one before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageEntry {
    /// The same stream (stride 1, same width): an identity shortcut.
    Same,
    /// Shortcut A: the stream before, subsampled, with `lo` zero channels
    /// before it and `hi` after.
    ZeroPad {
        /// Channels before the stream carried over.
        lo: usize,
        /// Channels after it.
        hi: usize,
    },
    /// Shortcut B: a projection onto a stream of its own.
    Projection,
}

/// The residual streams of a CIFAR ResNet: the stem's width, and each
/// stage's stream width with how it is entered.
///
/// The widths that may change (structured pruning), by name: `conv1`, the
/// stem's outputs (with shortcut A, carried through every stage); with
/// shortcut A, `layerS.pad_lo` and `layerS.pad_hi`, the channels a stage's
/// padding adds; with shortcut B, `layerS`, a stage's own stream. The kind
/// of each shortcut is the published network's: pruning never turns a
/// projection into an identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Streams {
    /// The stem's output channels.
    pub stem: usize,
    /// Per stage: its stream's width and how its first block enters it.
    pub stages: Vec<(usize, StageEntry)>,
}

impl CifarLayout {
    /// The streams of this layout, each width from `width(name, default)`
    /// (the builder's, or a config's widths with the defaults).
    pub fn streams(&self, mut width: impl FnMut(&str, usize) -> Result<usize>) -> Result<Streams> {
        let w = self.widths;
        let stem = width("conv1", w[0])?;
        let mut prev = stem;
        let mut stages = Vec::new();
        for s in 0..3 {
            let (din, dout) = (w[s], w[s + 1]);
            let name = format!("layer{}", s + 1);
            let (stream, entry) = if Self::stride(s, 0) == 1 && din == dout {
                (prev, StageEntry::Same)
            } else if self.option_b {
                (width(&name, dout)?, StageEntry::Projection)
            } else {
                if dout < din || (dout - din) % 2 != 0 {
                    candle_core::bail!(
                        "shortcut A needs an even channel increase, got {din}→{dout}"
                    )
                }
                let pad = (dout - din) / 2;
                let lo = width(&format!("{name}.pad_lo"), pad)?;
                let hi = width(&format!("{name}.pad_hi"), pad)?;
                (lo + prev + hi, StageEntry::ZeroPad { lo, hi })
            };
            stages.push((stream, entry));
            prev = stream;
        }
        Ok(Streams { stem, stages })
    }
}

#[derive(Clone, Debug)]
enum Shortcut {
    /// The identity, or shortcut A (subsample by `stride`, then `pad` zero
    /// channels on each side): no parameters, added inside the kernels.
    Fixed(ops::Shortcut),
    /// Shortcut B: a 1×1 convolution with batch norm.
    Projection(Conv, BatchNorm2d),
}

#[derive(Clone, Debug)]
struct BasicBlock {
    conv1: Conv,
    bn1: BatchNorm2d,
    conv2: Conv,
    bn2: BatchNorm2d,
    shortcut: Shortcut,
}

impl BasicBlock {
    /// Block from `cin` to `cout` stream channels, its inner width at most
    /// `mid` (by default `mid`), entering its stream by `entry`.
    fn new(
        b: &mut Builder,
        (cin, mid, cout): (usize, usize, usize),
        stride: usize,
        entry: StageEntry,
        hw: (usize, usize),
    ) -> Result<(Self, (usize, usize))> {
        // The block's inner width (conv1's outputs) may be pruned.
        let mid = b.width("conv1", mid)?;
        let (conv1, hw1) = b.conv("conv1", (cin, mid), 3, stride, 1, 1, false, hw)?;
        let bn1 = b.bn("bn1", mid)?;
        let (conv2, hw2) = b.conv("conv2", (mid, cout), 3, 1, 1, 1, false, hw1)?;
        let bn2 = b.bn("bn2", cout)?;
        let shortcut = match entry {
            StageEntry::Same => Shortcut::Fixed(ops::Shortcut::Identity),
            StageEntry::Projection => b.scope("shortcut", |b| {
                let (conv, _) = b.conv("conv", (cin, cout), 1, stride, 0, 1, false, hw)?;
                Ok(Shortcut::Projection(conv, b.bn("bn", cout)?))
            })?,
            StageEntry::ZeroPad { lo, hi } => {
                Shortcut::Fixed(ops::Shortcut::ZeroPad { stride, lo, hi })
            }
        };
        Ok((
            Self {
                conv1,
                bn1,
                conv2,
                bn2,
                shortcut,
            },
            hw2,
        ))
    }
}

impl StageBlock for BasicBlock {
    fn forward(&self, xs: &Tensor, train: bool, k: Kernels) -> Result<Tensor> {
        // Training on the CPU: the whole block is one kernel (see
        // `ops::basic_block_train`), unless its shortcut is a projection.
        if let (true, true, Shortcut::Fixed(shortcut), Some(conv1), Some(conv2)) = (
            train,
            k.native(xs),
            &self.shortcut,
            self.conv1.block_conv(),
            self.conv2.block_conv(),
        ) {
            let out = ops::basic_block_train(
                xs,
                conv1,
                self.bn1.block_bn(),
                conv2,
                self.bn2.block_bn(),
                *shortcut,
                BN_EPS,
            )?;
            // conv2 (3×3, stride 1, padding 1) keeps the size: both batch
            // norms saw maps of the output's size.
            self.bn1.update_running(&out.y, &out.bn1.0, &out.bn1.1)?;
            self.bn2.update_running(&out.y, &out.bn2.0, &out.bn2.1)?;
            return Ok(out.y);
        }
        let h = self
            .bn1
            .forward(&self.conv1.forward(xs, k)?, train, true, k)?;
        let h = self.conv2.forward(&h, k)?;
        // bn2, the shortcut's sum and the ReLU: one kernel on the CPU.
        match &self.shortcut {
            Shortcut::Fixed(shortcut) => self.bn2.forward_add_relu(&h, xs, *shortcut, train, k),
            Shortcut::Projection(conv, bn) => {
                let short = bn.forward(&conv.forward(xs, k)?, train, false, k)?;
                self.bn2
                    .forward_add_relu(&h, &short, ops::Shortcut::Identity, train, k)
            }
        }
    }
}

/// A CIFAR ResNet; see the module documentation.
#[derive(Clone, Debug)]
pub struct ResNetCifar {
    plan: InputPlan,
    conv1: Conv,
    bn1: BatchNorm2d,
    stages: Vec<Vec<BasicBlock>>,
    fc: candle_nn::Linear,
}

impl ResNetCifar {
    /// The network of `layout` (`depth = 6n + 2`).
    pub fn new(
        layout: CifarLayout,
        in_channels: usize,
        plan: InputPlan,
        classes: usize,
        b: &mut Builder,
    ) -> Result<Self> {
        let CifarLayout { depth, widths, .. } = layout;
        if depth < 8 || !(depth - 2).is_multiple_of(6) {
            candle_core::bail!("CIFAR ResNet depth must be 6n+2, got {depth}")
        }
        let n = layout.blocks_per_stage();
        let streams = layout.streams(|name, default| b.width(name, default))?;
        let (conv1, mut hw) = b.conv(
            "conv1",
            (in_channels, streams.stem),
            3,
            plan.stem_stride,
            1,
            1,
            false,
            plan.size,
        )?;
        let bn1 = b.bn("bn1", streams.stem)?;
        let mut cin = streams.stem;
        let mut stages = Vec::new();
        for (s, &(cout, entry)) in streams.stages.iter().enumerate() {
            let stage = b.scope(&format!("layer{}", s + 1), |b| {
                let mut blocks = Vec::new();
                for i in 0..n {
                    let stride = CifarLayout::stride(s, i);
                    let entry = if i == 0 { entry } else { StageEntry::Same };
                    // a block whose shortcut is the identity may be removed
                    if entry == StageEntry::Same && !b.block_kept(&i.to_string())? {
                        continue;
                    }
                    let (block, out) = b.scope(&i.to_string(), |b| {
                        BasicBlock::new(b, (cin, widths[s + 1], cout), stride, entry, hw)
                    })?;
                    blocks.push(block);
                    hw = out;
                    cin = cout;
                }
                Ok(blocks)
            })?;
            stages.push(stage);
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
