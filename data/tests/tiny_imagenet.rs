//! TinyImageNet in the layout of `tiny-imagenet-200.zip`.

mod common;

use std::path::Path;

use common::{jpeg_gray, jpeg_solid, png_rgb, pseudo_bytes, write};
use kdprune_data::{load, load_tiny_imagenet_dir, DataError, DatasetName};

/// 200 WordNet-like ids, listed in wnids.txt in reverse order (the official file
/// is not sorted either); class k is the k-th id in sorted order.
fn wnids() -> Vec<String> {
    (0..200).map(|k| format!("n{:08}", 1000 + 7 * k)).collect()
}

/// The colour of training image `j` of class `k`.
fn colour(k: usize, j: usize) -> [u8; 3] {
    [(k % 256) as u8, (40 * j + 20) as u8, (255 - k % 256) as u8]
}

/// Writes the fixture: one training image per class (two for classes 0 and 199,
/// the second of class 199 a grey JPEG), three validation images. Returns the
/// training (class, colour) in expected load order and the validation labels.
fn write_fixture(dir: &Path) -> (Vec<(u8, [u8; 3])>, Vec<u8>) {
    let ids = wnids();
    let listed: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    write(
        &dir.join("wnids.txt"),
        (listed.join("\n") + "\n").as_bytes(),
    );
    let mut train = Vec::new();
    for (k, id) in ids.iter().enumerate() {
        let n = if k == 0 || k == 199 { 2 } else { 1 };
        for j in 0..n {
            let path = dir
                .join("train")
                .join(id)
                .join("images")
                .join(format!("{id}_{j}.JPEG"));
            if k == 199 && j == 1 {
                write(&path, &jpeg_gray(77, 64, 64));
                train.push((k as u8, [77, 77, 77]));
            } else {
                write(&path, &jpeg_solid(colour(k, j), 64, 64));
                train.push((k as u8, colour(k, j)));
            }
        }
        // The archive also holds bounding boxes next to the images.
        write(
            &dir.join("train").join(id).join(format!("{id}_boxes.txt")),
            format!("{id}_0.JPEG\t0\t0\t63\t63\n").as_bytes(),
        );
    }
    let val = [
        (5usize, [10u8, 200, 30]),
        (0, [250, 5, 5]),
        (123, [60, 60, 180]),
    ];
    let mut ann = String::new();
    for (i, (k, c)) in val.iter().enumerate() {
        write(
            &dir.join("val").join("images").join(format!("val_{i}.JPEG")),
            &jpeg_solid(*c, 64, 64),
        );
        ann.push_str(&format!("val_{i}.JPEG\t{}\t0\t0\t63\t63\n", ids[*k]));
    }
    write(&dir.join("val").join("val_annotations.txt"), ann.as_bytes());
    (train, val.iter().map(|(k, _)| *k as u8).collect())
}

/// Asserts that every pixel of each sample is within 3 of its solid colour
/// (JPEG rounding of a uniform block, in the YCbCr round trip).
fn assert_solid(images: &[u8], colours: &[[u8; 3]]) {
    assert_eq!(images.len(), colours.len() * 3 * 64 * 64);
    for (s, c) in colours.iter().enumerate() {
        for (ch, &want) in c.iter().enumerate() {
            let plane = &images[(s * 3 + ch) * 4096..(s * 3 + ch + 1) * 4096];
            let (lo, hi) = (plane.iter().min().unwrap(), plane.iter().max().unwrap());
            assert!(
                lo.abs_diff(want) <= 3 && hi.abs_diff(want) <= 3,
                "sample {s} channel {ch}: {lo}..{hi}, want {want}"
            );
        }
    }
}

#[test]
fn loads_classes_in_sorted_id_order_and_val_as_test() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("tiny-imagenet-200");
    let (train, val_labels) = write_fixture(&dir);
    let split = load_tiny_imagenet_dir(&dir).unwrap();
    assert_eq!(split.train.len(), 202);
    let labels: Vec<u8> = train.iter().map(|(k, _)| *k).collect();
    assert_eq!(split.train.labels, labels);
    let colours: Vec<[u8; 3]> = train.iter().map(|(_, c)| *c).collect();
    assert_solid(&split.train.images, &colours);
    assert_eq!(split.test.labels, val_labels);
    assert_solid(
        &split.test.images,
        &[[10, 200, 30], [250, 5, 5], [60, 60, 180]],
    );
    for ds in [&split.train, &split.test] {
        assert_eq!(ds.name, "tiny-imagenet");
        assert_eq!((ds.channels, ds.height, ds.width), (3, 64, 64));
        assert_eq!((ds.num_classes, ds.max_value), (200, 255.0));
    }
    // `load` accepts the parent folder and checks the 200 classes.
    let via_load = load(DatasetName::TinyImageNet, Some(root.path()), 0).unwrap();
    assert_eq!(via_load.train.images, split.train.images);
    assert_eq!(via_load.test.labels, val_labels);
}

#[test]
fn png_images_are_read_in_chw_order() {
    // An image with distinct pixels shows the HWC -> CHW reordering exactly
    // (PNG is lossless).
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let ids = wnids();
    let chw = pseudo_bytes(9, 3 * 64 * 64);
    // Sorted after `<id>_0.JPEG` and `<id>_1.JPEG`, so it is class 0's third image.
    let path = dir
        .path()
        .join("train")
        .join(&ids[0])
        .join("images")
        .join(format!("{}_2.png", ids[0]));
    write(&path, &png_rgb(&chw, 64, 64));
    let split = load_tiny_imagenet_dir(dir.path()).unwrap();
    assert_eq!(split.train.labels[..3], [0, 0, 0]);
    assert_eq!(split.train.sample(2).unwrap(), &chw[..]);
}

#[test]
fn missing_class_folder_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let gone = dir.path().join("train").join(&wnids()[17]).join("images");
    std::fs::remove_dir_all(&gone).unwrap();
    let err = load_tiny_imagenet_dir(dir.path()).unwrap_err();
    match &err {
        DataError::Io { path, .. } => assert_eq!(path, &gone),
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn corrupt_or_wrong_size_images_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let path = dir.path().join("val").join("images").join("val_1.JPEG");
    let jpeg = std::fs::read(&path).unwrap();
    std::fs::write(&path, &jpeg[..jpeg.len() / 3]).unwrap();
    let err = load_tiny_imagenet_dir(dir.path()).unwrap_err();
    match &err {
        DataError::Corrupt { path: p, .. } => assert_eq!(p, &path),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    write(&path, &jpeg_solid([1, 2, 3], 32, 32));
    let err = load_tiny_imagenet_dir(dir.path()).unwrap_err();
    assert!(matches!(err, DataError::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("val_1.JPEG") && msg.contains("32x32"), "{msg}");
}

#[test]
fn bad_annotations_and_class_counts_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let ann = dir.path().join("val").join("val_annotations.txt");
    write(&ann, b"val_0.JPEG\tn99999999\t0\t0\t63\t63\n");
    let err = load_tiny_imagenet_dir(dir.path()).unwrap_err();
    assert!(matches!(err, DataError::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("val_annotations.txt") && msg.contains("n99999999"),
        "{msg}"
    );

    // A subset of the classes loads on its own but is not TinyImageNet for `load`.
    let small = tempfile::tempdir().unwrap();
    let id = &wnids()[0];
    write(
        &small.path().join("wnids.txt"),
        format!("{id}\n").as_bytes(),
    );
    write(
        &small
            .path()
            .join("train")
            .join(id)
            .join("images")
            .join("a.JPEG"),
        &jpeg_solid([9, 9, 9], 64, 64),
    );
    write(&small.path().join("val").join("val_annotations.txt"), b"");
    let split = load_tiny_imagenet_dir(small.path()).unwrap();
    assert_eq!((split.train.len(), split.test.len()), (1, 0));
    assert_eq!(split.train.num_classes, 1);
    let err = load(DatasetName::TinyImageNet, Some(small.path()), 0).unwrap_err();
    assert!(matches!(err, DataError::Mismatch(_)), "{err:?}");
}

#[test]
fn tiny_imagenet_name_parses() {
    for s in ["tiny-imagenet", "tiny_imagenet", "TinyImageNet"] {
        assert_eq!(s.parse::<DatasetName>().unwrap(), DatasetName::TinyImageNet);
    }
    assert_eq!(DatasetName::TinyImageNet.num_classes(), 200);
    assert_eq!(DatasetName::TinyImageNet.image_shape(), (3, 64, 64));
    let err = load(DatasetName::TinyImageNet, None, 0).unwrap_err();
    assert!(err.to_string().contains("wnids.txt"), "{err}");
}

/// Names read from the annotation files stay inside the data folder: an
/// image outside it (which would load) is refused by name.
#[test]
fn annotation_names_cannot_leave_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let outside = dir.path().join("outside.JPEG");
    write(&outside, &jpeg_solid([1, 2, 3], 64, 64));
    let ann = dir.path().join("val").join("val_annotations.txt");
    let id = &wnids()[0];
    let absolute = outside.display().to_string();
    for file in ["../../outside.JPEG", absolute.as_str(), "..", "a\\..\\b"] {
        write(&ann, format!("{file}\t{id}\t0\t0\t63\t63\n").as_bytes());
        let err = load_tiny_imagenet_dir(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::Corrupt { .. }), "{file}: {err:?}");
        assert!(msg.contains("not a plain file name"), "{file}: {msg}");
    }
    write_fixture(dir.path());
    write(
        &dir.path().join("wnids.txt"),
        format!("{id}\n../escape\n").as_bytes(),
    );
    let msg = load_tiny_imagenet_dir(dir.path()).unwrap_err().to_string();
    assert!(
        msg.contains("'../escape' is not a plain folder name"),
        "{msg}"
    );
}
