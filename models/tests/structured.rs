//! Structured pruning of the CIFAR ResNets: removing channels of the
//! declared groups gives a smaller network whose forward pass equals the
//! original's with those channels masked, whose parameter count is what its
//! config says, and which saves, loads and runs like any other.

mod common;

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use kdprune_models::checkpoint::{self, Checkpoint};
use kdprune_models::infer::{InferenceNet, LayerChoice};
use kdprune_models::structured::{
    channel_groups, removable_blocks, remove_blocks, remove_channels,
};
use kdprune_models::ModelConfig;
use prune_core::group::Role;
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
        ("resnet18", (3, 8, 8)),
        ("resnet50", (3, 8, 8)),
        ("wrn-16-4", (3, 8, 8)),
        ("mobilenetv2", (3, 8, 8)),
        ("lenet5", (1, 12, 12)),
        ("vgg11", (3, 8, 8)),
    ] {
        let mut ckpt = common::pruned_checkpoint(name, input, 0.0);
        random_batch_norms(&mut ckpt);
        let groups = channel_groups(&ckpt.config).unwrap();
        // block-internal groups, then the streams: the stem's, and shortcut
        // A's two padded parts per widening stage, or B's stage streams
        let expected_groups = match name {
            "resnet20" => 9 + 5,
            "resnet8x4" => 3 + 4,
            // one inner group per basic block; the stem's stream and those
            // of stages 2–4
            "resnet18" => 8 + 4,
            // two inner groups per bottleneck; every stage projects
            "resnet50" => 16 * 2 + 5,
            // one inner group per block; the stem's stream and each stage's
            "wrn-16-4" => 6 + 4,
            // 16 expanding blocks; the stem's, seven stages' and the head's
            "mobilenetv2" => 16 + 9,
            // conv1, conv2, fc1, fc2
            "lenet5" => 4,
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
            // the masked original, pre-activation (WRN) or without batch
            // norms (LeNet-5): every weight that reads a removed channel
            // (axis 1; through the flatten, a span of inputs) ignores it
            if name.starts_with("wrn") || name == "lenet5" {
                for m in g.members.iter().filter(|m| m.axis == 1) {
                    let t = &masked.tensors[&m.tensor];
                    let (len, inner) = (t.dims()[1], t.dims()[2..].iter().product::<usize>());
                    let keep_at = |i: usize| {
                        let j = (i / inner) % len;
                        let end = m.start() + g.channels * m.span;
                        j < m.start() || j >= end || keep.contains(&((j - m.start()) / m.span))
                    };
                    let v: Vec<f32> = (0..t.elem_count())
                        .map(|i| f32::from(u8::from(keep_at(i))))
                        .collect();
                    let mask = Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap();
                    masked
                        .tensors
                        .insert(m.tensor.clone(), t.mul(&mask).unwrap());
                }
                kept.insert(g.name.clone(), keep);
                continue;
            }
            // post-activation: every batch norm (and bias) producing a
            // removed channel gives zero, so the channel is zero wherever
            // it is read — through every residual sum too
            for m in g
                .members
                .iter()
                .filter(|m| m.role != Role::BnStat && m.role != Role::Weight)
            {
                let t = &masked.tensors[&m.tensor];
                let mut v = t.to_vec1::<f32>().unwrap();
                for c in (0..g.channels).filter(|c| !keep.contains(c)) {
                    v[m.start() + c] = 0.0;
                }
                let t = Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap();
                masked.tensors.insert(m.tensor.clone(), t);
            }
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
        assert!(params < full, "{name}");
        let k = |g: &str| kept[g].len();
        match name {
            "resnet20" => {
                // stage 2's stream: its low padding, the stem's stream, its high
                let s2 = k("layer2.pad_lo") + k("conv1") + k("layer2.pad_hi");
                let s3 = k("layer3.pad_lo") + s2 + k("layer3.pad_hi");
                assert_eq!(small.tensors["conv1.weight"].dims(), [k("conv1"), 1, 3, 3]);
                assert_eq!(
                    small.tensors["layer1.2.conv2.weight"].dims(),
                    [k("conv1"), k("layer1.2.conv1"), 3, 3]
                );
                assert_eq!(
                    small.tensors["layer2.0.conv1.weight"].dims(),
                    [k("layer2.0.conv1"), k("conv1"), 3, 3]
                );
                assert_eq!(
                    small.tensors["layer2.0.conv2.weight"].dims(),
                    [s2, k("layer2.0.conv1"), 3, 3]
                );
                assert_eq!(small.tensors["layer3.1.bn2.running_var"].dims(), [s3]);
                assert_eq!(small.tensors["fc.weight"].dims(), [10, s3]);
            }
            "resnet8x4" => {
                assert_eq!(
                    small.tensors["layer2.0.shortcut.conv.weight"].dims(),
                    [k("layer2"), k("layer1"), 1, 1]
                );
                assert_eq!(
                    small.tensors["layer1.0.shortcut.bn.bias"].dims(),
                    [k("layer1")]
                );
                assert_eq!(
                    small.tensors["layer3.0.conv1.weight"].dims(),
                    [k("layer3.0.conv1"), k("layer2"), 3, 3]
                );
                assert_eq!(small.tensors["fc.weight"].dims(), [10, k("layer3")]);
            }
            "resnet18" => {
                // layer1 carries the stem's stream (identity shortcuts)
                assert_eq!(
                    small.tensors["layer1.1.conv2.weight"].dims(),
                    [k("conv1"), k("layer1.1.conv1"), 3, 3]
                );
                assert_eq!(
                    small.tensors["layer2.0.shortcut.conv.weight"].dims(),
                    [k("layer2"), k("conv1"), 1, 1]
                );
                assert_eq!(small.tensors["fc.weight"].dims(), [10, k("layer4")]);
            }
            "wrn-16-4" => {
                assert_eq!(small.tensors["block1.0.bn1.weight"].dims(), [k("conv1")]);
                assert_eq!(
                    small.tensors["block1.0.shortcut.weight"].dims(),
                    [k("block1"), k("conv1"), 1, 1]
                );
                assert_eq!(
                    small.tensors["block2.1.conv2.weight"].dims(),
                    [k("block2"), k("block2.1.conv1"), 3, 3]
                );
                assert_eq!(small.tensors["bn.running_mean"].dims(), [k("block3")]);
                assert_eq!(small.tensors["fc.weight"].dims(), [10, k("block3")]);
            }
            "mobilenetv2" => {
                // the first block's depthwise convolution carries the stem's
                assert_eq!(
                    small.tensors["stage1.0.depthwise.weight"].dims(),
                    [k("conv1"), 1, 3, 3]
                );
                assert_eq!(
                    small.tensors["stage2.1.depthwise.weight"].dims(),
                    [k("stage2.1.expand"), 1, 3, 3]
                );
                assert_eq!(
                    small.tensors["stage2.1.expand.weight"].dims(),
                    [k("stage2.1.expand"), k("stage2"), 1, 1]
                );
                assert_eq!(
                    small.tensors["stage3.0.project.weight"].dims(),
                    [k("stage3"), k("stage3.0.expand"), 1, 1]
                );
                assert_eq!(small.tensors["fc.weight"].dims(), [10, k("conv2")]);
            }
            "lenet5" => {
                // 12×12: conv2's 6×6 maps pool to 3×3, nine fc1 inputs each
                assert_eq!(small.tensors["conv1.weight"].dims(), [k("conv1"), 1, 5, 5]);
                assert_eq!(small.tensors["conv2.bias"].dims(), [k("conv2")]);
                assert_eq!(
                    small.tensors["fc1.weight"].dims(),
                    [k("fc1"), 9 * k("conv2")]
                );
                assert_eq!(small.tensors["fc3.weight"].dims(), [10, k("fc2")]);
            }
            "resnet50" => {
                assert_eq!(
                    small.tensors["layer1.0.conv2.weight"].dims(),
                    [k("layer1.0.conv2"), k("layer1.0.conv1"), 3, 3]
                );
                assert_eq!(
                    small.tensors["layer1.2.conv3.weight"].dims(),
                    [k("layer1"), k("layer1.2.conv2"), 1, 1]
                );
                assert_eq!(
                    small.tensors["layer1.0.shortcut.conv.weight"].dims(),
                    [k("layer1"), k("conv1"), 1, 1]
                );
                assert_eq!(small.tensors["layer4.2.bn3.bias"].dims(), [k("layer4")]);
            }
            _ => {
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
            }
        }
        // the same logits as the masked original, on candle and on the runtime
        let (c, h, w) = input;
        let xs = common::random_tensor(&[2, c, h, w], 9, &Device::Cpu);
        let want = common::logits(&masked, &xs);
        assert_close(&common::logits(&small, &xs), &want, name);
        let x = xs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // (the runtime covers the CIFAR ResNets)
        let choices: &[LayerChoice] = if matches!(name, "resnet20" | "resnet8x4") {
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
        assert_eq!(back.config.widths().unwrap().len(), groups.len());
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
    // LeNet-5 takes the widths of conv1, conv2, fc1 and fc2 only
    let mut lenet = ModelConfig::from_name("lenet5", (1, 8, 8), 10).unwrap();
    lenet.widths_mut().unwrap().insert("fc3".to_string(), 5);
    let err = lenet.validate().unwrap_err().to_string();
    assert!(err.contains("no layer `fc3`"), "{err}");
    lenet.widths_mut().unwrap().clear();
    lenet.widths_mut().unwrap().insert("fc1".to_string(), 121);
    let err = lenet.validate().unwrap_err().to_string();
    assert!(err.contains("1..=120"), "{err}");
    let mlp = common::pruned_checkpoint("lenet-300-100", (1, 8, 8), 0.0);
    assert!(channel_groups(&mlp.config)
        .unwrap_err()
        .to_string()
        .contains("not lenet-300-100"));
}

/// Removing a residual block equals zeroing its `bn2` (the block then adds
/// nothing, and its input is already past a ReLU), on candle and on the
/// runtime; the network stays valid, channel groups and all.
#[test]
fn removing_blocks_equals_zeroing_them() {
    for (name, input, drop) in [
        (
            "resnet20",
            (1, 12, 12),
            vec!["layer1.0", "layer1.2", "layer3.1"],
        ),
        ("resnet8x4", (3, 8, 8), vec![]),
        ("resnet18", (3, 8, 8), vec!["layer1.0", "layer3.1"]),
        ("resnet50", (3, 8, 8), vec!["layer1.1", "layer4.2"]),
        ("wrn-16-4", (3, 8, 8), vec!["block2.1"]),
        (
            "mobilenetv2",
            (3, 8, 8),
            vec!["stage2.1", "stage4.3", "stage6.1"],
        ),
    ] {
        let mut ckpt = common::pruned_checkpoint(name, input, 0.0);
        random_batch_norms(&mut ckpt);
        let blocks = removable_blocks(&ckpt.config).unwrap();
        let names: Vec<&str> = blocks.iter().map(|(b, _)| b.as_str()).collect();
        if name == "resnet20" {
            // every block but the first of stages 2 and 3 (shortcut A)
            assert_eq!(
                names,
                [
                    "layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer3.1",
                    "layer3.2"
                ]
            );
            assert_eq!(
                blocks[0].1,
                ["layer1.0.conv1.weight", "layer1.0.conv2.weight"]
            );
        } else if name == "resnet8x4" {
            // one block per stage, each with a projection
            assert!(names.is_empty());
        } else if name == "mobilenetv2" {
            // the blocks with a residual sum: stride 1, width kept
            assert_eq!(names.len(), 1 + 2 + 3 + 2 + 2);
        }
        let drop: Vec<String> = drop.into_iter().map(String::from).collect();
        let mut zeroed = ckpt.clone();
        // what makes a block add nothing: its last batch norm's γ and β,
        // or (pre-activation) its last convolution
        let last: &[&str] = match name {
            "resnet50" => &["bn3.weight", "bn3.bias"],
            "wrn-16-4" => &["conv2.weight"],
            "mobilenetv2" => &["project_bn.weight", "project_bn.bias"],
            _ => &["bn2.weight", "bn2.bias"],
        };
        for b in &drop {
            for t in last {
                let n = format!("{b}.{t}");
                let z = zeroed.tensors[&n].zeros_like().unwrap();
                zeroed.tensors.insert(n, z);
            }
        }
        let small = remove_blocks(&ckpt, &drop).unwrap();
        assert!(!small
            .tensors
            .keys()
            .any(|k| drop.iter().any(|b| k.starts_with(&format!("{b}.")))));
        let (c, h, w) = input;
        let xs = common::random_tensor(&[2, c, h, w], 11, &Device::Cpu);
        let want = common::logits(&zeroed, &xs);
        assert_close(&common::logits(&small, &xs), &want, name);
        if name == "resnet20" {
            let x = xs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let net = InferenceNet::new(&small.config, &small.tensors, LayerChoice::Dense).unwrap();
            assert_close(
                &net.forward(&x, 2).unwrap(),
                &want,
                &format!("{name} runtime"),
            );
        }
        // fewer parameters and MACs; the groups skip the removed blocks
        assert!(small.config.macs() < ckpt.config.macs() || drop.is_empty());
        let groups = channel_groups(&small.config).unwrap();
        // (a bottleneck has two inner groups, the others one)
        let inner = if name == "resnet50" { 2 } else { 1 };
        assert_eq!(
            groups.len(),
            channel_groups(&ckpt.config).unwrap().len() - inner * drop.len()
        );
        // saved and loaded, a removed block stays removed; removing it again fails
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.safetensors");
        checkpoint::save(&path, &small).unwrap();
        let back = checkpoint::load(&path, &Device::Cpu).unwrap();
        assert_eq!(back.config, small.config);
        if let Some(b) = drop.first() {
            let err = remove_blocks(&back, std::slice::from_ref(b))
                .unwrap_err()
                .to_string();
            assert!(err.contains(b.as_str()), "{err}");
        }
    }
    // a block with a projection or padding cannot go
    let ckpt = common::pruned_checkpoint("resnet20", (1, 8, 8), 0.0);
    let err = remove_blocks(&ckpt, &["layer2.0".to_string()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer2.0") && err.contains("layer1.1"),
        "{err}"
    );
}
