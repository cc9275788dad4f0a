//! Writing a checkpoint in another encoding: dense for PyTorch, sparse
//! (compressed-tensors' `sparse-bitmask`) for size.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use candle_core::Device;
use kd_core::Samples;
use kdprune_models::checkpoint::{self, Checkpoint, Encoding};
use kdprune_models::infer::quantize_checkpoint;

use super::inspect::mask_report;
use super::DataSpec;
use crate::checkpoints::load_model;

/// What [`export_checkpoint`] wrote.
#[derive(Clone, Debug)]
pub struct ExportReport {
    /// The file written.
    pub out: PathBuf,
    /// Its encoding.
    pub encoding: Encoding,
    /// Bytes of the input file.
    pub input_bytes: u64,
    /// Bytes of the file written.
    pub output_bytes: u64,
    /// Non-zero parameters (weights, biases, batch-norm parameters).
    pub nonzero: usize,
    /// All parameters and buffers.
    pub total: usize,
    /// The input checkpoint's architecture.
    pub config: kdprune_models::ModelConfig,
    /// The input checkpoint's free-form metadata (dataset, seed, stage, …).
    pub metadata: std::collections::BTreeMap<String, String>,
}

impl ExportReport {
    /// `wrote out.safetensors (sparse-bitmask): 57,312 bytes, 0.081 × the input's 712,345; 13,528 of 266,610 values non-zero`.
    pub fn line(&self) -> String {
        format!(
            "wrote {} ({}): {} bytes, {:.3} × the input's {}; {} of {} values non-zero",
            self.out.display(),
            self.encoding,
            thousands(self.output_bytes),
            self.output_bytes as f64 / self.input_bytes.max(1) as f64,
            thousands(self.input_bytes),
            thousands(self.nonzero as u64),
            thousands(self.total as u64),
        )
    }
}

/// [`quantize_checkpoint`] with the calibration batches of `calibration`.
fn quantize(ckpt: &Checkpoint, calibration: &Calibration) -> Result<Checkpoint> {
    if calibration.batches == 0 {
        return Ok(quantize_checkpoint(ckpt, &[])?);
    }
    let (data, _) = calibration.data.load(Some(&ckpt.metadata))?;
    let train = data.views(kdprune_data::Augment::NONE);
    let n = train.train.len().min(64 * calibration.batches);
    ensure!(n > 0, "the training set is empty: nothing to calibrate on");
    let mut inputs = Vec::new();
    for start in (0..n).step_by(64) {
        let idx: Vec<usize> = (start..(start + 64).min(n)).collect();
        let (xs, _) = train.train.batch(&idx, &Device::Cpu)?;
        inputs.push((xs.flatten_all()?.to_vec1::<f32>()?, idx.len()));
    }
    let batches: Vec<(&[f32], usize)> = inputs.iter().map(|(x, b)| (x.as_slice(), *b)).collect();
    Ok(quantize_checkpoint(ckpt, &batches)?)
}

/// `1234567` → `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// How [`export_checkpoint`] calibrates an INT8 export.
#[derive(Clone, Debug, Default)]
pub struct Calibration {
    /// Training batches of 64 (the first samples of the training set, no
    /// augmentation) over which each linear layer's input scale is fixed;
    /// 0 quantises activations per batch instead.
    pub batches: usize,
    /// Where the training data comes from (default: the checkpoint's).
    pub data: DataSpec,
}

/// Reads the checkpoint at `input` (any encoding), checks that every masked
/// weight is zero, and writes it to `out` in `encoding` (atomically: a failed
/// export leaves no file). `out` may not be `input`. [`Encoding::Int8`]
/// and [`Encoding::SparseInt8`] quantise the weights per output channel and
/// calibrate the activations as `calibration` says.
pub fn export_checkpoint(
    input: &Path,
    encoding: Encoding,
    out: &Path,
    calibration: &Calibration,
    device: &Device,
) -> Result<ExportReport> {
    let same = match (input.canonicalize(), out.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    ensure!(!same, "--out {} is the input checkpoint", out.display());
    let (_, _, mut ckpt) = load_model(input, device)?;
    let report = mask_report(&ckpt, device)?;
    ensure!(
        report.violations() == 0,
        "{}: {} masked weights are not zero; `kdprune verify` lists them",
        input.display(),
        report.violations()
    );
    let int8 = matches!(encoding, Encoding::Int8 | Encoding::SparseInt8);
    if int8 && (ckpt.quantized.is_empty() || calibration.batches > 0) {
        ckpt = quantize(&ckpt, calibration)?;
    }
    checkpoint::save_as(out, &ckpt, encoding)
        .with_context(|| format!("cannot write {}", out.display()))?;
    let (mut nonzero, mut total) = (0usize, 0usize);
    for t in ckpt.tensors.values() {
        let v = t
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        total += v.len();
        nonzero += v.iter().filter(|x| **x != 0.0).count();
    }
    let size = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len())
            .with_context(|| format!("cannot stat {}", p.display()))
    };
    Ok(ExportReport {
        out: out.to_path_buf(),
        encoding,
        input_bytes: size(input)?,
        output_bytes: size(out)?,
        nonzero,
        total,
        config: ckpt.config,
        metadata: ckpt.metadata,
    })
}
