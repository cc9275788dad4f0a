//! The inference runtime behind `kdprune eval` and `kdprune infer`: the same
//! predictions as candle's forward pass on the whole test set, image files
//! in, JSON out, bad input refused.

mod common;

use candle_core::{Device, Tensor};
use common::{fails_with, kdprune, ok, p};
use kdprune_cli::data::{load_data, Source};
use kdprune_cli::infer::{candle_predictions, runtime_net, runtime_predictions};
use kdprune_data::Normalization;
use kdprune_models::checkpoint;
use kdprune_models::infer::LayerChoice;

#[test]
fn the_runtime_predicts_what_candle_predicts_on_the_whole_test_set() {
    let dir = tempfile::tempdir().unwrap();
    let data = load_data("digits", &Source::default(), 0).unwrap();
    let test = data.test_view();
    for model in ["lenet-300-100", "lenet5"] {
        for sparsity in ["0.95"] {
            let path = common::train_and_prune(dir.path(), model, sparsity).1;
            let ckpt = checkpoint::load(&path, &Device::Cpu).unwrap();
            let candle =
                candle_predictions(&ckpt.to_model(&Device::Cpu).unwrap(), &test, 97).unwrap();
            for choice in [
                LayerChoice::Sparse,
                LayerChoice::Dense,
                LayerChoice::default(),
            ] {
                let net = runtime_net(&ckpt, choice).unwrap();
                let ours = runtime_predictions(&net, &test, 97).unwrap();
                assert_eq!(ours.len(), test_len(&data));
                assert_eq!(ours, candle, "{model} at {sparsity}, {choice:?}");
            }
            // and eval reports the same accuracy either way
            let run = kdprune(&["eval", p(&path)]);
            let reference = ok(&kdprune(&["eval", p(&path), "--layers", "candle"]));
            assert_eq!(ok(&run), reference);
            let layers = String::from_utf8_lossy(&run.stderr);
            assert!(
                layers.contains("runtime: ") && layers.contains(" sparse (density"),
                "{layers}"
            );
        }
    }
}

fn test_len(data: &kdprune_cli::data::Data) -> usize {
    data.split.test.len()
}

/// An IDX image file of `n` images of `h × w` (big-endian header).
fn idx_images(n: u32, h: u32, w: u32, pixels: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, 3];
    for v in [n, h, w] {
        out.extend(v.to_be_bytes());
    }
    out.extend_from_slice(pixels);
    out
}

#[test]
fn infer_reads_idx_and_png_and_prints_the_logits_of_the_normalised_images() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::train_and_prune(dir.path(), "lenet5", "0.9").1;
    // 5 images in an IDX file, one in a PNG: bytes of a fixed pattern
    let pixels: Vec<u8> = (0..6 * 64).map(|i| ((i * 37) % 256) as u8).collect();
    let idx = dir.path().join("images-idx3-ubyte");
    std::fs::write(&idx, idx_images(5, 8, 8, &pixels[..5 * 64])).unwrap();
    let png = dir.path().join("one.png");
    image::GrayImage::from_raw(8, 8, pixels[5 * 64..].to_vec())
        .unwrap()
        .save(&png)
        .unwrap();

    let out = dir.path().join("pred.json");
    ok(&kdprune(&[
        "infer",
        p(&path),
        "--input",
        p(&idx),
        p(&png),
        "--batch-size",
        "4",
        "--out",
        p(&out),
    ]));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let preds = report["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 6);
    assert_eq!(preds[5]["file"], p(&png));
    assert_eq!(preds[4]["index"], 4);

    // the logits are the model's on (p/255 − mean)/std with the checkpoint's statistics
    let ckpt = checkpoint::load(&path, &Device::Cpu).unwrap();
    let norm: Normalization = serde_json::from_str(&ckpt.metadata["normalization"]).unwrap();
    let x: Vec<f32> = pixels
        .iter()
        .map(|&v| (v as f32 / 255.0 - norm.mean[0]) / norm.std[0])
        .collect();
    let xs = Tensor::from_vec(x, (6, 1, 8, 8), &Device::Cpu).unwrap();
    let want = ckpt
        .to_model(&Device::Cpu)
        .unwrap()
        .forward_t(&xs, false)
        .unwrap()
        .logits
        .to_vec2::<f32>()
        .unwrap();
    for (pred, row) in preds.iter().zip(&want) {
        let got: Vec<f32> = serde_json::from_value(pred["logits"].clone()).unwrap();
        for (a, e) in got.iter().zip(row) {
            assert!((a - e).abs() <= 1e-4 * e.abs().max(1.0), "{a} vs {e}");
        }
        let argmax = row
            .iter()
            .enumerate()
            .fold(0, |b, (i, v)| if *v > row[b] { i } else { b });
        assert_eq!(pred["class"], argmax);
    }
}

#[test]
fn bad_inference_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::train_and_prune(dir.path(), "lenet-300-100", "0.9").1;
    let big = dir.path().join("big.png");
    image::GrayImage::new(28, 28).save(&big).unwrap();
    fails_with(
        &kdprune(&["infer", p(&path), "--input", p(&big)]),
        "expected 8x8",
    );
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"not an image").unwrap();
    fails_with(
        &kdprune(&["infer", p(&path), "--input", p(&junk)]),
        "junk.bin",
    );
    fails_with(
        &kdprune(&["infer", p(&path), "--input", p(&big), "--batch-size", "0"]),
        "at least 1",
    );
    let out = dir.path().join("never.json");
    fails_with(
        &kdprune(&["infer", p(&path), "--input", p(&junk), "--out", p(&out)]),
        "junk.bin",
    );
    assert!(!out.exists());
    let zoo = dir.path().join("vgg11.safetensors");
    let config = kdprune_models::ModelConfig::from_name("vgg11", (1, 8, 8), 10).unwrap();
    let model = kdprune_models::Model::new(config, 0, &Device::Cpu).unwrap();
    let ckpt =
        checkpoint::Checkpoint::from_model(&model, Default::default(), Default::default()).unwrap();
    checkpoint::save(&zoo, &ckpt).unwrap();
    fails_with(
        &kdprune(&["infer", p(&zoo), "--input", p(&big)]),
        "covers the MLPs, LeNet-5 and the CIFAR ResNets, not vgg11",
    );
}
