//! Forward and backward passes agree with PyTorch on fixed weights and inputs.
//!
//! Golden values come from this script (torch 2.x, CPU, float32):
//!
//! ```python
//! import math, torch, torch.nn as nn, torch.nn.functional as F
//! def lenet5(c, k, flat, p):
//!     return nn.Sequential(nn.Conv2d(c, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
//!                          nn.Conv2d(6, 16, 5, padding=p), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
//!                          nn.Linear(flat, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, k))
//! def mlp(i, h, k):
//!     d = [i] + h + [k]; L = [nn.Flatten()]
//!     for a, b in zip(d, d[1:]): L += [nn.Linear(a, b), nn.ReLU()]
//!     return nn.Sequential(*L[:-1])  # no ReLU after the last layer
//! def run(m, shape):
//!     # parameter k (forward order), flat index i: 0.1·sin(1.3·i + 0.7·k); input x_i = cos(0.21·i); labels n mod 10
//!     with torch.no_grad():
//!         for k, p in enumerate(m.parameters()):
//!             v = [0.1 * math.sin(1.3 * i + 0.7 * k) for i in range(p.numel())]
//!             p.copy_(torch.tensor(v, dtype=torch.float64).float().reshape(p.shape))
//!     n = 1
//!     for s in shape: n *= s
//!     x = torch.tensor([math.cos(0.21 * i) for i in range(n)], dtype=torch.float64).float().reshape(shape)
//!     y = torch.arange(shape[0]) % 10
//!     logits = m(x)
//!     loss = F.cross_entropy(logits, y)
//!     loss.backward()
//!     print("loss", repr(loss.item()))
//!     print("logits[0]", [round(v, 6) for v in logits[0].tolist()])
//!     print("grad |.|_1", [float("%.7g" % p.grad.abs().sum().item()) for p in m.parameters()])
//! run(lenet5(1, 10, 64, 2), (4, 1, 8, 8))
//! run(lenet5(1, 10, 400, 0), (2, 1, 28, 28))
//! run(mlp(64, [300, 100], 10), (4, 1, 8, 8))
//! ```

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use candle_nn::loss::cross_entropy;
use kdprune_models::{Model, ModelConfig};

struct Golden {
    loss: f32,
    logits0: [f32; 10],
    /// Σ|∂L/∂θ| per parameter, in forward order.
    grad_l1: &'static [f32],
}

fn close(a: f32, b: f32, rel: f32) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-3)
}

fn check(name: &str, input: (usize, usize, usize), batch: usize, golden: Golden) {
    let dev = Device::Cpu;
    let config = ModelConfig::from_name(name, input, 10).unwrap();
    let model = Model::new(config.clone(), 0, &dev).unwrap();
    let tensors: BTreeMap<String, Tensor> = config
        .param_shapes()
        .into_iter()
        .enumerate()
        .map(|(k, (pname, shape))| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|i| (0.1 * (1.3 * i as f64 + 0.7 * k as f64).sin()) as f32)
                .collect();
            (pname, Tensor::from_vec(v, shape, &dev).unwrap())
        })
        .collect();
    model.load_tensors(&tensors).unwrap();

    let (c, h, w) = input;
    let n = batch * c * h * w;
    let x: Vec<f32> = (0..n).map(|i| (0.21 * i as f64).cos() as f32).collect();
    let xs = Tensor::from_vec(x, (batch, c, h, w), &dev).unwrap();
    let ys = Tensor::from_vec(
        (0..batch as u32).map(|i| i % 10).collect::<Vec<_>>(),
        batch,
        &dev,
    )
    .unwrap();

    let logits = model.forward_t(&xs, true).unwrap().logits;
    let loss = cross_entropy(&logits, &ys).unwrap();
    let loss_value = loss.to_scalar::<f32>().unwrap();
    assert!(
        close(loss_value, golden.loss, 1e-5),
        "{name}: loss {loss_value} vs {}",
        golden.loss
    );
    let row0 = logits.get(0).unwrap().to_vec1::<f32>().unwrap();
    for (j, (a, b)) in row0.iter().zip(golden.logits0).enumerate() {
        assert!((a - b).abs() < 2e-6, "{name}: logit {j}: {a} vs {b}");
    }

    let grads = loss.backward().unwrap();
    let vars: BTreeMap<String, candle_core::Var> = model.named_vars().into_iter().collect();
    for ((pname, _), expected) in config.param_shapes().into_iter().zip(golden.grad_l1) {
        let g = grads.get(&vars[&pname]).unwrap();
        let l1 = g
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            close(l1, *expected, 1e-4),
            "{name}: Σ|grad {pname}| = {l1} vs {expected}"
        );
    }
}

#[test]
fn lenet5_digits_matches_pytorch() {
    check(
        "lenet5",
        (1, 8, 8),
        4,
        Golden {
            loss: 2.264_307_5,
            logits0: [
                0.162881, -0.105586, 0.183469, -0.061728, -0.232934, 0.226509, -0.050672, 0.04616,
                0.043821, -0.276577,
            ],
            grad_l1: &[
                0.03929587,
                0.001169129,
                0.08015788,
                0.006983564,
                0.2647276,
                0.07356014,
                1.965525,
                0.5050939,
                10.05322,
                1.161842,
            ],
        },
    );
}

#[test]
fn lenet5_mnist_matches_pytorch() {
    check(
        "lenet5",
        (1, 28, 28),
        2,
        Golden {
            loss: 2.280_868_5,
            logits0: [
                0.161808, -0.106074, 0.185252, -0.063836, -0.231649, 0.226746, -0.052303, 0.048297,
                0.042342, -0.276562,
            ],
            grad_l1: &[
                0.0897477,
                0.003797621,
                0.4385455,
                0.01173442,
                6.87552,
                0.1799011,
                6.077491,
                1.064313,
                13.77114,
                1.587469,
            ],
        },
    );
}

#[test]
fn lenet_300_100_matches_pytorch() {
    check(
        "lenet-300-100",
        (1, 8, 8),
        4,
        Golden {
            loss: 2.322_693_3,
            logits0: [
                0.08627, 0.083423, -0.274022, 0.094742, 0.318524, -0.244555, -0.207946, 0.276189,
                0.009331, -0.159639,
            ],
            grad_l1: &[24.62412, 0.3875726, 12.09938, 0.5947049, 30.17066, 1.206959],
        },
    );
}
