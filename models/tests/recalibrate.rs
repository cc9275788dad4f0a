//! `kd_core::recalibrate_batch_norm` on a zoo network: the running
//! statistics move to the exponential average of the batch statistics, and
//! nothing else moves.

mod common;

use candle_core::{Device, D};
use kd_core::recalibrate_batch_norm;
use kdprune_models::{Model, ModelConfig};

use common::{max_abs_diff, random_tensor, Inputs};

#[test]
fn running_statistics_become_the_batch_average_and_weights_stay() {
    let dev = Device::Cpu;
    let config = ModelConfig::from_name("resnet20", (3, 32, 32), 10).unwrap();
    let model = Model::new(config, 5, &dev).unwrap();
    let before = model.tensors().unwrap();
    // shifted off zero, so the stem's output has a visible mean
    let xs = (random_tensor(&[8, 3, 32, 32], 11, &dev) + 1.0).unwrap();
    let inputs = Inputs(xs.clone());

    // three calls of one whole batch each: the stem's batch norm sees the
    // same 8 samples three times (in another order: the statistics do not
    // depend on it)
    let k = 3;
    for seed in 0..k {
        let batches = recalibrate_batch_norm(&model, &inputs, 8, 8, seed).unwrap();
        assert_eq!(batches, 1);
    }

    // the stem convolution's output by candle's own convolution, and its
    // per-channel mean and unbiased variance over (N, H, W)
    let w = &before["conv1.weight"];
    let h = xs.conv2d(w, 1, 1, 1, 1).unwrap(); // (8, 16, 32, 32)
    let c = h.dim(1).unwrap();
    let per_channel = h.transpose(0, 1).unwrap().reshape((c, ())).unwrap();
    let m = per_channel.dim(1).unwrap() as f64;
    let mean = per_channel.mean(D::Minus1).unwrap();
    let var = per_channel
        .broadcast_sub(&mean.unsqueeze(1).unwrap())
        .unwrap()
        .sqr()
        .unwrap()
        .sum(D::Minus1)
        .unwrap()
        .affine(1.0 / (m - 1.0), 0.0)
        .unwrap();
    // running = 0.9^k · initial + (1 − 0.9^k) · batch; initial mean 0, var 1
    let keep = 0.9f64.powi(k as i32);
    let want_mean: Vec<f32> = mean.affine(1.0 - keep, 0.0).unwrap().to_vec1().unwrap();
    let want_var: Vec<f32> = var.affine(1.0 - keep, keep).unwrap().to_vec1().unwrap();

    let after = model.tensors().unwrap();
    let got_mean: Vec<f32> = after["bn1.running_mean"].to_vec1().unwrap();
    let got_var: Vec<f32> = after["bn1.running_var"].to_vec1().unwrap();
    for (i, (g, w)) in got_mean.iter().zip(&want_mean).enumerate() {
        assert!((g - w).abs() < 1e-4, "running_mean[{i}]: {g} vs {w}");
    }
    for (i, (g, w)) in got_var.iter().zip(&want_var).enumerate() {
        assert!(
            (g - w).abs() < 1e-4 * w.abs().max(1.0),
            "running_var[{i}]: {g} vs {w}"
        );
    }
    assert!(
        want_mean.iter().any(|v| v.abs() > 1e-2),
        "the check needs a stem output with a visible mean"
    );

    // every parameter as it was; every batch norm's statistics moved
    for (name, t) in &before {
        let diff = max_abs_diff(t, &after[name]);
        if name.ends_with("running_mean") || name.ends_with("running_var") {
            assert!(diff > 0.0, "{name} did not move");
        } else {
            assert_eq!(diff, 0.0, "{name} moved");
        }
    }
}

#[test]
fn no_samples_is_an_error() {
    let dev = Device::Cpu;
    let config = ModelConfig::from_name("resnet20", (3, 32, 32), 10).unwrap();
    let model = Model::new(config, 5, &dev).unwrap();
    let inputs = Inputs(random_tensor(&[4, 3, 32, 32], 1, &dev));
    let err = recalibrate_batch_norm(&model, &inputs, 0, 32, 0).unwrap_err();
    assert!(err.to_string().contains("at least one sample"), "{err}");
}
