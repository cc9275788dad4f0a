//! Resume points of interrupted training: kd-core's [`ResumePoint`] in one
//! safetensors file, written atomically at the end of every epoch and
//! removed once the run's own output is written. A run killed at any moment
//! (SIGKILL included) and continued with `--resume` ends with the same
//! bytes as one that never stopped.
//!
//! The file holds `network.NAME`, `objective.NAME` and `optimizer.NAME`
//! tensors, and in its metadata the epochs done, the step, the finished
//! epochs' figures (JSON) and a fingerprint of the run's configuration: a
//! resume point of another configuration is refused.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use kd_core::{ResumePoint, TrainReport};
use safetensors::SafeTensors;

const FORMAT_KEY: &str = "kdprune.resume";
const FORMAT: &str = "1";
const PARTS: [&str; 3] = ["network", "objective", "optimizer"];

/// Where a run keeps its resume point, and the configuration it belongs to.
#[derive(Clone, Debug)]
pub struct ResumeFile {
    path: PathBuf,
    fingerprint: String,
}

impl ResumeFile {
    /// The resume point at `path` of the run whose configuration prints as
    /// `fingerprint` (any text that changes when the run would change).
    pub fn new(path: impl Into<PathBuf>, fingerprint: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            fingerprint: fingerprint.into(),
        }
    }

    /// The resume point next to the output file `out`: `OUT.resume`.
    pub fn beside(out: &Path, fingerprint: impl Into<String>) -> Self {
        let mut name = out.as_os_str().to_owned();
        name.push(".resume");
        Self::new(PathBuf::from(name), fingerprint)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved point, `None` when there is no file. A file of another
    /// configuration, or one that does not parse, is an error naming it.
    pub fn load(&self, device: &Device) -> Result<Option<ResumePoint>> {
        if !self.path.exists() {
            return Ok(None);
        }
        let bytes = std::fs::read(&self.path)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        let bad = |why: String| anyhow::anyhow!("resume point {}: {why}", self.path.display());
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a resume point (or truncated): {e}")))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not a resume point (or truncated): {e}")))?;
        let meta = header
            .metadata()
            .clone()
            .ok_or_else(|| bad("no metadata".into()))?;
        let get = |k: &str| meta.get(k).ok_or_else(|| bad(format!("no `{k}`")));
        if get(FORMAT_KEY)? != FORMAT {
            return Err(bad(format!("format {} is not {FORMAT}", get(FORMAT_KEY)?)));
        }
        if get("fingerprint")? != &self.fingerprint {
            bail!(
                "the resume point {} belongs to a run with other settings; delete it, or run without --resume to start over",
                self.path.display()
            );
        }
        let number = |k: &str| -> Result<usize> {
            get(k)?
                .parse()
                .map_err(|e| bad(format!("`{k}` is not a count: {e}")))
        };
        let report: TrainReport =
            serde_json::from_str(get("report")?).map_err(|e| bad(format!("bad `report`: {e}")))?;
        let (loss_sum, term_sums): (f64, BTreeMap<String, f64>) =
            serde_json::from_str(get("sums")?).map_err(|e| bad(format!("bad `sums`: {e}")))?;
        let mut parts: [BTreeMap<String, Tensor>; 3] = Default::default();
        for (name, view) in st.tensors() {
            let (part, rest) = name
                .split_once('.')
                .ok_or_else(|| bad(format!("unexpected tensor `{name}`")))?;
            let k = PARTS
                .iter()
                .position(|p| *p == part)
                .ok_or_else(|| bad(format!("unexpected tensor `{name}`")))?;
            let dtype = DType::try_from(view.dtype())
                .map_err(|_| bad(format!("`{name}` has dtype {:?}", view.dtype())))?;
            let t = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), device)?;
            parts[k].insert(rest.to_string(), t);
        }
        let [network, objective_vars, optimizer] = parts;
        Ok(Some(ResumePoint {
            epochs_done: number("epochs_done")?,
            batches_done: number("batches_done")?,
            loss_sum,
            term_sums,
            step: number("step")?,
            network,
            objective_vars,
            optimizer,
            report,
        }))
    }

    /// Writes `point` (through a temporary file and a rename).
    pub fn save(&self, point: &ResumePoint) -> Result<()> {
        let mut tensors = BTreeMap::new();
        for (part, part_tensors) in
            PARTS
                .iter()
                .zip([&point.network, &point.objective_vars, &point.optimizer])
        {
            for (name, t) in part_tensors {
                tensors.insert(format!("{part}.{name}"), t.clone());
            }
        }
        let meta = HashMap::from([
            (FORMAT_KEY.to_string(), FORMAT.to_string()),
            ("fingerprint".to_string(), self.fingerprint.clone()),
            ("epochs_done".to_string(), point.epochs_done.to_string()),
            ("batches_done".to_string(), point.batches_done.to_string()),
            ("step".to_string(), point.step.to_string()),
            (
                "sums".to_string(),
                serde_json::to_string(&(point.loss_sum, &point.term_sums))?,
            ),
            ("report".to_string(), serde_json::to_string(&point.report)?),
        ]);
        Ok(kdprune_models::checkpoint::write_tensors(
            &self.path, &tensors, meta,
        )?)
    }

    /// Removes the file (the run finished); absent is fine.
    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", self.path.display()))
            }
            _ => Ok(()),
        }
    }
}
