//! `kdprune eval`: test accuracy of a checkpoint.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::args::DataArgs;
use crate::common;

/// Flags of `kdprune eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Checkpoint to evaluate.
    pub checkpoint: PathBuf,
    /// Expected architecture: fail if the checkpoint holds another one.
    #[arg(long)]
    pub model: Option<String>,
    #[command(flatten)]
    pub data: DataArgs,
}

/// Prints `test accuracy: 0.9750`.
pub fn run(a: EvalArgs) -> Result<()> {
    let device = common::device();
    let (model, _, ckpt) = common::load_model(&a.checkpoint, &device)?;
    let (data, _) = a.data.load(Some(&ckpt.metadata))?;
    if let Some(name) = &a.model {
        let expected =
            kdprune_models::ModelConfig::from_name(name, data.input_shape(), data.num_classes())?;
        ckpt.expect_config(&expected)?;
    }
    common::check_fits(&model, &data, "the checkpoint")?;
    let acc = kd_core::evaluate(&model, &data.split.test, &data.norm, 512)?;
    println!("test accuracy: {acc:.4}");
    Ok(())
}
