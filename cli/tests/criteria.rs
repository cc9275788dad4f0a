//! `kdprune prune` with the GraSP, SynFlow and self-distillation (EPSD)
//! criteria, end to end on the built-in digits data: a LeNet-300-100 trained
//! for one epoch is pruned to 90 %, verified, and pruned again with the same
//! seed to check that the masks are bit-identical.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use candle_core::Device;
use common::{fails_with, kdprune, ok, p};
use kdprune_models::checkpoint;

/// A LeNet-300-100 trained for one epoch on digits with seed 0.
fn trained(dir: &Path) -> PathBuf {
    let out = dir.join("student.safetensors");
    ok(&kdprune(&[
        "train",
        "--model",
        "lenet-300-100",
        "--epochs",
        "1",
        "--seed",
        "0",
        "--quiet",
        "--out",
        p(&out),
    ]));
    out
}

/// `kdprune prune` of `ckpt` with `criterion` at sparsity 0.9 (seed 0, two
/// scoring batches unless `extra` says otherwise) plus `extra` flags,
/// written to `out`.
fn prune(ckpt: &Path, criterion: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "prune",
        "--checkpoint",
        p(ckpt),
        "--criterion",
        criterion,
        "--sparsity",
        "0.9",
        "--seed",
        "0",
        "--out",
        p(out),
    ];
    if !extra.contains(&"--score-batches") {
        args.extend_from_slice(&["--score-batches", "2"]);
    }
    args.extend_from_slice(extra);
    kdprune(&args)
}

/// The masks of a checkpoint as flat bytes by name.
fn masks(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let ckpt = checkpoint::load(path, &Device::Cpu).unwrap();
    ckpt.masks
        .iter()
        .map(|(name, m)| {
            (
                name.clone(),
                m.flatten_all().unwrap().to_vec1::<u8>().unwrap(),
            )
        })
        .collect()
}

/// Prunes with `criterion` twice, checks the sparsity with `kdprune verify`
/// and that both runs give the same masks and report a test accuracy.
fn prunes_reproducibly(criterion: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = trained(dir.path());
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    let stdout = ok(&prune(&ckpt, criterion, &a, extra));
    ok(&prune(&ckpt, criterion, &b, extra));

    let verify = ok(&kdprune(&["verify", p(&a)]));
    assert!(
        verify.contains("global sparsity: 0.9000"),
        "{criterion}: verify says\n{verify}"
    );
    let (ma, mb) = (masks(&a), masks(&b));
    assert_eq!(
        ma.keys().collect::<Vec<_>>(),
        ["fc1.weight", "fc2.weight", "fc3.weight"]
    );
    assert!(ma == mb, "{criterion}: the same seed gave different masks");
    assert!(
        stdout.lines().any(|l| l.starts_with("test accuracy:")),
        "{criterion}: no accuracy in\n{stdout}"
    );
}

#[test]
fn grasp_prunes_to_the_target_sparsity_reproducibly() {
    prunes_reproducibly("grasp", &[]);
}

#[test]
fn synflow_prunes_to_the_target_sparsity_reproducibly_without_data() {
    // Data-free: no scoring batches needed; 20 rounds keep the test short.
    prunes_reproducibly(
        "synflow",
        &["--score-batches", "0", "--synflow-rounds", "20"],
    );
}

#[test]
fn self_distill_prunes_to_the_target_sparsity_reproducibly() {
    prunes_reproducibly("self-distill", &[]);
}

#[test]
fn self_distill_depends_on_its_kl_term() {
    // With α = 0 the loss is plain CE: the masks are SNIP's; with the default
    // α = 0.5 the KL term to the shifted view changes them.
    let dir = tempfile::tempdir().unwrap();
    let ckpt = trained(dir.path());
    let out = |name: &str| dir.path().join(name);
    ok(&prune(&ckpt, "snip", &out("snip.safetensors"), &[]));
    ok(&prune(
        &ckpt,
        "self-distill",
        &out("ce.safetensors"),
        &["--sd-alpha", "0"],
    ));
    ok(&prune(&ckpt, "self-distill", &out("sd.safetensors"), &[]));
    let snip = masks(&out("snip.safetensors"));
    assert!(snip == masks(&out("ce.safetensors")), "α = 0 must be SNIP");
    assert!(
        snip != masks(&out("sd.safetensors")),
        "the KL term had no effect"
    );
}

#[test]
fn bad_criterion_settings_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = trained(dir.path());
    let out = dir.path().join("p.safetensors");
    fails_with(
        &prune(&ckpt, "grasp", &out, &["--score-batches", "0"]),
        "--score-batches must be ≥ 1",
    );
    fails_with(
        &prune(&ckpt, "self-distill", &out, &["--score-batches", "0"]),
        "--score-batches must be ≥ 1",
    );
    fails_with(
        &prune(&ckpt, "synflow", &out, &["--scope", "layer"]),
        "--scope layer is not supported",
    );
    fails_with(
        &prune(&ckpt, "synflow", &out, &["--synflow-rounds", "0"]),
        "rounds",
    );
    fails_with(
        &prune(&ckpt, "self-distill", &out, &["--sd-alpha", "1.5"]),
        "alpha must lie in [0, 1]",
    );
    assert!(!out.exists(), "a failed prune wrote {}", out.display());
}

/// `kdprune prune` of `ckpt` by `criterion` to `sparsity` under `scope`.
fn prune_to(ckpt: &Path, criterion: &str, out: &Path, sparsity: &str, scope: &str) -> Output {
    kdprune(&[
        "prune",
        "--checkpoint",
        p(ckpt),
        "--criterion",
        criterion,
        "--sparsity",
        sparsity,
        "--scope",
        scope,
        "--seed",
        "0",
        "--score-batches",
        "2",
        "--out",
        p(out),
    ])
}

/// Pruning a checkpoint that already has masks selects among the weights it
/// still keeps: the result prunes exactly `round(s·n)` of the `n` prunable
/// weights (not `round(s·n)` more, intersected), every weight pruned before
/// stays pruned, and a target below the checkpoint's sparsity is refused.
#[test]
fn pruning_a_pruned_checkpoint_reaches_exactly_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = trained(dir.path());
    let half = dir.path().join("half.safetensors");
    let more = dir.path().join("more.safetensors");
    for (scope, target, expected) in [
        // n = 64·300 + 300·100 + 100·10 = 50,200 weights:
        // round(0.93·50,200) = 46,686.
        ("global", "0.93", 46_686),
        // Per layer: round(0.93·19,200) + round(0.93·30,000) + round(0.93·1,000).
        ("layer", "0.93", 17_856 + 27_900 + 930),
    ] {
        ok(&prune_to(&ckpt, "random", &half, "0.5", scope));
        ok(&prune_to(&half, "random", &more, target, scope));
        let (before, after) = (masks(&half), masks(&more));
        let pruned: usize = after
            .values()
            .map(|m| m.iter().filter(|v| **v == 0).count())
            .sum();
        assert_eq!(pruned, expected, "{scope}");
        for (name, m) in &before {
            for (i, (b, a)) in m.iter().zip(&after[name]).enumerate() {
                assert!(*b == 1 || *a == 0, "{scope}: {name}[{i}] regrew");
            }
        }
    }
    // Below what the checkpoint already prunes: refused, nothing written.
    let lower = dir.path().join("lower.safetensors");
    fails_with(
        &prune_to(&more, "magnitude", &lower, "0.5", "global"),
        "already",
    );
    assert!(!lower.exists());
}
