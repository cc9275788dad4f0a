//! Max- and average-pooling on the CPU as candle custom ops, any kernel,
//! stride and padding, forward and backward, parallel over the `N·C` planes.
//!
//! With window `W(i, j) = {(i·sh − ph + a, j·sw − pw + b) : 0 ≤ a < kh, 0 ≤ b < kw}`:
//!
//! ```text
//! max: y[i, j] = max_{(r, c) ∈ W(i, j) ∩ image} x[r, c]      ∂x[argmax] += ∂y[i, j]
//! avg: y[i, j] = Σ_{(r, c) ∈ W(i, j) ∩ image} x[r, c] / (kh·kw)
//! ```
//! as PyTorch's `MaxPool2d` and `AvgPool2d` (floor mode, padded zeros counted
//! in the average's divisor). The argmax is the first maximum in row-major
//! window order, and a NaN wins, as in PyTorch; the backward pass finds it
//! again from the input and the forward output rather than storing indices.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use serde::{Deserialize, Serialize};

use super::cpu::{inputs, output, valid_range};

/// Kernel, stride and padding of a 2-D pooling, as `(height, width)` pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool2dConfig {
    /// Window size `(kh, kw)`, each ≥ 1.
    pub kernel: (usize, usize),
    /// Step between windows `(sh, sw)`, each ≥ 1.
    pub stride: (usize, usize),
    /// Implicit padding `(ph, pw)` on both sides, at most half the kernel.
    pub padding: (usize, usize),
}

impl Pool2dConfig {
    /// A `k×k` window with stride `k` and no padding (PyTorch's `MaxPool2d(k)`).
    pub fn new(k: usize) -> Self {
        Self {
            kernel: (k, k),
            stride: (k, k),
            padding: (0, 0),
        }
    }

    /// The same configuration with stride `s` on both axes.
    pub fn with_stride(self, s: usize) -> Self {
        Self {
            stride: (s, s),
            ..self
        }
    }

    /// The same configuration with padding `p` on both axes.
    pub fn with_padding(self, p: usize) -> Self {
        Self {
            padding: (p, p),
            ..self
        }
    }

    /// Output size `(⌊(H + 2ph − kh)/sh⌋ + 1, ⌊(W + 2pw − kw)/sw⌋ + 1)` for an
    /// `H×W` input, or `None` when the window does not fit.
    pub fn output_size(&self, height: usize, width: usize) -> Option<(usize, usize)> {
        let out = |len: usize, k: usize, s: usize, p: usize| {
            (s > 0 && k > 0 && len + 2 * p >= k).then(|| (len + 2 * p - k) / s + 1)
        };
        Some((
            out(height, self.kernel.0, self.stride.0, self.padding.0)?,
            out(width, self.kernel.1, self.stride.1, self.padding.1)?,
        ))
    }
}

/// Planes per rayon task: the planes of a batch are small (often 8×8 to
/// 32×32), so one task per plane would cost more in scheduling than in work.
const MIN_PLANES_PER_TASK: usize = 8;

/// Every size of one pooling, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PoolShape {
    dims: [usize; 4],
    out_h: usize,
    out_w: usize,
    cfg: Pool2dConfig,
}

impl PoolShape {
    /// Sizes for an input of dims `x` (`[N, C, H, W]`).
    pub(crate) fn new(x: &[usize], cfg: Pool2dConfig) -> Result<Self> {
        let &[n, c, h, w] = x else {
            bail!("pool2d: expected a 4-d input, got {x:?}")
        };
        let ((kh, kw), (sh, sw), (ph, pw)) = (cfg.kernel, cfg.stride, cfg.padding);
        if kh == 0 || kw == 0 || sh == 0 || sw == 0 {
            bail!("pool2d: kernel and stride must be ≥ 1, got {cfg:?}")
        }
        if 2 * ph > kh || 2 * pw > kw {
            bail!("pool2d: padding must be at most half the kernel, got {cfg:?}")
        }
        if h + 2 * ph < kh || w + 2 * pw < kw {
            bail!("pool2d: the kernel does not fit the padded {h}x{w} input ({cfg:?})")
        }
        Ok(Self {
            dims: [n, c, h, w],
            out_h: (h + 2 * ph - kh) / sh + 1,
            out_w: (w + 2 * pw - kw) / sw + 1,
            cfg,
        })
    }

    /// `[N, C, OH, OW]`.
    pub(crate) fn out_dims(&self) -> [usize; 4] {
        [self.dims[0], self.dims[1], self.out_h, self.out_w]
    }

    fn in_plane(&self) -> usize {
        self.dims[2] * self.dims[3]
    }

    fn out_plane(&self) -> usize {
        self.out_h * self.out_w
    }

    /// The window of output `(i, j)` clipped to the image: rows `r0..r1`, columns `c0..c1`.
    #[cfg(test)]
    fn window(&self, i: usize, j: usize) -> (usize, usize, usize, usize) {
        let g = Grid::new(self);
        let c0 = g.col_start[j];
        let c1 = (j * self.cfg.stride.1 + self.cfg.kernel.1)
            .saturating_sub(self.cfg.padding.1)
            .min(self.dims[3]);
        (g.rows[i].0, g.rows[i].1, c0, c1)
    }
}

/// Where the windows fall, computed once per call and shared by all planes.
///
/// The kernels walk a window offset `(r, b)` at a time over a whole output
/// row (`j` innermost): the `j` are independent, so the loop has no serial
/// dependency (and vectorises at stride 1), where a per-window scan is a
/// chain of dependent compare-and-selects.
struct Grid {
    /// Input rows `r0..r1` of every output row, clipped to the image.
    rows: Vec<(usize, usize)>,
    /// For every kernel column `b`: the outputs `j ∈ [lo, hi)` whose input
    /// column `j·sw + b − pw` is inside the image, and that column for `j = lo`.
    taps: Vec<(usize, usize, usize)>,
    /// First input column of every output column's window, clipped.
    col_start: Vec<usize>,
}

impl Grid {
    fn new(shape: &PoolShape) -> Self {
        let c = &shape.cfg;
        let (h, w) = (shape.dims[2], shape.dims[3]);
        let rows = (0..shape.out_h)
            .map(|i| {
                let start = i * c.stride.0;
                (
                    start.saturating_sub(c.padding.0),
                    (start + c.kernel.0).saturating_sub(c.padding.0).min(h),
                )
            })
            .collect();
        let taps = (0..c.kernel.1)
            .map(|b| {
                let shift = b as isize - c.padding.1 as isize;
                let (lo, hi) = valid_range(shift, c.stride.1, w, shape.out_w);
                let first = if lo < hi {
                    ((lo * c.stride.1) as isize + shift) as usize
                } else {
                    0
                };
                (lo, hi, first)
            })
            .collect();
        let col_start = (0..shape.out_w)
            .map(|j| (j * c.stride.1).saturating_sub(c.padding.1))
            .collect();
        Self {
            rows,
            taps,
            col_start,
        }
    }
}

/// Whether `v` replaces `best` as the running window maximum. PyTorch's rule
/// is `v > best || isnan(v)` (a NaN wins and stays); planes without a NaN
/// (checked first) use the plain `>`, which compiles to a blend instead of a
/// data-dependent branch that would mispredict on half the elements.
#[inline(always)]
fn wins<const NAN: bool>(v: f32, best: f32) -> bool {
    if NAN {
        (v > best) | v.is_nan()
    } else {
        v > best
    }
}

/// Whether a plane holds a NaN (a full pass without early exit, which vectorises).
fn has_nan(x: &[f32]) -> bool {
    x.iter().fold(false, |acc, v| acc | v.is_nan())
}

/// Whether every value is finite (a full pass, as [`has_nan`]).
fn all_finite(x: &[f32]) -> bool {
    x.iter().fold(true, |acc, v| acc & v.is_finite())
}

/// Window maxima, followed by a ReLU when `relu` is set
/// (`relu(v) = 0` for `v < 0`, NaN kept, as PyTorch's).
fn max_forward(shape: &PoolShape, x: &[f32], relu: bool) -> Vec<f32> {
    let grid = Grid::new(shape);
    let mut y = vec![0f32; shape.dims[0] * shape.dims[1] * shape.out_plane()];
    y.par_chunks_mut(shape.out_plane())
        .zip(x.par_chunks(shape.in_plane()))
        .with_min_len(MIN_PLANES_PER_TASK)
        .for_each(|(y, x)| {
            if has_nan(x) {
                max_plane::<true>(shape, &grid, x, y)
            } else {
                max_plane::<false>(shape, &grid, x, y)
            }
            if relu {
                y.iter_mut()
                    .for_each(|v| *v = if *v < 0.0 { 0.0 } else { *v });
            }
        });
    y
}

/// Window maxima of one plane.
fn max_plane<const NAN: bool>(shape: &PoolShape, grid: &Grid, x: &[f32], y: &mut [f32]) {
    let (w, sw) = (shape.dims[3], shape.cfg.stride.1);
    for (out, &(r0, r1)) in y.chunks_exact_mut(shape.out_w).zip(&grid.rows) {
        out.fill(f32::NEG_INFINITY);
        for r in r0..r1 {
            let row = &x[r * w..(r + 1) * w];
            for &(lo, hi, first) in &grid.taps {
                let src = row[first..].iter().step_by(sw);
                for (o, &v) in out[lo..hi].iter_mut().zip(src) {
                    *o = if wins::<NAN>(v, *o) { v } else { *o };
                }
            }
        }
    }
}

/// The gradient goes to the first maximum of each window in row-major order
/// (the last NaN if there is one), as PyTorch's kernel picks it.
///
/// `y` is the forward output, so the maxima are known: a window position
/// takes the gradient when it equals its window's maximum and no earlier
/// position did. Windows visit their positions in row-major order because
/// rows are walked outside kernel columns. With `relu`, `y` is the rectified
/// maximum and a window passes its gradient only where `y > 0` (PyTorch's
/// ReLU gradient); elsewhere `y` equals the maximum.
fn max_backward(shape: &PoolShape, x: &[f32], y: &[f32], dy: &[f32], relu: bool) -> Vec<f32> {
    let grid = Grid::new(shape);
    let mut dx = vec![0f32; x.len()];
    dx.par_chunks_mut(shape.in_plane())
        .zip(x.par_chunks(shape.in_plane()))
        .zip(y.par_chunks(shape.out_plane()))
        .zip(dy.par_chunks(shape.out_plane()))
        .with_min_len(MIN_PLANES_PER_TASK)
        .for_each_init(
            || vec![0f32; shape.out_w],
            |pending, (((dx, x), y), dy)| {
                if has_nan(x) || !all_finite(dy) {
                    max_plane_grad_exact(shape, &grid, x, y, dy, dx, relu)
                } else {
                    max_plane_grad(shape, &grid, x, y, dy, dx, pending, relu)
                }
            },
        );
    dx
}

/// Gradient of one plane without NaN in `x` and with a finite `dy`.
/// `pending[j]` holds the gradient of window `j` until a position equal to
/// its maximum has taken it (then 0). The hand-over is arithmetic,
/// `share = pending·[v = max]`, exact for finite gradients: any form with a
/// condition compiles to a branch on the data, which mispredicts on every
/// other window.
#[allow(clippy::too_many_arguments)]
fn max_plane_grad(
    shape: &PoolShape,
    grid: &Grid,
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    pending: &mut [f32],
    relu: bool,
) {
    let (w, sw) = (shape.dims[3], shape.cfg.stride.1);
    let rows = y
        .chunks_exact(shape.out_w)
        .zip(dy.chunks_exact(shape.out_w));
    for ((max, g), &(r0, r1)) in rows.zip(&grid.rows) {
        pending.copy_from_slice(g);
        if relu {
            // Windows whose rectified maximum is 0 pass nothing; their `y`
            // (0) is above every value of the window, so nothing takes it.
            for (p, m) in pending.iter_mut().zip(max) {
                *p *= f32::from(u8::from(*m > 0.0));
            }
        }
        for r in r0..r1 {
            let (src, dst) = (&x[r * w..(r + 1) * w], &mut dx[r * w..(r + 1) * w]);
            for &(lo, hi, first) in &grid.taps {
                let cells = src[first..].iter().step_by(sw);
                let grads = dst[first..].iter_mut().step_by(sw);
                let lanes = pending[lo..hi].iter_mut().zip(&max[lo..hi]);
                for ((p, m), (v, d)) in lanes.zip(cells.zip(grads)) {
                    // v ≤ m always, so `v ≥ m` is `v == m`; as a 0/1 factor it
                    // needs neither a branch nor a select.
                    let hit = f32::from(u8::from(*v >= *m));
                    let share = *p * hit;
                    *d += share;
                    *p -= share;
                }
            }
        }
    }
}

/// Gradient of one plane holding a NaN (or a non-finite gradient): the window
/// argmax by PyTorch's rule (`v > best || isnan(v)`), one window at a time.
fn max_plane_grad_exact(
    shape: &PoolShape,
    grid: &Grid,
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    relu: bool,
) {
    let w = shape.dims[3];
    let (kw, sw, pw) = (shape.cfg.kernel.1, shape.cfg.stride.1, shape.cfg.padding.1);
    let rows = dy
        .chunks_exact(shape.out_w)
        .zip(y.chunks_exact(shape.out_w));
    for ((g, y), &(r0, r1)) in rows.zip(&grid.rows) {
        for (j, ((g, &c0), y)) in g.iter().zip(&grid.col_start).zip(y).enumerate() {
            // The ReLU passes a gradient only where its output is > 0 (not
            // at 0, not at NaN).
            let passes = *y > 0.0;
            if relu && !passes {
                continue;
            }
            let c1 = (j * sw + kw).saturating_sub(pw).min(w);
            let (mut best, mut arg) = (f32::NEG_INFINITY, r0 * w + c0);
            for r in r0..r1 {
                for c in c0..c1 {
                    let v = x[r * w + c];
                    if (v > best) | v.is_nan() {
                        (best, arg) = (v, r * w + c);
                    }
                }
            }
            dx[arg] += *g;
        }
    }
}

fn avg_forward(shape: &PoolShape, x: &[f32]) -> Vec<f32> {
    let grid = Grid::new(shape);
    let scale = 1.0 / (shape.cfg.kernel.0 * shape.cfg.kernel.1) as f32;
    let (w, sw) = (shape.dims[3], shape.cfg.stride.1);
    let mut y = vec![0f32; shape.dims[0] * shape.dims[1] * shape.out_plane()];
    y.par_chunks_mut(shape.out_plane())
        .zip(x.par_chunks(shape.in_plane()))
        .with_min_len(MIN_PLANES_PER_TASK)
        .for_each(|(y, x)| {
            for (out, &(r0, r1)) in y.chunks_exact_mut(shape.out_w).zip(&grid.rows) {
                for r in r0..r1 {
                    let row = &x[r * w..(r + 1) * w];
                    for &(lo, hi, first) in &grid.taps {
                        let src = row[first..].iter().step_by(sw);
                        for (o, &v) in out[lo..hi].iter_mut().zip(src) {
                            *o += v;
                        }
                    }
                }
                out.iter_mut().for_each(|o| *o *= scale);
            }
        });
    y
}

fn avg_backward(shape: &PoolShape, dy: &[f32]) -> Vec<f32> {
    let grid = Grid::new(shape);
    let scale = 1.0 / (shape.cfg.kernel.0 * shape.cfg.kernel.1) as f32;
    let (w, sw) = (shape.dims[3], shape.cfg.stride.1);
    let mut dx = vec![0f32; shape.dims[0] * shape.dims[1] * shape.in_plane()];
    dx.par_chunks_mut(shape.in_plane())
        .zip(dy.par_chunks(shape.out_plane()))
        .with_min_len(MIN_PLANES_PER_TASK)
        .for_each(|(dx, dy)| {
            for (g, &(r0, r1)) in dy.chunks_exact(shape.out_w).zip(&grid.rows) {
                for r in r0..r1 {
                    let row = &mut dx[r * w..(r + 1) * w];
                    for &(lo, hi, first) in &grid.taps {
                        let dst = row[first..].iter_mut().step_by(sw);
                        for (d, &v) in dst.zip(&g[lo..hi]) {
                            *d += v * scale;
                        }
                    }
                }
            }
        });
    dx
}

/// Max-pool forward: `x → y`, or `x → relu(y)` with `relu`.
pub(crate) struct MaxPool2dOp {
    pub(crate) cfg: Pool2dConfig,
    pub(crate) relu: bool,
}

/// `(x, y, ∂y) → ∂x` of a max-pool (followed by a ReLU with `relu`).
struct MaxPool2dGrad {
    shape: PoolShape,
    relu: bool,
}

/// Average-pool forward: `x → y`.
pub(crate) struct AvgPool2dOp {
    pub(crate) cfg: Pool2dConfig,
}

/// `∂y → ∂x` of an average-pool.
struct AvgPool2dGrad {
    shape: PoolShape,
}

impl CustomOp1 for MaxPool2dOp {
    fn name(&self) -> &'static str {
        if self.relu {
            "kdprune-max-pool2d-relu"
        } else {
            "kdprune-max-pool2d"
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let shape = PoolShape::new(l.dims(), self.cfg)?;
        let [x] = inputs("max-pool", [(s, l, "input")])?;
        Ok(output(max_forward(&shape, x, self.relu), &shape.out_dims()))
    }

    fn bwd(&self, x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let shape = PoolShape::new(x.dims(), self.cfg)?;
        let grad = MaxPool2dGrad {
            shape,
            relu: self.relu,
        };
        let dx = x.apply_op3_no_bwd(y, &dy.contiguous()?, &grad)?;
        Ok(Some(dx))
    }
}

impl CustomOp3 for MaxPool2dGrad {
    fn name(&self) -> &'static str {
        "kdprune-max-pool2d-grad"
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
        let out = self.shape.out_dims();
        if l1.dims() != self.shape.dims || l2.dims() != out || l3.dims() != out {
            bail!(
                "max-pool gradient: got x {:?}, y {:?} and dy {:?} for {:?}",
                l1.dims(),
                l2.dims(),
                l3.dims(),
                self.shape
            )
        }
        let [x, y, dy] = inputs(
            "max-pool",
            [
                (s1, l1, "input"),
                (s2, l2, "output"),
                (s3, l3, "output gradient"),
            ],
        )?;
        Ok(output(
            max_backward(&self.shape, x, y, dy, self.relu),
            &self.shape.dims,
        ))
    }
}

impl CustomOp1 for AvgPool2dOp {
    fn name(&self) -> &'static str {
        "kdprune-avg-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let shape = PoolShape::new(l.dims(), self.cfg)?;
        let [x] = inputs("avg-pool", [(s, l, "input")])?;
        Ok(output(avg_forward(&shape, x), &shape.out_dims()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let shape = PoolShape::new(x.dims(), self.cfg)?;
        let dx = dy
            .contiguous()?
            .apply_op1_no_bwd(&AvgPool2dGrad { shape })?;
        Ok(Some(dx))
    }
}

impl CustomOp1 for AvgPool2dGrad {
    fn name(&self) -> &'static str {
        "kdprune-avg-pool2d-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        if l.dims() != self.shape.out_dims() {
            bail!(
                "avg-pool gradient: got dy {:?} for {:?}",
                l.dims(),
                self.shape
            )
        }
        let [dy] = inputs("avg-pool", [(s, l, "output gradient")])?;
        Ok(output(avg_backward(&self.shape, dy), &self.shape.dims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_output_size_is_floor_mode() {
        let cfg = Pool2dConfig::new(3).with_stride(2).with_padding(1);
        assert_eq!(cfg.output_size(7, 8), Some((4, 4)));
        assert_eq!(Pool2dConfig::new(5).output_size(4, 9), None);
    }

    #[test]
    fn windows_are_clipped_to_the_image() {
        let cfg = Pool2dConfig {
            kernel: (3, 3),
            stride: (2, 2),
            padding: (1, 1),
        };
        let s = PoolShape::new(&[1, 1, 5, 4], cfg).unwrap();
        // PyTorch: floor((5 + 2 − 3)/2) + 1 = 3, floor((4 + 2 − 3)/2) + 1 = 2
        assert_eq!(s.out_dims(), [1, 1, 3, 2]);
        assert_eq!(s.window(0, 0), (0, 2, 0, 2));
        assert_eq!(s.window(2, 1), (3, 5, 1, 4));
        assert!(PoolShape::new(&[1, 1, 5, 4], Pool2dConfig::new(2).with_padding(2)).is_err());
    }

    #[test]
    fn a_nan_wins_the_window_as_in_pytorch() {
        // torch.nn.functional.max_pool2d(torch.tensor([[[[1., float('nan')], [3., 2.]]]]), 2)
        // → tensor([[[[nan]]]])
        let s = PoolShape::new(&[1, 1, 2, 2], Pool2dConfig::new(2)).unwrap();
        let y = max_forward(&s, &[1.0, f32::NAN, 3.0, 2.0], false);
        assert!(y[0].is_nan());
        let x = [1.0, f32::NAN, 3.0, 2.0];
        assert_eq!(max_backward(&s, &x, &y, &[1.0], false), [0., 1., 0., 0.]);
        // ties: the first maximum in row-major order takes the gradient
        let x = [5.0, 5.0, 3.0, 5.0];
        assert_eq!(
            max_backward(&s, &x, &[5.0], &[1.0], false),
            [1., 0., 0., 0.]
        );
        // an infinite gradient reaches the maximum only (not 0·∞ = NaN elsewhere)
        let g = max_backward(&s, &[1.0, 4.0, 3.0, 2.0], &[4.0], &[f32::INFINITY], false);
        assert_eq!(g, [0., f32::INFINITY, 0., 0.]);
        // with the ReLU, a NaN window passes no gradient (PyTorch: y > 0 is false)
        let x = [1.0, f32::NAN, 3.0, 2.0];
        let y = max_forward(&s, &x, true);
        assert!(y[0].is_nan());
        assert_eq!(max_backward(&s, &x, &y, &[1.0], true), [0., 0., 0., 0.]);
    }
}
