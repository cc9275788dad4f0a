//! Stratified train/test split.

use std::collections::BTreeSet;

use kdprune_data::{digits, stratified_split, DataError, Dataset};

/// A dataset whose single pixel is the sample index (mod 256), so a split's
/// members can be recognised from their pixels.
fn tagged(labels: Vec<u8>) -> Dataset {
    Dataset {
        name: "tagged".into(),
        images: (0..labels.len()).map(|i| i as u8).collect(),
        labels,
        channels: 1,
        height: 1,
        width: 1,
        num_classes: 3,
        max_value: 255.0,
    }
}

fn counts(labels: &[u8]) -> [usize; 10] {
    let mut c = [0; 10];
    for &l in labels {
        c[l as usize] += 1;
    }
    c
}

#[test]
fn digits_split_is_stratified_80_20() {
    let ds = digits().unwrap();
    let split = stratified_split(&ds, 0.2, 7).unwrap();
    let all = counts(&ds.labels);
    let test = counts(&split.test.labels);
    let train = counts(&split.train.labels);
    for k in 0..10 {
        // round(0.2 * count) per class
        let want = (0.2 * all[k] as f64).round() as usize;
        assert_eq!(test[k], want, "class {k}");
        assert_eq!(train[k] + test[k], all[k], "class {k}");
    }
    // python: sum(round(0.2 * c) for c in [178,182,177,183,181,182,181,179,174,180]) == 359
    // (Python's round is half-even, but no count here has a .5 fraction)
    assert_eq!(split.test.len(), 359);
    assert_eq!(split.train.len(), 1797 - 359);
    assert_eq!(split.train.name, "digits");
    assert_eq!(split.test.max_value, 16.0);
}

#[test]
fn split_is_disjoint_and_covers_all() {
    let labels: Vec<u8> = (0..200).map(|i| (i % 3) as u8).collect();
    let ds = tagged(labels);
    let split = stratified_split(&ds, 0.25, 1).unwrap();
    let train: BTreeSet<u8> = split.train.images.iter().copied().collect();
    let test: BTreeSet<u8> = split.test.images.iter().copied().collect();
    assert_eq!(train.len(), split.train.len(), "duplicates in train");
    assert_eq!(test.len(), split.test.len(), "duplicates in test");
    assert!(train.is_disjoint(&test));
    let union: BTreeSet<u8> = train.union(&test).copied().collect();
    assert_eq!(union, (0..200).map(|i| i as u8).collect());
    // labels travel with their samples
    for (p, l) in split.train.images.iter().zip(&split.train.labels) {
        assert_eq!(*l, p % 3);
    }
    for (p, l) in split.test.images.iter().zip(&split.test.labels) {
        assert_eq!(*l, p % 3);
    }
    // the original order is kept
    assert!(split.train.images.windows(2).all(|w| w[0] < w[1]));
    assert!(split.test.images.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn same_seed_same_split_other_seed_other_split() {
    let ds = digits().unwrap();
    let a = stratified_split(&ds, 0.2, 42).unwrap();
    let b = stratified_split(&ds, 0.2, 42).unwrap();
    let c = stratified_split(&ds, 0.2, 43).unwrap();
    assert_eq!(a.train.images, b.train.images);
    assert_eq!(a.test.images, b.test.images);
    assert_eq!(a.test.labels, b.test.labels);
    assert_ne!(a.test.images, c.test.images);
    // same class sizes whatever the seed
    assert_eq!(counts(&a.test.labels), counts(&c.test.labels));
}

#[test]
fn extreme_fractions() {
    let ds = tagged((0..30).map(|i| (i % 3) as u8).collect());
    let none = stratified_split(&ds, 0.0, 0).unwrap();
    assert_eq!((none.train.len(), none.test.len()), (30, 0));
    let all = stratified_split(&ds, 1.0, 0).unwrap();
    assert_eq!((all.train.len(), all.test.len()), (0, 30));
}

#[test]
fn bad_fraction_is_rejected() {
    let ds = tagged(vec![0, 1, 2]);
    for f in [-0.1, 1.5, f64::NAN] {
        let err = stratified_split(&ds, f, 0).unwrap_err();
        assert!(matches!(err, DataError::Invalid(_)), "{f}: {err}");
    }
}
