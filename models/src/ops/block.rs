//! A residual basic block in training mode as one candle custom op:
//!
//! ```text
//! h = max(0, bn1(conv1(x))),   y = max(0, bn2(conv2(h)) + shortcut(x))
//! ```
//! with batch norms on batch statistics, the convolutions without bias and
//! the shortcut an identity or ResNet's option A ([`Shortcut`]).
//!
//! Built from the per-layer ops, a block is nine graph nodes, and candle's
//! backward pass gives every node's gradient a zero-filled buffer of its own
//! and adds into it: four activation-sized fills and five additions per
//! block, each a pass over memory (and a call into candle's thread pool).
//! As one op, the block's backward pass hands its intermediate gradients
//! from kernel to kernel (the same kernels as the per-layer ops:
//! [`super::conv`], [`super::batch_norm`]), and candle sees one node whose
//! gradients are the input's and the packed parameters'. The forward pass
//! keeps `conv1(x)`, `h` and `conv2(h)` for the backward pass (as the graph
//! of the per-layer ops would), which frees them once it has used them.

use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use candle_nn::Conv2dConfig;

use super::batch_norm::{
    self as bn, batch_norm_add_relu_train_candle, batch_norm_train_candle, stats_tensors,
    BatchStats, BnShape, Residual, ResidualGrad, Shortcut,
};
use super::conv::{self, ConvParams, ConvShape};
use super::cpu::{assume_written, inputs, output, unwritten, with_data};

/// A convolution of a block: its weight `[O, C, KH, KW]` and configuration
/// (no bias).
#[derive(Clone, Copy, Debug)]
pub struct BlockConv<'a> {
    /// `[O, C/groups, KH, KW]`.
    pub weight: &'a Tensor,
    /// Padding, stride, dilation and groups.
    pub cfg: &'a Conv2dConfig,
}

/// A batch norm of a block: its scale `γ` and shift `β`, each `[C]`.
#[derive(Clone, Copy, Debug)]
pub struct BlockBn<'a> {
    /// `γ`, `[C]`.
    pub gamma: &'a Tensor,
    /// `β`, `[C]`.
    pub beta: &'a Tensor,
}

/// The output of [`basic_block_train`]: `y`, and the batch
/// `(mean, biased variance)` of each batch norm's input, for the running
/// statistics.
#[derive(Clone, Debug)]
pub struct BlockOutput {
    /// The block's output, `[N, O, OH, OW]`.
    pub y: Tensor,
    /// `(mean, biased variance)` of `conv1(x)` per channel.
    pub bn1: (Tensor, Tensor),
    /// `(mean, biased variance)` of `conv2(h)` per channel.
    pub bn2: (Tensor, Tensor),
}

/// Every size of a block, validated.
#[derive(Clone, Copy, Debug)]
struct BlockShape {
    conv1: ConvShape,
    conv2: ConvShape,
    bn1: BnShape,
    bn2: BnShape,
    x: [usize; 4],
}

fn bn_shape(d: [usize; 4]) -> BnShape {
    BnShape {
        n: d[0],
        c: d[1],
        h: d[2],
        w: d[3],
    }
}

/// Intermediates of the forward pass that the backward pass needs.
struct Saved {
    c1: Vec<f32>,
    h1: Vec<f32>,
    c2: Vec<f32>,
    st1: BatchStats,
    st2: BatchStats,
}

/// `(x, [w1; γ1; β1; w2; γ2; β2]) → y`; see the module documentation.
struct BasicBlockOp {
    p1: ConvParams,
    p2: ConvParams,
    w1: [usize; 4],
    w2: [usize; 4],
    shortcut: Shortcut,
    eps: f64,
    /// Kept by the forward pass, taken by the backward pass (which recomputes
    /// them when they are gone, e.g. on a second backward pass).
    saved: Arc<Mutex<Option<Saved>>>,
    /// The two batch norms' statistics, read by the caller.
    stats: [Arc<Mutex<Option<BatchStats>>>; 2],
}

/// The six parameters' slices of the packed parameter vector.
struct Parts<'a> {
    w1: &'a [f32],
    g1: &'a [f32],
    w2: &'a [f32],
    g2: &'a [f32],
    b1: &'a [f32],
    b2: &'a [f32],
}

impl BasicBlockOp {
    fn shape(&self, x: &[usize]) -> Result<BlockShape> {
        let &[n, c, h, w] = x else {
            bail!("basic block: expected a 4-d input, got {x:?}")
        };
        let conv1 = ConvShape::new(x, &self.w1, self.p1)?;
        let conv2 = ConvShape::new(&conv1.out_dims(), &self.w2, self.p2)?;
        let out = conv2.out_dims();
        self.shortcut.check(&out, x)?;
        let (bn1, bn2) = (bn_shape(conv1.out_dims()), bn_shape(out));
        if bn1.n * bn1.h * bn1.w < 2 || bn2.n * bn2.h * bn2.w < 2 {
            bail!("basic block: batch norm in training mode needs more than one value per channel, got input {x:?}")
        }
        Ok(BlockShape {
            conv1,
            conv2,
            bn1,
            bn2,
            x: [n, c, h, w],
        })
    }

    fn param_len(&self) -> usize {
        let len1: usize = self.w1.iter().product();
        let len2: usize = self.w2.iter().product();
        len1 + 2 * self.w1[0] + len2 + 2 * self.w2[0]
    }

    fn split<'a>(&self, p: &'a [f32]) -> Result<Parts<'a>> {
        if p.len() != self.param_len() {
            bail!(
                "basic block: {} packed parameters, expected {}",
                p.len(),
                self.param_len()
            )
        }
        let (o1, o2) = (self.w1[0], self.w2[0]);
        let (w1, p) = p.split_at(self.w1.iter().product());
        let (g1, p) = p.split_at(o1);
        let (b1, p) = p.split_at(o1);
        let (w2, p) = p.split_at(self.w2.iter().product());
        let (g2, b2) = p.split_at(o2);
        Ok(Parts {
            w1,
            g1,
            w2,
            g2,
            b1,
            b2,
        })
    }

    fn run_forward(&self, s: &BlockShape, x: &[f32], p: &Parts<'_>) -> (Vec<f32>, Saved) {
        let c1 = conv::forward(&s.conv1, x, p.w1, None);
        let (h1, st1) = bn::forward(&c1, s.bn1, p.g1, p.b1, self.eps, true, None);
        let c2 = conv::forward(&s.conv2, &h1, p.w2, None);
        let residual = Residual {
            data: x,
            dims: s.x,
            shortcut: self.shortcut,
        };
        let (y, st2) = bn::forward(&c2, s.bn2, p.g2, p.b2, self.eps, true, Some(residual));
        (
            y,
            Saved {
                c1,
                h1,
                c2,
                st1,
                st2,
            },
        )
    }
}

impl CustomOp2 for BasicBlockOp {
    fn name(&self) -> &'static str {
        "kdprune-basic-block-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let s = self.shape(l1.dims())?;
        let [x, p] = inputs("basic block", [(s1, l1, "input"), (s2, l2, "parameters")])?;
        let parts = self.split(p)?;
        let (y, saved) = self.run_forward(&s, x, &parts);
        for (slot, st) in self.stats.iter().zip([&saved.st1, &saved.st2]) {
            if let Ok(mut slot) = slot.lock() {
                *slot = Some(st.clone());
            }
        }
        if let Ok(mut slot) = self.saved.lock() {
            *slot = Some(saved);
        }
        Ok(output(y, &s.conv2.out_dims()))
    }

    fn bwd(
        &self,
        xs: &Tensor,
        packed: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let s = self.shape(xs.dims())?;
        if dy.dims() != s.conv2.out_dims() {
            bail!(
                "basic block backward: gradient {:?} for output {:?}",
                dy.dims(),
                s.conv2.out_dims()
            )
        }
        with_data(
            "basic block",
            [
                (xs, "input"),
                (packed, "parameters"),
                (y, "output"),
                (dy, "output gradient"),
            ],
            |[x, p, yv, dyv]| self.backward(&s, xs, packed, x, self.split(p)?, yv, dyv),
        )
    }
}

impl BasicBlockOp {
    /// The gradients of the input (when it tracks its op) and of the packed
    /// parameters, from the data of the backward pass.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        s: &BlockShape,
        xs: &Tensor,
        packed: &Tensor,
        x: &[f32],
        p: Parts<'_>,
        yv: &[f32],
        dyv: &[f32],
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let saved = self.saved.lock().ok().and_then(|mut s| s.take());
        let saved = match saved {
            Some(saved) => saved,
            None => self.run_forward(s, x, &p).1,
        };
        // bn2 with the shortcut's sum and the ReLU: ∂c2, and ∂x through the
        // shortcut written into the input's gradient.
        let mut dx = unwritten(x.len());
        let (dc2, dg2, db2) = bn::backward(
            &saved.c2,
            yv,
            dyv,
            s.bn2,
            &saved.st2,
            p.g2,
            true,
            Some(ResidualGrad {
                dims: s.x,
                shortcut: self.shortcut,
                out: &mut dx,
            }),
        );
        // SAFETY: `bn::backward` writes every element of a residual's buffer.
        let mut dx = unsafe { assume_written(dx) };
        let mut dh1 = vec![0f32; saved.h1.len()];
        let (dw2, _) = conv::backward_into(&s.conv2, &saved.h1, &dc2, p.w2, Some(&mut dh1), false);
        drop(dc2);
        let (dc1, dg1, db1) = bn::backward(
            &saved.c1, &saved.h1, &dh1, s.bn1, &saved.st1, p.g1, true, None,
        );
        drop(dh1);
        let want_dx = xs.track_op();
        let (dw1, _) = conv::backward_into(
            &s.conv1,
            x,
            &dc1,
            p.w1,
            want_dx.then_some(dx.as_mut_slice()),
            false,
        );
        let dx = if want_dx {
            Some(Tensor::from_vec(dx, xs.shape(), xs.device())?)
        } else {
            None
        };
        let mut dp = Vec::with_capacity(self.param_len());
        for part in [dw1, dg1, db1, dw2, dg2, db2] {
            dp.extend(part);
        }
        let dp = Tensor::from_vec(dp, packed.shape(), packed.device())?;
        Ok((dx, Some(dp)))
    }
}

/// A residual basic block in training mode with kdprune's CPU kernels, as
/// one op (see the module documentation): `h = max(0, bn1(conv1(x)))`,
/// `y = max(0, bn2(conv2(h)) + shortcut(x))`, batch norms on batch
/// statistics with `eps`, gradients for `x` and the six parameters. Only f32
/// tensors on the CPU.
pub fn basic_block_train(
    xs: &Tensor,
    conv1: BlockConv<'_>,
    bn1: BlockBn<'_>,
    conv2: BlockConv<'_>,
    bn2: BlockBn<'_>,
    shortcut: Shortcut,
    eps: f64,
) -> Result<BlockOutput> {
    let dims4 = |t: &Tensor, what: &str| -> Result<[usize; 4]> {
        match t.dims() {
            &[a, b, c, d] => Ok([a, b, c, d]),
            d => bail!("basic block: {what} must be 4-d, got {d:?}"),
        }
    };
    let (w1, w2) = (
        dims4(conv1.weight, "conv1 weight")?,
        dims4(conv2.weight, "conv2 weight")?,
    );
    for (bn, o, name) in [(&bn1, w1[0], "bn1"), (&bn2, w2[0], "bn2")] {
        if bn.gamma.dims() != [o] || bn.beta.dims() != [o] {
            bail!(
                "basic block: {name} weight and bias must be [{o}], got {:?} and {:?}",
                bn.gamma.dims(),
                bn.beta.dims()
            )
        }
    }
    let stats = [Arc::new(Mutex::new(None)), Arc::new(Mutex::new(None))];
    let op = BasicBlockOp {
        p1: ConvParams::from(conv1.cfg),
        p2: ConvParams::from(conv2.cfg),
        w1,
        w2,
        shortcut,
        eps,
        saved: Arc::new(Mutex::new(None)),
        stats: stats.clone(),
    };
    let packed = Tensor::cat(
        &[
            &conv1.weight.flatten_all()?,
            bn1.gamma,
            bn1.beta,
            &conv2.weight.flatten_all()?,
            bn2.gamma,
            bn2.beta,
        ],
        0,
    )?;
    let y = xs.contiguous()?.apply_op2(&packed, op)?;
    Ok(BlockOutput {
        y,
        bn1: stats_tensors(&stats[0], xs)?,
        bn2: stats_tensors(&stats[1], xs)?,
    })
}

/// The same computation as [`basic_block_train`] from candle's
/// differentiable ops (convolution, [`batch_norm_train_candle`],
/// [`batch_norm_add_relu_train_candle`]), on any device.
pub fn basic_block_train_candle(
    xs: &Tensor,
    conv1: BlockConv<'_>,
    bn1: BlockBn<'_>,
    conv2: BlockConv<'_>,
    bn2: BlockBn<'_>,
    shortcut: Shortcut,
    eps: f64,
) -> Result<BlockOutput> {
    let conv = |x: &Tensor, c: BlockConv<'_>| {
        x.conv2d(
            c.weight,
            c.cfg.padding,
            c.cfg.stride,
            c.cfg.dilation,
            c.cfg.groups,
        )
    };
    let (h, m1, v1) = batch_norm_train_candle(&conv(xs, conv1)?, bn1.gamma, bn1.beta, eps, true)?;
    let (y, m2, v2) = batch_norm_add_relu_train_candle(
        &conv(&h, conv2)?,
        bn2.gamma,
        bn2.beta,
        eps,
        xs,
        shortcut,
    )?;
    Ok(BlockOutput {
        y,
        bn1: (m1, v1),
        bn2: (m2, v2),
    })
}
