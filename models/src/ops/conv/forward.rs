//! The forward pass: per-sample GEMMs on im2col matrices, parallel over
//! the batch.

use rayon::prelude::*;

use super::depthwise::depthwise_forward;
use super::im2col::im2col;
use super::scratch::with_scratch;
use super::shape::ConvShape;
use crate::ops::gemm::{matmul, MatMut, MatRef};

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
