//! The CIFAR ResNets in the runtime (`resnet20` … `resnet110`, shortcut A;
//! `resnet8x4`, `resnet32x4`, shortcut B), up to the global average pool.
//!
//! Every batch norm is folded into the convolution before it, as inference
//! engines do: in evaluation mode `bn(conv(x, w)) = conv(x, s·w) + t` with
//! `s = γ/√(σ² + ε)` and `t = β − μ·s` per output channel (the scale and
//! shift the training forward's evaluation mode computes, in the same f32
//! operations). A pruned weight stays zero under the scale, so a layer's
//! density is its pruned density.

use std::collections::BTreeMap;

use candle_core::Tensor;

use super::{values, weights, Conv, LayerChoice};
use crate::error::{ModelError, Result};
use crate::ops::conv::{ConvParams, ConvShape};
use crate::zoo::layers::BN_EPS;
use crate::zoo::{CifarLayout, InputPlan, StageEntry};

/// What a block adds to its second convolution's output.
#[derive(Clone, Debug)]
enum Shortcut {
    Identity,
    /// Shortcut A: the input subsampled by `stride`, `lo` zero channels
    /// before it and `hi` after.
    ZeroPad {
        stride: usize,
        lo: usize,
        hi: usize,
    },
    /// Shortcut B: a 1×1 convolution (its batch norm folded in).
    Projection(Box<Conv>),
}

#[derive(Clone, Debug)]
struct Block {
    conv1: Conv,
    conv2: Conv,
    shortcut: Shortcut,
}

/// A CIFAR ResNet's layers before `fc`, for one sample at a time.
#[derive(Clone, Debug)]
pub(super) struct ResidualBody {
    /// The input `[C, H, W]` before the zero padding of [`InputPlan`].
    input: (usize, usize, usize),
    plan: InputPlan,
    stem: Conv,
    blocks: Vec<Block>,
}

/// Convolution `{prefix}conv` (no bias) with batch norm `{prefix}bn` folded
/// in, on one sample of dims `input` (`[1, C, H, W]`).
fn conv_bn(
    tensors: &BTreeMap<String, Tensor>,
    (conv, bn): (&str, &str),
    input: [usize; 4],
    (out, k, stride): (usize, usize, usize),
    choice: LayerChoice,
) -> Result<Conv> {
    let wname = format!("{conv}.weight");
    let shape = [out, input[1], k, k];
    let mut w = values(tensors, &wname, &shape)?;
    let [gamma, beta, mean, var] = ["weight", "bias", "running_mean", "running_var"]
        .map(|t| values(tensors, &format!("{bn}.{t}"), &[out]));
    let (gamma, beta, mean, var) = (gamma?, beta?, mean?, var?);
    let mut bias = Vec::with_capacity(out);
    for (o, row) in w.chunks_exact_mut(input[1] * k * k).enumerate() {
        // As the evaluation forward: 1/√(σ² + ε), γ·that, β − μ·scale, in f32.
        let scale = gamma[o] * (var[o] + BN_EPS as f32).sqrt().recip();
        if !scale.is_finite() {
            return Err(ModelError::Config(format!(
                "{bn}: channel {o} has scale {scale} (running_var {})",
                var[o]
            )));
        }
        row.iter_mut().for_each(|v| *v *= scale);
        bias.push(beta[o] - mean[o] * scale);
    }
    let p = ConvParams {
        padding: k / 2,
        stride,
        dilation: 1,
        groups: 1,
    };
    let conv_shape = ConvShape::new(&input, &shape, p)?;
    let (weights, info) = weights(&wname, w, out, input[1] * k * k, choice, true)?;
    Conv::new(conv_shape, weights, info, bias)
}

/// `[1, C, H, W]` of a convolution's output.
fn out_of(conv: &Conv) -> [usize; 4] {
    conv.shape.out_dims()
}

impl ResidualBody {
    /// The layers of `layout` for inputs `input` (`(C, H, W)`), from the
    /// checkpoint's `tensors` under their training names.
    pub(super) fn new(
        layout: CifarLayout,
        input: (usize, usize, usize),
        widths: &BTreeMap<String, usize>,
        tensors: &BTreeMap<String, Tensor>,
        choice: LayerChoice,
    ) -> Result<Self> {
        let plan = InputPlan::new(input.1, input.2);
        // the stream widths as the config says (structured pruning)
        let streams = layout
            .streams(|name, default| Ok(widths.get(name).copied().unwrap_or(default)))
            .map_err(|e| ModelError::Config(e.to_string()))?;
        let stem = conv_bn(
            tensors,
            ("conv1", "bn1"),
            [1, input.0, plan.size.0, plan.size.1],
            (streams.stem, 3, plan.stem_stride),
            choice,
        )?;
        let mut dims = out_of(&stem);
        let mut blocks = Vec::new();
        for (s, &(cout, entry)) in streams.stages.iter().enumerate() {
            for i in 0..layout.blocks_per_stage() {
                let p = format!("layer{}.{i}.", s + 1);
                // a removed block (width 0; identity shortcuts only)
                let same = i > 0 || entry == StageEntry::Same;
                if same && widths.get(p.trim_end_matches('.')) == Some(&0) {
                    continue;
                }
                let stride = CifarLayout::stride(s, i);
                let at = |name: &str| format!("{p}{name}");
                // the block's inner width, as the config says
                let mid = widths
                    .get(&at("conv1"))
                    .copied()
                    .unwrap_or(layout.widths[s + 1]);
                let conv1 = conv_bn(
                    tensors,
                    (&at("conv1"), &at("bn1")),
                    dims,
                    (mid, 3, stride),
                    choice,
                )?;
                let conv2 = conv_bn(
                    tensors,
                    (&at("conv2"), &at("bn2")),
                    out_of(&conv1),
                    (cout, 3, 1),
                    choice,
                )?;
                let shortcut = match (i, entry) {
                    (0, StageEntry::Projection) => Shortcut::Projection(Box::new(conv_bn(
                        tensors,
                        (&at("shortcut.conv"), &at("shortcut.bn")),
                        dims,
                        (cout, 1, stride),
                        choice,
                    )?)),
                    (0, StageEntry::ZeroPad { lo, hi }) => Shortcut::ZeroPad { stride, lo, hi },
                    _ => Shortcut::Identity,
                };
                dims = out_of(&conv2);
                blocks.push(Block {
                    conv1,
                    conv2,
                    shortcut,
                });
            }
        }
        Ok(Self {
            input,
            plan,
            stem,
            blocks,
        })
    }

    /// Every convolution in forward order.
    pub(super) fn convs(&self) -> Vec<&Conv> {
        let mut convs = vec![&self.stem];
        for b in &self.blocks {
            convs.push(&b.conv1);
            convs.push(&b.conv2);
            if let Shortcut::Projection(c) = &b.shortcut {
                convs.push(c);
            }
        }
        convs
    }

    /// The globally average-pooled features `[C]` of one sample (`[C, H, W]`).
    pub(super) fn features(&self, sample: &[f32]) -> Vec<f32> {
        let x = self.padded(sample);
        let mut h = self.stem.apply(&x);
        relu(&mut h);
        for b in &self.blocks {
            let mut y = b.conv1.apply(&h);
            relu(&mut y);
            let mut y = b.conv2.apply(&y);
            let [_, c, oh, ow] = out_of(&b.conv2);
            match &b.shortcut {
                Shortcut::Identity => add(&mut y, &h),
                Shortcut::Projection(conv) => add(&mut y, &conv.apply(&h)),
                Shortcut::ZeroPad { stride, lo, hi } => {
                    let [_, cin, ih, iw] = b.conv1.shape.in_dims();
                    debug_assert_eq!(lo + cin + hi, c);
                    for ch in 0..cin {
                        let src = &h[ch * ih * iw..(ch + 1) * ih * iw];
                        let dst = &mut y[(ch + lo) * oh * ow..(ch + lo + 1) * oh * ow];
                        for (i, row) in dst.chunks_exact_mut(ow).enumerate() {
                            let from = &src[i * stride * iw..];
                            for (j, v) in row.iter_mut().enumerate() {
                                *v += from[j * stride];
                            }
                        }
                    }
                }
            }
            relu(&mut y);
            h = y;
        }
        let positions = h.len() / self.channels();
        h.chunks_exact(positions)
            .map(|plane| plane.iter().sum::<f32>() / positions as f32)
            .collect()
    }

    /// Channels of the last block (the features' length).
    fn channels(&self) -> usize {
        self.blocks
            .last()
            .map_or(out_of(&self.stem)[1], |b| out_of(&b.conv2)[1])
    }

    /// `sample` with the plan's zero rows and columns.
    fn padded(&self, sample: &[f32]) -> Vec<f32> {
        let (c, h, w) = self.input;
        let (top, _, left, _) = self.plan.pad;
        let (ph, pw) = self.plan.size;
        if (ph, pw) == (h, w) {
            return sample.to_vec();
        }
        let mut x = vec![0f32; c * ph * pw];
        for (src, dst) in sample.chunks_exact(h * w).zip(x.chunks_exact_mut(ph * pw)) {
            for (r, row) in src.chunks_exact(w).enumerate() {
                let at = (top + r) * pw + left;
                dst[at..at + w].copy_from_slice(row);
            }
        }
        x
    }
}

fn relu(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = v.max(0.0));
}

fn add(y: &mut [f32], r: &[f32]) {
    y.iter_mut().zip(r).for_each(|(a, b)| *a += b);
}
