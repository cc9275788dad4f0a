//! The bad-input corpus: every case runs the binary on a crafted file or a
//! wrong flag and checks a clean refusal — exit ≠ 0, no panic, one `error:`
//! line naming the problem, and nothing left in the output folder. The
//! crafted files are built here.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use common::{kdprune, ok, p};
use flate2::write::GzEncoder;
use flate2::Compression;
use kdprune_models::checkpoint;

/// A safetensors file written byte by byte: `header` is the JSON header,
/// `data` the bytes after it.
fn raw_safetensors(path: &Path, header: &str, data: &[u8]) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

/// A kdprune checkpoint header with `model` as its config and one 2×2 f32
/// tensor `fc1.weight`.
fn checkpoint_header(model: &str) -> String {
    let model = model.replace('"', "\\\"");
    format!(
        r#"{{"__metadata__":{{"kdprune.format":"1","kdprune.model":"{model}"}},"fc1.weight":{{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}}}"#
    )
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// The files the cases read, in one folder.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    /// Where a case may write; must stay empty.
    out: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let out = root.join("out");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(root.join("a-file"), b"not a folder").unwrap();

        // a trained checkpoint, and the same with a NaN weight
        let good = root.join("good.safetensors");
        ok(&kdprune(&[
            "train",
            "--epochs",
            "1",
            "--quiet",
            "--out",
            p(&good),
        ]));
        let mut ckpt = checkpoint::load(&good, &Device::Cpu).unwrap();
        let w = ckpt.tensors["fc2.weight"].clone();
        let mut v: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        v[3] = f32::NAN;
        ckpt.tensors.insert(
            "fc2.weight".into(),
            Tensor::from_vec(v, w.dims(), &Device::Cpu).unwrap(),
        );
        checkpoint::save(&root.join("nan.safetensors"), &ckpt).unwrap();

        // crafted checkpoints: a config of 16e18 parameters; a header length
        // of 2^60 bytes; a config far larger than the file's tensors
        raw_safetensors(
            &root.join("huge-config.safetensors"),
            &checkpoint_header(
                r#"{"arch":"mlp","input_dim":64,"hidden":[4000000000,4000000000],"num_classes":10}"#,
            ),
            &[0; 16],
        );
        let mut bytes = (1u64 << 60).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        std::fs::write(root.join("huge-header.safetensors"), bytes).unwrap();
        raw_safetensors(
            &root.join("lying-config.safetensors"),
            &checkpoint_header(
                r#"{"arch":"mlp","input_dim":64,"hidden":[20000],"num_classes":10}"#,
            ),
            &[0; 16],
        );

        // IDX folders: a gzip stream longer than its header declares, a
        // split of 0 images, images of 0×0
        let labels = |n: u32| {
            let mut b = [0x801u32, n].map(u32::to_be_bytes).concat();
            b.extend(std::iter::repeat_n(1u8, n as usize));
            b
        };
        let images = |n: u32, h: u32, w: u32| {
            let mut b = [0x803u32, n, h, w].map(u32::to_be_bytes).concat();
            b.extend(std::iter::repeat_n(7u8, (n * h * w) as usize));
            b
        };
        let idx_dir =
            |name: &str, train_images: Vec<u8>, train_labels: Vec<u8>, test_images: Vec<u8>| {
                let d = root.join(name);
                std::fs::create_dir_all(&d).unwrap();
                std::fs::write(d.join("train-images-idx3-ubyte.gz"), gz(&train_images)).unwrap();
                std::fs::write(d.join("train-labels-idx1-ubyte"), train_labels).unwrap();
                std::fs::write(d.join("t10k-images-idx3-ubyte"), test_images).unwrap();
                std::fs::write(d.join("t10k-labels-idx1-ubyte"), labels(2)).unwrap();
            };
        let mut bomb = images(3, 28, 28);
        bomb.extend(std::iter::repeat_n(0u8, 1 << 22));
        idx_dir("idx-bomb", bomb, labels(3), images(2, 28, 28));
        idx_dir("idx-empty", images(0, 28, 28), labels(0), images(2, 28, 28));
        idx_dir("idx-zero-size", images(3, 0, 0), labels(3), images(2, 0, 0));
        Self {
            _dir: dir,
            root,
            out,
        }
    }

    fn path(&self, name: &str) -> String {
        p(&self.root.join(name)).to_string()
    }

    fn out(&self, name: &str) -> String {
        p(&self.out.join(name)).to_string()
    }
}

/// Runs `args` and checks a clean refusal whose message contains `needle`.
fn refused(f: &Fixture, args: &[String], needle: &str) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = kdprune(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let case = args.join(" ");
    assert!(!out.status.success(), "{case}: succeeded\n{stderr}");
    assert!(!stderr.contains("panicked"), "{case}: panicked\n{stderr}");
    assert!(
        stderr.to_lowercase().contains(&needle.to_lowercase()),
        "{case}: the message does not say `{needle}`:\n{stderr}"
    );
    assert_eq!(
        stderr.matches("error:").count(),
        1,
        "{case}: one error line expected:\n{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(&f.out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "{case}: left {left:?} in the output folder"
    );
}

macro_rules! args {
    ($($a:expr),* $(,)?) => { vec![$($a.to_string()),*] };
}

#[test]
fn bad_inputs_are_refused_cleanly() {
    let f = Fixture::new();
    let out_ckpt = f.out("x.safetensors");
    let inside_file = format!("{}/x.safetensors", f.path("a-file"));
    let cases: Vec<(Vec<String>, &str)> = vec![
        // --- outputs that cannot be written, checked before any work
        (args!["train", "--out", inside_file], "a-file is a file"),
        (args!["train", "--out", p(&f.out)], "is a folder"),
        (
            args!["distill", "--out", f.path("a-file")],
            "is a file; --out takes a folder",
        ),
        (
            args!["run", "--out", f.path("a-file")],
            "is a file; --out takes a folder",
        ),
        (
            args![
                "prune",
                "--checkpoint",
                f.path("good.safetensors"),
                "--sparsity",
                "0.5",
                "--out",
                inside_file
            ],
            "a-file is a file",
        ),
        // --- counts and ranges, negative numbers parsed as values
        (
            args!["train", "--epochs", "0", "--out", out_ckpt],
            "at least 1",
        ),
        (
            args!["train", "--batch-size", "0", "--out", out_ckpt],
            "at least 1",
        ),
        (
            args!["run", "--sparsity", "-0.1", "--out", f.out("run")],
            "[0, 1)",
        ),
        (
            args!["run", "--sparsity", "1.2", "--out", f.out("run")],
            "[0, 1)",
        ),
        (
            args![
                "prune",
                "--checkpoint",
                f.path("good.safetensors"),
                "--sparsity",
                "-5",
                "--out",
                out_ckpt
            ],
            "[0, 1)",
        ),
        (
            args![
                "prune",
                "--checkpoint",
                f.path("good.safetensors"),
                "--sparsity",
                "0.5",
                "--criterion",
                "snip",
                "--score-batches",
                "1000000000000",
                "--out",
                out_ckpt
            ],
            "passes over",
        ),
        // --- sizes that would exhaust memory
        (
            args!["train", "--model", "mlp-100000-100000", "--out", out_ckpt],
            "40.0 GB",
        ),
        (
            args!["train", "--model", "lenet5-x5000", "--out", out_ckpt],
            "parameters",
        ),
        (
            args!["eval", f.path("huge-config.safetensors")],
            "parameters",
        ),
        (
            args!["verify", f.path("huge-header.safetensors")],
            "huge-header.safetensors",
        ),
        (
            args!["eval", f.path("lying-config.safetensors")],
            "fc1.bias",
        ),
        // --- files that are not what they should be
        (
            args![
                "train",
                "--model",
                "lenet5",
                "--init",
                f.path("good.safetensors"),
                "--out",
                out_ckpt
            ],
            "not the --model",
        ),
        (args!["eval", f.path("nan.safetensors")], "not finite"),
        (args!["verify", f.path("nan.safetensors")], "fc2.weight"),
        (args!["eval", p(&f.root)], "is a directory"),
        (
            args![
                "train",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                f.path("idx-bomb"),
                "--out",
                out_ckpt
            ],
            "more bytes than",
        ),
        (
            args![
                "train",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                f.path("idx-empty"),
                "--out",
                out_ckpt
            ],
            "the training split has no images",
        ),
        (
            args![
                "train",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                f.path("idx-zero-size"),
                "--out",
                out_ckpt
            ],
            "1x0x0 (no pixel)",
        ),
    ];
    for (args, needle) in &cases {
        refused(&f, args, needle);
    }
}
