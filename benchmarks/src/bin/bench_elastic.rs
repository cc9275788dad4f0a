//! Once-for-All's elastic kernels: the latency of each uniform sub-network
//! of `efficientnet-b0-k7` (every depthwise kernel run at its centre 7×7,
//! 5×5 or 3×3), evaluation mode, candle's forward pass with kdprune's CPU
//! kernels, at batch 1 and 64 on 1×28×28 inputs (padded to 32×32 inside).
//!
//! ```text
//! kernel=K batch=B ms=T vs_k7=T7/T
//! ```
//!
//! Time does not depend on the weights' values: a seeded initialisation,
//! or `--checkpoint CKPT`. Each figure is the median of `--rounds`
//! (default 11) interleaved samples after a warm-up.
//!
//! `cargo run --release -p kdprune-benchmarks --bin bench-elastic [-- --rounds 11]`

use anyhow::Result;
use candle_core::{Device, Tensor};
use kdprune_benchmarks::{count_arg, header_line, interleaved_median_secs, text_arg};
use kdprune_cli::runtime::tune_process;
use kdprune_models::checkpoint;
use kdprune_models::{Model, ModelConfig};

fn main() -> Result<()> {
    tune_process();
    let rounds = count_arg("--rounds", 11).map_err(anyhow::Error::msg)?;
    println!("{}", header_line(rounds));
    let dev = Device::Cpu;
    let model = match text_arg("--checkpoint") {
        Some(path) => checkpoint::load(std::path::Path::new(&path), &dev)?.to_model(&dev)?,
        None => Model::new(
            ModelConfig::from_name("efficientnet-b0-k7", (1, 28, 28), 10)?,
            0,
            &dev,
        )?,
    };
    let (c, h, w) = model
        .config()
        .input_shape()
        .ok_or_else(|| anyhow::anyhow!("not an image model"))?;
    const SIZES: [usize; 3] = [7, 5, 3];
    for batch in [1usize, 64] {
        let n = batch * c * h * w;
        let xs = Tensor::from_vec(
            (0..n).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>(),
            (batch, c, h, w),
            &dev,
        )?;
        let mut runs: Vec<Box<dyn FnMut()>> = SIZES
            .iter()
            .map(|&k| {
                let (model, xs) = (&model, &xs);
                Box::new(move || {
                    model.set_kernel(k).expect("elastic kernels");
                    std::hint::black_box(model.forward_t(xs, false).expect("forward"));
                }) as Box<dyn FnMut()>
            })
            .collect();
        let mut refs: Vec<&mut dyn FnMut()> = runs.iter_mut().map(|b| b.as_mut() as _).collect();
        let t = interleaved_median_secs(rounds, &mut refs);
        for (k, secs) in SIZES.iter().zip(&t) {
            println!(
                "kernel={k} batch={batch} ms={:.2} vs_k7={:.2}",
                1e3 * secs,
                t[0] / secs
            );
        }
    }
    Ok(())
}
