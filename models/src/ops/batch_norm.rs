//! Training-mode batch normalisation (optionally fused with a ReLU, or with a
//! residual addition and a ReLU) on the CPU as candle custom ops with their own
//! backward passes.
//!
//! For `x` of shape `[N, C, H, W]`, with `M = N·H·W` values per channel:
//!
//! ```text
//! μ_c = (1/M) Σ x,   σ²_c = (1/M) Σ (x − μ_c)²   (biased, as PyTorch normalises)
//! x̂ = (x − μ_c) / √(σ²_c + ε),   y = γ_c · x̂ + β_c   (then max(0, y) when fused)
//! ```
//! The residual form ends a ResNet block: `y = max(0, γ_c·x̂ + β_c + r)` with
//! `r` the block's input through its [`Shortcut`].
//! With `g` the incoming gradient (zeroed where a fused ReLU output is 0),
//!
//! ```text
//! ∂β_c = Σ g,   ∂γ_c = Σ g·x̂,   ∂x = γ_c / (M·√(σ²_c + ε)) · (M·g − ∂β_c − x̂·∂γ_c),   ∂r = g
//! ```
//! Sums run in f64, channel by channel over 8 interleaved lanes (which
//! vectorise) in an order fixed by the shape alone, so the result does not
//! depend on the number of threads. The ops keep the batch mean and biased
//! variance of their last forward pass for the caller's running statistics.
//!
//! The backward passes run directly in `bwd` on the CPU storages of the
//! tensors they need (input, output, output gradient): one pass computes the
//! sums, one writes `∂x` (and an identity shortcut's `∂r`), a third scatters
//! a zero-padded shortcut's `∂r`; no packed buffer is narrowed apart.

use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{assume_written, inputs, output, simd, unwritten, with_data};

/// Per-channel batch statistics `(mean, 1/√(σ² + ε), biased variance σ²)`.
pub(crate) type BatchStats = Vec<(f64, f64, f64)>;

/// What a residual batch norm ([`batch_norm_add_relu_train`]) adds to its
/// normalised output before the ReLU: the block input `r` of shape
/// `[N, C_r, H_r, W_r]` mapped to the output's `[N, C, OH, OW]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shortcut {
    /// `r` has the output's shape and is added as it is.
    Identity,
    /// ResNet shortcut A: `r[:, :, ::stride, ::stride]` cut to `OH × OW`,
    /// with `lo` zero channels before the residual's and `hi` after
    /// (`C = lo + C_r + hi`; the published networks pad equally, a
    /// structurally pruned one need not).
    ZeroPad {
        /// Subsampling step on both spatial axes, ≥ 1.
        stride: usize,
        /// Zero channels added before the residual's.
        lo: usize,
        /// Zero channels added after the residual's.
        hi: usize,
    },
}

impl Shortcut {
    /// Checks that a residual of dims `res` maps onto an output of dims `out`.
    pub(crate) fn check(self, out: &[usize], res: &[usize]) -> Result<()> {
        let ok = match (self, out, res) {
            (Shortcut::Identity, _, _) => out == res,
            (Shortcut::ZeroPad { stride, lo, hi }, &[n, c, oh, ow], &[rn, rc, rh, rw]) => {
                stride > 0
                    && rn == n
                    && lo + rc + hi == c
                    && oh > 0
                    && ow > 0
                    && (oh - 1) * stride < rh
                    && (ow - 1) * stride < rw
            }
            _ => false,
        };
        if !ok {
            bail!("batch_norm: residual {res:?} does not map onto output {out:?} by {self:?}")
        }
        Ok(())
    }

    /// `r` mapped to the output's shape with candle's ops (any device).
    pub fn apply_candle(self, r: &Tensor, out: &[usize]) -> Result<Tensor> {
        self.check(out, r.dims())?;
        match self {
            Shortcut::Identity => Ok(r.clone()),
            Shortcut::ZeroPad { stride, lo, hi } => {
                let (oh, ow) = (out[2], out[3]);
                let sub = if stride == 1 {
                    r.narrow(2, 0, oh)?.narrow(3, 0, ow)?
                } else {
                    let dev = r.device();
                    let rows: Vec<u32> = (0..oh).map(|i| (i * stride) as u32).collect();
                    let cols: Vec<u32> = (0..ow).map(|j| (j * stride) as u32).collect();
                    r.index_select(&Tensor::new(rows, dev)?, 2)?
                        .index_select(&Tensor::new(cols, dev)?, 3)?
                };
                sub.pad_with_zeros(1, lo, hi)
            }
        }
    }
}

/// `(N, C, H·W)` of a `[N, C, H, W]` layout whose parameters have `[C]`.
fn dims(x: &[usize], gamma: &[usize], beta: &[usize]) -> Result<(usize, usize, usize)> {
    let &[n, c, h, w] = x else {
        bail!("batch_norm: expected a 4-d input [N, C, H, W], got {x:?}")
    };
    if gamma != [c] || beta != [c] {
        bail!("batch_norm: weight and bias must be [{c}], got {gamma:?} and {beta:?}")
    }
    if n * h * w == 0 {
        bail!("batch_norm: empty input {x:?}")
    }
    Ok((n, c, h * w))
}

/// `Σ f(v)` over `v` in f64, on 8 interleaved lanes (the loop vectorises) in
/// an order fixed by the length alone.
#[inline(always)]
fn lane_sum_f64(v: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut lanes = [0f64; 8];
    let chunks = v.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&x| f(x as f64)).sum();
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += f(x as f64);
        }
    }
    lanes.iter().sum::<f64>() + tail
}

/// Mean and `1/√(σ² + ε)` of every channel, plus the biased variance.
pub(crate) fn channel_stats(x: &[f32], n: usize, c: usize, p: usize, eps: f64) -> BatchStats {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            simd(
                #[inline(always)]
                || {
                    let planes = (0..n).map(|i| &x[(i * c + ch) * p..(i * c + ch + 1) * p]);
                    let m = (n * p) as f64;
                    let mean = planes
                        .clone()
                        .map(|pl| lane_sum_f64(pl, |v| v))
                        .sum::<f64>()
                        / m;
                    let var = planes
                        .map(|pl| lane_sum_f64(pl, |v| (v - mean) * (v - mean)))
                        .sum::<f64>()
                        / m;
                    (mean, 1.0 / (var + eps).sqrt(), var)
                },
            )
        })
        .collect()
}

/// `(γ/σ, β − μ·γ/σ)` in f32: `y = x·scale + shift`.
fn affine((mean, inv_std, _): (f64, f64, f64), gamma: f32, beta: f32) -> (f32, f32) {
    let scale = gamma as f64 * inv_std;
    (scale as f32, (beta as f64 - mean * scale) as f32)
}

/// `out = x·scale + shift`, then `+ r` where a residual row is given, then
/// the ReLU when `relu`.
#[inline(always)]
fn affine_row(
    out: &mut [MaybeUninit<f32>],
    x: &[f32],
    r: Option<&[f32]>,
    scale: f32,
    shift: f32,
    relu: bool,
) {
    match (r, relu) {
        (Some(r), _) => {
            for ((o, &v), &r) in out.iter_mut().zip(x).zip(r) {
                o.write((v * scale + shift + r).max(0.0));
            }
        }
        (None, true) => {
            for (o, &v) in out.iter_mut().zip(x) {
                o.write((v * scale + shift).max(0.0));
            }
        }
        (None, false) => {
            for (o, &v) in out.iter_mut().zip(x) {
                o.write(v * scale + shift);
            }
        }
    }
}

/// Sizes of one batch-norm call: `[N, C, H, W]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BnShape {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl BnShape {
    fn plane(&self) -> usize {
        self.h * self.w
    }
}

/// A residual input: its data, dims `[N, C_r, H_r, W_r]` and shortcut.
#[derive(Clone, Copy)]
pub(crate) struct Residual<'a> {
    pub data: &'a [f32],
    pub dims: [usize; 4],
    pub shortcut: Shortcut,
}

impl Residual<'_> {
    /// The residual plane read by output plane `(i, ch)`, if any (none for a
    /// zero-padded channel).
    fn plane(&self, s: &BnShape, i: usize, ch: usize) -> Option<&[f32]> {
        let [_, rc, rh, rw] = self.dims;
        match self.shortcut {
            Shortcut::Identity => Some(&self.data[(i * s.c + ch) * s.plane()..][..s.plane()]),
            Shortcut::ZeroPad { lo, .. } => (ch >= lo && ch < lo + rc)
                .then(|| &self.data[(i * rc + ch - lo) * rh * rw..][..rh * rw]),
        }
    }

    /// The subsampling step (1 for the identity).
    fn stride(&self) -> usize {
        match self.shortcut {
            Shortcut::Identity => 1,
            Shortcut::ZeroPad { stride, .. } => stride,
        }
    }
}

/// Forward pass: statistics and output of `[relu](γ·x̂ + β [+ shortcut(r)])`
/// (a residual implies the ReLU).
pub(crate) fn forward(
    x: &[f32],
    s: BnShape,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    relu: bool,
    residual: Option<Residual<'_>>,
) -> (Vec<f32>, BatchStats) {
    let (c, p) = (s.c, s.plane());
    let stats = channel_stats(x, s.n, c, p, eps);
    // Every element is written below: each plane by `affine_row`, whole or
    // row by row.
    let mut y = unwritten(x.len());
    y.par_chunks_mut(p)
        .zip(x.par_chunks(p))
        .enumerate()
        .for_each_init(Vec::new, |row, (plane, (out, inp))| {
            simd(
                #[inline(always)]
                || {
                    let (i, ch) = (plane / c, plane % c);
                    let (scale, shift) = affine(stats[ch], gamma[ch], beta[ch]);
                    let Some(res) = residual else {
                        return affine_row(out, inp, None, scale, shift, relu);
                    };
                    let Some(src) = res.plane(&s, i, ch) else {
                        return affine_row(out, inp, None, scale, shift, true);
                    };
                    let stride = res.stride();
                    if stride == 1 && src.len() == p {
                        return affine_row(out, inp, Some(src), scale, shift, true);
                    }
                    // Shortcut A: gather the subsampled residual row by row.
                    let rw = res.dims[3];
                    row.resize(s.w, 0f32);
                    for (k, (o, v)) in out
                        .chunks_exact_mut(s.w)
                        .zip(inp.chunks_exact(s.w))
                        .enumerate()
                    {
                        let line = &src[k * stride * rw..];
                        for (d, r) in row.iter_mut().zip(line.iter().step_by(stride)) {
                            *d = *r;
                        }
                        affine_row(o, v, Some(row), scale, shift, true);
                    }
                },
            )
        });
    // SAFETY: every plane of `y` was written in full above.
    (unsafe { assume_written(y) }, stats)
}

/// `g = ∂y`, zeroed where the ReLU cut the output (`y ≤ 0`) when `RELU`.
#[inline(always)]
fn masked<const RELU: bool>(dy: f32, y: f32) -> f32 {
    if RELU && y <= 0.0 {
        0.0
    } else {
        dy
    }
}

/// `(Σ g, Σ g·(x − mean))` over one plane, in f64 on 8 interleaved lanes (the
/// loop vectorises) in an order fixed by the length alone.
#[inline(always)]
fn plane_grad_sums<const RELU: bool>(x: &[f32], y: &[f32], dy: &[f32], mean: f64) -> (f64, f64) {
    let (mut sg, mut sgx) = ([0f64; 8], [0f64; 8]);
    let (cx, cy, cd) = (x.chunks_exact(8), y.chunks_exact(8), dy.chunks_exact(8));
    let (mut tg, mut tgx) = (0f64, 0f64);
    for ((&xv, &yv), &dv) in cx
        .remainder()
        .iter()
        .zip(cy.remainder())
        .zip(cd.remainder())
    {
        let g = masked::<RELU>(dv, yv) as f64;
        tg += g;
        tgx += g * (xv as f64 - mean);
    }
    for ((xc, yc), dc) in cx.zip(cy).zip(cd) {
        // Iterators, not indices: the loop then vectorises.
        for ((((a, b), &xv), &yv), &dv) in sg.iter_mut().zip(&mut sgx).zip(xc).zip(yc).zip(dc) {
            let g = masked::<RELU>(dv, yv) as f64;
            *a += g;
            *b += g * (xv as f64 - mean);
        }
    }
    (sg.iter().sum::<f64>() + tg, sgx.iter().sum::<f64>() + tgx)
}

/// `∂x` of one plane (and `g` into `dr` when given).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn plane_input_grad<const RELU: bool>(
    dx: &mut [MaybeUninit<f32>],
    dr: Option<&mut [MaybeUninit<f32>]>,
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    (mean, inv_std): (f64, f64),
    (k, m, sg, sgx): (f64, f64, f64, f64),
) {
    let dx_of = |xv: f32, g: f32| -> f32 {
        let xhat = (xv as f64 - mean) * inv_std;
        (k * (m * g as f64 - sg - xhat * sgx)) as f32
    };
    let xyd = x.iter().zip(y).zip(dy);
    match dr {
        Some(dr) => {
            for ((d, r), ((&xv, &yv), &dv)) in dx.iter_mut().zip(dr).zip(xyd) {
                let g = masked::<RELU>(dv, yv);
                r.write(g);
                d.write(dx_of(xv, g));
            }
        }
        None => {
            for (d, ((&xv, &yv), &dv)) in dx.iter_mut().zip(xyd) {
                d.write(dx_of(xv, masked::<RELU>(dv, yv)));
            }
        }
    }
}

/// Where the gradient of a residual goes: the residual's dims, its
/// shortcut and an unfilled buffer of the residual's size, every element of
/// which [`backward`] writes (zero where the shortcut reads nothing).
pub(crate) struct ResidualGrad<'a> {
    pub dims: [usize; 4],
    pub shortcut: Shortcut,
    pub out: &'a mut [MaybeUninit<f32>],
}

/// Gradients `(∂x, ∂γ, ∂β)` of `[relu](γ·x̂ + β [+ shortcut(r)])` from the
/// input `x`, the output `y` (which gives the ReLU's mask) and `∂y`; with a
/// residual, `∂r` is written into its buffer.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    s: BnShape,
    stats: &BatchStats,
    gamma: &[f32],
    relu: bool,
    residual: Option<ResidualGrad<'_>>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (n, c, p) = (s.n, s.c, s.plane());
    let relu = relu || residual.is_some();
    // Σ g and Σ g·x̂ per channel.
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            simd(
                #[inline(always)]
                || {
                    let (mean, inv_std, _) = stats[ch];
                    let (mut sg, mut sgx) = (0f64, 0f64);
                    for i in 0..n {
                        let r = (i * c + ch) * p..(i * c + ch + 1) * p;
                        let (a, b) = if relu {
                            plane_grad_sums::<true>(&x[r.clone()], &y[r.clone()], &dy[r], mean)
                        } else {
                            plane_grad_sums::<false>(&x[r.clone()], &y[r.clone()], &dy[r], mean)
                        };
                        sg += a;
                        sgx += b;
                    }
                    (sg, sgx * inv_std)
                },
            )
        })
        .collect();
    let m = (n * p) as f64;
    // Every element is written below, plane by plane.
    let mut dx = unwritten(x.len());
    let plane = |plane: usize, dx: &mut [MaybeUninit<f32>], dr: Option<&mut [MaybeUninit<f32>]>| {
        let ch = plane % c;
        let (mean, inv_std, _) = stats[ch];
        let (sg, sgx) = sums[ch];
        let k = gamma[ch] as f64 * inv_std / m;
        let r = plane * p..(plane + 1) * p;
        let (x, y, dy) = (&x[r.clone()], &y[r.clone()], &dy[r]);
        simd(
            #[inline(always)]
            || {
                if relu {
                    plane_input_grad::<true>(dx, dr, x, y, dy, (mean, inv_std), (k, m, sg, sgx));
                } else {
                    plane_input_grad::<false>(dx, dr, x, y, dy, (mean, inv_std), (k, m, sg, sgx));
                }
            },
        )
    };
    let mut residual = residual;
    match residual.as_mut() {
        Some(ResidualGrad {
            shortcut: Shortcut::Identity,
            out,
            ..
        }) => dx
            .par_chunks_mut(p)
            .zip(out.par_chunks_mut(p))
            .enumerate()
            .for_each(|(i, (dx, dr))| plane(i, dx, Some(dr))),
        _ => dx
            .par_chunks_mut(p)
            .enumerate()
            .for_each(|(i, dx)| plane(i, dx, None)),
    }
    if let Some(ResidualGrad {
        dims: [_, rc, rh, rw],
        shortcut: Shortcut::ZeroPad { stride, lo, .. },
        out,
    }) = residual
    {
        // ∂r: zeros, and the masked gradient of the residual's channels
        // scattered back to the subsampled positions.
        out.par_chunks_mut(rh * rw)
            .enumerate()
            .for_each(|(plane, dst)| {
                dst.fill(MaybeUninit::new(0.0));
                let (i, ch) = (plane / rc, plane % rc + lo);
                let r = (i * c + ch) * p..(i * c + ch + 1) * p;
                let (y, dy) = (&y[r.clone()], &dy[r]);
                for (k, (yr, dr)) in y.chunks_exact(s.w).zip(dy.chunks_exact(s.w)).enumerate() {
                    let line = &mut dst[k * stride * rw..];
                    for (d, (&yv, &dv)) in line.iter_mut().step_by(stride).zip(yr.iter().zip(dr)) {
                        d.write(masked::<true>(dv, yv));
                    }
                }
            });
    }
    let dgamma = sums.iter().map(|s| s.1 as f32).collect();
    let dbeta = sums.iter().map(|s| s.0 as f32).collect();
    // SAFETY: every plane of `dx` was written in full above.
    (unsafe { assume_written(dx) }, dgamma, dbeta)
}

/// The statistics of a forward pass, or those recomputed from `x`.
fn stats_or_recompute(
    slot: &Mutex<Option<BatchStats>>,
    x: &[f32],
    s: BnShape,
    eps: f64,
) -> BatchStats {
    match slot.lock().ok().and_then(|s| s.clone()) {
        Some(stats) if stats.len() == s.c => stats,
        _ => channel_stats(x, s.n, s.c, s.plane(), eps),
    }
}

/// `y = γ·x̂ + β` (then ReLU if `relu`), inputs `(x, γ, β)`.
pub(crate) struct BatchNormTrainOp {
    pub eps: f64,
    pub relu: bool,
    /// Statistics of the forward pass: read by the caller for the running
    /// statistics and by the backward pass, which then need not recompute them.
    pub stats: Arc<Mutex<Option<BatchStats>>>,
}

fn bn_shape(x: &[usize], gamma: &[usize], beta: &[usize]) -> Result<BnShape> {
    let (n, c, _) = dims(x, gamma, beta)?;
    Ok(BnShape {
        n,
        c,
        h: x[2],
        w: x[3],
    })
}

impl CustomOp3 for BatchNormTrainOp {
    fn name(&self) -> &'static str {
        "kdprune-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let s = bn_shape(l1.dims(), l2.dims(), l3.dims())?;
        let [x, gamma, beta] = inputs(
            "batch_norm",
            [(s1, l1, "input"), (s2, l2, "weight"), (s3, l3, "bias")],
        )?;
        let (y, stats) = forward(x, s, gamma, beta, self.eps, self.relu, None);
        if let Ok(mut slot) = self.stats.lock() {
            *slot = Some(stats);
        }
        Ok(output(y, l1.dims()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let s = bn_shape(x.dims(), gamma.dims(), beta.dims())?;
        check_gradient(x, dy)?;
        let (dx, dgamma, dbeta) = with_data(
            "batch_norm backward",
            [
                (x, "input"),
                (y, "output"),
                (dy, "gradient"),
                (gamma, "weight"),
            ],
            |[xv, yv, dyv, gv]| {
                let stats = stats_or_recompute(&self.stats, xv, s, self.eps);
                Ok(backward(xv, yv, dyv, s, &stats, gv, self.relu, None))
            },
        )?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dgamma, s.c, dev)?),
            Some(Tensor::from_vec(dbeta, s.c, dev)?),
        ))
    }
}

/// `y = max(0, γ·x̂ + β + shortcut(r))`, inputs `(x, r, [γ; β])`.
pub(crate) struct BatchNormAddReluOp {
    pub eps: f64,
    pub shortcut: Shortcut,
    /// Statistics of the forward pass, as in [`BatchNormTrainOp`].
    pub stats: Arc<Mutex<Option<BatchStats>>>,
}

/// Shape of `x`, `C` from the packed `[γ; β]` of `params` dims, and the
/// residual's dims, all checked.
fn residual_shape(
    x: &[usize],
    r: &[usize],
    params: &[usize],
    shortcut: Shortcut,
) -> Result<(BnShape, [usize; 4])> {
    let &[two_c] = params else {
        bail!("batch_norm: expected packed parameters [2C], got {params:?}")
    };
    let half = [two_c / 2];
    let s = bn_shape(x, &half, &half)?;
    if two_c != 2 * s.c {
        bail!(
            "batch_norm: packed parameters {params:?} for {} channels",
            s.c
        )
    }
    shortcut.check(x, r)?;
    let &[a, b, c, d] = r else {
        bail!("batch_norm: expected a 4-d residual, got {r:?}")
    };
    Ok((s, [a, b, c, d]))
}

impl CustomOp3 for BatchNormAddReluOp {
    fn name(&self) -> &'static str {
        "kdprune-batch-norm-add-relu-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (s, rdims) = residual_shape(l1.dims(), l2.dims(), l3.dims(), self.shortcut)?;
        let [x, r, params] = inputs(
            "batch_norm",
            [
                (s1, l1, "input"),
                (s2, l2, "residual"),
                (s3, l3, "parameters"),
            ],
        )?;
        let (gamma, beta) = params.split_at(s.c);
        let residual = Residual {
            data: r,
            dims: rdims,
            shortcut: self.shortcut,
        };
        let (y, stats) = forward(x, s, gamma, beta, self.eps, true, Some(residual));
        if let Ok(mut slot) = self.stats.lock() {
            *slot = Some(stats);
        }
        Ok(output(y, l1.dims()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        r: &Tensor,
        params: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (s, rdims) = residual_shape(x.dims(), r.dims(), params.dims(), self.shortcut)?;
        check_gradient(x, dy)?;
        // ∂r only when the residual needs a gradient (the ReLU's mask, from
        // the output, is the same either way).
        let mut dr = r.track_op().then(|| unwritten(r.elem_count()));
        let (dx, dgamma, dbeta) = with_data(
            "batch_norm backward",
            [
                (x, "input"),
                (y, "output"),
                (dy, "gradient"),
                (params, "parameters"),
            ],
            |[xv, yv, dyv, pv]| {
                let stats = stats_or_recompute(&self.stats, xv, s, self.eps);
                Ok(backward(
                    xv,
                    yv,
                    dyv,
                    s,
                    &stats,
                    &pv[..s.c],
                    true,
                    dr.as_mut().map(|out| ResidualGrad {
                        dims: rdims,
                        shortcut: self.shortcut,
                        out,
                    }),
                ))
            },
        )?;
        let dev = x.device();
        // SAFETY: `backward` writes every element of a residual's buffer.
        let dr = dr
            .map(|dr| Tensor::from_vec(unsafe { assume_written(dr) }, r.shape(), dev))
            .transpose()?;
        let mut dparams = dgamma;
        dparams.extend(dbeta);
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            dr,
            Some(Tensor::from_vec(dparams, 2 * s.c, dev)?),
        ))
    }
}

/// An error unless the gradient `dy` has the shape of the input `x`.
fn check_gradient(x: &Tensor, dy: &Tensor) -> Result<()> {
    if dy.dims() != x.dims() {
        bail!(
            "batch_norm backward: input {:?} and gradient {:?} differ",
            x.dims(),
            dy.dims()
        )
    }
    Ok(())
}

/// The batch `(mean, biased variance)` from an op's statistics slot.
pub(crate) fn stats_tensors(
    slot: &Mutex<Option<BatchStats>>,
    xs: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let stats = slot.lock().ok().and_then(|s| s.clone());
    let Some(stats) = stats else {
        bail!("batch_norm: the kernel left no statistics")
    };
    let c = stats.len();
    let mean = stats.iter().map(|s| s.0 as f32).collect();
    let var = stats.iter().map(|s| s.2 as f32).collect();
    Ok((
        Tensor::from_vec(mean, c, xs.device())?,
        Tensor::from_vec(var, c, xs.device())?,
    ))
}

/// Training-mode batch norm (ReLU fused when `relu`) with kdprune's CPU
/// kernel: the output and the batch `(mean, biased variance)` per channel.
/// Only f32 tensors on the CPU.
pub fn batch_norm_train(
    xs: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let slot = Arc::new(Mutex::new(None));
    let op = BatchNormTrainOp {
        eps,
        relu,
        stats: slot.clone(),
    };
    let y = xs
        .contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    let (mean, var) = stats_tensors(&slot, xs)?;
    Ok((y, mean, var))
}

/// The end of a residual block in one kernel, training mode:
/// `max(0, batch_norm(xs) + shortcut(residual))` with kdprune's CPU kernel,
/// and the batch `(mean, biased variance)` of `xs` per channel. The gradient
/// reaches `xs`, `gamma`, `beta` and `residual`; the sum and the ReLU cost no
/// pass, buffer or graph node of their own. Only f32 tensors on the CPU.
pub fn batch_norm_add_relu_train(
    xs: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    residual: &Tensor,
    shortcut: Shortcut,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (_, c, _, _) = xs.dims4()?;
    if gamma.dims() != [c] || beta.dims() != [c] {
        bail!(
            "batch_norm: weight and bias must be [{c}], got {:?} and {:?}",
            gamma.dims(),
            beta.dims()
        )
    }
    let slot = Arc::new(Mutex::new(None));
    let op = BatchNormAddReluOp {
        eps,
        shortcut,
        stats: slot.clone(),
    };
    let params = Tensor::cat(&[gamma, beta], 0)?;
    let y = xs
        .contiguous()?
        .apply_op3(&residual.contiguous()?, &params, op)?;
    let (mean, var) = stats_tensors(&slot, xs)?;
    Ok((y, mean, var))
}

/// The same computation as [`batch_norm_train`] from candle's differentiable
/// ops, on any device (the reference the kernel is tested against).
pub fn batch_norm_train_candle(
    xs: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (_, c, _, _) = xs.dims4()?;
    let mean = xs.mean_keepdim((0, 2, 3))?;
    let centred = xs.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim((0, 2, 3))?;
    let normed = centred.broadcast_div(&(&var + eps)?.sqrt()?)?;
    let y = normed
        .broadcast_mul(&gamma.reshape((1, c, 1, 1))?)?
        .broadcast_add(&beta.reshape((1, c, 1, 1))?)?;
    let y = if relu { y.relu()? } else { y };
    Ok((y, mean.flatten_all()?.detach(), var.flatten_all()?.detach()))
}

/// The same computation as [`batch_norm_add_relu_train`] from candle's
/// differentiable ops, on any device.
pub fn batch_norm_add_relu_train_candle(
    xs: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    residual: &Tensor,
    shortcut: Shortcut,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (y, mean, var) = batch_norm_train_candle(xs, gamma, beta, eps, false)?;
    let r = shortcut.apply_candle(residual, xs.dims())?;
    Ok(((y + r)?.relu()?, mean, var))
}
