//! EfficientNet-B0 (MBConv with squeeze-and-excitation) and its elastic-kernel
//! variant: sizes against torchvision, a training step against PyTorch, and
//! the centre crop of the elastic kernels against zeroed kernels.

mod common;

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, Var};
use kdprune_models::{Kernels, Model, ModelConfig};

use common::{assert_gradients, max_abs, max_abs_diff, random_labels, random_tensor};

/// Parameter and MAC counts of torchvision 0.29's `EfficientNet` built with
/// the same table (CIFAR strides: the stem's and stage 2's set to 1):
///
/// ```text
/// from torchvision.models import efficientnet_b0
/// from torchvision.models.efficientnet import MBConvConfig, EfficientNet
/// c = partial(MBConvConfig, width_mult=1.0, depth_mult=1.0)
/// rows = [(1,3,1,32,16,1),(6,3,1,16,24,2),(6,5,2,24,40,2),(6,3,2,40,80,3),
///         (6,5,1,80,112,3),(6,5,2,112,192,4),(6,3,1,192,320,1)]   # (t, k, s, cin, cout, n)
/// m = EfficientNet([c(t, 7 if k7 else k, s, a, b, n) for ...], 0.2, num_classes=10)
/// m.features[0][0].stride = (1, 1)
/// sum(p.numel() for p in m.parameters())   # 4020358; 4277382 with k7
/// # MACs: forward hooks on every Conv2d (out.numel()/N · cin/groups · kh · kw)
/// # and Linear (in · out) on torch.zeros(1, 3, 32, 32): 116167168; 137863680
/// sum(p.numel() for p in efficientnet_b0().parameters())   # 5288548
/// ```
#[test]
fn sizes_match_torchvision_and_the_published_figure() {
    for (name, params, macs) in [
        ("efficientnet-b0", 4_020_358, 116_167_168u64),
        ("efficientnet-b0-k7", 4_277_382, 137_863_680),
    ] {
        let cfg = ModelConfig::from_name(name, (3, 32, 32), 10).unwrap();
        assert_eq!(cfg.num_params(), params, "{name}");
        assert_eq!(cfg.macs(), macs, "{name}");
    }
    // Tan & Le 2019, Table 1: 5.3 M parameters at 1000 classes.
    let imagenet = ModelConfig::from_name("efficientnet-b0", (3, 224, 224), 1000).unwrap();
    assert_eq!(imagenet.num_params(), 5_288_548);
    // Fashion-MNIST (1×28×28) is padded to 32×32: only the stem's inputs change.
    let fmnist = ModelConfig::from_name("efficientnet-b0", (1, 28, 28), 10).unwrap();
    assert_eq!(fmnist.num_params(), 4_020_358 - 2 * 32 * 9);
}

/// The network in training mode against torchvision's `EfficientNet` with
/// the same weights (seed 4), input (`random_tensor(&[4, 3, 32, 32], 11)`)
/// and labels (`random_labels(4, 10, 12)`), exported with safetensors and
/// loaded by name (`stageS.i.expand` → `features.S.i.block.0.0`, the
/// depthwise convolution → `block.{0|1}.0`, `se.reduce`/`se.expand` → the
/// SE block's `fc1`/`fc2`, …), every batch norm's ε set to 1e-5, dropout
/// and stochastic depth to 0, `m.train()`, then
/// `F.cross_entropy(m(xs), ys).backward()`. Each entry: the first three
/// values of a gradient and its largest magnitude.
#[test]
fn training_step_matches_pytorch() {
    let dev = Device::Cpu;
    let cfg = ModelConfig::from_name("efficientnet-b0", (3, 32, 32), 10).unwrap();
    let model = Model::new(cfg, 4, &dev).unwrap();
    let xs = random_tensor(&[4, 3, 32, 32], 11, &dev);
    let ys = random_labels(4, 10, 12, &dev);
    let logits = model.forward_t(&xs, true).unwrap().logits;
    let loss = candle_nn::loss::cross_entropy(&logits, &ys).unwrap();
    let value = loss.to_scalar::<f32>().unwrap();
    assert!((value - 2.175_385_7).abs() < 1e-5, "loss {value}");
    let grads = loss.backward().unwrap();
    let vars: BTreeMap<String, Var> = model.named_vars().into_iter().collect();
    let golden: [(&str, [f32; 3], f32); 6] = [
        (
            "conv1.weight",
            [-0.286_052_02, -0.008_788_393, 0.052_683_23],
            0.520_555,
        ),
        (
            "stage3.0.se.reduce.weight",
            [0.001_096_716_5, 0.000_756_328_8, 0.000_384_372_2],
            0.005_677_134,
        ),
        (
            "stage5.2.expand_bn.weight",
            [-0.000_191_622_47, -0.000_479_358, -0.000_269_113_8],
            0.001_683_545,
        ),
        (
            "stage6.0.depthwise.weight",
            [0.002_252_488, 0.001_881_300_1, -0.000_517_634_56],
            0.029_699_31,
        ),
        (
            "stage6.3.depthwise.weight",
            [0.000_503_81, 0.000_655_756_1, -0.000_360_592_27],
            0.010_707_173,
        ),
        (
            "fc.weight",
            [-0.083_763, -0.073_193_654, -0.079_974_62],
            0.179_089_86,
        ),
    ];
    assert_gradients(&grads, &vars, &golden, 1e-3);
    // evaluation mode after the one training pass (running statistics
    // moved once): PyTorch's first row of logits
    let eval = model.forward_t(&xs, false).unwrap().logits;
    let row: Vec<f32> = eval.get(0).unwrap().to_vec1().unwrap();
    let want = [
        -0.012_506_014f32,
        -0.003_959_165,
        -0.006_373_134,
        -0.009_249_254,
    ];
    for (a, b) in row.iter().zip(want) {
        assert!((a - b).abs() < 1e-5, "eval logits {row:?}");
    }
}

#[test]
fn kdprune_and_candle_kernels_agree() {
    let dev = Device::Cpu;
    let cfg = ModelConfig::from_name("efficientnet-b0", (1, 28, 28), 10).unwrap();
    let xs = random_tensor(&[2, 1, 28, 28], 3, &dev);
    for train in [false, true] {
        let run = |kernels: Kernels| {
            let model = Model::new(cfg.clone(), 2, &dev)
                .unwrap()
                .with_kernels(kernels);
            model.forward_t(&xs, train).unwrap().logits
        };
        let (a, b) = (run(Kernels::Auto), run(Kernels::Candle));
        let (scale, diff) = (max_abs(&b), max_abs_diff(&a, &b));
        assert!(diff <= 1e-4 * scale, "train={train}: {diff} of {scale}");
    }
}

/// Running the centre `k×k` of every 7×7 depthwise kernel is the same
/// function as running the whole kernels with everything outside that
/// centre set to zero (same output grid for any stride: the padding is
/// `k/2` either way); the ring outside the centre gets no gradient.
#[test]
fn elastic_kernels_run_their_centre() {
    let dev = Device::Cpu;
    let cfg = ModelConfig::from_name("efficientnet-b0-k7", (3, 32, 32), 10).unwrap();
    let xs = random_tensor(&[1, 3, 32, 32], 9, &dev);
    let model = Model::new(cfg.clone(), 1, &dev).unwrap();
    // the pooled features: at initialisation the logits are mostly fc's bias
    let pooled = |m: &Model| {
        m.forward_t(&xs, false)
            .unwrap()
            .feature("pool")
            .unwrap()
            .clone()
    };
    let full = pooled(&model);
    for size in [5usize, 3] {
        model.set_kernel(size).unwrap();
        let cropped = pooled(&model);
        // the same weights with the ring outside the centre zeroed, run whole
        let off = (7 - size) / 2;
        let mut mask = vec![0f32; 49];
        for i in off..off + size {
            for j in off..off + size {
                mask[i * 7 + j] = 1.0;
            }
        }
        let mask = Tensor::from_vec(mask, (1, 1, 7, 7), &dev).unwrap();
        let mut tensors = model.tensors().unwrap();
        let mut depthwise = 0;
        for (name, t) in tensors.iter_mut() {
            if name.ends_with("depthwise.weight") {
                assert_eq!(&t.dims()[2..], &[7, 7], "{name}");
                *t = t.broadcast_mul(&mask).unwrap();
                depthwise += 1;
            }
        }
        assert_eq!(depthwise, 16);
        let zeroed = Model::new(cfg.clone(), 1, &dev).unwrap();
        zeroed.load_tensors(&tensors).unwrap();
        let want = pooled(&zeroed);
        let (scale, diff) = (max_abs(&want), max_abs_diff(&cropped, &want));
        assert!(diff <= 1e-5 * scale, "k={size}: {diff} of {scale}");
        assert!(
            max_abs_diff(&cropped, &full) > 1e-3 * scale,
            "k={size} changed nothing"
        );

        // the gradient reaches the centre only
        let loss = cropped.sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let vars: BTreeMap<String, Var> = model.named_vars().into_iter().collect();
        let g = grads.get(&vars["stage4.1.depthwise.weight"]).unwrap();
        let ring = g.broadcast_mul(&(1.0 - &mask).unwrap()).unwrap();
        assert_eq!(max_abs(&ring), 0.0, "k={size}");
        assert!(max_abs(&g.broadcast_mul(&mask).unwrap()) > 0.0, "k={size}");
    }
    model.set_kernel(0).unwrap();
    let again = pooled(&model);
    assert!(max_abs_diff(&again, &full) <= 1e-6 * max_abs(&full));
    assert!(model.set_kernel(4).is_err());
    let plain = Model::new(
        ModelConfig::from_name("resnet20", (3, 32, 32), 10).unwrap(),
        0,
        &dev,
    )
    .unwrap();
    let err = plain.set_kernel(3).unwrap_err().to_string();
    assert!(err.contains("no elastic kernels"), "{err}");
}

/// The Once-for-All training wrapper: each training pass runs at its drawn
/// size (the same output as setting that size by hand), evaluation at the
/// smallest; the draws cover every size and resume from the saved state.
#[test]
fn elastic_training_wrapper_draws_sizes_and_resumes() {
    use kd_core::Network;
    use kdprune_models::elastic::{ElasticKernels, DRAWS_KEY};
    let dev = Device::Cpu;
    let cfg = ModelConfig::from_name("efficientnet-b0-k7", (1, 28, 28), 10).unwrap();
    let model = Model::new(cfg, 3, &dev).unwrap();
    let xs = random_tensor(&[1, 1, 28, 28], 4, &dev);
    let net = ElasticKernels::new(&model, &[7, 5, 3], 11).unwrap();

    // 3,000 draws: each size about a third (binomial sd ≈ 26)
    let mut counts = BTreeMap::new();
    for i in 0..3000 {
        *counts.entry(net.draw(i)).or_insert(0) += 1;
    }
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), vec![3, 5, 7]);
    assert!(
        counts.values().all(|&c| (900..1100).contains(&c)),
        "{counts:?}"
    );

    let at = |size: usize| {
        model.set_kernel(size).unwrap();
        model
            .forward_t(&xs, false)
            .unwrap()
            .feature("pool")
            .unwrap()
            .clone()
    };
    // evaluation mode: the smallest size, and no draw
    let eval = net
        .forward_t(&xs, false)
        .unwrap()
        .feature("pool")
        .unwrap()
        .clone();
    assert_eq!(net.draws(), 0);
    assert_eq!(max_abs_diff(&eval, &at(3)), 0.0);
    // a batch of two samples, so training-mode batch norm has a batch
    let pair = random_tensor(&[2, 1, 28, 28], 5, &dev);
    let first = net.draw(0);
    let state = net.state().unwrap();
    assert_eq!(state[DRAWS_KEY].to_vec1::<i64>().unwrap(), vec![0]);
    net.forward_t(&pair, true).unwrap();
    assert_eq!(net.draws(), 1);
    let after_train = net.state().unwrap();
    assert_eq!(after_train[DRAWS_KEY].to_vec1::<i64>().unwrap(), vec![1]);
    // the training pass set the drawn size (it stays set after the pass)
    let left = model
        .forward_t(&xs, false)
        .unwrap()
        .feature("pool")
        .unwrap()
        .clone();
    assert_eq!(max_abs_diff(&left, &at(first)), 0.0);
    let other_size = if first == 3 { 5 } else { 3 };
    assert!(max_abs_diff(&left, &at(other_size)) > 0.0);

    // a fresh wrapper loaded from the saved state continues the draws and
    // holds the saved weights (running statistics included)
    let other = Model::new(
        ModelConfig::from_name("efficientnet-b0-k7", (1, 28, 28), 10).unwrap(),
        9,
        &dev,
    )
    .unwrap();
    let resumed = ElasticKernels::new(&other, &[7, 5, 3], 11).unwrap();
    resumed.load_state(&after_train).unwrap();
    assert_eq!(resumed.draws(), 1);
    assert_eq!(resumed.draw(1), net.draw(1));
    let a = resumed.forward_t(&xs, false).unwrap().logits;
    let b = net.forward_t(&xs, false).unwrap().logits;
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    let mut no_counter = after_train.clone();
    no_counter.remove(DRAWS_KEY);
    assert!(resumed.load_state(&no_counter).is_err());

    // bad sizes and networks without elastic kernels
    assert!(ElasticKernels::new(&model, &[], 0).is_err());
    assert!(ElasticKernels::new(&model, &[7, 4], 0).is_err());
    assert!(ElasticKernels::new(&model, &[5, 5], 0).is_err());
    let plain = Model::new(
        ModelConfig::from_name("resnet20", (1, 28, 28), 10).unwrap(),
        0,
        &dev,
    )
    .unwrap();
    let err = ElasticKernels::new(&plain, &[7, 5], 0)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no elastic kernels"), "{err}");
}
