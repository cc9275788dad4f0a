//! `--hub`: a dataset read from a folder laid out as the hf-hub cache, through
//! the real hf-hub client, offline (the machine that runs the tests has no
//! network). The fixtures are parquet files in the Hub's published format.

#[path = "../../data/tests/common/mod.rs"]
mod data_fixtures;

mod common;

use std::path::Path;

use common::{fails_with, kdprune, ok, p};
use data_fixtures::{png_gray, pseudo_bytes, put_in_hf_cache, write_hub_parquet};

/// A Fashion-MNIST repository (`zalando-datasets/fashion_mnist`) with
/// `n_train` and `n_test` 28×28 PNG images in the hf-hub cache `cache`.
fn fashion_mnist_cache(cache: &Path, scratch: &Path, n_train: usize, n_test: usize) {
    let mut files = Vec::new();
    for (split, n, seed) in [("train", n_train, 1u32), ("test", n_test, 500)] {
        let images: Vec<Vec<u8>> = (0..n)
            .map(|i| png_gray(&pseudo_bytes(seed + i as u32, 784), 28, 28))
            .collect();
        let labels: Vec<i64> = (0..n as i64).map(|i| i % 10).collect();
        let repo_path = format!("fashion_mnist/{split}-00000-of-00001.parquet");
        let file = scratch.join(format!("{split}.parquet"));
        write_hub_parquet(&file, "image", &images, &[("label", labels)]);
        files.push((repo_path, file));
    }
    put_in_hf_cache(cache, "zalando-datasets/fashion_mnist", &files);
}

#[test]
fn train_reads_a_hub_dataset_from_the_cache_offline() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("hub");
    fashion_mnist_cache(&cache, dir.path(), 40, 20);
    let ckpt = dir.path().join("m.safetensors");
    let out = kdprune(&[
        "train",
        "--dataset",
        "fashion-mnist",
        "--hub",
        "--offline",
        "--hub-cache",
        p(&cache),
        "--model",
        "lenet-300-100",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--quiet",
        "--out",
        p(&ckpt),
    ]);
    let stdout = ok(&out);
    assert!(ckpt.is_file());
    // The data the model was trained on: 40 + 20 samples of 1×28×28.
    let eval = kdprune(&[
        "eval",
        "--hub",
        "--offline",
        "--hub-cache",
        p(&cache),
        p(&ckpt),
    ]);
    let eval_out = ok(&eval);
    // Evaluating the checkpoint on the same Hub data gives the accuracy the
    // training run reported, a multiple of 1/20 (the test split's 20 samples).
    let acc = |text: &str| -> f64 {
        let line = text
            .lines()
            .rev()
            .find(|l| l.contains("test accuracy"))
            .unwrap_or_else(|| panic!("no accuracy in:\n{text}"));
        line.rsplit(' ').next().unwrap().trim().parse().unwrap()
    };
    let (trained, evaluated) = (acc(&stdout), acc(&eval_out));
    assert_eq!(trained, evaluated);
    assert!(((evaluated * 20.0) - (evaluated * 20.0).round()).abs() < 1e-3);
}

#[test]
fn an_empty_cache_offline_is_a_clear_error_that_names_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    let out = kdprune(&[
        "train",
        "--dataset",
        "fashion-mnist",
        "--hub",
        "--offline",
        "--hub-cache",
        p(dir.path()),
        "--epochs",
        "1",
        "--quiet",
        "--out",
        p(&dir.path().join("m.safetensors")),
    ]);
    fails_with(&out, "zalando-datasets/fashion_mnist");
    assert!(!dir.path().join("m.safetensors").exists());
}

#[test]
fn hub_flags_need_hub_and_exclude_a_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("m.safetensors");
    // Every other required flag is given, so `--hub` alone is missing (clap
    // lists the missing flags one per line after this header).
    let out = kdprune(&[
        "train",
        "--hub-revision",
        "v1",
        "--epochs",
        "1",
        "--out",
        p(&ckpt),
    ]);
    fails_with(&out, "not provided:\n  --hub");
    let out = kdprune(&[
        "train",
        "--hub",
        "--data-dir",
        ".",
        "--epochs",
        "1",
        "--out",
        p(&ckpt),
    ]);
    fails_with(&out, "cannot be used with");
    assert!(!ckpt.exists());
}
