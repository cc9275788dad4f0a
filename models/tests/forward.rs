//! Shapes of logits and features.

mod common;

use candle_core::{DType, Device, Tensor};
use kdprune_models::{Model, ModelConfig};

fn shapes(
    name: &str,
    input: (usize, usize, usize),
    batch: usize,
) -> (Vec<usize>, Vec<(String, Vec<usize>)>) {
    let dev = Device::Cpu;
    let config = ModelConfig::from_name(name, input, 10).unwrap();
    let model = Model::new(config, 1, &dev).unwrap();
    let (c, h, w) = input;
    let xs = Tensor::ones((batch, c, h, w), DType::F32, &dev).unwrap();
    let out = model.forward_t(&xs, true).unwrap();
    let features = out
        .features
        .iter()
        .map(|(n, t)| (n.clone(), t.dims().to_vec()))
        .collect();
    (out.logits.dims().to_vec(), features)
}

fn named(v: &[(&str, &[usize])]) -> Vec<(String, Vec<usize>)> {
    v.iter().map(|(n, s)| (n.to_string(), s.to_vec())).collect()
}

#[test]
fn mlp_shapes() {
    let (logits, features) = shapes("lenet-300-100", (1, 28, 28), 3);
    assert_eq!(logits, [3, 10]);
    assert_eq!(features, named(&[("fc1", &[3, 300]), ("fc2", &[3, 100])]));

    let (logits, features) = shapes("mlp-20-30-40", (1, 8, 8), 5);
    assert_eq!(logits, [5, 10]);
    assert_eq!(
        features,
        named(&[("fc1", &[5, 20]), ("fc2", &[5, 30]), ("fc3", &[5, 40])])
    );
}

#[test]
fn lenet5_shapes_mnist() {
    // 28 → conv1 (pad 2) 28 → pool 14 → conv2 (pad 0) 10 → pool 5
    let (logits, features) = shapes("lenet5", (1, 28, 28), 2);
    assert_eq!(logits, [2, 10]);
    assert_eq!(
        features,
        named(&[
            ("conv1", &[2, 6, 14, 14]),
            ("conv2", &[2, 16, 5, 5]),
            ("fc1", &[2, 120]),
            ("fc2", &[2, 84]),
        ])
    );
}

#[test]
fn lenet5_shapes_digits_and_odd_sizes() {
    // 8 → 8 → pool 4 → conv2 (pad 2) 4 → pool 2
    let (logits, features) = shapes("lenet5", (1, 8, 8), 4);
    assert_eq!(logits, [4, 10]);
    assert_eq!(features[0], ("conv1".to_string(), vec![4, 6, 4, 4]));
    assert_eq!(features[1], ("conv2".to_string(), vec![4, 16, 2, 2]));

    // 7 → 7 → pool 3 (floor) → conv2 (pad 2) 3 → pool 1
    let (logits, features) = shapes("lenet5", (3, 7, 7), 2);
    assert_eq!(logits, [2, 10]);
    assert_eq!(features[0], ("conv1".to_string(), vec![2, 6, 3, 3]));
    assert_eq!(features[1], ("conv2".to_string(), vec![2, 16, 1, 1]));
}

#[test]
fn features_are_post_relu_and_train_flag_does_not_change_output() {
    let dev = Device::Cpu;
    let model = Model::new(
        ModelConfig::from_name("lenet5", (1, 8, 8), 10).unwrap(),
        3,
        &dev,
    )
    .unwrap();
    let xs = common::random_tensor(&[4, 1, 8, 8], 11, &dev);
    let a = model.forward_t(&xs, true).unwrap();
    let b = model.forward_t(&xs, false).unwrap();
    assert_eq!(common::bits(&a.logits), common::bits(&b.logits));
    for (name, f) in &a.features {
        let min = f
            .flatten_all()
            .unwrap()
            .min(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(min >= 0.0, "{name} has a negative activation {min}");
    }
    assert!(a.feature("fc2").is_some());
    assert!(a.feature("fc3").is_none());
}
