//! IDX reader and IDX directory loader, on small files the tests write.

use std::io::Write;
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;
use kdprune_data::{load_idx_dir, read_idx_images, read_idx_labels, DataError};

fn idx_images(n: u32, h: u32, w: u32, pixels: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [0x0000_0803u32, n, h, w] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend_from_slice(pixels);
    b
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [0x0000_0801u32, labels.len() as u32] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend_from_slice(labels);
    b
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

/// 3 images of 2x4 with pixels 0, 10, 20, ... (mod 256).
fn pixels() -> Vec<u8> {
    (0..24u32).map(|i| (i * 10 % 256) as u8).collect()
}

#[test]
fn raw_images_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("imgs");
    write(&p, &idx_images(3, 2, 4, &pixels()));
    let (n, h, w, px) = read_idx_images(&p).unwrap();
    assert_eq!((n, h, w), (3, 2, 4));
    assert_eq!(px, pixels());
}

#[test]
fn gzipped_files_are_detected_by_magic_not_name() {
    let dir = tempfile::tempdir().unwrap();
    // gzipped content without a .gz name
    let p = dir.path().join("imgs-no-extension");
    write(&p, &gz(&idx_images(3, 2, 4, &pixels())));
    let (n, h, w, px) = read_idx_images(&p).unwrap();
    assert_eq!((n, h, w), (3, 2, 4));
    assert_eq!(px, pixels());
    // raw content with a .gz name
    let q = dir.path().join("labels.gz");
    write(&q, &idx_labels(&[1, 0, 9]));
    assert_eq!(read_idx_labels(&q).unwrap(), vec![1, 0, 9]);
    // gzipped labels
    let r = dir.path().join("labels2.gz");
    write(&r, &gz(&idx_labels(&[4, 4, 2, 7])));
    assert_eq!(read_idx_labels(&r).unwrap(), vec![4, 4, 2, 7]);
}

#[test]
fn wrong_magic_is_bad_magic_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("labels-not-images");
    write(&p, &idx_labels(&[1, 2, 3]));
    let err = read_idx_images(&p).unwrap_err();
    match &err {
        DataError::BadMagic {
            path,
            expected,
            found,
        } => {
            assert_eq!(path, &p);
            assert_eq!(*expected, 0x803);
            assert_eq!(*found, 0x801);
        }
        other => panic!("expected BadMagic, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("labels-not-images"), "{msg}");
    assert!(msg.contains("0x00000801"), "{msg}");

    let q = dir.path().join("images-not-labels.gz");
    write(&q, &gz(&idx_images(1, 1, 1, &[0])));
    assert!(matches!(
        read_idx_labels(&q).unwrap_err(),
        DataError::BadMagic { found: 0x803, .. }
    ));
}

#[test]
fn truncated_data_is_truncated_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("short");
    // header says 3 images of 2x4 (24 bytes) but only 16 follow
    write(&p, &idx_images(3, 2, 4, &pixels()[..16]));
    let err = read_idx_images(&p).unwrap_err();
    match &err {
        DataError::Truncated {
            path,
            expected,
            got,
        } => {
            assert_eq!(path, &p);
            assert_eq!((*expected, *got), (16 + 24, 16 + 16));
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    assert!(err.to_string().contains("short"), "{err}");

    // a header cut short, gzipped
    let q = dir.path().join("short-header");
    write(&q, &gz(&idx_images(3, 2, 4, &[])[..10]));
    assert!(matches!(
        read_idx_images(&q).unwrap_err(),
        DataError::Truncated {
            expected: 16,
            got: 10,
            ..
        }
    ));

    // labels: 5 declared, 2 present
    let r = dir.path().join("short-labels");
    let mut bytes = idx_labels(&[1, 2, 3, 4, 5]);
    bytes.truncate(8 + 2);
    write(&r, &bytes);
    assert!(matches!(
        read_idx_labels(&r).unwrap_err(),
        DataError::Truncated {
            expected: 13,
            got: 10,
            ..
        }
    ));
    // fewer than the 4 magic bytes
    let s = dir.path().join("tiny");
    write(&s, &[0, 0]);
    assert!(matches!(
        read_idx_labels(&s).unwrap_err(),
        DataError::Truncated {
            expected: 4,
            got: 2,
            ..
        }
    ));
}

#[test]
fn trailing_bytes_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("long");
    let mut bytes = idx_labels(&[1, 2]);
    bytes.push(7);
    write(&p, &bytes);
    let err = read_idx_labels(&p).unwrap_err();
    assert!(matches!(err, DataError::Mismatch(_)), "{err:?}");
    assert!(err.to_string().contains("long"), "{err}");
}

#[test]
fn missing_file_error_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("does-not-exist-idx3");
    let err = read_idx_images(&p).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains(&p.display().to_string()), "{err}");
}

/// Writes a 4-file IDX directory: train 3 images of 2x4, test 2 images of 2x4.
fn write_dir(dir: &Path, train_labels: &[u8], test_labels: &[u8]) {
    let px = pixels();
    // mixed: some raw, some gzipped, as found in the wild
    write(
        &dir.join("train-images-idx3-ubyte.gz"),
        &gz(&idx_images(3, 2, 4, &px)),
    );
    write(
        &dir.join("train-labels-idx1-ubyte"),
        &idx_labels(train_labels),
    );
    write(
        &dir.join("t10k-images-idx3-ubyte"),
        &idx_images(2, 2, 4, &px[..16]),
    );
    write(
        &dir.join("t10k-labels-idx1-ubyte.gz"),
        &gz(&idx_labels(test_labels)),
    );
}

#[test]
fn idx_dir_loads_train_and_test() {
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), &[2, 0, 1], &[1, 2]);
    let split = load_idx_dir(dir.path(), "tiny", 3).unwrap();
    let (train, test) = (&split.train, &split.test);
    assert_eq!(train.name, "tiny");
    assert_eq!((train.len(), test.len()), (3, 2));
    assert_eq!((train.channels, train.height, train.width), (1, 2, 4));
    assert_eq!((test.channels, test.height, test.width), (1, 2, 4));
    assert_eq!(train.max_value, 255.0);
    assert_eq!(train.num_classes, 3);
    assert_eq!(train.images, pixels());
    assert_eq!(test.images, pixels()[..16].to_vec());
    assert_eq!(train.labels, vec![2, 0, 1]);
    assert_eq!(test.labels, vec![1, 2]);
}

#[test]
fn idx_dir_count_mismatch_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), &[2, 0], &[1, 2]);
    let err = load_idx_dir(dir.path(), "tiny", 3).unwrap_err();
    assert!(matches!(err, DataError::Mismatch(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("train-images-idx3-ubyte.gz"), "{msg}");
    assert!(msg.contains("train-labels-idx1-ubyte"), "{msg}");
}

#[test]
fn idx_dir_label_out_of_range_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), &[2, 0, 1], &[1, 3]);
    let err = load_idx_dir(dir.path(), "tiny", 3).unwrap_err();
    match &err {
        DataError::LabelOutOfRange {
            path,
            index,
            label,
            num_classes,
        } => {
            assert!(path.ends_with("t10k-labels-idx1-ubyte.gz"));
            assert_eq!((*index, *label, *num_classes), (1, 3, 3));
        }
        other => panic!("expected LabelOutOfRange, got {other:?}"),
    }
}

#[test]
fn idx_dir_missing_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), &[2, 0, 1], &[1, 2]);
    std::fs::remove_file(dir.path().join("t10k-images-idx3-ubyte")).unwrap();
    let err = load_idx_dir(dir.path(), "tiny", 3).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("t10k-images-idx3-ubyte"), "{msg}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
}

#[test]
fn idx_dir_size_mismatch_between_train_and_test() {
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), &[2, 0, 1], &[1, 2]);
    write(
        &dir.path().join("t10k-images-idx3-ubyte"),
        &idx_images(2, 4, 2, &pixels()[..16]),
    );
    let err = load_idx_dir(dir.path(), "tiny", 3).unwrap_err();
    assert!(matches!(err, DataError::Mismatch(_)), "{err:?}");
}

/// The header is read before the body and the body is streamed: a gzip
/// stream is not decompressed beyond one byte past what its header declares.
/// After those bytes here comes a broken gzip member, which a reader that
/// decompresses everything first reports as an I/O error instead.
#[test]
fn gzip_streams_stop_at_the_declared_size() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bomb-labels.gz");
    // 2 labels declared, 3 in the first member, then a member that breaks
    let mut bytes = gz(&[idx_labels(&[1, 2]), vec![9]].concat());
    bytes.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0xde, 0xad, 0xbe, 0xef]);
    write(&p, &bytes);
    let err = read_idx_labels(&p).unwrap_err();
    assert!(matches!(err, DataError::Mismatch(_)), "{err:?}");
    assert!(err.to_string().contains("more bytes than the 10"), "{err}");

    // 64 members of 1 MiB of zeros behind a header declaring 1 image of 2x2
    let member = gz(&vec![0u8; 1 << 20]);
    let mut bytes = gz(&idx_images(1, 2, 2, &[1, 2, 3, 4]));
    for _ in 0..64 {
        bytes.extend_from_slice(&member);
    }
    let q = dir.path().join("bomb-images.gz");
    write(&q, &bytes);
    let err = read_idx_images(&q).unwrap_err();
    assert!(matches!(err, DataError::Mismatch(_)), "{err:?}");
    // the same header with exactly its body reads
    write(&q, &gz(&idx_images(1, 2, 2, &[1, 2, 3, 4])));
    assert_eq!(read_idx_images(&q).unwrap(), (1, 2, 2, vec![1, 2, 3, 4]));
}
