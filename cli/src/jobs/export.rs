//! Writing a checkpoint in another encoding: dense for PyTorch, sparse
//! (compressed-tensors' `sparse-bitmask`) for size.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use candle_core::Device;
use kdprune_models::checkpoint::{self, Encoding};

use super::inspect::verify_checkpoint;

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

/// Reads the checkpoint at `input` (any encoding), checks that every masked
/// weight is zero, and writes it to `out` in `encoding` (atomically: a failed
/// export leaves no file). `out` may not be `input`.
pub fn export_checkpoint(
    input: &Path,
    encoding: Encoding,
    out: &Path,
    device: &Device,
) -> Result<ExportReport> {
    let same = match (input.canonicalize(), out.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    ensure!(!same, "--out {} is the input checkpoint", out.display());
    let report = verify_checkpoint(input, device)?;
    ensure!(
        report.violations() == 0,
        "{}: {} masked weights are not zero; `kdprune verify` lists them",
        input.display(),
        report.violations()
    );
    let ckpt = checkpoint::load(input, device)
        .with_context(|| format!("cannot load checkpoint {}", input.display()))?;
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
    })
}
