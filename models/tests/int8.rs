//! INT8: quantised checkpoints round trip, the runtime's integer products
//! against a reference computed here, and corrupt INT8 files.

mod common;

use candle_core::Device;
use kdprune_models::checkpoint::{self, Checkpoint, Encoding};
use kdprune_models::infer::{quantize_checkpoint, InferenceNet, LayerChoice};
use kdprune_models::quant::QuantizedWeight;
use kdprune_models::ModelError;

fn calibration(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    common::random_tensor(&[n, dim], seed, &Device::Cpu)
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

#[test]
fn an_int8_file_round_trips_and_rewrites_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = common::pruned_checkpoint("lenet-300-100", (1, 8, 8), 0.9);
    let x = calibration(32, 64, 5);
    for (encoding, calib) in [
        (Encoding::Int8, vec![]),
        (Encoding::Int8, vec![(&x[..], 32)]),
        (Encoding::SparseInt8, vec![]),
        (Encoding::SparseInt8, vec![(&x[..], 32)]),
    ] {
        let q = quantize_checkpoint(&ckpt, &calib).unwrap();
        assert_eq!(q.quantized.len(), 3);
        assert_eq!(
            q.quantized["fc1.weight"].input_scale.is_some(),
            !calib.is_empty()
        );
        let path = dir.path().join("q.safetensors");
        checkpoint::save_as(&path, &q, encoding).unwrap();
        assert_eq!(checkpoint::file_encoding(&path).unwrap(), encoding);
        let back = checkpoint::load(&path, &Device::Cpu).unwrap();
        assert_eq!(back.quantized, q.quantized);
        assert_eq!(
            back.masks.keys().collect::<Vec<_>>(),
            q.masks.keys().collect::<Vec<_>>()
        );
        for (name, t) in &q.tensors {
            assert_eq!(common::bits(t), common::bits(&back.tensors[name]), "{name}");
        }
        for (name, m) in &q.masks {
            let u8s = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<u8>().unwrap();
            assert_eq!(u8s(m), u8s(&back.masks[name]), "{name}");
        }
        let again = dir.path().join("again.safetensors");
        checkpoint::save_as(&again, &back, encoding).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(&again).unwrap()
        );
        let dense = dir.path().join("d.safetensors");
        checkpoint::save_as(&dense, &ckpt, Encoding::Dense).unwrap();
        let ratio = std::fs::metadata(&path).unwrap().len() as f64
            / std::fs::metadata(&dense).unwrap().len() as f64;
        if encoding == Encoding::Int8 {
            // quarter the f32 bytes, plus scales and packed masks
            assert!((0.25..0.33).contains(&ratio), "int8/dense = {ratio:.3}");
        } else {
            // per weight: a bit of bitmask and, for 10 % of them, a byte of
            // value, (1/8 + 0.1)/4 ≈ 0.056 of the f32 bytes; plus, in this
            // small network (64 inputs), row offsets (8 bytes a row),
            // biases and scales: 0.100 in all. (Before the masks became
            // the bitmasks, a kept weight rounding to 0 added the whole
            // packed mask: 0.132.)
            assert!(ratio < 0.11, "sparse-int8/dense = {ratio:.3}");
            let meta = safetensors_metadata(&path);
            assert!(
                meta.contains_key("sparsity_config") && meta.contains_key("quantization_config")
            );
        }
    }
}

/// The `__metadata__` of a safetensors file.
fn safetensors_metadata(path: &std::path::Path) -> std::collections::HashMap<String, String> {
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    header.metadata().clone().unwrap()
}

/// The MLP forward pass of the INT8 scheme, computed in f64 from the
/// quantised weights: each layer's input quantised with `max|x|/127` of the
/// batch (or the static scale), `y = s_o·s_x·Σ q·q(x) + b`, ReLU between.
fn reference(ckpt: &Checkpoint, x: &[f32], batch: usize) -> Vec<f64> {
    let mut act: Vec<f64> = x.iter().map(|v| *v as f64).collect();
    let layers = ckpt.quantized.len();
    for l in 1..=layers {
        let q: &QuantizedWeight = &ckpt.quantized[&format!("fc{l}.weight")];
        let bias = ckpt.tensors[&format!("fc{l}.bias")]
            .to_vec1::<f32>()
            .unwrap();
        let (rows, cols) = (q.shape[0], q.shape[1]);
        let s_x = q.input_scale.map(f64::from).unwrap_or_else(|| {
            f64::from(act.iter().fold(0f64, |m, v| m.max(v.abs())) as f32 / 127.0)
        });
        let inv = (1.0 / s_x as f32) as f64;
        let qx: Vec<f64> = act
            .iter()
            .map(|v| {
                ((*v as f32 as f64 * inv) as f32)
                    .round_ties_even()
                    .clamp(-127.0, 127.0) as f64
            })
            .collect();
        let mut out = vec![0f64; batch * rows];
        for b in 0..batch {
            for o in 0..rows {
                let acc: f64 = (0..cols)
                    .map(|k| q.values[o * cols + k] as f64 * qx[b * cols + k])
                    .sum();
                let y = acc * (q.scales[o] as f64 * s_x) + bias[o] as f64;
                out[b * rows + o] = if l < layers { y.max(0.0) } else { y };
            }
        }
        act = out;
    }
    act
}

#[test]
fn the_runtime_computes_the_int8_scheme() {
    let ckpt = common::pruned_checkpoint("mlp-64-32", (1, 8, 8), 0.8);
    let calib = calibration(16, 64, 9);
    for static_scales in [false, true] {
        let batches: Vec<(&[f32], usize)> = if static_scales {
            vec![(&calib, 16)]
        } else {
            vec![]
        };
        let q = quantize_checkpoint(&ckpt, &batches).unwrap();
        for batch in [1, 7, 70] {
            let x = calibration(batch, 64, 3);
            let want = reference(&q, &x, batch);
            for choice in [LayerChoice::Dense, LayerChoice::Sparse] {
                let net = InferenceNet::from_checkpoint(&q, choice).unwrap();
                assert!(net.layers().iter().all(|l| l.int8));
                let got = net.forward(&x, batch).unwrap();
                let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
                for (a, e) in got.iter().zip(&want) {
                    assert!(
                        ((*a as f64) - e).abs() <= 1e-4 * scale.max(1.0),
                        "static={static_scales} batch {batch} {choice:?}: {a} vs {e}"
                    );
                }
            }
        }
    }
}

#[test]
fn int8_logits_stay_close_to_f32() {
    let ckpt = common::pruned_checkpoint("lenet-300-100", (1, 28, 28), 0.9);
    let x = calibration(64, 784, 4);
    let f32_net = InferenceNet::new(&ckpt.config, &ckpt.tensors, LayerChoice::Dense).unwrap();
    let q = quantize_checkpoint(&ckpt, &[(&x[..], 64)]).unwrap();
    let int8_net = InferenceNet::from_checkpoint(&q, LayerChoice::default()).unwrap();
    let (a, b) = (
        f32_net.forward(&x, 64).unwrap(),
        int8_net.forward(&x, 64).unwrap(),
    );
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (u, v)| m.max((u - v).abs()));
    // 8-bit weights and activations over three layers: a few per cent of the logit range
    assert!(worst <= 0.05 * scale, "worst {worst} of {scale}");
}

/// An edit of a file's tensors.
type Edit = Box<dyn Fn(&mut common::Parts)>;

#[test]
fn corrupt_int8_files_are_errors_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = common::pruned_checkpoint("lenet-300-100", (1, 8, 8), 0.5);
    let q = quantize_checkpoint(&ckpt, &[]).unwrap();
    let path = dir.path().join("q.safetensors");
    let sparse_cases: Vec<(&str, Edit)> = vec![
        (
            "'fc2.weight': bitmask marks",
            Box::new(|t| {
                t.get_mut("fc2.weight.compressed").unwrap().2.pop();
                t.get_mut("fc2.weight.compressed").unwrap().1[0] -= 1;
            }),
        ),
        (
            "scale of output channel 3 is 0",
            Box::new(|t| {
                t.get_mut("fc2.weight_scale").unwrap().2[12..16]
                    .copy_from_slice(&0f32.to_le_bytes())
            }),
        ),
        (
            "'fc1.weight.compressed' has dtype F32",
            Box::new(|t| {
                let c = t.get_mut("fc1.weight.compressed").unwrap();
                c.0 = safetensors::Dtype::F32;
                c.2.truncate(c.2.len() / 4 * 4);
                c.1[0] = c.2.len() / 4;
            }),
        ),
    ];
    // Each case: the file written in `encoding`, edited, then refused on
    // loading with a message containing the case's text.
    let check = |encoding: Encoding, cases: Vec<(&str, Edit)>| {
        for (needle, edit) in cases {
            checkpoint::save_as(&path, &q, encoding).unwrap();
            common::rewrite(&path, |t| edit(t));
            match checkpoint::load(&path, &Device::Cpu) {
                Err(err @ ModelError::Checkpoint { .. }) => {
                    let msg = err.to_string();
                    assert!(msg.contains(needle), "{msg}");
                }
                other => panic!(
                    "{needle}: expected a checkpoint error, got {:?}",
                    other.map(|c| c.config)
                ),
            }
        }
    };
    check(Encoding::SparseInt8, sparse_cases);
    let cases: Vec<(&str, Edit)> = vec![
        (
            "scale of output channel 3 is 0",
            Box::new(|t| {
                t.get_mut("fc2.weight_scale").unwrap().2[12..16]
                    .copy_from_slice(&0f32.to_le_bytes())
            }),
        ),
        (
            "is NaN",
            Box::new(|t| {
                t.get_mut("fc2.weight_scale").unwrap().2[0..4]
                    .copy_from_slice(&f32::NAN.to_le_bytes())
            }),
        ),
        (
            "no 'fc1.weight_scale'",
            Box::new(|t| {
                t.remove("fc1.weight_scale");
            }),
        ),
        (
            "'fc3.weight_scale' has shape",
            Box::new(|t| {
                let s = t.get_mut("fc3.weight_scale").unwrap();
                s.1 = vec![5, 2];
            }),
        ),
        (
            "−128",
            Box::new(|t| t.get_mut("fc1.weight").unwrap().2[0] = 0x80),
        ),
    ];
    check(Encoding::Int8, cases);
    // a scale of zero is refused on writing too
    let mut bad = q.clone();
    bad.quantized.get_mut("fc1.weight").unwrap().scales[0] = 0.0;
    let out = dir.path().join("never.safetensors");
    let err = checkpoint::save_as(&out, &bad, Encoding::Int8)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'fc1.weight'") && err.contains("is 0"),
        "{err}"
    );
    assert!(!out.exists());
}
