//! A bounds-checked wrapper around the `gemm` crate's f32 matrix product.
//!
//! The convolution kernels run one product per sample on each worker thread,
//! so the product itself is single-threaded (`Parallelism::None`): the
//! parallelism is over the batch, which keeps every core busy even when the
//! per-sample matrices are small.

/// A read-only strided matrix inside a slice: element `(i, j)` is
/// `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// The `rows × cols` row-major matrix at the start of `data`.
    pub(crate) fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The `rows × cols` matrix whose element `(i, j)` is
    /// `data[i * row_stride + j * col_stride]`.
    pub(crate) fn strided(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }

    /// The transpose, without moving data.
    pub(crate) fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    fn fits(&self) -> bool {
        fits(
            self.data.len(),
            self.rows,
            self.cols,
            self.row_stride,
            self.col_stride,
        )
    }
}

/// A writable strided matrix inside a slice: element `(i, j)` is
/// `data[i * row_stride + j * col_stride]`.
#[derive(Debug)]
pub(crate) struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatMut<'a> {
    /// The `rows × cols` row-major matrix at the start of `data`.
    pub(crate) fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose, without moving data.
    pub(crate) fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// The `rows × cols` matrix whose element `(i, j)` is
    /// `data[i * row_stride + j * col_stride]` (e.g. one head's columns of
    /// a wider row-major buffer).
    pub(crate) fn strided(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }
}

/// Whether every element of a strided `rows × cols` view lies inside `len`.
fn fits(len: usize, rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> bool {
    rows == 0 || cols == 0 || (rows - 1) * row_stride + (cols - 1) * col_stride < len
}

/// `c = a·b`, or `c += a·b` when `accumulate` is set; single-threaded.
///
/// The `gemm` crate runs its microkernel along the contiguous axis of `c`
/// (it transposes the product when `c` is row-major), and packs an operand
/// whose elements along that axis are strided: callers pick the orientation
/// of `c` so that the big operand need not be packed.
///
/// # Panics
/// When the shapes disagree or a view reaches past its slice: both are
/// programming errors of the calling kernel, never a consequence of user input
/// (the public operations validate shapes first).
pub(crate) fn matmul(c: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, accumulate: bool) {
    let (m, n, k) = (c.rows, c.cols, a.cols);
    assert!(
        a.rows == m && b.rows == k && b.cols == n,
        "matmul: shapes {}x{} · {}x{} → {}x{}",
        a.rows,
        a.cols,
        b.rows,
        b.cols,
        m,
        n
    );
    assert!(
        a.fits() && b.fits() && fits(c.data.len(), m, n, c.row_stride, c.col_stride),
        "matmul: a view reaches past its buffer"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    c.data[i * c.row_stride + j * c.col_stride] = 0.0;
                }
            }
        }
        return;
    }
    // SAFETY: the asserts above guarantee that every index the product reads
    // (`a`, `b`) or writes (`c`) lies inside its slice; `c` is a
    // unique borrow, so it cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.data.as_mut_ptr(),
            c.col_stride as isize,
            c.row_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            // dst := alpha·dst + beta·lhs·rhs (alpha is ignored unless read_dst).
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_with_transposed_views_matches_the_definition() {
        // a: 2×3, b given as the transpose of a 2×3 row-major buffer (3×2).
        let a = [1f32, 2., 3., 4., 5., 6.];
        let bt = [7f32, 8., 9., 10., 11., 12.];
        let mut c = [100f32; 4];
        matmul(
            MatMut::row_major(&mut c, 2, 2),
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&bt, 2, 3).t(),
            false,
        );
        // numpy: np.array([[1,2,3],[4,5,6]]) @ np.array([[7,8,9],[10,11,12]]).T
        assert_eq!(c, [50., 68., 122., 167.]);
        matmul(
            MatMut::row_major(&mut c, 2, 2),
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&bt, 2, 3).t(),
            true,
        );
        assert_eq!(c, [100., 136., 244., 334.]);
    }

    #[test]
    #[should_panic(expected = "past its buffer")]
    fn a_view_past_its_buffer_is_refused() {
        let a = [1f32; 5];
        let mut c = [0f32; 4];
        matmul(
            MatMut::row_major(&mut c, 2, 2),
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&a, 3, 2),
            false,
        );
    }
}
