//! The frozen teacher's logits of the training set, computed once per run
//! (and optionally kept on disk between runs) instead of once per epoch.
//!
//! Without augmentation the teacher's logits of a sample are the same in
//! every epoch: the table saves the teacher's forward pass of every epoch
//! after the first (with it, KD retraining on Fashion-MNIST takes 1.27× the
//! time of plain retraining; the README gives the command that measures it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::data::Samples;
use crate::network::{ModelOutput, Network};
use crate::progress::Progress;
use crate::{KdError, Result};

/// Where [`crate::fit`] takes the frozen teacher's logits from.
///
/// Every variant gives the same training, bit for bit: the teacher is always
/// run on exactly `batch_size` rows (a short batch is padded), and a sample's
/// logits then do not depend on the batch it comes in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TeacherCache {
    /// Run the teacher on every batch of every epoch.
    Off,
    /// Run the teacher once over the training set before the first epoch and
    /// look each batch's logits up in that table (`N × classes` floats); not
    /// used when the inputs are augmented (the teacher then sees each batch).
    #[default]
    Memory,
    /// As [`TeacherCache::Memory`], and keep the table in
    /// `DIR/teacher-logits-<key>.safetensors`, `key` a hash of the teacher's
    /// tensors ([`Network::state`]), of the training samples'
    /// [`Samples::fingerprint`] and of the batch size: a later run with the
    /// same inputs loads it instead of running the teacher. A file that does
    /// not match is recomputed and replaced. Samples without a fingerprint
    /// are kept in memory only.
    Disk(PathBuf),
}

/// The teacher's output on `xs` (eval mode, detached), run on exactly `rows`
/// rows so that a sample's logits do not depend on the batch it is in; the
/// features are kept only when `with_features` is set.
///
/// The matrix kernels pick their blocking and summation order from the
/// matrix sizes, so the same sample gives other bits in a batch of another
/// size; at a fixed size, a row's result does not depend on the other rows.
/// Padding with zero inputs (whose outputs are dropped) makes a sample's
/// logits the same in every batch, which is what lets the table reproduce
/// the uncached run exactly.
pub(crate) fn teacher_output(
    teacher: &dyn Network,
    xs: &Tensor,
    rows: usize,
    with_features: bool,
) -> Result<ModelOutput> {
    let n = xs.dim(0)?;
    let out = if n >= rows {
        teacher.forward_t(xs, false)?
    } else {
        let mut dims = xs.dims().to_vec();
        dims[0] = rows - n;
        let padding = Tensor::zeros(dims, xs.dtype(), xs.device())?;
        teacher.forward_t(&Tensor::cat(&[xs, &padding], 0)?, false)?
    };
    let cut = |t: &Tensor| -> Result<Tensor> {
        Ok(if n >= rows {
            t.detach()
        } else {
            t.narrow(0, 0, n)?.detach()
        })
    };
    let features = if with_features {
        out.features
            .iter()
            .map(|(name, t)| Ok((name.clone(), cut(t)?)))
            .collect::<Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    Ok(ModelOutput {
        logits: cut(&out.logits)?,
        features,
    })
}

/// The teacher's logits of every training sample, `[N, classes]` in sample
/// order, computed `batch_size` samples at a time as [`teacher_output`] does.
fn teacher_table(
    teacher: &dyn Network,
    train: &dyn Samples,
    batch_size: usize,
    device: &Device,
) -> Result<Tensor> {
    let n = train.len();
    let mut parts = Vec::with_capacity(n.div_ceil(batch_size.max(1)));
    for start in (0..n).step_by(batch_size.max(1)) {
        let idx: Vec<usize> = (start..n.min(start + batch_size)).collect();
        let (xs, _) = train.batch(&idx, device)?;
        parts.push(teacher_output(teacher, &xs, batch_size, false)?.logits);
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// The table of [`TeacherCache::Memory`] or [`TeacherCache::Disk`].
pub(crate) fn build_table(
    cache: &TeacherCache,
    teacher: &dyn Network,
    train: &dyn Samples,
    batch_size: usize,
    device: &Device,
    progress: &mut dyn Progress,
) -> Result<Option<Tensor>> {
    match cache {
        TeacherCache::Off => Ok(None),
        TeacherCache::Memory => Ok(Some(teacher_table(teacher, train, batch_size, device)?)),
        TeacherCache::Disk(dir) => match train.fingerprint() {
            Some(fingerprint) => Ok(Some(table_on_disk(
                teacher,
                train,
                &fingerprint,
                batch_size,
                device,
                dir,
                progress,
            )?)),
            None => Ok(Some(teacher_table(teacher, train, batch_size, device)?)),
        },
    }
}

/// Format of the on-disk table; part of the key, so a change of format
/// never reads an old file.
const TEACHER_CACHE_VERSION: u32 = 1;

/// [`teacher_table`], loaded from `dir` when a file with the same key is
/// there, else computed and written there (`NAME.tmp`, then renamed).
fn table_on_disk(
    teacher: &dyn Network,
    train: &dyn Samples,
    fingerprint: &str,
    batch_size: usize,
    device: &Device,
    dir: &Path,
    progress: &mut dyn Progress,
) -> Result<Tensor> {
    let key = cache_key(teacher, fingerprint, batch_size)?;
    let path = dir.join(format!(
        "teacher-logits-{:016x}.safetensors",
        fnv1a(key.as_bytes())
    ));
    let rows = train.len();
    if let Ok(stored) = candle_core::safetensors::load(&path, device) {
        let same_key = stored
            .get("key")
            .and_then(|k| k.to_vec1::<u8>().ok())
            .is_some_and(|k| k == key.as_bytes());
        match stored.get("logits") {
            Some(t) if same_key && t.dims().first() == Some(&rows) && t.rank() == 2 => {
                return Ok(t.clone());
            }
            _ => progress.note(&format!(
                "teacher cache {} does not match this run: recomputing",
                path.display()
            )),
        }
    }
    let table = teacher_table(teacher, train, batch_size, device)?;
    let io = |e: std::io::Error| KdError::Other(format!("teacher cache {}: {e}", path.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("safetensors.tmp");
    let key_bytes = key.as_bytes().to_vec();
    let tensors = HashMap::from([
        ("logits".to_string(), table.to_dtype(DType::F32)?),
        (
            "key".to_string(),
            Tensor::from_vec(key_bytes.clone(), key_bytes.len(), &Device::Cpu)?,
        ),
    ]);
    candle_core::safetensors::save(&tensors, &tmp)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(table)
}

/// What the teacher's logits of a run depend on, as text: the format
/// version, a hash of the teacher's tensors (names, shapes, values), the
/// samples' fingerprint and the batch size (see [`teacher_output`]).
fn cache_key(teacher: &dyn Network, fingerprint: &str, batch_size: usize) -> Result<String> {
    let mut weights = Fnv1a::new();
    for (name, t) in teacher.state()? {
        weights.write(name.as_bytes());
        for d in t.dims() {
            weights.write(&(*d as u64).to_le_bytes());
        }
        for v in t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()? {
            weights.write(&v.to_le_bytes());
        }
    }
    Ok(format!(
        "v{TEACHER_CACHE_VERSION} teacher={:016x} {fingerprint} batch={batch_size}",
        weights.finish(),
    ))
}

/// 64-bit FNV-1a, a stable hash (unlike `std`'s, whose algorithm may change
/// between releases) for cache keys.
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The 64-bit FNV-1a hash of `bytes`: stable across releases and machines,
/// for the fingerprints of [`Samples::fingerprint`].
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = Fnv1a::new();
    h.write(bytes);
    h.finish()
}
