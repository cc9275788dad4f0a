//! One convolution layer, conv 32→64, 3×3, padding 1, on `[128, 32, 16, 16]`:
//! forward, and forward + backward (input, weight and bias gradients), with
//! kdprune's kernel and with candle's `conv2d`, measured side by side, plus
//! an f32 1024³ matrix product for the GEMM speed both rely on.
//!
//! ```text
//! op=NAME kdprune_ms=X candle_ms=Y ratio=Y/X
//! op=matmul_f32_1024 candle_ms=Z
//! ```
//!
//! `cargo run --release -p kdprune-benchmarks --bin bench-conv [-- --rounds 7]`
//! (PyTorch's figures: `python3 benchmarks/pytorch_reference.py`).
//! `--profile` times kdprune's forward + backward alone, for a profiler.

use candle_core::{Device, Result, Tensor, Var};
use candle_nn::Conv2dConfig;
use kdprune_benchmarks::{count_arg, interleaved_median_secs, load_average, median_secs};
use kdprune_cli::runtime::tune_process;
use kdprune_models::ops;

fn main() -> Result<()> {
    tune_process();
    let rounds = count_arg("--rounds", 7).map_err(candle_core::Error::msg)?;
    eprintln!(
        "# rounds={rounds} load_1min={}",
        load_average().map_or("?".to_string(), |l| format!("{l:.2}"))
    );
    let dev = Device::Cpu;
    let x = Var::randn(0f32, 1.0, (128, 32, 16, 16), &dev)?;
    let w = Var::randn(0f32, 0.05, (64, 32, 3, 3), &dev)?;
    let b = Var::randn(0f32, 0.05, 64, &dev)?;
    let cfg = Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    let ours = |x: &Tensor| ops::conv2d(x, &w, Some(&b), &cfg);
    let candle = |x: &Tensor| {
        x.conv2d(&w, 1, 1, 1, 1)?
            .broadcast_add(&b.reshape((1, 64, 1, 1))?)
    };
    let forward = |f: &dyn Fn(&Tensor) -> Result<Tensor>| {
        std::hint::black_box(f(x.as_tensor()).expect("forward"));
    };
    let both = |f: &dyn Fn(&Tensor) -> Result<Tensor>| {
        let y = f(x.as_tensor()).expect("forward");
        std::hint::black_box(y.sum_all().and_then(|s| s.backward()).expect("backward"));
    };
    if std::env::args().any(|a| a == "--profile") {
        let t = median_secs(rounds, || both(&ours));
        println!(
            "op=conv32x64_16x16_b128_fwd_bwd kdprune_ms={:.2} (--profile: kdprune only)",
            1e3 * t
        );
        return Ok(());
    }
    let report = |name: &str, t: Vec<f64>| {
        println!(
            "op={name} kdprune_ms={:.2} candle_ms={:.2} ratio={:.2}",
            1e3 * t[0],
            1e3 * t[1],
            t[1] / t[0]
        );
    };
    report(
        "conv32x64_16x16_b128_fwd",
        interleaved_median_secs(
            rounds,
            &mut [&mut || forward(&ours), &mut || forward(&candle)],
        ),
    );
    report(
        "conv32x64_16x16_b128_fwd_bwd",
        interleaved_median_secs(rounds, &mut [&mut || both(&ours), &mut || both(&candle)]),
    );
    // Both sides multiply with the same `gemm` crate: this line is the GEMM
    // speed (the same product on both sides, ratio ≈ 1) for comparison with
    // PyTorch's.
    let a = Tensor::randn(0f32, 1.0, (1024, 1024), &dev)?;
    let c = Tensor::randn(0f32, 1.0, (1024, 1024), &dev)?;
    let mut mm = || {
        std::hint::black_box(a.matmul(&c).expect("matmul"));
    };
    let t = interleaved_median_secs(rounds, &mut [&mut mm]);
    println!("op=matmul_f32_1024 candle_ms={:.2}", 1e3 * t[0]);
    Ok(())
}
