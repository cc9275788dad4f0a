//! SGD with momentum / Nesterov / weight decay against torch.optim.SGD.

use candle_core::{Device, Tensor, Var};
use kd_core::{Sgd, SgdConfig};

/// Three steps on `mean((x·wᵀ + b)²)` with decay on `w` only.
fn three_steps(nesterov: bool) -> (Vec<f32>, Vec<f32>) {
    let dev = Device::Cpu;
    let w = Var::from_tensor(&Tensor::new(&[[0.5f32, -1.0], [2.0, 0.25]], &dev).unwrap()).unwrap();
    let b = Var::from_tensor(&Tensor::new(&[0.1f32, -0.2], &dev).unwrap()).unwrap();
    let x = Tensor::new(&[[1.0f32, 2.0], [-1.0, 0.5], [0.3, -0.7]], &dev).unwrap();
    let vars = vec![
        ("fc.bias".to_string(), b.clone()),
        ("fc.weight".to_string(), w.clone()),
    ];
    let cfg = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        nesterov,
        weight_decay: 0.01,
    };
    let mut sgd = Sgd::new(&vars, cfg).unwrap();
    for _ in 0..3 {
        let y = x
            .matmul(&w.as_tensor().t().unwrap())
            .unwrap()
            .broadcast_add(b.as_tensor())
            .unwrap();
        let loss = y.sqr().unwrap().mean_all().unwrap();
        let grads = loss.backward().unwrap();
        sgd.step(&grads, 0.1).unwrap();
    }
    // The buffers must not record an autograd graph: chained over steps, such
    // a graph keeps every step's intermediates alive (a memory leak).
    for name in ["fc.bias", "fc.weight"] {
        let buf = sgd.momentum_buffer(name).expect("buffer after a step");
        assert!(
            !buf.track_op(),
            "{name}: momentum buffer tracks an autograd graph"
        );
    }
    (
        w.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
        b.as_tensor().to_vec1().unwrap(),
    )
}

fn close(a: &[f32], b: &[f32]) {
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
    }
}

#[test]
fn sgd_matches_pytorch() {
    // import torch
    // for nest in (True, False):
    //     w = torch.tensor([[0.5,-1.0],[2.0,0.25]], requires_grad=True); b = torch.tensor([0.1,-0.2], requires_grad=True)
    //     opt = torch.optim.SGD([{'params':[w],'weight_decay':0.01},{'params':[b],'weight_decay':0.0}],
    //                           lr=0.1, momentum=0.9, nesterov=nest)
    //     x = torch.tensor([[1.0,2.0],[-1.0,0.5],[0.3,-0.7]])
    //     for _ in range(3):
    //         opt.zero_grad(); loss = ((x@w.T + b)**2).mean(); loss.backward(); opt.step()
    //     print(nest, w.detach().flatten().tolist(), b.detach().tolist())
    let (w, b) = three_steps(true);
    close(
        &w,
        &[0.473_295_6, -0.240_765_05, 0.993_838_3, -0.348_159_37],
    );
    close(&b, &[0.307_786_52, -0.202_359_57]);
    let (w, b) = three_steps(false);
    close(&w, &[0.507_453_8, -0.372_152_3, 1.230_840_9, -0.271_333_63]);
    close(&b, &[0.295_403_12, -0.239_651_44]);
}

#[test]
fn decay_skips_biases_and_norms() {
    assert!(kd_core::optim::decays("fc1.weight"));
    assert!(kd_core::optim::decays("conv2.weight"));
    assert!(!kd_core::optim::decays("fc1.bias"));
    assert!(!kd_core::optim::decays("bn1.weight"));
    assert!(!kd_core::optim::decays("layer1.norm.weight"));
    assert!(!kd_core::optim::decays("bn1.running_mean"));
}

#[test]
fn invalid_settings_are_rejected() {
    for cfg in [
        SgdConfig {
            lr: 0.0,
            ..SgdConfig::default()
        },
        SgdConfig {
            lr: f64::NAN,
            ..SgdConfig::default()
        },
        SgdConfig {
            momentum: 1.0,
            ..SgdConfig::default()
        },
        SgdConfig {
            weight_decay: -1.0,
            ..SgdConfig::default()
        },
        SgdConfig {
            momentum: 0.0,
            nesterov: true,
            ..SgdConfig::default()
        },
    ] {
        assert!(cfg.validate().is_err(), "{cfg:?} should be rejected");
    }
    assert!(SgdConfig::default().validate().is_ok());
}

#[test]
fn mask_state_clears_the_momentum_of_masked_coordinates_only() {
    let dev = Device::Cpu;
    let w = Var::from_tensor(&Tensor::new(&[[0.5f32, -1.0], [2.0, 0.25]], &dev).unwrap()).unwrap();
    let vars = vec![("fc.weight".to_string(), w.clone())];
    let mut sgd = Sgd::new(&vars, SgdConfig::default()).unwrap();
    let mask = Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], &dev).unwrap();
    let masks = std::collections::BTreeMap::from([("fc.weight".to_string(), mask.clone())]);
    // No step yet: no buffer, nothing to clear.
    sgd.mask_state(masks.iter()).unwrap();
    for _ in 0..2 {
        let grads = w
            .as_tensor()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        sgd.step(&grads, 0.1).unwrap();
    }
    let before: Vec<f32> = sgd
        .momentum_buffer("fc.weight")
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(before.iter().all(|v| *v != 0.0), "{before:?}");
    sgd.mask_state(masks.iter()).unwrap();
    let after: Vec<f32> = sgd
        .momentum_buffer("fc.weight")
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(after, [before[0], 0.0, 0.0, before[3]]);
    // An unknown name and a wrong shape are errors.
    let unknown = std::collections::BTreeMap::from([("fc.bias".to_string(), mask.clone())]);
    assert!(sgd.mask_state(unknown.iter()).is_err());
    let wrong = std::collections::BTreeMap::from([(
        "fc.weight".to_string(),
        Tensor::ones(3, candle_core::DType::F32, &dev).unwrap(),
    )]);
    assert!(sgd.mask_state(wrong.iter()).is_err());
}
