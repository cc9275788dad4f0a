//! Hub parquet datasets, read offline through the real hf-hub client from a
//! folder laid out as its cache.

mod common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use common::{
    cifar100_record, cifar10_record, jpeg_solid, png_gray, png_rgb, pseudo_bytes, put_in_hf_cache,
    write, write_hub_parquet, COMMIT,
};
use kdprune_data::{
    load, load_from_hub, load_hub_dataset, read_image_table, DataError, DatasetName, HubDataset,
    HubOptions, Normalization,
};

fn offline(cache: &Path) -> HubOptions {
    HubOptions {
        cache_dir: Some(cache.to_path_buf()),
        offline: true,
        revision: None,
    }
}

/// Writes a parquet file under `scratch` and returns (repository path, file).
fn parquet_file(
    scratch: &Path,
    repo_path: &str,
    image_column: &str,
    images: &[Vec<u8>],
    labels: &[(&str, Vec<i64>)],
) -> (String, PathBuf) {
    let file = scratch.join(repo_path.replace('/', "_"));
    write_hub_parquet(&file, image_column, images, labels);
    (repo_path.to_string(), file)
}

/// CIFAR-10 samples: pixels `[3, 32, 32]` and labels.
fn cifar_samples(seed: u32, labels: &[u8]) -> Vec<(Vec<u8>, u8)> {
    labels
        .iter()
        .enumerate()
        .map(|(i, &l)| (pseudo_bytes(seed + i as u32, 3072), l))
        .collect()
}

#[test]
fn cifar10_hub_and_binary_give_the_same_nchw_images() {
    let train = cifar_samples(1, &[3, 9, 0, 3, 7]);
    let test = cifar_samples(50, &[1, 2]);

    // The binary layout: one record per sample, spread over the five batches.
    let bin = tempfile::tempdir().unwrap();
    for k in 1..=5 {
        let (chw, l) = &train[k - 1];
        write(
            &bin.path().join(format!("data_batch_{k}.bin")),
            &cifar10_record(*l, chw),
        );
    }
    let test_bin: Vec<u8> = test
        .iter()
        .flat_map(|(x, l)| cifar10_record(*l, x))
        .collect();
    write(&bin.path().join("test_batch.bin"), &test_bin);

    // The Hub layout: uoft-cs/cifar10, PNG images in an `img` struct column.
    let scratch = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let table = |name: &str, samples: &[(Vec<u8>, u8)]| {
        parquet_file(
            scratch.path(),
            &format!("plain_text/{name}-00000-of-00001.parquet"),
            "img",
            &samples
                .iter()
                .map(|(x, _)| png_rgb(x, 32, 32))
                .collect::<Vec<_>>(),
            &[(
                "label",
                samples.iter().map(|(_, l)| i64::from(*l)).collect(),
            )],
        )
    };
    put_in_hf_cache(
        cache.path(),
        "uoft-cs/cifar10",
        &[table("train", &train), table("test", &test)],
    );

    let from_bin = load(DatasetName::Cifar10, Some(bin.path()), 0).unwrap();
    let from_hub = load_from_hub(DatasetName::Cifar10, &offline(cache.path())).unwrap();
    for (a, b) in [
        (&from_bin.train, &from_hub.train),
        (&from_bin.test, &from_hub.test),
    ] {
        assert_eq!(a.images, b.images);
        assert_eq!(a.labels, b.labels);
        assert_eq!(
            (
                &a.name,
                a.channels,
                a.height,
                a.width,
                a.num_classes,
                a.max_value
            ),
            (
                &b.name,
                b.channels,
                b.height,
                b.width,
                b.num_classes,
                b.max_value
            )
        );
    }
    let want: Vec<u8> = train.iter().flat_map(|(x, _)| x.clone()).collect();
    assert_eq!(from_hub.train.images, want);
    assert_eq!(from_hub.train.labels, vec![3, 9, 0, 3, 7]);

    // A pixel off the diagonal: a transposed (W, H) image would differ here.
    let (x, _) = from_hub
        .train
        .batch(&[1], &Normalization::identity(3), &Device::Cpu)
        .unwrap();
    let v = x.squeeze(0).unwrap().to_vec3::<f32>().unwrap();
    let (c, yy, xx) = (1, 3, 29);
    assert_eq!(
        v[c][yy][xx],
        f32::from(train[1].0[c * 1024 + yy * 32 + xx]) / 255.0
    );
    assert_ne!(
        train[1].0[c * 1024 + yy * 32 + xx],
        train[1].0[c * 1024 + xx * 32 + yy]
    );
}

#[test]
fn cifar100_hub_has_fine_and_coarse_labels_like_the_binary_files() {
    let pixels: Vec<Vec<u8>> = (0..3).map(|i| pseudo_bytes(70 + i, 3072)).collect();
    let fine = [99u8, 0, 42];
    let coarse = [19u8, 0, 7];

    let bin = tempfile::tempdir().unwrap();
    let records: Vec<u8> = (0..3)
        .flat_map(|i| cifar100_record(coarse[i], fine[i], &pixels[i]))
        .collect();
    write(&bin.path().join("train.bin"), &records);
    write(&bin.path().join("test.bin"), &records);

    let scratch = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let pngs: Vec<Vec<u8>> = pixels.iter().map(|x| png_rgb(x, 32, 32)).collect();
    let columns = [
        ("fine_label", fine.iter().map(|&l| i64::from(l)).collect()),
        (
            "coarse_label",
            coarse.iter().map(|&l| i64::from(l)).collect(),
        ),
    ];
    let files = ["train", "test"].map(|s| {
        parquet_file(
            scratch.path(),
            &format!("cifar100/{s}-00000-of-00001.parquet"),
            "img",
            &pngs,
            &columns,
        )
    });
    put_in_hf_cache(cache.path(), "uoft-cs/cifar100", &files);

    let opts = offline(cache.path());
    let hub = load_from_hub(DatasetName::Cifar100, &opts).unwrap();
    let binary = load(DatasetName::Cifar100, Some(bin.path()), 0).unwrap();
    assert_eq!(hub.train.images, binary.train.images);
    assert_eq!(hub.train.labels, vec![99, 0, 42]);
    assert_eq!(hub.train.labels, binary.train.labels);
    assert_eq!(hub.test.num_classes, 100);
    let coarse_split = load_hub_dataset(&HubDataset::cifar100_coarse(), &opts).unwrap();
    assert_eq!(coarse_split.train.labels, vec![19, 0, 7]);
    assert_eq!(
        (
            coarse_split.train.name.as_str(),
            coarse_split.train.num_classes
        ),
        ("cifar100-coarse", 20)
    );
}

/// IDX files of grey images for the same samples as the Hub test below.
fn write_idx(dir: &Path, part: &str, pixels: &[u8], n: usize, labels: &[u8]) {
    let mut images = Vec::new();
    for v in [0x803u32, n as u32, 28, 28] {
        images.extend_from_slice(&v.to_be_bytes());
    }
    images.extend_from_slice(pixels);
    let mut lab = Vec::new();
    for v in [0x801u32, n as u32] {
        lab.extend_from_slice(&v.to_be_bytes());
    }
    lab.extend_from_slice(labels);
    write(&dir.join(format!("{part}-images-idx3-ubyte")), &images);
    write(&dir.join(format!("{part}-labels-idx1-ubyte")), &lab);
}

#[test]
fn mnist_and_fashion_mnist_hub_match_their_idx_files() {
    for (name, repo, folder) in [
        (DatasetName::Mnist, "ylecun/mnist", "mnist"),
        (
            DatasetName::FashionMnist,
            "zalando-datasets/fashion_mnist",
            "fashion_mnist",
        ),
    ] {
        let train_px = pseudo_bytes(5, 3 * 784);
        let test_px = pseudo_bytes(6, 784);
        let (train_y, test_y) = ([7u8, 1, 9], [4u8]);

        let idx = tempfile::tempdir().unwrap();
        write_idx(idx.path(), "train", &train_px, 3, &train_y);
        write_idx(idx.path(), "t10k", &test_px, 1, &test_y);

        let scratch = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let table = |split: &str, px: &[u8], y: &[u8]| {
            parquet_file(
                scratch.path(),
                &format!("{folder}/{split}-00000-of-00001.parquet"),
                "image",
                &px.chunks(784)
                    .map(|p| png_gray(p, 28, 28))
                    .collect::<Vec<_>>(),
                &[("label", y.iter().map(|&l| i64::from(l)).collect())],
            )
        };
        put_in_hf_cache(
            cache.path(),
            repo,
            &[
                table("train", &train_px, &train_y),
                table("test", &test_px, &test_y),
            ],
        );

        let hub = load_from_hub(name, &offline(cache.path())).unwrap();
        let files = load(name, Some(idx.path()), 0).unwrap();
        assert_eq!(hub.train.images, train_px, "{name}");
        assert_eq!(hub.train.images, files.train.images, "{name}");
        assert_eq!(hub.test.images, files.test.images, "{name}");
        assert_eq!(hub.train.labels, files.train.labels, "{name}");
        assert_eq!(hub.test.labels, vec![4], "{name}");
        assert_eq!(hub.train.name, name.as_str());
        assert_eq!(
            (hub.train.channels, hub.train.height, hub.train.width),
            (1, 28, 28)
        );
    }
}

#[test]
fn tiny_imagenet_hub_reads_jpeg_rows_and_valid_split() {
    let scratch = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let train_c = [[200u8, 10, 10], [10, 200, 10], [10, 10, 200]];
    let files = [
        parquet_file(
            scratch.path(),
            "data/train-00000-of-00001-1359597a978bc4fa.parquet",
            "image",
            &train_c
                .iter()
                .map(|&c| jpeg_solid(c, 64, 64))
                .collect::<Vec<_>>(),
            &[("label", vec![0, 199, 57])],
        ),
        parquet_file(
            scratch.path(),
            "data/valid-00000-of-00001-70d52db3c749a935.parquet",
            "image",
            &[jpeg_solid([128, 64, 32], 64, 64)],
            &[("label", vec![12])],
        ),
    ];
    put_in_hf_cache(cache.path(), "zh-plus/tiny-imagenet", &files);
    let split = load_from_hub(DatasetName::TinyImageNet, &offline(cache.path())).unwrap();
    assert_eq!(split.train.labels, vec![0, 199, 57]);
    assert_eq!(split.test.labels, vec![12]);
    assert_eq!(split.train.num_classes, 200);
    for (s, c) in train_c.iter().enumerate() {
        for (ch, &want) in c.iter().enumerate() {
            let plane = &split.train.images[(s * 3 + ch) * 4096..(s * 3 + ch + 1) * 4096];
            assert!(
                plane.iter().all(|p| p.abs_diff(want) <= 3),
                "sample {s} ch {ch}"
            );
        }
    }
}

#[test]
fn sharded_splits_are_concatenated_in_shard_order() {
    let scratch = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let samples = cifar_samples(200, &[1, 2, 3]);
    let shard = |name: &str, s: &[(Vec<u8>, u8)]| {
        parquet_file(
            scratch.path(),
            &format!("plain_text/{name}.parquet"),
            "img",
            &s.iter()
                .map(|(x, _)| png_rgb(x, 32, 32))
                .collect::<Vec<_>>(),
            &[("label", s.iter().map(|(_, l)| i64::from(*l)).collect())],
        )
    };
    // Listed out of order: the loader sorts by name.
    put_in_hf_cache(
        cache.path(),
        "uoft-cs/cifar10",
        &[
            shard("train-00001-of-00002", &samples[2..]),
            shard("test-00000-of-00001", &samples[..1]),
            shard("train-00000-of-00002", &samples[..2]),
        ],
    );
    let split = load_from_hub(DatasetName::Cifar10, &offline(cache.path())).unwrap();
    assert_eq!(split.train.labels, vec![1, 2, 3]);
    let want: Vec<u8> = samples.iter().flat_map(|(x, _)| x.clone()).collect();
    assert_eq!(split.train.images, want);
    assert_eq!(split.test.labels, vec![1]);
}

/// A CIFAR-10 cache with one train and one test file; returns the snapshot.
fn cifar10_cache(scratch: &Path, cache: &Path) -> PathBuf {
    let s = cifar_samples(300, &[4, 5]);
    let files = ["train", "test"].map(|name| {
        parquet_file(
            scratch,
            &format!("plain_text/{name}-00000-of-00001.parquet"),
            "img",
            &s.iter()
                .map(|(x, _)| png_rgb(x, 32, 32))
                .collect::<Vec<_>>(),
            &[("label", s.iter().map(|(_, l)| i64::from(*l)).collect())],
        )
    });
    put_in_hf_cache(cache, "uoft-cs/cifar10", &files)
}

#[test]
fn revision_selects_the_snapshot() {
    let scratch = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    cifar10_cache(scratch.path(), cache.path());
    let mut opts = offline(cache.path());
    opts.revision = Some(COMMIT.into());
    assert_eq!(
        load_from_hub(DatasetName::Cifar10, &opts)
            .unwrap()
            .train
            .len(),
        2
    );
    opts.revision = Some("v2".into());
    let err = load_from_hub(DatasetName::Cifar10, &opts).unwrap_err();
    assert!(matches!(err, DataError::HubNotCached { .. }), "{err:?}");
    assert!(
        err.to_string().contains("uoft-cs/cifar10 (revision v2)"),
        "{err}"
    );
}

#[test]
fn nothing_cached_offline_says_how_to_fill_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let err = load_from_hub(DatasetName::Mnist, &offline(cache.path())).unwrap_err();
    assert!(matches!(err, DataError::HubNotCached { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("ylecun/mnist"), "{msg}");
    assert!(msg.contains("once without --offline"), "{msg}");
    let err = load_from_hub(DatasetName::Digits, &offline(cache.path())).unwrap_err();
    assert!(matches!(err, DataError::Invalid(_)), "{err:?}");
}

#[test]
fn missing_files_are_errors_naming_them() {
    let scratch = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let snapshot = cifar10_cache(scratch.path(), cache.path());

    // A snapshot entry whose blob is gone (an interrupted download).
    let entry = snapshot.join("plain_text/train-00000-of-00001.parquet");
    let blob = std::fs::canonicalize(&entry).unwrap();
    std::fs::remove_file(&blob).unwrap();
    let err = load_from_hub(DatasetName::Cifar10, &offline(cache.path())).unwrap_err();
    assert!(
        err.to_string()
            .contains("plain_text/train-00000-of-00001.parquet"),
        "{err}"
    );

    // No test file at all.
    std::fs::remove_file(snapshot.join("plain_text/test-00000-of-00001.parquet")).unwrap();
    std::fs::remove_file(&entry).unwrap();
    write_hub_parquet(
        &entry,
        "img",
        &[png_rgb(&[0; 3072], 32, 32)],
        &[("label", vec![0])],
    );
    let err = load_from_hub(DatasetName::Cifar10, &offline(cache.path())).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err:?}");
    assert!(
        err.to_string().contains("plain_text/test-*.parquet"),
        "{err}"
    );
}

#[test]
fn corrupt_files_are_errors_naming_them() {
    let scratch = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let snapshot = cifar10_cache(scratch.path(), cache.path());
    let entry = snapshot.join("plain_text/test-00000-of-00001.parquet");
    std::fs::remove_file(&entry).unwrap();

    // Not parquet at all.
    write(&entry, b"PAR1 this is not a parquet file");
    let err = load_from_hub(DatasetName::Cifar10, &offline(cache.path())).unwrap_err();
    assert!(matches!(err, DataError::Corrupt { .. }), "{err:?}");
    assert!(
        err.to_string().contains("test-00000-of-00001.parquet"),
        "{err}"
    );

    // Parquet, but the second image is a truncated PNG.
    let good = png_rgb(&pseudo_bytes(1, 3072), 32, 32);
    let bad = good[..good.len() / 2].to_vec();
    write_hub_parquet(
        &entry,
        "img",
        &[good.clone(), bad],
        &[("label", vec![1, 2])],
    );
    let err = load_from_hub(DatasetName::Cifar10, &offline(cache.path())).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DataError::Corrupt { .. }), "{err:?}");
    assert!(
        msg.contains("test-00000-of-00001.parquet") && msg.contains("row 1"),
        "{msg}"
    );

    // An image of the wrong size.
    write_hub_parquet(
        &entry,
        "img",
        &[png_rgb(&[0; 3 * 16 * 8], 16, 8)],
        &[("label", vec![1])],
    );
    let msg = load_from_hub(DatasetName::Cifar10, &offline(cache.path()))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("16x8") && msg.contains("32x32"), "{msg}");

    // A label column of another name.
    write_hub_parquet(
        &entry,
        "img",
        std::slice::from_ref(&good),
        &[("fine_label", vec![1])],
    );
    let msg = load_from_hub(DatasetName::Cifar10, &offline(cache.path()))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("no column 'label'") && msg.contains("fine_label"),
        "{msg}"
    );

    // A label out of range.
    write_hub_parquet(&entry, "img", &[good], &[("label", vec![10])]);
    let err = load_from_hub(DatasetName::Cifar10, &offline(cache.path())).unwrap_err();
    assert!(
        matches!(err, DataError::LabelOutOfRange { label: 10, .. }),
        "{err:?}"
    );
}

#[test]
fn image_table_reads_the_hub_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    let images = vec![b"first".to_vec(), b"second".to_vec()];
    write_hub_parquet(&path, "image", &images, &[("label", vec![5, 0])]);
    let t = read_image_table(&path, "image", "label").unwrap();
    assert_eq!(t.images, images);
    assert_eq!(t.labels, vec![5, 0]);
    let err = read_image_table(&path, "label", "label").unwrap_err();
    assert!(matches!(err, DataError::Corrupt { .. }), "{err:?}");
}

#[test]
fn hub_sources_of_the_datasets() {
    let c10 = HubDataset::of(DatasetName::Cifar10).unwrap();
    assert_eq!(c10.repo, "uoft-cs/cifar10");
    assert_eq!(c10.train, "plain_text/train-*.parquet");
    assert_eq!(
        (c10.image_column.as_str(), c10.label_column.as_str()),
        ("img", "label")
    );
    let tin = HubDataset::of(DatasetName::TinyImageNet).unwrap();
    assert_eq!(tin.test, "data/valid-*.parquet");
    assert_eq!((tin.channels, tin.height, tin.num_classes), (3, 64, 200));
    assert!(HubDataset::of(DatasetName::Digits).is_none());
    assert_eq!(HubOptions::default().revision, None);
}
