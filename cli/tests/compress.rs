//! `kdprune compress`: the pipeline end to end on digits, resumed, and its
//! configuration checked before any work.

mod common;

use std::path::Path;

use candle_core::Device;

use common::{fails_with, kdprune, ok, p};

fn config(dir: &Path, retrain_epochs: usize, extra: &str) -> std::path::PathBuf {
    let path = dir.join(format!("compress-{retrain_epochs}.toml"));
    let text = format!(
        r#"
dataset = "digits"
out = "{}"
{extra}
[teacher]
model = "mlp-256"
epochs = 3
[student]
model = "lenet-300-100"
loss = "kd"
epochs = 2
[prune]
criterion = "teacher-guided"
sparsity = 0.9
score_batches = 2
[retrain]
epochs = {retrain_epochs}
[export]
calibration_batches = 2
"#,
        dir.join("run").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn compress_runs_every_stage_resumes_and_compares() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1, "");
    let out = ok(&kdprune(&["compress", "--config", p(&cfg), "--quiet"]));
    for stage in [
        "teacher",
        "student",
        "prune",
        "retrain",
        "export-sparse",
        "export-int8",
        "export-sparse-int8",
    ] {
        assert!(out.contains(&format!("{stage}: done")), "{out}");
    }
    let run = dir.path().join("run");
    for f in [
        "teacher.safetensors",
        "student/student.safetensors",
        "pruned.safetensors",
        "retrained.safetensors",
        "retrained.sparse.safetensors",
        "retrained.int8.safetensors",
        "retrained.sparse-int8.safetensors",
        "compare.md",
        "stages.json",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("compare.json")).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let encodings: Vec<&str> = rows
        .iter()
        .map(|r| r["encoding"].as_str().unwrap())
        .collect();
    assert_eq!(
        encodings,
        [
            "kdprune",
            "kdprune",
            "kdprune",
            "sparse-bitmask",
            "int-quantized",
            "sparse-int8"
        ]
    );
    // the retrained student keeps 10 % of its 50,200 weights (and its 410 biases)
    assert!(
        rows[2]["nonzero"].as_u64().unwrap() <= 5_020 + 410,
        "{}",
        rows[2]
    );
    assert_eq!(rows[2]["nonzero"], rows[3]["nonzero"]);
    assert!(rows[3]["size_ratio"].as_f64().unwrap() < rows[1]["size_ratio"].as_f64().unwrap());
    // the sparse INT8 file is the smallest
    let size = |r: &serde_json::Value| r["file_bytes"].as_u64().unwrap();
    assert!(
        rows[..5].iter().all(|r| size(&rows[5]) < size(r)),
        "{rows:?}"
    );

    // the folder publishes (dry run): the retrained model in the sparse
    // encoding, the comparison in the card and beside it
    let publish = dir.path().join("publish");
    ok(&kdprune(&[
        "publish",
        p(&run),
        "--repo",
        "me/digits-compressed",
        "--format",
        "sparse",
        "--dry-run",
        p(&publish),
    ]));
    let card = std::fs::read_to_string(publish.join("README.md")).unwrap();
    assert!(card.contains("## Size and latency"), "{card}");
    assert!(card.contains("sparse-int8"), "{card}");
    assert!(card.contains("`kdprune compress`"), "{card}");
    assert_eq!(
        std::fs::read(publish.join("model.safetensors")).unwrap(),
        std::fs::read(run.join("retrained.sparse.safetensors")).unwrap(),
        "the sparse export of the retrained model differs from compress's own"
    );
    assert!(publish.join("compare.json").is_file());

    // a second run keeps every stage
    let before = std::fs::read(run.join("retrained.safetensors")).unwrap();
    let again = ok(&kdprune(&["compress", "--config", p(&cfg), "--quiet"]));
    assert_eq!(
        again.matches("kept from an earlier run").count(),
        7,
        "{again}"
    );
    assert_eq!(
        std::fs::read(run.join("retrained.safetensors")).unwrap(),
        before
    );

    // a changed stage in the same folder is refused, not mixed in
    let changed = config(dir.path(), 2, "");
    fails_with(
        &kdprune(&["compress", "--config", p(&changed), "--quiet"]),
        "made with another configuration",
    );
    // unless the stage's file is gone: then it is made anew (an interrupted run resumes)
    std::fs::remove_file(run.join("retrained.int8.safetensors")).unwrap();
    let resumed = ok(&kdprune(&["compress", "--config", p(&cfg), "--quiet"]));
    assert!(
        resumed.contains("export-int8: done") && resumed.contains("retrain: kept"),
        "{resumed}"
    );
}

#[test]
fn a_bad_configuration_fails_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1, "colour = 3");
    fails_with(&kdprune(&["compress", "--config", p(&cfg)]), "colour");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("colour = 3", "")
        .replace("sparsity = 0.9", "sparsity = 1.2");
    std::fs::write(&cfg, text).unwrap();
    fails_with(&kdprune(&["compress", "--config", p(&cfg)]), "1.2");
    assert!(!dir.path().join("run").exists());
}

#[test]
fn gmp_prunes_while_fine_tuning_and_the_retraining_keeps_its_mask() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1, "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(r#"criterion = "teacher-guided""#, r#"criterion = "gmp""#)
        + "[prune.gmp]\nepochs = 2\nfrequency = 5\n";
    std::fs::write(&cfg, text).unwrap();
    let out = ok(&kdprune(&["compress", "--config", p(&cfg), "--quiet"]));
    assert!(out.contains("prune: done"), "{out}");
    let run = dir.path().join("run");
    let pruned =
        kdprune_models::checkpoint::load(&run.join("pruned.safetensors"), &Device::Cpu).unwrap();
    let retrained =
        kdprune_models::checkpoint::load(&run.join("retrained.safetensors"), &Device::Cpu).unwrap();
    // lenet-300-100's three weight matrices, 50,200 entries, 90 % of them pruned
    let bits = |c: &kdprune_models::Checkpoint| -> Vec<(String, Vec<u8>)> {
        c.masks
            .iter()
            .map(|(n, m)| (n.clone(), m.flatten_all().unwrap().to_vec1::<u8>().unwrap()))
            .collect()
    };
    let zeros = |c: &kdprune_models::Checkpoint| -> usize {
        c.masks
            .values()
            .map(|m| {
                m.flatten_all()
                    .unwrap()
                    .to_vec1::<u8>()
                    .unwrap()
                    .iter()
                    .filter(|v| **v == 0)
                    .count()
            })
            .sum()
    };
    assert_eq!(pruned.masks.len(), 3);
    assert!(
        (zeros(&pruned) as i64 - 45_180).abs() <= 1,
        "{}",
        zeros(&pruned)
    );
    assert_eq!(
        pruned.metadata.get("stage").map(String::as_str),
        Some("gmp")
    );
    // retraining keeps GMP's mask, and every pruned weight is zero
    assert_eq!(bits(&retrained), bits(&pruned));
    for (name, mask) in &retrained.masks {
        let w = retrained.tensors[name]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let m = mask.flatten_all().unwrap().to_vec1::<u8>().unwrap();
        assert!(
            w.iter().zip(&m).all(|(w, m)| *m == 1 || *w == 0.0),
            "{name}"
        );
    }

    // [prune.gmp] under another criterion is refused before any work
    let other = dir.path().join("other.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(r#"criterion = "gmp""#, r#"criterion = "magnitude""#)
        .replace(
            &run.display().to_string(),
            &dir.path().join("other").display().to_string(),
        );
    std::fs::write(&other, text).unwrap();
    fails_with(
        &kdprune(&["compress", "--config", p(&other)]),
        "applies to criterion = \"gmp\" only",
    );
    assert!(!dir.path().join("other").exists());
}
