//! The `sparse-bitmask` encoding of compressed-tensors (the format llm-compressor
//! writes and vLLM reads), for one tensor.
//!
//! A dense tensor `NAME` of shape `[d0, …, d(n−1)]` is stored as four tensors:
//!
//! | tensor | dtype | shape | content |
//! |---|---|---|---|
//! | `NAME.shape` | i64 | `[n]` | the dense shape |
//! | `NAME.compressed` | the tensor's (f32, or i8 for an INT8 weight) | `[nnz]` | the non-zero values in row-major order |
//! | `NAME.bitmask` | u8 | `[d0, …, d(n−2), ⌈d(n−1)/8⌉]` | `x != 0` packed along the last axis, element `8k+j` of a row in bit `j` of byte `k` (numpy's `packbits(…, axis=-1, bitorder="little")`), padding bits 0 |
//! | `NAME.row_offsets` | i64 | `[d0, …, d(n−2)]` | `cumsum(c, 0) − c` of the per-row counts `c = (x != 0).sum(-1)` |
//!
//! For a matrix the row offsets are what their name says: where row `r`'s
//! values start in `compressed`. For a tensor of rank > 2 (a convolution's
//! `[out, in, kh, kw]`) the reference encoder's cumulative sum runs along the
//! first axis only, so entry `[o, i, y]` counts the non-zeros of the rows
//! `[o', i, y]` with `o' < o`: a per-position prefix over output channels, not an
//! offset into `compressed`. kdprune writes exactly that (so its files equal the
//! reference encoder's byte for byte) and checks it on reading; decoding uses
//! only the bitmask and the values, as the reference decoder does.
//!
//! A zero is stored as a cleared bit whatever its sign: a `−0.0` comes back as
//! `+0.0`, which computes the same.

/// A value type of `NAME.compressed`: f32 weights, or the i8 values of an
/// INT8 weight (compressed-tensors compresses the quantised integers when a
/// model is both sparse and quantised).
pub trait Element: Copy + PartialEq + std::fmt::Debug {
    /// The value whose bit is cleared (`−0.0` equals it for f32).
    const ZERO: Self;
}

impl Element for f32 {
    const ZERO: Self = 0.0;
}

impl Element for i8 {
    const ZERO: Self = 0;
}

/// One tensor in the `sparse-bitmask` encoding (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct BitmaskTensor<T = f32> {
    /// The dense shape.
    pub shape: Vec<usize>,
    /// The non-zero values, row-major.
    pub compressed: Vec<T>,
    /// The packed non-zero pattern, shape [`bitmask_shape`].
    pub bitmask: Vec<u8>,
    /// The per-row offsets, shape [`row_offsets_shape`].
    pub row_offsets: Vec<i64>,
}

/// The shape of `NAME.bitmask` for a dense `shape` (rank ≥ 1): the last axis
/// becomes `⌈d/8⌉` bytes.
pub fn bitmask_shape(shape: &[usize]) -> Vec<usize> {
    let mut out = shape.to_vec();
    if let Some(last) = out.last_mut() {
        *last = last.div_ceil(8);
    }
    out
}

/// The shape of `NAME.row_offsets` for a dense `shape` (rank ≥ 1): every axis
/// but the last (`[]`, a scalar, for a vector).
pub fn row_offsets_shape(shape: &[usize]) -> Vec<usize> {
    shape[..shape.len().saturating_sub(1)].to_vec()
}

/// Packs the non-zero pattern of `values` (rows of `row_len`) into bytes, bit
/// `j` of byte `k` of a row standing for element `8k + j`.
pub fn pack_rows(nonzero: impl Fn(usize) -> bool, rows: usize, row_len: usize) -> Vec<u8> {
    let bytes_per_row = row_len.div_ceil(8);
    let mut packed = vec![0u8; rows * bytes_per_row];
    for r in 0..rows {
        let row = &mut packed[r * bytes_per_row..(r + 1) * bytes_per_row];
        for c in 0..row_len {
            if nonzero(r * row_len + c) {
                row[c / 8] |= 1 << (c % 8);
            }
        }
    }
    packed
}

/// Unpacks a bitmask of `rows × row_len` bits into one bool per element;
/// errors when a padding bit (past the end of a row) is set.
pub fn unpack_rows(packed: &[u8], rows: usize, row_len: usize) -> Result<Vec<bool>, String> {
    let bytes_per_row = row_len.div_ceil(8);
    if packed.len() != rows * bytes_per_row {
        return Err(format!(
            "bitmask holds {} bytes, {rows} rows of {row_len} need {}",
            packed.len(),
            rows * bytes_per_row
        ));
    }
    let mut out = Vec::with_capacity(rows * row_len);
    for (r, row) in packed.chunks_exact(bytes_per_row.max(1)).enumerate() {
        if bytes_per_row == 0 {
            break;
        }
        out.extend((0..row_len).map(|c| row[c / 8] >> (c % 8) & 1 == 1));
        let tail_bits = row_len % 8;
        if tail_bits != 0 && row[bytes_per_row - 1] >> tail_bits != 0 {
            return Err(format!(
                "bitmask row {r} has bits set past its {row_len} elements"
            ));
        }
    }
    Ok(out)
}

/// `(rows, row_len, leading)`: the rows of the last axis, their length, and the
/// size of the first axis (the axis of the row-offset cumulative sum; 1 for a
/// vector). `None` when the element count overflows `usize`.
fn geometry(shape: &[usize]) -> Option<(usize, usize, usize)> {
    let (&row_len, lead) = shape.split_last()?;
    let rows = lead.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
    rows.checked_mul(row_len)?;
    let first = if shape.len() >= 2 { shape[0] } else { 1 };
    Some((rows, row_len, first))
}

/// The row offsets of per-row counts `counts` (rows in row-major order, the
/// first axis of `first` entries): `cumsum(counts, 0) − counts` along the first
/// axis.
fn row_offsets(counts: &[usize], first: usize) -> Vec<i64> {
    let stride = counts.len().checked_div(first).unwrap_or(0);
    let mut out = vec![0i64; counts.len()];
    for j in 0..stride {
        let mut acc = 0i64;
        for i in 0..first {
            out[i * stride + j] = acc;
            acc += counts[i * stride + j] as i64;
        }
    }
    out
}

impl<T: Element> BitmaskTensor<T> {
    /// Encodes `values` of `shape` (rank ≥ 1, `values.len()` = the product of
    /// `shape`), as the reference `bitmask_compress` does.
    ///
    /// # Panics
    /// When `shape` is empty or does not describe `values`: a caller's bug.
    pub fn compress(values: &[T], shape: &[usize]) -> Self {
        let kept: Vec<bool> = values.iter().map(|v| *v != T::ZERO).collect();
        Self::encode(values, shape, &kept)
    }

    /// The encoding with bits `kept` (every value outside them zero).
    fn encode(values: &[T], shape: &[usize], kept: &[bool]) -> Self {
        let (rows, row_len, first) = geometry(shape).expect("a shape of rank ≥ 1 without overflow");
        assert_eq!(
            rows * row_len,
            values.len(),
            "shape {shape:?} vs {} values",
            values.len()
        );
        let bitmask = pack_rows(|i| kept[i], rows, row_len);
        let compressed: Vec<T> = values
            .iter()
            .zip(kept)
            .filter(|(_, k)| **k)
            .map(|(v, _)| *v)
            .collect();
        let counts: Vec<usize> = kept
            .chunks(row_len.max(1))
            .take(rows)
            .map(|row| row.iter().filter(|k| **k).count())
            .collect();
        let counts = if row_len == 0 { vec![0; rows] } else { counts };
        Self {
            shape: shape.to_vec(),
            compressed,
            bitmask,
            row_offsets: row_offsets(&counts, first),
        }
    }

    /// As [`BitmaskTensor::compress`], but with the bits set where `kept`
    /// is (a mask), storing the kept values that are zero as explicit
    /// zeros; `None` when a value outside `kept` is not zero. compressed-
    /// tensors' decoder (`values` placed at the set bits) reads such a
    /// tensor to the same dense values. For INT8 weights: a kept weight that
    /// rounds to 0 costs one byte here instead of the whole mask stored
    /// beside.
    ///
    /// # Panics
    /// As [`BitmaskTensor::compress`], or when `kept` does not describe `values`.
    pub fn compress_kept(values: &[T], shape: &[usize], kept: &[bool]) -> Option<Self> {
        assert_eq!(kept.len(), values.len(), "one kept flag per value");
        if values.iter().zip(kept).any(|(v, k)| !k && *v != T::ZERO) {
            return None;
        }
        Some(Self::encode(values, shape, kept))
    }

    /// The dense values, after checking every part against the others: the
    /// shape (rank ≥ 1, no overflow), the bitmask's length and padding, the
    /// value count against the set bits, and the row offsets (in range,
    /// increasing along the first axis, equal to the bitmask's counts). The
    /// error says which check failed.
    pub fn decompress(&self) -> Result<Vec<T>, String> {
        let (rows, row_len, first) = geometry(&self.shape).ok_or_else(|| {
            format!(
                "shape {:?} is empty or its element count overflows",
                self.shape
            )
        })?;
        let bits = unpack_rows(&self.bitmask, rows, row_len)?;
        let set = bits.iter().filter(|b| **b).count();
        if set != self.compressed.len() {
            return Err(format!(
                "bitmask marks {set} non-zeros but {} values are stored",
                self.compressed.len()
            ));
        }
        if self.row_offsets.len() != rows {
            return Err(format!(
                "row_offsets holds {} entries, the shape has {rows} rows",
                self.row_offsets.len()
            ));
        }
        let nnz = set as i64;
        if let Some((i, o)) = self
            .row_offsets
            .iter()
            .enumerate()
            .find(|(_, o)| **o < 0 || **o > nnz)
        {
            return Err(format!("row_offsets[{i}] = {o} is out of range 0..={nnz}"));
        }
        let stride = rows.checked_div(first).unwrap_or(0);
        for i in 1..first {
            for j in 0..stride {
                let (prev, cur) = (
                    self.row_offsets[(i - 1) * stride + j],
                    self.row_offsets[i * stride + j],
                );
                if cur < prev {
                    return Err(format!(
                        "row_offsets are not increasing: entry {} = {cur} after {prev}",
                        i * stride + j
                    ));
                }
            }
        }
        let counts: Vec<usize> = (0..rows)
            .map(|r| {
                bits[r * row_len..(r + 1) * row_len]
                    .iter()
                    .filter(|b| **b)
                    .count()
            })
            .collect();
        if row_offsets(&counts, first) != self.row_offsets {
            return Err("row_offsets disagree with the bitmask's row counts".to_string());
        }
        let mut values = self.compressed.iter();
        Ok(bits
            .iter()
            .map(|&b| {
                if b {
                    *values.next().unwrap_or(&T::ZERO)
                } else {
                    T::ZERO
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_as_numpy_packbits_little() {
        // numpy.packbits([[1,0,0,1,0,0,0,0,1,1]], axis=-1, bitorder="little")
        // → [[9, 3]]
        let row = [1.0, 0.0, 0.0, -2.0, 0.0, 0.0, 0.0, 0.0, 0.5, 7.0];
        let t = BitmaskTensor::compress(&row, &[1, 10]);
        assert_eq!(t.bitmask, vec![9, 3]);
        assert_eq!(t.compressed, vec![1.0, -2.0, 0.5, 7.0]);
        assert_eq!(t.row_offsets, vec![0]);
        assert_eq!(t.decompress().unwrap(), row.to_vec());
        // the i8 values of an INT8 weight pack the same way
        let q: Vec<i8> = vec![1, 0, 0, -2, 0, 0, 0, 0, 5, 127];
        let t = BitmaskTensor::compress(&q, &[1, 10]);
        assert_eq!(t.bitmask, vec![9, 3]);
        assert_eq!(t.compressed, vec![1, -2, 5, 127]);
        assert_eq!(t.decompress().unwrap(), q);
        // with a mask: a kept zero is stored, a pruned one is not
        let kept = [
            true, true, false, true, false, false, false, false, true, true,
        ];
        let t = BitmaskTensor::compress_kept(&q, &[1, 10], &kept).unwrap();
        assert_eq!(t.bitmask, vec![11, 3]);
        assert_eq!(t.compressed, vec![1, 0, -2, 5, 127]);
        assert_eq!(t.decompress().unwrap(), q);
        // a value outside the mask has no place
        let mut outside = kept;
        outside[0] = false;
        assert!(BitmaskTensor::compress_kept(&q, &[1, 10], &outside).is_none());
    }

    #[test]
    fn row_offsets_of_a_four_dimensional_tensor_run_along_the_first_axis() {
        // x = torch.tensor([1.,0,2,0, 0,3,0,0, 4,5,6,0, 0,0,0,7]).reshape(2,2,1,4)
        // c = (x != 0).sum(-1); (torch.cumsum(c, 0) - c).flatten() → [0, 0, 2, 1]
        let x = [
            1.0, 0.0, 2.0, 0.0, 0.0, 3.0, 0.0, 0.0, 4.0, 5.0, 6.0, 0.0, 0.0, 0.0, 0.0, 7.0,
        ];
        let t = BitmaskTensor::compress(&x, &[2, 2, 1, 4]);
        assert_eq!(t.row_offsets, vec![0, 0, 2, 1]);
        assert_eq!(t.decompress().unwrap(), x.to_vec());
    }

    #[test]
    fn corrupt_parts_are_named() {
        let x = [1.0, 0.0, 2.0, 0.0, 0.0, 3.0];
        let good = BitmaskTensor::compress(&x, &[3, 2]);
        let mut t = good.clone();
        t.compressed.pop();
        assert!(t
            .decompress()
            .unwrap_err()
            .contains("3 non-zeros but 2 values"));
        let mut t = good.clone();
        t.row_offsets[2] = 9;
        assert!(t.decompress().unwrap_err().contains("out of range"));
        let mut t = good.clone();
        t.row_offsets = vec![0, 2, 1];
        assert!(t.decompress().unwrap_err().contains("not increasing"));
        let mut t = good.clone();
        t.bitmask[0] |= 0b100;
        assert!(t.decompress().unwrap_err().contains("past its 2 elements"));
        let mut t = good;
        t.shape = vec![usize::MAX, 3];
        assert!(t.decompress().unwrap_err().contains("overflows"));
    }
}
