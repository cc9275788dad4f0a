//! Exact-count global and per-layer selection.

use candle_core::{Device, Tensor};
use std::str::FromStr;

use prune_core::{check_sparsity, select, MaskSet, PruneError, Scope, Scores};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn flat(masks: &MaskSet, name: &str) -> Vec<f32> {
    masks
        .get(name)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

fn zeros_in(masks: &MaskSet, name: &str) -> usize {
    flat(masks, name).iter().filter(|&&v| v == 0.0).count()
}

/// Scores over three tensors of different shapes (and a rank-4 one), with
/// values drawn from `levels` distinct numbers so ties are common.
fn random_scores(seed: u64, shapes: &[(&str, Vec<usize>)], levels: u32) -> Scores {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    shapes
        .iter()
        .map(|(name, shape)| {
            let numel = shape.iter().product();
            let v: Vec<f32> = (0..numel)
                .map(|_| rng.random_range(0..levels) as f32 - 3.0)
                .collect();
            (
                name.to_string(),
                Tensor::from_vec(v, shape.as_slice(), &Device::Cpu).unwrap(),
            )
        })
        .collect()
}

/// Reference: sort (score, name index, flat index) and prune the first k.
fn reference_global(scores: &Scores, k: usize) -> Vec<Vec<f32>> {
    let values: Vec<Vec<f32>> = scores
        .values()
        .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect();
    let mut order: Vec<(f32, usize, usize)> = values
        .iter()
        .enumerate()
        .flat_map(|(t, v)| v.iter().enumerate().map(move |(i, &s)| (s, t, i)))
        .collect();
    order.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut keep: Vec<Vec<f32>> = values.iter().map(|v| vec![1.0; v.len()]).collect();
    for &(_, t, i) in &order[..k] {
        keep[t][i] = 0.0;
    }
    keep
}

#[test]
fn global_prunes_exactly_round_s_n_and_matches_sorting() {
    let shapes = [
        ("conv1.weight", vec![4, 3, 3, 3]),
        ("fc1.weight", vec![17, 5]),
        ("fc2.weight", vec![3, 1, 7]),
    ];
    let n = 108 + 85 + 21;
    for (seed, levels) in [(1, 3), (2, 50), (3, 1_000_000)] {
        let scores = random_scores(seed, &shapes, levels);
        for s in [
            0.0,
            0.001,
            0.1,
            0.25,
            0.5,
            0.5 + 1e-9,
            0.77,
            0.9,
            0.99,
            0.999,
        ] {
            let masks = select::global(&scores, s).unwrap();
            let k = (s * n as f64).round() as usize;
            assert_eq!(masks.pruned_count().unwrap(), k, "s={s} levels={levels}");
            assert_eq!(masks.total_count(), n);
            let expected = reference_global(&scores, k);
            for (t, name) in scores.keys().enumerate() {
                assert_eq!(flat(&masks, name), expected[t], "s={s} {name}");
                assert_eq!(
                    masks.get(name).unwrap().dims(),
                    scores[name].dims(),
                    "mask shape"
                );
            }
        }
    }
}

#[test]
fn global_counts_for_many_sizes() {
    for n in [1usize, 2, 3, 7, 10, 99, 1000, 4097] {
        let scores: Scores = [(
            "w".to_string(),
            Tensor::from_vec(
                (0..n).map(|i| ((i * 7919) % 13) as f32).collect::<Vec<_>>(),
                (n, 1),
                &Device::Cpu,
            )
            .unwrap(),
        )]
        .into_iter()
        .collect();
        for s in [0.0, 0.1, 0.3, 0.5, 0.8, 0.95] {
            let masks = select::global(&scores, s).unwrap();
            let k = (s * n as f64).round() as usize;
            assert_eq!(masks.pruned_count().unwrap(), k, "n={n} s={s}");
        }
    }
}

#[test]
fn sparsity_zero_keeps_everything() {
    let scores = random_scores(4, &[("a", vec![3, 4]), ("b", vec![2, 2])], 5);
    let masks = select::global(&scores, 0.0).unwrap();
    assert_eq!(masks.pruned_count().unwrap(), 0);
    assert!(flat(&masks, "a").iter().all(|&v| v == 1.0));
}

#[test]
fn all_equal_scores_prune_lowest_name_then_lowest_index() {
    // 3 tensors of equal scores, 6 + 4 + 2 = 12 weights; s = 0.5 → 6 pruned:
    // all of "a" (first by name), nothing else. s = 0.75 → 9: "a" and the
    // first 3 of "b".
    let scores: Scores = [
        (
            "b",
            Tensor::ones((2, 2), candle_core::DType::F32, &Device::Cpu),
        ),
        (
            "a",
            Tensor::ones((2, 3), candle_core::DType::F32, &Device::Cpu),
        ),
        (
            "c",
            Tensor::ones((1, 2), candle_core::DType::F32, &Device::Cpu),
        ),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_string(), t.unwrap()))
    .collect();
    let masks = select::global(&scores, 0.5).unwrap();
    assert_eq!(flat(&masks, "a"), vec![0.0; 6]);
    assert_eq!(flat(&masks, "b"), vec![1.0; 4]);
    assert_eq!(flat(&masks, "c"), vec![1.0; 2]);
    let masks = select::global(&scores, 0.75).unwrap();
    assert_eq!(flat(&masks, "a"), vec![0.0; 6]);
    assert_eq!(flat(&masks, "b"), vec![0.0, 0.0, 0.0, 1.0]);
    assert_eq!(flat(&masks, "c"), vec![1.0; 2]);
    // Same input, same output.
    let again = select::global(&scores, 0.75).unwrap();
    assert_eq!(flat(&again, "b"), flat(&masks, "b"));
}

#[test]
fn global_golden_against_numpy_stable_argsort() {
    let t = |v: &[f32], shape: (usize, usize)| Tensor::from_slice(v, shape, &Device::Cpu).unwrap();
    let scores: Scores = [
        ("a".to_string(), t(&[0.3, 0.1, 0.3, 0.2, 0.3, 0.9], (2, 3))),
        ("b".to_string(), t(&[0.1, 0.3, 0.05, 0.3], (2, 2))),
        ("c".to_string(), t(&[0.3, 0.7, 0.1, 0.3], (2, 2))),
    ]
    .into_iter()
    .collect();
    // import numpy as np
    // a = np.array([[0.3, 0.1, 0.3], [0.2, 0.3, 0.9]], dtype=np.float32)
    // b = np.array([[0.1, 0.3], [0.05, 0.3]], dtype=np.float32)
    // c = np.array([[0.3, 0.7], [0.1, 0.3]], dtype=np.float32)
    // allv = np.concatenate([a.ravel(), b.ravel(), c.ravel()]); n = allv.size
    // for s in [0.25, 0.5, 0.75]:
    //     k = int(np.floor(s*n + 0.5))
    //     keep = np.ones(n, dtype=np.float32); keep[np.argsort(allv, kind='stable')[:k]] = 0
    //     print(s, k, keep[:6].tolist(), keep[6:10].tolist(), keep[10:].tolist())
    // 0.25 4 [1, 0, 1, 1, 1, 1] [0, 1, 0, 1] [1, 1, 0, 1]
    // 0.5 7 [0, 0, 0, 0, 1, 1] [0, 1, 0, 1] [1, 1, 0, 1]
    // 0.75 11 [0, 0, 0, 0, 0, 1] [0, 0, 0, 0] [0, 1, 0, 1]
    let expected = [
        (
            0.25,
            [1., 0., 1., 1., 1., 1.],
            [0., 1., 0., 1.],
            [1., 1., 0., 1.],
        ),
        (
            0.5,
            [0., 0., 0., 0., 1., 1.],
            [0., 1., 0., 1.],
            [1., 1., 0., 1.],
        ),
        (
            0.75,
            [0., 0., 0., 0., 0., 1.],
            [0., 0., 0., 0.],
            [0., 1., 0., 1.],
        ),
    ];
    for (s, a, b, c) in expected {
        let masks = select::global(&scores, s).unwrap();
        assert_eq!(flat(&masks, "a"), a.to_vec(), "s={s}");
        assert_eq!(flat(&masks, "b"), b.to_vec(), "s={s}");
        assert_eq!(flat(&masks, "c"), c.to_vec(), "s={s}");
    }
}

#[test]
fn negative_zero_and_infinities_are_ordered() {
    let scores: Scores = [(
        "w".to_string(),
        Tensor::new(
            &[f32::INFINITY, 0.0, -0.0, f32::NEG_INFINITY, 1.0],
            &Device::Cpu,
        )
        .unwrap(),
    )]
    .into_iter()
    .collect();
    // k = round(0.6·5) = 3: -inf, then the two zeros (equal, index order).
    let masks = select::global(&scores, 0.6).unwrap();
    assert_eq!(flat(&masks, "w"), vec![1.0, 0.0, 0.0, 0.0, 1.0]);
    // k = round(0.4·5) = 2: -inf and the first zero by index (0.0 at 1).
    let masks = select::global(&scores, 0.4).unwrap();
    assert_eq!(flat(&masks, "w"), vec![1.0, 0.0, 1.0, 0.0, 1.0]);
}

#[test]
fn per_layer_prunes_exactly_round_s_n_in_each_tensor() {
    let shapes = [
        ("a.weight", vec![10, 10]),
        ("b.weight", vec![3, 7]),
        ("c.weight", vec![2, 2, 2, 2]),
        ("d.weight", vec![1, 1]),
    ];
    for levels in [1, 4, 1000] {
        let scores = random_scores(9, &shapes, levels);
        for s in [0.0, 0.2, 0.5, 0.7, 0.9] {
            let masks = select::per_layer(&scores, s).unwrap();
            for (name, t) in &scores {
                let n = t.elem_count();
                assert_eq!(
                    zeros_in(&masks, name),
                    (s * n as f64).round() as usize,
                    "{name} s={s}"
                );
                // Within one tensor, the rule is the global rule on that tensor alone.
                let single: Scores = [(name.clone(), t.clone())].into_iter().collect();
                let alone = select::global(&single, s).unwrap();
                assert_eq!(flat(&masks, name), flat(&alone, name));
            }
        }
    }
}

#[test]
fn invalid_sparsity_is_rejected() {
    let scores = random_scores(5, &[("w", vec![2, 2])], 3);
    for s in [1.0, 1.2, -0.1, f64::NAN, f64::INFINITY] {
        assert!(
            matches!(check_sparsity(s), Err(PruneError::InvalidSparsity(_))),
            "{s}"
        );
        assert!(matches!(
            select::global(&scores, s),
            Err(PruneError::InvalidSparsity(_))
        ));
        assert!(matches!(
            select::per_layer(&scores, s),
            Err(PruneError::InvalidSparsity(_))
        ));
    }
    assert!(check_sparsity(0.0).is_ok());
    assert!(check_sparsity(0.999).is_ok());
    assert_eq!(
        PruneError::InvalidSparsity(1.2).to_string(),
        "sparsity must be in [0, 1), got 1.2"
    );
}

#[test]
fn nan_scores_and_empty_sets_are_errors() {
    let scores: Scores = [
        (
            "ok".to_string(),
            Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap(),
        ),
        (
            "bad".to_string(),
            Tensor::new(&[1f32, f32::NAN], &Device::Cpu).unwrap(),
        ),
    ]
    .into_iter()
    .collect();
    match select::global(&scores, 0.5) {
        Err(PruneError::NonFinite { name }) => assert_eq!(name, "bad"),
        other => panic!("expected NonFinite, got {other:?}"),
    }
    assert!(matches!(
        select::per_layer(&scores, 0.5),
        Err(PruneError::NonFinite { .. })
    ));
    assert!(matches!(
        select::global(&Scores::new(), 0.5),
        Err(PruneError::NoPrunableParameters)
    ));
}

#[test]
fn global_within_keeps_pruned_weights_pruned_and_selects_among_the_rest() {
    let shapes = [("conv.weight", vec![3, 2, 2, 2]), ("fc.weight", vec![9, 4])];
    let n = 24 + 36;
    // Few levels: ties between kept weights and with the forced ones.
    let scores = random_scores(8, &shapes, 4);
    let mut rng = ChaCha8Rng::seed_from_u64(80);
    let mut current = MaskSet::new();
    for (name, shape) in &shapes {
        let numel: usize = shape.iter().product();
        let v: Vec<f32> = (0..numel)
            .map(|_| f32::from(u8::from(rng.random::<f64>() < 0.75)))
            .collect();
        current
            .insert(
                *name,
                Tensor::from_vec(v, shape.as_slice(), &Device::Cpu).unwrap(),
            )
            .unwrap();
    }
    let already = current.pruned_count().unwrap();
    assert!(already > 0 && already < 30, "{already}");
    for s in [0.5, 0.8] {
        let k = (s * n as f64).round() as usize;
        let masks = select::global_within(&scores, &current, s).unwrap();
        assert_eq!(masks.pruned_count().unwrap(), k);
        // Reference: already pruned first, then (score, name, index) among the rest.
        let mut order: Vec<(bool, f32, usize, usize)> = Vec::new();
        for (t, (name, sc)) in scores.iter().enumerate() {
            let sc = sc.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let cur = flat(&current, name);
            for (i, (&v, &m)) in sc.iter().zip(&cur).enumerate() {
                order.push((m == 1.0, v, t, i));
            }
        }
        order.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let mut want: Vec<Vec<f32>> = scores.values().map(|t| vec![1.0; t.elem_count()]).collect();
        for &(_, _, t, i) in &order[..k] {
            want[t][i] = 0.0;
        }
        for (t, name) in scores.keys().enumerate() {
            assert_eq!(flat(&masks, name), want[t], "{name} at s = {s}");
        }
    }
    // A target below the current sparsity never regrows.
    let same = select::global_within(&scores, &current, 0.0).unwrap();
    for name in current.names() {
        assert_eq!(flat(&same, name), flat(&current, name));
    }
    // An empty current mask is plain `global`.
    let plain = select::global_within(&scores, &MaskSet::new(), 0.4).unwrap();
    let global = select::global(&scores, 0.4).unwrap();
    for name in scores.keys() {
        assert_eq!(flat(&plain, name), flat(&global, name));
    }
    let mut stray = MaskSet::new();
    stray
        .insert("other", Tensor::new(&[1f32, 0.0], &Device::Cpu).unwrap())
        .unwrap();
    assert!(matches!(
        select::global_within(&scores, &stray, 0.5),
        Err(PruneError::MissingTensor(name)) if name == "other"
    ));
}

#[test]
fn scope_names_the_two_selections() {
    let scores = random_scores(12, &[("a", vec![5, 4]), ("b", vec![7])], 1_000_000);
    assert_eq!(Scope::default(), Scope::Global);
    for scope in Scope::ALL {
        assert_eq!(Scope::from_str(scope.name()).unwrap(), scope);
        let json = serde_json::to_string(&scope).unwrap();
        assert_eq!(json, format!("\"{scope}\""));
        let masks = scope.select(&scores, 0.5).unwrap();
        let direct = match scope {
            Scope::Global => select::global(&scores, 0.5).unwrap(),
            Scope::PerLayer => select::per_layer(&scores, 0.5).unwrap(),
        };
        for name in ["a", "b"] {
            assert_eq!(flat(&masks, name), flat(&direct, name));
        }
    }
    // Per layer: round(0.5·20) = 10 and round(0.5·7) = 4, whatever the scores.
    let per_layer = Scope::PerLayer.select(&scores, 0.5).unwrap();
    assert_eq!(
        (zeros_in(&per_layer, "a"), zeros_in(&per_layer, "b")),
        (10, 4)
    );
    assert!(matches!(
        Scope::from_str("layer"),
        Err(PruneError::UnknownScope(_))
    ));
}
