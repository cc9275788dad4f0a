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
        // a two-layer MLP: nothing left to prune with --keep-first --keep-last
        ok(&kdprune(&[
            "train",
            "--model",
            "mlp-8",
            "--epochs",
            "1",
            "--quiet",
            "--out",
            p(&root.join("mlp8.safetensors")),
        ]));

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

        // configuration files
        std::fs::write(root.join("bad.toml"), "[[x").unwrap();
        std::fs::write(root.join("unknown-key.toml"), "nonsense_key = 1\n").unwrap();
        std::fs::write(root.join("wrong-type.toml"), "seed = \"a\"\n").unwrap();
        std::fs::write(root.join("bad-sparsity.toml"), "sparsity = 1.5\n").unwrap();
        std::fs::write(
            root.join("sweep-empty.toml"),
            format!("out = \"{}\"\nmethods = []\n", out.join("sweep").display()),
        )
        .unwrap();
        std::fs::write(
            root.join("sweep-bad-method.toml"),
            format!(
                "out = \"{}\"\nmethods = [\"bogus\"]\nsparsities = [0.5]\nseeds = [0]\n",
                out.join("sweep").display()
            ),
        )
        .unwrap();

        // checkpoints that are not: garbage, empty, plain safetensors, bad masks
        std::fs::write(root.join("garbage.safetensors"), b"hello, not a checkpoint").unwrap();
        std::fs::write(root.join("empty.safetensors"), b"").unwrap();
        raw_safetensors(
            &root.join("plain.safetensors"),
            r#"{"fc1.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#,
            &[0; 16],
        );
        let mlp = r#"{"arch":"mlp","input_dim":64,"hidden":[2],"num_classes":10}"#;
        let mask = |name: &str, shape: &str, bytes: Vec<u8>| {
            let n = bytes.len();
            let mut data = vec![0u8; 640];
            data.extend(bytes);
            raw_safetensors(
                &root.join(name),
                &format!(
                    r#"{{"__metadata__":{{"kdprune.format":"1","kdprune.model":"{}"}},"fc1.weight":{{"dtype":"F32","shape":[2,64],"data_offsets":[0,512]}},"fc1.bias":{{"dtype":"F32","shape":[2],"data_offsets":[512,520]}},"fc2.weight":{{"dtype":"F32","shape":[10,2],"data_offsets":[520,600]}},"fc2.bias":{{"dtype":"F32","shape":[10],"data_offsets":[600,640]}},"mask.fc1.weight":{{"dtype":"U8","shape":{shape},"data_offsets":[640,{}]}}}}"#,
                    mlp.replace('"', "\\\""),
                    640 + n
                ),
                &data,
            );
        };
        let mut twos = vec![1u8; 128];
        twos[5] = 2;
        mask("mask-value.safetensors", "[2,64]", twos);
        mask("mask-shape.safetensors", "[64]", vec![1u8; 64]);

        // CIFAR-10 batches, one of them cut short
        let cifar = root.join("cifar");
        std::fs::create_dir_all(&cifar).unwrap();
        let record: Vec<u8> = std::iter::once(3u8)
            .chain(std::iter::repeat_n(9u8, 3072))
            .collect();
        for f in kdprune_data::cifar::CIFAR10_TRAIN_FILES {
            std::fs::write(cifar.join(f), &record).unwrap();
        }
        std::fs::write(cifar.join("test_batch.bin"), &record[..1000]).unwrap();
        std::fs::create_dir_all(root.join("empty-cache")).unwrap();
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
        // --- elastic kernels (Once-for-All) on networks without them, bad sizes
        (
            args![
                "train",
                "--model",
                "lenet5",
                "--elastic-kernels",
                "7,5",
                "--out",
                out_ckpt
            ],
            "no elastic kernels",
        ),
        (
            args![
                "train",
                "--model",
                "efficientnet-b0-k7",
                "--elastic-kernels",
                "7,4",
                "--out",
                out_ckpt
            ],
            "must be odd",
        ),
        (
            args!["eval", f.path("good.safetensors"), "--kernel", "3"],
            "no elastic kernels",
        ),
        (
            args!["eval", f.path("good.safetensors"), "--recalibrate-bn", "64"],
            "--kernel",
        ),
        (
            args![
                "eval",
                f.path("good.safetensors"),
                "--kernel",
                "3",
                "--recalibrate-bn",
                "0"
            ],
            "at least 1",
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
        // --- flags clap or the commands refuse
        (
            args!["train", "--batch-size", "abc", "--out", out_ckpt],
            "invalid value",
        ),
        (
            args!["train", "--model", "resnet9000", "--out", out_ckpt],
            "unknown model",
        ),
        (
            args!["train", "--model", "mlp-0", "--out", out_ckpt],
            "positive",
        ),
        (
            args!["train", "--model", "mlp-", "--out", out_ckpt],
            "not a positive integer",
        ),
        (
            args!["train", "--dataset", "imagenet-22k", "--out", out_ckpt],
            "imagenet-22k",
        ),
        (
            args!["train", "--dataset", "fashion-mnist", "--out", out_ckpt],
            "--data-dir",
        ),
        (
            args!["train", "--device", "bogus", "--out", out_ckpt],
            "unknown device",
        ),
        (
            args!["train", "--loss", "kd", "--out", out_ckpt],
            "needs a teacher",
        ),
        (
            args!["distill", "--loss", "kd:abc", "--out", f.out("d")],
            "not a number",
        ),
        (
            args!["distill", "--loss", "bogus", "--out", f.out("d")],
            "unknown loss",
        ),
        (
            args![
                "distill",
                "--loss",
                "kd+at:1000",
                "--teacher",
                f.path("good.safetensors"),
                "--student-model",
                "lenet5",
                "--feature-pairs",
                "nonsense",
                "--out",
                f.out("d")
            ],
            "no feature",
        ),
        (
            args![
                "distill",
                "--loss",
                "kd",
                "--teacher",
                f.path("good.safetensors"),
                "--feature-pairs",
                "s.fc1=t.fc1",
                "--out",
                f.out("d")
            ],
            "--feature-pairs is used only by the feature losses",
        ),
        (
            args![
                "prune",
                "--checkpoint",
                f.path("good.safetensors"),
                "--criterion",
                "bogus",
                "--out",
                out_ckpt
            ],
            "unknown importance criterion",
        ),
        (
            args![
                "prune",
                "--checkpoint",
                f.path("good.safetensors"),
                "--scope",
                "bogus",
                "--out",
                out_ckpt
            ],
            "invalid value",
        ),
        (
            args![
                "prune",
                "--checkpoint",
                f.path("good.safetensors"),
                "--structured",
                "bogus",
                "--out",
                out_ckpt
            ],
            "invalid value",
        ),
        (
            args![
                "prune",
                "--checkpoint",
                f.path("good.safetensors"),
                "--criterion",
                "teacher-guided",
                "--out",
                out_ckpt
            ],
            "needs a teacher",
        ),
        (
            args![
                "prune",
                "--checkpoint",
                f.path("missing.safetensors"),
                "--sparsity",
                "0.5",
                "--out",
                out_ckpt
            ],
            "missing.safetensors",
        ),
        (
            args![
                "retrain",
                "--checkpoint",
                f.path("good.safetensors"),
                "--out",
                out_ckpt
            ],
            "has no masks",
        ),
        (
            args![
                "prune",
                "--checkpoint",
                f.path("mlp8.safetensors"),
                "--criterion",
                "magnitude",
                "--keep-first",
                "--keep-last",
                "--out",
                out_ckpt
            ],
            "no prunable parameters",
        ),
        (
            args![
                "export",
                f.path("good.safetensors"),
                "--format",
                "bogus",
                "--out",
                out_ckpt
            ],
            "invalid value",
        ),
        (
            args![
                "infer",
                f.path("good.safetensors"),
                "--input",
                f.path("missing.png")
            ],
            "missing.png",
        ),
        (args!["summarize", f.path("missing.json")], "missing.json"),
        (args!["summarize", f.path("a-file")], "not a kdprune report"),
        (
            args!["embed", "--model", f.path("missing"), "--text", "hi"],
            "not a model folder",
        ),
        (
            args![
                "eval-retrieval",
                "--model",
                p(&f.root),
                "--data-dir",
                f.path("missing")
            ],
            "missing",
        ),
        // --- configuration files
        (
            args!["run", "--config", f.path("bad.toml"), "--out", f.out("run")],
            "not toml",
        ),
        (
            args![
                "run",
                "--config",
                f.path("unknown-key.toml"),
                "--out",
                f.out("run")
            ],
            "unknown field `nonsense_key`",
        ),
        (
            args![
                "run",
                "--config",
                f.path("wrong-type.toml"),
                "--out",
                f.out("run")
            ],
            "seed",
        ),
        (
            args![
                "run",
                "--config",
                f.path("bad-sparsity.toml"),
                "--out",
                f.out("run")
            ],
            "[0, 1)",
        ),
        (
            args!["run", "--config", f.path("missing.toml")],
            "missing.toml",
        ),
        (
            args!["sweep", "--config", f.path("sweep-empty.toml")],
            "at least one value",
        ),
        (
            args!["sweep", "--config", f.path("sweep-bad-method.toml")],
            "bogus",
        ),
        (
            args!["compress", "--config", f.path("missing.toml")],
            "missing.toml",
        ),
        // --- checkpoints that are not, or not what the command needs
        (
            args!["eval", f.path("garbage.safetensors")],
            "not a safetensors file",
        ),
        (
            args!["eval", f.path("empty.safetensors")],
            "empty.safetensors",
        ),
        (
            args!["verify", f.path("plain.safetensors")],
            "no kdprune metadata",
        ),
        (
            args!["verify", f.path("mask-value.safetensors")],
            "mask of 'fc1.weight'",
        ),
        (
            args!["eval", f.path("mask-shape.safetensors")],
            "mask of 'fc1.weight'",
        ),
        (
            args!["eval", f.path("good.safetensors"), "--model", "lenet5"],
            "architecture",
        ),
        (
            args![
                "export",
                f.path("nan.safetensors"),
                "--format",
                "sparse",
                "--out",
                out_ckpt
            ],
            "not finite",
        ),
        (
            args![
                "compare",
                f.path("good.safetensors"),
                f.path("garbage.safetensors")
            ],
            "garbage.safetensors",
        ),
        // --- data
        (
            args![
                "train",
                "--dataset",
                "cifar10",
                "--data-dir",
                f.path("cifar"),
                "--out",
                out_ckpt
            ],
            "truncated",
        ),
        (
            args![
                "train",
                "--dataset",
                "fashion-mnist",
                "--hub",
                "--offline",
                "--hub-cache",
                f.path("empty-cache"),
                "--out",
                out_ckpt
            ],
            "once without --offline",
        ),
    ];
    assert!(cases.len() >= 60, "{} cases", cases.len());
    for (args, needle) in &cases {
        refused(&f, args, needle);
    }
}
