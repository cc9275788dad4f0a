//! Magnitude, random, LAMP and gradient-saliency scores, and the names of
//! criteria and gradient sources.

use std::str::FromStr;

use candle_core::{Device, Tensor, Var};
use prune_core::importance::{self, GradientSource, SaliencyAccumulator, TeacherGuided};
use prune_core::{select, NamedTensors, PruneError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn named(entries: &[(&str, Tensor)]) -> NamedTensors {
    entries
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect()
}

fn vec2(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2::<f32>().unwrap()
}

fn round4(v: Vec<f32>) -> Vec<f32> {
    v.into_iter().map(|x| (x * 1e4).round() / 1e4).collect()
}

#[test]
fn saliency_sums_abs_w_times_g_over_two_batches() {
    let dev = Device::Cpu;
    let w = Tensor::new(&[[1.0f32, -2.0, 0.5], [3.0, 0.25, -4.0]], &dev).unwrap();
    let v = Tensor::new(&[0.5f32, -1.5, 2.0, 0.0], &dev).unwrap();
    let weights = named(&[("fc.weight", w), ("vec", v)]);
    let g1 = named(&[
        (
            "fc.weight",
            Tensor::new(&[[0.1f32, 0.2, 0.0], [-0.3, 4.0, 0.5]], &dev).unwrap(),
        ),
        ("vec", Tensor::new(&[2.0f32, 2.0, -1.0, 7.0], &dev).unwrap()),
        // Extra gradients (e.g. of biases) are ignored.
        ("fc.bias", Tensor::new(&[1.0f32, 2.0], &dev).unwrap()),
    ]);
    let g2 = named(&[
        (
            "fc.weight",
            Tensor::new(&[[-0.5f32, 1.0, 0.0], [0.0, -2.0, 0.25]], &dev).unwrap(),
        ),
        ("vec", Tensor::new(&[1.0f32, -1.0, 3.0, 0.0], &dev).unwrap()),
    ]);
    let mut acc = SaliencyAccumulator::new();
    acc.add_batch(&weights, &g1).unwrap();
    acc.add_batch(&weights, &g2).unwrap();
    assert_eq!(acc.batches(), 2);
    let scores = acc.finish().unwrap();
    assert_eq!(scores.len(), 2);
    // import numpy as np
    // w = np.array([[1.0, -2.0, 0.5], [3.0, 0.25, -4.0]], dtype=np.float32)
    // g1 = np.array([[0.1, 0.2, 0.0], [-0.3, 4.0, 0.5]], dtype=np.float32)
    // g2 = np.array([[-0.5, 1.0, 0.0], [0.0, -2.0, 0.25]], dtype=np.float32)
    // print((np.abs(w*g1)+np.abs(w*g2)).tolist())
    // -> [[0.6, 2.4, 0.0], [0.9, 1.5, 3.0]]
    let got = vec2(&scores["fc.weight"]);
    assert_eq!(round4(got[0].clone()), vec![0.6, 2.4, 0.0]);
    assert_eq!(round4(got[1].clone()), vec![0.9, 1.5, 3.0]);
    // v = np.array([0.5, -1.5, 2.0, 0.0], dtype=np.float32)
    // h1 = np.array([2.0, 2.0, -1.0, 7.0]); h2 = np.array([1.0, -1.0, 3.0, 0.0])
    // print((np.abs(v*h1)+np.abs(v*h2)).tolist())  -> [1.5, 4.5, 8.0, 0.0]
    assert_eq!(
        round4(scores["vec"].to_vec1::<f32>().unwrap()),
        vec![1.5, 4.5, 8.0, 0.0]
    );
}

#[test]
fn zero_gradient_gives_zero_score() {
    let dev = Device::Cpu;
    let weights = named(&[(
        "w",
        Tensor::new(&[[5.0f32, -7.0], [1.0, 2.0]], &dev).unwrap(),
    )]);
    let grads = named(&[(
        "w",
        Tensor::new(&[[0.0f32, 1.0], [0.0, 0.0]], &dev).unwrap(),
    )]);
    let mut acc = SaliencyAccumulator::new();
    acc.add_batch(&weights, &grads).unwrap();
    let scores = acc.finish().unwrap();
    assert_eq!(vec2(&scores["w"]), vec![vec![0.0, 7.0], vec![0.0, 0.0]]);
}

#[test]
fn saliency_errors_leave_the_sums_unchanged() {
    let dev = Device::Cpu;
    let weights = named(&[
        ("a", Tensor::new(&[1.0f32, 2.0], &dev).unwrap()),
        ("b", Tensor::new(&[3.0f32], &dev).unwrap()),
    ]);
    let good = named(&[
        ("a", Tensor::new(&[1.0f32, 1.0], &dev).unwrap()),
        ("b", Tensor::new(&[1.0f32], &dev).unwrap()),
    ]);
    let mut acc = SaliencyAccumulator::new();
    assert!(matches!(acc.clone().finish(), Err(PruneError::NoBatches)));
    acc.add_batch(&weights, &good).unwrap();

    let missing = named(&[("a", Tensor::new(&[1.0f32, 1.0], &dev).unwrap())]);
    match acc.add_batch(&weights, &missing) {
        Err(PruneError::MissingTensor(name)) => assert_eq!(name, "b"),
        other => panic!("expected MissingTensor, got {other:?}"),
    }
    let wrong_shape = named(&[
        ("a", Tensor::new(&[1.0f32, 1.0, 1.0], &dev).unwrap()),
        ("b", Tensor::new(&[1.0f32], &dev).unwrap()),
    ]);
    assert!(matches!(
        acc.add_batch(&weights, &wrong_shape),
        Err(PruneError::ShapeMismatch { .. })
    ));
    for bad in [f32::NAN, f32::INFINITY] {
        let non_finite = named(&[
            ("a", Tensor::new(&[1.0f32, bad], &dev).unwrap()),
            ("b", Tensor::new(&[1.0f32], &dev).unwrap()),
        ]);
        match acc.add_batch(&weights, &non_finite) {
            Err(PruneError::NonFinite { name }) => assert_eq!(name, "a"),
            other => panic!("expected NonFinite, got {other:?}"),
        }
    }
    // A later batch must cover the same names as the first.
    let only_a = named(&[("a", Tensor::new(&[1.0f32, 2.0], &dev).unwrap())]);
    assert!(matches!(
        acc.add_batch(&only_a, &good),
        Err(PruneError::MissingTensor(_))
    ));
    assert_eq!(acc.batches(), 1);
    let scores = acc.finish().unwrap();
    assert_eq!(scores["a"].to_vec1::<f32>().unwrap(), vec![1.0, 2.0]);
    assert_eq!(scores["b"].to_vec1::<f32>().unwrap(), vec![3.0]);
}

#[test]
fn magnitude_is_abs_in_f32() {
    let dev = Device::Cpu;
    let weights = named(&[(
        "w",
        Tensor::new(&[[-1.5f64, 0.0], [2.0, -0.25]], &dev).unwrap(),
    )]);
    let scores = importance::magnitude(&weights).unwrap();
    assert_eq!(scores["w"].dtype(), candle_core::DType::F32);
    assert_eq!(vec2(&scores["w"]), vec![vec![1.5, 0.0], vec![2.0, 0.25]]);
}

#[test]
fn random_scores_are_reproducible_by_seed() {
    let dev = Device::Cpu;
    let weights = named(&[
        (
            "a",
            Tensor::zeros((3, 4), candle_core::DType::F32, &dev).unwrap(),
        ),
        (
            "b",
            Tensor::zeros((5,), candle_core::DType::F32, &dev).unwrap(),
        ),
    ]);
    let s1 = importance::random(&weights, 42).unwrap();
    let s2 = importance::random(&weights, 42).unwrap();
    let s3 = importance::random(&weights, 43).unwrap();
    let flat =
        |s: &prune_core::Scores, n: &str| s[n].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(flat(&s1, "a"), flat(&s2, "a"));
    assert_eq!(flat(&s1, "b"), flat(&s2, "b"));
    assert_ne!(flat(&s1, "a"), flat(&s3, "a"));
    assert_eq!(s1["a"].dims(), &[3, 4]);
    for v in flat(&s1, "a").into_iter().chain(flat(&s1, "b")) {
        assert!((0.0..1.0).contains(&v));
    }
    // One stream in name order: "a" draws first, "b" continues it.
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let stream: Vec<f32> = (0..17).map(|_| rng.random::<f32>()).collect();
    assert_eq!(flat(&s1, "a"), stream[..12].to_vec());
    assert_eq!(flat(&s1, "b"), stream[12..].to_vec());
}

#[test]
fn criterion_names_round_trip() {
    for name in importance::BUILTIN {
        let c = importance::by_name(name).unwrap();
        assert_eq!(c.name(), name);
    }
    for (name, source) in [
        ("teacher-guided:kd", GradientSource::Kd),
        ("teacher-guided:ce", GradientSource::Ce),
        ("teacher-guided:mix", GradientSource::Mixture),
        ("teacher-guided:mixture", GradientSource::Mixture),
    ] {
        let c = importance::by_name(name).unwrap();
        assert_eq!(format!("{c:?}"), format!("{:?}", TeacherGuided { source }));
    }
    assert_eq!(
        importance::by_name("teacher-guided:mix").unwrap().name(),
        "teacher-guided"
    );
    let err = importance::by_name("l1").unwrap_err().to_string();
    assert!(
        err.contains("magnitude, random, snip, teacher-guided, lamp, grasp, synflow, self-distill"),
        "{err}"
    );
    for bad in ["magnitude:ce", "teacher-guided:x", "synflow:kd"] {
        assert!(importance::by_name(bad).is_err(), "{bad}");
    }
    let needs = |n: &str| importance::by_name(n).unwrap().needs();
    assert!(needs("snip").gradients && !needs("magnitude").gradients);
    assert!(!needs("lamp").gradients && needs("grasp").data);
    assert!(needs("synflow").gradients && !needs("synflow").data);
    assert!(needs("teacher-guided").teacher && !needs("teacher-guided:ce").teacher);
}

#[test]
fn gradient_source_parses_ce_kd_mixture_and_nothing_else() {
    for g in GradientSource::ALL {
        assert_eq!(GradientSource::from_str(g.name()).unwrap(), g);
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(json, format!("\"{g}\""));
        assert_eq!(serde_json::from_str::<GradientSource>(&json).unwrap(), g);
    }
    assert_eq!(
        ["ce", "kd", "mixture"].map(|s| GradientSource::from_str(s).unwrap()),
        [
            GradientSource::Ce,
            GradientSource::Kd,
            GradientSource::Mixture
        ]
    );
    for bad in ["CE", "mix", "", "kd "] {
        match GradientSource::from_str(bad) {
            Err(e @ PruneError::UnknownGradientSource(_)) => {
                assert!(
                    e.to_string().contains("expected one of: ce, kd, mixture"),
                    "{e}"
                );
            }
            other => panic!("expected UnknownGradientSource for {bad:?}, got {other:?}"),
        }
    }
    assert!(serde_json::from_str::<GradientSource>("\"mix\"").is_err());
    assert!(!GradientSource::Ce.needs_teacher() && GradientSource::Mixture.needs_teacher());
}

#[test]
fn lamp_matches_the_hand_computed_example() {
    let dev = Device::Cpu;
    let weights = named(&[
        (
            "a",
            Tensor::new(&[[0.5f32, -1.0, 2.0], [0.1, -0.3, 1.5]], &dev).unwrap(),
        ),
        // |-0.2| = |0.2|: the tie is broken by flat index.
        ("b", Tensor::new(&[3.0f32, -0.2, 0.2, 1.0], &dev).unwrap()),
    ]);
    let scores = importance::lamp(&weights).unwrap();
    // import numpy as np
    // def lamp(w):
    //     w = np.asarray(w, dtype=np.float32).ravel().astype(np.float64)
    //     sq = w * w
    //     order = np.argsort(sq, kind="stable")          # ties: flat index
    //     suffix = np.cumsum(sq[order][::-1])[::-1]       # Σ_{v ≥ u} w_v²
    //     s = np.empty_like(sq); s[order] = sq[order] / suffix
    //     return s.astype(np.float32)
    // print(np.round(lamp([[0.5, -1.0, 2.0], [0.1, -0.3, 1.5]]), 6).tolist())
    // -> [0.033333, 0.137931, 1.0, 0.001316, 0.011858, 0.36]
    // print(np.round(lamp([3.0, -0.2, 0.2, 1.0]), 6).tolist())
    // -> [1.0, 0.003968, 0.003984, 0.1]
    let round6 =
        |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|x| (x * 1e6).round() / 1e6).collect() };
    let a = scores["a"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(scores["a"].dims(), &[2, 3]);
    assert_eq!(
        round6(a),
        vec![0.033333, 0.137931, 1.0, 0.001316, 0.011858, 0.36]
    );
    assert_eq!(
        round6(scores["b"].to_vec1::<f32>().unwrap()),
        vec![1.0, 0.003968, 0.003984, 0.1]
    );
    // One global threshold at 60 % (6 of 10) on the LAMP scores:
    // allv = np.concatenate([lamp(a), lamp(b)]); order = np.argsort(allv, kind="stable")
    // m = np.ones(10); m[order[:6]] = 0  -> a: [[0, 1, 1], [0, 0, 1]], b: [1, 0, 0, 0]
    let masks = select::global(&scores, 0.6).unwrap();
    assert_eq!(
        vec2(masks.get("a").unwrap()),
        vec![vec![0.0, 1.0, 1.0], vec![0.0, 0.0, 1.0]]
    );
    assert_eq!(
        masks.get("b").unwrap().to_vec1::<f32>().unwrap(),
        vec![1.0, 0.0, 0.0, 0.0]
    );
    // Global magnitude differs: the tie |-1.0| = |1.0| goes to `a` (name
    // order), so it keeps b's 1.0 and prunes a's -1.0, which LAMP keeps.
    // mag = np.abs(concatenated weights); order = np.argsort(mag, kind="stable")
    // -> a: [[0, 0, 1], [0, 0, 1]], b: [1, 0, 0, 1]
    let by_magnitude = select::global(&importance::magnitude(&weights).unwrap(), 0.6).unwrap();
    assert_eq!(
        vec2(by_magnitude.get("a").unwrap()),
        vec![vec![0.0, 0.0, 1.0], vec![0.0, 0.0, 1.0]]
    );
}

#[test]
fn lamp_on_random_weights_keeps_the_magnitude_order_within_each_layer() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let mut weights = NamedTensors::new();
    for (name, n) in [("x", 40usize), ("y", 9)] {
        let v: Vec<f32> = (0..n)
            .map(|_| (0.05 + rng.random::<f32>()) * if rng.random::<bool>() { 1.0 } else { -1.0 })
            .collect();
        weights.insert(name.into(), Tensor::from_vec(v, n, &Device::Cpu).unwrap());
    }
    let scores = importance::lamp(&weights).unwrap();
    let again = importance::lamp(&weights).unwrap();
    for (name, w) in &weights {
        let w = w.to_vec1::<f32>().unwrap();
        let s = scores[name].to_vec1::<f32>().unwrap();
        // Same inputs, same bits.
        let s2 = again[name].to_vec1::<f32>().unwrap();
        assert_eq!(
            s.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            s2.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        // The largest weight scores exactly 1, all others less.
        let top = (0..w.len())
            .max_by(|&i, &j| w[i].abs().total_cmp(&w[j].abs()))
            .unwrap();
        assert_eq!(s[top], 1.0);
        for i in 0..w.len() {
            assert!(s[i] > 0.0 && s[i] <= 1.0);
            for j in 0..w.len() {
                if w[i].abs() < w[j].abs() {
                    assert!(
                        s[i] < s[j],
                        "{name}: |w{i}| < |w{j}| but {} >= {}",
                        s[i],
                        s[j]
                    );
                }
            }
        }
    }
    let bad = named(&[("z", Tensor::new(&[1.0f32, f32::NAN], &Device::Cpu).unwrap())]);
    assert!(matches!(
        importance::lamp(&bad),
        Err(PruneError::NonFinite { .. })
    ));
    // An all-zero tensor scores 0, not NaN.
    let zero = named(&[(
        "z",
        Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap(),
    )]);
    assert_eq!(
        importance::lamp(&zero).unwrap()["z"]
            .to_vec1::<f32>()
            .unwrap(),
        vec![0.0; 3]
    );
}

#[test]
fn snip_gives_zero_to_a_weight_that_does_not_affect_the_loss() {
    // y = W[:, :3] x: the last column of W never reaches the loss.
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let mut draw = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| (0.05 + rng.random::<f32>()) * if rng.random::<bool>() { 1.0 } else { -1.0 })
            .collect()
    };
    let dev = Device::Cpu;
    let w = Var::from_tensor(&Tensor::from_vec(draw(8), (2, 4), &dev).unwrap()).unwrap();
    let x = Tensor::from_vec(draw(6), (3, 2), &dev).unwrap();
    let target = Tensor::from_vec(draw(4), (2, 2), &dev).unwrap();
    let y = w.narrow(1, 0, 3).unwrap().matmul(&x).unwrap();
    let loss = y.sub(&target).unwrap().sqr().unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let weights = named(&[("w", w.as_tensor().clone())]);
    let g = named(&[("w", grads.get(&w).unwrap().clone())]);
    let scores = importance::snip(&weights, &g).unwrap();
    let s = vec2(&scores["w"]);
    for row in &s {
        assert_eq!(row[3], 0.0, "unused weight must score 0: {s:?}");
        assert!(row[..3].iter().all(|&v| v > 0.0), "{s:?}");
    }
    // The same accumulator under other names: identical bits for the same gradient.
    let sd = importance::self_distill(&weights, &g).unwrap();
    let tg = importance::teacher_guided(&weights, &g).unwrap();
    assert_eq!(vec2(&sd["w"]), s);
    assert_eq!(vec2(&tg["w"]), s);
    // And one batch of the accumulator.
    let mut acc = SaliencyAccumulator::new();
    acc.add_batch(&weights, &g).unwrap();
    assert_eq!(vec2(&acc.finish().unwrap()["w"]), s);
}
