//! Prunes a plain `HashMap<String, Tensor>` of weights to 80 % sparsity with
//! one global magnitude threshold and prints the sparsity report.
//!
//! Run with `cargo run -p prune-core --example prune_hashmap`.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use prune_core::{importance, select, sparsity_report, NamedTensors, ParamFilter};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::Cpu;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    // A small MLP's parameters in forward order; layers get different scales
    // so the global threshold prunes them unevenly.
    let layout: [(&str, Vec<usize>, f32); 6] = [
        ("fc1.weight", vec![64, 32], 1.0),
        ("fc1.bias", vec![64], 1.0),
        ("fc2.weight", vec![32, 64], 0.7),
        ("fc2.bias", vec![32], 0.7),
        ("head.weight", vec![10, 32], 1.5),
        ("head.bias", vec![10], 1.5),
    ];
    let mut weights: HashMap<String, Tensor> = HashMap::new();
    for (name, shape, scale) in &layout {
        let numel = shape.iter().product();
        let values: Vec<f32> = (0..numel)
            .map(|_| scale * (rng.random::<f32>() * 2.0 - 1.0))
            .collect();
        weights.insert(
            name.to_string(),
            Tensor::from_vec(values, shape.as_slice(), &device)?,
        );
    }

    // The default filter keeps biases dense.
    let params: Vec<(String, Vec<usize>)> = layout
        .iter()
        .map(|(name, shape, _)| (name.to_string(), shape.clone()))
        .collect();
    let prunable = ParamFilter::default().prunable(&params);
    let candidates: NamedTensors = prunable
        .iter()
        .map(|name| (name.clone(), weights[name].clone()))
        .collect();

    let scores = importance::magnitude(&candidates)?;
    let masks = select::global(&scores, 0.8)?;

    let mut all: NamedTensors = weights.into_iter().collect();
    masks.apply_to_tensors(&mut all)?;

    let report = sparsity_report(&all, &prunable, Some(&masks))?;
    println!("{}", report.table());
    Ok(())
}
