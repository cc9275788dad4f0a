//! Gradients reach every parameter; a few SGD steps lower the loss.

mod common;

use candle_core::Device;
use candle_nn::{loss::cross_entropy, Optimizer, SGD};
use kdprune_models::{Model, ModelConfig};

fn configs() -> Vec<(ModelConfig, [usize; 4])> {
    vec![
        (
            ModelConfig::from_name("lenet-300-100", (1, 8, 8), 10).unwrap(),
            [16, 1, 8, 8],
        ),
        (
            ModelConfig::from_name("lenet5", (1, 28, 28), 10).unwrap(),
            [4, 1, 28, 28],
        ),
        (
            ModelConfig::from_name("lenet5", (1, 8, 8), 10).unwrap(),
            [16, 1, 8, 8],
        ),
        // odd map sizes take the cropping path of the max-pool
        (
            ModelConfig::from_name("lenet5", (3, 7, 7), 10).unwrap(),
            [8, 3, 7, 7],
        ),
    ]
}

#[test]
fn every_parameter_gets_a_gradient() {
    let dev = Device::Cpu;
    for (config, shape) in configs() {
        let model = Model::new(config.clone(), 3, &dev).unwrap();
        let xs = common::random_tensor(&shape, 9, &dev);
        let out = model.forward_t(&xs, true).unwrap();
        let grads = out.logits.sum_all().unwrap().backward().unwrap();
        for (name, var) in model.named_vars() {
            let g = grads
                .get(&var)
                .unwrap_or_else(|| panic!("{}: no gradient for {name}", config.name()));
            assert_eq!(g.dims(), var.dims());
            let norm = g
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(norm > 0.0, "{}: zero gradient for {name}", config.name());
        }
    }
}

#[test]
fn sgd_steps_reduce_cross_entropy() {
    let dev = Device::Cpu;
    for (config, shape) in configs() {
        let model = Model::new(config.clone(), 4, &dev).unwrap();
        let xs = common::random_tensor(&shape, 10, &dev);
        let ys = common::random_labels(shape[0], 10, 11, &dev);
        let vars = model.named_vars().into_iter().map(|(_, v)| v).collect();
        let mut sgd = SGD::new(vars, 0.05).unwrap();
        let loss_at = |model: &Model| {
            let logits = model.forward_t(&xs, true).unwrap().logits;
            cross_entropy(&logits, &ys).unwrap()
        };
        let first = loss_at(&model).to_scalar::<f32>().unwrap();
        for _ in 0..10 {
            let loss = loss_at(&model);
            sgd.backward_step(&loss).unwrap();
        }
        let last = loss_at(&model).to_scalar::<f32>().unwrap();
        assert!(
            last.is_finite() && last < first,
            "{}: loss {first} -> {last}",
            config.name()
        );
    }
}
