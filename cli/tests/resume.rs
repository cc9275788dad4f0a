//! Resume after SIGKILL: `train`, `retrain` and `distill` killed once their
//! first resume point exists, then continued with `--resume`, end with
//! checkpoint files byte-identical to an uninterrupted run's.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{kdprune, ok, p, train_and_prune};

/// Starts `args`, waits for `resume` to appear, kills the process with
/// SIGKILL and checks that it was cut short (`out` not written).
fn kill_after_first_epoch(args: &[&str], resume: &Path, out: &Path) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kdprune"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !resume.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no resume point at {} after 120 s",
            resume.display()
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{args:?} ended ({status}) before its first resume point");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(!status.success(), "{args:?} finished before the kill");
    assert!(!out.exists(), "{} written by a killed run", out.display());
}

/// Runs `args` (with `--out OUT`) once uninterrupted into `a`, once killed
/// and resumed into `b`, and compares the bytes of `file` in both.
fn resumed_equals_uninterrupted(
    args: &[&str],
    a: PathBuf,
    b: PathBuf,
    file: &str,
    resume_of: impl Fn(&Path) -> PathBuf,
) -> String {
    let with_out = |out: &Path| -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend(["--quiet".into(), "--out".into(), p(out).into()]);
        v
    };
    let full: Vec<String> = with_out(&a);
    ok(&kdprune(
        &full.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let cut = with_out(&b);
    let cut: Vec<&str> = cut.iter().map(String::as_str).collect();
    let written = if file.is_empty() {
        b.clone()
    } else {
        b.join(file)
    };
    kill_after_first_epoch(&cut, &resume_of(&b), &written);
    let mut resumed = cut.clone();
    resumed.push("--resume");
    let out = kdprune(&resumed);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("resuming from"), "{stderr}");
    assert!(stderr.contains("epochs done"), "{stderr}");
    let read = |d: &Path| {
        std::fs::read(if file.is_empty() {
            d.to_path_buf()
        } else {
            d.join(file)
        })
        .unwrap()
    };
    assert!(read(&a) == read(&b), "{args:?}: resumed bytes differ");
    assert!(!resume_of(&b).exists(), "the resume point outlived the run");
    stderr.into_owned()
}

fn beside(out: &Path) -> PathBuf {
    PathBuf::from(format!("{}.resume", out.display()))
}

#[test]
fn train_killed_and_resumed_is_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    resumed_equals_uninterrupted(
        &["train", "--model", "lenet-300-100", "--epochs", "10"],
        d.join("a.safetensors"),
        d.join("b.safetensors"),
        "",
        beside,
    );
}

#[test]
fn retrain_and_distill_killed_and_resumed_are_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (dense, pruned) = train_and_prune(d, "lenet-300-100", "0.8");
    resumed_equals_uninterrupted(
        &["retrain", "--checkpoint", p(&pruned), "--epochs", "10"],
        d.join("ra.safetensors"),
        d.join("rb.safetensors"),
        "",
        beside,
    );
    resumed_equals_uninterrupted(
        &[
            "distill",
            "--teacher",
            p(&dense),
            "--student-model",
            "lenet-300-100",
            "--loss",
            "kd",
            "--epochs",
            "10",
        ],
        d.join("da"),
        d.join("db"),
        "student.safetensors",
        |out| out.join("resume.safetensors"),
    );
}

/// A resume point of other settings is refused, naming what to do.
#[test]
fn a_resume_point_of_other_settings_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.safetensors");
    let args = ["train", "--epochs", "10", "--out", p(&out)];
    kill_after_first_epoch(&args, &beside(&out), &out);
    common::fails_with(
        &kdprune(&["train", "--epochs", "11", "--resume", "--out", p(&out)]),
        "belongs to a run with other settings",
    );
}

/// `--save-every N` saves resume points inside epochs: killed after the
/// first (in the first epoch), the run continues to the same bytes.
#[test]
fn a_resume_point_inside_an_epoch_gives_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // digits: 1,438 training samples at batch 16 are 90 steps an epoch
    let stderr = resumed_equals_uninterrupted(
        &[
            "train",
            "--model",
            "lenet-300-100",
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--save-every",
            "7",
        ],
        d.join("a.safetensors"),
        d.join("b.safetensors"),
        "",
        beside,
    );
    assert!(stderr.contains("batches of the next"), "{stderr}");
}

/// `run` killed inside a stage (here the KD retraining, once its first
/// resume point exists) continues with the same command: the stages before
/// are reused, the cut stage resumes from its point, and every stage's
/// checkpoint equals an uninterrupted run's byte for byte.
#[test]
fn run_killed_inside_a_stage_continues_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let args = |out: &Path| -> Vec<String> {
        [
            "run",
            "--teacher-model",
            "mlp-100",
            "--teacher-epochs",
            "2",
            "--student-epochs",
            "2",
            "--kd-epochs",
            "1",
            "--retrain-epochs",
            "6",
            "--score-batches",
            "2",
            "--out",
            p(out),
        ]
        .map(String::from)
        .to_vec()
    };
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let run = |out: &Path| {
        let v = args(out);
        kdprune(&v.iter().map(String::as_str).collect::<Vec<_>>())
    };
    ok(&run(&a));
    let cut = args(&b);
    let cut: Vec<&str> = cut.iter().map(String::as_str).collect();
    kill_after_first_epoch(&cut, &b.join("retrained_kd.resume"), &b.join("report.json"));
    let again = run(&b);
    ok(&again);
    let stderr = String::from_utf8_lossy(&again.stderr);
    // killed inside stage 5 (a slow poll on a loaded machine may let it
    // run another epoch first, not past the stage: the point is removed
    // only once the stage's checkpoint is written, and it was seen)
    assert!(stderr.contains("4 of 8 stages finished"), "{stderr}");
    assert!(
        stderr.contains("[stage 5/8 retrained_kd] resuming from"),
        "{stderr}"
    );
    assert!(stderr.contains(" of 6 epochs done"), "{stderr}");
    for stage in [
        "teacher",
        "dense",
        "kd_tuned",
        "pruned_one_shot",
        "retrained_kd",
        "retrained_no_kd",
        "magnitude_one_shot",
        "magnitude_retrained",
    ] {
        let f = format!("{stage}.safetensors");
        assert!(
            std::fs::read(a.join(&f)).unwrap() == std::fs::read(b.join(&f)).unwrap(),
            "{f}: resumed bytes differ"
        );
        assert!(!b.join(format!("{stage}.resume")).exists());
    }
}
