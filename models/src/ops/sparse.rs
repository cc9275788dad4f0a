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
//! | [`Csr::matvec`] `y = W·x + b` | `x` `[K]` | per row: a dot product over the non-zeros, four partial sums |
//! | [`Csr::matmul_shifted`] | row `c` of `X` is `x[c..c + N]` | as `matmul`: a convolution on its padded input, no im2col |
//!
//! A non-zero costs 8 bytes (f32 value, u32 column) against 4 bytes per
//! weight dense: a layer gains from its sparse form below a density of
//! roughly ½ in bytes moved, and lower in time, since the dense product
//! streams its weights with no index (the crossover `bench-infer` measures).

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
        // Scalar loads: each non-zero costs three loads (column, value,
        // x[column]), about one cycle on a CPU with three load ports. Vector
        // gathers of x (16 lanes AVX-512, 8 AVX2), over CSR rows or over a
        // SELL-16 layout (16 rows per vector, no per-row horizontal sum),
        // were tried on the project's AVX-512 AMD EPYC machine and ran no
        // faster (about a non-zero per cycle either way), so the plain loop
        // stays.
        for (r, out) in y.iter_mut().enumerate() {
            let (cols, vals) = self.row(r);
            *out = dot(cols, vals, x) + bias.map_or(0.0, |b| b[r]);
        }
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
        // Every column index is below `self.cols` (from_dense) and
        // `x.len() == self.cols * n`: row `c` of X, `x[c·n..c·n + n]`, lies
        // inside `x`.
        self.matmul_rows(x, n, n, bias, y, Level::best())
    }

    /// `Y = W·X (+ b)` where row `c` of `X` is `x[c..c + n]`: the matrix's
    /// "columns" are offsets into `x`, and the rows of `X` overlap. This is
    /// a convolution without im2col: with the input zero-padded and the
    /// output computed on the padded width, the row of kernel tap `(c, a,
    /// b)` is the padded input shifted by `c·Hp·Wp + a·Wp + b`
    /// ([`Csr::with_columns`] makes such a matrix).
    ///
    /// # Panics
    /// When `y` is not `rows · n` long or an offset plus `n` passes the end
    /// of `x`.
    pub fn matmul_shifted(&self, x: &[f32], n: usize, bias: Option<&[f32]>, y: &mut [f32]) {
        assert_eq!(y.len(), self.rows * n, "Y");
        if let Some(b) = bias {
            assert_eq!(b.len(), self.rows, "bias");
        }
        if n == 0 {
            return;
        }
        let last = self.col_idx.iter().max().map_or(0, |&c| c as usize);
        assert!(last + n <= x.len(), "X: offset {last} + {n} > {}", x.len());
        self.matmul_rows(x, 1, n, bias, y, Level::best())
    }

    /// This matrix with column `c` renamed `map(c)` (same non-zeros, same
    /// order within each row): for [`Csr::matmul_shifted`]. `cols` is the
    /// new column count; `None` when a new column is `cols` or more.
    pub fn with_columns(&self, cols: usize, map: impl Fn(u32) -> u32) -> Option<Self> {
        u32::try_from(cols).ok()?;
        let col_idx: Vec<u32> = self.col_idx.iter().map(|&c| map(c)).collect();
        if col_idx.iter().any(|&c| c as usize >= cols) {
            return None;
        }
        Some(Self {
            cols,
            col_idx,
            ..self.clone()
        })
    }

    /// The rows of the products into `y` (whole rows of `n`) with the
    /// kernels of `level`: row `c` of X is `x[c·step..c·step + n]`, inside
    /// `x` for every stored column `c` (the callers check it).
    fn matmul_rows(
        &self,
        x: &[f32],
        step: usize,
        n: usize,
        bias: Option<&[f32]>,
        y: &mut [f32],
        level: Level,
    ) {
        for (r, out) in y.chunks_exact_mut(n).enumerate() {
            let b = bias.map_or(0.0, |b| b[r]);
            let (cols, vals) = self.row(r);
            match level {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `level` is only Avx512 where the CPU has AVX-512F
                // (Level::available); the reads stay inside `x` (the
                // callers' checks above) and the writes inside `out`.
                Level::Avx512 => unsafe { x86::row_avx512(cols, vals, x, step, b, out) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above, with AVX2 and FMA.
                Level::Avx2 => unsafe { x86::row_avx2(cols, vals, x, step, b, out) },
                _ => row_scalar(cols, vals, x, step, 0, b, out),
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

/// `Σ v·x[c]` over one row's non-zeros `(c, v)`, four partial sums.
fn dot(cols: &[u32], vals: &[f32], x: &[f32]) -> f32 {
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
    sum
}

/// Columns `j..` of one output row of the products:
/// `out[j] = b + Σ v·x[c·step + j]` over the row's non-zeros `(c, v)`.
fn row_scalar(
    cols: &[u32],
    vals: &[f32],
    x: &[f32],
    step: usize,
    j: usize,
    b: f32,
    out: &mut [f32],
) {
    for (jj, o) in out.iter_mut().enumerate().skip(j) {
        let mut acc = b;
        for (c, v) in cols.iter().zip(vals) {
            acc += v * x[*c as usize * step + jj];
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
    /// AVX-512F must be present; every `c·step + out.len() ≤ x.len()` for
    /// the columns `c` of `cols`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn row_avx512(
        cols: &[u32],
        vals: &[f32],
        x: &[f32],
        step: usize,
        b: f32,
        out: &mut [f32],
    ) {
        let n = out.len();
        let xp = x.as_ptr();
        let op = out.as_mut_ptr();
        let mut j = 0;
        while j + 64 <= n {
            let mut acc = [_mm512_set1_ps(b); 4];
            for (c, v) in cols.iter().zip(vals) {
                let p = xp.add(*c as usize * step + j);
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
                let p = xp.add(*c as usize * step + j);
                acc = _mm512_fmadd_ps(_mm512_set1_ps(*v), _mm512_loadu_ps(p), acc);
            }
            _mm512_storeu_ps(op.add(j), acc);
            j += 16;
        }
        row_scalar(cols, vals, x, step, j, b, out);
    }

    /// # Safety
    /// AVX2 and FMA must be present; otherwise as [`row_avx512`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn row_avx2(
        cols: &[u32],
        vals: &[f32],
        x: &[f32],
        step: usize,
        b: f32,
        out: &mut [f32],
    ) {
        let n = out.len();
        let xp = x.as_ptr();
        let op = out.as_mut_ptr();
        let mut j = 0;
        while j + 32 <= n {
            let mut acc = [_mm256_set1_ps(b); 4];
            for (c, v) in cols.iter().zip(vals) {
                let p = xp.add(*c as usize * step + j);
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
                let p = xp.add(*c as usize * step + j);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(*v), _mm256_loadu_ps(p), acc);
            }
            _mm256_storeu_ps(op.add(j), acc);
            j += 8;
        }
        row_scalar(cols, vals, x, step, j, b, out);
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
            // every kernel this CPU has, then the dispatching entry point
            for level in Level::available() {
                let mut y = vec![f32::NAN; m * n];
                csr.matmul_rows(&x, n, n, Some(&b), &mut y, level);
                for (a, e) in y.iter().zip(&want) {
                    assert!(
                        (a - e).abs() <= 1e-5 * e.abs().max(1.0),
                        "n={n} {level:?}: {a} vs {e}"
                    );
                }
            }
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

    #[test]
    fn shifted_rows_compute_a_convolution() {
        // A 3×3 convolution, padding 1, of a 2×5×7 input into 3 channels,
        // against the definition: the input zero-padded to 7×9 (plus two
        // floats for the last taps), the output on the padded width.
        let (c, h, w, o) = (2usize, 5usize, 7usize, 3usize);
        let (hp, wp) = (h + 2, w + 2);
        let weight: Vec<f32> = (0..o * c * 9)
            .map(|i| if i % 3 == 1 { 0.0 } else { pseudo(i) })
            .collect();
        let x: Vec<f32> = (0..c * h * w).map(|i| pseudo(i + 77)).collect();
        let mut padded = vec![0f32; c * hp * wp + 2];
        for ch in 0..c {
            for i in 0..h {
                for j in 0..w {
                    padded[ch * hp * wp + (i + 1) * wp + j + 1] = x[(ch * h + i) * w + j];
                }
            }
        }
        let csr = Csr::from_dense(&weight, o, c * 9)
            .unwrap()
            .with_columns(padded.len(), |k| {
                let (ch, a, b) = (k / 9, (k % 9) / 3, k % 3);
                ch * (hp * wp) as u32 + a * wp as u32 + b
            })
            .unwrap();
        let n = h * wp;
        let mut y = vec![f32::NAN; o * n];
        csr.matmul_shifted(&padded, n, None, &mut y);
        for oc in 0..o {
            for i in 0..h {
                for j in 0..w {
                    let mut want = 0f64;
                    for ch in 0..c {
                        for a in 0..3 {
                            for b in 0..3 {
                                let (r, q) = (i + a, j + b);
                                if r < 1 || r > h || q < 1 || q > w {
                                    continue;
                                }
                                want += weight[((oc * c + ch) * 3 + a) * 3 + b] as f64
                                    * x[(ch * h + r - 1) * w + q - 1] as f64;
                            }
                        }
                    }
                    let got = y[oc * n + i * wp + j];
                    assert!(
                        (got as f64 - want).abs() < 1e-5,
                        "{oc},{i},{j}: {got} vs {want}"
                    );
                }
            }
        }
        // an offset past the end is refused
        assert!(csr.with_columns(10, |k| k).is_none());
    }
}
