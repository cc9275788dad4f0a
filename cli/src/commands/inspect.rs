//! `kdprune eval`, `kdprune verify`, `kdprune models` and `kdprune summarize`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::Device;
use clap::Args;
use kdprune_cli::files::write_atomic;
use kdprune_cli::jobs;
use kdprune_cli::summary::{summarize as summarize_inputs, SummaryOptions};
use kdprune_data::DatasetName;

use super::args::{DataArgs, Engine};

/// Flags of `kdprune eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Checkpoint to evaluate.
    pub checkpoint: PathBuf,
    /// Expected architecture: fail if the checkpoint holds another one.
    #[arg(long)]
    pub model: Option<String>,
    /// Which layers the inference runtime runs sparse (MLPs, LeNet-5 and
    /// the CIFAR ResNets on the CPU): `auto` (by density: convolutions up
    /// to 0.3, linear layers up to 0.1), `dense`, `sparse`, a density, or
    /// `candle` for the training forward pass instead of the runtime.
    #[arg(long, default_value = "auto", value_parser = super::args::parse_layers)]
    pub layers: Engine,
    /// For a model with elastic kernels (efficientnet-b0-k7): run every
    /// depthwise kernel at its centre K×K (odd), through candle.
    #[arg(long, value_name = "K")]
    pub kernel: Option<usize>,
    /// With --kernel: first recompute the batch norms' running statistics
    /// at that kernel size on N training samples (Once-for-All's
    /// recalibration of a sub-network; weights untouched, nothing saved).
    #[arg(long, value_name = "N", requires = "kernel", value_parser = super::args::positive_count)]
    pub recalibrate_bn: Option<usize>,
    #[command(flatten)]
    pub data: DataArgs,
}

/// Prints `test accuracy: 0.9750` (standard output, the one line scripts
/// read), and on standard error which layers ran sparse.
pub fn eval(a: EvalArgs, device: &Device) -> Result<()> {
    let ev = match (a.kernel, a.layers) {
        (Some(k), _) => jobs::evaluate_checkpoint_at_kernel(
            &a.checkpoint,
            a.model.as_deref(),
            &a.data.spec(),
            k,
            a.recalibrate_bn,
            device,
        )?,
        (None, Engine::Runtime(choice)) => jobs::evaluate_checkpoint(
            &a.checkpoint,
            a.model.as_deref(),
            &a.data.spec(),
            choice,
            device,
        )?,
        (None, Engine::Candle) => jobs::evaluate_checkpoint_with_candle(
            &a.checkpoint,
            a.model.as_deref(),
            &a.data.spec(),
            device,
        )?,
    };
    println!("test accuracy: {:.4}", ev.accuracy);
    match ev.layers {
        Some(layers) => eprintln!(
            "runtime: {}",
            layers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => eprintln!("runtime: candle (the training forward pass)"),
    }
    Ok(())
}

/// Flags of `kdprune verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Checkpoint to check.
    pub checkpoint: PathBuf,
}

/// Prints the per-layer table ending in `global sparsity: 0.9000`; fails if
/// any masked weight is not exactly zero.
pub fn verify(a: VerifyArgs, device: &Device) -> Result<()> {
    let rep = jobs::verify_checkpoint(&a.checkpoint, device)?;
    println!("{}", rep.table().trim_end());
    if rep.violations() > 0 {
        bail!(
            "{}: {} masked weights are not zero",
            a.checkpoint.display(),
            rep.violations()
        );
    }
    Ok(())
}

/// Flags of `kdprune models`.
#[derive(Args, Debug)]
pub struct ModelsArgs {
    /// Count for this dataset's input shape and class count.
    #[arg(long, default_value = "cifar10")]
    pub dataset: String,
    /// Instead of the zoo: this checkpoint's architecture — each channel
    /// group's width against the unpruned network's, and the parameters and
    /// MACs of both (a structurally pruned model's before and after).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
}

/// Millions with two decimals, e.g. `0.27 M`.
fn millions(n: f64) -> String {
    format!("{:.2} M", n / 1e6)
}

/// Prints the zoo with parameter and MAC counts, or one checkpoint's widths.
pub fn models(a: ModelsArgs) -> Result<()> {
    if let Some(path) = &a.checkpoint {
        let r = jobs::checkpoint_widths(path)?;
        println!("{}", r.model);
        if !r.groups.is_empty() {
            println!("| channel group | unpruned | here |");
            println!("|---|---|---|");
            for (name, full, now) in &r.groups {
                println!("| {name} | {full} | {now} |");
            }
        }
        if !r.removed_blocks.is_empty() {
            println!("removed blocks: {}", r.removed_blocks.join(", "));
        }
        println!(
            "parameters: {} unpruned, {} here ({:.3}×)",
            r.params.0,
            r.params.1,
            r.params.1 as f64 / r.params.0.max(1) as f64
        );
        println!(
            "MACs per sample: {} unpruned, {} here ({:.2}× fewer)",
            r.macs.0,
            r.macs.1,
            r.macs.0 as f64 / r.macs.1.max(1) as f64
        );
        return Ok(());
    }
    let dataset: DatasetName = a.dataset.parse()?;
    let (c, h, w) = dataset.image_shape();
    println!(
        "models for {dataset} (input {c}x{h}x{w}, {} classes); MACs of one forward pass",
        dataset.num_classes()
    );
    println!(
        "{:<14} {:>12} {:>12}  description",
        "name", "params", "MACs"
    );
    for e in jobs::model_zoo(dataset) {
        match e.size {
            Ok((params, macs)) => println!(
                "{:<14} {:>12} {:>12}  {}",
                e.name,
                millions(params as f64),
                millions(macs as f64),
                e.description
            ),
            Err(err) => println!("{:<14} {:>12} {:>12}  ({err})", e.name, "-", "-"),
        }
    }
    Ok(())
}

/// Flags of `kdprune summarize`.
#[derive(Args, Debug)]
pub struct SummarizeArgs {
    /// `report.json` files of `kdprune run` (one per seed and sparsity) or
    /// of `kdprune distill` (one per seed and loss, the loss named by its
    /// folder), or sweep folders.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Also print every seed's value.
    #[arg(long)]
    pub per_seed: bool,
    /// Also print every row's difference to this row, per seed and as mean ±
    /// std over seeds: a stage of `run` (e.g. magnitude_retrained), a loss of
    /// `distill` (e.g. ce), a method of a sweep (e.g. magnitude).
    #[arg(long)]
    pub paired: Option<String>,
    /// Also write the tables to this Markdown file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Prints (and optionally writes) the tables.
pub fn summarize(a: SummarizeArgs) -> Result<()> {
    let options = SummaryOptions {
        per_seed: a.per_seed,
        paired: a.paired,
    };
    let tables = summarize_inputs(&a.inputs, &options)?;
    print!("{}", tables.markdown);
    if let Some(out) = &a.out {
        write_atomic(out, &tables.markdown)?;
    }
    Ok(())
}
