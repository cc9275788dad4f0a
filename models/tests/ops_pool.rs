//! kdprune's CPU max- and average-pooling against candle: its own
//! `max_pool2d` / `avg_pool2d` where candle has them (kernel = stride), and
//! pooling composed from candle's differentiable ops (in f64) for every
//! kernel, stride and padding; gradients also against finite differences.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use kdprune_models::ops::{self, Pool2dConfig};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `max|a − b| / max|b|`, in f64.
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let b = b.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let diff = (&a - &b).unwrap().abs().unwrap().max(0).unwrap();
    let scale = b.abs().unwrap().max(0).unwrap();
    diff.to_scalar::<f64>().unwrap() / scale.to_scalar::<f64>().unwrap().max(1e-30)
}

/// Distinct values (a shuffled grid with spacing 0.01 around 0, never 0
/// itself), so that window maxima are unique and finite differences of a
/// max-pool do not cross a tie.
fn distinct_tensor(dims: &[usize], seed: u64) -> Tensor {
    let n: usize = dims.iter().product();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut v: Vec<f32> = (0..n)
        .map(|i| (i as f32 - n as f32 / 2.0 + 0.5) * 0.01)
        .collect();
    v.shuffle(&mut rng);
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Max,
    Avg,
}

/// Cases drawn at random: kernels 1–5 (square or not), strides 1–3,
/// paddings up to half the kernel, odd and even sizes.
fn random_cases(count: usize, seed: u64) -> Vec<([usize; 4], Pool2dConfig)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut cases = Vec::new();
    while cases.len() < count {
        let kh = rng.random_range(1..6);
        let kw = if rng.random_bool(0.3) {
            rng.random_range(1..6)
        } else {
            kh
        };
        let cfg = Pool2dConfig {
            kernel: (kh, kw),
            stride: (rng.random_range(1..4), rng.random_range(1..4)),
            padding: (rng.random_range(0..=kh / 2), rng.random_range(0..=kw / 2)),
        };
        let dims = [
            rng.random_range(1..3),
            rng.random_range(1..4),
            rng.random_range(2..12),
            rng.random_range(2..12),
        ];
        if cfg.output_size(dims[2], dims[3]).is_some() {
            cases.push((dims, cfg));
        }
    }
    cases
}

/// Output and input gradient of `L = Σ r ⊙ pool(x)`, by `f`.
fn run(
    x: &Tensor,
    seed: u64,
    f: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> (Tensor, Tensor) {
    let x = Var::from_tensor(x).unwrap();
    let y = f(&x).unwrap();
    let r = common::random_tensor(y.dims(), seed, &Device::Cpu)
        .to_dtype(x.dtype())
        .unwrap();
    let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    (y, grads.get(&x).unwrap().clone())
}

#[test]
fn forward_and_gradient_match_candle_ops_on_random_shapes() {
    for (i, (dims, cfg)) in random_cases(60, 11).into_iter().enumerate() {
        let seed = 1000 + 10 * i as u64;
        let x = distinct_tensor(&dims, seed);
        let x64 = x.to_dtype(DType::F64).unwrap();
        for kind in [Kind::Max, Kind::Avg] {
            let (ours, reference) = match kind {
                Kind::Max => (
                    run(&x, seed + 1, |t| ops::max_pool2d(t, &cfg)),
                    run(&x64, seed + 1, |t| ops::max_pool2d_candle(t, &cfg)),
                ),
                Kind::Avg => (
                    run(&x, seed + 1, |t| ops::avg_pool2d(t, &cfg)),
                    run(&x64, seed + 1, |t| ops::avg_pool2d_candle(t, &cfg)),
                ),
            };
            assert_eq!(
                ours.0.dims(),
                reference.0.dims(),
                "{kind:?} {dims:?} {cfg:?}"
            );
            let err = rel_err(&ours.0, &reference.0);
            assert!(err <= 1e-5, "{kind:?} output {dims:?} {cfg:?}: {err:e}");
            let err = rel_err(&ours.1, &reference.1);
            assert!(err <= 1e-5, "{kind:?} gradient {dims:?} {cfg:?}: {err:e}");
        }
    }
}

#[test]
fn fused_relu_equals_pool_then_relu() {
    for (i, (dims, cfg)) in random_cases(30, 12).into_iter().enumerate() {
        let seed = 5000 + 10 * i as u64;
        let x = distinct_tensor(&dims, seed);
        let (fused, fused_grad) = run(&x, seed + 1, |t| ops::max_pool2d_relu(t, &cfg));
        let (split, split_grad) = run(&x, seed + 1, |t| ops::max_pool2d(t, &cfg)?.relu());
        assert_eq!(
            common::bits(&fused),
            common::bits(&split),
            "{dims:?} {cfg:?}"
        );
        assert!(
            rel_err(&fused_grad, &split_grad) <= 1e-6,
            "{dims:?} {cfg:?}"
        );
    }
    // A window of negative values passes nothing through the ReLU.
    let x = Var::from_vec(vec![-1f32, -2., -3., 4.], (1, 1, 2, 2), &Device::Cpu).unwrap();
    let y = ops::max_pool2d_relu(&x, &Pool2dConfig::new(1)).unwrap();
    assert_eq!(
        y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        [0., 0., 0., 4.]
    );
    let g = y.sum_all().unwrap().backward().unwrap();
    let g = g.get(&x).unwrap().flatten_all().unwrap();
    assert_eq!(g.to_vec1::<f32>().unwrap(), [0., 0., 0., 1.]);
}

#[test]
fn random_cases_cover_overlap_gaps_and_padding() {
    let cases = random_cases(60, 11);
    let any = |f: &dyn Fn(&Pool2dConfig) -> bool| cases.iter().any(|(_, c)| f(c));
    assert!(any(&|c| c.stride.0 < c.kernel.0), "overlapping windows");
    assert!(any(&|c| c.stride.0 > c.kernel.0), "gaps between windows");
    assert!(any(&|c| c.padding.0 > 0 && c.padding.1 > 0), "padding");
    assert!(any(&|c| c.kernel.0 != c.kernel.1), "non-square kernel");
    assert!(cases.iter().any(|(d, _)| d[2] % 2 == 1), "odd sizes");
}

#[test]
fn forward_matches_candle_pools_and_avg_gradient_matches_candle() {
    // candle's own pools have no padding, and a backward only for
    // kernel = stride; its max-pool backward is wrong (see `lenet5::max_pool2`)
    // and its average-pool backward misplaces the gradient when the size is
    // not a multiple of the kernel, so only the average gradient on whole
    // windows is compared with it here.
    for (i, k) in [2usize, 3, 2, 4].into_iter().enumerate() {
        let seed = 2000 + 10 * i as u64;
        let dims = [2, 3, k * (3 + i % 2), k * (4 - i % 2)];
        let cfg = Pool2dConfig::new(k);
        let x = distinct_tensor(&dims, seed);
        let x64 = x.to_dtype(DType::F64).unwrap();
        let (ours, _) = run(&x, seed + 1, |t| ops::max_pool2d(t, &cfg));
        let candle_max = x64.max_pool2d(k).unwrap();
        assert!(rel_err(&ours, &candle_max) <= 1e-5, "max k={k}");
        // odd sizes: the forward passes still agree
        let odd = distinct_tensor(&[1, 2, 2 * k + 1, 3 * k - 1], seed + 3);
        let (ours_odd, _) = run(&odd, seed + 4, |t| ops::avg_pool2d(t, &cfg));
        let candle_odd = odd.avg_pool2d(k).unwrap();
        assert!(rel_err(&ours_odd, &candle_odd) <= 1e-5, "avg odd k={k}");
        let (ours, ours_grad) = run(&x, seed + 2, |t| ops::avg_pool2d(t, &cfg));
        let (candle_avg, candle_grad) = run(&x64, seed + 2, |t| t.avg_pool2d(k));
        assert!(rel_err(&ours, &candle_avg) <= 1e-5, "avg k={k}");
        assert!(rel_err(&ours_grad, &candle_grad) <= 1e-5, "avg grad k={k}");
    }
}

#[test]
fn max_gradient_is_the_full_upstream_gradient_at_the_maximum() {
    // import torch, torch.nn.functional as F
    // x = torch.tensor([[[[1., 5., 2.], [4., 3., 9.], [0.5, 8., 7.]]]], requires_grad=True)
    // F.max_pool2d(x, 2, stride=1).sum().backward(); x.grad.flatten().tolist()
    // # [0.0, 1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 1.0, 0.0]
    let x = Var::from_vec(
        vec![1f32, 5., 2., 4., 3., 9., 0.5, 8., 7.],
        (1, 1, 3, 3),
        &Device::Cpu,
    )
    .unwrap();
    let y = ops::max_pool2d(&x, &Pool2dConfig::new(2).with_stride(1)).unwrap();
    assert_eq!(
        y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        [5., 9., 8., 9.]
    );
    let g = y.sum_all().unwrap().backward().unwrap();
    let g = g.get(&x).unwrap().flatten_all().unwrap();
    assert_eq!(
        g.to_vec1::<f32>().unwrap(),
        [0., 1., 0., 0., 0., 2., 0., 1., 0.]
    );
}

#[test]
fn avg_with_padding_counts_padded_zeros() {
    // import torch, torch.nn.functional as F
    // x = torch.tensor([[[[1., 2.], [3., 4.]]]], requires_grad=True)
    // y = F.avg_pool2d(x, 3, stride=1, padding=1); y.flatten().tolist()
    // # [1.1111111, 1.1111111, 1.1111111, 1.1111111]
    // y.sum().backward(); x.grad.flatten().tolist()  # [0.4444444, 0.4444444, 0.4444444, 0.4444444]
    let x = Var::from_vec(vec![1f32, 2., 3., 4.], (1, 1, 2, 2), &Device::Cpu).unwrap();
    let y = ops::avg_pool2d(&x, &Pool2dConfig::new(3).with_stride(1).with_padding(1)).unwrap();
    for v in y.flatten_all().unwrap().to_vec1::<f32>().unwrap() {
        assert!((v - 10.0 / 9.0).abs() < 1e-6, "{v}");
    }
    let g = y.sum_all().unwrap().backward().unwrap();
    for v in g
        .get(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
    {
        assert!((v - 4.0 / 9.0).abs() < 1e-6, "{v}");
    }
}

#[test]
fn gradients_match_finite_differences() {
    let cases = [
        (
            [1, 2, 5, 6],
            Pool2dConfig::new(3).with_stride(2).with_padding(1),
        ),
        ([2, 1, 7, 5], Pool2dConfig::new(2).with_stride(1)),
        (
            [1, 2, 6, 7],
            Pool2dConfig {
                kernel: (2, 3),
                stride: (3, 1),
                padding: (1, 1),
            },
        ),
    ];
    for (i, (dims, cfg)) in cases.into_iter().enumerate() {
        let seed = 3000 + 10 * i as u64;
        let x = distinct_tensor(&dims, seed);
        for kind in [Kind::Max, Kind::Avg] {
            let pool = |t: &Tensor| match kind {
                Kind::Max => ops::max_pool2d(t, &cfg),
                Kind::Avg => ops::avg_pool2d(t, &cfg),
            };
            let (y, g) = run(&x, seed + 1, pool);
            let r = common::random_tensor(y.dims(), seed + 1, &Device::Cpu)
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let objective = |t: &Tensor| -> f64 {
                let y = pool(t).unwrap().flatten_all().unwrap();
                let y = y.to_vec1::<f32>().unwrap();
                y.iter().zip(&r).map(|(a, b)| *a as f64 * *b as f64).sum()
            };
            let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let base = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            // Values are 0.01 apart: a step of 0.002 never changes a window's
            // maximum, and both pools are linear between such changes.
            let eps = 0.002f32;
            for (j, analytic) in g.iter().enumerate() {
                let at = |d: f32| {
                    let mut v = base.clone();
                    v[j] += d;
                    objective(&Tensor::from_vec(v, &dims, &Device::Cpu).unwrap())
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps as f64);
                assert!(
                    (numeric - *analytic as f64).abs() <= 1e-3 * (1.0 + numeric.abs()),
                    "{kind:?} case {i} [{j}]: numeric {numeric}, analytic {analytic}"
                );
            }
        }
    }
}

#[test]
fn bad_configurations_are_errors() {
    let x = distinct_tensor(&[1, 1, 4, 4], 4000);
    assert!(ops::max_pool2d(&x, &Pool2dConfig::new(5)).is_err());
    assert!(ops::avg_pool2d(&x, &Pool2dConfig::new(2).with_padding(2)).is_err());
    assert!(ops::max_pool2d(&x, &Pool2dConfig::new(2).with_stride(0)).is_err());
    assert!(ops::max_pool2d_candle(&x, &Pool2dConfig::new(5)).is_err());
}
