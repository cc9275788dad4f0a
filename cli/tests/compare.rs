//! `kdprune compare`: the figures of each model and the ratios against the
//! first, as Markdown and JSON.

mod common;

use common::{fails_with, kdprune, ok, p};

#[test]
fn compare_reports_sizes_accuracies_latencies_and_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let (dense, pruned) = common::train_and_prune(dir.path(), "lenet-300-100", "0.95");
    let sparse = dir.path().join("pruned.sparse.safetensors");
    ok(&kdprune(&[
        "export",
        p(&pruned),
        "--format",
        "sparse",
        "--out",
        p(&sparse),
    ]));
    let json = dir.path().join("compare.json");
    let table = ok(&kdprune(&[
        "compare",
        p(&dense),
        p(&pruned),
        p(&sparse),
        "--json",
        p(&json),
    ]));
    assert!(
        table.contains("| model | checkpoint | encoding | engine |"),
        "{table}"
    );
    assert_eq!(
        table
            .lines()
            .filter(|l| l.starts_with("| lenet-300-100 "))
            .count(),
        3,
        "{table}"
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let f = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap();
    assert_eq!(f(&rows[0], "speedup_b1"), 1.0);
    assert_eq!(f(&rows[0], "size_ratio"), 1.0);
    assert_eq!(f(&rows[0], "accuracy_retained_pct"), 100.0);
    assert_eq!(rows[0]["params"], 50_610);
    assert_eq!(rows[0]["nonzero"], 50_610);
    // 95 % of the 50,200 weights pruned; the 410 biases stay
    assert!(
        rows[1]["nonzero"].as_u64().unwrap() <= 2_510 + 410,
        "{}",
        rows[1]
    );
    assert_eq!(rows[1]["nonzero"], rows[2]["nonzero"]);
    assert_eq!(rows[2]["encoding"], "sparse-bitmask");
    assert_eq!(rows[1]["engine"], "runtime");
    // the same weights: the same accuracy from either file
    assert_eq!(f(&rows[1], "accuracy"), f(&rows[2], "accuracy"));
    let retained = 100.0 * f(&rows[2], "accuracy") / f(&rows[0], "accuracy");
    assert!((f(&rows[2], "accuracy_retained_pct") - retained).abs() < 1e-9);
    let size = std::fs::metadata(&sparse).unwrap().len() as f64
        / std::fs::metadata(&dense).unwrap().len() as f64;
    assert!(
        (f(&rows[2], "size_ratio") - size).abs() < 1e-12 && size < 0.15,
        "{size}"
    );
    for r in rows {
        assert!(
            f(r, "latency_b1_us") > 0.0 && f(r, "latency_b64_us") > 0.0,
            "{r}"
        );
    }
    assert!(
        (f(&rows[2], "speedup_b64")
            - f(&rows[0], "latency_b64_us") / f(&rows[2], "latency_b64_us"))
        .abs()
            < 1e-9
    );

    fails_with(
        &kdprune(&["compare", p(&dense), "--rounds", "5"]),
        "at least 20",
    );
    let missing = dir.path().join("missing.safetensors");
    fails_with(
        &kdprune(&["compare", p(&dense), p(&missing)]),
        "missing.safetensors",
    );
}
