//! The inference runtime against the training forward pass: every layer
//! choice, batch 1 and batched, dense to 99 % sparse.

mod common;

use candle_core::Device;
use kdprune_models::infer::{InferenceNet, LayerChoice};

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
                let want = common::logits(&ckpt, &xs);
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

/// `ckpt` with every batch norm's four vectors drawn at random (a fresh
/// network's are 1, 0, 0, 1, which would hide a wrong fold).
fn with_random_batch_norms(mut ckpt: kdprune_models::Checkpoint) -> kdprune_models::Checkpoint {
    for (i, (name, t)) in ckpt.tensors.iter_mut().enumerate() {
        let (lo, hi) = if name.ends_with("running_var") {
            (0.3, 2.0)
        } else if name.ends_with("running_mean") {
            (-0.5, 0.5)
        } else if name.contains("bn") && name.ends_with(".weight") {
            (0.4, 1.6)
        } else if name.contains("bn") && name.ends_with(".bias") {
            (-0.3, 0.3)
        } else {
            continue;
        };
        let u = common::random_tensor(t.dims(), 100 + i as u64, &Device::Cpu);
        // random_tensor is uniform in [-1, 1): mapped onto [lo, hi).
        *t = ((u + 1.0).unwrap() * ((hi - lo) / 2.0))
            .unwrap()
            .affine(1.0, lo)
            .unwrap();
    }
    ckpt
}

#[test]
fn the_cifar_resnets_compute_the_models_logits() {
    // Shortcut A with the input padded to 32×32, and shortcut B on 3×32×32.
    for (name, input) in [("resnet20", (1, 28, 28)), ("resnet8x4", (3, 32, 32))] {
        for sparsity in [0.0, 0.9] {
            let ckpt = with_random_batch_norms(common::pruned_checkpoint(name, input, sparsity));
            let (c, h, w) = input;
            let batch = 2;
            let xs = common::random_tensor(&[batch, c, h, w], 11, &Device::Cpu);
            let want = common::logits(&ckpt, &xs);
            let x = xs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for choice in [LayerChoice::Dense, LayerChoice::Sparse] {
                let net = InferenceNet::new(&ckpt.config, &ckpt.tensors, choice).unwrap();
                let layers = net.layers();
                assert_eq!(layers.first().unwrap().name, "conv1.weight");
                assert_eq!(layers.last().unwrap().name, "fc.weight");
                assert!(layers
                    .iter()
                    .all(|l| l.sparse == (choice == LayerChoice::Sparse)));
                if name == "resnet20" {
                    // 19 convolutions (shortcut A has none) and fc.
                    assert_eq!(layers.len(), 20);
                }
                let got = net.forward(&x, batch).unwrap();
                assert_eq!(got.len(), want.len());
                let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (a, e) in got.iter().zip(&want) {
                    assert!(
                        (a - e).abs() <= 1e-5 * scale.max(1e-3),
                        "{name} s={sparsity} {choice:?}: {a} vs {e}"
                    );
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
    // The default: convolutions sparse up to density 0.3, linear layers up
    // to 0.1; at density 0.2 the two convolutions of LeNet-5 are sparse and
    // its three linear layers dense.
    let lenet = common::pruned_checkpoint("lenet5", (1, 28, 28), 0.8);
    let net = InferenceNet::new(&lenet.config, &lenet.tensors, LayerChoice::default()).unwrap();
    let kinds: Vec<bool> = net.layers().iter().map(|l| l.sparse).collect();
    assert_eq!(
        kinds,
        [true, true, false, false, false],
        "{:?}",
        net.layers()
    );
}

#[test]
fn bad_inputs_are_errors() {
    let ckpt = common::pruned_checkpoint("lenet5", (1, 8, 8), 0.5);
    let net = InferenceNet::new(&ckpt.config, &ckpt.tensors, LayerChoice::default()).unwrap();
    let err = net.forward(&[0.0; 63], 1).unwrap_err().to_string();
    assert!(err.contains("holds 63 values"), "{err}");
    let zoo = common::pruned_checkpoint("vgg11", (3, 32, 32), 0.5);
    let err = InferenceNet::new(&zoo.config, &zoo.tensors, LayerChoice::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("not vgg11"), "{err}");
    let resnet = common::pruned_checkpoint("resnet20", (1, 8, 8), 0.5);
    let mut broken = resnet.tensors.clone();
    broken.remove("layer2.0.bn1.running_var");
    let err = InferenceNet::new(&resnet.config, &broken, LayerChoice::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("layer2.0.bn1.running_var"), "{err}");
    let mut broken = ckpt.tensors.clone();
    broken.remove("fc2.weight");
    let err = InferenceNet::new(&ckpt.config, &broken, LayerChoice::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("fc2.weight"), "{err}");
}
