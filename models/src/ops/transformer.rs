//! The element-wise and row-wise operations of a transformer layer as CPU
//! custom ops with their own backward passes: the erf GELU, softmax over
//! the last axis and layer norm over the last axis.
//!
//! Composed of candle operations these cost a pass over memory (and an
//! allocation) per step — layer norm nine, softmax five — and candle's erf
//! is libm's scalar `erff`: a profile of MiniLM's forward pass on one core
//! spent 19 % of its time in `erff`/`erfc2` and 5 % in `expf`. Here each
//! is one pass, with polynomial `exp` and `erf` that vectorise inside
//! [`simd`]. (candle's own fused `softmax_last_dim` and `LayerNorm` have no
//! backward pass, so they cannot serve.) Elsewhere than on the CPU, or in
//! another dtype than f32, the functions fall back to the composed candle
//! operations.
//!
//! Accuracy: `exp` within 2 ulp on its range (a degree-6 polynomial after
//! reduction by ln 2), `erf` within 5e-7 absolute (Abramowitz & Stegun
//! 7.1.26: 1.5e-7, plus f32 rounding); tests compare all three, and their gradients, with the composed
//! candle operations.

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D,
};

use rayon::prelude::*;

use super::cpu::{inputs, output, simd};

/// Elements per rayon task of the element-wise kernels.
const ELEMENTS_PER_TASK: usize = 1 << 14;

/// Elements per rayon task of a row-wise kernel over rows of `n`: whole
/// rows, about [`ELEMENTS_PER_TASK`] elements.
fn rows_per_task(n: usize) -> usize {
    (ELEMENTS_PER_TASK / n.max(1)).max(1) * n.max(1)
}

/// `f` over matching chunks of `chunk` elements of `x` and `y`, in
/// parallel. Every output element depends on its own chunk only, so the
/// results are the same bits on any number of threads.
fn par_rows(x: &[f32], y: &mut [f32], chunk: usize, f: impl Fn(&[f32], &mut [f32]) + Sync) {
    y.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .for_each(|(y, x)| f(x, y));
}

/// Whether `x` takes the custom kernels: an f32 tensor on the CPU.
fn on_cpu_f32(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// `eˣ` for f32, branch-free so that a loop over it vectorises: `x = n·ln 2
/// + r` with `|r| ≤ ln 2 / 2`, `eʳ` by its Taylor polynomial of degree 6
/// (remainder below 1.2e-7 relative), `2ⁿ` built in the exponent bits; 0
/// below −87 (where f32 would go subnormal), `x` clamped at 88 above.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts: n·LN2_HI is exact for |n| < 2⁹
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.0, 88.0);
    // round to nearest by the 1.5·2²³ shift (no `floor`, which baseline
    // x86-64 calls out of line): exact for |x·log₂e| < 2²²
    const SHIFT: f32 = 12_582_912.0;
    let n = (xc * LOG2E + SHIFT) - SHIFT;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        p * scale
    }
}

/// erf for f32 (Abramowitz & Stegun 7.1.26: absolute error ≤ 1.5e-7, 5e-7 in f32),
/// branch-free.
#[inline(always)]
fn erf_f32(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    let ax = x.abs();
    let t = 1.0 / (1.0 + P * ax);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * exp_f32(-ax * ax);
    if x < 0.0 {
        -y
    } else {
        y
    }
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/√(2π)
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// `x·Φ(x)`, Φ the standard normal CDF.
#[inline(always)]
pub(crate) fn gelu_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * FRAC_1_SQRT_2))
}

/// `d/dx x·Φ(x) = Φ(x) + x·φ(x)`.
#[inline(always)]
fn gelu_grad_f32(x: f32) -> f32 {
    0.5 * (1.0 + erf_f32(x * FRAC_1_SQRT_2)) + x * FRAC_1_SQRT_2PI * exp_f32(-0.5 * x * x)
}

/// The erf GELU, `x·Φ(x)` (PyTorch's `gelu`, `approximate="none"`).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if on_cpu_f32(x) {
        x.contiguous()?.apply_op1(GeluOp)
    } else {
        x.gelu_erf()
    }
}

struct GeluOp;
struct GeluGradOp;

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "kdprune-gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let [x] = inputs("gelu", [(s, l, "input")])?;
        let mut y = vec![0f32; x.len()];
        par_rows(x, &mut y, ELEMENTS_PER_TASK, |x, y| {
            simd(
                #[inline(always)]
                || {
                    for (o, &v) in y.iter_mut().zip(x) {
                        *o = gelu_f32(v);
                    }
                },
            )
        });
        Ok(output(y, l.dims()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&dy.contiguous()?, &GeluGradOp)?))
    }
}

impl CustomOp2 for GeluGradOp {
    fn name(&self) -> &'static str {
        "kdprune-gelu-erf-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.dims() != l2.dims() {
            bail!(
                "gelu gradient: input {:?} and gradient {:?}",
                l1.dims(),
                l2.dims()
            )
        }
        let [x, dy] = inputs("gelu", [(s1, l1, "input"), (s2, l2, "gradient")])?;
        let mut dx = vec![0f32; x.len()];
        let chunk = ELEMENTS_PER_TASK;
        dx.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk).zip(dy.par_chunks(chunk)))
            .for_each(|(dx, (x, dy))| {
                simd(
                    #[inline(always)]
                    || {
                        for ((o, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
                            *o = g * gelu_grad_f32(v);
                        }
                    },
                )
            });
        Ok(output(dx, l1.dims()))
    }
}

/// Softmax over the last axis, with a backward pass.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if on_cpu_f32(x) && x.dim(D::Minus1)? > 0 {
        x.contiguous()?.apply_op1(SoftmaxOp)
    } else {
        candle_nn::ops::softmax(x, D::Minus1)
    }
}

struct SoftmaxOp;
struct SoftmaxGradOp;

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "kdprune-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let [x] = inputs("softmax", [(s, l, "input")])?;
        let n = *l.dims().last().unwrap_or(&1);
        let mut y = vec![0f32; x.len()];
        par_rows(x, &mut y, rows_per_task(n), |x, y| {
            simd(
                #[inline(always)]
                || {
                    for (row, out) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
                        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                        let mut sum = 0f32;
                        for (o, &v) in out.iter_mut().zip(row) {
                            *o = exp_f32(v - max);
                            sum += *o;
                        }
                        let inv = 1.0 / sum;
                        out.iter_mut().for_each(|o| *o *= inv);
                    }
                },
            )
        });
        Ok(output(y, l.dims()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(&dy.contiguous()?, &SoftmaxGradOp)?))
    }
}

impl CustomOp2 for SoftmaxGradOp {
    fn name(&self) -> &'static str {
        "kdprune-softmax-grad"
    }

    /// `∂x = y ⊙ (∂y − Σ ∂y ⊙ y)` per row.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.dims() != l2.dims() {
            bail!(
                "softmax gradient: output {:?} and gradient {:?}",
                l1.dims(),
                l2.dims()
            )
        }
        let [y, dy] = inputs("softmax", [(s1, l1, "output"), (s2, l2, "gradient")])?;
        let n = *l1.dims().last().unwrap_or(&1);
        let mut dx = vec![0f32; y.len()];
        let chunk = rows_per_task(n);
        dx.par_chunks_mut(chunk)
            .zip(y.par_chunks(chunk).zip(dy.par_chunks(chunk)))
            .for_each(|(dx, (y, dy))| {
                simd(
                    #[inline(always)]
                    || {
                        for ((yr, gr), out) in y
                            .chunks_exact(n)
                            .zip(dy.chunks_exact(n))
                            .zip(dx.chunks_exact_mut(n))
                        {
                            let mut acc = [0f32; 16];
                            for (i, (a, b)) in yr.iter().zip(gr).enumerate() {
                                acc[i % 16] += a * b;
                            }
                            let dot: f32 = acc.iter().sum();
                            for ((o, &a), &g) in out.iter_mut().zip(yr).zip(gr) {
                                *o = a * (g - dot);
                            }
                        }
                    },
                )
            });
        Ok(output(dx, l1.dims()))
    }
}

/// Layer norm over the last axis (biased variance, as PyTorch) with weight
/// and bias, with a backward pass for all three.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let h = x.dim(D::Minus1)?;
    if on_cpu_f32(x) && on_cpu_f32(weight) && on_cpu_f32(bias) && h > 0 {
        x.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            LayerNormOp { eps: eps as f32 },
        )
    } else {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
        normed.broadcast_mul(weight)?.broadcast_add(bias)
    }
}

struct LayerNormOp {
    eps: f32,
}

struct LayerNormGradOp {
    eps: f32,
}

/// Mean and 1/√(var + eps) of a row.
#[inline(always)]
pub(crate) fn row_stats(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = lane_sum(row, |v| v) / n;
    let var = lane_sum(row, |v| (v - mean) * (v - mean)) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// `Σ f(v)` over `row` in 16 interleaved partial sums, added in a fixed
/// order at the end: the same bits whatever the vector width the loop is
/// compiled for, and a loop that vectorises (a single running f32 sum
/// cannot be reordered, so it runs one add at a time).
#[inline(always)]
fn lane_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = row.chunks_exact(16);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += f(v);
    }
    acc.iter().sum()
}

fn check_ln(x: &[usize], w: &[usize], b: &[usize]) -> Result<usize> {
    let h = *x.last().unwrap_or(&0);
    if w != [h] || b != [h] {
        bail!("layer norm: input {x:?}, weight {w:?} and bias {b:?}")
    }
    Ok(h)
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "kdprune-layer-norm"
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
        let h = check_ln(l1.dims(), l2.dims(), l3.dims())?;
        let [x, w, b] = inputs(
            "layer norm",
            [(s1, l1, "input"), (s2, l2, "weight"), (s3, l3, "bias")],
        )?;
        let mut y = vec![0f32; x.len()];
        let eps = self.eps;
        par_rows(x, &mut y, rows_per_task(h), |x, y| {
            simd(
                #[inline(always)]
                || {
                    for (row, out) in x.chunks_exact(h).zip(y.chunks_exact_mut(h)) {
                        let (mean, rstd) = row_stats(row, eps);
                        for (((o, &v), &wv), &bv) in out.iter_mut().zip(row).zip(w).zip(b) {
                            *o = (v - mean) * rstd * wv + bv;
                        }
                    }
                },
            )
        });
        Ok(output(y, l1.dims()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let h = w.dim(0)?;
        // ∂x, then ∂w and ∂b as one [2, h] tensor
        let packed =
            x.apply_op3_no_bwd(w, &dy.contiguous()?, &LayerNormGradOp { eps: self.eps })?;
        let rows = x.elem_count() / h.max(1);
        let dx = packed.narrow(0, 0, rows * h)?.reshape(x.dims())?;
        let dw = packed.narrow(0, rows * h, h)?;
        let db = packed.narrow(0, rows * h + h, h)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

impl CustomOp3 for LayerNormGradOp {
    fn name(&self) -> &'static str {
        "kdprune-layer-norm-grad"
    }

    /// Per row, with x̂ = (x − mean)·rstd and ĝ = ∂y ⊙ w:
    /// `∂x = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ ⊙ x̂))`; `∂w = Σ ∂y ⊙ x̂`,
    /// `∂b = Σ ∂y` over the rows, in row order. Output: `∂x` flat, then
    /// `∂w`, then `∂b`.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let h = check_ln(l1.dims(), l2.dims(), l2.dims())?;
        if l3.dims() != l1.dims() {
            bail!(
                "layer norm gradient: input {:?}, gradient {:?}",
                l1.dims(),
                l3.dims()
            )
        }
        let [x, w, dy] = inputs(
            "layer norm",
            [(s1, l1, "input"), (s2, l2, "weight"), (s3, l3, "gradient")],
        )?;
        let rows = x.len() / h;
        let mut out = vec![0f32; x.len() + 2 * h];
        let eps = self.eps;
        simd(
            #[inline(always)]
            || {
                let (dx, rest) = out.split_at_mut(x.len());
                let (dw, db) = rest.split_at_mut(h);
                let mut xhat = vec![0f32; h];
                for r in 0..rows {
                    let row = &x[r * h..(r + 1) * h];
                    let g = &dy[r * h..(r + 1) * h];
                    let (mean, rstd) = row_stats(row, eps);
                    let mut sum_g = 0f32;
                    let mut sum_gx = 0f32;
                    for i in 0..h {
                        xhat[i] = (row[i] - mean) * rstd;
                        let gi = g[i] * w[i];
                        sum_g += gi;
                        sum_gx += gi * xhat[i];
                        dw[i] += g[i] * xhat[i];
                        db[i] += g[i];
                    }
                    let (mg, mgx) = (sum_g / h as f32, sum_gx / h as f32);
                    for i in 0..h {
                        dx[r * h + i] = rstd * (g[i] * w[i] - mg - xhat[i] * mgx);
                    }
                }
            },
        );
        Ok(output(out, &[x.len() + 2 * h]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_are_within_their_bounds() {
        let mut worst_exp = 0f64;
        let mut worst_erf = 0f64;
        for i in -40_000..=40_000 {
            let x = i as f32 * 0.002;
            let e = exp_f32(x) as f64;
            let want = (x as f64).exp();
            worst_exp = worst_exp.max((e - want).abs() / want);
            // erf of f64 from its series is not in std: compare with libm's f32 erf
            let want_erf = libm_erf(x as f64);
            worst_erf = worst_erf.max((erf_f32(x) as f64 - want_erf).abs());
        }
        assert!(worst_exp < 3e-7, "exp relative error {worst_exp}");
        assert!(worst_erf < 5e-7, "erf absolute error {worst_erf}");
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(f32::MIN), 0.0);
        assert!(exp_f32(100.0).is_finite());
    }

    /// Values and gradients of the f32 kernels against candle's composed
    /// operations in f64 (the fallback path of the same functions).
    #[test]
    fn kernels_and_gradients_equal_the_composed_ops_in_f64() {
        use candle_core::{Device, Var};
        let dev = Device::Cpu;
        let x64 = (Tensor::randn(0f64, 3.0, (3, 5, 7), &dev).unwrap())
            .contiguous()
            .unwrap();
        let r64 = Tensor::randn(0f64, 1.0, (3, 5, 7), &dev).unwrap();
        let w64 = Tensor::randn(1f64, 0.5, 7, &dev).unwrap();
        let b64 = Tensor::randn(0f64, 0.5, 7, &dev).unwrap();
        type Op = fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>;
        let cases: [(&str, Op); 3] = [
            ("gelu", |x, _, _| gelu_erf(x)),
            ("softmax", |x, _, _| softmax_last_dim(x)),
            ("layer norm", |x, w, b| layer_norm(x, w, b, 1e-5)),
        ];
        let close = |a: &Tensor, b: &Tensor, what: &str| {
            let a: Vec<f64> = a
                .to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let b: Vec<f64> = b.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(a.len(), b.len(), "{what}");
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x - y).abs() <= 2e-5 * (1.0 + y.abs()),
                    "{what}: {x} vs {y}"
                );
            }
        };
        for (name, op) in cases {
            let run = |dtype: DType| {
                let x = Var::from_tensor(&x64.to_dtype(dtype).unwrap()).unwrap();
                let w = Var::from_tensor(&w64.to_dtype(dtype).unwrap()).unwrap();
                let b = Var::from_tensor(&b64.to_dtype(dtype).unwrap()).unwrap();
                let y = op(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap();
                let loss = (&y * r64.to_dtype(dtype).unwrap())
                    .unwrap()
                    .sum_all()
                    .unwrap();
                let g = loss.backward().unwrap();
                let grad = |v: &Var| g.get(v.as_tensor()).cloned();
                (y, grad(&x), grad(&w), grad(&b))
            };
            let (y32, gx32, gw32, gb32) = run(DType::F32);
            let (y64, gx64, gw64, gb64) = run(DType::F64);
            close(&y32, &y64, name);
            close(&gx32.unwrap(), &gx64.unwrap(), &format!("{name} ∂x"));
            if name == "layer norm" {
                close(&gw32.unwrap(), &gw64.unwrap(), "layer norm ∂w");
                close(&gb32.unwrap(), &gb64.unwrap(), "layer norm ∂b");
            }
        }
        // a row of −∞ but one entry: a one-hot softmax, no NaN
        let masked = Tensor::new(&[[0.5f32, f32::MIN, f32::MIN]], &dev).unwrap();
        let p: Vec<Vec<f32>> = softmax_last_dim(&masked).unwrap().to_vec2().unwrap();
        assert_eq!(p, [[1.0, 0.0, 0.0]]);
    }

    /// erf by its Maclaurin series (|x| ≤ 3) or continued fraction of erfc
    /// (|x| > 3), in f64: an independent reference for the tests.
    fn libm_erf(x: f64) -> f64 {
        let ax = x.abs();
        let y = if ax <= 3.0 {
            let mut term = ax;
            let mut sum = ax;
            for n in 1..200 {
                term *= -ax * ax / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc(x) = e^{-x²}/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + …))))
            let mut f = ax;
            for k in (1..60).rev() {
                f = ax + (k as f64 / 2.0) / f;
            }
            1.0 - (-ax * ax).exp() / std::f64::consts::PI.sqrt() / f
        };
        y.copysign(x)
    }
}
