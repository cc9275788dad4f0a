//! Sparse weights × dense activations on the CPU: a compressed-sparse-row
//! matrix and its products, f32, vectorised under the run-time AVX-512/AVX2
//! dispatch of the dense kernels ([`crate::ops::cpu`]).
//!
//! Written here because candle has no sparse tensors (candle issue #1404) and
//! no maintained Rust crate offers an f32 CSR × dense product vectorised along
//! the dense operand's rows, the layout a batch of activations has here.
//!
//! | product | layout | inner loop |
//! |---|---|---|
//! | [`Csr::matmul`] `Y = W·X + b` | `X` `[K, N]`, `Y` `[M, N]`, rows contiguous | for each non-zero `w[o,k]`: `Y[o,:] += w·X[k,:]`, a stream of `N` fused multiply-adds |
//! | [`Csr::matvec`] `y = W·x + b` | `x` `[K]` | per row: a gathered dot product over the non-zeros, four partial sums |
//!
//! A non-zero costs 8 bytes (f32 value, u32 column) against 4 bytes per
//! weight dense: a layer gains from its sparse form below a density of
//! roughly ½ in bytes moved, and lower in time, since the dense product
//! streams its weights with no index (the crossover `bench-infer` measures).

use crate::ops::cpu::simd;

/// A matrix in compressed-sparse-row form: row `r`'s non-zeros are
/// `values[row_ptr[r]..row_ptr[r+1]]` in columns `cols[…]`, ascending.
#[derive(Clone, Debug, PartialEq)]
pub struct Csr {
    rows: usize,
    cols: usize,
    row_ptr: Vec<u32>,
    col_idx: Vec<u32>,
    values: Vec<f32>,
}

impl Csr {
    /// The non-zeros of the row-major `rows × cols` matrix `dense` (a zero of
    /// either sign is left out). `None` when the matrix holds 2³² or more
    /// entries per row or non-zeros in all (the indices are u32).
    pub fn from_dense(dense: &[f32], rows: usize, cols: usize) -> Option<Self> {
        assert_eq!(dense.len(), rows * cols, "a {rows}×{cols} matrix");
        u32::try_from(cols).ok()?;
        let mut row_ptr = Vec::with_capacity(rows + 1);
        let (mut col_idx, mut values) = (Vec::new(), Vec::new());
        row_ptr.push(0);
        for row in dense.chunks_exact(cols.max(1)).take(rows) {
            for (c, &v) in row.iter().enumerate() {
                if v != 0.0 {
                    col_idx.push(c as u32);
                    values.push(v);
                }
            }
            row_ptr.push(u32::try_from(values.len()).ok()?);
        }
        row_ptr.resize(rows + 1, 0);
        Some(Self {
            rows,
            cols,
            row_ptr,
            col_idx,
            values,
        })
    }

    /// Rows of the matrix.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of the matrix.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Stored non-zeros.
    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// Bytes of the three arrays (what a product streams).
    pub fn bytes(&self) -> usize {
        4 * (self.row_ptr.len() + self.col_idx.len() + self.values.len())
    }

    /// The non-zeros of row `r`: columns and values.
    fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.row_ptr[r] as usize, self.row_ptr[r + 1] as usize);
        (&self.col_idx[a..b], &self.values[a..b])
    }

    /// `y = W·x (+ b)`: `x` of length `cols`, `y` of length `rows`.
    ///
    /// # Panics
    /// When a length disagrees with the matrix.
    pub fn matvec(&self, x: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
        assert_eq!(x.len(), self.cols, "x");
        assert_eq!(y.len(), self.rows, "y");
        if let Some(b) = bias {
            assert_eq!(b.len(), self.rows, "bias");
        }
        simd(
            #[inline(always)]
            || {
                for (r, out) in y.iter_mut().enumerate() {
                    let (cols, vals) = self.row(r);
                    let mut acc = [0f32; 4];
                    let mut chunks = cols.chunks_exact(4).zip(vals.chunks_exact(4));
                    for (c, v) in &mut chunks {
                        for i in 0..4 {
                            acc[i] += v[i] * x[c[i] as usize];
                        }
                    }
                    let tail = cols.len() - cols.len() % 4;
                    let mut sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
                    for (c, v) in cols[tail..].iter().zip(&vals[tail..]) {
                        sum += v * x[*c as usize];
                    }
                    *out = sum + bias.map_or(0.0, |b| b[r]);
                }
            },
        )
    }

    /// `Y = W·X (+ b broadcast along rows)`: `X` row-major `[cols, n]`, `Y`
    /// row-major `[rows, n]`, overwritten. Single-threaded: splitting the
    /// rows over two threads made a 300×784 layer at density 0.1 and batch
    /// 64 slower (155 µs against 109 µs, `bench-infer`), the threads sharing
    /// the reads of `X`; a caller parallelises over samples instead.
    ///
    /// # Panics
    /// When a length disagrees with the matrix.
    pub fn matmul(&self, x: &[f32], n: usize, bias: Option<&[f32]>, y: &mut [f32]) {
        assert_eq!(x.len(), self.cols * n, "X");
        assert_eq!(y.len(), self.rows * n, "Y");
        if let Some(b) = bias {
            assert_eq!(b.len(), self.rows, "bias");
        }
        if n == 0 {
            return;
        }
        self.matmul_rows(x, n, bias, y, Level::best())
    }

    /// The rows of [`Csr::matmul`] into `y` (whole rows of `n`) with the
    /// kernels of `level`.
    fn matmul_rows(&self, x: &[f32], n: usize, bias: Option<&[f32]>, y: &mut [f32], level: Level) {
        for (r, out) in y.chunks_exact_mut(n).enumerate() {
            let b = bias.map_or(0.0, |b| b[r]);
            let (cols, vals) = self.row(r);
            // Every column index is below `self.cols` (from_dense) and
            // `x.len() == self.cols * n` (checked by matmul): each row of X
            // read below lies inside `x`.
            match level {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `level` is only Avx512 where the CPU has AVX-512F
                // (Level::available); the reads stay inside `x` and the
                // writes inside `out` (see above).
                Level::Avx512 => unsafe { x86::row_avx512(cols, vals, x, n, b, out) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above, with AVX2 and FMA.
                Level::Avx2 => unsafe { x86::row_avx2(cols, vals, x, n, b, out) },
                _ => row_scalar(cols, vals, x, n, 0, b, out),
            }
        }
    }
}

/// The instruction sets the batched product has kernels for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    /// 512-bit vectors (AVX-512F).
    Avx512,
    /// 256-bit vectors with fused multiply-add (AVX2 + FMA).
    Avx2,
    /// Plain loops.
    Scalar,
}

impl Level {
    /// Every level this CPU can run, widest first.
    pub(crate) fn available() -> Vec<Level> {
        let mut out = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                out.push(Level::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                out.push(Level::Avx2);
            }
        }
        out.push(Level::Scalar);
        out
    }

    /// The widest level this CPU can run (detected once).
    pub(crate) fn best() -> Level {
        static BEST: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| Level::available()[0])
    }
}

/// Columns `j..n` of one output row of [`Csr::matmul`]:
/// `out[j] = b + Σ v·X[c, j]` over the row's non-zeros `(c, v)`.
fn row_scalar(cols: &[u32], vals: &[f32], x: &[f32], n: usize, j: usize, b: f32, out: &mut [f32]) {
    for (jj, o) in out.iter_mut().enumerate().skip(j) {
        let mut acc = b;
        for (c, v) in cols.iter().zip(vals) {
            acc += v * x[*c as usize * n + jj];
        }
        *o = acc;
    }
}

/// The vector kernels of one output row: the columns of `X` in blocks whose
/// sums stay in registers across the row's non-zeros (64 then 16 floats
/// with AVX-512, 32 then 8 with AVX2), the rest by [`row_scalar`].
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::row_scalar;

    /// # Safety
    /// AVX-512F must be present; every `c·n + n ≤ x.len()` for the columns
    /// `c` of `cols`, and `out.len() == n`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn row_avx512(
        cols: &[u32],
        vals: &[f32],
        x: &[f32],
        n: usize,
        b: f32,
        out: &mut [f32],
    ) {
        let xp = x.as_ptr();
        let op = out.as_mut_ptr();
        let mut j = 0;
        while j + 64 <= n {
            let mut acc = [_mm512_set1_ps(b); 4];
            for (c, v) in cols.iter().zip(vals) {
                let p = xp.add(*c as usize * n + j);
                let vv = _mm512_set1_ps(*v);
                for (k, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(vv, _mm512_loadu_ps(p.add(16 * k)), *a);
                }
            }
            for (k, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(op.add(j + 16 * k), *a);
            }
            j += 64;
        }
        while j + 16 <= n {
            let mut acc = _mm512_set1_ps(b);
            for (c, v) in cols.iter().zip(vals) {
                let p = xp.add(*c as usize * n + j);
                acc = _mm512_fmadd_ps(_mm512_set1_ps(*v), _mm512_loadu_ps(p), acc);
            }
            _mm512_storeu_ps(op.add(j), acc);
            j += 16;
        }
        row_scalar(cols, vals, x, n, j, b, out);
    }

    /// # Safety
    /// AVX2 and FMA must be present; otherwise as [`row_avx512`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn row_avx2(
        cols: &[u32],
        vals: &[f32],
        x: &[f32],
        n: usize,
        b: f32,
        out: &mut [f32],
    ) {
        let xp = x.as_ptr();
        let op = out.as_mut_ptr();
        let mut j = 0;
        while j + 32 <= n {
            let mut acc = [_mm256_set1_ps(b); 4];
            for (c, v) in cols.iter().zip(vals) {
                let p = xp.add(*c as usize * n + j);
                let vv = _mm256_set1_ps(*v);
                for (k, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(vv, _mm256_loadu_ps(p.add(8 * k)), *a);
                }
            }
            for (k, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(op.add(j + 8 * k), *a);
            }
            j += 32;
        }
        while j + 8 <= n {
            let mut acc = _mm256_set1_ps(b);
            for (c, v) in cols.iter().zip(vals) {
                let p = xp.add(*c as usize * n + j);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(*v), _mm256_loadu_ps(p), acc);
            }
            _mm256_storeu_ps(op.add(j), acc);
            j += 8;
        }
        row_scalar(cols, vals, x, n, j, b, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Y = W·X + b` by the definition, in f64.
    fn reference(w: &[f32], m: usize, k: usize, x: &[f32], n: usize, b: &[f32]) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k)
                    .map(|c| w[i * k + c] as f64 * x[c * n + j] as f64)
                    .sum();
                y[i * n + j] = (s + b[i] as f64) as f32;
            }
        }
        y
    }

    fn pseudo(i: usize) -> f32 {
        ((i as f64 * 0.7548776662).fract() * 2.0 - 1.0) as f32
    }

    #[test]
    fn products_equal_the_definition() {
        let (m, k) = (37, 53);
        // about 70 % zeros, a zero row and a full row
        let w: Vec<f32> = (0..m * k)
            .map(|i| match i / k {
                3 => 0.0,
                5 => pseudo(i),
                _ if (i * 7919) % 10 < 7 => 0.0,
                _ => pseudo(i),
            })
            .collect();
        let b: Vec<f32> = (0..m).map(|i| pseudo(i + 999)).collect();
        let csr = Csr::from_dense(&w, m, k).unwrap();
        assert_eq!(csr.nnz(), w.iter().filter(|v| **v != 0.0).count());
        for n in [1, 3, 64, 3000] {
            let x: Vec<f32> = (0..k * n).map(|i| pseudo(i + 5)).collect();
            let want = reference(&w, m, k, &x, n, &b);
            let mut y = vec![f32::NAN; m * n];
            csr.matmul(&x, n, Some(&b), &mut y);
            for (a, e) in y.iter().zip(&want) {
                assert!(
                    (a - e).abs() <= 1e-5 * e.abs().max(1.0),
                    "n={n}: {a} vs {e}"
                );
            }
            if n == 1 {
                let mut y1 = vec![f32::NAN; m];
                csr.matvec(&x, Some(&b), &mut y1);
                for (a, e) in y1.iter().zip(&want) {
                    assert!(
                        (a - e).abs() <= 1e-5 * e.abs().max(1.0),
                        "matvec: {a} vs {e}"
                    );
                }
            }
        }
    }
}
