//! The real Fashion-MNIST files from the shared data directory (skipped when absent).

use std::path::PathBuf;

use kdprune_data::{load, DatasetName};

fn shared_dir() -> PathBuf {
    std::env::var_os("KDPRUNE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared")))
}

#[test]
fn fashion_mnist_loads_the_official_split() {
    let dir = shared_dir().join("datasets").join("fashion-mnist");
    if !dir.is_dir() {
        println!("skipping: {} not found", dir.display());
        return;
    }
    let split = load(DatasetName::FashionMnist, Some(&dir), 0).unwrap();
    let (train, test) = (&split.train, &split.test);
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    for ds in [train, test] {
        assert_eq!(ds.name, "fashion-mnist");
        assert_eq!((ds.channels, ds.height, ds.width), (1, 28, 28));
        assert_eq!(ds.images.len(), ds.len() * 784);
        assert_eq!(ds.num_classes, 10);
        assert_eq!(ds.max_value, 255.0);
    }
    // The shared copy holds 7,000 images per class, the last 1,000 of each in t10k.
    let mut train_counts = [0usize; 10];
    train
        .labels
        .iter()
        .for_each(|&l| train_counts[l as usize] += 1);
    let mut test_counts = [0usize; 10];
    test.labels
        .iter()
        .for_each(|&l| test_counts[l as usize] += 1);
    assert_eq!(train_counts, [6000; 10]);
    assert_eq!(test_counts, [1000; 10]);
    // real images, not blank: some dark and some bright pixels
    assert!(train.images.contains(&0) && train.images.contains(&255));
}
