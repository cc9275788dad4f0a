//! Per-thread scratch memory of the convolution kernels.

use std::cell::RefCell;

thread_local! {
    /// Per-thread scratch memory of the kernels (im2col matrices and the
    /// like), kept between calls: a fresh zero-filled buffer per task cost a
    /// `memset` of every im2col matrix.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` floats of this thread's scratch memory, whose contents
/// are left over from earlier calls: `f` must write what it reads. (A nested
/// call gets a fresh buffer.)
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0f32; len]),
    })
}
