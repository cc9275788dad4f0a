//! Where the training loop takes its batches from: any labelled collection
//! of samples behind the [`Samples`] trait, cut into seeded batches by a
//! [`Batcher`](crate::Batcher).

use candle_core::{Device, Tensor};

use crate::Result;

/// Labelled samples: a training or a test set, as the loop sees it.
///
/// Inputs come back as `f32` tensors `[n, ...]` and labels as `u32` `[n]`,
/// on the asked device, in the order of the indices.
pub trait Samples {
    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether there is no sample.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Inputs and labels of the samples `idx`, as they are (no augmentation):
    /// what evaluation and the teacher's logit table see.
    fn batch(&self, idx: &[usize], device: &Device) -> Result<(Tensor, Tensor)>;

    /// Inputs and labels of the samples `idx` as training batch `step` of
    /// `epoch` of a run seeded `seed`. A source with random augmentation
    /// draws it here, from these three numbers only (so that a run can be
    /// replayed); by default the batch as it is.
    fn train_batch(
        &self,
        idx: &[usize],
        _seed: u64,
        _epoch: usize,
        _step: usize,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        self.batch(idx, device)
    }

    /// Whether [`Samples::train_batch`] differs from [`Samples::batch`]
    /// (random augmentation): a teacher then sees every training batch anew
    /// and its logits are not cached.
    fn is_augmented(&self) -> bool {
        false
    }

    /// Text that identifies the samples and their preprocessing, so that the
    /// on-disk teacher-logit cache ([`crate::TeacherCache::Disk`]) can tell
    /// whether a stored table belongs to them; `None` (the default) keeps the
    /// table in memory only.
    fn fingerprint(&self) -> Option<String> {
        None
    }
}

/// What a run trains and evaluates on.
#[derive(Clone, Copy)]
pub struct TrainData<'a> {
    /// The training set.
    pub train: &'a dyn Samples,
    /// The held-out set of the per-epoch accuracy.
    pub test: &'a dyn Samples,
}
