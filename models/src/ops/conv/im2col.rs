//! im2col and col2im: a sample's receptive fields laid out as the columns
//! of a matrix, and their gradients added back into the image.

use super::shape::ConvShape;
use crate::ops::cpu::{simd, valid_range};

/// Output positions `j ∈ [lo, hi)` of a row whose input column
/// `j·s + shift` lies inside `[0, in_w)`.
pub(super) fn col_range(shape: &ConvShape, shift: isize) -> (usize, usize) {
    valid_range(shift, shape.p.stride, shape.in_w, shape.out_w)
}

/// im2col of one group of one sample: `col[(c, a, b), (i, j)] = x[c, i·s + a·d − p, j·s + b·d − p]`.
pub(crate) fn im2col(shape: &ConvShape, x: &[f32], col: &mut [f32]) {
    im2col_ld(shape, x, col, shape.positions());
}

/// [`im2col`] into rows `ld` floats apart (`ld ≥ OH·OW`): row `r` is
/// `col[r·ld..r·ld + OH·OW]`, the rest of the row is left as it is.
pub(super) fn im2col_ld(shape: &ConvShape, x: &[f32], col: &mut [f32], ld: usize) {
    simd(
        #[inline(always)]
        || im2col_ld_body(shape, x, col, ld),
    )
}

#[inline(always)]
pub(super) fn im2col_ld_body(shape: &ConvShape, x: &[f32], col: &mut [f32], ld: usize) {
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
pub(super) struct FlatTap {
    /// The flat shift from output position to input position.
    pub(super) fs: isize,
    /// Output positions `[t0, t1)` whose shifted input lies inside the plane.
    t0: usize,
    t1: usize,
    /// Output width and the valid columns `[lo, hi)` of a row.
    pub(super) ow: usize,
    pub(super) lo: usize,
    pub(super) hi: usize,
    /// Output rows `[rlo, rhi)` whose tap row lies inside the image.
    pub(super) rlo: usize,
    pub(super) rhi: usize,
}

impl FlatTap {
    /// The flat form of tap row `a` (column shift `shift`, valid columns
    /// `[lo, hi)`), when the layer has one.
    #[inline(always)]
    pub(super) fn new(
        shape: &ConvShape,
        a: usize,
        shift: isize,
        lo: usize,
        hi: usize,
    ) -> Option<Self> {
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
    pub(super) fn empty(&self) -> bool {
        self.rlo >= self.rhi || self.lo >= self.hi || self.t0 >= self.t1
    }

    /// The input position of output position `t` (`t0 ≤ t ≤ t1`).
    #[inline(always)]
    pub(super) fn src(&self, t: usize) -> usize {
        (t as isize + self.fs) as usize
    }

    /// Zeros the columns outside `[lo, hi)` of the valid rows, column by
    /// column: a `fill` of each row's one or two padding floats became two
    /// `memset` calls per row, which took most of the time of im2col.
    #[inline(always)]
    pub(super) fn zero_wrapped_columns(&self, row: &mut [f32]) {
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
pub(super) fn col2im(shape: &ConvShape, col: &mut [f32], dx: &mut [f32]) {
    simd(
        #[inline(always)]
        || col2im_body(shape, col, dx),
    )
}

#[inline(always)]
pub(super) fn col2im_body(shape: &ConvShape, col: &mut [f32], dx: &mut [f32]) {
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
