//! The preamble every custom op of this module shares: the contiguous f32
//! data of its CPU inputs, its output as candle wants it, and the f32 data
//! of the tensors its backward pass reads — each failure naming the op and
//! the argument.

use std::fmt::{self, Display};

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result, Shape, Storage, StorageRef, Tensor};

/// The contiguous f32 elements of a CPU tensor, or an error naming `what`.
pub(super) fn contiguous_f32<'a>(
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
pub(super) fn cpu_f32<'a>(
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
