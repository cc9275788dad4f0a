//! Helpers shared by the end-to-end tests of the `kdprune` binary.
#![allow(dead_code)] // each test crate uses a subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the binary with `args`. `HF_HUB_OFFLINE` is cleared so that a
/// developer's environment cannot change what a test sees.
pub fn kdprune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kdprune"))
        .args(args)
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .expect("failed to start kdprune")
}

/// Asserts success and returns stdout.
pub fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "kdprune failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Asserts a clean failure: non-zero exit, no panic, a message containing `needle`.
pub fn fails_with(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    assert!(
        stderr.to_lowercase().contains(&needle.to_lowercase()),
        "stderr does not mention `{needle}`:\n{stderr}"
    );
}

/// A path as the `&str` an argument list takes.
pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `model` trained for 2 epochs on digits (`DIR/MODEL.safetensors`) and
/// pruned by magnitude to `sparsity` (`DIR/MODEL-SPARSITY.safetensors`):
/// `(dense, pruned)`.
pub fn train_and_prune(dir: &Path, model: &str, sparsity: &str) -> (PathBuf, PathBuf) {
    let dense = dir.join(format!("{model}.safetensors"));
    ok(&kdprune(&[
        "train",
        "--model",
        model,
        "--epochs",
        "2",
        "--quiet",
        "--out",
        p(&dense),
    ]));
    let pruned = dir.join(format!("{model}-{sparsity}.safetensors"));
    ok(&kdprune(&[
        "prune",
        "--checkpoint",
        p(&dense),
        "--criterion",
        "magnitude",
        "--sparsity",
        sparsity,
        "--out",
        p(&pruned),
    ]));
    (dense, pruned)
}
