//! Cost of teacher-guided scoring: `N` batches of `|θ ⊙ ∂L/∂θ|` accumulation
//! with L = α·CA-KLD + (1−α)·CE, through the library's scoring dispatch (the
//! code `kdprune prune` and `kdprune run` run), divided by the time of the
//! same `N` plain forward+backward passes (goal ≤ 1.1). Two baselines, both
//! measured here on the same batches: the same KD forward+backward (teacher
//! forward included) without accumulation, and a student-only CE
//! forward+backward. Every side builds its batches from the dataset.
//!
//! `cargo run --release -p kdprune-benchmarks --bin bench-scoring [-- --batches 20]`

use candle_core::{Device, Tensor};
use kd_core::losses::Beta;
use kd_core::{LossConfig, SelfDistillConfig};
use kdprune_benchmarks::{count_arg, interleaved_median_secs};
use kdprune_cli::checkpoints::{filter, prunable_names};
use kdprune_cli::data::Data;
use kdprune_cli::scoring::{scores, ScoringSettings};
use kdprune_data::{Dataset, DatasetName, Normalization, Split};
use kdprune_models::{Model, ModelConfig};
use prune_core::importance::TeacherGuided;
use rand::{Rng, SeedableRng};

fn main() -> anyhow::Result<()> {
    kdprune_cli::runtime::tune_process();
    let dev = Device::Cpu;
    let batches = count_arg("--batches", 20).map_err(anyhow::Error::msg)?;
    let batch = 128usize;
    let data = synthetic(batches * batch);
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
    let kd = LossConfig::CaKld {
        temperature: 4.0,
        alpha: 0.9,
        beta: Beta::Confidence,
        eps: 1e-7,
        std: Default::default(),
    };
    let prunable = prunable_names(student.config(), &filter(false, false));
    let settings = ScoringSettings {
        batches,
        batch_size: batch,
        seed: 0,
        kd_loss: kd,
        self_distill: SelfDistillConfig::default(),
    };
    // The baselines' batches: the same sizes, built from the dataset too.
    let order: Vec<Vec<usize>> = (0..batches)
        .map(|b| (b * batch..(b + 1) * batch).collect())
        .collect();
    let batch_of = |idx: &[usize]| -> (Tensor, Tensor) {
        data.split
            .train
            .batch(idx, &data.norm, &dev)
            .expect("batch")
    };

    let mut scoring = || {
        let s = scores(
            &TeacherGuided::default(),
            &student,
            Some(&teacher),
            &data,
            &prunable,
            settings.clone(),
        )
        .expect("scores");
        std::hint::black_box(s);
    };
    let mut kd_passes = || {
        for idx in &order {
            let (x, y) = batch_of(idx);
            let t = teacher
                .forward_t(&x, false)
                .expect("teacher")
                .logits
                .detach();
            let s = student.forward_t(&x, true).expect("student").logits;
            let g = kd
                .loss(&s, Some(&t), &y)
                .expect("loss")
                .backward()
                .expect("backward");
            std::hint::black_box(g);
        }
    };
    let mut ce_passes = || {
        for idx in &order {
            let (x, y) = batch_of(idx);
            let s = student.forward_t(&x, true).expect("student").logits;
            let g = LossConfig::CrossEntropy
                .loss(&s, None, &y)
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

/// `n` seeded random 1×28×28 images with labels `0..10`, as a dataset
/// (training and test set alike).
fn synthetic(n: usize) -> Data {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let images: Vec<u8> = (0..n * 784).map(|_| rng.random()).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let ds = Dataset {
        name: "synthetic".into(),
        images,
        labels,
        channels: 1,
        height: 28,
        width: 28,
        num_classes: 10,
        max_value: 255.0,
    };
    let norm = Normalization::fit(&ds);
    Data {
        // `Data` names a registry dataset; the teacher-guided score reads
        // only the samples (the name picks EPSD's view and error messages),
        // and Fashion-MNIST is the one of this shape.
        name: DatasetName::FashionMnist,
        split: Split {
            train: ds.clone(),
            test: ds,
        },
        norm,
    }
}
