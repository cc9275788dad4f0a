//! `report.json` / `report.md` of `kdprune run`, and atomic file writes.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::config::RunConfig;

/// One row of the results table.
#[derive(Clone, Debug, Serialize)]
pub struct Stage {
    /// Stable stage name (`teacher`, `dense`, `kd_tuned`, `pruned_one_shot`,
    /// `retrained_kd`, `retrained_no_kd`, `magnitude_one_shot`, `magnitude_retrained`).
    pub name: String,
    /// Test accuracy in [0, 1].
    pub accuracy: f64,
    /// Measured fraction of exact zeros among the prunable weights.
    pub sparsity: f64,
    /// Non-zero parameters of the whole model.
    pub nonzero: usize,
    /// Wall time of the stage in seconds.
    pub seconds: f64,
    /// Checkpoint file of the stage, relative to the run folder.
    pub checkpoint: String,
}

/// Facts about the data of a run.
#[derive(Clone, Debug, Serialize)]
pub struct DatasetInfo {
    pub name: String,
    pub train: usize,
    pub test: usize,
    pub num_classes: usize,
}

/// The whole report (schema version 1).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub version: u32,
    pub config: RunConfig,
    pub dataset: DatasetInfo,
    pub stages: Vec<Stage>,
}

impl Report {
    /// The aligned table printed to the terminal and embedded in `report.md`.
    pub fn table(&self) -> String {
        let mut s = String::from(
            "| stage | accuracy | sparsity | non-zero params | seconds |\n|---|---:|---:|---:|---:|\n",
        );
        for st in &self.stages {
            s.push_str(&format!(
                "| {} | {:.2} % | {:.4} | {} | {:.1} |\n",
                st.name,
                100.0 * st.accuracy,
                st.sparsity,
                st.nonzero,
                st.seconds
            ));
        }
        s
    }

    /// Markdown report: the table and the resolved configuration.
    pub fn markdown(&self) -> Result<String> {
        Ok(format!(
            "# kdprune run\n\nDataset `{}` ({} train / {} test, {} classes), teacher `{}`, student `{}`, \
             target sparsity {}, seed {}.\n\n{}\n## Configuration\n\n```toml\n{}```\n",
            self.dataset.name,
            self.dataset.train,
            self.dataset.test,
            self.dataset.num_classes,
            self.config.teacher_model,
            self.config.student_model,
            self.config.sparsity,
            self.config.seed,
            self.table(),
            toml::to_string(&self.config)?
        ))
    }
}

/// Writes `contents` to `path` (creating its parent folder) through a
/// temporary file, flushed to disk, and a rename, so that a crash leaves
/// either the old file or the new one, never a half-written one.
pub fn write_atomic(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents.as_ref())?;
        f.sync_all()
    };
    write().with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move {} into place", path.display()))
}
