//! `kdprune compare`: models side by side — parameters, non-zeros, file
//! size, test accuracy, latency at batch 1 and 64, and each against the
//! first (speed-up, size ratio, accuracy retained).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use candle_core::{Device, Tensor};
use kd_core::Samples;
use kdprune_models::checkpoint::{self, Checkpoint};
use kdprune_models::infer::{InferenceNet, LayerChoice};
use serde::Serialize;

use crate::checkpoints::{check_fits, check_same_split, load_frozen_model};
use crate::data::Data;
use crate::infer::{runtime_accuracy, runtime_net};
use crate::jobs::DataSpec;

/// What `kdprune compare` measures.
#[derive(Clone, Debug)]
pub struct CompareJob {
    /// The checkpoints (any encoding); the first is the reference.
    pub checkpoints: Vec<PathBuf>,
    /// The data (default: the first checkpoint's dataset and seed).
    pub data: DataSpec,
    /// Timed calls per latency figure (after 3 warm-up calls); at least 20.
    pub rounds: usize,
    /// Which layers the runtime stores sparse.
    pub choice: LayerChoice,
}

/// One model's figures.
#[derive(Clone, Debug, Serialize)]
pub struct CompareRow {
    /// The checkpoint.
    pub path: String,
    /// Its architecture.
    pub model: String,
    /// Its file's encoding.
    pub encoding: String,
    /// Parameters (weights, biases, batch-norm affine parameters).
    pub params: usize,
    /// Non-zero parameters.
    pub nonzero: usize,
    /// Bytes on disk.
    pub file_bytes: u64,
    /// Test accuracy.
    pub accuracy: f64,
    /// What ran it: `runtime` (dense/sparse by density) or `candle`.
    pub engine: String,
    /// Median microseconds of a forward pass of 1 sample.
    pub latency_b1_us: f64,
    /// Median microseconds of a forward pass of 64 samples.
    pub latency_b64_us: f64,
    /// The first model's batch-1 latency over this one's.
    pub speedup_b1: f64,
    /// The first model's batch-64 latency over this one's.
    pub speedup_b64: f64,
    /// This file's size over the first's.
    pub size_ratio: f64,
    /// This accuracy as a percentage of the first's.
    pub accuracy_retained_pct: f64,
}

/// What `kdprune compare` prints and writes.
#[derive(Clone, Debug, Serialize)]
pub struct CompareReport {
    /// The dataset the accuracies are on.
    pub dataset: String,
    /// Threads of the pool the forward passes ran on.
    pub threads: usize,
    /// Timed calls per latency.
    pub rounds: usize,
    /// One row per checkpoint, the first the reference.
    pub rows: Vec<CompareRow>,
}

impl CompareReport {
    /// The Markdown table.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "Test accuracy on {}; latency: median of {} forward passes after 3 warm-up passes, {} threads; ratios against the first row.\n\n",
            self.dataset, self.rounds, self.threads
        );
        out.push_str("| model | checkpoint | encoding | engine | params | non-zeros | file | accuracy | retained | batch 1 | speed-up | batch 64 | speed-up | size |\n");
        out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} B | {:.4} | {:.1} % | {:.1} µs | {:.2}× | {:.1} µs | {:.2}× | {:.3}× |\n",
                r.model,
                r.path,
                r.encoding,
                r.engine,
                r.params,
                r.nonzero,
                r.file_bytes,
                r.accuracy,
                r.accuracy_retained_pct,
                r.latency_b1_us,
                r.speedup_b1,
                r.latency_b64_us,
                r.speedup_b64,
                r.size_ratio,
            ));
        }
        out
    }
}

/// Median microseconds of `f` over `rounds` calls after 3 warm-up calls.
fn median_us(rounds: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Parameters and non-zero parameters of a checkpoint.
fn counts(ckpt: &Checkpoint) -> Result<(usize, usize)> {
    let (mut params, mut nonzero) = (0, 0);
    for (name, _) in ckpt.config.param_shapes() {
        let t = ckpt
            .tensors
            .get(&name)
            .with_context(|| format!("checkpoint has no tensor `{name}`"))?;
        let v = t.flatten_all()?.to_vec1::<f32>()?;
        params += v.len();
        nonzero += v.iter().filter(|x| **x != 0.0).count();
    }
    Ok((params, nonzero))
}

/// Accuracy and latencies of one checkpoint on `data`.
fn measure(
    path: &Path,
    data: &Data,
    seed: u64,
    job: &CompareJob,
) -> Result<(Checkpoint, f64, String, f64, f64)> {
    let device = Device::Cpu;
    let (model, _, ckpt) = load_frozen_model(path, &device)?;
    check_fits(&model, data, &format!("{}", path.display()))?;
    check_same_split(&ckpt, path, data, seed)?;
    let test = data.test_view();
    let n = test.len();
    ensure!(n > 0, "the test set is empty");
    let one: Vec<usize> = vec![0];
    let many: Vec<usize> = (0..64).map(|i| i % n).collect();
    let (x1, _) = test.batch(&one, &device)?;
    let (x64, _) = test.batch(&many, &device)?;
    match runtime_net(&ckpt, job.choice) {
        Ok(net) => {
            let acc = runtime_accuracy(&net, &test, 512)?;
            let run = |net: &InferenceNet, xs: &Tensor, b: usize| -> Result<f64> {
                let x = xs.flatten_all()?.to_vec1::<f32>()?;
                median_us(job.rounds, || {
                    std::hint::black_box(net.forward(&x, b)?);
                    Ok(())
                })
            };
            let (t1, t64) = (run(&net, &x1, 1)?, run(&net, &x64, 64)?);
            Ok((ckpt, acc, "runtime".to_string(), t1, t64))
        }
        Err(_) => {
            let acc = kd_core::evaluate(&model, &test, 512)?;
            let run = |xs: &Tensor| -> Result<f64> {
                median_us(job.rounds, || {
                    std::hint::black_box(model.forward_t(xs, false)?.logits.to_vec2::<f32>()?);
                    Ok(())
                })
            };
            let (t1, t64) = (run(&x1)?, run(&x64)?);
            Ok((ckpt, acc, "candle".to_string(), t1, t64))
        }
    }
}

/// Measures every checkpoint of `job` on one dataset (the first
/// checkpoint's unless the job names one); all must fit it.
pub fn compare(job: &CompareJob) -> Result<CompareReport> {
    ensure!(!job.checkpoints.is_empty(), "give at least one checkpoint");
    ensure!(
        job.rounds >= 20,
        "--rounds must be at least 20 (got {})",
        job.rounds
    );
    let first = checkpoint::load(&job.checkpoints[0], &Device::Cpu)
        .with_context(|| format!("cannot load checkpoint {}", job.checkpoints[0].display()))?;
    let (data, seed) = job.data.load(Some(&first.metadata))?;
    let mut rows: Vec<CompareRow> = Vec::new();
    for path in &job.checkpoints {
        let (ckpt, accuracy, engine, t1, t64) = measure(path, &data, seed, job)?;
        let (params, nonzero) = counts(&ckpt)?;
        let file_bytes = std::fs::metadata(path)
            .with_context(|| format!("cannot stat {}", path.display()))?
            .len();
        let encoding = checkpoint::file_encoding(path)?.to_string();
        let base = rows.first();
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        rows.push(CompareRow {
            path: path.display().to_string(),
            model: ckpt.config.name(),
            encoding,
            params,
            nonzero,
            file_bytes,
            accuracy,
            engine,
            latency_b1_us: t1,
            latency_b64_us: t64,
            speedup_b1: base.map_or(1.0, |b| ratio(b.latency_b1_us, t1)),
            speedup_b64: base.map_or(1.0, |b| ratio(b.latency_b64_us, t64)),
            size_ratio: base.map_or(1.0, |b| ratio(file_bytes as f64, b.file_bytes as f64)),
            accuracy_retained_pct: base.map_or(100.0, |b| 100.0 * ratio(accuracy, b.accuracy)),
        });
    }
    Ok(CompareReport {
        dataset: data.name.to_string(),
        threads: candle_core::utils::get_num_threads(),
        rounds: job.rounds,
        rows,
    })
}
