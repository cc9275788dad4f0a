//! `kdprune sweep` end to end on the built-in digits: a tiny grid (two
//! methods, two sparsities, one seed, one epoch per stage), its outputs, and
//! resuming after an interruption.

mod common;

use common::{fails_with, kdprune, ok};
use std::path::Path;
use std::process::Output;

const TINY: &str = r#"
methods = ["magnitude", "teacher-guided"]
sparsities = [0.9, 0.95]
seeds = [0]
teacher_model = "mlp-64-32"
teacher_epochs = 1
student_epochs = 1
kd_epochs = 1
retrain_epochs = 1
"#;

fn sweep(config: &Path, out: &Path) -> Output {
    kdprune(&[
        "sweep",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ])
}

#[test]
fn a_tiny_sweep_writes_its_results_and_resumes_without_redoing_cells() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sweep.toml");
    std::fs::write(&config, TINY).unwrap();
    let out = dir.path().join("out");
    ok(&sweep(&config, &out));

    for f in [
        "results.csv",
        "results.json",
        "table.md",
        "accuracy.svg",
        "accuracy.png",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let cells: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(cells.len(), 4, "2 methods × 2 sparsities × 1 seed");
    for c in &cells {
        let target = c["sparsity"].as_f64().unwrap();
        let measured = c["measured_sparsity"].as_f64().unwrap();
        assert!((measured - target).abs() < 1e-3, "{c}: measured {measured}");
        let acc = c["final_accuracy"].as_f64().unwrap();
        assert!(acc > 0.1 && acc <= 1.0, "{c}: accuracy {acc}");
    }
    let table = std::fs::read_to_string(out.join("table.md")).unwrap();
    assert!(table.contains("| teacher-guided |"), "{table}");

    // An interrupted sweep: one cell file is gone. The rerun recomputes that
    // cell alone (the others keep their files untouched) and, same seed,
    // gets the same final accuracy and measured sparsity (its wall time
    // differs).
    let cell_dir = out.join("cells");
    let lost = cell_dir.join("teacher-guided_s0.95_seed0.json");
    let before = std::fs::read_to_string(&lost).unwrap();
    std::fs::remove_file(&lost).unwrap();
    let kept = cell_dir.join("magnitude_s0.9_seed0.json");
    let kept_time = std::fs::metadata(&kept).unwrap().modified().unwrap();
    let rerun = kdprune(&[
        "sweep",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    ok(&rerun);
    let log = String::from_utf8_lossy(&rerun.stderr);
    assert_eq!(log.matches("done before, skipped").count(), 3, "{log}");
    assert_eq!(
        std::fs::metadata(&kept).unwrap().modified().unwrap(),
        kept_time
    );
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&lost).unwrap()).unwrap();
    let before: serde_json::Value = serde_json::from_str(&before).unwrap();
    assert_eq!(before["final_accuracy"], after["final_accuracy"]);
    assert_eq!(before["measured_sparsity"], after["measured_sparsity"]);

    // Other settings in the same folder are refused, not mixed in.
    std::fs::write(
        &config,
        TINY.replace("retrain_epochs = 1", "retrain_epochs = 2"),
    )
    .unwrap();
    fails_with(&sweep(&config, &out), "other settings");

    // ... but a sweep with other retraining may share the seed's teacher and
    // dense student through `models_dir`: they are read, not retrained.
    let teacher = out.join("seed0").join("teacher.safetensors");
    let teacher_time = std::fs::metadata(&teacher).unwrap().modified().unwrap();
    let shared = format!(
        "models_dir = {:?}\n{}",
        out.to_str().unwrap(),
        TINY.replace("retrain_epochs = 1", "retrain_epochs = 2")
    );
    std::fs::write(&config, shared).unwrap();
    ok(&sweep(&config, &dir.path().join("variant")));
    assert_eq!(
        std::fs::metadata(&teacher).unwrap().modified().unwrap(),
        teacher_time
    );
    assert!(dir.path().join("variant").join("table.md").is_file());
}

#[test]
fn bad_sweep_configs_fail_before_any_training() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        ("sparsities = [0.9, 1.2]", "sparsit"),
        ("methods = [\"obd\"]", "unknown method `obd`"),
        ("colour = 3", "unknown field"),
    ] {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, text).unwrap();
        fails_with(&sweep(&config, &dir.path().join("never")), needle);
        assert!(!dir.path().join("never").join("seed0").exists());
    }
}

/// Every sweep configuration of the repository reads and validates (the
/// shared settings are flattened into the sweep's keys: the files keep their
/// flat keys).
#[test]
fn the_repository_sweep_configs_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/sweeps");
    let mut files = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 14, "{files:?}");
    for f in files {
        let cfg = kdprune_cli::sweep::SweepConfig::from_toml_file(&f)
            .unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
        cfg.validate()
            .unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
        assert_eq!(cfg.settings.dataset, "fashion-mnist", "{}", f.display());
    }
}

/// Reports and sweep cells are JSON read back on resume: every f64 must
/// come back with the same bits (serde_json's `float_roundtrip`), so that a
/// resumed sweep's tables equal an uninterrupted one's.
#[test]
fn json_floats_round_trip_to_the_same_bits() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut values: Vec<f64> = (0..200_000)
        .map(|_| f64::from_bits(rng.random::<u64>()))
        .filter(|v| v.is_finite())
        .collect();
    // accuracies and means as the sweep computes them
    values.extend((0..10_000).map(|k| k as f64 / 10_000.0));
    values.extend((1..2_000).map(|k| (k as f64 / 1_000.0) / 3.0));
    let text = serde_json::to_string(&values).unwrap();
    let back: Vec<f64> = serde_json::from_str(&text).unwrap();
    let differ = values
        .iter()
        .zip(&back)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(differ, 0, "{differ} of {} values changed", values.len());
}

/// Two workers on one sweep folder (as Slurm array tasks on a shared
/// filesystem would be): each cell is computed once, by one of them (its
/// lock claims it), the last to finish writes the tables, and the cells
/// equal a single worker's; `--report-only` rewrites the tables alone.
#[test]
fn two_workers_fill_one_sweep_without_computing_a_cell_twice() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sweep.toml");
    std::fs::write(
        &config,
        TINY.replace(
            "sparsities = [0.9, 0.95]",
            "sparsities = [0.5, 0.7, 0.9, 0.95]",
        ),
    )
    .unwrap();
    let shared = dir.path().join("shared");
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_kdprune"))
            .args(["sweep", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(&shared)
            .env("RAYON_NUM_THREADS", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    // the cells each computed: lines "[k/8] METHOD s=S seed 0" without a note
    let computed = |o: &std::process::Output| -> Vec<String> {
        String::from_utf8_lossy(&o.stderr)
            .lines()
            .filter(|l| l.starts_with('[') && !l.contains(':'))
            .map(|l| l.split_once("] ").unwrap().1.to_string())
            .collect()
    };
    let (ca, cb) = (computed(&a), computed(&b));
    let mut all: Vec<String> = ca.iter().chain(&cb).cloned().collect();
    all.sort();
    let n = all.len();
    all.dedup();
    assert_eq!(n, all.len(), "a cell computed twice: {ca:?} {cb:?}");
    assert_eq!(n, 8, "every cell computed once: {ca:?} {cb:?}");
    assert!(
        shared.join("results.csv").is_file(),
        "the last worker writes the tables"
    );
    assert!(std::fs::read_dir(shared.join("cells")).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".lock")));

    // one worker alone gives the same cells (accuracies, bit for bit)
    let alone = dir.path().join("alone");
    ok(&sweep(&config, &alone));
    let accuracies = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d.join("cells"))
            .unwrap()
            .map(|e| {
                let c: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(e.unwrap().path()).unwrap())
                        .unwrap();
                format!("{} {} {}", c["method"], c["sparsity"], c["final_accuracy"])
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(accuracies(&shared), accuracies(&alone));

    // --report-only rewrites the tables from the cells
    std::fs::remove_file(shared.join("results.csv")).unwrap();
    ok(&kdprune(&[
        "sweep",
        "--config",
        config.to_str().unwrap(),
        "--out",
        shared.to_str().unwrap(),
        "--report-only",
    ]));
    assert!(shared.join("results.csv").is_file());
    // and refuses a folder with unfinished cells
    std::fs::remove_file(shared.join("cells").join("magnitude_s0.5_seed0.json")).unwrap();
    fails_with(
        &kdprune(&[
            "sweep",
            "--config",
            config.to_str().unwrap(),
            "--out",
            shared.to_str().unwrap(),
            "--report-only",
        ]),
        "1 unfinished cells (first: magnitude s=0.5 seed 0)",
    );
}
