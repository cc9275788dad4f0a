//! `kdprune export`: every command reads every encoding, the same accuracy
//! from each, bad input refused without a file left behind, and — where
//! Python has them — PyTorch and compressed-tensors reading the files.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use common::{fails_with, kdprune, ok, p};
use kdprune_models::checkpoint;

fn export(input: &Path, format: &str, out: &Path) -> String {
    ok(&kdprune(&[
        "export",
        p(input),
        "--format",
        format,
        "--out",
        p(out),
    ]))
}

#[test]
fn every_command_reads_every_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let native = common::train_and_prune(dir.path(), "lenet-300-100", "0.95").1;
    let sparse = dir.path().join("pruned.sparse.safetensors");
    let dense = dir.path().join("pruned.dense.safetensors");
    let line = export(&native, "sparse", &sparse);
    assert!(
        line.contains("(sparse-bitmask)") && line.contains("of 50,610 values non-zero"),
        "{line}"
    );
    export(&native, "dense", &dense);

    let accuracy = |f: &Path| ok(&kdprune(&["eval", p(f)]));
    let expected = accuracy(&native);
    assert_eq!(accuracy(&sparse), expected);
    assert_eq!(accuracy(&dense), expected);

    // verify proves the sparsity from the sparse file alone
    let table = ok(&kdprune(&["verify", p(&sparse)]));
    assert!(table.contains("global sparsity: 0.9500"), "{table}");

    // the masks come back from the sparse file: retraining keeps them
    let retrained = dir.path().join("retrained.safetensors");
    ok(&kdprune(&[
        "retrain",
        "--checkpoint",
        p(&sparse),
        "--epochs",
        "1",
        "--quiet",
        "--out",
        p(&retrained),
    ]));
    let table = ok(&kdprune(&["verify", p(&retrained)]));
    assert!(table.contains("global sparsity: 0.9500"), "{table}");

    // prune further from a sparse file, and distil under a dense-exported teacher
    let further = dir.path().join("further.safetensors");
    ok(&kdprune(&[
        "prune",
        "--checkpoint",
        p(&sparse),
        "--criterion",
        "magnitude",
        "--sparsity",
        "0.97",
        "--out",
        p(&further),
    ]));
    let student = dir.path().join("student");
    ok(&kdprune(&[
        "distill",
        "--teacher",
        p(&dense),
        "--epochs",
        "1",
        "--quiet",
        "--out",
        p(&student),
    ]));

    // INT8: weights per output channel, activations per batch or calibrated
    let int8 = dir.path().join("pruned.int8.safetensors");
    let line = export(&native, "int8", &int8);
    assert!(line.contains("(int-quantized)"), "{line}");
    let int8_static = dir.path().join("pruned.int8s.safetensors");
    ok(&kdprune(&[
        "export",
        p(&native),
        "--format",
        "int8",
        "--calibration-batches",
        "2",
        "--out",
        p(&int8_static),
    ]));
    // both: the INT8 weights' non-zeros bitmask-encoded, the smallest file
    // (here 2,510 non-zero weights of a byte against four, less the INT8
    // scales' 1,640 bytes: the bitmask, row offsets and biases, the same in
    // both, are most of this small model's file)
    let sparse_int8 = dir.path().join("pruned.sparse-int8.safetensors");
    let line = export(&native, "sparse-int8", &sparse_int8);
    assert!(line.contains("(sparse-int8)"), "{line}");
    let bytes = |f: &Path| std::fs::metadata(f).unwrap().len();
    assert!(
        bytes(&sparse_int8) + 5_000 < bytes(&sparse) && bytes(&sparse_int8) < bytes(&int8) / 2,
        "{} against {} and {}",
        bytes(&sparse_int8),
        bytes(&sparse),
        bytes(&int8)
    );
    for f in [&int8, &int8_static, &sparse_int8] {
        let run = kdprune(&["eval", p(f)]);
        let out = ok(&run);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(stderr.contains("sparse int8"), "{stderr}");
        let acc = |s: &str| {
            s.lines()
                .next()
                .unwrap()
                .trim_start_matches("test accuracy: ")
                .parse::<f64>()
                .unwrap()
        };
        // 8-bit weights and activations cost at most a few points on digits
        assert!(
            (acc(&out) - acc(&expected)).abs() < 0.05,
            "{out} vs {expected}"
        );
        // the other commands see the dequantised weights and the masks
        let table = ok(&kdprune(&["verify", p(f)]));
        assert!(table.contains("global sparsity: 0.95"), "{table}");
    }
    let retrained_int8 = dir.path().join("retrained-int8.safetensors");
    ok(&kdprune(&[
        "retrain",
        "--checkpoint",
        p(&int8),
        "--epochs",
        "1",
        "--quiet",
        "--out",
        p(&retrained_int8),
    ]));

    // and a sparse file exported again is the same bytes
    let again = dir.path().join("again.safetensors");
    export(&sparse, "sparse", &again);
    assert_eq!(
        std::fs::read(&sparse).unwrap(),
        std::fs::read(&again).unwrap()
    );
}

#[test]
fn bad_exports_fail_and_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let native = common::train_and_prune(dir.path(), "lenet-300-100", "0.95").1;
    let out = dir.path().join("out.safetensors");
    let no_file = |out: &Path| {
        assert!(!out.exists(), "{} was left behind", out.display());
        let stray: Vec<_> = std::fs::read_dir(out.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(stray.is_empty(), "temporary files left: {stray:?}");
    };

    fails_with(
        &kdprune(&["export", p(&native), "--format", "zip", "--out", p(&out)]),
        "unknown checkpoint encoding 'zip'",
    );
    no_file(&out);
    let before = std::fs::read(&native).unwrap();
    fails_with(
        &kdprune(&[
            "export",
            p(&native),
            "--format",
            "sparse",
            "--out",
            p(&native),
        ]),
        "is the input checkpoint",
    );
    assert_eq!(std::fs::read(&native).unwrap(), before);

    // a truncated sparse file
    let sparse = dir.path().join("s.safetensors");
    export(&native, "sparse", &sparse);
    let bytes = std::fs::read(&sparse).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    fails_with(
        &kdprune(&["export", p(&cut), "--format", "dense", "--out", p(&out)]),
        "truncated",
    );
    no_file(&out);
    fails_with(&kdprune(&["eval", p(&cut)]), "truncated");

    // a masked weight that is not zero
    let mut ckpt = checkpoint::load(&native, &Device::Cpu).unwrap();
    let w = ckpt.tensors["fc1.weight"].ones_like().unwrap();
    ckpt.tensors.insert("fc1.weight".into(), w);
    let broken = dir.path().join("broken.safetensors");
    checkpoint::save(&broken, &ckpt).unwrap();
    fails_with(
        &kdprune(&["export", p(&broken), "--format", "sparse", "--out", p(&out)]),
        "masked weights are not zero",
    );
    no_file(&out);
}

/// The interpreter of the Python checks: `KDPRUNE_PYTHON`, else `python3`;
/// `None` (with the reason printed) when it cannot import `modules`.
fn python_with(modules: &str) -> Option<String> {
    let python = std::env::var("KDPRUNE_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let found = Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipped: `{python}` cannot import {modules} (set KDPRUNE_PYTHON to an interpreter that can)");
    }
    found.then_some(python)
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/python")
        .join(name)
}

#[test]
fn pytorch_loads_the_dense_file_and_computes_the_same_logits() {
    let Some(python) = python_with("torch, safetensors, numpy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (model, c, h, w) in [("lenet-300-100", 1, 8, 8), ("lenet5", 1, 8, 8)] {
        let trained = dir.path().join(format!("{model}.safetensors"));
        ok(&kdprune(&[
            "train",
            "--model",
            model,
            "--epochs",
            "1",
            "--quiet",
            "--out",
            p(&trained),
        ]));
        let dense = dir.path().join(format!("{model}.dense.safetensors"));
        export(&trained, "dense", &dense);
        let batch = 3;
        let out = Command::new(&python)
            .arg(script("torch_load_dense.py"))
            .args([
                p(&dense),
                model,
                &c.to_string(),
                &h.to_string(),
                &w.to_string(),
                "10",
                &batch.to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs: Vec<f32> = serde_json::from_slice(&out.stdout).unwrap();

        let n = batch * c * h * w;
        let x: Vec<f32> = (0..n).map(|i| (i as f64).sin() as f32).collect();
        let xs = Tensor::from_vec(x, (batch, c, h, w), &Device::Cpu).unwrap();
        let ours = checkpoint::load(&dense, &Device::Cpu)
            .unwrap()
            .to_model(&Device::Cpu)
            .unwrap();
        let logits = ours
            .forward_t(&xs, false)
            .unwrap()
            .logits
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(logits.len(), theirs.len());
        for (a, b) in logits.iter().zip(&theirs) {
            assert!(
                (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                "{model}: {a} vs PyTorch {b}"
            );
        }
    }
}

#[test]
fn compressed_tensors_decodes_the_sparse_file() {
    let Some(python) =
        python_with("compressed_tensors.compressors.sparse_compressors.sparse_bitmask")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let native = common::train_and_prune(dir.path(), "lenet-300-100", "0.95").1;
    let sparse = dir.path().join("s.safetensors");
    let dense = dir.path().join("d.safetensors");
    export(&native, "sparse", &sparse);
    export(&native, "dense", &dense);
    // and the INT8 pair: the sparse-int8 file decodes to the int8 file's i8 weights
    let sparse_int8 = dir.path().join("s8.safetensors");
    let int8 = dir.path().join("i8.safetensors");
    export(&native, "sparse-int8", &sparse_int8);
    export(&native, "int8", &int8);
    for (encoded, plain) in [(&sparse, &dense), (&sparse_int8, &int8)] {
        let out = Command::new(&python)
            .arg(script("decode_sparse_with_compressed_tensors.py"))
            .args([p(encoded), p(plain)])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("decoded 3 tensors, all equal"), "{stdout}");
    }
}
