//! What a training run reports as it goes: [`EpochStats`] per epoch, to a
//! [`Progress`] sink of the caller's (a progress bar in a command-line tool,
//! nothing in a library).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Per-epoch figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochStats {
    /// Epoch, 1-based (as printed).
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Test accuracy at the end of the epoch, in [0, 1].
    pub test_accuracy: f64,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Wall time of the epoch, evaluation included.
    pub seconds: f64,
    /// Mean of each weighted term of a general objective over the epoch's
    /// batches (empty for objectives equal to a [`crate::LossConfig`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub terms: BTreeMap<String, f64>,
}

/// Where the loop reports its progress: a progress bar and per-epoch lines
/// in a command-line tool, nothing in a library. Every method does nothing
/// by default.
pub trait Progress {
    /// Epoch `epoch` (1-based) of `epochs` starts; it has `steps` optimizer steps.
    fn start_epoch(&mut self, _epoch: usize, _epochs: usize, _steps: usize) {}
    /// An optimizer step of the epoch ended with this batch loss.
    fn step(&mut self, _loss: f32) {}
    /// The epoch's steps are over (before its evaluation), or the run stops.
    fn end_steps(&mut self) {}
    /// The epoch ended with these figures.
    fn end_epoch(&mut self, _stats: &EpochStats, _epochs: usize) {}
    /// Anything else worth telling (e.g. a stale cache being recomputed).
    fn note(&mut self, _text: &str) {}
}

/// A [`Progress`] that reports nothing.
pub struct Quiet;
impl Progress for Quiet {}
