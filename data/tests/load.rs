//! Dataset names and `load`.

use std::io::Write;

use kdprune_data::{load, DataError, DatasetName};

#[test]
fn dataset_names_parse_and_print() {
    assert_eq!(
        "digits".parse::<DatasetName>().unwrap(),
        DatasetName::Digits
    );
    assert_eq!(
        "fashion-mnist".parse::<DatasetName>().unwrap(),
        DatasetName::FashionMnist
    );
    assert_eq!(
        "fashion_mnist".parse::<DatasetName>().unwrap(),
        DatasetName::FashionMnist
    );
    assert_eq!("mnist".parse::<DatasetName>().unwrap(), DatasetName::Mnist);
    for n in DatasetName::ALL {
        assert_eq!(n.to_string().parse::<DatasetName>().unwrap(), n);
    }
    assert_eq!(DatasetName::FashionMnist.to_string(), "fashion-mnist");
    let err = "cifar".parse::<DatasetName>().unwrap_err();
    assert!(matches!(err, DataError::UnknownDataset { .. }));
    let msg = err.to_string();
    assert!(msg.contains("cifar"), "{msg}");
    for known in ["digits", "fashion-mnist", "mnist"] {
        assert!(msg.contains(known), "{msg}");
    }
}

#[test]
fn load_digits_is_a_seeded_80_20_split() {
    let a = load(DatasetName::Digits, None, 3).unwrap();
    assert_eq!((a.train.len(), a.test.len()), (1438, 359));
    let b = load(
        DatasetName::Digits,
        Some(std::path::Path::new("/ignored")),
        3,
    )
    .unwrap();
    assert_eq!(a.test.images, b.test.images);
    let c = load(DatasetName::Digits, None, 4).unwrap();
    assert_ne!(a.test.images, c.test.images);
}

#[test]
fn idx_datasets_need_a_data_dir() {
    let err = load(DatasetName::FashionMnist, None, 0).unwrap_err();
    assert!(matches!(err, DataError::MissingDataDir { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("--data-dir"), "{msg}");
    assert!(msg.contains("fashion-mnist"), "{msg}");
}

fn write_idx_dir(dir: &std::path::Path) {
    let mut images = Vec::new();
    for v in [0x803u32, 2, 1, 1] {
        images.extend_from_slice(&v.to_be_bytes());
    }
    images.extend_from_slice(&[10, 200]);
    let mut labels = Vec::new();
    for v in [0x801u32, 2] {
        labels.extend_from_slice(&v.to_be_bytes());
    }
    labels.extend_from_slice(&[3, 9]);
    for part in ["train", "t10k"] {
        std::fs::File::create(dir.join(format!("{part}-images-idx3-ubyte")))
            .unwrap()
            .write_all(&images)
            .unwrap();
        std::fs::File::create(dir.join(format!("{part}-labels-idx1-ubyte")))
            .unwrap()
            .write_all(&labels)
            .unwrap();
    }
}

#[test]
fn load_mnist_from_dir_or_its_parent() {
    let root = tempfile::tempdir().unwrap();
    let sub = root.path().join("mnist");
    std::fs::create_dir(&sub).unwrap();
    write_idx_dir(&sub);
    for dir in [root.path(), sub.as_path()] {
        let split = load(DatasetName::Mnist, Some(dir), 0).unwrap();
        assert_eq!(split.train.name, "mnist");
        assert_eq!(split.train.labels, vec![3, 9]);
        assert_eq!(split.test.images, vec![10, 200]);
        assert_eq!(split.train.max_value, 255.0);
    }
    let empty = tempfile::tempdir().unwrap();
    let err = load(DatasetName::Mnist, Some(empty.path()), 0).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err:?}");
}
