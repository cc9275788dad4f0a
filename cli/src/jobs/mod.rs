//! The single-step commands as library calls: train, distill, prune,
//! retrain, evaluate, verify, list the models. Each takes a job description
//! (what the command line says) and returns what the command prints.

mod inspect;
mod prune;
mod train;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use kd_core::{Objective, SgdConfig, TrainConfig};

use crate::data::{load_data, AugmentChoice, Data, Source};

pub use inspect::{evaluate_checkpoint, model_zoo, verify_checkpoint, ZooEntry};
pub use prune::{prune_checkpoint, PruneJob, PruneOutcome};
pub use train::{
    distill_student, objective_for, retrain_checkpoint, teacher_for, train_model, DistillJob,
    DistillReport, ModelInfo, ObjectiveSpec, RetrainJob, TrainJob, Trained,
};

/// Which data a job reads: a dataset name and seed (each defaulting to the
/// checkpoint's, else `digits` and 0) and where the files come from.
#[derive(Clone, Debug, Default)]
pub struct DataSpec {
    /// The dataset's name.
    pub dataset: Option<String>,
    /// Where its files come from.
    pub source: Source,
    /// The seed (split of digits, initialisation, batch order).
    pub seed: Option<u64>,
}

impl DataSpec {
    /// Dataset name and seed: the spec's, else the checkpoint's metadata,
    /// else `digits` and 0.
    pub fn resolve(&self, meta: Option<&BTreeMap<String, String>>) -> (String, u64) {
        let dataset = self
            .dataset
            .clone()
            .or_else(|| meta.and_then(|m| m.get("dataset").cloned()))
            .unwrap_or_else(|| "digits".into());
        let seed = self
            .seed
            .or_else(|| meta.and_then(|m| m.get("seed").and_then(|s| s.parse().ok())))
            .unwrap_or(0);
        (dataset, seed)
    }

    /// Loads the data (see [`DataSpec::resolve`]) and returns it with the seed.
    pub fn load(&self, meta: Option<&BTreeMap<String, String>>) -> Result<(Data, u64)> {
        let (dataset, seed) = self.resolve(meta);
        Ok((load_data(&dataset, &self.source, seed)?, seed))
    }
}

/// How a job optimises.
#[derive(Clone, Debug)]
pub struct Optim {
    /// Epochs.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Base learning rate (cosine decay to 0).
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay (not on biases).
    pub weight_decay: f64,
    /// Nesterov momentum (when the momentum is not 0).
    pub nesterov: bool,
    /// Epochs of linear warm-up.
    pub warmup_epochs: usize,
    /// Training-set augmentation.
    pub augment: AugmentChoice,
}

impl Optim {
    /// A training run on `objective` with these settings, seeded by `seed`.
    pub fn train_config(&self, objective: impl Into<Objective>, seed: u64) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            sgd: SgdConfig {
                lr: self.lr,
                momentum: self.momentum,
                nesterov: self.nesterov && self.momentum > 0.0,
                weight_decay: self.weight_decay,
            },
            warmup_epochs: self.warmup_epochs,
            min_lr: 0.0,
            objective: objective.into(),
            seed,
        }
    }
}

/// The path as text, for reports.
fn shown(path: &Path) -> String {
    path.display().to_string()
}
