//! Global selection over 1 M, 10 M and 25 M scores (goal: < 0.3 s at 25 M),
//! against a full sort of the same scores measured in the same run.
//!
//! `cargo run --release -p kdprune-benchmarks --bin bench-select`

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use kdprune_benchmarks::median_secs;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn main() -> candle_core::Result<()> {
    kdprune_cli::runtime::tune_process();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for &n in &[1_000_000usize, 10_000_000, 25_000_000] {
        // Four tensors of unequal size, like the layers of a network.
        let parts = [n / 2, n / 4, n / 8, n - n / 2 - n / 4 - n / 8];
        let mut scores = BTreeMap::new();
        let mut flat = Vec::with_capacity(n);
        for (i, &len) in parts.iter().enumerate() {
            let v: Vec<f32> = (0..len).map(|_| rng.random::<f32>()).collect();
            flat.extend_from_slice(&v);
            scores.insert(
                format!("layer{i}.weight"),
                Tensor::from_vec(v, len, &Device::Cpu)?,
            );
        }
        let reps = if n > 5_000_000 { 3 } else { 7 };
        let select = median_secs(reps, || {
            let m = prune_core::select::global(&scores, 0.9).expect("selection");
            std::hint::black_box(m);
        });
        // Baseline: sorting all scores (what a naive threshold search does).
        let sort = median_secs(reps, || {
            let mut v = flat.clone();
            v.sort_unstable_by(f32::total_cmp);
            std::hint::black_box(v);
        });
        println!(
            "bench=global_select n={n} select_s={select:.4} sort_s={sort:.4} ratio_vs_sort={:.3} goal_25M_s=0.3",
            select / sort
        );
    }
    Ok(())
}
