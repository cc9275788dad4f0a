//! EfficientNet-B0 (Tan & Le 2019) built from MBConv blocks with
//! squeeze-and-excitation, CIFAR strides as the zoo's MobileNetV2: the stem
//! and the 24-channel stage run at stride 1, so a 32×32 input ends at 4×4
//! (inputs of 64×64 or more take stride 2 in the stem).
//!
//! ```text
//! stem:  conv1 3×3 (C→32) · bn1 · SiLU                          feature "stem"
//! stage1…stage7 (t, k, c, n, s) = (1,3,16,1,1) (6,3,24,2,1) (6,5,40,2,2)
//!     (6,3,80,3,2) (6,5,112,3,1) (6,5,192,4,2) (6,3,320,1,1)    features "stage1"…"stage7"
//! head:  conv2 1×1 (320→1280) · bn2 · SiLU · global average → fc    feature "pool"
//! MBConv: [expand 1×1 (×t) · bn · SiLU] · depthwise k×k (stride s) · bn · SiLU
//!         · SE · project 1×1 · bn, + x when the stride is 1 and the width kept
//! SE:     global average → se.reduce 1×1 (→ max(1, c_in/4), bias) · SiLU
//!         → se.expand 1×1 (bias) · sigmoid, times the block's hidden map
//! ```
//!
//! The layer shapes, and so the parameter count, are torchvision's
//! `efficientnet_b0` (5,288,548 at 1000 classes, the published 5.3 M).
//! Unlike torchvision, the batch norms use the zoo's ε = 1e-5 (torchvision
//! 1e-3), and there is no dropout before `fc` and no stochastic depth (as
//! the zoo's other networks).
//!
//! Every depthwise convolution may be *elastic* (Once-for-All, Cai et al.
//! 2020): built with [`EfficientNet::new_elastic`] it holds a `K×K` kernel
//! and runs its centre `k×k` (`k ≤ K`, odd, padding `k/2`) as chosen by
//! [`EfficientNet::set_kernel`] — the plain centre crop, not OFA's learned
//! kernel transformation matrices.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use candle_core::{Result, Tensor};

use super::layers::{global_avg_pool, BatchNorm2d, Builder, Conv};
use super::{feature, head, run_stages, InputPlan, StageBlock};
use crate::ops::Kernels;
use kd_core::ModelOutput;

/// `(expansion t, kernel k, channels c, blocks n, first stride s)` of each
/// stage, with the CIFAR strides (EfficientNet-B0 has 2 in the second
/// stage).
pub const STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 16, 1, 1),
    (6, 3, 24, 2, 1),
    (6, 5, 40, 2, 2),
    (6, 3, 80, 3, 2),
    (6, 5, 112, 3, 1),
    (6, 5, 192, 4, 2),
    (6, 3, 320, 1, 1),
];

/// A depthwise convolution whose kernel may run cropped to its centre.
#[derive(Clone, Debug)]
struct Depthwise {
    weight: Tensor,
    stride: usize,
    groups: usize,
    /// The kernel size run now (shared by every block of the network);
    /// the full kernel when it is 0 or larger than this one's.
    active: Arc<AtomicUsize>,
}

impl Depthwise {
    fn forward(&self, xs: &Tensor, k: Kernels) -> Result<Tensor> {
        let full = self.weight.dim(2)?;
        let want = self.active.load(Ordering::Relaxed);
        let size = if want == 0 || want >= full {
            full
        } else {
            want
        };
        let off = (full - size) / 2;
        let weight = if size == full {
            self.weight.clone()
        } else {
            self.weight.narrow(2, off, size)?.narrow(3, off, size)?
        };
        let cfg = candle_nn::Conv2dConfig {
            padding: size / 2,
            stride: self.stride,
            dilation: 1,
            groups: self.groups,
            cudnn_fwd_algo: None,
        };
        k.conv2d(&candle_nn::Conv2d::new(weight, None, cfg), xs)
    }
}

/// Squeeze-and-excitation (Hu et al. 2018), EfficientNet's variant: SiLU
/// inside, a sigmoid gate per channel.
#[derive(Clone, Debug)]
struct SqueezeExcite {
    reduce: Conv,
    expand: Conv,
}

impl SqueezeExcite {
    fn forward(&self, xs: &Tensor, k: Kernels) -> Result<Tensor> {
        let (n, c, _, _) = xs.dims4()?;
        let s = global_avg_pool(xs)?.reshape((n, c, 1, 1))?;
        let s = self.reduce.forward(&s, k)?.silu()?;
        let gate = candle_nn::ops::sigmoid(&self.expand.forward(&s, k)?)?;
        xs.broadcast_mul(&gate)
    }
}

/// An MBConv block with squeeze-and-excitation.
#[derive(Clone, Debug)]
struct MbConv {
    expand: Option<(Conv, BatchNorm2d)>,
    depthwise: (Depthwise, BatchNorm2d),
    se: SqueezeExcite,
    project: (Conv, BatchNorm2d),
    residual: bool,
}

/// What one block is built with.
struct BlockSpec {
    cin: usize,
    cout: usize,
    expansion: usize,
    kernel: usize,
    stride: usize,
}

impl MbConv {
    fn new(
        b: &mut Builder,
        spec: BlockSpec,
        active: &Arc<AtomicUsize>,
        hw: (usize, usize),
    ) -> Result<(Self, (usize, usize))> {
        let BlockSpec {
            cin,
            cout,
            expansion,
            kernel,
            stride,
        } = spec;
        let hidden = cin * expansion;
        let expand = if expansion != 1 {
            let (conv, _) = b.conv("expand", (cin, hidden), 1, 1, 0, 1, false, hw)?;
            Some((conv, b.bn("expand_bn", hidden)?))
        } else {
            None
        };
        let (dw, out) = b.conv(
            "depthwise",
            (hidden, hidden),
            kernel,
            stride,
            kernel / 2,
            hidden,
            false,
            hw,
        )?;
        let depthwise = (
            Depthwise {
                weight: dw.weight().clone(),
                stride,
                groups: hidden,
                active: active.clone(),
            },
            b.bn("depthwise_bn", hidden)?,
        );
        let squeeze = (cin / 4).max(1);
        let se = b.scope("se", |b| {
            let (reduce, _) = b.conv("reduce", (hidden, squeeze), 1, 1, 0, 1, true, (1, 1))?;
            let (expand, _) = b.conv("expand", (squeeze, hidden), 1, 1, 0, 1, true, (1, 1))?;
            Ok(SqueezeExcite { reduce, expand })
        })?;
        let (pw, _) = b.conv("project", (hidden, cout), 1, 1, 0, 1, false, out)?;
        let project = (pw, b.bn("project_bn", cout)?);
        Ok((
            Self {
                expand,
                depthwise,
                se,
                project,
                residual: stride == 1 && cin == cout,
            },
            out,
        ))
    }
}

impl StageBlock for MbConv {
    fn forward(&self, xs: &Tensor, train: bool, k: Kernels) -> Result<Tensor> {
        let mut h = xs.clone();
        if let Some((conv, bn)) = &self.expand {
            h = bn.forward(&conv.forward(&h, k)?, train, false, k)?.silu()?;
        }
        h = self
            .depthwise
            .1
            .forward(&self.depthwise.0.forward(&h, k)?, train, false, k)?
            .silu()?;
        h = self.se.forward(&h, k)?;
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

/// EfficientNet-B0, CIFAR variant; see the module documentation.
#[derive(Clone, Debug)]
pub struct EfficientNet {
    plan: InputPlan,
    conv1: Conv,
    bn1: BatchNorm2d,
    stages: Vec<Vec<MbConv>>,
    conv2: Conv,
    bn2: BatchNorm2d,
    fc: candle_nn::Linear,
    active: Arc<AtomicUsize>,
}

impl EfficientNet {
    /// EfficientNet-B0 for `in_channels` inputs and `classes` outputs.
    pub fn new(
        in_channels: usize,
        plan: InputPlan,
        classes: usize,
        b: &mut Builder,
    ) -> Result<Self> {
        Self::build(in_channels, plan, classes, None, b)
    }

    /// The same network with every depthwise kernel `kernel × kernel`
    /// (odd, at least each stage's own), runnable at any smaller odd size
    /// ([`EfficientNet::set_kernel`]).
    pub fn new_elastic(
        in_channels: usize,
        plan: InputPlan,
        classes: usize,
        kernel: usize,
        b: &mut Builder,
    ) -> Result<Self> {
        if kernel.is_multiple_of(2) || kernel < 3 {
            candle_core::bail!("an elastic kernel must be odd and at least 3, got {kernel}")
        }
        Self::build(in_channels, plan, classes, Some(kernel), b)
    }

    fn build(
        in_channels: usize,
        plan: InputPlan,
        classes: usize,
        elastic: Option<usize>,
        b: &mut Builder,
    ) -> Result<Self> {
        let active = Arc::new(AtomicUsize::new(0));
        let (conv1, mut hw) = b.conv(
            "conv1",
            (in_channels, 32),
            3,
            plan.stem_stride,
            1,
            1,
            false,
            plan.size,
        )?;
        let bn1 = b.bn("bn1", 32)?;
        let mut cin = 32;
        let mut stages = Vec::new();
        for (s, &(t, kernel, c, n, first_stride)) in STAGES.iter().enumerate() {
            let stage = b.scope(&format!("stage{}", s + 1), |b| {
                let mut blocks = Vec::new();
                for i in 0..n {
                    let spec = BlockSpec {
                        cin,
                        cout: c,
                        expansion: t,
                        kernel: elastic.unwrap_or(kernel),
                        stride: if i == 0 { first_stride } else { 1 },
                    };
                    let (block, next) =
                        b.scope(&i.to_string(), |b| MbConv::new(b, spec, &active, hw))?;
                    blocks.push(block);
                    hw = next;
                    cin = c;
                }
                Ok(blocks)
            })?;
            stages.push(stage);
        }
        let (conv2, _) = b.conv("conv2", (cin, 1280), 1, 1, 0, 1, false, hw)?;
        let bn2 = b.bn("bn2", 1280)?;
        let fc = b.linear("fc", 1280, classes)?;
        Ok(Self {
            plan,
            conv1,
            bn1,
            stages,
            conv2,
            bn2,
            fc,
            active,
        })
    }

    /// Runs every depthwise convolution at its centre `size × size` (odd;
    /// 0 restores the full kernels). A size at least a kernel's runs it whole.
    pub fn set_kernel(&self, size: usize) -> Result<()> {
        if size != 0 && size.is_multiple_of(2) {
            candle_core::bail!("a kernel size must be odd, got {size}")
        }
        self.active.store(size, Ordering::Relaxed);
        Ok(())
    }

    /// Forward pass; see the module documentation for the features.
    pub fn forward_t(&self, xs: &Tensor, train: bool, k: Kernels) -> Result<ModelOutput> {
        let xs = self.plan.apply(xs)?;
        let h = self
            .bn1
            .forward(&self.conv1.forward(&xs, k)?, train, false, k)?
            .silu()?;
        let mut features = vec![feature("stem", &h)];
        let h = run_stages(h, &self.stages, "stage", train, k, &mut features)?;
        let h = self
            .bn2
            .forward(&self.conv2.forward(&h, k)?, train, false, k)?
            .silu()?;
        head(&h, &self.fc, features)
    }
}
