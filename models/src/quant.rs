//! Post-training INT8 quantisation: symmetric per-output-channel weights and
//! symmetric per-tensor activations, with the integer products the inference
//! runtime runs.
//!
//! A weight row `w_o` (output channel `o`; a convolution's `[in·kh·kw]`) gets
//! the scale `s_o = max_k |w_ok| / 127` and the values
//! `q_ok = round(w_ok / s_o)` in `[−127, 127]` (ties away from zero, as
//! `f32::round`); a zero stays zero, so a pruned weight stays pruned. An
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

/// `value / scale` rounded and clamped to `[−127, 127]`.
#[inline]
pub fn quantize_value(value: f32, inv_scale: f32) -> i8 {
    (value * inv_scale).round().clamp(-127.0, 127.0) as i8
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
        // (torch.round is half-to-even: 63.5 → 64, 31.75 → 32; 1.5/0.023622 = 63.5 → 64 both ways)
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

    /// `y = W·x + b` for `batch` samples: `x` `[batch, cols]` row-major (f32,
    /// quantised here with the static or the batch's scale), `y` written
    /// `[rows, batch]` row-major (the runtime's layout of activations).
    pub(crate) fn forward(&self, x: &[f32], batch: usize, bias: &[f32], y: &mut [f32]) {
        let s_x = self
            .input_scale
            .unwrap_or_else(|| scale_of(x.iter().fold(0f32, |m, v| m.max(v.abs()))));
        let inv = 1.0 / s_x;
        let q: Vec<i8> = x.iter().map(|v| quantize_value(*v, inv)).collect();
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
