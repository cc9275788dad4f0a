//! Post-training INT8 quantisation: symmetric per-output-channel weights and
//! symmetric per-tensor activations, with the integer products the inference
//! runtime runs.
//!
//! A weight row `w_o` (output channel `o`; a convolution's `[in·kh·kw]`) gets
//! the scale `s_o = max_k |w_ok| / 127` and the values
//! `q_ok = round(w_ok / s_o)` in `[−127, 127]` (ties to even, as
//! `torch.round`); a zero stays zero, so a pruned weight stays pruned. An
//! all-zero row takes the scale 1. An activation tensor `x` gets
//! `s_x = max |x| / 127` — calibrated once on training batches (static) or
//! taken from each batch (dynamic) — and `q(x) = round(x / s_x)` clamped to
//! `[−127, 127]`. A linear layer then computes
//! `y_o = s_o · s_x · Σ_k q_ok · q(x)_k + b_o`, the sum in i32 (127² · 2¹⁷
//! terms fit).

/// One weight quantised per output channel.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedWeight {
    /// The weight's shape, `[out, …]`.
    pub shape: Vec<usize>,
    /// The values, row-major, in `[−127, 127]`.
    pub values: Vec<i8>,
    /// One scale per output channel, finite and > 0.
    pub scales: Vec<f32>,
    /// The static activation scale of the layer's input (calibrated), or
    /// `None` for activations quantised per batch.
    pub input_scale: Option<f32>,
}

/// `value / scale` rounded (ties to even, one vector instruction) and
/// clamped to `[−127, 127]`.
#[inline(always)]
pub fn quantize_value(value: f32, inv_scale: f32) -> i8 {
    (value * inv_scale).round_ties_even().clamp(-127.0, 127.0) as i8
}

/// `values` quantised with `1/inv_scale`, vectorised under the AVX-512/AVX2
/// dispatch (a scalar `round` is a library call per value).
pub(crate) fn quantize_all(values: &[f32], inv_scale: f32) -> Vec<i8> {
    crate::ops::cpu::simd(
        #[inline(always)]
        || {
            values
                .iter()
                .map(|v| quantize_value(*v, inv_scale))
                .collect()
        },
    )
}

/// `max |x|` of `values`, vectorised under the AVX-512/AVX2 dispatch.
pub(crate) fn max_abs(values: &[f32]) -> f32 {
    crate::ops::cpu::simd(
        #[inline(always)]
        || values.iter().fold(0f32, |m, v| m.max(v.abs())),
    )
}

/// The scale of a tensor whose largest magnitude is `max_abs`: `max_abs/127`,
/// or 1 for an all-zero tensor.
pub fn scale_of(max_abs: f32) -> f32 {
    if max_abs > 0.0 && max_abs.is_finite() {
        max_abs / 127.0
    } else {
        1.0
    }
}

impl QuantizedWeight {
    /// Quantises `values` of `shape` (rank ≥ 1) per output channel (the
    /// first axis).
    ///
    /// # Panics
    /// When `shape` does not describe `values`.
    pub fn quantize(values: &[f32], shape: &[usize]) -> Self {
        let n: usize = shape.iter().product();
        assert_eq!(
            n,
            values.len(),
            "shape {shape:?} vs {} values",
            values.len()
        );
        let rows = shape.first().copied().unwrap_or(1).max(1);
        let row_len = n / rows;
        let mut q = Vec::with_capacity(n);
        let mut scales = Vec::with_capacity(rows);
        for row in values.chunks(row_len.max(1)).take(rows) {
            let s = scale_of(row.iter().fold(0f32, |m, v| m.max(v.abs())));
            let inv = 1.0 / s;
            q.extend(row.iter().map(|v| quantize_value(*v, inv)));
            scales.push(s);
        }
        Self {
            shape: shape.to_vec(),
            values: q,
            scales,
            input_scale: None,
        }
    }

    /// The f32 values `q · s_o` (what candle's forward pass and the other
    /// commands see of an INT8 checkpoint).
    pub fn dequantize(&self) -> Vec<f32> {
        let row_len = self.values.len() / self.scales.len().max(1);
        self.values
            .chunks(row_len.max(1))
            .zip(&self.scales)
            .flat_map(|(row, s)| row.iter().map(move |q| *q as f32 * s))
            .collect()
    }

    /// Checks the parts against each other: values for the shape, one
    /// finite positive scale per output channel, a finite positive input
    /// scale, no −128. The error says which.
    pub fn check(&self) -> Result<(), String> {
        let n = self
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("shape {:?} overflows", self.shape))?;
        if self.values.len() != n {
            return Err(format!(
                "{} values for shape {:?}",
                self.values.len(),
                self.shape
            ));
        }
        let rows = self.shape.first().copied().unwrap_or(1);
        if self.scales.len() != rows {
            return Err(format!(
                "{} scales for {rows} output channels",
                self.scales.len()
            ));
        }
        if let Some((o, s)) = self
            .scales
            .iter()
            .enumerate()
            .find(|(_, s)| !(s.is_finite() && **s > 0.0))
        {
            return Err(format!(
                "scale of output channel {o} is {s}; scales must be finite and > 0"
            ));
        }
        if let Some(s) = self.input_scale.filter(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(format!("input scale is {s}; it must be finite and > 0"));
        }
        if self.values.contains(&i8::MIN) {
            return Err("a value is −128; symmetric INT8 holds −127..=127".to_string());
        }
        Ok(())
    }
}

/// `Σ a_k · b_k` of two INT8 vectors, in i32 (vectorised by the compiler
/// into 16-bit multiply-adds under the AVX-512/AVX2 dispatch).
#[inline(always)]
pub(crate) fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_quantisation_keeps_zeros_and_the_row_maximum() {
        // torch: w = torch.tensor([[0.5, -1.0, 0.0, 0.25], [0.0, 0.0, 0.0, 0.0], [3.0, 1.5, -0.01, 0.0]])
        // s = w.abs().amax(1) / 127 → [0.007874, 0 (→ 1), 0.023622]
        // torch.round(w / s[:, None]).clamp(-127, 127) → [[64, -127, 0, 32], [0]*4, [127, 64, 0, 0]]
        // (half to even, as torch.round: 31.75 → 32; 1.5/0.023622 = 63.5 → 64)
        let w = [
            0.5, -1.0, 0.0, 0.25, 0.0, 0.0, 0.0, 0.0, 3.0, 1.5, -0.01, 0.0,
        ];
        let q = QuantizedWeight::quantize(&w, &[3, 4]);
        assert_eq!(q.values, vec![64, -127, 0, 32, 0, 0, 0, 0, 127, 64, 0, 0]);
        assert_eq!(q.scales, vec![1.0 / 127.0, 1.0, 3.0 / 127.0]);
        q.check().unwrap();
        let back = q.dequantize();
        for (a, b) in back.iter().zip(&w) {
            assert!((a - b).abs() <= 0.5 * 3.0 / 127.0 + 1e-7, "{a} vs {b}");
        }
        assert_eq!(back[2], 0.0);
        let mut bad = q.clone();
        bad.scales[1] = 0.0;
        assert!(bad.check().unwrap_err().contains("channel 1 is 0"));
        bad.scales[1] = f32::NAN;
        assert!(bad.check().unwrap_err().contains("channel 1 is NaN"));
        let mut bad = q;
        bad.input_scale = Some(0.0);
        assert!(bad.check().unwrap_err().contains("input scale is 0"));
    }

    #[test]
    fn every_batched_sparse_kernel_equals_the_definition() {
        // one row with 37 non-zeros over 50 columns, batches with every tail
        let cols: Vec<u32> = (0..50).filter(|c| c % 4 != 1).collect();
        let vals: Vec<i8> = cols
            .iter()
            .map(|c| ((*c as i32 * 53) % 255 - 127) as i8)
            .collect();
        for n in [16, 64, 70, 100] {
            let qx: Vec<i8> = (0..50 * n).map(|i| ((i * 29) % 255) as i32 as i8).collect();
            let want: Vec<f32> = (0..n)
                .map(|j| {
                    let acc: i64 = cols
                        .iter()
                        .zip(&vals)
                        .map(|(c, v)| *v as i64 * qx[*c as usize * n + j] as i64)
                        .sum();
                    acc as f32 * 0.01 + 0.5
                })
                .collect();
            for level in crate::ops::sparse::Level::available() {
                let mut out = vec![f32::NAN; n];
                sparse_batched(&cols, &vals, &qx, n, 0.01, 0.5, &mut out, level);
                for (a, e) in out.iter().zip(&want) {
                    assert!(
                        (a - e).abs() <= 1e-5 * e.abs().max(1.0),
                        "{level:?} n={n}: {a} vs {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn integer_dot_products_equal_the_definition() {
        let a: Vec<i8> = (0..1000).map(|i| ((i * 37) % 255 - 127) as i8).collect();
        let b: Vec<i8> = (0..1000).map(|i| ((i * 91) % 255 - 127) as i8).collect();
        let want: i64 = a.iter().zip(&b).map(|(x, y)| *x as i64 * *y as i64).sum();
        assert_eq!(dot_i8(&a, &b) as i64, want);
    }
}

/// An INT8 weight matrix as a layer of the inference runtime multiplies by
/// it: dense rows, or the non-zeros of each row (CSR, u32 columns).
#[derive(Clone, Debug)]
pub(crate) enum Int8Matrix {
    Dense(Vec<i8>),
    Sparse {
        row_ptr: Vec<u32>,
        cols: Vec<u32>,
        values: Vec<i8>,
    },
}

/// A linear layer with INT8 weights: `y_o = s_o·s_x·Σ_k q_ok·q(x)_k + b_o`.
#[derive(Clone, Debug)]
pub(crate) struct Int8Linear {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) matrix: Int8Matrix,
    pub(crate) scales: Vec<f32>,
    /// The static input scale, or `None` to take it from each batch.
    pub(crate) input_scale: Option<f32>,
}

impl Int8Linear {
    /// The layer of `w` (a checked `[rows, cols]` weight), its rows stored
    /// sparse or dense.
    pub(crate) fn new(w: &QuantizedWeight, sparse: bool) -> Option<Self> {
        let rows = *w.shape.first()?;
        let cols = w.values.len() / rows.max(1);
        let matrix = if sparse {
            let (mut row_ptr, mut idx, mut values) = (vec![0u32], Vec::new(), Vec::new());
            for row in w.values.chunks(cols.max(1)).take(rows) {
                for (c, v) in row.iter().enumerate() {
                    if *v != 0 {
                        idx.push(u32::try_from(c).ok()?);
                        values.push(*v);
                    }
                }
                row_ptr.push(u32::try_from(values.len()).ok()?);
            }
            Int8Matrix::Sparse {
                row_ptr,
                cols: idx,
                values,
            }
        } else {
            Int8Matrix::Dense(w.values.clone())
        };
        Some(Self {
            rows,
            cols,
            matrix,
            scales: w.scales.clone(),
            input_scale: w.input_scale,
        })
    }

    /// `y = W·x + b` for `batch` samples: `x` `[cols, batch]` row-major (the
    /// runtime's layout of activations; f32, quantised here with the static
    /// or the batch's scale), `y` written `[rows, batch]`.
    ///
    /// Sparse rows with more than one sample run [`sparse_batched`] on the
    /// quantised `[cols, batch]` rows (every non-zero adds `v·q(X)[c, :]`
    /// into i32 sums held in registers); everything else is a dot product per
    /// sample over its quantised features.
    pub(crate) fn forward(&self, x: &[f32], batch: usize, bias: &[f32], y: &mut [f32]) {
        let s_x = self.input_scale.unwrap_or_else(|| scale_of(max_abs(x)));
        let q = quantize_all(x, 1.0 / s_x);
        if let (
            Int8Matrix::Sparse {
                row_ptr,
                cols,
                values,
            },
            true,
        ) = (&self.matrix, batch > 1)
        {
            for o in 0..self.rows {
                let (a, e) = (row_ptr[o] as usize, row_ptr[o + 1] as usize);
                let scale = self.scales[o] * s_x;
                sparse_batched(
                    &cols[a..e],
                    &values[a..e],
                    &q,
                    batch,
                    scale,
                    bias[o],
                    &mut y[o * batch..(o + 1) * batch],
                    crate::ops::sparse::Level::best(),
                );
            }
            return;
        }
        // [cols, batch] → one row of features per sample
        let q = if batch > 1 {
            let mut t = vec![0i8; q.len()];
            for (c, row) in q.chunks_exact(batch).enumerate() {
                for (b, v) in row.iter().enumerate() {
                    t[b * self.cols + c] = *v;
                }
            }
            t
        } else {
            q
        };
        crate::ops::cpu::simd(
            #[inline(always)]
            || {
                for (b, qx) in q.chunks_exact(self.cols).enumerate().take(batch) {
                    for o in 0..self.rows {
                        let acc = match &self.matrix {
                            Int8Matrix::Dense(w) => {
                                dot_i8(&w[o * self.cols..(o + 1) * self.cols], qx)
                            }
                            Int8Matrix::Sparse {
                                row_ptr,
                                cols,
                                values,
                            } => {
                                let (a, e) = (row_ptr[o] as usize, row_ptr[o + 1] as usize);
                                cols[a..e]
                                    .iter()
                                    .zip(&values[a..e])
                                    .map(|(c, v)| i32::from(*v) * i32::from(qx[*c as usize]))
                                    .sum()
                            }
                        };
                        y[o * batch + b] = acc as f32 * (self.scales[o] * s_x) + bias[o];
                    }
                }
            },
        )
    }
}

/// One output row of a sparse INT8 layer over a batch: `out[j] = scale ·
/// Σ v·qx[c·n + j] + bias` over the row's non-zeros `(c, v)`, `qx` the
/// quantised inputs `[cols, n]`. On AVX-512 and AVX2 the sums of 64 (32)
/// samples stay in i32 registers across the non-zeros (each non-zero: the
/// samples' bytes widened to i32, one multiply, one add); the rest of the
/// batch one sample at a time.
#[allow(clippy::too_many_arguments)] // one row's data, its scale and bias, and the kernel level
fn sparse_batched(
    cols: &[u32],
    vals: &[i8],
    qx: &[i8],
    n: usize,
    scale: f32,
    bias: f32,
    out: &mut [f32],
    level: crate::ops::sparse::Level,
) {
    // Every column index is below the layer's `cols` (built from the dense
    // weight) and `qx.len() == cols · n`: each row read lies inside `qx`.
    let mut j = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use crate::ops::sparse::Level;
        match level {
            // SAFETY: a level is Avx512 only where the CPU has AVX-512F,
            // Avx2 only with AVX2 (and FMA); the reads stay inside `qx` and
            // the writes inside `out` (see above).
            Level::Avx512 => {
                j = unsafe { x86::sparse_batched_avx512(cols, vals, qx, n, scale, bias, out) }
            }
            Level::Avx2 => {
                j = unsafe { x86::sparse_batched_avx2(cols, vals, qx, n, scale, bias, out) }
            }
            Level::Scalar => {}
        }
    }
    for (jj, o) in out.iter_mut().enumerate().skip(j) {
        let acc: i32 = cols
            .iter()
            .zip(vals)
            .map(|(c, v)| i32::from(*v) * i32::from(qx[*c as usize * n + jj]))
            .sum();
        *o = acc as f32 * scale + bias;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Samples `0..j` of [`super::sparse_batched`] in blocks of 64 then 16;
    /// returns `j`.
    ///
    /// # Safety
    /// AVX-512F must be present; `c·n + n ≤ qx.len()` for every column `c`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sparse_batched_avx512(
        cols: &[u32],
        vals: &[i8],
        qx: &[i8],
        n: usize,
        scale: f32,
        bias: f32,
        out: &mut [f32],
    ) -> usize {
        let (xp, op) = (qx.as_ptr(), out.as_mut_ptr());
        let (vs, vb) = (_mm512_set1_ps(scale), _mm512_set1_ps(bias));
        let mut j = 0;
        while j + 16 <= n {
            let blocks = if j + 64 <= n { 4 } else { 1 };
            let mut acc = [_mm512_setzero_si512(); 4];
            for (c, v) in cols.iter().zip(vals) {
                let p = xp.add(*c as usize * n + j);
                let vv = _mm512_set1_epi32(i32::from(*v));
                for (k, a) in acc.iter_mut().enumerate().take(blocks) {
                    let x = _mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(16 * k) as *const __m128i));
                    *a = _mm512_add_epi32(*a, _mm512_mullo_epi32(x, vv));
                }
            }
            for (k, a) in acc.iter().enumerate().take(blocks) {
                let y = _mm512_fmadd_ps(_mm512_cvtepi32_ps(*a), vs, vb);
                _mm512_storeu_ps(op.add(j + 16 * k), y);
            }
            j += 16 * blocks;
        }
        j
    }

    /// As [`sparse_batched_avx512`] with AVX2, in blocks of 32 then 8.
    ///
    /// # Safety
    /// AVX2 and FMA must be present; otherwise as above.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sparse_batched_avx2(
        cols: &[u32],
        vals: &[i8],
        qx: &[i8],
        n: usize,
        scale: f32,
        bias: f32,
        out: &mut [f32],
    ) -> usize {
        let (xp, op) = (qx.as_ptr(), out.as_mut_ptr());
        let (vs, vb) = (_mm256_set1_ps(scale), _mm256_set1_ps(bias));
        let mut j = 0;
        while j + 8 <= n {
            let blocks = if j + 32 <= n { 4 } else { 1 };
            let mut acc = [_mm256_setzero_si256(); 4];
            for (c, v) in cols.iter().zip(vals) {
                let p = xp.add(*c as usize * n + j);
                let vv = _mm256_set1_epi32(i32::from(*v));
                for (k, a) in acc.iter_mut().enumerate().take(blocks) {
                    let x = _mm256_cvtepi8_epi32(_mm_loadl_epi64(p.add(8 * k) as *const __m128i));
                    *a = _mm256_add_epi32(*a, _mm256_mullo_epi32(x, vv));
                }
            }
            for (k, a) in acc.iter().enumerate().take(blocks) {
                let y = _mm256_fmadd_ps(_mm256_cvtepi32_ps(*a), vs, vb);
                _mm256_storeu_ps(op.add(j + 8 * k), y);
            }
            j += 8 * blocks;
        }
        j
    }
}
