//! kdprune's CPU convolution against candle's own `conv2d` (forward and both
//! gradients, computed by candle in f64), against finite differences, and
//! its batch invariance; the residual batch norm and the fused basic block
//! against candle's ops (in f64) and kdprune's per-layer kernels.

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

/// `f` run on a rayon pool of `threads` threads (the kernels' pool).
fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// The output and the three gradients of `case` agree with candle's in f64
/// (same dims, relative error ≤ 1e-5).
fn assert_matches_candle(case: &Case, seed: u64) {
    let (ours, reference) = both(case, seed);
    for (name, (a, b)) in ["output", "input grad", "weight grad", "bias grad"]
        .iter()
        .zip(ours.iter().zip(&reference))
    {
        assert_eq!(a.dims(), b.dims(), "{name} of {case:?}");
        let err = rel_err(a, b);
        assert!(err <= 1e-5, "{name} of {case:?}: relative error {err:e}");
    }
}

#[test]
fn forward_and_gradients_match_candle_on_random_shapes() {
    for (i, case) in random_cases(40, 7).iter().enumerate() {
        assert_matches_candle(case, 100 + 10 * i as u64);
    }
}

#[test]
fn same_width_stride_one_layers_match_candle() {
    // Stride 1 with the output as wide as the input (2p = d·(kw − 1)): im2col
    // and col2im copy each tap as one run of the shifted plane and zero the
    // wrapped columns. Maps narrower than the kernel span leave taps with
    // no valid row or column; a non-square kernel keeps the width but not
    // the height; two groups use it group by group.
    let cases = [
        (2, 3, 5, 7, 4, 3, 3, (1, 1, 1, 1)),
        (3, 2, 6, 6, 3, 5, 5, (2, 1, 1, 1)),
        (2, 2, 7, 5, 2, 3, 3, (2, 1, 2, 1)),
        (1, 2, 3, 4, 3, 7, 7, (3, 1, 1, 1)),
        (2, 3, 4, 6, 2, 1, 3, (1, 1, 1, 1)),
        (2, 4, 5, 5, 6, 3, 3, (1, 1, 1, 2)),
    ];
    for (i, (n, c, h, w, o, kh, kw, cfg)) in cases.into_iter().enumerate() {
        let case = Case {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            cfg,
        };
        assert!(case.usable(), "{case:?}");
        assert_matches_candle(&case, 900 + 10 * i as u64);
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
        on_threads(threads, || {
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

/// `Var`s of `shapes`, random (seeded), in `dtype`.
fn vars(shapes: &[&[usize]], seed: u64, dtype: DType) -> Vec<Var> {
    let dev = Device::Cpu;
    shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let t = common::random_tensor(s, seed + i as u64, &dev);
            Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap()
        })
        .collect()
}

/// The residual batch norm (`max(0, bn(x) + shortcut(r))`) against candle's
/// ops in f64: output, batch statistics and the gradients of x, r, γ and β.
#[test]
fn batch_norm_add_relu_matches_candle_in_f64() {
    let cases: [(&[usize], &[usize], ops::Shortcut); 4] = [
        (&[4, 6, 5, 7], &[4, 6, 5, 7], ops::Shortcut::Identity),
        // uneven padding, as a structurally pruned stream leaves it
        (
            &[3, 6, 5, 7],
            &[3, 3, 9, 13],
            ops::Shortcut::ZeroPad {
                stride: 2,
                lo: 1,
                hi: 2,
            },
        ),
        (
            &[4, 6, 5, 7],
            &[4, 2, 9, 13],
            ops::Shortcut::ZeroPad {
                stride: 2,
                lo: 2,
                hi: 2,
            },
        ),
        (
            &[3, 6, 5, 7],
            &[3, 4, 6, 8],
            ops::Shortcut::ZeroPad {
                stride: 1,
                lo: 1,
                hi: 1,
            },
        ),
    ];
    for (seed, (x_dims, r_dims, shortcut)) in cases.into_iter().enumerate() {
        let c = x_dims[1];
        let shapes: [&[usize]; 5] = [x_dims, r_dims, &[c], &[c], x_dims];
        let run = |dtype: DType, native: bool| {
            let v = vars(&shapes, 100 + 10 * seed as u64, dtype);
            let x = (v[0].as_tensor() * 2.0).unwrap();
            let (gamma, beta) = (v[2].as_tensor(), (v[3].as_tensor() * 0.3).unwrap());
            let (y, mean, var) = if native {
                ops::batch_norm_add_relu_train(&x, gamma, &beta, 1e-5, v[1].as_tensor(), shortcut)
            } else {
                ops::batch_norm_add_relu_train_candle(
                    &x,
                    gamma,
                    &beta,
                    1e-5,
                    v[1].as_tensor(),
                    shortcut,
                )
            }
            .unwrap();
            let g = (&y * v[4].as_tensor())
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let mut out = vec![y, mean, var];
            out.extend((0..4).map(|i| g.get(&v[i]).unwrap().clone()));
            out
        };
        let (ours, reference) = (run(DType::F32, true), run(DType::F64, false));
        for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
            let err = rel_err(a, b);
            assert!(err <= 1e-5, "{shortcut:?} output {i}: rel. error {err}");
        }
    }
}

#[test]
fn batch_norm_add_relu_refuses_a_residual_of_the_wrong_shape() {
    let v = vars(&[&[2, 4, 3, 3], &[2, 4, 3, 4], &[4], &[4]], 200, DType::F32);
    let (x, r, g, b) = (
        v[0].as_tensor(),
        v[1].as_tensor(),
        v[2].as_tensor(),
        v[3].as_tensor(),
    );
    assert!(ops::batch_norm_add_relu_train(x, g, b, 1e-5, r, ops::Shortcut::Identity).is_err());
    let short = ops::Shortcut::ZeroPad {
        stride: 2,
        lo: 1,
        hi: 1,
    };
    assert!(ops::batch_norm_add_relu_train(x, g, b, 1e-5, r, short).is_err());
}

/// A basic block: `(x, w1, γ1, β1, w2, γ2, β2, upstream)` shapes and its
/// shortcut, stride and output channels.
struct BlockCase {
    x: [usize; 4],
    stride: usize,
    /// conv1's outputs (a structurally pruned block has fewer than `out_c`).
    mid_c: usize,
    out_c: usize,
    shortcut: ops::Shortcut,
}

impl BlockCase {
    /// The output and every gradient of `Σ upstream·block(x)`, plus the two
    /// batch norms' statistics; `how`: 0 the fused kernel, 1 kdprune's
    /// per-layer kernels, 2 candle's ops.
    fn run(&self, dtype: DType, how: u8) -> Vec<Tensor> {
        self.run_backwards(dtype, how, 1).remove(0)
    }

    /// As [`run`](Self::run), with `passes` backward passes through the same
    /// output: one result list per pass.
    fn run_backwards(&self, dtype: DType, how: u8, passes: usize) -> Vec<Vec<Tensor>> {
        let (c, m, o) = (self.x[1], self.mid_c, self.out_c);
        let (oh, ow) = (
            (self.x[2] - 1) / self.stride + 1,
            (self.x[3] - 1) / self.stride + 1,
        );
        let shapes: [&[usize]; 8] = [
            &self.x,
            &[m, c, 3, 3],
            &[m],
            &[m],
            &[o, m, 3, 3],
            &[o],
            &[o],
            &[self.x[0], o, oh, ow],
        ];
        let v = vars(&shapes, 300 + self.x.iter().sum::<usize>() as u64, dtype);
        let cfg1 = Conv2dConfig {
            padding: 1,
            stride: self.stride,
            ..Default::default()
        };
        let cfg2 = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let conv1 = ops::BlockConv {
            weight: v[1].as_tensor(),
            cfg: &cfg1,
        };
        let conv2 = ops::BlockConv {
            weight: v[4].as_tensor(),
            cfg: &cfg2,
        };
        let bn1 = ops::BlockBn {
            gamma: v[2].as_tensor(),
            beta: v[3].as_tensor(),
        };
        let bn2 = ops::BlockBn {
            gamma: v[5].as_tensor(),
            beta: v[6].as_tensor(),
        };
        let x = v[0].as_tensor();
        let out = match how {
            0 => ops::basic_block_train(x, conv1, bn1, conv2, bn2, self.shortcut, 1e-5).unwrap(),
            1 => {
                let c1 = ops::conv2d(x, conv1.weight, None, &cfg1).unwrap();
                let (h, m1, v1) =
                    ops::batch_norm_train(&c1, bn1.gamma, bn1.beta, 1e-5, true).unwrap();
                let c2 = ops::conv2d(&h, conv2.weight, None, &cfg2).unwrap();
                let (y, m2, v2) = ops::batch_norm_add_relu_train(
                    &c2,
                    bn2.gamma,
                    bn2.beta,
                    1e-5,
                    x,
                    self.shortcut,
                )
                .unwrap();
                ops::BlockOutput {
                    y,
                    bn1: (m1, v1),
                    bn2: (m2, v2),
                }
            }
            _ => ops::basic_block_train_candle(x, conv1, bn1, conv2, bn2, self.shortcut, 1e-5)
                .unwrap(),
        };
        let loss = (&out.y * v[7].as_tensor()).unwrap().sum_all().unwrap();
        (0..passes)
            .map(|_| {
                let g = loss.backward().unwrap();
                let mut all = vec![
                    out.y.clone(),
                    out.bn1.0.clone(),
                    out.bn1.1.clone(),
                    out.bn2.0.clone(),
                    out.bn2.1.clone(),
                ];
                all.extend((0..7).map(|i| g.get(&v[i]).unwrap().clone()));
                all
            })
            .collect()
    }
}

fn block_cases() -> [BlockCase; 3] {
    [
        BlockCase {
            x: [3, 4, 6, 6],
            stride: 1,
            mid_c: 4,
            out_c: 4,
            shortcut: ops::Shortcut::Identity,
        },
        BlockCase {
            x: [3, 4, 8, 8],
            stride: 2,
            mid_c: 8,
            out_c: 8,
            shortcut: ops::Shortcut::ZeroPad {
                stride: 2,
                lo: 2,
                hi: 2,
            },
        },
        // a block whose inner width was pruned
        BlockCase {
            x: [3, 4, 6, 6],
            stride: 1,
            mid_c: 3,
            out_c: 4,
            shortcut: ops::Shortcut::Identity,
        },
    ]
}

/// The fused basic block against the same block from kdprune's per-layer
/// kernels (the same arithmetic, composed by candle's autograd) and from
/// candle's ops in f64: output, statistics, and the gradients of the input
/// and the six parameters.
#[test]
fn basic_block_matches_per_layer_kernels_and_candle_in_f64() {
    for case in block_cases() {
        let fused = case.run(DType::F32, 0);
        let layers = case.run(DType::F32, 1);
        let reference = case.run(DType::F64, 2);
        for (i, ((a, b), r)) in fused.iter().zip(&layers).zip(&reference).enumerate() {
            let (e1, e2) = (rel_err(a, b), rel_err(a, r));
            assert!(
                e1 <= 1e-5,
                "{:?} output {i}: {e1} from the per-layer kernels",
                case.shortcut
            );
            assert!(
                e2 <= 1e-4,
                "{:?} output {i}: {e2} from candle in f64",
                case.shortcut
            );
        }
    }
}

/// The block op keeps its forward pass's intermediates for one backward
/// pass; a second backward pass through the same output recomputes them and
/// must give the same gradients, bit for bit.
#[test]
fn a_second_backward_pass_through_the_block_gives_the_same_bits() {
    for case in block_cases() {
        let passes = case.run_backwards(DType::F32, 0, 2);
        for (i, (a, b)) in passes[0].iter().zip(&passes[1]).enumerate() {
            let (a, b) = (common::bits(a), common::bits(b));
            assert_eq!(a, b, "{:?} output {i}", case.shortcut);
        }
    }
}

#[test]
fn basic_block_gives_the_same_bits_on_any_number_of_threads() {
    let case = &block_cases()[1];
    let run = |threads: usize| {
        on_threads(threads, || {
            case.run(DType::F32, 0)
                .iter()
                .map(common::bits)
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(run(1), run(3));
}
