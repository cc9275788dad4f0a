//! What every CPU op of this module shares: the preamble of a custom op —
//! the contiguous f32 data of its CPU inputs, its output as candle wants it,
//! and the f32 data of the tensors its backward pass reads, each failure
//! naming the op and the argument — and the kernels' helpers: the run-time
//! AVX-512/AVX2 dispatch ([`simd`]), output buffers written without a
//! `memset` ([`unwritten`]) and the valid output range of a shifted row
//! ([`valid_range`]).

use std::fmt::{self, Display};

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result, Shape, Storage, StorageRef, Tensor};

/// The contiguous f32 elements of a CPU tensor, or an error naming `what`.
fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: impl Display,
) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        bail!(
            "{what}: kdprune's CPU kernels take f32, got {:?}",
            storage.dtype()
        )
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{what}: expected a contiguous tensor"),
    }
}

/// The contiguous f32 data behind a CPU storage guard (from
/// `Tensor::storage_and_layout`), or an error naming `what`.
fn cpu_f32<'a>(
    storage: &'a StorageRef<'_>,
    layout: &Layout,
    what: impl Display,
) -> Result<&'a [f32]> {
    match &**storage {
        Storage::Cpu(s) => contiguous_f32(s, layout, what),
        _ => bail!("{what}: kdprune's CPU kernels take CPU tensors"),
    }
}

/// The f32 slices of a custom op's inputs in `cpu_fwd`: `(storage, layout,
/// role)` each, an error naming `"{op} {role}"`.
pub(super) fn inputs<'a, const N: usize>(
    op: &str,
    args: [(&'a CpuStorage, &Layout, &str); N],
) -> Result<[&'a [f32]; N]> {
    let mut out: [&'a [f32]; N] = [&[]; N];
    for (slot, (storage, layout, role)) in out.iter_mut().zip(args) {
        *slot = contiguous_f32(storage, layout, Named(op, role))?;
    }
    Ok(out)
}

/// A custom op's output: `values` of shape `dims`.
pub(super) fn output(values: Vec<f32>, dims: &[usize]) -> (CpuStorage, Shape) {
    (CpuStorage::F32(values), Shape::from(dims.to_vec()))
}

/// Runs `f` on the f32 data of `args` (`(tensor, role)` each), the tensors
/// made contiguous and read on the CPU, as a backward pass does; an error
/// names `"{op} {role}"`.
pub(super) fn with_data<const N: usize, R>(
    op: &str,
    args: [(&Tensor, &str); N],
    f: impl FnOnce([&[f32]; N]) -> Result<R>,
) -> Result<R> {
    let tensors = args
        .iter()
        .map(|(t, _)| t.contiguous())
        .collect::<Result<Vec<_>>>()?;
    let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
    let mut data: [&[f32]; N] = [&[]; N];
    for ((slot, (storage, layout)), (_, role)) in data.iter_mut().zip(&guards).zip(args) {
        *slot = cpu_f32(storage, layout, Named(op, role))?;
    }
    f(data)
}

/// `"{op} {role}"`, written only when an error message needs it.
struct Named<'a>(&'a str, &'a str);

impl Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}

/// Runs `f` inside a function compiled for AVX-512 or AVX2 when the CPU has
/// them (detected at run time, once), else as it is.
///
/// The crate is built for baseline x86-64 (SSE2), where the element-wise
/// loops of the kernels (batch norm, im2col, col2im) stay scalar: inlined
/// into these wrappers, the same loops vectorise. The closure must be marked
/// `#[inline(always)]` (`simd(#[inline(always)] || ...)`): otherwise it is
/// compiled on its own, for SSE2, and merely called from the wrapper (which
/// a profile showed for the batch-norm backward: 128-bit `cvtss2sd` code). The arithmetic is the same
/// on every path (no fused multiply-add is introduced and every reduction
/// keeps its lane order), so the results are the same bits.
#[inline(always)]
pub(crate) fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return unsafe { with_avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { with_avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// `len` floats left unwritten, for an output that a kernel writes in full:
/// a zero-filled `vec!` costs a `memset` of every activation (7 % of a
/// ResNet-20 training step). Turn it into a `Vec<f32>` with
/// [`assume_written`] once every element is written.
pub(crate) fn unwritten(len: usize) -> Vec<std::mem::MaybeUninit<f32>> {
    let mut v = Vec::with_capacity(len);
    v.resize_with(len, std::mem::MaybeUninit::uninit);
    v
}

/// The floats of a buffer from [`unwritten`].
///
/// # Safety
/// Every element of `v` must have been written.
pub(crate) unsafe fn assume_written(v: Vec<std::mem::MaybeUninit<f32>>) -> Vec<f32> {
    let mut v = std::mem::ManuallyDrop::new(v);
    let (ptr, len, cap) = (v.as_mut_ptr(), v.len(), v.capacity());
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`; the allocation
    // is handed over whole (pointer, length and capacity) and every element
    // is initialised, as the caller guarantees.
    unsafe { Vec::from_raw_parts(ptr.cast::<f32>(), len, cap) }
}

/// Output positions `j ∈ [lo, hi)` (of `out_len`) whose input index
/// `j·stride + shift` lies inside `[0, in_len)`.
pub(crate) fn valid_range(
    shift: isize,
    stride: usize,
    in_len: usize,
    out_len: usize,
) -> (usize, usize) {
    let s = stride as isize;
    let lo = if shift >= 0 {
        0
    } else {
        ((-shift + s - 1) / s) as usize
    };
    let last = in_len as isize - 1 - shift;
    let hi = if last < 0 { 0 } else { (last / s) as usize + 1 };
    let lo = lo.min(out_len);
    (lo, hi.clamp(lo, out_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_range_keeps_inputs_inside_the_row() {
        // j·2 − 1 ∈ [0, 5) ⇔ j ∈ {1, 2}
        assert_eq!(valid_range(-1, 2, 5, 4), (1, 3));
        // j + 2 ∈ [0, 3) ⇔ j = 0
        assert_eq!(valid_range(2, 1, 3, 3), (0, 1));
        // nothing inside
        assert_eq!(valid_range(7, 1, 3, 3), (0, 0));
        assert_eq!(valid_range(-9, 2, 3, 2), (2, 2));
    }
}
