//! The inference runtime against the training forward pass: every layer
//! choice, batch 1 and batched, dense to 99 % sparse.

mod common;

use candle_core::{Device, Tensor};
use kdprune_models::infer::{InferenceNet, LayerChoice};

fn logits_of_model(ckpt: &kdprune_models::Checkpoint, xs: &Tensor) -> Vec<f32> {
    let model = ckpt.to_model(&Device::Cpu).unwrap();
    model
        .forward_t(xs, false)
        .unwrap()
        .logits
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

#[test]
fn every_layer_choice_computes_the_models_logits() {
    for (name, input) in [
        ("lenet-300-100", (1, 28, 28)),
        ("mlp-64-32", (1, 8, 8)),
        ("lenet5", (1, 28, 28)),
        ("lenet5-x2", (1, 8, 8)),
        ("lenet5", (3, 9, 11)),
    ] {
        for sparsity in [0.0, 0.9, 0.99] {
            let ckpt = common::pruned_checkpoint(name, input, sparsity);
            let (c, h, w) = input;
            for batch in [1, 5, 64] {
                let xs = common::random_tensor(&[batch, c, h, w], 11, &Device::Cpu);
                let want = logits_of_model(&ckpt, &xs);
                let x = xs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                for choice in [
                    LayerChoice::Dense,
                    LayerChoice::Sparse,
                    LayerChoice::default(),
                ] {
                    let net = InferenceNet::new(&ckpt.config, &ckpt.tensors, choice).unwrap();
                    let got = net.forward(&x, batch).unwrap();
                    assert_eq!(got.len(), want.len());
                    for (a, e) in got.iter().zip(&want) {
                        assert!(
                            (a - e).abs() <= 1e-5 * e.abs().max(1e-3) + 1e-7,
                            "{name} {input:?} s={sparsity} batch {batch} {choice:?}: {a} vs {e}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn the_choice_follows_the_density() {
    let ckpt = common::pruned_checkpoint("lenet-300-100", (1, 8, 8), 0.95);
    let net = InferenceNet::new(&ckpt.config, &ckpt.tensors, LayerChoice::Auto(0.5)).unwrap();
    let layers = net.layers();
    assert_eq!(layers.len(), 3);
    for l in &layers {
        assert!(l.sparse, "{l}");
        assert!((l.density - 0.05).abs() < 0.02, "{l}");
    }
    let dense = InferenceNet::new(&ckpt.config, &ckpt.tensors, LayerChoice::Auto(0.01)).unwrap();
    assert!(dense.layers().iter().all(|l| !l.sparse));
}

#[test]
fn bad_inputs_are_errors() {
    let ckpt = common::pruned_checkpoint("lenet5", (1, 8, 8), 0.5);
    let net = InferenceNet::new(&ckpt.config, &ckpt.tensors, LayerChoice::default()).unwrap();
    let err = net.forward(&[0.0; 63], 1).unwrap_err().to_string();
    assert!(err.contains("holds 63 values"), "{err}");
    let zoo = common::pruned_checkpoint("resnet20", (3, 32, 32), 0.5);
    let err = InferenceNet::new(&zoo.config, &zoo.tensors, LayerChoice::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("not resnet20"), "{err}");
    let mut broken = ckpt.tensors.clone();
    broken.remove("fc2.weight");
    let err = InferenceNet::new(&ckpt.config, &broken, LayerChoice::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("fc2.weight"), "{err}");
}
