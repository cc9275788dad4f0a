//! Depthwise convolution (one input channel per group): a direct kernel,
//! forward and both gradients, which beats GEMMs of one row.

use super::im2col::col_range;
use super::shape::ConvShape;

/// `dst[k] += alpha · src[k·s]`. Stride 1, the common case, gets a plain
/// zip (which vectorises; `step_by` does not).
#[inline(always)]
pub(super) fn gather_axpy(dst: &mut [f32], src: &[f32], s: usize, alpha: f32) {
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
pub(super) fn scatter_axpy(dst: &mut [f32], src: &[f32], s: usize, alpha: f32) {
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
pub(super) fn gather_dot(a: &[f32], b: &[f32], s: usize) -> f32 {
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
pub(super) fn depthwise_forward(shape: &ConvShape, x: &[f32], w: &[f32], y: &mut [f32]) {
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
pub(super) fn depthwise_input_grad(shape: &ConvShape, dy: &[f32], w: &[f32], dx: &mut [f32]) {
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
pub(super) fn depthwise_weight_grad(shape: &ConvShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
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
