//! kdprune's CPU convolution against candle's own `conv2d` (forward and both
//! gradients, computed by candle in f64), against finite differences, and
//! its batch invariance.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Conv2dConfig;
use kdprune_models::ops;
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

/// One convolution: input `[n, c, h, w]`, weight `[o, c/groups, kh, kw]`.
#[derive(Clone, Copy, Debug)]
struct Case {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    cfg: (usize, usize, usize, usize), // padding, stride, dilation, groups
}

impl Case {
    fn config(&self) -> Conv2dConfig {
        let (padding, stride, dilation, groups) = self.cfg;
        Conv2dConfig {
            padding,
            stride,
            dilation,
            groups,
            ..Default::default()
        }
    }

    /// The kernel fits the padded input, and candle's backward can run: it
    /// derives the output padding of its transposed convolution from the
    /// height alone, so both axes must leave the same remainder
    /// (other shapes are covered by the finite differences below).
    fn usable(&self) -> bool {
        let (p, s, d, _) = self.cfg;
        let span = |len: usize, k: usize| (len + 2 * p).checked_sub(d * (k - 1) + 1);
        match (span(self.h, self.kh), span(self.w, self.kw)) {
            (Some(h), Some(w)) => h % s == w % s,
            _ => false,
        }
    }
}

/// Cases drawn at random: kernels 1/3/5/7 (and non-square), strides 1/2,
/// paddings 0..3, dilations 1/2, groups 1, 2 and depthwise (with channel
/// multipliers 1 and 2), odd and even sizes.
fn random_cases(count: usize, seed: u64) -> Vec<Case> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut cases = Vec::new();
    while cases.len() < count {
        let k = [1, 3, 5, 7][rng.random_range(0..4)];
        let kw = if rng.random_bool(0.2) {
            [1, 3, 5][rng.random_range(0..3)]
        } else {
            k
        };
        let (c, o, groups) = match rng.random_range(0..4) {
            0 | 1 => (rng.random_range(1..5), rng.random_range(1..6), 1),
            2 => (4, 6, 2),
            _ => {
                let c = rng.random_range(2..6);
                (c, c * rng.random_range(1..3), c)
            }
        };
        let case = Case {
            n: rng.random_range(1..4),
            c,
            h: rng.random_range(3..12),
            w: rng.random_range(3..12),
            o,
            kh: k,
            kw,
            cfg: (
                rng.random_range(0..4),
                rng.random_range(1..3),
                if rng.random_bool(0.25) { 2 } else { 1 },
                groups,
            ),
        };
        if case.usable() {
            cases.push(case);
        }
    }
    cases
}

/// Output, input gradient, weight gradient, bias gradient of
/// `L = Σ r ⊙ conv(x, w, b)`, with kdprune's kernel in f32 and with candle's
/// `conv2d` in f64.
fn both(case: &Case, seed: u64) -> ([Tensor; 4], [Tensor; 4]) {
    let dev = Device::Cpu;
    let x = common::random_tensor(&[case.n, case.c, case.h, case.w], seed, &dev);
    let (_, _, _, groups) = case.cfg;
    let w = common::random_tensor(&[case.o, case.c / groups, case.kh, case.kw], seed + 1, &dev);
    let b = common::random_tensor(&[case.o], seed + 2, &dev);
    let cfg = case.config();

    let run = |dtype: DType, ours: bool| -> [Tensor; 4] {
        let x = Var::from_tensor(&x.to_dtype(dtype).unwrap()).unwrap();
        let w = Var::from_tensor(&w.to_dtype(dtype).unwrap()).unwrap();
        let b = Var::from_tensor(&b.to_dtype(dtype).unwrap()).unwrap();
        let y = if ours {
            ops::conv2d(&x, &w, Some(&b), &cfg).unwrap()
        } else {
            let (p, s, d, g) = case.cfg;
            x.conv2d(&w, p, s, d, g)
                .unwrap()
                .broadcast_add(&b.reshape((1, case.o, 1, 1)).unwrap())
                .unwrap()
        };
        let r = common::random_tensor(y.dims(), seed + 3, &Device::Cpu)
            .to_dtype(dtype)
            .unwrap();
        let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        [
            y.clone(),
            grads.get(&x).unwrap().clone(),
            grads.get(&w).unwrap().clone(),
            grads.get(&b).unwrap().clone(),
        ]
    };
    (run(DType::F32, true), run(DType::F64, false))
}

#[test]
fn forward_and_gradients_match_candle_on_random_shapes() {
    for (i, case) in random_cases(40, 7).iter().enumerate() {
        let (ours, reference) = both(case, 100 + 10 * i as u64);
        for (name, (a, b)) in ["output", "input grad", "weight grad", "bias grad"]
            .iter()
            .zip(ours.iter().zip(&reference))
        {
            assert_eq!(a.dims(), b.dims(), "{name} of {case:?}");
            let err = rel_err(a, b);
            assert!(err <= 1e-5, "{name} of {case:?}: relative error {err:e}");
        }
    }
}

#[test]
fn covers_every_required_setting() {
    // The random draw above must include each kernel size, stride, padding,
    // dilation and kind of grouping at least once.
    let cases = random_cases(40, 7);
    for k in [1, 3, 5, 7] {
        assert!(cases.iter().any(|c| c.kh == k), "kernel {k}");
    }
    for s in [1, 2] {
        assert!(cases.iter().any(|c| c.cfg.1 == s), "stride {s}");
    }
    for p in 0..4 {
        assert!(cases.iter().any(|c| c.cfg.0 == p), "padding {p}");
    }
    assert!(cases.iter().any(|c| c.cfg.2 == 2), "dilation 2");
    assert!(cases.iter().any(|c| c.cfg.3 == 1), "groups 1");
    assert!(cases.iter().any(|c| c.cfg.3 == 2 && c.c == 4), "groups 2");
    assert!(
        cases.iter().any(|c| c.cfg.3 == c.c && c.o == c.c),
        "depthwise"
    );
    assert!(
        cases.iter().any(|c| c.cfg.3 == c.c && c.o == 2 * c.c),
        "multiplier 2"
    );
    assert!(
        cases.iter().any(|c| c.h % 2 == 1 && c.w % 2 == 1),
        "odd sizes"
    );
}

/// `Σ r ⊙ conv(x, w)` accumulated in f64.
fn objective(x: &Tensor, w: &Tensor, r: &[f32], cfg: &Conv2dConfig) -> f64 {
    let y = ops::conv2d(x, w, None, cfg).unwrap();
    let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    y.iter().zip(r).map(|(a, b)| *a as f64 * *b as f64).sum()
}

/// `t` with `delta` added at flat index `i`.
fn nudged(t: &Tensor, i: usize, delta: f32) -> Tensor {
    let mut v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v[i] += delta;
    Tensor::from_vec(v, t.dims(), t.device()).unwrap()
}

#[test]
fn gradients_match_finite_differences() {
    let dev = Device::Cpu;
    // (input dims, weight dims, padding, stride, dilation, groups)
    let cases = [
        ([2, 2, 5, 6], [3, 2, 3, 3], 1, 2, 1, 1),
        ([1, 3, 6, 5], [3, 1, 3, 3], 2, 1, 2, 3),
        ([2, 4, 4, 4], [2, 2, 1, 1], 0, 1, 1, 2),
    ];
    for (i, (xd, wd, padding, stride, dilation, groups)) in cases.into_iter().enumerate() {
        let cfg = Conv2dConfig {
            padding,
            stride,
            dilation,
            groups,
            ..Default::default()
        };
        let seed = 500 + 10 * i as u64;
        let x = Var::from_tensor(&common::random_tensor(&xd, seed, &dev)).unwrap();
        let w = Var::from_tensor(&common::random_tensor(&wd, seed + 1, &dev)).unwrap();
        let y = ops::conv2d(&x, &w, None, &cfg).unwrap();
        let r_t = common::random_tensor(y.dims(), seed + 2, &dev);
        let r = r_t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let grads = (&y * &r_t).unwrap().sum_all().unwrap().backward().unwrap();
        // The objective is linear in x and in w, so a central difference is
        // exact up to rounding; a large step keeps the rounding small.
        let eps = 0.25f32;
        for (var, other, is_input) in [(&x, &w, true), (&w, &x, false)] {
            let g = grads
                .get(var)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for (j, analytic) in g.iter().enumerate() {
                let f = |d: f32| {
                    let v = nudged(var.as_tensor(), j, d);
                    if is_input {
                        objective(&v, other, &r, &cfg)
                    } else {
                        objective(other, &v, &r, &cfg)
                    }
                };
                let numeric = (f(eps) - f(-eps)) / (2.0 * eps as f64);
                assert!(
                    (numeric - *analytic as f64).abs() <= 1e-4 * (1.0 + numeric.abs()),
                    "case {i}, {} [{j}]: numeric {numeric}, analytic {analytic}",
                    if is_input { "input" } else { "weight" }
                );
            }
        }
    }
}

#[test]
fn a_sample_gives_the_same_bits_alone_or_in_a_batch() {
    // The teacher-logit cache relies on it: a sample's output may not depend
    // on the batch it was computed in.
    let dev = Device::Cpu;
    let x = common::random_tensor(&[5, 3, 9, 9], 61, &dev);
    let w = common::random_tensor(&[8, 3, 3, 3], 62, &dev);
    let cfg = Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    let batch = ops::conv2d(&x, &w, None, &cfg).unwrap();
    for i in 0..5 {
        let alone = ops::conv2d(&x.narrow(0, i, 1).unwrap(), &w, None, &cfg).unwrap();
        assert_eq!(
            common::bits(&alone),
            common::bits(&batch.narrow(0, i, 1).unwrap())
        );
    }
}

#[test]
fn bad_inputs_are_errors() {
    let dev = Device::Cpu;
    let cfg = Conv2dConfig::default();
    let x = common::random_tensor(&[1, 3, 5, 5], 71, &dev);
    let w = common::random_tensor(&[2, 2, 3, 3], 72, &dev);
    assert!(ops::conv2d(&x, &w, None, &cfg).is_err(), "channel mismatch");
    let w = common::random_tensor(&[2, 3, 7, 7], 73, &dev);
    assert!(ops::conv2d(&x, &w, None, &cfg).is_err(), "kernel too large");
    let x64 = x.to_dtype(DType::F64).unwrap();
    let w = common::random_tensor(&[2, 3, 3, 3], 74, &dev)
        .to_dtype(DType::F64)
        .unwrap();
    let err = ops::conv2d(&x64, &w, None, &cfg).unwrap_err().to_string();
    assert!(err.contains("f32"), "{err}");
}

#[test]
fn results_are_the_same_bits_on_any_number_of_threads() {
    let dev = Device::Cpu;
    let x = Var::from_tensor(&common::random_tensor(&[37, 3, 7, 6], 81, &dev)).unwrap();
    let w = Var::from_tensor(&common::random_tensor(&[5, 3, 3, 3], 82, &dev)).unwrap();
    let b = Var::from_tensor(&common::random_tensor(&[5], 83, &dev)).unwrap();
    let cfg = Conv2dConfig {
        padding: 1,
        stride: 2,
        ..Default::default()
    };
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let y = ops::conv2d(&x, &w, Some(&b), &cfg).unwrap();
            let r = common::random_tensor(y.dims(), 84, &dev);
            let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            [
                &y,
                g.get(&x).unwrap(),
                g.get(&w).unwrap(),
                g.get(&b).unwrap(),
            ]
            .map(common::bits)
        })
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn each_gradient_alone_equals_both_together() {
    // The backward pass computes only what is asked for: ∂x without a
    // trainable weight (a frozen layer), ∂w without a trainable input (data).
    let dev = Device::Cpu;
    let xt = common::random_tensor(&[3, 4, 6, 5], 91, &dev);
    let wt = common::random_tensor(&[6, 2, 3, 3], 92, &dev);
    let cfg = Conv2dConfig {
        padding: 1,
        groups: 2,
        ..Default::default()
    };
    let r = common::random_tensor(&[3, 6, 6, 5], 93, &dev);
    let grads = |x: &Tensor, w: &Tensor| {
        let y = ops::conv2d(x, w, None, &cfg).unwrap();
        (&y * &r).unwrap().sum_all().unwrap().backward().unwrap()
    };
    let (xv, wv) = (
        Var::from_tensor(&xt).unwrap(),
        Var::from_tensor(&wt).unwrap(),
    );
    let both = grads(&xv, &wv);
    let only_dx = grads(&xv, &wt);
    let only_dw = grads(&xt, &wv);
    assert!(only_dx.get(&wt).is_none() && only_dw.get(&xt).is_none());
    assert_eq!(
        common::bits(only_dx.get(&xv).unwrap()),
        common::bits(both.get(&xv).unwrap())
    );
    assert_eq!(
        common::bits(only_dw.get(&wv).unwrap()),
        common::bits(both.get(&wv).unwrap())
    );
}
