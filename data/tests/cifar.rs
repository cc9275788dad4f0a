//! CIFAR-10 and CIFAR-100 in the official binary layout.

mod common;

use std::path::Path;

use candle_core::Device;
use common::{cifar100_record, cifar10_record, pseudo_bytes, write};
use kdprune_data::{
    load, load_cifar100_dir, load_cifar10_dir, read_cifar_bin, Cifar100Labels, CifarKind,
    DataError, DatasetName, Normalization,
};

/// Writes a CIFAR-10 folder: batch `k` (1..=5) holds `k` records labelled
/// `(k + j) % 10`, the test batch 2 records; record pixels are `pseudo_bytes(seed)`
/// with a distinct seed per record. Returns (train pixels, train labels,
/// test pixels, test labels) in file order.
fn write_cifar10_dir(dir: &Path) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    let (mut train_x, mut train_y) = (Vec::new(), Vec::new());
    for k in 1..=5u8 {
        let mut file = Vec::new();
        for j in 0..k {
            let chw = pseudo_bytes(u32::from(k) * 10 + u32::from(j), 3072);
            let label = (k + j) % 10;
            file.extend(cifar10_record(label, &chw));
            train_x.extend(chw);
            train_y.push(label);
        }
        write(&dir.join(format!("data_batch_{k}.bin")), &file);
    }
    let (mut test_x, mut test_y) = (Vec::new(), Vec::new());
    let mut file = Vec::new();
    for (j, label) in [9u8, 0].into_iter().enumerate() {
        let chw = pseudo_bytes(100 + j as u32, 3072);
        file.extend(cifar10_record(label, &chw));
        test_x.extend(chw);
        test_y.push(label);
    }
    write(&dir.join("test_batch.bin"), &file);
    (train_x, train_y, test_x, test_y)
}

#[test]
fn cifar10_binary_records_load_in_file_order() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cifar-10-batches-bin");
    let (train_x, train_y, test_x, test_y) = write_cifar10_dir(&dir);
    let split = load_cifar10_dir(&dir).unwrap();
    assert_eq!(split.train.len(), 15);
    assert_eq!(split.train.images, train_x);
    assert_eq!(split.train.labels, train_y);
    assert_eq!(split.test.images, test_x);
    assert_eq!(split.test.labels, test_y);
    for ds in [&split.train, &split.test] {
        assert_eq!(ds.name, "cifar10");
        assert_eq!((ds.channels, ds.height, ds.width), (3, 32, 32));
        assert_eq!((ds.num_classes, ds.max_value), (10, 255.0));
    }
    // `load` accepts the folder and its parent (archive folder name).
    for d in [dir.as_path(), root.path()] {
        let s = load(DatasetName::Cifar10, Some(d), 0).unwrap();
        assert_eq!(s.train.images, train_x);
        assert_eq!(s.test.labels, test_y);
    }
}

#[test]
fn cifar10_batch_tensor_is_nchw() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, test_x, _) = write_cifar10_dir(dir.path());
    let split = load_cifar10_dir(dir.path()).unwrap();
    let (x, y) = split
        .test
        .batch(&[1], &Normalization::identity(3), &Device::Cpu)
        .unwrap();
    assert_eq!(x.dims(), &[1, 3, 32, 32]);
    assert_eq!(y.to_vec1::<u32>().unwrap(), vec![0]);
    // Record bytes: R plane, G plane, B plane, each row-major: pixel (c, y, x)
    // of test sample 1 is byte 3072 + c*1024 + y*32 + x of the pixel data.
    let v = x.squeeze(0).unwrap().to_vec3::<f32>().unwrap();
    for (c, yy, xx) in [(0, 0, 31), (1, 5, 7), (2, 31, 0), (2, 7, 5)] {
        let raw = test_x[3072 + c * 1024 + yy * 32 + xx];
        assert_eq!(v[c][yy][xx], f32::from(raw) / 255.0, "({c}, {yy}, {xx})");
    }
}

#[test]
fn cifar100_records_have_coarse_then_fine_labels() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cifar-100-binary");
    let records = [(19u8, 99u8, 1u32), (0, 0, 2), (7, 42, 3)];
    let mut train = Vec::new();
    let mut pixels = Vec::new();
    for &(coarse, fine, seed) in &records {
        let chw = pseudo_bytes(seed, 3072);
        train.extend(cifar100_record(coarse, fine, &chw));
        pixels.extend(chw);
    }
    write(&dir.join("train.bin"), &train);
    write(&dir.join("test.bin"), &train[..3074]);

    let r = read_cifar_bin(&dir.join("train.bin"), CifarKind::Cifar100).unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(r.coarse_labels, vec![19, 0, 7]);
    assert_eq!(r.labels, vec![99, 0, 42]);
    assert_eq!(r.images, pixels);

    let fine = load_cifar100_dir(&dir, Cifar100Labels::Fine).unwrap();
    assert_eq!(fine.train.labels, vec![99, 0, 42]);
    assert_eq!(fine.train.images, pixels);
    assert_eq!(
        (fine.train.name.as_str(), fine.train.num_classes),
        ("cifar100", 100)
    );
    assert_eq!(fine.test.labels, vec![99]);
    let coarse = load_cifar100_dir(&dir, Cifar100Labels::Coarse).unwrap();
    assert_eq!(coarse.train.labels, vec![19, 0, 7]);
    assert_eq!(
        (coarse.train.name.as_str(), coarse.train.num_classes),
        ("cifar100-coarse", 20)
    );
    // `load` reads the fine labels, from the folder or its parent.
    let s = load(DatasetName::Cifar100, Some(root.path()), 0).unwrap();
    assert_eq!(s.train.labels, vec![99, 0, 42]);
    assert_eq!(s.train.num_classes, DatasetName::Cifar100.num_classes());
}

#[test]
fn truncated_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar10_dir(dir.path());
    let path = dir.path().join("data_batch_3.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.pop();
    std::fs::write(&path, &bytes).unwrap();
    let err = load_cifar10_dir(dir.path()).unwrap_err();
    match &err {
        DataError::Truncated {
            path: p,
            expected,
            got,
        } => {
            assert_eq!(p, &path);
            // 3 records of 3073 bytes, one byte short
            assert_eq!((*expected, *got), (9219, 9218));
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    assert!(err.to_string().contains("data_batch_3.bin"), "{err}");
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar10_dir(dir.path());
    std::fs::remove_file(dir.path().join("test_batch.bin")).unwrap();
    let err = load(DatasetName::Cifar10, Some(dir.path()), 0).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("test_batch.bin"), "{err}");

    let empty = tempfile::tempdir().unwrap();
    let err = load(DatasetName::Cifar100, Some(empty.path()), 0).unwrap_err();
    assert!(err.to_string().contains("train.bin"), "{err}");
}

#[test]
fn bad_labels_and_empty_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.bin");
    let mut bytes = cifar10_record(3, &[0; 3072]);
    bytes.extend(cifar10_record(10, &[0; 3072]));
    write(&path, &bytes);
    match read_cifar_bin(&path, CifarKind::Cifar10).unwrap_err() {
        DataError::LabelOutOfRange {
            index,
            label,
            num_classes,
            ..
        } => assert_eq!((index, label, num_classes), (1, 10, 10)),
        other => panic!("expected LabelOutOfRange, got {other:?}"),
    }
    // A CIFAR-10 file read as CIFAR-100 has the wrong record size.
    let ok = cifar10_record(3, &[0; 3072]);
    write(&path, &ok);
    let err = read_cifar_bin(&path, CifarKind::Cifar100).unwrap_err();
    assert!(matches!(err, DataError::Truncated { .. }), "{err:?}");
    write(&path, &cifar100_record(20, 1, &[0; 3072]));
    let err = read_cifar_bin(&path, CifarKind::Cifar100).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::LabelOutOfRange {
                num_classes: 20,
                ..
            }
        ),
        "{err:?}"
    );
    write(&path, &[]);
    let err = read_cifar_bin(&path, CifarKind::Cifar10).unwrap_err();
    assert!(matches!(err, DataError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("b.bin"), "{err}");
}

#[test]
fn cifar_names_parse() {
    for (s, n) in [
        ("cifar10", DatasetName::Cifar10),
        ("CIFAR-10", DatasetName::Cifar10),
        ("cifar100", DatasetName::Cifar100),
        ("cifar-100", DatasetName::Cifar100),
    ] {
        assert_eq!(s.parse::<DatasetName>().unwrap(), n);
    }
    assert_eq!(DatasetName::Cifar10.to_string(), "cifar10");
    assert_eq!(DatasetName::Cifar100.image_shape(), (3, 32, 32));
    assert_eq!(DatasetName::Cifar100.num_classes(), 100);
    let err = load(DatasetName::Cifar10, None, 0).unwrap_err();
    assert!(matches!(err, DataError::MissingDataDir { .. }), "{err:?}");
    assert!(err.to_string().contains("data_batch_1.bin"), "{err}");
}
