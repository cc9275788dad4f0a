//! End-to-end tests of the `kdprune` binary on the built-in digits data.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use common::{fails_with, kdprune, ok, p};
use kdprune_models::checkpoint;

fn train_small(dir: &Path, name: &str, seed: &str, model: &str) -> PathBuf {
    let out = dir.join(name);
    ok(&kdprune(&[
        "train",
        "--model",
        model,
        "--epochs",
        "2",
        "--seed",
        seed,
        "--quiet",
        "--out",
        p(&out),
    ]));
    out
}

#[test]
fn run_end_to_end_on_digits() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let stdout = ok(&kdprune(&[
        "run",
        "--teacher-epochs",
        "10",
        "--student-epochs",
        "3",
        "--kd-epochs",
        "1",
        "--retrain-epochs",
        "1",
        "--score-batches",
        "2",
        "--sparsity",
        "0.9",
        "--quiet",
        "--out",
        p(&out),
    ]));
    assert!(stdout.contains("retrained_kd"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let stages = report["stages"].as_array().unwrap();
    let names: Vec<&str> = stages.iter().map(|s| s["name"].as_str().unwrap()).collect();
    for want in [
        "teacher",
        "dense",
        "kd_tuned",
        "pruned_one_shot",
        "retrained_kd",
        "retrained_no_kd",
        "magnitude_retrained",
    ] {
        assert!(names.contains(&want), "missing stage {want} in {names:?}");
    }
    let stage = |n: &str| stages.iter().find(|s| s["name"] == n).unwrap();
    let teacher_acc = stage("teacher")["accuracy"].as_f64().unwrap();
    assert!(teacher_acc > 0.90, "teacher accuracy {teacher_acc}");
    for n in [
        "pruned_one_shot",
        "retrained_kd",
        "retrained_no_kd",
        "magnitude_retrained",
    ] {
        let s = stage(n)["sparsity"].as_f64().unwrap();
        // lenet-300-100 on 64 inputs: 50,200 prunable weights; round(0.9·n)/n = 0.9 exactly.
        assert!((s - 0.9).abs() < 1e-9, "{n}: sparsity {s}");
        assert!(
            stage(n)["nonzero"].as_u64().unwrap() < stage("dense")["nonzero"].as_u64().unwrap()
        );
    }
    assert_eq!(report["config"]["sparsity"].as_f64(), Some(0.9));
    assert!(out.join("config.toml").exists() && out.join("report.md").exists());

    // verify: the pruned checkpoint passes and ends with the global sparsity line ...
    let ckpt = out.join("retrained_kd.safetensors");
    let v = ok(&kdprune(&["verify", p(&ckpt)]));
    assert_eq!(
        v.trim_end().lines().last().unwrap(),
        "global sparsity: 0.9000"
    );

    // ... and a tampered copy (one masked weight set to 1) fails.
    let mut c = checkpoint::load(&ckpt, &Device::Cpu).unwrap();
    let (name, mask) = c
        .masks
        .iter()
        .next()
        .map(|(n, m)| (n.clone(), m.clone()))
        .unwrap();
    let name = name.strip_prefix("mask.").unwrap_or(&name).to_string();
    let flat_mask: Vec<u8> = mask.flatten_all().unwrap().to_vec1().unwrap();
    let pos = flat_mask.iter().position(|&m| m == 0).unwrap();
    let w = c.tensors[&name].clone();
    let mut flat: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
    flat[pos] = 1.0;
    c.tensors.insert(
        name,
        Tensor::from_vec(flat, w.shape(), &Device::Cpu).unwrap(),
    );
    let tampered = dir.path().join("tampered.safetensors");
    checkpoint::save(&tampered, &c).unwrap();
    fails_with(&kdprune(&["verify", p(&tampered)]), "not zero");
}

#[test]
fn same_seed_gives_bit_identical_weights() {
    let dir = tempfile::tempdir().unwrap();
    let a = train_small(dir.path(), "a.safetensors", "7", "lenet-300-100");
    let b = train_small(dir.path(), "b.safetensors", "7", "lenet-300-100");
    let c = train_small(dir.path(), "c.safetensors", "8", "lenet-300-100");
    let (a, b, c) = (
        std::fs::read(a).unwrap(),
        std::fs::read(b).unwrap(),
        std::fs::read(c).unwrap(),
    );
    assert!(a == b, "same seed must give the same bytes");
    assert!(a != c, "another seed must give other weights");
}

#[test]
fn prune_retrain_eval_subcommands_compose() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = train_small(dir.path(), "t.safetensors", "1", "mlp-256-256");
    let student = train_small(dir.path(), "s.safetensors", "1", "lenet-300-100");
    // `run` reuses trained checkpoints: its teacher stage is the file's accuracy.
    let run_dir = dir.path().join("run");
    ok(&kdprune(&[
        "run",
        "--seed",
        "1",
        "--teacher",
        p(&teacher),
        "--student",
        p(&student),
        "--kd-epochs",
        "1",
        "--retrain-epochs",
        "1",
        "--score-batches",
        "1",
        "--quiet",
        "--out",
        p(&run_dir),
    ]));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("report.json")).unwrap())
            .unwrap();
    let teacher_acc = report["stages"][0]["accuracy"].as_f64().unwrap();
    let e = ok(&kdprune(&["eval", p(&teacher)]));
    assert_eq!(e.trim(), format!("test accuracy: {teacher_acc:.4}"));
    assert_eq!(
        report["stages"][0]["nonzero"].as_u64(),
        Some(256 * 64 + 256 + 256 * 256 + 256 + 2570)
    );

    // Reusing a checkpoint trained on another digits split is refused.
    fails_with(
        &kdprune(&[
            "run",
            "--seed",
            "2",
            "--teacher",
            p(&teacher),
            "--quiet",
            "--out",
            p(&dir.path().join("run-seed2")),
        ]),
        "--seed 1",
    );
    assert!(
        !dir.path().join("run-seed2").exists(),
        "a refused run leaves no folder"
    );

    let pruned = dir.path().join("p.safetensors");
    let out = ok(&kdprune(&[
        "prune",
        "--checkpoint",
        p(&student),
        "--teacher",
        p(&teacher),
        "--criterion",
        "teacher-guided",
        "--sparsity",
        "0.8",
        "--score-batches",
        "2",
        "--out",
        p(&pruned),
    ]));
    assert!(out.contains("global sparsity: 0.8000"), "{out}");
    let retrained = dir.path().join("r.safetensors");
    ok(&kdprune(&[
        "retrain",
        "--checkpoint",
        p(&pruned),
        "--teacher",
        p(&teacher),
        "--loss",
        "ca-kld",
        "--epochs",
        "1",
        "--lr",
        "0.01",
        "--quiet",
        "--out",
        p(&retrained),
    ]));
    let v = ok(&kdprune(&["verify", p(&retrained)]));
    assert_eq!(
        v.trim_end().lines().last().unwrap(),
        "global sparsity: 0.8000"
    );
    let e = ok(&kdprune(&["eval", p(&retrained)]));
    let acc: f64 = e
        .trim()
        .strip_prefix("test accuracy: ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(acc > 0.5, "accuracy {acc}");
}

#[test]
fn config_file_is_read_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "sparsity = 1.5\n").unwrap();
    fails_with(
        &kdprune(&["run", "--config", p(&cfg), "--quiet"]),
        "sparsity",
    );
    std::fs::write(&cfg, "no_such_key = 1\n").unwrap();
    fails_with(
        &kdprune(&["run", "--config", p(&cfg), "--quiet"]),
        "no_such_key",
    );
    // A valid file whose bad sparsity is overridden by the flag gets past validation:
    // use an unknown teacher to stop it early and cheaply.
    std::fs::write(&cfg, "sparsity = 1.5\nteacher_model = \"nope\"\n").unwrap();
    fails_with(
        &kdprune(&[
            "run",
            "--config",
            p(&cfg),
            "--sparsity",
            "0.5",
            "--quiet",
            "--out",
            p(&dir.path().join("o")),
        ]),
        "nope",
    );
}

#[test]
fn bad_input_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.safetensors");
    for s in ["1.2", "1", "-0.1", "nan"] {
        let flag = format!("--sparsity={s}");
        fails_with(&kdprune(&["run", &flag, "--quiet"]), "sparsity");
    }
    fails_with(
        &kdprune(&["train", "--model", "resnet9000", "--out", p(&out)]),
        "resnet9000",
    );
    fails_with(
        &kdprune(&["train", "--dataset", "imagenet-22k", "--out", p(&out)]),
        "imagenet-22k",
    );
    fails_with(
        &kdprune(&["train", "--dataset", "fashion-mnist", "--out", p(&out)]),
        "--data-dir",
    );
    // NaN/inf loss: an absurd learning rate makes the loss blow up; the run says at which step.
    fails_with(
        &kdprune(&[
            "train",
            "--lr",
            "1e30",
            "--epochs",
            "3",
            "--quiet",
            "--out",
            p(&out),
        ]),
        "step",
    );
    assert!(
        !out.exists(),
        "no checkpoint may be written by a failed run"
    );

    // Missing, truncated and wrong-magic IDX files are named.
    let idx = dir.path().join("idx");
    std::fs::create_dir_all(&idx).unwrap();
    fails_with(
        &kdprune(&[
            "train",
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            p(&idx),
            "--out",
            p(&out),
        ]),
        "train-images",
    );
    let mut header = vec![0u8, 0, 8, 3, 0, 0, 0, 10, 0, 0, 0, 28, 0, 0, 0, 28];
    header.extend(std::iter::repeat_n(7u8, 100)); // far fewer than 10·28·28 pixels
    for f in ["train-images-idx3-ubyte", "t10k-images-idx3-ubyte"] {
        std::fs::write(idx.join(f), &header).unwrap();
    }
    let mut labels = vec![0u8, 0, 8, 1, 0, 0, 0, 10];
    labels.extend([1u8; 10]);
    for f in ["train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"] {
        std::fs::write(idx.join(f), &labels).unwrap();
    }
    fails_with(
        &kdprune(&[
            "train",
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            p(&idx),
            "--out",
            p(&out),
        ]),
        "truncated",
    );
    header[3] = 0x99;
    std::fs::write(idx.join("train-images-idx3-ubyte"), &header).unwrap();
    fails_with(
        &kdprune(&[
            "train",
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            p(&idx),
            "--out",
            p(&out),
        ]),
        "magic",
    );

    // A checkpoint of another architecture, and a truncated checkpoint.
    let mlp = train_small(dir.path(), "mlp.safetensors", "0", "lenet-300-100");
    fails_with(
        &kdprune(&["eval", p(&mlp), "--model", "lenet5"]),
        "architecture",
    );
    let bytes = std::fs::read(&mlp).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(&kdprune(&["verify", p(&cut)]), "cut.safetensors");
    fails_with(
        &kdprune(&["verify", p(&dir.path().join("missing.safetensors"))]),
        "missing.safetensors",
    );
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

#[test]
fn distill_with_a_logit_loss_writes_student_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = train_small(dir.path(), "t.safetensors", "0", "mlp-256-256");
    let out = dir.path().join("kd");
    let stdout = ok(&kdprune(&[
        "distill",
        "--teacher",
        p(&teacher),
        "--student-model",
        "lenet-300-100",
        "--loss",
        "ce:0.1,kd:0.9",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        p(&out),
    ]));
    assert!(stdout.contains("test accuracy: "), "{stdout}");
    let r = report(&out);
    assert_eq!(r["command"], "distill");
    assert_eq!(r["loss"], "ce:0.1+kd:0.9");
    assert_eq!(r["student"]["model"], "lenet-300-100");
    assert_eq!(r["epochs"].as_array().unwrap().len(), 1);
    let terms = r["epochs"][0]["terms"].as_object().unwrap();
    assert!(
        terms.contains_key("ce") && terms.contains_key("kd"),
        "{terms:?}"
    );
    let acc = r["accuracy"].as_f64().unwrap();
    assert!(acc > 0.3, "accuracy {acc}");
    assert!(r["teacher"]["accuracy"].as_f64().unwrap() > 0.5);
    // The checkpoint is a plain student: eval reads it and agrees with the report.
    let e = ok(&kdprune(&["eval", p(&out.join("student.safetensors"))]));
    assert_eq!(e.trim(), format!("test accuracy: {acc:.4}"));

    // --loss ce needs no teacher, and trains as `kdprune train` does.
    let ce = dir.path().join("ce");
    ok(&kdprune(&[
        "distill",
        "--student-model",
        "lenet-300-100",
        "--loss",
        "ce",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        p(&ce),
    ]));
    assert!(report(&ce)["teacher"].is_null());
    let trained = dir.path().join("trained.safetensors");
    ok(&kdprune(&[
        "train",
        "--model",
        "lenet-300-100",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        p(&trained),
    ]));
    let weights = |path: &Path| checkpoint::load(path, &Device::Cpu).unwrap().tensors;
    let (a, b) = (weights(&ce.join("student.safetensors")), weights(&trained));
    for (name, t) in &a {
        let (x, y): (Vec<f32>, Vec<f32>) = (
            t.flatten_all().unwrap().to_vec1().unwrap(),
            b[name].flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert!(x == y, "{name} differs from kdprune train");
    }
}

#[test]
fn distill_with_feature_losses_is_deterministic_and_retrain_takes_them() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = train_small(dir.path(), "t.safetensors", "0", "lenet5");
    let run = |name: &str, loss: &str, pairs: Option<&str>| {
        let out = dir.path().join(name);
        let mut args = vec![
            "distill",
            "--teacher",
            p(&teacher),
            "--loss",
            loss,
            "--epochs",
            "1",
            "--lr",
            "0.01",
            "--quiet",
            "--out",
            p(&out),
        ];
        if let Some(pairs) = pairs {
            args.extend(["--feature-pairs", pairs]);
        }
        ok(&kdprune(&args));
        out
    };
    // FitNets on explicit pairs (a map and a vector: conv and linear regressors).
    let a = run("fitnet-a", "fitnet", Some("s.conv2=t.conv2,s.fc1=t.fc1"));
    let b = run("fitnet-b", "fitnet", Some("s.conv2=t.conv2,s.fc1=t.fc1"));
    let bytes = |d: &Path| std::fs::read(d.join("student.safetensors")).unwrap();
    assert!(bytes(&a) == bytes(&b), "same seed must give the same bytes");
    let r = report(&a);
    assert_eq!(r["loss"], "ce:1+fitnet:100");
    let pairs = r["config"]["objective"]["terms"][1]["pairs"]
        .as_array()
        .unwrap();
    assert_eq!(pairs.len(), 2);
    // The regressors are not part of the student's checkpoint.
    let c = checkpoint::load(&a.join("student.safetensors"), &Device::Cpu).unwrap();
    assert!(c.tensors.keys().all(|k| !k.starts_with("fitnet")));

    // AT and RKD with their default pairs, combined with KD.
    let mixed = run("mixed", "kd+at:1000+rkd:1", None);
    let r = report(&mixed);
    assert_eq!(r["loss"], "ce:0.1+kd:0.9+at:1000+rkd:1");
    let terms = &r["config"]["objective"]["terms"];
    let names = |i: usize| {
        terms[i]["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| format!("{}={}", p["student"], p["teacher"]))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(2),
        ["\"conv1\"=\"conv1\"", "\"conv2\"=\"conv2\""],
        "at defaults"
    );
    assert_eq!(names(3), ["\"fc2\"=\"fc2\""], "rkd defaults");

    // The same objectives retrain a pruned student under its mask.
    let pruned = dir.path().join("p.safetensors");
    ok(&kdprune(&[
        "prune",
        "--checkpoint",
        p(&a.join("student.safetensors")),
        "--criterion",
        "magnitude",
        "--sparsity",
        "0.5",
        "--out",
        p(&pruned),
    ]));
    let retrained = dir.path().join("r.safetensors");
    ok(&kdprune(&[
        "retrain",
        "--checkpoint",
        p(&pruned),
        "--teacher",
        p(&teacher),
        "--loss",
        "ce:1,at:1000",
        "--epochs",
        "1",
        "--lr",
        "0.01",
        "--quiet",
        "--out",
        p(&retrained),
    ]));
    let v = ok(&kdprune(&["verify", p(&retrained)]));
    assert_eq!(
        v.trim_end().lines().last().unwrap(),
        "global sparsity: 0.5000"
    );
}

#[test]
fn distill_bad_input_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let teacher = train_small(dir.path(), "t.safetensors", "0", "lenet5");
    let distill = |extra: &[&str]| {
        let mut args = vec!["distill", "--epochs", "1", "--quiet", "--out", p(&out)];
        args.extend(extra);
        kdprune(&args)
    };
    let t = p(&teacher);
    // An unknown feature name lists the model's features.
    let bad = distill(&[
        "--teacher",
        t,
        "--loss",
        "at",
        "--feature-pairs",
        "s.conv9=t.conv2",
    ]);
    fails_with(&bad, "no feature `conv9`");
    fails_with(
        &bad,
        "conv1 [6, 4, 4], conv2 [16, 2, 2], fc1 [120], fc2 [84]",
    );
    fails_with(
        &distill(&[
            "--teacher",
            t,
            "--loss",
            "at",
            "--feature-pairs",
            "s.conv2=t.x",
        ]),
        "teacher has no feature `x`",
    );
    fails_with(
        &distill(&["--teacher", t, "--loss", "mse"]),
        "unknown loss `mse`",
    );
    fails_with(&distill(&["--teacher", t, "--loss", "kd:nan"]), "finite");
    fails_with(
        &distill(&["--teacher", t, "--loss", "ce:1,at:-5"]),
        "finite",
    );
    fails_with(&distill(&["--loss", "kd"]), "--teacher");
    fails_with(&distill(&["--loss", "rkd"]), "--teacher");
    fails_with(
        &distill(&["--teacher", t, "--loss", "kd", "--feature-pairs", "conv2"]),
        "--feature-pairs",
    );
    // An AT pair between a map and a vector.
    fails_with(
        &distill(&[
            "--teacher",
            t,
            "--loss",
            "at",
            "--feature-pairs",
            "s.conv2=t.fc1",
        ]),
        "at pair",
    );
    fails_with(
        &distill(&[
            "--teacher",
            p(&dir.path().join("none.safetensors")),
            "--loss",
            "kd",
        ]),
        "none.safetensors",
    );
    assert!(!out.join("student.safetensors").exists());
    // A NaN loss stops the run and names the step.
    fails_with(
        &distill(&["--teacher", t, "--loss", "at", "--lr", "1e30"]),
        "step",
    );
    assert!(!out.join("student.safetensors").exists());
}

/// `train --init CKPT` starts from the checkpoint's weights: with a
/// vanishing learning rate the result is the checkpoint itself (a fresh
/// initialisation would differ everywhere).
#[test]
fn train_init_starts_from_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let start = train_small(dir.path(), "start.safetensors", "0", "lenet-300-100");
    let out = dir.path().join("tuned.safetensors");
    ok(&kdprune(&[
        "train",
        "--init",
        p(&start),
        "--epochs",
        "1",
        "--lr",
        "1e-30",
        "--seed",
        "7",
        "--quiet",
        "--out",
        p(&out),
    ]));
    let a = kdprune_models::checkpoint::load(&start, &candle_core::Device::Cpu).unwrap();
    let b = kdprune_models::checkpoint::load(&out, &candle_core::Device::Cpu).unwrap();
    for (name, t) in &a.tensors {
        let diff = (t - &b.tensors[name])
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-6, "{name} moved by {diff}");
    }
}

/// A run folder never lies: the same command continues an interrupted
/// folder (finished stages reused, the rest recomputed to the same bytes),
/// other settings are refused unless `--force`, and run and sweep folders
/// are not taken for one another.
#[test]
fn run_folders_continue_refuse_or_start_over() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let args = |out: &Path, teacher_epochs: &'static str| -> Vec<String> {
        [
            "run",
            "--teacher-model",
            "mlp-100",
            "--teacher-epochs",
            teacher_epochs,
            "--student-epochs",
            "2",
            "--kd-epochs",
            "1",
            "--retrain-epochs",
            "1",
            "--score-batches",
            "2",
            "--out",
            p(out),
        ]
        .map(String::from)
        .to_vec()
    };
    let run = |a: &[String]| kdprune(&a.iter().map(String::as_str).collect::<Vec<_>>());
    ok(&run(&args(&out, "2")));
    let full: Vec<(String, Vec<u8>)> = ["retrained_no_kd", "magnitude_retrained"]
        .iter()
        .map(|s| {
            let f = format!("{s}.safetensors");
            (f.clone(), std::fs::read(out.join(&f)).unwrap())
        })
        .collect();
    let progress = std::fs::read_to_string(out.join("progress.json")).unwrap();
    assert!(progress.contains("\"complete\": true"), "{progress}");

    // an interrupted folder: the last stages and the report gone
    for f in [
        "retrained_no_kd.safetensors",
        "magnitude_one_shot.safetensors",
        "report.json",
    ] {
        std::fs::remove_file(out.join(f)).unwrap();
    }
    let again = run(&args(&out, "2"));
    ok(&again);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("5 of 8 stages finished"), "{stderr}");
    assert!(
        stderr.contains("stage 1/8 teacher: finished before, reused"),
        "{stderr}"
    );
    for (f, bytes) in &full {
        assert!(&std::fs::read(out.join(f)).unwrap() == bytes, "{f} differs");
    }
    assert!(out.join("report.json").exists());

    // other settings: refused, then started over with --force
    common::fails_with(&run(&args(&out, "3")), "holds a run of other settings");
    let mut forced = args(&out, "3");
    forced.push("--force".into());
    ok(&run(&forced));
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(config.contains("teacher_epochs = 3"), "{config}");

    // a run folder is not a sweep folder, and the other way round
    let sweep = dir.path().join("sweep.toml");
    std::fs::write(
        &sweep,
        format!(
            "out = \"{}\"\nmethods = [\"magnitude\"]\nsparsities = [0.5]\nseeds = [0]\n",
            out.display()
        ),
    )
    .unwrap();
    common::fails_with(
        &kdprune(&["sweep", "--config", p(&sweep)]),
        "is a run folder",
    );
    let sweep_dir = dir.path().join("sweep-out");
    std::fs::create_dir_all(sweep_dir.join("cells")).unwrap();
    std::fs::write(sweep_dir.join("recipe.toml"), "x").unwrap();
    common::fails_with(&run(&args(&sweep_dir, "2")), "is a sweep folder");
}
