//! The gradients: input (`∂col = Wᵀ·∂Y` scattered back by col2im), weight
//! and bias, and the one-pass backward that computes them together while
//! each chunk's `∂y` is in cache.

use rayon::prelude::*;

use super::depthwise::{depthwise_input_grad, depthwise_weight_grad};
use super::im2col::{col2im, im2col_ld};
use super::scratch::with_scratch;
use super::shape::ConvShape;
use crate::ops::gemm::{matmul, MatMut, MatRef};

/// The batch is cut into at most this many chunks for the weight and bias
/// gradients, each with its own accumulator. A constant (not the thread
/// count) so that the summation order, hence every bit of the result, is the
/// same on any number of threads.
pub(super) const WEIGHT_GRAD_CHUNKS: usize = 16;

/// Floats the per-chunk weight-gradient accumulators may hold together
/// (32 MB): large layers get fewer chunks (at least 2).
pub(super) const WEIGHT_GRAD_BUDGET: usize = 8 << 20;

/// Chunks of the batch for a weight gradient of `w_len` floats; depends on
/// the layer only, never on the machine.
pub(super) fn weight_grad_chunks(w_len: usize) -> usize {
    (WEIGHT_GRAD_BUDGET / w_len.max(1)).clamp(2, WEIGHT_GRAD_CHUNKS)
}

/// How the batch is cut for the weight and bias gradients.
#[derive(Clone, Copy, Debug)]
pub(super) struct GradPlan {
    /// Samples per chunk (each chunk has its own accumulators).
    pub(super) per_chunk: usize,
    /// Samples per weight-gradient product.
    pub(super) per_gemm: usize,
    /// Row length of the batched im2col matrix, `per_gemm·OH·OW`.
    pub(super) ld: usize,
    /// Floats of the batched im2col matrix (0 when the input is used as it is).
    pub(super) col_len: usize,
    /// Floats of the batched `∂Y` rows (0 for one sample per product).
    pub(super) dyb_len: usize,
}

impl GradPlan {
    pub(super) fn new(shape: &ConvShape) -> Self {
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
pub(super) fn weight_grad_group(
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
pub(super) fn bias_grad_add(shape: &ConvShape, dy: &[f32], db: &mut [f32]) {
    for sample in dy.chunks_exact(shape.out_sample()) {
        for (d, row) in db.iter_mut().zip(sample.chunks_exact(shape.positions())) {
            *d += lane_sum(row);
        }
    }
}

/// Sums per-chunk partials in chunk order.
pub(super) fn sum_partials(parts: impl IntoIterator<Item = Vec<f32>>, len: usize) -> Vec<f32> {
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
pub(super) fn untranspose_weight_grad(shape: &ConvShape, acc: Vec<f32>) -> Vec<f32> {
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
pub(super) fn bias_grad(shape: &ConvShape, dy: &[f32]) -> Vec<f32> {
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
pub(super) fn lane_sum(v: &[f32]) -> f32 {
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
pub(super) fn input_grad_sample(
    shape: &ConvShape,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
    col: &mut [f32],
) {
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
