//! Magnitude, random and gradient-saliency scores.

use std::str::FromStr;

use candle_core::{Device, Tensor};
use prune_core::importance::{self, Criterion, SaliencyAccumulator};
use prune_core::{NamedTensors, PruneError};

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
    for c in Criterion::ALL {
        assert_eq!(Criterion::from_str(&c.to_string()).unwrap(), c);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, format!("\"{c}\""));
        assert_eq!(serde_json::from_str::<Criterion>(&json).unwrap(), c);
    }
    assert_eq!(Criterion::TeacherGuided.to_string(), "teacher-guided");
    let err = Criterion::from_str("l1").unwrap_err().to_string();
    assert!(
        err.contains("magnitude, random, snip, teacher-guided"),
        "{err}"
    );
    assert!(Criterion::Snip.needs_gradients() && !Criterion::Magnitude.needs_gradients());
}
