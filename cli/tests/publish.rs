//! `kdprune publish` and `hub:` checkpoints against a Hub on 127.0.0.1: a
//! small HTTP server in this file speaks the endpoints the real hf-hub
//! client calls (repository creation, preupload, NDJSON commit, file
//! resolve) and keeps what it receives. The client is not mocked: the
//! binary talks to the server through `HF_ENDPOINT`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use base64::Engine;
use common::{fails_with, ok, p};

const TOKEN: &str = "hf_kdpruneTESTtoken0123456789secret";

/// What the server does with the next requests.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Normal,
    /// Repository creation answers 403.
    Forbidden,
    /// Commits answer 409.
    Conflict,
    /// Commits are read, then the connection is closed without an answer.
    Gone,
}

#[derive(Default)]
struct Repo {
    files: BTreeMap<String, Vec<u8>>,
    commits: usize,
}

struct Hub {
    repos: Mutex<BTreeMap<String, Repo>>,
    mode: Mutex<Mode>,
    /// Repositories (`OWNER/NAME.git`) of the LFS batch calls received.
    lfs_batches: Mutex<Vec<String>>,
}

struct Request {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

fn respond(
    mut stream: &TcpStream,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
    head: bool,
) {
    let mut text = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
    for (k, v) in headers {
        text += &format!("{k}: {v}\r\n");
    }
    text += &format!("Content-Length: {}\r\n\r\n", body.len());
    let _ = stream.write_all(text.as_bytes());
    if !head {
        let _ = stream.write_all(body);
    }
}

fn json(stream: &TcpStream, status: u16, body: serde_json::Value) {
    respond(
        stream,
        status,
        &[("Content-Type", "application/json".into())],
        body.to_string().as_bytes(),
        false,
    );
}

/// A content hash for ETags (FNV-1a, 64 bits).
fn etag(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

fn handle(hub: &Hub, stream: TcpStream, base: &str) {
    let Some(req) = read_request(&stream) else {
        return;
    };
    let authorised = req.headers.get("authorization") == Some(&format!("Bearer {TOKEN}"));
    let mode = *hub.mode.lock().unwrap();
    let segs: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    match (req.method.as_str(), segs.as_slice()) {
        ("POST", ["api", "repos", "create"]) => {
            if !authorised {
                return json(
                    &stream,
                    401,
                    serde_json::json!({"error": "Invalid credentials"}),
                );
            }
            if mode == Mode::Forbidden {
                return json(
                    &stream,
                    403,
                    serde_json::json!({"error": "You cannot create here"}),
                );
            }
            let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
            let id = format!(
                "{}/{}",
                v["organization"].as_str().unwrap_or("me"),
                v["name"].as_str().unwrap()
            );
            let mut repos = hub.repos.lock().unwrap();
            if repos.contains_key(&id) {
                return json(&stream, 409, serde_json::json!({"error": "exists"}));
            }
            repos.insert(id.clone(), Repo::default());
            json(
                &stream,
                200,
                serde_json::json!({"url": format!("{base}/{id}")}),
            );
        }
        ("POST", ["api", "models", owner, name, op, _rev]) => {
            if !authorised {
                return json(
                    &stream,
                    401,
                    serde_json::json!({"error": "Invalid credentials"}),
                );
            }
            let id = format!("{owner}/{name}");
            if !hub.repos.lock().unwrap().contains_key(&id) {
                return json(
                    &stream,
                    404,
                    serde_json::json!({"error": "Repository not found"}),
                );
            }
            match *op {
                // safetensors files are LFS (as on the Hub), the rest regular
                "preupload" => {
                    let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
                    let files: Vec<serde_json::Value> = v["files"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|f| {
                            let path = f["path"].as_str().unwrap();
                            let mode = if path.ends_with(".safetensors") {
                                "lfs"
                            } else {
                                "regular"
                            };
                            serde_json::json!({"path": path, "uploadMode": mode})
                        })
                        .collect();
                    json(&stream, 200, serde_json::json!({"files": files}))
                }
                "commit" if mode == Mode::Conflict => json(
                    &stream,
                    409,
                    serde_json::json!({"error": "the branch moved"}),
                ),
                "commit" if mode == Mode::Gone => {} // read, then dropped unanswered
                "commit" => {
                    let mut files = BTreeMap::new();
                    for line in req.body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                        let v: serde_json::Value = serde_json::from_slice(line).unwrap();
                        if v["key"] == "file" {
                            let bytes = base64::engine::general_purpose::STANDARD
                                .decode(v["value"]["content"].as_str().unwrap())
                                .unwrap();
                            files.insert(v["value"]["path"].as_str().unwrap().to_string(), bytes);
                        }
                    }
                    let mut repos = hub.repos.lock().unwrap();
                    let repo = repos.get_mut(&id).unwrap();
                    repo.files.extend(files);
                    repo.commits += 1;
                    let oid = format!("{:040x}", repo.commits);
                    json(
                        &stream,
                        200,
                        serde_json::json!({"commitOid": oid, "commitUrl": format!("{base}/{id}/commit/{oid}")}),
                    );
                }
                _ => json(
                    &stream,
                    404,
                    serde_json::json!({"error": "no such endpoint"}),
                ),
            }
        }
        // the LFS batch negotiation: `basic` (not Xet), after which the
        // client sends the files inline in the commit
        ("POST", [owner, name_git, "info", "lfs", "objects", "batch"]) => {
            if !authorised {
                return json(
                    &stream,
                    401,
                    serde_json::json!({"error": "Invalid credentials"}),
                );
            }
            hub.lfs_batches
                .lock()
                .unwrap()
                .push(format!("{owner}/{name_git}"));
            json(
                &stream,
                200,
                serde_json::json!({"transfer": "basic", "objects": []}),
            )
        }
        (method @ ("HEAD" | "GET"), [owner, name, "resolve", _rev, file @ ..]) => {
            let id = format!("{owner}/{name}");
            let repos = hub.repos.lock().unwrap();
            let found = repos
                .get(&id)
                .and_then(|r| r.files.get(&file.join("/")).map(|f| (r.commits, f.clone())));
            match found {
                Some((commits, bytes)) => respond(
                    &stream,
                    200,
                    &[
                        ("ETag", format!("\"{}\"", etag(&bytes))),
                        ("X-Repo-Commit", format!("{commits:040x}")),
                    ],
                    &bytes,
                    method == "HEAD",
                ),
                None => respond(&stream, 404, &[], b"", method == "HEAD"),
            }
        }
        _ => json(
            &stream,
            404,
            serde_json::json!({"error": "no such endpoint"}),
        ),
    }
}

/// Starts the server; returns it and its base URL.
fn serve() -> (Arc<Hub>, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hub = Arc::new(Hub {
        repos: Mutex::new(BTreeMap::new()),
        mode: Mutex::new(Mode::Normal),
        lfs_batches: Mutex::new(Vec::new()),
    });
    let (h, b) = (hub.clone(), base.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (h, b) = (h.clone(), b.clone());
            std::thread::spawn(move || handle(&h, stream, &b));
        }
    });
    (hub, base)
}

/// The binary with the Hub environment of the test: the server, `token`
/// (none: `HF_HOME`'s token file), a private `HF_HOME` and `TMPDIR`.
fn kd(args: &[&str], base: &str, token: &str, home: &Path, offline: bool) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kdprune"));
    if token.is_empty() {
        // the token of the Hugging Face CLI's file, `$HF_HOME/token`
        c.env_remove("HF_TOKEN");
    } else {
        c.env("HF_TOKEN", token);
    }
    c.args(args)
        .env("HF_ENDPOINT", base)
        .env("HF_HOME", home.join("hf"))
        .env_remove("HF_HUB_CACHE")
        .env_remove("HUGGINGFACE_HUB_CACHE")
        .env("TMPDIR", home.join("tmp"))
        .env("NO_PROXY", "127.0.0.1");
    if offline {
        c.env("HF_HUB_OFFLINE", "1");
    } else {
        c.env_remove("HF_HUB_OFFLINE");
    }
    c.output().expect("failed to start kdprune")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The accuracy `kdprune eval` prints (`test accuracy: 0.8329`).
fn accuracy(stdout: &str) -> String {
    stdout
        .lines()
        .find(|l| l.contains("accuracy"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_else(|| panic!("no accuracy in {stdout}"))
        .to_string()
}

/// A small digits run of `seed` into `out` (about a second).
fn small_run(out: &Path, seed: &str) {
    ok(&common::kdprune(&[
        "run",
        "--teacher-model",
        "mlp-100",
        "--teacher-epochs",
        "1",
        "--student-epochs",
        "1",
        "--kd-epochs",
        "1",
        "--retrain-epochs",
        "1",
        "--score-batches",
        "1",
        "--quiet",
        "--seed",
        seed,
        "--out",
        p(out),
    ]));
}

#[test]
fn a_run_is_published_in_one_commit_and_loads_back_through_hub() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("tmp")).unwrap();
    let (hub, base) = serve();
    let mut outputs = String::new();
    let mut run = |args: &[&str], token: &str, offline: bool| {
        let out = kd(args, &base, token, d, offline);
        outputs += &text(&out);
        out
    };

    // two small digits runs that differ only in the seed; the first is the
    // run folder published below
    let seeds = d.join("seeds");
    for seed in ["0", "1"] {
        small_run(&seeds.join(format!("seed{seed}")), seed);
    }
    let run_dir = seeds.join("seed0");

    // the dry run writes the folder and uploads nothing
    let dry = d.join("dry");
    let listing = ok(&run(
        &[
            "publish",
            p(&run_dir),
            "--repo",
            "me/digits-pruned",
            "--dry-run",
            p(&dry),
        ],
        TOKEN,
        false,
    ));
    assert!(listing.contains("model.safetensors") && listing.contains("nothing uploaded"));
    assert!(hub.repos.lock().unwrap().is_empty());
    let card = std::fs::read_to_string(dry.join("README.md")).unwrap();
    for needle in [
        "library_name: kdprune",
        "- knowledge-distillation",
        "model-index:",
        "type: accuracy",
        "type: sparsity",
        "kdprune run --config kdprune-config.toml",
        "hub:me/digits-pruned",
        "| retrained_kd |",
    ] {
        assert!(card.contains(needle), "card lacks `{needle}`:\n{card}");
    }

    // the folder of both runs: mean ± std over the seeds in the card
    let dry_seeds = d.join("dry-seeds");
    ok(&run(
        &[
            "publish",
            p(&seeds),
            "--repo",
            "me/digits-seeds",
            "--dry-run",
            p(&dry_seeds),
        ],
        TOKEN,
        false,
    ));
    let card = std::fs::read_to_string(dry_seeds.join("README.md")).unwrap();
    assert!(
        card.contains("over seeds 0, 1, mean ± sample std"),
        "{card}"
    );
    assert!(card.contains(" ± "), "{card}");
    assert_eq!(
        std::fs::read(dry_seeds.join("report.json")).unwrap(),
        std::fs::read(seeds.join("seed0").join("report.json")).unwrap()
    );

    // the real upload: every file byte-identical, one commit
    ok(&run(
        &["publish", p(&run_dir), "--repo", "me/digits-pruned"],
        TOKEN,
        false,
    ));
    {
        let repos = hub.repos.lock().unwrap();
        let repo = &repos["me/digits-pruned"];
        assert_eq!(repo.commits, 1);
        // the checkpoint went through the LFS negotiation first
        assert_eq!(*hub.lfs_batches.lock().unwrap(), ["me/digits-pruned.git"]);
        let mut names: Vec<_> = std::fs::read_dir(&dry)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(repo.files.keys().cloned().collect::<Vec<_>>(), names);
        for (name, bytes) in &repo.files {
            assert!(
                &std::fs::read(dry.join(name)).unwrap() == bytes,
                "{name} differs from the dry run's"
            );
            assert!(
                !String::from_utf8_lossy(bytes).contains(TOKEN),
                "token in {name}"
            );
        }
    }

    // loaded back through hub: with the same accuracy; then from the cache only
    let local = ok(&run(
        &["eval", p(&run_dir.join("retrained_kd.safetensors"))],
        TOKEN,
        false,
    ));
    let remote = ok(&run(&["eval", "hub:me/digits-pruned"], TOKEN, false));
    assert_eq!(accuracy(&local), accuracy(&remote), "{local}\n{remote}");
    // as a teacher too
    let student = d.join("student.safetensors");
    ok(&run(
        &[
            "train",
            "--teacher",
            "hub:me/digits-pruned",
            "--model",
            "mlp-100",
            "--loss",
            "kd",
            "--epochs",
            "1",
            "--quiet",
            "--out",
            p(&student),
        ],
        TOKEN,
        false,
    ));
    assert!(student.is_file());
    let cached = ok(&run(&["eval", "hub:me/digits-pruned@main"], TOKEN, true));
    assert_eq!(accuracy(&local), accuracy(&cached));
    // a run whose teacher came from the Hub names it as the card's base_model
    let child = d.join("child");
    ok(&run(
        &[
            "run",
            "--teacher",
            "hub:me/digits-pruned",
            "--student-epochs",
            "1",
            "--kd-epochs",
            "1",
            "--retrain-epochs",
            "1",
            "--score-batches",
            "1",
            "--quiet",
            "--out",
            p(&child),
        ],
        TOKEN,
        false,
    ));
    let dry_child = d.join("dry-child");
    ok(&run(
        &[
            "publish",
            p(&child),
            "--repo",
            "me/child",
            "--dry-run",
            p(&dry_child),
        ],
        TOKEN,
        false,
    ));
    let card = std::fs::read_to_string(dry_child.join("README.md")).unwrap();
    assert!(card.contains("base_model: \"me/digits-pruned\""), "{card}");

    // --offline does the same as HF_HUB_OFFLINE
    let flagged = ok(&run(
        &["eval", "hub:me/digits-pruned", "--offline"],
        TOKEN,
        false,
    ));
    assert_eq!(accuracy(&local), accuracy(&flagged));
    fails_with(
        &run(&["eval", "hub:me/other", "--offline"], TOKEN, false),
        "not in the Hub cache",
    );
    fails_with(
        &run(&["eval", "hub:me/other"], TOKEN, true),
        "HF_HUB_OFFLINE is set",
    );

    // the token of the CLI's token file, when HF_TOKEN is not set
    fails_with(
        &run(
            &["publish", p(&run_dir), "--repo", "me/from-file"],
            "",
            false,
        ),
        "401",
    );
    std::fs::write(d.join("hf").join("token"), TOKEN).unwrap();
    ok(&run(
        &["publish", p(&run_dir), "--repo", "me/from-file"],
        "",
        false,
    ));
    assert_eq!(hub.repos.lock().unwrap()["me/from-file"].commits, 1);

    // failure paths: each a clear message, exit ≠ 0, nothing left behind
    fails_with(
        &run(
            &["publish", p(&run_dir), "--repo", "me/x"],
            "hf_wrong",
            false,
        ),
        "refused the token (401)",
    );
    fails_with(&run(&["eval", "hub:me/nothing"], TOKEN, false), "404");
    *hub.mode.lock().unwrap() = Mode::Forbidden;
    fails_with(
        &run(&["publish", p(&run_dir), "--repo", "you/x"], TOKEN, false),
        "may not do this (403)",
    );
    *hub.mode.lock().unwrap() = Mode::Conflict;
    fails_with(
        &run(
            &["publish", p(&run_dir), "--repo", "me/digits-pruned"],
            TOKEN,
            false,
        ),
        "conflict (409)",
    );
    *hub.mode.lock().unwrap() = Mode::Gone;
    fails_with(
        &run(
            &["publish", p(&run_dir), "--repo", "me/digits-pruned"],
            TOKEN,
            false,
        ),
        "cannot be reached",
    );
    assert_eq!(hub.repos.lock().unwrap()["me/digits-pruned"].commits, 1);
    fails_with(
        &run(
            &["publish", p(&run_dir), "--repo", "not a repo"],
            TOKEN,
            false,
        ),
        "is not OWNER/NAME",
    );
    assert_eq!(
        std::fs::read_dir(d.join("tmp")).unwrap().count(),
        0,
        "a staging folder was left behind"
    );

    // the token never shows: not in any output, card or file written
    assert!(!outputs.contains(TOKEN), "the token was printed");
    for e in std::fs::read_dir(&dry).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(TOKEN));
    }
}
