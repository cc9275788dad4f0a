//! Pruning schedules: GMP, IMP, COLT rounds and weight rewinding.

use candle_core::{DType, Device, Tensor, Var};
use prune_core::schedule::{colt_round, imp_sparsities, rewind, GmpSchedule, MAX_IMP_ROUNDS};
use prune_core::{MaskSet, NamedTensors, PruneError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Values in `±[0.05, 1.05)`: random, never zero.
fn nonzero(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            let x = 0.05 + rng.random::<f32>();
            if rng.random::<bool>() {
                x
            } else {
                -x
            }
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn random_mask(rng: &mut ChaCha8Rng, shape: &[usize], keep: f64) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| f32::from(u8::from(rng.random::<f64>() < keep)))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn gmp_follows_the_cubic_schedule_between_updates() {
    // def s(t, si, sf, t0, t1, f):
    //     if t < t0: return si
    //     if t >= t1: return sf
    //     tu = t0 + (t - t0) // f * f
    //     return sf + (si - sf) * (1 - (tu - t0) / (t1 - t0)) ** 3
    // [s(t, 0.0, 0.9, 100, 1100, 100) for t in [0, 99, 100, 150, 200, 650, 1099, 1100, 5000]]
    // -> [0.0, 0.0, 0.0, 0.0, 0.2439, 0.7875, 0.8991, 0.9, 0.9]
    let gmp = GmpSchedule::new(0.0, 0.9, 100, 1100, 100).unwrap();
    let steps = [0, 99, 100, 150, 200, 650, 1099, 1100, 5000];
    let expected = [0.0, 0.0, 0.0, 0.0, 0.2439, 0.7875, 0.8991, 0.9, 0.9];
    for (&t, &e) in steps.iter().zip(&expected) {
        let got = gmp.sparsity_at(t);
        assert!((got - e).abs() < 1e-12, "step {t}: {got} vs {e}");
    }
    assert!(gmp.is_update_step(100) && gmp.is_update_step(600) && gmp.is_update_step(1100));
    assert!(!gmp.is_update_step(99) && !gmp.is_update_step(150) && !gmp.is_update_step(1200));

    // End step not on the frequency grid: updates at 0, 100, 200 and 250.
    // [s(t, 0.2, 0.8, 0, 250, 100) for t in [0, 99, 100, 199, 200, 249, 250, 300]]
    // -> [0.2, 0.2, 0.6704, 0.6704, 0.7952, 0.7952, 0.8, 0.8]
    let gmp = GmpSchedule::new(0.2, 0.8, 0, 250, 100).unwrap();
    let steps = [0, 99, 100, 199, 200, 249, 250, 300];
    let expected = [0.2, 0.2, 0.6704, 0.6704, 0.7952, 0.7952, 0.8, 0.8];
    for (&t, &e) in steps.iter().zip(&expected) {
        let got = gmp.sparsity_at(t);
        assert!((got - e).abs() < 1e-12, "step {t}: {got} vs {e}");
    }
    let updates: Vec<u64> = (0..400).filter(|&t| gmp.is_update_step(t)).collect();
    assert_eq!(updates, vec![0, 100, 200, 250]);
    // Non-decreasing over the whole run.
    let s: Vec<f64> = (0..400).map(|t| gmp.sparsity_at(t)).collect();
    assert!(s.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn gmp_rejects_bad_values() {
    for (i, f) in [
        (-0.1, 0.5),
        (0.0, 1.0),
        (f64::NAN, 0.5),
        (0.0, f64::INFINITY),
    ] {
        assert!(
            matches!(
                GmpSchedule::new(i, f, 0, 10, 1),
                Err(PruneError::InvalidSparsity(_))
            ),
            "{i} {f}"
        );
    }
    assert!(matches!(
        GmpSchedule::new(0.5, 0.4, 0, 10, 1),
        Err(PruneError::DecreasingSparsity { .. })
    ));
    assert!(matches!(
        GmpSchedule::new(0.0, 0.5, 10, 9, 1),
        Err(PruneError::InvalidStepRange { begin: 10, end: 9 })
    ));
    assert!(matches!(
        GmpSchedule::new(0.0, 0.5, 0, 10, 0),
        Err(PruneError::ZeroFrequency)
    ));
    // Configs carry the fields; validate() checks deserialised ones.
    let gmp: GmpSchedule = serde_json::from_str(
        r#"{"initial": 0.0, "final": 0.8, "begin_step": 0, "end_step": 5, "frequency": 0}"#,
    )
    .unwrap();
    assert!(matches!(gmp.validate(), Err(PruneError::ZeroFrequency)));
    let ok = GmpSchedule::new(0.0, 0.8, 0, 0, 3).unwrap();
    assert_eq!(ok.sparsity_at(0), 0.8);
    let json = serde_json::to_string(&ok).unwrap();
    assert!(json.contains("\"final\":0.8"), "{json}");
    assert_eq!(serde_json::from_str::<GmpSchedule>(&json).unwrap(), ok);
}

#[test]
fn imp_sparsities_are_cumulative_and_end_on_target() {
    // [1 - 0.8**k for k in range(1, 12)]
    // -> [0.2, 0.36, 0.488, 0.5904, 0.67232, 0.737856, 0.7902848, 0.83222784,
    //     0.865782272, 0.8926258176, 0.91410065408]: 11 rounds, the last clamped to 0.9
    let s = imp_sparsities(0.2, 0.9).unwrap();
    let expected = [
        0.2,
        0.36,
        0.488,
        0.5904,
        0.67232,
        0.737856,
        0.7902848,
        0.83222784,
        0.865782272,
        0.8926258176,
    ];
    assert_eq!(s.len(), 11);
    for (got, e) in s.iter().zip(&expected) {
        assert!((got - e).abs() < 1e-12, "{got} vs {e}");
    }
    assert_eq!(*s.last().unwrap(), 0.9);
    // 1 - 0.8**2 = 0.3599999999999999 < 0.36: still two rounds, not three.
    let two = imp_sparsities(0.2, 0.36).unwrap();
    assert_eq!(two.len(), 2);
    assert!((two[0] - 0.2).abs() < 1e-12 && two[1] == 0.36, "{two:?}");
    assert_eq!(imp_sparsities(0.5, 0.3).unwrap(), vec![0.3]);
    assert!(imp_sparsities(0.2, 0.0).unwrap().is_empty());
    for p in [0.0, 1.0, -0.1, f64::NAN] {
        assert!(
            matches!(imp_sparsities(p, 0.5), Err(PruneError::InvalidRate(_))),
            "{p}"
        );
    }
    assert!(matches!(
        imp_sparsities(0.2, 1.0),
        Err(PruneError::InvalidSparsity(_))
    ));
    match imp_sparsities(1e-9, 0.5) {
        Err(PruneError::InvalidRounds { rounds, max }) => {
            assert_eq!(max, MAX_IMP_ROUNDS);
            assert!(rounds > MAX_IMP_ROUNDS);
        }
        other => panic!("expected InvalidRounds, got {other:?}"),
    }
}

/// Reference COLT step for one copy: keep the current mask's zeros, then prune
/// the smallest |w| among kept weights (ties by name, index) up to round(s·n).
fn reference_copy_mask(copy: &NamedTensors, current: &MaskSet, s: f64) -> Vec<Vec<f32>> {
    let mut keep: Vec<Vec<f32>> = copy.keys().map(|n| flat(current.get(n).unwrap())).collect();
    let n: usize = keep.iter().map(Vec::len).sum();
    let already = keep.iter().flatten().filter(|&&m| m == 0.0).count();
    let k = ((s * n as f64).round() as usize).max(already);
    let mut order: Vec<(f32, usize, usize)> = copy
        .values()
        .enumerate()
        .flat_map(|(t, w)| {
            flat(w)
                .into_iter()
                .enumerate()
                .map(move |(i, x)| (x.abs(), t, i))
        })
        .filter(|&(_, t, i)| keep[t][i] == 1.0)
        .collect();
    order.sort_by(|a, b| a.partial_cmp(b).unwrap());
    for &(_, t, i) in &order[..k - already] {
        keep[t][i] = 0.0;
    }
    keep
}

#[test]
fn colt_round_is_the_intersection_of_per_copy_magnitude_masks() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let shapes: [(&str, &[usize]); 2] = [("conv.weight", &[4, 2, 3, 3]), ("fc.weight", &[5, 8])];
    let copies: Vec<NamedTensors> = (0..3)
        .map(|_| {
            shapes
                .iter()
                .map(|(n, s)| (n.to_string(), nonzero(&mut rng, s)))
                .collect()
        })
        .collect();
    let mut current = MaskSet::new();
    for (n, s) in shapes {
        current.insert(n, random_mask(&mut rng, s, 0.8)).unwrap();
    }
    let n = current.total_count();
    let s = 0.5;
    let colt = colt_round(&copies, &current, s).unwrap();

    let refs: Vec<Vec<Vec<f32>>> = copies
        .iter()
        .map(|c| reference_copy_mask(c, &current, s))
        .collect();
    for (t, (name, _)) in shapes.iter().enumerate() {
        let got = flat(colt.get(name).unwrap());
        let cur = flat(current.get(name).unwrap());
        for i in 0..got.len() {
            let all_keep = refs.iter().all(|r| r[t][i] == 1.0);
            assert_eq!(got[i], f32::from(u8::from(all_keep)), "{name}[{i}]");
            // Never regrows.
            if cur[i] == 0.0 {
                assert_eq!(got[i], 0.0);
            }
        }
    }
    // Each copy prunes exactly round(s·n) = 56 of 112; the overlap prunes more.
    assert_eq!(n, 112);
    assert!(current.pruned_count().unwrap() < 56);
    for r in &refs {
        assert_eq!(r.iter().flatten().filter(|&&m| m == 0.0).count(), 56);
    }
    let pruned = colt.pruned_count().unwrap();
    assert!(pruned > 56 && pruned <= n, "{pruned}");

    // One copy: exactly the global magnitude selection within the mask.
    let single = colt_round(&copies[..1], &current, s).unwrap();
    assert_eq!(single.pruned_count().unwrap(), 56);

    let mut missing = copies[1].clone();
    missing.remove("fc.weight");
    assert!(matches!(
        colt_round(&[copies[0].clone(), missing], &current, s),
        Err(PruneError::MissingTensor(_))
    ));
    assert!(matches!(
        colt_round(&[], &current, s),
        Err(PruneError::NoPrunableParameters)
    ));
}

#[test]
fn rewinding_sets_stored_values_under_the_mask_exactly() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let trained_w = nonzero(&mut rng, &[6, 7]);
    let trained_b = nonzero(&mut rng, &[6]);
    let stored: NamedTensors = [
        ("fc.weight".to_string(), nonzero(&mut rng, &[6, 7])),
        ("fc.bias".to_string(), nonzero(&mut rng, &[6])),
    ]
    .into_iter()
    .collect();
    let mut mask = MaskSet::new();
    mask.insert("fc.weight", random_mask(&mut rng, &[6, 7], 0.5))
        .unwrap();
    let w = Var::from_tensor(&trained_w).unwrap();
    let b = Var::from_tensor(&trained_b).unwrap();
    let vars = vec![
        ("fc.weight".to_string(), w.clone()),
        ("fc.bias".to_string(), b.clone()),
    ];
    rewind(&vars, &stored, &mask).unwrap();

    let got = flat(w.as_tensor());
    let want = flat(&stored["fc.weight"]);
    let m = flat(mask.get("fc.weight").unwrap());
    let mut pruned_negative = 0;
    for i in 0..got.len() {
        if m[i] == 1.0 {
            assert_eq!(got[i].to_bits(), want[i].to_bits(), "kept [{i}]");
        } else {
            // +0.0, also where the stored weight is negative.
            assert_eq!(got[i].to_bits(), 0, "pruned [{i}]");
            pruned_negative += usize::from(want[i] < 0.0);
        }
    }
    assert!(
        pruned_negative > 0,
        "the test must cover a pruned negative weight"
    );
    let got_b: Vec<u32> = flat(b.as_tensor()).iter().map(|x| x.to_bits()).collect();
    let want_b: Vec<u32> = flat(&stored["fc.bias"])
        .iter()
        .map(|x| x.to_bits())
        .collect();
    assert_eq!(got_b, want_b);

    // A var missing from `stored`: nothing is written.
    let extra = Var::from_tensor(&nonzero(&mut rng, &[2])).unwrap();
    let before = flat(&trained_w);
    let w2 = Var::from_tensor(&trained_w).unwrap();
    let vars = vec![
        ("fc.weight".to_string(), w2.clone()),
        ("other".to_string(), extra),
    ];
    assert!(matches!(
        rewind(&vars, &stored, &mask),
        Err(PruneError::MissingTensor(name)) if name == "other"
    ));
    assert_eq!(flat(w2.as_tensor()), before);
    // A var rewound to (a view of) its own value: allowed, unchanged.
    let own: NamedTensors = [("fc.bias".to_string(), b.as_tensor().clone())]
        .into_iter()
        .collect();
    let just_b = vec![("fc.bias".to_string(), b.clone())];
    rewind(&just_b, &own, &MaskSet::new()).unwrap();
    assert_eq!(b.as_tensor().dtype(), DType::F32);
    assert_eq!(
        flat(b.as_tensor())
            .iter()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>(),
        want_b
    );
}
