//! DARTS: sizes against a PyTorch re-implementation, the discretisation,
//! and the search network's gradients.

mod common;

use candle_core::{Device, Tensor};
use kd_core::Network;
use kdprune_models::darts::{DartsConfig, DartsNetwork, Genotype, EDGES, PRIMITIVES};
use kdprune_models::Kernels;

use common::{assert_gradients, max_abs, max_abs_diff, random_tensor};

fn config(input: (usize, usize, usize), channels: usize, layers: usize) -> DartsConfig {
    DartsConfig {
        input,
        classes: 10,
        channels,
        layers,
    }
}

fn edges(list: &[(&str, usize)]) -> Vec<(String, usize)> {
    list.iter().map(|(o, f)| (o.to_string(), *f)).collect()
}

/// DARTS's published cell (DARTS_V2, Liu et al. 2019).
fn darts_v2() -> Genotype {
    Genotype {
        normal: edges(&[
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1),
            ("skip_connect", 0),
            ("skip_connect", 0),
            ("dil_conv_3x3", 2),
        ]),
        reduce: edges(&[
            ("max_pool_3x3", 0),
            ("max_pool_3x3", 1),
            ("skip_connect", 2),
            ("max_pool_3x3", 1),
            ("max_pool_3x3", 0),
            ("skip_connect", 2),
            ("skip_connect", 2),
            ("max_pool_3x3", 1),
        ]),
    }
}

/// Parameters and MACs of a PyTorch re-implementation of DARTS's search and
/// evaluation networks (DARTS's operations; affine batch norms everywhere,
/// as here; factorised reduce as `cat(conv1(relu x), conv2(relu x[:, :, 1:, 1:]))`;
/// MACs by forward hooks on every Conv2d and Linear over a zero input of
/// 3×32×32 or 1×28×28; `scripts/python/darts_reference.py`):
///
/// ```text
/// Net(3, 36, 10, 20, DARTS_V2)   # 3349342 parameters (the paper's 3.3 M), 528359040 MACs
/// Net(1, 16, 10, 8)              # search network, 1×28×28: 2004250, 229206528
/// Net(1, 8, 10, 5)               # search network, 1×28×28: 418258, 46846848
/// ```
#[test]
fn sizes_match_pytorch() {
    let v2 = DartsNetwork::count(&config((3, 32, 32), 36, 20), Some(&darts_v2())).unwrap();
    assert_eq!(v2, (3_349_342, 528_359_040));
    for (c, layers, params, macs) in [
        (16, 8, 2_004_250, 229_206_528u64),
        (8, 5, 418_258, 46_846_848),
    ] {
        let counted = DartsNetwork::count(&config((1, 28, 28), c, layers), None).unwrap();
        assert_eq!(counted, (params, macs), "C={c} L={layers}");
    }
    // a built network counts the same, and its architecture parameters are
    // two EDGES×8 variables
    let dev = Device::Cpu;
    let net = DartsNetwork::search(config((1, 28, 28), 8, 5), 0, &dev).unwrap();
    assert_eq!((net.num_params(), net.macs()), (418_258, 46_846_848));
    assert_eq!(net.alpha_vars().len(), 2);
    assert!(net.alpha_vars().iter().all(|(_, v)| v.dims() == [EDGES, 8]));
}

/// The discretisation on hand-made architecture parameters: per node the
/// two edges whose best operation other than `none` is strongest.
#[test]
fn discretisation_keeps_the_two_strongest_edges_per_node() {
    let dev = Device::Cpu;
    // node 0: edges 0, 1; node 1: 2, 3, 4; node 2: 5..8; node 3: 9..13
    let mut a = vec![0f32; EDGES * 8];
    let set = |a: &mut Vec<f32>, edge: usize, op: usize, v: f32| a[edge * 8 + op] = v;
    set(&mut a, 0, 2, 3.0); // sep_conv_3x3 from state 0
    set(&mut a, 1, 7, 2.0); // max_pool from state 1
    set(&mut a, 2, 0, 9.0); // `none` dominates edge 2: ignored...
    set(&mut a, 2, 4, 0.5); //   ...its best real op is weak
    set(&mut a, 3, 5, 2.0); // dil_conv_5x5 from state 1
    set(&mut a, 4, 1, 2.5); // skip_connect from node 0 (state 2)
    set(&mut a, 7, 6, 4.0); // avg_pool from state 2
    set(&mut a, 8, 3, 4.0); // sep_conv_5x5 from state 3
    set(&mut a, 13, 2, 1.0); // node 3: state 4, then the tie-break (earliest)
    let alpha = Tensor::from_vec(a, (EDGES, 8), &dev).unwrap();
    let g = Genotype::from_alphas(&alpha, &alpha).unwrap();
    let want = edges(&[
        ("sep_conv_3x3", 0),
        ("max_pool_3x3", 1),
        ("dil_conv_5x5", 1),
        ("skip_connect", 2),
        ("avg_pool_3x3", 2),
        ("sep_conv_5x5", 3),
        ("skip_connect", 0), // all-zero rows: the first op after `none`, the first edge
        ("sep_conv_3x3", 4),
    ]);
    assert_eq!(g.normal, want);
    assert_eq!(g.reduce, want);
    assert!(g
        .to_string()
        .starts_with("normal: sep_conv_3x3<-0 max_pool_3x3<-1"));
    assert!(Genotype::from_alphas(&alpha.narrow(0, 0, 13).unwrap(), &alpha).is_err());
}

#[test]
fn the_search_network_trains_weights_and_architecture() {
    let dev = Device::Cpu;
    let net = DartsNetwork::search(config((1, 8, 8), 4, 3), 1, &dev).unwrap();
    let xs = random_tensor(&[2, 1, 8, 8], 2, &dev);
    let out = net.forward_t(&xs, true).unwrap();
    assert_eq!(out.logits.dims(), &[2, 10]);
    let names: Vec<&str> = out.features.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["stem", "cell0", "cell1", "cell2", "pool"]);
    // reductions at cells 1 and 2: 8 → 4 → 2, channels 4·C each time doubled
    assert_eq!(out.features[1].1.dims(), &[2, 16, 8, 8]);
    assert_eq!(out.features[2].1.dims(), &[2, 32, 4, 4]);
    assert_eq!(out.features[3].1.dims(), &[2, 64, 2, 2]);
    let loss = out.logits.sqr().unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    for (name, var) in net.alpha_vars() {
        let g = grads.get(&var).unwrap();
        // every op but `none` moves the loss; `none`'s column gets the
        // softmax's share only
        assert!(max_abs(g) > 0.0, "{name}");
    }
    let weights = net.named_vars();
    let reached = weights
        .iter()
        .filter(|(_, v)| grads.get(v).is_some())
        .count();
    assert_eq!(
        reached,
        weights.len(),
        "every weight is on a path to the loss"
    );
    // alphas are not weights
    assert!(weights.iter().all(|(n, _)| !n.starts_with("alpha")));
    // the state carries weights, running statistics and alphas
    let state = net.state().unwrap();
    assert!(state.contains_key("alpha_normal"));
    assert!(state.keys().any(|k| k.ends_with("running_var")));
    let again = DartsNetwork::search(config((1, 8, 8), 4, 3), 9, &dev).unwrap();
    again.load_state(&state).unwrap();
    let a = net.forward_t(&xs, false).unwrap().logits;
    let b = again.forward_t(&xs, false).unwrap().logits;
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    assert_eq!(
        net.derive_genotype().unwrap(),
        again.derive_genotype().unwrap()
    );
}

#[test]
fn kdprune_and_candle_kernels_agree() {
    let dev = Device::Cpu;
    let xs = random_tensor(&[2, 1, 8, 8], 3, &dev);
    for train in [false, true] {
        let run = |k: Kernels| {
            let net = DartsNetwork::search(config((1, 8, 8), 4, 3), 5, &dev)
                .unwrap()
                .with_kernels(k);
            net.forward_t(&xs, train).unwrap().logits
        };
        let (a, b) = (run(Kernels::Auto), run(Kernels::Candle));
        assert!(
            max_abs_diff(&a, &b) <= 1e-4 * max_abs(&b),
            "train={train}: {} of {}",
            max_abs_diff(&a, &b),
            max_abs(&b)
        );
    }
}

#[test]
fn bad_genotypes_and_configs_are_refused() {
    let dev = Device::Cpu;
    let cfg = config((1, 8, 8), 4, 3);
    let mut g = darts_v2();
    g.normal[0].0 = "none".into();
    assert!(DartsNetwork::discrete(cfg.clone(), g, 0, &dev).is_err());
    let mut g = darts_v2();
    g.normal[1].1 = 0; // node 0 takes state 0 twice
    assert!(DartsNetwork::discrete(cfg.clone(), g, 0, &dev).is_err());
    let mut g = darts_v2();
    g.reduce[2].1 = 4; // node 1 reads a later state
    assert!(DartsNetwork::discrete(cfg.clone(), g, 0, &dev).is_err());
    let mut g = darts_v2();
    g.normal.pop();
    assert!(DartsNetwork::discrete(cfg.clone(), g, 0, &dev).is_err());
    assert!(DartsNetwork::search(config((1, 8, 8), 4, 2), 0, &dev).is_err());
    assert!(DartsNetwork::search(config((1, 8, 8), 3, 3), 0, &dev).is_err());
    assert!(DartsNetwork::search(config((1, 3, 8), 4, 3), 0, &dev).is_err());
    assert_eq!(PRIMITIVES.len(), 8);
}

/// The search network (C = 4, 3 cells, 1×8×8, seed 4, both architecture
/// parameters set to `random_tensor(&[14, 8], 20)` and `…21`) in training
/// mode against the PyTorch re-implementation above
/// (`scripts/python/darts_reference.py STATE`) loaded with the same
/// tensors (names mapped onto its modules), each node
/// `Σ softmax(α)[edge][op] · op(state)`, then
/// `F.cross_entropy(logits, ys).backward()` on `random_tensor(&[4, 1, 8, 8], 11)`
/// and `random_labels(4, 10, 12)`. Each entry: the first three values of a
/// gradient and its largest magnitude.
#[test]
fn search_training_step_matches_pytorch() {
    use std::collections::BTreeMap;
    let dev = Device::Cpu;
    let net = DartsNetwork::search(config((1, 8, 8), 4, 3), 4, &dev).unwrap();
    for (i, (_, v)) in net.alpha_vars().into_iter().enumerate() {
        v.set(&random_tensor(&[14, 8], 20 + i as u64, &dev))
            .unwrap();
    }
    let xs = random_tensor(&[4, 1, 8, 8], 11, &dev);
    let ys = common::random_labels(4, 10, 12, &dev);
    let logits = net.forward_t(&xs, true).unwrap().logits;
    let loss = candle_nn::loss::cross_entropy(&logits, &ys).unwrap();
    let value = loss.to_scalar::<f32>().unwrap();
    assert!((value - 2.726_835_7).abs() < 1e-5, "loss {value}");
    let grads = loss.backward().unwrap();
    let mut vars: BTreeMap<String, candle_core::Var> = net.named_vars().into_iter().collect();
    vars.extend(net.alpha_vars());
    let golden: [(&str, [f32; 3], f32); 8] = [
        (
            "stem.weight",
            [0.666_514_3, -0.723_481_4, -0.067_041_35],
            0.998_686_2,
        ),
        (
            "cells.1.edges.0.skip_connect.reduce.conv2.weight",
            [0.038_453_78, -0.043_480_16, -0.040_544_465],
            0.085_502_98,
        ),
        (
            "cells.2.edges.3.dil_conv_5x5.0.dw.weight",
            [0.0, 0.0, 0.0],
            0.017_698_765,
        ),
        (
            "cells.0.edges.9.sep_conv_5x5.1.pw.weight",
            [0.010_643_873, -0.013_983_919, 0.006_023_651],
            0.023_382_721,
        ),
        (
            "cells.2.pre0.conv1.weight",
            [-0.011_362_911, -0.020_434_685, 0.022_461_86],
            0.137_097_34,
        ),
        (
            "cells.2.edges.1.avg_pool_3x3.bn.weight",
            [0.002_619_419_7, 0.008_240_058, 0.004_531_339_3],
            0.026_272_051,
        ),
        (
            "alpha_normal",
            [0.006_365_068, -0.049_215_55, 0.032_519_16],
            0.069_293_305,
        ),
        (
            "alpha_reduce",
            [-0.006_913_861, -0.064_981_01, 0.003_448_499],
            0.085_475_89,
        ),
    ];
    assert_gradients(&grads, &vars, &golden, 1e-3);
}
