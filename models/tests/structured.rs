//! Structured pruning of the CIFAR ResNets: removing channels of the
//! declared groups gives a smaller network whose forward pass equals the
//! original's with those channels masked, whose parameter count is what its
//! config says, and which saves, loads and runs like any other.

mod common;

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use kdprune_models::checkpoint::{self, Checkpoint};
use kdprune_models::infer::{InferenceNet, LayerChoice};
use kdprune_models::structured::{channel_groups, remove_channels};
use kdprune_models::ModelConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Every batch norm's vectors at random (a fresh network's would hide a
/// wrong cut of γ, β or the statistics).
fn random_batch_norms(ckpt: &mut Checkpoint) {
    for (i, (name, t)) in ckpt.tensors.iter_mut().enumerate() {
        let lo = if name.ends_with("running_var") || name.ends_with("bn1.weight") {
            0.5
        } else if name.contains("bn") {
            -0.5
        } else {
            continue;
        };
        let u = common::random_tensor(t.dims(), 50 + i as u64, &Device::Cpu);
        *t = u.affine(0.25, lo + 0.25).unwrap();
    }
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (a, e) in got.iter().zip(want) {
        assert!(
            (a - e).abs() <= 1e-5 * scale.max(1e-3),
            "{what}: {a} vs {e}"
        );
    }
}

#[test]
fn removing_channels_equals_masking_them() {
    for (name, input) in [
        ("resnet20", (1, 12, 12)),
        ("resnet8x4", (3, 8, 8)),
        ("vgg11", (3, 8, 8)),
    ] {
        let mut ckpt = common::pruned_checkpoint(name, input, 0.0);
        random_batch_norms(&mut ckpt);
        let groups = channel_groups(&ckpt.config).unwrap();
        let expected_groups = match name {
            "resnet20" => 9,
            "resnet8x4" => 3,
            _ => 8,
        };
        assert_eq!(groups.len(), expected_groups);
        // a random non-empty subset of every group's channels
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut kept = BTreeMap::new();
        let mut masked = ckpt.clone();
        for g in &groups {
            let mut keep: Vec<usize> = (0..g.channels)
                .filter(|_| rng.random::<f64>() < 0.6)
                .collect();
            if keep.is_empty() {
                keep.push(g.channels / 2);
            }
            // the masked original: the next layer's inputs from the removed
            // channels are zero (the group's last member, along axis 1)
            let next = g.members.last().unwrap();
            assert_eq!(next.axis, 1);
            let t = &masked.tensors[&next.tensor];
            let inner: usize = t.dims()[2..].iter().product();
            let m: Vec<f32> = (0..t.elem_count())
                .map(|i| {
                    let c = (i / inner) % g.channels;
                    f32::from(u8::from(keep.contains(&c)))
                })
                .collect();
            let m = Tensor::from_vec(m, t.dims(), &Device::Cpu).unwrap();
            masked
                .tensors
                .insert(next.tensor.clone(), t.mul(&m).unwrap());
            kept.insert(g.name.clone(), keep);
        }
        let small = remove_channels(&ckpt, &kept).unwrap();
        // the config names the new widths, and counts the parameters
        let params: usize = small
            .config
            .param_specs()
            .iter()
            .map(|s| s.shape.iter().product::<usize>())
            .sum();
        let stored: usize = small
            .config
            .param_specs()
            .iter()
            .map(|s| small.tensors[&s.name].elem_count())
            .sum();
        assert_eq!(params, stored, "{name}");
        let full: usize = ckpt
            .config
            .param_specs()
            .iter()
            .map(|s| s.shape.iter().product::<usize>())
            .sum();
        if name.starts_with("resnet") {
            // per channel cut: conv1's 9·cin weights, bn1's two, conv2's 9·cout inputs
            let removed: usize = groups
                .iter()
                .map(|g| {
                    let cut = g.channels - kept[&g.name].len();
                    let cin = ckpt.tensors[&g.members[0].tensor].dims()[1];
                    let cout = ckpt.tensors[&g.members[5].tensor].dims()[0];
                    cut * (cin * 9 + 2 + cout * 9)
                })
                .sum();
            assert_eq!(params, full - removed, "{name}");
        } else {
            // VGG: each convolution [kept_k, kept_(k−1), 3, 3], fc [10, kept_last]
            let k: Vec<usize> = groups.iter().map(|g| kept[&g.name].len()).collect();
            assert_eq!(
                small.tensors["features.0.conv.weight"].dims(),
                [k[0], 3, 3, 3]
            );
            assert_eq!(
                small.tensors["features.1.conv.weight"].dims(),
                [k[1], k[0], 3, 3]
            );
            assert_eq!(small.tensors["fc.weight"].dims(), [10, k[7]]);
            assert!(params < full);
        }
        // the same logits as the masked original, on candle and on the runtime
        let (c, h, w) = input;
        let xs = common::random_tensor(&[2, c, h, w], 9, &Device::Cpu);
        let want = common::logits(&masked, &xs);
        assert_close(&common::logits(&small, &xs), &want, name);
        let x = xs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // (the runtime covers the ResNets, not VGG)
        let choices: &[LayerChoice] = if name.starts_with("resnet") {
            &[LayerChoice::Dense, LayerChoice::Sparse]
        } else {
            &[]
        };
        for &choice in choices {
            let net = InferenceNet::new(&small.config, &small.tensors, choice).unwrap();
            assert_close(
                &net.forward(&x, 2).unwrap(),
                &want,
                &format!("{name} runtime {choice:?}"),
            );
        }
        // it saves and loads as any checkpoint, the widths in its config
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("small.safetensors");
        checkpoint::save(&path, &small).unwrap();
        let back = checkpoint::load(&path, &Device::Cpu).unwrap();
        assert_eq!(back.config, small.config);
        assert_close(
            &common::logits(&back, &xs),
            &want,
            &format!("{name} reloaded"),
        );
        let ModelConfig::Cnn { widths, .. } = &back.config else {
            panic!("a zoo config")
        };
        assert_eq!(widths.len(), groups.len());
    }
}

#[test]
fn bad_removals_and_widths_are_errors() {
    let ckpt = common::pruned_checkpoint("resnet20", (1, 8, 8), 0.0);
    let err =
        |kept: BTreeMap<String, Vec<usize>>| remove_channels(&ckpt, &kept).unwrap_err().to_string();
    let one = |g: &str, c: Vec<usize>| BTreeMap::from([(g.to_string(), c)]);
    assert!(err(one("layer9.0.conv1", vec![0])).contains("layer9.0.conv1"));
    assert!(err(one("layer1.0.conv1", vec![])).contains("not none"));
    assert!(err(one("layer1.0.conv1", vec![3, 1])).contains("ascending"));
    assert!(err(one("layer1.0.conv1", vec![16])).contains("0..16"));
    // widths that name no layer, or exceed the default, fail validation
    let mut config = ckpt.config.clone();
    if let ModelConfig::Cnn { widths, .. } = &mut config {
        widths.insert("layer1.0.conv2".to_string(), 8);
    }
    assert!(config
        .validate()
        .unwrap_err()
        .to_string()
        .contains("layer1.0.conv2"));
    if let ModelConfig::Cnn { widths, .. } = &mut config {
        widths.clear();
        widths.insert("layer1.0.conv1".to_string(), 17);
    }
    assert!(config
        .validate()
        .unwrap_err()
        .to_string()
        .contains("1..=16"));
    // a checkpoint whose tensors disagree with its widths does not load
    if let ModelConfig::Cnn { widths, .. } = &mut config {
        widths.insert("layer1.0.conv1".to_string(), 8);
    }
    let bad = Checkpoint {
        config,
        ..ckpt.clone()
    };
    assert!(bad.to_model(&Device::Cpu).is_err());
    // networks without declared groups say so
    let wrn = common::pruned_checkpoint("wrn-16-4", (3, 8, 8), 0.0);
    assert!(channel_groups(&wrn.config)
        .unwrap_err()
        .to_string()
        .contains("not wrn-16-4"));
}
