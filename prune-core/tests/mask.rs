//! MaskSet bookkeeping, application, intersection and u8 round trip.

use candle_core::{DType, Device, Tensor, Var};
use prune_core::{MaskSet, NamedTensors, PruneError};

fn mask_set(entries: &[(&str, Tensor)]) -> MaskSet {
    let mut m = MaskSet::new();
    for (name, t) in entries {
        m.insert(*name, t.clone()).unwrap();
    }
    m
}

fn sample() -> MaskSet {
    let dev = Device::Cpu;
    mask_set(&[
        (
            "a",
            Tensor::new(&[[1f32, 0.0, 1.0], [0.0, 0.0, 1.0]], &dev).unwrap(),
        ),
        ("b", Tensor::new(&[1u8, 1, 0, 1], &dev).unwrap()),
    ])
}

#[test]
fn counts_and_accessors() {
    let m = sample();
    assert_eq!(m.len(), 2);
    assert!(!m.is_empty());
    assert!(MaskSet::new().is_empty());
    assert_eq!(m.names().collect::<Vec<_>>(), vec!["a", "b"]);
    assert_eq!(m.iter().count(), 2);
    assert_eq!(m.total_count(), 10);
    assert_eq!(m.pruned_count().unwrap(), 4);
    assert!((m.sparsity().unwrap() - 0.4).abs() < 1e-12);
    // Inserted u8 masks are stored as f32.
    assert_eq!(m.get("b").unwrap().dtype(), DType::F32);
    assert!(m.get("c").is_none());
    assert_eq!(MaskSet::new().sparsity().unwrap(), 0.0);
}

#[test]
fn insert_rejects_non_binary_values() {
    let mut m = MaskSet::new();
    for bad in [0.5f32, 2.0, -1.0, f32::NAN] {
        let t = Tensor::new(&[1f32, bad], &Device::Cpu).unwrap();
        match m.insert("w", t) {
            Err(PruneError::InvalidMask { name }) => assert_eq!(name, "w"),
            other => panic!("expected InvalidMask for {bad}, got {other:?}"),
        }
    }
    assert!(m.is_empty());
}

#[test]
fn u8_round_trip_is_exact() {
    let m = sample();
    let stored = m.to_u8().unwrap();
    assert_eq!(stored["a"].dtype(), DType::U8);
    assert_eq!(stored["b"].to_vec1::<u8>().unwrap(), vec![1, 1, 0, 1]);
    let back = MaskSet::from_u8(&stored, &Device::Cpu).unwrap();
    for name in ["a", "b"] {
        let x = m
            .get(name)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let y = back
            .get(name)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(x, y, "{name}");
        assert_eq!(m.get(name).unwrap().dims(), back.get(name).unwrap().dims());
    }
    let mut corrupt = stored.clone();
    corrupt.insert("c".into(), Tensor::new(&[2u8], &Device::Cpu).unwrap());
    assert!(matches!(
        MaskSet::from_u8(&corrupt, &Device::Cpu),
        Err(PruneError::InvalidMask { .. })
    ));
}

#[test]
fn intersect_keeps_only_coordinates_kept_by_both() {
    let dev = Device::Cpu;
    let x = sample();
    let y = mask_set(&[
        (
            "a",
            Tensor::new(&[[0f32, 1.0, 1.0], [1.0, 0.0, 1.0]], &dev).unwrap(),
        ),
        ("c", Tensor::new(&[0f32, 1.0], &dev).unwrap()),
    ]);
    let z = x.intersect(&y).unwrap();
    assert_eq!(
        z.get("a").unwrap().to_vec2::<f32>().unwrap(),
        vec![vec![0.0, 0.0, 1.0], vec![0.0, 0.0, 1.0]]
    );
    assert_eq!(
        z.get("b").unwrap().to_vec1::<f32>().unwrap(),
        vec![1.0, 1.0, 0.0, 1.0]
    );
    assert_eq!(
        z.get("c").unwrap().to_vec1::<f32>().unwrap(),
        vec![0.0, 1.0]
    );
    assert_eq!(z.pruned_count().unwrap(), 6);
    let bad = mask_set(&[("a", Tensor::new(&[1f32, 0.0], &dev).unwrap())]);
    assert!(matches!(
        x.intersect(&bad),
        Err(PruneError::ShapeMismatch { .. })
    ));
}

#[test]
fn apply_to_tensors_multiplies_and_checks() {
    let dev = Device::Cpu;
    let m = sample();
    let mut tensors: NamedTensors = [
        (
            "a".to_string(),
            Tensor::new(&[[1f32, 2.0, 3.0], [4.0, 5.0, 6.0]], &dev).unwrap(),
        ),
        (
            "b".to_string(),
            Tensor::new(&[7f64, 8.0, 9.0, 10.0], &dev).unwrap(),
        ),
        ("bias".to_string(), Tensor::new(&[1f32], &dev).unwrap()),
    ]
    .into_iter()
    .collect();
    m.apply_to_tensors(&mut tensors).unwrap();
    assert_eq!(
        tensors["a"].to_vec2::<f32>().unwrap(),
        vec![vec![1.0, 0.0, 3.0], vec![0.0, 0.0, 6.0]]
    );
    // The tensor keeps its dtype.
    assert_eq!(
        tensors["b"].to_vec1::<f64>().unwrap(),
        vec![7.0, 8.0, 0.0, 10.0]
    );
    assert_eq!(tensors["bias"].to_vec1::<f32>().unwrap(), vec![1.0]);

    let mut missing: NamedTensors = [("a".to_string(), tensors["a"].clone())]
        .into_iter()
        .collect();
    match m.apply_to_tensors(&mut missing) {
        Err(PruneError::MissingTensor(name)) => assert_eq!(name, "b"),
        other => panic!("expected MissingTensor, got {other:?}"),
    }
    let mut wrong: NamedTensors = [
        (
            "a".to_string(),
            Tensor::ones((3, 2), DType::F32, &dev).unwrap(),
        ),
        ("b".to_string(), Tensor::ones(4, DType::F32, &dev).unwrap()),
    ]
    .into_iter()
    .collect();
    assert!(matches!(
        m.apply_to_tensors(&mut wrong),
        Err(PruneError::ShapeMismatch { .. })
    ));
    // Nothing was modified by the failed call.
    assert_eq!(wrong["b"].to_vec1::<f32>().unwrap(), vec![1.0; 4]);
}

#[test]
fn apply_to_vars_checks_names_and_shapes_before_writing() {
    let dev = Device::Cpu;
    let m = sample();
    let a = Var::ones((2, 3), DType::F32, &dev).unwrap();
    let b = Var::ones(4, DType::F32, &dev).unwrap();
    let vars = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
    m.apply_to_vars(&vars).unwrap();
    assert_eq!(
        a.as_tensor().to_vec2::<f32>().unwrap(),
        vec![vec![1.0, 0.0, 1.0], vec![0.0, 0.0, 1.0]]
    );
    assert_eq!(
        b.as_tensor().to_vec1::<f32>().unwrap(),
        vec![1.0, 1.0, 0.0, 1.0]
    );

    let fresh = Var::ones((2, 3), DType::F32, &dev).unwrap();
    let only_a = vec![("a".to_string(), fresh.clone())];
    assert!(matches!(
        m.apply_to_vars(&only_a),
        Err(PruneError::MissingTensor(_))
    ));
    assert_eq!(
        fresh
            .as_tensor()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        6.0
    );
}
