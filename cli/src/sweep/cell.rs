//! One finished cell of a sweep: a method at a sparsity for a seed, with its
//! accuracy and its cost — the record kept on disk per cell.

use serde::{Deserialize, Serialize};

/// One finished cell of the sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    /// Method name as written in the sweep config, e.g. `magnitude`,
    /// `teacher-guided`, `gmp`, `imp`, `colt`.
    pub method: String,
    /// Target sparsity of the prunable weights, e.g. 0.9.
    pub sparsity: f64,
    /// Seed of the teacher, the dense student and the method.
    pub seed: u64,
    /// Measured fraction of zeros among the prunable weights.
    pub measured_sparsity: f64,
    /// Test accuracy in [0, 1] at the end.
    pub final_accuracy: f64,
    /// Best test accuracy in [0, 1] over the epochs of the last training stage.
    pub best_accuracy: f64,
    /// Test accuracy in [0, 1] of the dense student the cell started from.
    pub dense_accuracy: f64,
    /// Training epochs this method spent beyond the shared dense student.
    pub epochs: f64,
    /// Sample-forward passes (one sample through the network once = 1).
    pub forward_passes: u64,
    /// Sample-backward passes.
    pub backward_passes: u64,
    /// Wall time of the cell in seconds.
    pub seconds: f64,
}
