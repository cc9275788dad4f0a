//! Sparsity reports.

use candle_core::{Device, Tensor};
use prune_core::{sparsity_report, MaskSet, NamedTensors, PruneError};

fn weights() -> NamedTensors {
    let dev = Device::Cpu;
    [
        (
            "a.weight",
            Tensor::new(&[[0f32, 1.0, 0.0], [2.0, 0.0, 3.0]], &dev).unwrap(),
        ),
        (
            "b.weight",
            Tensor::new(&[[0f32, 0.0], [0.0, 4.0]], &dev).unwrap(),
        ),
        ("a.bias", Tensor::new(&[0f32, 1.0], &dev).unwrap()),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_string(), t))
    .collect()
}

fn names() -> Vec<String> {
    vec!["a.weight".to_string(), "b.weight".to_string()]
}

#[test]
fn counts_zeros_over_the_named_tensors_only() {
    let r = sparsity_report(&weights(), &names(), None).unwrap();
    assert_eq!(r.layers.len(), 2);
    assert_eq!((r.layers[0].numel, r.layers[0].zeros), (6, 3));
    assert_eq!((r.layers[1].numel, r.layers[1].zeros), (4, 3));
    assert_eq!(r.layers[0].masked, 0);
    assert_eq!(r.total(), 10);
    assert_eq!(r.zeros(), 6);
    assert!((r.global_sparsity() - 0.6).abs() < 1e-12);
    assert_eq!(r.violations(), 0);
    let table = r.table();
    assert_eq!(table.lines().last().unwrap(), "global sparsity: 0.6000");
    assert_eq!(table.lines().count(), 4);
    assert!(table.lines().nth(1).unwrap().starts_with("a.weight"));
    // Aligned: every layer line is as long as the header.
    let lens: Vec<usize> = table.lines().take(3).map(str::len).collect();
    assert!(lens.windows(2).all(|w| w[0] == w[1]), "{table}");
}

#[test]
fn masks_give_masked_counts_and_violations() {
    let dev = Device::Cpu;
    let mut masks = MaskSet::new();
    // a: prunes (0,0), (0,1) and (1,1); (0,1) holds 1.0 → one violation.
    masks
        .insert(
            "a.weight",
            Tensor::new(&[[0f32, 0.0, 1.0], [1.0, 0.0, 1.0]], &dev).unwrap(),
        )
        .unwrap();
    // b: prunes the three zeros only → no violation.
    masks
        .insert(
            "b.weight",
            Tensor::new(&[[0f32, 0.0], [0.0, 1.0]], &dev).unwrap(),
        )
        .unwrap();
    let r = sparsity_report(&weights(), &names(), Some(&masks)).unwrap();
    assert_eq!((r.layers[0].masked, r.layers[0].violations), (3, 1));
    assert_eq!((r.layers[1].masked, r.layers[1].violations), (3, 0));
    assert_eq!(r.violations(), 1);
    assert_eq!(r.masked(), 6);

    // After applying the masks, the violation is gone and sparsity is 7/10.
    let mut w = weights();
    masks.apply_to_tensors(&mut w).unwrap();
    let r = sparsity_report(&w, &names(), Some(&masks)).unwrap();
    assert_eq!(r.violations(), 0);
    assert_eq!(r.table().lines().last().unwrap(), "global sparsity: 0.7000");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["layers"][0]["masked"], 3);
}

#[test]
fn missing_names_and_shape_mismatches_are_errors() {
    let missing = vec!["c.weight".to_string()];
    assert!(matches!(
        sparsity_report(&weights(), &missing, None),
        Err(PruneError::MissingTensor(_))
    ));
    let mut masks = MaskSet::new();
    masks
        .insert("a.weight", Tensor::new(&[1f32, 0.0], &Device::Cpu).unwrap())
        .unwrap();
    assert!(matches!(
        sparsity_report(&weights(), &names(), Some(&masks)),
        Err(PruneError::ShapeMismatch { .. })
    ));
    let empty = sparsity_report(&weights(), &[], None).unwrap();
    assert_eq!(empty.global_sparsity(), 0.0);
    assert_eq!(
        empty.table().lines().last().unwrap(),
        "global sparsity: 0.0000"
    );
}
