//! MobileNetV2 (Sandler et al. 2018) with CIFAR strides: the stem and the
//! 24-channel stage run at stride 1, so a 32×32 input ends at 4×4. ReLU
//! replaces ReLU6 (as common CIFAR implementations do; it lets the
//! activation fuse into the batch norm).
//!
//! ```text
//! stem:  conv1 3×3 (C→32) · bn1 · ReLU                         feature "stem"
//! stage1…stage7 (t, c, n, s) = (1,16,1,1) (6,24,2,1) (6,32,3,2) (6,64,4,2)
//!                              (6,96,3,1) (6,160,3,2) (6,320,1,1)   features "stage1"…"stage7"
//! head:  conv2 1×1 (320→1280) · bn2 · ReLU · global average → fc    feature "pool"
//! block: [expand 1×1 (×t) · bn · ReLU] · depthwise 3×3 (stride s) · bn · ReLU
//!        · project 1×1 · bn, + x when the stride is 1 and the width kept
//! ```

use candle_core::{Result, Tensor};

use super::layers::{BatchNorm2d, Builder, Conv};
use super::{feature, head, run_stages, InputPlan, StageBlock};
use crate::ops::Kernels;
use kd_core::ModelOutput;

/// `(expansion t, channels c, blocks n, first stride s)` per stage.
/// `(t, c, n, s)` of each stage: expansion, width, blocks, first stride.
pub const STAGES: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

#[derive(Clone, Debug)]
struct InvertedResidual {
    expand: Option<(Conv, BatchNorm2d)>,
    depthwise: (Conv, BatchNorm2d),
    project: (Conv, BatchNorm2d),
    residual: bool,
}

impl InvertedResidual {
    /// A block from `cin` to `cout` channels whose published input width
    /// is `published` (the expanded width is `t · published` at most;
    /// structured pruning may narrow it), with the residual sum if
    /// `residual`.
    fn new(
        b: &mut Builder,
        (cin, published, cout): (usize, usize, usize),
        t: usize,
        stride: usize,
        residual: bool,
        hw: (usize, usize),
    ) -> Result<(Self, (usize, usize))> {
        let hidden = if t != 1 {
            b.width("expand", published * t)?
        } else {
            cin
        };
        let expand = if t != 1 {
            let (conv, _) = b.conv("expand", (cin, hidden), 1, 1, 0, 1, false, hw)?;
            Some((conv, b.bn("expand_bn", hidden)?))
        } else {
            None
        };
        let (dw, out) = b.conv(
            "depthwise",
            (hidden, hidden),
            3,
            stride,
            1,
            hidden,
            false,
            hw,
        )?;
        let depthwise = (dw, b.bn("depthwise_bn", hidden)?);
        let (pw, _) = b.conv("project", (hidden, cout), 1, 1, 0, 1, false, out)?;
        let project = (pw, b.bn("project_bn", cout)?);
        Ok((
            Self {
                expand,
                depthwise,
                project,
                residual,
            },
            out,
        ))
    }
}

impl StageBlock for InvertedResidual {
    fn forward(&self, xs: &Tensor, train: bool, k: Kernels) -> Result<Tensor> {
        let mut h = xs.clone();
        if let Some((conv, bn)) = &self.expand {
            h = bn.forward(&conv.forward(&h, k)?, train, true, k)?;
        }
        h = self
            .depthwise
            .1
            .forward(&self.depthwise.0.forward(&h, k)?, train, true, k)?;
        h = self
            .project
            .1
            .forward(&self.project.0.forward(&h, k)?, train, false, k)?;
        if self.residual {
            h + xs
        } else {
            Ok(h)
        }
    }
}

/// MobileNetV2, CIFAR variant; see the module documentation.
#[derive(Clone, Debug)]
pub struct MobileNetV2 {
    plan: InputPlan,
    conv1: Conv,
    bn1: BatchNorm2d,
    stages: Vec<Vec<InvertedResidual>>,
    conv2: Conv,
    bn2: BatchNorm2d,
    fc: candle_nn::Linear,
}

impl MobileNetV2 {
    /// The network for `in_channels` inputs and `classes` outputs.
    pub fn new(
        in_channels: usize,
        plan: InputPlan,
        classes: usize,
        b: &mut Builder,
    ) -> Result<Self> {
        // the stem's, each stage's and the head's widths may be narrowed
        // (structured pruning); the residual sums stay the published
        // network's
        let stem = b.width("conv1", 32)?;
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
        let (mut cin, mut published) = (stem, 32);
        let mut stages = Vec::new();
        for (s, &(t, c, n, first_stride)) in STAGES.iter().enumerate() {
            let cout = b.width(&format!("stage{}", s + 1), c)?;
            let stage = b.scope(&format!("stage{}", s + 1), |b| {
                let mut blocks = Vec::new();
                for i in 0..n {
                    let stride = if i == 0 { first_stride } else { 1 };
                    let residual = stride == 1 && published == c;
                    // a block whose shortcut is the identity may be removed
                    if residual && !b.block_kept(&i.to_string())? {
                        continue;
                    }
                    let (block, next) = b.scope(&i.to_string(), |b| {
                        InvertedResidual::new(b, (cin, published, cout), t, stride, residual, hw)
                    })?;
                    blocks.push(block);
                    hw = next;
                    cin = cout;
                    published = c;
                }
                Ok(blocks)
            })?;
            stages.push(stage);
        }
        let head_width = b.width("conv2", 1280)?;
        let (conv2, _) = b.conv("conv2", (cin, head_width), 1, 1, 0, 1, false, hw)?;
        let bn2 = b.bn("bn2", head_width)?;
        let fc = b.linear("fc", head_width, classes)?;
        Ok(Self {
            plan,
            conv1,
            bn1,
            stages,
            conv2,
            bn2,
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
        let h = run_stages(h, &self.stages, "stage", train, k, &mut features)?;
        let h = self
            .bn2
            .forward(&self.conv2.forward(&h, k)?, train, true, k)?;
        head(&h, &self.fc, features)
    }
}
