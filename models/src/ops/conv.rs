//! 2-D convolution on the CPU as candle custom ops: forward, input gradient and
//! weight gradient, by im2col + GEMM (a direct kernel for depthwise layers),
//! parallel over the batch.
//!
//! With `x` of shape `[N, C, H, W]`, `w` of shape `[O, C/g, KH, KW]`, stride
//! `s`, padding `p`, dilation `d` and `g` groups:
//!
//! ```text
//! y[n, o, i, j] = Σ_{c ∈ group(o)} Σ_{a, b} w[o, c, a, b] · x[n, c, i·s + a·d − p, j·s + b·d − p]
//! ```
//! (`x` is 0 outside the image). The per-sample, per-group product is
//! `Y_g (O/g × P) = W_g (O/g × K) · col_g (K × P)` with `K = C/g·KH·KW`,
//! `P = OH·OW` and `col` the im2col matrix. Its gradients are
//! `∂W_g = Σ_n ∂Y_g · col_gᵀ` and `∂col_g = W_gᵀ · ∂Y_g`, scattered back
//! into `∂x` by col2im.
//!
//! Every sample is processed by one thread with a single-threaded GEMM, so the
//! result does not depend on the batch it was computed in nor on the number of
//! threads; the weight gradient sums per-chunk partials in a fixed order.

use std::cell::RefCell;

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{matmul, MatMut, MatRef};
use super::{contiguous_f32, cpu_f32, simd, valid_range};

/// The batch is cut into at most this many chunks for the weight and bias
/// gradients, each with its own accumulator. A constant (not the thread
/// count) so that the summation order, hence every bit of the result, is the
/// same on any number of threads.
const WEIGHT_GRAD_CHUNKS: usize = 16;

/// Floats the per-chunk weight-gradient accumulators may hold together
/// (32 MB): large layers get fewer chunks (at least 2).
const WEIGHT_GRAD_BUDGET: usize = 8 << 20;

/// Chunks of the batch for a weight gradient of `w_len` floats; depends on
/// the layer only, never on the machine.
fn weight_grad_chunks(w_len: usize) -> usize {
    (WEIGHT_GRAD_BUDGET / w_len.max(1)).clamp(2, WEIGHT_GRAD_CHUNKS)
}

thread_local! {
    /// Per-thread scratch memory of the kernels (im2col matrices and the
    /// like), kept between calls: a fresh zero-filled buffer per task cost a
    /// `memset` of every im2col matrix.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` floats of this thread's scratch memory, whose contents
/// are left over from earlier calls: `f` must write what it reads. (A nested
/// call gets a fresh buffer.)
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0f32; len]),
    })
}

/// Hyper-parameters of a convolution, as in `candle_nn::Conv2dConfig`
/// (same value on both axes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvParams {
    pub padding: usize,
    pub stride: usize,
    pub dilation: usize,
    pub groups: usize,
}

impl From<&candle_nn::Conv2dConfig> for ConvParams {
    fn from(cfg: &candle_nn::Conv2dConfig) -> Self {
        Self {
            padding: cfg.padding,
            stride: cfg.stride,
            dilation: cfg.dilation,
            groups: cfg.groups,
        }
    }
}

/// Every size of one convolution, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvShape {
    batch: usize,
    in_c: usize,
    in_h: usize,
    in_w: usize,
    out_c: usize,
    k_h: usize,
    k_w: usize,
    out_h: usize,
    out_w: usize,
    p: ConvParams,
}

impl ConvShape {
    /// Sizes for an input of dims `x` (`[N, C, H, W]`) and a weight of dims
    /// `w` (`[O, C/g, KH, KW]`); an error names the first inconsistency.
    pub(crate) fn new(x: &[usize], w: &[usize], p: ConvParams) -> Result<Self> {
        let (&[batch, in_c, in_h, in_w], &[out_c, in_cg, k_h, k_w]) = (x, w) else {
            bail!("conv2d: expected a 4-d input and a 4-d weight, got {x:?} and {w:?}")
        };
        if p.stride == 0 || p.dilation == 0 || p.groups == 0 {
            bail!("conv2d: stride, dilation and groups must be ≥ 1, got {p:?}")
        }
        if in_cg == 0 || out_c == 0 || k_h == 0 || k_w == 0 {
            bail!("conv2d: empty weight {w:?}")
        }
        if in_c != in_cg * p.groups || out_c % p.groups != 0 {
            bail!(
                "conv2d: input channels {in_c} and output channels {out_c} must be \
                 {} groups of weight {w:?}",
                p.groups
            )
        }
        let span_h = p.dilation * (k_h - 1) + 1;
        let span_w = p.dilation * (k_w - 1) + 1;
        if in_h + 2 * p.padding < span_h || in_w + 2 * p.padding < span_w {
            bail!(
                "conv2d: the {k_h}x{k_w} kernel (dilation {}) does not fit the padded \
                 {in_h}x{in_w} input (padding {})",
                p.dilation,
                p.padding
            )
        }
        Ok(Self {
            batch,
            in_c,
            in_h,
            in_w,
            out_c,
            k_h,
            k_w,
            out_h: (in_h + 2 * p.padding - span_h) / p.stride + 1,
            out_w: (in_w + 2 * p.padding - span_w) / p.stride + 1,
            p,
        })
    }

    /// `[N, O, OH, OW]`.
    pub(crate) fn out_dims(&self) -> [usize; 4] {
        [self.batch, self.out_c, self.out_h, self.out_w]
    }

    pub(crate) fn in_dims(&self) -> [usize; 4] {
        [self.batch, self.in_c, self.in_h, self.in_w]
    }

    pub(crate) fn weight_dims(&self) -> [usize; 4] {
        [self.out_c, self.in_cg(), self.k_h, self.k_w]
    }

    fn in_cg(&self) -> usize {
        self.in_c / self.p.groups
    }

    fn out_cg(&self) -> usize {
        self.out_c / self.p.groups
    }

    /// Rows of the im2col matrix of one group, `C/g·KH·KW`.
    fn k(&self) -> usize {
        self.in_cg() * self.k_h * self.k_w
    }

    /// Output positions per channel, `OH·OW`.
    fn positions(&self) -> usize {
        self.out_h * self.out_w
    }

    fn in_sample(&self) -> usize {
        self.in_c * self.in_h * self.in_w
    }

    fn out_sample(&self) -> usize {
        self.out_c * self.positions()
    }

    /// 1×1, stride 1, no padding: the input of a group already is its im2col matrix.
    fn pointwise(&self) -> bool {
        self.k_h == 1 && self.k_w == 1 && self.p.stride == 1 && self.p.padding == 0
    }

    /// One input channel per group (and more than one group): a direct kernel
    /// beats tiny GEMMs.
    fn depthwise(&self) -> bool {
        self.p.groups > 1 && self.in_cg() == 1
    }

    /// Length of the im2col buffer (0 when none is needed).
    fn col_len(&self) -> usize {
        if self.pointwise() || self.depthwise() {
            0
        } else {
            self.k() * self.positions()
        }
    }

    /// Column offset into the input row of kernel column `b`, as a signed shift.
    fn shift_w(&self, b: usize) -> isize {
        (b * self.p.dilation) as isize - self.p.padding as isize
    }

    /// Input row read by output row `i` and kernel row `a`, if inside the image.
    fn in_row(&self, i: usize, a: usize) -> Option<usize> {
        let r = (i * self.p.stride + a * self.p.dilation) as isize - self.p.padding as isize;
        (r >= 0 && (r as usize) < self.in_h).then_some(r as usize)
    }
}

/// Output positions `j ∈ [lo, hi)` of a row whose input column
/// `j·s + shift` lies inside `[0, in_w)`.
fn col_range(shape: &ConvShape, shift: isize) -> (usize, usize) {
    valid_range(shift, shape.p.stride, shape.in_w, shape.out_w)
}

/// im2col of one group of one sample: `col[(c, a, b), (i, j)] = x[c, i·s + a·d − p, j·s + b·d − p]`.
fn im2col(shape: &ConvShape, x: &[f32], col: &mut [f32]) {
    im2col_ld(shape, x, col, shape.positions());
}

/// [`im2col`] into rows `ld` floats apart (`ld ≥ OH·OW`): row `r` is
/// `col[r·ld..r·ld + OH·OW]`, the rest of the row is left as it is.
fn im2col_ld(shape: &ConvShape, x: &[f32], col: &mut [f32], ld: usize) {
    simd(
        #[inline(always)]
        || im2col_ld_body(shape, x, col, ld),
    )
}

#[inline(always)]
fn im2col_ld_body(shape: &ConvShape, x: &[f32], col: &mut [f32], ld: usize) {
    let (ow, plane, s) = (shape.out_w, shape.in_h * shape.in_w, shape.p.stride);
    let pos = shape.positions();
    let rows = col.chunks_mut(ld).map(|r| &mut r[..pos]);
    let taps = (0..shape.in_cg())
        .flat_map(|c| (0..shape.k_h).flat_map(move |a| (0..shape.k_w).map(move |b| (c, a, b))));
    for (row, (c, a, b)) in rows.zip(taps) {
        let image = &x[c * plane..(c + 1) * plane];
        let shift = shape.shift_w(b);
        let (lo, hi) = col_range(shape, shift);
        if let Some(flat) = FlatTap::new(shape, a, shift, lo, hi) {
            // One long copy of the shifted plane, then zeros where the
            // padding is (rows outside the image, and the columns the flat
            // copy wrapped into from the neighbouring rows).
            if flat.empty() {
                row.fill(0.0);
                continue;
            }
            row[..flat.t0].fill(0.0);
            row[flat.t0..flat.t1].copy_from_slice(&image[flat.src(flat.t0)..flat.src(flat.t1)]);
            row[flat.t1..].fill(0.0);
            flat.zero_wrapped_columns(row);
            continue;
        }
        for (i, out) in row.chunks_exact_mut(ow).enumerate() {
            let Some(r) = shape.in_row(i, a) else {
                out.fill(0.0);
                continue;
            };
            let src = &image[r * shape.in_w..(r + 1) * shape.in_w];
            out[..lo].fill(0.0);
            out[hi..].fill(0.0);
            if lo < hi {
                let start = (lo * s) as isize + shift;
                let src = &src[start as usize..];
                if s == 1 {
                    out[lo..hi].copy_from_slice(&src[..hi - lo]);
                } else {
                    for (o, v) in out[lo..hi].iter_mut().zip(src.iter().step_by(s)) {
                        *o = *v;
                    }
                }
            }
        }
    }
}

/// The rows of a stride-1 convolution whose output is as wide as its input
/// ("same" padding along the width): there an im2col row is the input plane
/// shifted by a constant `fs` (`col[t] = x[t + fs]`) wherever the tap lies
/// inside the image, so it is copied (or, in col2im, added) as one long run
/// instead of one output row at a time, which on 8- to 32-wide maps was a
/// function call per 8 to 32 floats.
struct FlatTap {
    /// The flat shift from output position to input position.
    fs: isize,
    /// Output positions `[t0, t1)` whose shifted input lies inside the plane.
    t0: usize,
    t1: usize,
    /// Output width and the valid columns `[lo, hi)` of a row.
    ow: usize,
    lo: usize,
    hi: usize,
    /// Output rows `[rlo, rhi)` whose tap row lies inside the image.
    rlo: usize,
    rhi: usize,
}

impl FlatTap {
    /// The flat form of tap row `a` (column shift `shift`, valid columns
    /// `[lo, hi)`), when the layer has one.
    #[inline(always)]
    fn new(shape: &ConvShape, a: usize, shift: isize, lo: usize, hi: usize) -> Option<Self> {
        let (ow, iw) = (shape.out_w, shape.in_w);
        if shape.p.stride != 1 || ow != iw {
            return None;
        }
        let row_shift = (a * shape.p.dilation) as isize - shape.p.padding as isize;
        let (rlo, rhi) = valid_range(row_shift, 1, shape.in_h, shape.out_h);
        let fs = row_shift * iw as isize + shift;
        let plane = (shape.in_h * iw) as isize;
        let t0 = ((rlo * ow) as isize).max(-fs).max(0);
        let t1 = ((rhi * ow) as isize).min(plane - fs).max(t0);
        Some(Self {
            fs,
            t0: t0 as usize,
            t1: t1 as usize,
            ow,
            lo,
            hi,
            rlo,
            rhi,
        })
    }

    /// No output position reads inside the image.
    #[inline(always)]
    fn empty(&self) -> bool {
        self.rlo >= self.rhi || self.lo >= self.hi || self.t0 >= self.t1
    }

    /// The input position of output position `t` (`t0 ≤ t ≤ t1`).
    #[inline(always)]
    fn src(&self, t: usize) -> usize {
        (t as isize + self.fs) as usize
    }

    /// Zeros the columns outside `[lo, hi)` of the valid rows, column by
    /// column: a `fill` of each row's one or two padding floats became two
    /// `memset` calls per row, which took most of the time of im2col.
    #[inline(always)]
    fn zero_wrapped_columns(&self, row: &mut [f32]) {
        let rows = &mut row[self.rlo * self.ow..self.rhi * self.ow];
        for j in (0..self.lo).chain(self.hi..self.ow) {
            for v in rows[j..].iter_mut().step_by(self.ow) {
                *v = 0.0;
            }
        }
    }
}

/// col2im of one group of one sample: the transpose of [`im2col`], adding
/// into `dx`. `col` is scratch: its entries that read the padding are zeroed.
fn col2im(shape: &ConvShape, col: &mut [f32], dx: &mut [f32]) {
    simd(
        #[inline(always)]
        || col2im_body(shape, col, dx),
    )
}

#[inline(always)]
fn col2im_body(shape: &ConvShape, col: &mut [f32], dx: &mut [f32]) {
    let (ow, plane, s) = (shape.out_w, shape.in_h * shape.in_w, shape.p.stride);
    let rows = col.chunks_exact_mut(shape.positions());
    let taps = (0..shape.in_cg())
        .flat_map(|c| (0..shape.k_h).flat_map(move |a| (0..shape.k_w).map(move |b| (c, a, b))));
    for (row, (c, a, b)) in rows.zip(taps) {
        let image = &mut dx[c * plane..(c + 1) * plane];
        let shift = shape.shift_w(b);
        let (lo, hi) = col_range(shape, shift);
        if let Some(flat) = FlatTap::new(shape, a, shift, lo, hi) {
            // The wrapped columns are zeroed first, so that adding the
            // whole run adds nothing to the neighbouring rows (x + 0 = x).
            if flat.empty() {
                continue;
            }
            flat.zero_wrapped_columns(row);
            let dst = &mut image[flat.src(flat.t0)..flat.src(flat.t1)];
            for (d, g) in dst.iter_mut().zip(&row[flat.t0..flat.t1]) {
                *d += *g;
            }
            continue;
        }
        if lo >= hi {
            continue;
        }
        for (i, grad) in row.chunks_exact(ow).enumerate() {
            let Some(r) = shape.in_row(i, a) else {
                continue;
            };
            let start = (lo * s) as isize + shift;
            let dst = &mut image[r * shape.in_w + start as usize..(r + 1) * shape.in_w];
            if s == 1 {
                for (d, g) in dst.iter_mut().zip(&grad[lo..hi]) {
                    *d += *g;
                }
            } else {
                for (d, g) in dst.iter_mut().step_by(s).zip(&grad[lo..hi]) {
                    *d += *g;
                }
            }
        }
    }
}

/// `dst[k] += alpha · src[k·s]`. Stride 1, the common case, gets a plain
/// zip (which vectorises; `step_by` does not).
#[inline(always)]
fn gather_axpy(dst: &mut [f32], src: &[f32], s: usize, alpha: f32) {
    if s == 1 {
        for (d, v) in dst.iter_mut().zip(src) {
            *d += alpha * *v;
        }
    } else {
        for (d, v) in dst.iter_mut().zip(src.iter().step_by(s)) {
            *d += alpha * *v;
        }
    }
}

/// `dst[k·s] += alpha · src[k]`.
#[inline(always)]
fn scatter_axpy(dst: &mut [f32], src: &[f32], s: usize, alpha: f32) {
    if s == 1 {
        for (d, v) in dst.iter_mut().zip(src) {
            *d += alpha * *v;
        }
    } else {
        for (d, v) in dst.iter_mut().step_by(s).zip(src) {
            *d += alpha * *v;
        }
    }
}

/// `Σ_k a[k] · b[k·s]`, summed in [`lane_sum`]'s fixed order for stride 1.
#[inline(always)]
fn gather_dot(a: &[f32], b: &[f32], s: usize) -> f32 {
    if s == 1 {
        let mut lanes = [0f32; 8];
        let (ca, cb) = (a.chunks_exact(8), b[..a.len()].chunks_exact(8));
        let tail: f32 = ca
            .remainder()
            .iter()
            .zip(cb.remainder())
            .map(|(x, y)| x * y)
            .sum();
        for (x, y) in ca.zip(cb) {
            for ((l, x), y) in lanes.iter_mut().zip(x).zip(y) {
                *l += x * y;
            }
        }
        lanes.iter().sum::<f32>() + tail
    } else {
        a.iter().zip(b.iter().step_by(s)).map(|(x, y)| x * y).sum()
    }
}

/// Forward pass of one sample through a depthwise layer (`C/g = 1`, `O/g`
/// output channels per input channel).
fn depthwise_forward(shape: &ConvShape, x: &[f32], w: &[f32], y: &mut [f32]) {
    let (plane, taps, mult, s) = (
        shape.in_h * shape.in_w,
        shape.k_h * shape.k_w,
        shape.out_cg(),
        shape.p.stride,
    );
    for (o, out) in y.chunks_exact_mut(shape.positions()).enumerate() {
        let image = &x[(o / mult) * plane..(o / mult + 1) * plane];
        let kernel = &w[o * taps..(o + 1) * taps];
        out.fill(0.0);
        for a in 0..shape.k_h {
            for b in 0..shape.k_w {
                let wv = kernel[a * shape.k_w + b];
                let shift = shape.shift_w(b);
                let (lo, hi) = col_range(shape, shift);
                if lo >= hi {
                    continue;
                }
                for (i, row) in out.chunks_exact_mut(shape.out_w).enumerate() {
                    let Some(r) = shape.in_row(i, a) else {
                        continue;
                    };
                    let start = r * shape.in_w + ((lo * s) as isize + shift) as usize;
                    let src = &image[start..(r + 1) * shape.in_w];
                    gather_axpy(&mut row[lo..hi], src, s, wv);
                }
            }
        }
    }
}

/// Input gradient of one sample through a depthwise layer, added into `dx`.
fn depthwise_input_grad(shape: &ConvShape, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let (plane, taps, mult, s) = (
        shape.in_h * shape.in_w,
        shape.k_h * shape.k_w,
        shape.out_cg(),
        shape.p.stride,
    );
    for (o, grad) in dy.chunks_exact(shape.positions()).enumerate() {
        let image = &mut dx[(o / mult) * plane..(o / mult + 1) * plane];
        let kernel = &w[o * taps..(o + 1) * taps];
        for a in 0..shape.k_h {
            for b in 0..shape.k_w {
                let wv = kernel[a * shape.k_w + b];
                let shift = shape.shift_w(b);
                let (lo, hi) = col_range(shape, shift);
                if lo >= hi {
                    continue;
                }
                for (i, row) in grad.chunks_exact(shape.out_w).enumerate() {
                    let Some(r) = shape.in_row(i, a) else {
                        continue;
                    };
                    let start = r * shape.in_w + ((lo * s) as isize + shift) as usize;
                    let dst = &mut image[start..(r + 1) * shape.in_w];
                    scatter_axpy(dst, &row[lo..hi], s, wv);
                }
            }
        }
    }
}

/// Weight gradient of one sample through a depthwise layer, added into `dw`.
fn depthwise_weight_grad(shape: &ConvShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let (plane, taps, mult, s) = (
        shape.in_h * shape.in_w,
        shape.k_h * shape.k_w,
        shape.out_cg(),
        shape.p.stride,
    );
    for (o, grad) in dy.chunks_exact(shape.positions()).enumerate() {
        let image = &x[(o / mult) * plane..(o / mult + 1) * plane];
        let kernel = &mut dw[o * taps..(o + 1) * taps];
        for a in 0..shape.k_h {
            for b in 0..shape.k_w {
                let shift = shape.shift_w(b);
                let (lo, hi) = col_range(shape, shift);
                if lo >= hi {
                    continue;
                }
                let mut sum = 0f32;
                for (i, row) in grad.chunks_exact(shape.out_w).enumerate() {
                    let Some(r) = shape.in_row(i, a) else {
                        continue;
                    };
                    let start = r * shape.in_w + ((lo * s) as isize + shift) as usize;
                    let src = &image[start..(r + 1) * shape.in_w];
                    sum += gather_dot(&row[lo..hi], src, s);
                }
                kernel[a * shape.k_w + b] += sum;
            }
        }
    }
}

/// `y = conv(x, w) (+ b)` for the whole batch.
pub(crate) fn forward(shape: &ConvShape, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let mut y = vec![0f32; shape.batch * shape.out_sample()];
    let (xs, ys) = (shape.in_sample(), shape.out_sample());
    let (k, og, pos) = (shape.k(), shape.out_cg(), shape.positions());
    let cg_len = shape.in_cg() * shape.in_h * shape.in_w;
    y.par_chunks_mut(ys)
        .zip(x.par_chunks(xs))
        .for_each(|(y, x)| {
            with_scratch(shape.col_len(), |col| {
                if shape.depthwise() {
                    depthwise_forward(shape, x, w, y);
                    if let Some(bias) = bias {
                        for (row, b) in y.chunks_exact_mut(pos).zip(bias) {
                            row.iter_mut().for_each(|v| *v += *b);
                        }
                    }
                    return;
                }
                for g in 0..shape.p.groups {
                    let xg = &x[g * cg_len..(g + 1) * cg_len];
                    let b = if shape.pointwise() {
                        MatRef::row_major(xg, k, pos)
                    } else {
                        im2col(shape, xg, col);
                        MatRef::row_major(col, k, pos)
                    };
                    matmul(
                        MatMut::row_major(&mut y[g * og * pos..(g + 1) * og * pos], og, pos),
                        MatRef::row_major(&w[g * og * k..(g + 1) * og * k], og, k),
                        b,
                        false,
                    );
                }
                // The bias is added to the sample's product while it is in
                // cache (filling the output with it first and accumulating
                // made the product read the output: 10 % slower).
                if let Some(bias) = bias {
                    for (row, b) in y.chunks_exact_mut(pos).zip(bias) {
                        row.iter_mut().for_each(|v| *v += *b);
                    }
                }
            })
        });
    y
}

/// `∂x` for the whole batch from `∂y` and `w` (the tests' reference for
/// [`backward_into`]).
#[cfg(test)]
pub(crate) fn input_grad(shape: &ConvShape, dy: &[f32], w: &[f32]) -> Vec<f32> {
    let mut dx = vec![0f32; shape.batch * shape.in_sample()];
    input_grad_into(shape, dy, w, &mut dx);
    dx
}

/// `dx += ∂x` for the whole batch from `∂y` and `w` (`dx` holds `N·C·H·W`).
pub(crate) fn input_grad_into(shape: &ConvShape, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let (xs, ys) = (shape.in_sample(), shape.out_sample());
    dx.par_chunks_mut(xs)
        .zip(dy.par_chunks(ys))
        .for_each(|(dx, dy)| {
            with_scratch(shape.col_len(), |col| {
                input_grad_sample(shape, dy, w, dx, col)
            })
        });
}

/// `dx += ∂x` of one sample: `∂col = Wᵀ·∂Y` scattered back by col2im
/// (`col` holds at least [`ConvShape::col_len`] floats). (Computing it
/// instead as the convolution of `∂y` with the flipped kernel, which writes
/// each `∂x` once, measured 6 % faster on ResNet-20's 16-channel 32×32 layers
/// and 10–20 % slower on its 32- and 64-channel ones.)
fn input_grad_sample(shape: &ConvShape, dy: &[f32], w: &[f32], dx: &mut [f32], col: &mut [f32]) {
    if shape.depthwise() {
        return depthwise_input_grad(shape, dy, w, dx);
    }
    let (k, og, pos) = (shape.k(), shape.out_cg(), shape.positions());
    let cg_len = shape.in_cg() * shape.in_h * shape.in_w;
    for g in 0..shape.p.groups {
        let wg = MatRef::row_major(&w[g * og * k..(g + 1) * og * k], og, k).t();
        let dyg = MatRef::row_major(&dy[g * og * pos..(g + 1) * og * pos], og, pos);
        let dxg = &mut dx[g * cg_len..(g + 1) * cg_len];
        if shape.pointwise() {
            matmul(MatMut::row_major(dxg, k, pos), wg, dyg, true);
        } else {
            let col = &mut col[..k * pos];
            matmul(MatMut::row_major(col, k, pos), wg, dyg, false);
            col2im(shape, col, dxg);
        }
    }
}

/// How the batch is cut for the weight and bias gradients.
#[derive(Clone, Copy, Debug)]
struct GradPlan {
    /// Samples per chunk (each chunk has its own accumulators).
    per_chunk: usize,
    /// Samples per weight-gradient product.
    per_gemm: usize,
    /// Row length of the batched im2col matrix, `per_gemm·OH·OW`.
    ld: usize,
    /// Floats of the batched im2col matrix (0 when the input is used as it is).
    col_len: usize,
    /// Floats of the batched `∂Y` rows (0 for one sample per product).
    dyb_len: usize,
}

impl GradPlan {
    fn new(shape: &ConvShape) -> Self {
        let w_len = shape.out_c * shape.k();
        let pos = shape.positions();
        let per_chunk = shape.batch.div_ceil(weight_grad_chunks(w_len)).max(1);
        // Samples per product: maps under 16×16 are multiplied several at a
        // time, side by side in `col` (and their `∂Y` rows copied side by
        // side), so that the accumulator is read and written once per ~256
        // positions. (Batching up to 1,024 positions made the 32→64 16×16
        // layer's weight gradient 40 % slower: the wider `col` no longer fits
        // in the L2 cache and the `∂Y` rows must be copied.)
        let per_gemm = (256 / pos.max(1)).clamp(1, per_chunk);
        let ld = per_gemm * pos;
        let batched = !shape.depthwise() && (per_gemm > 1 || !shape.pointwise());
        Self {
            per_chunk,
            per_gemm,
            ld,
            col_len: if batched { shape.k() * ld } else { 0 },
            dyb_len: if per_gemm > 1 && !shape.depthwise() {
                shape.out_cg() * ld
            } else {
                0
            },
        }
    }
}

/// Adds the weight gradient of up to `per_gemm` samples (`x`, `dy`) into
/// `dw`, group by group as `∂W_gᵀ` (K × O/g), except for depthwise layers,
/// whose kernel writes `∂w` in its own layout. `scratch` holds
/// `col_len + dyb_len` floats.
///
/// `∂W_gᵀ (K × O/g) += col_g · ∂Y_gᵀ`: with the output channels along the
/// accumulator's contiguous axis, the `gemm` crate's microkernel runs along
/// them and reads `col_g` (K × P, positions contiguous) in place.
/// Accumulating `∂W_g` itself would make it pack `col_g` for every sample,
/// reading `K` rows `P` floats apart (4 KiB at 32×32, where the reads of a
/// column alias in the L1 cache), which cost five times the forward pass.
fn weight_grad_group(
    shape: &ConvShape,
    plan: &GradPlan,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    scratch: &mut [f32],
) {
    let (xs, ys) = (shape.in_sample(), shape.out_sample());
    if shape.depthwise() {
        for (x, dy) in x.chunks_exact(xs).zip(dy.chunks_exact(ys)) {
            depthwise_weight_grad(shape, x, dy, dw);
        }
        return;
    }
    let (k, og, pos, ld) = (shape.k(), shape.out_cg(), shape.positions(), plan.ld);
    let cg_len = shape.in_cg() * shape.in_h * shape.in_w;
    let (col, dyb) = scratch.split_at_mut(plan.col_len);
    let width = (x.len() / xs) * pos;
    for g in 0..shape.p.groups {
        if plan.col_len > 0 {
            for (i, xi) in x.chunks_exact(xs).enumerate() {
                im2col_ld(
                    shape,
                    &xi[g * cg_len..(g + 1) * cg_len],
                    &mut col[i * pos..],
                    ld,
                );
            }
        }
        let colg = if plan.col_len > 0 {
            MatRef::strided(col, k, width, ld, 1)
        } else {
            MatRef::row_major(&x[g * cg_len..(g + 1) * cg_len], k, pos)
        };
        let dyg = if plan.dyb_len > 0 {
            for (i, dyi) in dy.chunks_exact(ys).enumerate() {
                let src = &dyi[g * og * pos..(g + 1) * og * pos];
                for (o, row) in src.chunks_exact(pos).enumerate() {
                    dyb[o * ld + i * pos..][..pos].copy_from_slice(row);
                }
            }
            MatRef::strided(dyb, og, width, ld, 1)
        } else {
            MatRef::row_major(&dy[g * og * pos..(g + 1) * og * pos], og, pos)
        };
        matmul(
            MatMut::row_major(&mut dw[g * og * k..(g + 1) * og * k], k, og).t(),
            dyg,
            colg.t(),
            true,
        );
    }
}

/// Adds `Σ_p ∂y[o, p]` of the samples `dy` into `db`.
fn bias_grad_add(shape: &ConvShape, dy: &[f32], db: &mut [f32]) {
    for sample in dy.chunks_exact(shape.out_sample()) {
        for (d, row) in db.iter_mut().zip(sample.chunks_exact(shape.positions())) {
            *d += lane_sum(row);
        }
    }
}

/// Sums per-chunk partials in chunk order.
fn sum_partials(parts: impl IntoIterator<Item = Vec<f32>>, len: usize) -> Vec<f32> {
    let mut parts = parts.into_iter();
    let mut acc = parts.next().unwrap_or_else(|| vec![0f32; len]);
    for part in parts {
        for (a, b) in acc.iter_mut().zip(&part) {
            *a += *b;
        }
    }
    acc
}

/// `∂W_gᵀ` (K × O/g) group by group → `∂W` (O × C/g·KH·KW); depthwise
/// accumulators already are `∂W`.
fn untranspose_weight_grad(shape: &ConvShape, acc: Vec<f32>) -> Vec<f32> {
    if shape.depthwise() {
        return acc;
    }
    let (k, og) = (shape.k(), shape.out_cg());
    let mut dw = vec![0f32; acc.len()];
    for (dst, src) in dw.chunks_exact_mut(og * k).zip(acc.chunks_exact(og * k)) {
        for (kk, row) in src.chunks_exact(og).enumerate() {
            for (o, v) in row.iter().enumerate() {
                dst[o * k + kk] = *v;
            }
        }
    }
    dw
}

/// `∂w` summed over the batch from `x` and `∂y` (the tests' reference for
/// [`backward_into`]).
#[cfg(test)]
pub(crate) fn weight_grad(shape: &ConvShape, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let w_len = shape.out_c * shape.k();
    let (xs, ys) = (shape.in_sample(), shape.out_sample());
    let plan = GradPlan::new(shape);
    let partials: Vec<Vec<f32>> = x
        .par_chunks(plan.per_chunk * xs)
        .zip(dy.par_chunks(plan.per_chunk * ys))
        .map(|(x, dy)| {
            let mut dw = vec![0f32; w_len];
            with_scratch(plan.col_len + plan.dyb_len, |scratch| {
                for (x, dy) in x
                    .chunks(plan.per_gemm * xs)
                    .zip(dy.chunks(plan.per_gemm * ys))
                {
                    weight_grad_group(shape, &plan, x, dy, &mut dw, scratch);
                }
            });
            dw
        })
        .collect();
    untranspose_weight_grad(shape, sum_partials(partials, w_len))
}

/// `∂b[o] = Σ_n Σ_p ∂y[n, o, p]`, per-chunk partials (the chunks of the
/// weight gradient) summed in a fixed order.
fn bias_grad(shape: &ConvShape, dy: &[f32]) -> Vec<f32> {
    let per_chunk = GradPlan::new(shape).per_chunk;
    let partials: Vec<Vec<f32>> = dy
        .par_chunks(per_chunk * shape.out_sample())
        .map(|dy| {
            let mut db = vec![0f32; shape.out_c];
            bias_grad_add(shape, dy, &mut db);
            db
        })
        .collect();
    sum_partials(partials, shape.out_c)
}

/// The gradients of a convolution in one pass over the batch: `dx += ∂x`
/// when `dx` is given, `∂w`, and `∂b` when `with_bias`. Each chunk of
/// samples computes its input gradients and adds its weight and bias
/// gradients while its `∂y` is still in the cache; the results are the
/// same bits as [`input_grad_into`], [`weight_grad`] and [`bias_grad`].
pub(crate) fn backward_into(
    shape: &ConvShape,
    x: &[f32],
    dy: &[f32],
    w: &[f32],
    dx: Option<&mut [f32]>,
    with_bias: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let w_len = shape.out_c * shape.k();
    let (xs, ys) = (shape.in_sample(), shape.out_sample());
    let plan = GradPlan::new(shape);
    let chunks = shape.batch.div_ceil(plan.per_chunk);
    let dx_chunks: Vec<Option<&mut [f32]>> = match dx {
        Some(dx) => dx.chunks_mut(plan.per_chunk * xs).map(Some).collect(),
        None => (0..chunks).map(|_| None).collect(),
    };
    let scratch_len = (plan.col_len + plan.dyb_len).max(shape.col_len());
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx_chunks
        .into_par_iter()
        .zip(x.par_chunks(plan.per_chunk * xs))
        .zip(dy.par_chunks(plan.per_chunk * ys))
        .map(|((mut dx, x), dy)| {
            let mut dw = vec![0f32; w_len];
            let mut db = vec![0f32; if with_bias { shape.out_c } else { 0 }];
            with_scratch(scratch_len, |scratch| {
                let groups = x
                    .chunks(plan.per_gemm * xs)
                    .zip(dy.chunks(plan.per_gemm * ys));
                for (gi, (xg, dyg)) in groups.enumerate() {
                    if let Some(dx) = dx.as_deref_mut() {
                        let dx = &mut dx[gi * plan.per_gemm * xs..][..xg.len()];
                        for (dx, dy) in dx.chunks_exact_mut(xs).zip(dyg.chunks_exact(ys)) {
                            input_grad_sample(shape, dy, w, dx, scratch);
                        }
                    }
                    weight_grad_group(shape, &plan, xg, dyg, &mut dw, scratch);
                }
            });
            if with_bias {
                bias_grad_add(shape, dy, &mut db);
            }
            (dw, db)
        })
        .collect();
    let (dws, dbs): (Vec<_>, Vec<_>) = partials.into_iter().unzip();
    let dw = untranspose_weight_grad(shape, sum_partials(dws, w_len));
    let db = with_bias.then(|| sum_partials(dbs, shape.out_c));
    (dw, db)
}

/// Sum of `v` over 8 interleaved lanes (vectorises, unlike a sequential sum),
/// in an order fixed by the length alone.
fn lane_sum(v: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l += *x;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Forward custom op: `(x, w) → y` or `(x, w, b) → y`.
pub(crate) struct Conv2dOp {
    pub(crate) params: ConvParams,
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "kdprune-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = ConvShape::new(l1.dims(), l2.dims(), self.params)?;
        let x = contiguous_f32(s1, l1, "conv2d input")?;
        let w = contiguous_f32(s2, l2, "conv2d weight")?;
        let y = forward(&shape, x, w, None);
        Ok((CpuStorage::F32(y), Shape::from(shape.out_dims().to_vec())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = conv_grads(self.params, x, w, None, dy)?;
        Ok((dx, dw))
    }
}

/// The gradients of `conv(x, w) (+ b)` that candle asks for (the tensors
/// that track their op), from `∂y`, computed in one pass by [`backward_into`].
/// A data batch needs no gradient: skipping it saves a third of the work of
/// the first layer.
#[allow(clippy::type_complexity)]
fn conv_grads(
    params: ConvParams,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    dy: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let shape = ConvShape::new(x.dims(), w.dims(), params)?;
    if dy.dims() != shape.out_dims() {
        bail!(
            "conv2d backward: gradient {:?} for an output of {:?}",
            dy.dims(),
            shape.out_dims()
        )
    }
    let (want_dx, want_dw) = (x.track_op(), w.track_op());
    let want_db = b.is_some_and(|b| b.track_op());
    let (x, w, dy) = (x.contiguous()?, w.contiguous()?, dy.contiguous()?);
    let (sx, lx) = x.storage_and_layout();
    let (sw, lw) = w.storage_and_layout();
    let (sd, ld) = dy.storage_and_layout();
    let xv = cpu_f32(&sx, lx, "conv2d backward input")?;
    let wv = cpu_f32(&sw, lw, "conv2d backward weight")?;
    let dyv = cpu_f32(&sd, ld, "conv2d backward gradient")?;
    let mut dx = want_dx.then(|| vec![0f32; shape.batch * shape.in_sample()]);
    let (dw, db) = if want_dw {
        let (dw, db) = backward_into(&shape, xv, dyv, wv, dx.as_deref_mut(), want_db);
        (Some(dw), db)
    } else {
        if let Some(dx) = dx.as_deref_mut() {
            input_grad_into(&shape, dyv, wv, dx);
        }
        (None, want_db.then(|| bias_grad(&shape, dyv)))
    };
    let dev = x.device();
    Ok((
        dx.map(|d| Tensor::from_vec(d, shape.in_dims().to_vec(), dev))
            .transpose()?,
        dw.map(|d| Tensor::from_vec(d, shape.weight_dims().to_vec(), dev))
            .transpose()?,
        db.map(|d| Tensor::from_vec(d, shape.out_c, dev))
            .transpose()?,
    ))
}

impl CustomOp3 for Conv2dOp {
    fn name(&self) -> &'static str {
        "kdprune-conv2d-bias"
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
        let shape = ConvShape::new(l1.dims(), l2.dims(), self.params)?;
        if l3.dims() != [shape.out_c] {
            bail!(
                "conv2d: bias of shape {:?} for {} output channels",
                l3.dims(),
                shape.out_c
            )
        }
        let x = contiguous_f32(s1, l1, "conv2d input")?;
        let w = contiguous_f32(s2, l2, "conv2d weight")?;
        let b = contiguous_f32(s3, l3, "conv2d bias")?;
        let y = forward(&shape, x, w, Some(b));
        Ok((CpuStorage::F32(y), Shape::from(shape.out_dims().to_vec())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        conv_grads(self.params, x, w, Some(b), dy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(padding: usize, stride: usize, dilation: usize, groups: usize) -> ConvParams {
        ConvParams {
            padding,
            stride,
            dilation,
            groups,
        }
    }

    #[test]
    fn output_size_follows_the_usual_formula() {
        // PyTorch: floor((H + 2p − d(k−1) − 1)/s) + 1 = floor((7 + 2 − 4 − 1)/2) + 1 = 3
        let s = ConvShape::new(&[2, 4, 7, 9], &[6, 2, 3, 3], params(1, 2, 2, 2)).unwrap();
        assert_eq!(s.out_dims(), [2, 6, 3, 4]);
        assert!(ConvShape::new(&[2, 4, 7, 9], &[6, 3, 3, 3], params(1, 2, 2, 2)).is_err());
        assert!(ConvShape::new(&[2, 4, 2, 2], &[6, 4, 5, 5], params(1, 1, 1, 1)).is_err());
        assert!(ConvShape::new(&[2, 4, 2, 2], &[6, 4, 1, 1], params(0, 0, 1, 1)).is_err());
    }

    #[test]
    fn im2col_then_col2im_multiplies_by_the_tap_count() {
        // With stride 1 and "same" padding every interior pixel is read by
        // all 9 taps of a 3×3 kernel, a corner pixel by 4.
        let s = ConvShape::new(&[1, 1, 4, 4], &[1, 1, 3, 3], params(1, 1, 1, 1)).unwrap();
        let x = vec![1f32; 16];
        let mut col = vec![f32::NAN; s.col_len()];
        im2col(&s, &x, &mut col);
        let mut dx = vec![0f32; 16];
        col2im(&s, &mut col, &mut dx);
        assert_eq!(dx[0], 4.0);
        assert_eq!(dx[5], 9.0);
        assert_eq!(dx[1], 6.0);
    }

    #[test]
    fn the_one_pass_backward_gives_the_bits_of_the_separate_passes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // (x dims, w dims, padding, stride, groups): batched weight-gradient
        // products (5×5 maps), one sample per product (16×16), a pointwise
        // layer, a grouped and a depthwise one; batches that do not divide
        // into the chunks evenly.
        type Case = ([usize; 4], [usize; 4], usize, usize, usize);
        let cases: [Case; 5] = [
            ([37, 3, 5, 5], [4, 3, 3, 3], 1, 1, 1),
            ([9, 4, 16, 16], [6, 4, 3, 3], 1, 2, 1),
            ([19, 6, 7, 7], [5, 6, 1, 1], 0, 1, 1),
            ([11, 6, 9, 9], [4, 3, 3, 3], 2, 1, 2),
            ([13, 4, 8, 8], [8, 1, 3, 3], 1, 1, 4),
        ];
        for (xd, wd, pad, stride, groups) in cases {
            let shape = ConvShape::new(&xd, &wd, params(pad, stride, 1, groups)).unwrap();
            let mut fresh =
                |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1f32..1.0)).collect() };
            let x = fresh(shape.batch * shape.in_sample());
            let w = fresh(wd.iter().product());
            let dy = fresh(shape.batch * shape.out_sample());
            let base = fresh(x.len());
            let mut dx = base.clone();
            let (dw, db) = backward_into(&shape, &x, &dy, &w, Some(&mut dx), true);
            let mut want_dx = base;
            input_grad_into(&shape, &dy, &w, &mut want_dx);
            assert_eq!(dx, want_dx, "{xd:?} {wd:?}: dx");
            assert_eq!(dw, weight_grad(&shape, &x, &dy), "{xd:?} {wd:?}: dw");
            assert_eq!(db, Some(bias_grad(&shape, &dy)), "{xd:?} {wd:?}: db");
            let (dw_only, none) = backward_into(&shape, &x, &dy, &w, None, false);
            assert_eq!(dw_only, dw);
            assert!(none.is_none());
        }
    }
}

/// Timings of the kernels (the fastest of 11 runs), not tests:
/// `cargo test --release -p kdprune-models --lib -- --ignored conv_timing --nocapture --test-threads=1`.
#[cfg(test)]
mod timing {
    use super::*;

    /// The fastest of `reps` runs of `f` (after one warm-up run), in ms.
    fn fastest_ms(reps: usize, f: &mut dyn FnMut()) -> f64 {
        f();
        (0..reps)
            .map(|_| {
                let start = std::time::Instant::now();
                f();
                start.elapsed().as_secs_f64() * 1e3
            })
            .fold(f64::INFINITY, f64::min)
    }

    /// `len` deterministic values in [−0.5, 0.5).
    fn filler(len: usize, mul: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * mul) % 1000) as f32 / 1000.0 - 0.5)
            .collect()
    }

    fn same_3x3(stride: usize) -> ConvParams {
        ConvParams {
            padding: 1,
            stride,
            dilation: 1,
            groups: 1,
        }
    }

    /// The three kernels on ResNet-20's convolutions (batch 128), weighted by
    /// how often each shape occurs.
    #[test]
    #[ignore = "a timing, not a test"]
    fn conv_timing_resnet20() {
        let shapes: [(usize, usize, usize, usize, usize); 7] = [
            (0, 32, 64, 16, 1), // bench-conv's layer, not counted
            // (count, in_c, out_c, in_hw, stride)
            (1, 3, 16, 32, 1),
            (6, 16, 16, 32, 1),
            (1, 16, 32, 32, 2),
            (5, 32, 32, 16, 1),
            (1, 32, 64, 16, 2),
            (5, 64, 64, 8, 1),
        ];
        let mut total = [0f64; 3];
        for (count, c, o, hw, s) in shapes {
            let shape = ConvShape::new(&[128, c, hw, hw], &[o, c, 3, 3], same_3x3(s)).unwrap();
            let x = filler(128 * c * hw * hw, 7919);
            let w = filler(o * c * 9, 104_729);
            let dy = filler(128 * shape.out_sample(), 31);
            let tf = fastest_ms(11, &mut || {
                std::hint::black_box(forward(&shape, &x, &w, None));
            });
            let ti = fastest_ms(11, &mut || {
                std::hint::black_box(input_grad(&shape, &dy, &w));
            });
            let tw = fastest_ms(11, &mut || {
                std::hint::black_box(weight_grad(&shape, &x, &dy));
            });
            println!(
                "{c:>2}->{o:<2} {hw:>2}x{hw:<2} s{s} x{count}: fwd {tf:6.2} ms  dx {ti:6.2} ms  dw {tw:6.2} ms"
            );
            for (acc, t) in total.iter_mut().zip([tf, ti, tw]) {
                *acc += count as f64 * t;
            }
        }
        println!(
            "weighted total: fwd {:.1} ms  dx {:.1} ms  dw {:.1} ms",
            total[0], total[1], total[2]
        );
    }

    /// bench-conv's layer (32→64, 3×3, pad 1, `[128, 32, 16, 16]`) taken
    /// apart: the forward and one-pass backward kernels, and their pieces
    /// alone over the batch (im2col, the three products, col2im).
    #[test]
    #[ignore = "a timing, not a test"]
    fn conv_timing_pieces() {
        let shape = ConvShape::new(&[128, 32, 16, 16], &[64, 32, 3, 3], same_3x3(1)).unwrap();
        let (xs, ys, k, pos) = (
            shape.in_sample(),
            shape.out_sample(),
            shape.k(),
            shape.positions(),
        );
        let x = filler(128 * xs, 7919);
        let w = filler(64 * k, 104_729);
        let dy = filler(128 * ys, 31);
        // One piece, given a sample's input, its output gradient and scratch.
        type Piece<'a> = &'a (dyn Fn(&[f32], &[f32], &mut [f32]) + Sync);
        let per_sample = |f: Piece| {
            fastest_ms(11, &mut || {
                x.par_chunks(xs).zip(dy.par_chunks(ys)).for_each(|(x, dy)| {
                    with_scratch(shape.col_len() + ys.max(xs).max(k * 64), |buf| {
                        f(x, dy, buf)
                    })
                })
            })
        };
        let forward_ms = fastest_ms(11, &mut || {
            std::hint::black_box(forward(&shape, &x, &w, None));
        });
        let backward_ms = fastest_ms(11, &mut || {
            let mut dx = vec![0f32; x.len()];
            std::hint::black_box(backward_into(&shape, &x, &dy, &w, Some(&mut dx), true));
        });
        let im2col_ms = per_sample(&|x, _, buf| im2col(&shape, x, buf));
        let w_t = MatRef::row_major(&w, 64, k);
        let fwd_gemm_ms = per_sample(&|_, _, buf| {
            let (col, y) = buf.split_at_mut(shape.col_len());
            let col = MatRef::row_major(col, k, pos);
            matmul(MatMut::row_major(&mut y[..ys], 64, pos), w_t, col, false)
        });
        let dcol_gemm_ms = per_sample(&|_, dy, buf| {
            let dy = MatRef::row_major(dy, 64, pos);
            matmul(
                MatMut::row_major(&mut buf[..k * pos], k, pos),
                w_t.t(),
                dy,
                false,
            )
        });
        let col2im_ms = per_sample(&|_, _, buf| {
            let (col, dx) = buf.split_at_mut(shape.col_len());
            col2im(&shape, col, &mut dx[..xs])
        });
        let dw_gemm_ms = per_sample(&|_, dy, buf| {
            let (col, dw) = buf.split_at_mut(shape.col_len());
            let (dy, col) = (
                MatRef::row_major(dy, 64, pos),
                MatRef::row_major(col, k, pos),
            );
            matmul(
                MatMut::row_major(&mut dw[..k * 64], k, 64).t(),
                dy,
                col.t(),
                true,
            )
        });
        println!(
            "forward {forward_ms:.2} ms = im2col {im2col_ms:.2} + product {fwd_gemm_ms:.2} + rest"
        );
        println!(
            "backward {backward_ms:.2} ms = input-grad product {dcol_gemm_ms:.2} + col2im \
             {col2im_ms:.2} + im2col {im2col_ms:.2} + weight-grad product {dw_gemm_ms:.2} + rest"
        );
        // 2·O·K·P·N flops per product.
        let gflop = 2.0 * 64.0 * k as f64 * pos as f64 * 128.0 / 1e9;
        println!(
            "forward product: {:.0} GFLOP/s",
            gflop / (fwd_gemm_ms / 1e3)
        );
    }
}
