//! Cost of teacher-guided scoring: `N` batches of `|θ ⊙ ∂L/∂θ|` accumulation
//! with L = α·CA-KLD + (1−α)·CE, divided by the time of the same `N` plain
//! forward+backward passes (goal ≤ 1.1). Two baselines, both measured here:
//! the same KD forward+backward (teacher forward included) without
//! accumulation, and a student-only CE forward+backward.
//!
//! `cargo run --release -p kdprune-benchmarks --bin bench-scoring`

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use kd_core::losses::Beta;
use kd_core::LossConfig;
use kdprune_benchmarks::interleaved_median_secs;
use kdprune_models::{Model, ModelConfig};
use prune_core::importance::SaliencyAccumulator;

fn main() -> anyhow_free::Result {
    kdprune_models::runtime::tune_process();
    let dev = Device::Cpu;
    let (batches, batch) = (20usize, 128usize);
    let student = Model::new(
        ModelConfig::from_name("lenet-300-100", (1, 28, 28), 10)?,
        1,
        &dev,
    )?;
    let teacher = Model::new(
        ModelConfig::from_name("mlp-1200-1200", (1, 28, 28), 10)?,
        2,
        &dev,
    )?;
    let xs: Vec<Tensor> = (0..batches)
        .map(|_| Tensor::randn(0f32, 1.0, (batch, 1, 28, 28), &dev))
        .collect::<candle_core::Result<_>>()?;
    let ys: Vec<Tensor> = (0..batches)
        .map(|i| {
            let labels: Vec<u32> = (0..batch).map(|j| ((i * 7 + j) % 10) as u32).collect();
            Tensor::from_vec(labels, batch, &dev)
        })
        .collect::<candle_core::Result<_>>()?;
    let kd = LossConfig::CaKld {
        temperature: 4.0,
        alpha: 0.9,
        beta: Beta::Confidence,
        eps: 1e-7,
    };
    let names: Vec<String> = student
        .named_vars()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.ends_with(".weight"))
        .collect();

    let mut scoring = || {
        let weights: BTreeMap<String, Tensor> = student
            .tensors()
            .expect("tensors")
            .into_iter()
            .filter(|(n, _)| names.contains(n))
            .collect();
        let mut acc = SaliencyAccumulator::new();
        for (x, y) in xs.iter().zip(&ys) {
            let (_, g) =
                kd_core::loss_gradients(&student, Some(&teacher), x, y, &kd).expect("grads");
            let g: BTreeMap<String, Tensor> =
                g.into_iter().filter(|(n, _)| names.contains(n)).collect();
            acc.add_batch(&weights, &g).expect("accumulate");
        }
        std::hint::black_box(acc.finish().expect("scores"));
    };
    let mut kd_passes = || {
        for (x, y) in xs.iter().zip(&ys) {
            let t = teacher
                .forward_t(x, false)
                .expect("teacher")
                .logits
                .detach();
            let s = student.forward_t(x, true).expect("student").logits;
            let g = kd
                .loss(&s, Some(&t), y)
                .expect("loss")
                .backward()
                .expect("backward");
            std::hint::black_box(g);
        }
    };
    let mut ce_passes = || {
        for (x, y) in xs.iter().zip(&ys) {
            let s = student.forward_t(x, true).expect("student").logits;
            let g = LossConfig::CrossEntropy
                .loss(&s, None, y)
                .expect("loss")
                .backward()
                .expect("backward");
            std::hint::black_box(g);
        }
    };
    // Interleaved rounds: a load change on the machine hits all three alike.
    let t = interleaved_median_secs(7, &mut [&mut scoring, &mut kd_passes, &mut ce_passes]);
    let (scoring, kd_passes, ce_passes) = (t[0], t[1], t[2]);
    println!(
        "bench=teacher_guided_scoring batches={batches} batch={batch} scoring_s={scoring:.4} kd_fwd_bwd_s={kd_passes:.4} ce_fwd_bwd_s={ce_passes:.4} ratio_vs_kd_passes={:.3} ratio_vs_ce_passes={:.3} goal=1.1",
        scoring / kd_passes,
        scoring / ce_passes
    );
    Ok(())
}

/// The binary's error type: any library error, printed by `main`.
mod anyhow_free {
    pub type Result = std::result::Result<(), Box<dyn std::error::Error>>;
}
