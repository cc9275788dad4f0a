//! Seeded PyTorch-default initialisation.

mod common;

use candle_core::Device;
use kd_core::init::ParamSpec;
use kdprune_models::{Model, ModelConfig};

fn configs() -> Vec<ModelConfig> {
    vec![
        ModelConfig::from_name("lenet-300-100", (1, 28, 28), 10).unwrap(),
        ModelConfig::from_name("lenet5", (1, 28, 28), 10).unwrap(),
    ]
}

#[test]
fn same_seed_is_bit_identical() {
    let dev = Device::Cpu;
    for config in configs() {
        let a = Model::new(config.clone(), 42, &dev)
            .unwrap()
            .tensors()
            .unwrap();
        let b = Model::new(config.clone(), 42, &dev)
            .unwrap()
            .tensors()
            .unwrap();
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (name, t) in &a {
            assert_eq!(common::bits(t), common::bits(&b[name]), "{name}");
        }
    }
}

#[test]
fn different_seeds_differ_in_every_tensor() {
    let dev = Device::Cpu;
    for config in configs() {
        let a = Model::new(config.clone(), 1, &dev)
            .unwrap()
            .tensors()
            .unwrap();
        let b = Model::new(config.clone(), 2, &dev)
            .unwrap()
            .tensors()
            .unwrap();
        for (name, t) in &a {
            assert_ne!(common::bits(t), common::bits(&b[name]), "{name}");
        }
    }
}

#[test]
fn values_lie_within_the_pytorch_bound() {
    let dev = Device::Cpu;
    for config in configs() {
        let model = Model::new(config.clone(), 7, &dev).unwrap();
        let tensors = model.tensors().unwrap();
        for ParamSpec {
            name,
            shape,
            fan_in,
            ..
        } in config.param_specs()
        {
            // fan_in = in_features (linear) or in_channels·kh·kw (conv), shared by the bias
            let expected_fan_in: usize = match name.strip_suffix(".bias") {
                Some(layer) => config
                    .param_shapes()
                    .into_iter()
                    .find(|(n, _)| n == &format!("{layer}.weight"))
                    .map(|(_, s)| s[1..].iter().product())
                    .unwrap(),
                None => shape[1..].iter().product(),
            };
            assert_eq!(fan_in, expected_fan_in, "{name}");
            let bound = (1.0 / (fan_in as f64).sqrt()) as f32;
            let values = tensors[&name]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(tensors[&name].dims(), shape.as_slice());
            let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(max <= bound, "{name}: max |w| {max} > bound {bound}");
            // not degenerate: the draws reach most of the interval
            if values.len() >= 100 {
                assert!(max > 0.9 * bound, "{name}: max |w| {max} ≪ bound {bound}");
            }
        }
    }
}

#[test]
fn empirical_std_matches_uniform() {
    // U(−b, b) has mean 0 and standard deviation b/√3.
    let dev = Device::Cpu;
    let config = ModelConfig::from_name("lenet-300-100", (1, 28, 28), 10).unwrap();
    let model = Model::new(config, 0, &dev).unwrap();
    let w = model.tensors().unwrap()["fc1.weight"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(w.len(), 300 * 784);
    let n = w.len() as f64;
    let mean = w.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = w.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let bound = 1.0 / 784f64.sqrt();
    let expected_std = bound / 3f64.sqrt();
    let rel = (var.sqrt() - expected_std).abs() / expected_std;
    assert!(
        rel < 0.05,
        "std {} vs {expected_std} (rel. error {rel})",
        var.sqrt()
    );
    assert!(mean.abs() < 0.01 * bound, "mean {mean}");
}

#[test]
fn tensors_are_detached_copies() {
    let dev = Device::Cpu;
    let model = Model::new(
        ModelConfig::from_name("mlp-4", (1, 2, 2), 3).unwrap(),
        5,
        &dev,
    )
    .unwrap();
    let before = model.tensors().unwrap();
    let (name, var) = &model.named_vars()[0];
    var.set(&var.as_tensor().affine(2.0, 1.0).unwrap()).unwrap();
    let after = model.tensors().unwrap();
    assert_ne!(common::bits(&before[name]), common::bits(&after[name]));
    assert!(!before[name].is_variable());
}

#[test]
fn named_vars_are_sorted_and_complete() {
    let dev = Device::Cpu;
    let config = ModelConfig::from_name("lenet5", (1, 8, 8), 10).unwrap();
    let model = Model::new(config.clone(), 0, &dev).unwrap();
    let names: Vec<String> = model.named_vars().into_iter().map(|(n, _)| n).collect();
    let mut expected: Vec<String> = config.param_shapes().into_iter().map(|(n, _)| n).collect();
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(model.varmap().all_vars().len(), names.len());
}
