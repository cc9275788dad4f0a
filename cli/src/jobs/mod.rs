//! The single-step commands as library calls: train, distill, prune,
//! retrain, evaluate, verify, list the models. Each takes a job description
//! (what the command line says) and returns what the command prints.

mod export;
mod inspect;
mod prune;
mod train;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use crate::data::{load_data, Data, Source};
pub use crate::settings::Optim;

pub use export::{export_checkpoint, Calibration, ExportReport};
pub use inspect::{
    checkpoint_widths, evaluate_checkpoint, evaluate_checkpoint_at_kernel,
    evaluate_checkpoint_with_candle, model_zoo, verify_checkpoint, Evaluation, WidthReport,
    ZooEntry,
};
pub use prune::{
    prune_blocks, prune_checkpoint, prune_structured, BlockOutcome, BlockPruneJob, PruneJob,
    PruneOutcome, StructuredOutcome, StructuredPruneJob,
};
pub use train::{
    distill_student, gmp_checkpoint, retrain_checkpoint, teacher_for, train_model,
    with_feature_pairs, DistillJob, DistillReport, GmpJob, ModelInfo, ObjectiveSpec, RetrainJob,
    TrainJob, Trained,
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
    /// Train on only this many samples of the training set (see
    /// [`Data::limit_train`]); the test set stays whole.
    pub train_samples: Option<usize>,
    /// Test on only this many samples of the test set (see
    /// [`Data::limit_test`]).
    pub test_samples: Option<usize>,
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
        let mut data = load_data(&dataset, &self.source, seed)?;
        if let Some(n) = self.train_samples {
            data.limit_train(n, seed)?;
        }
        if let Some(n) = self.test_samples {
            data.limit_test(n, seed)?;
        }
        Ok((data, seed))
    }
}

/// The path as text, for reports.
fn shown(path: &Path) -> String {
    path.display().to_string()
}
