//! `kdprune search darts` end to end on digits, searching on 96 samples.

mod common;

use common::{fails_with, kdprune, ok, p};

#[test]
fn darts_search_writes_a_genotype_a_model_and_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("darts.toml");
    std::fs::write(
        &config,
        "channels = 2\nlayers = 3\nepochs = 1\nbatch_size = 16\n\
         train_channels = 2\ntrain_layers = 3\ntrain_epochs = 1\nsearch_samples = 96\ntrain_samples = 96\n",
    )
    .unwrap();
    let out = dir.path().join("search");
    let run_with = |out: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "search",
            "darts",
            "--config",
            p(&config),
            "--out",
            p(out),
            "-q",
        ];
        args.extend_from_slice(extra);
        kdprune(&args)
    };
    let run = |out: &std::path::Path| run_with(out, &[]);
    let stdout = ok(&run(&out));
    assert!(stdout.contains("genotype: normal: "), "{stdout}");
    assert!(stdout.contains("test accuracy: "), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    // one genotype per search epoch, each 8 edges per cell type, none `none`
    let genotypes = report["genotypes"].as_array().unwrap();
    assert_eq!(genotypes.len(), 1);
    assert_eq!(report["genotype"], genotypes[0]);
    for side in ["normal", "reduce"] {
        let edges = report["genotype"][side].as_array().unwrap();
        assert_eq!(edges.len(), 8);
        for (k, e) in edges.iter().enumerate() {
            assert_ne!(e[0], "none");
            assert!(e[1].as_u64().unwrap() < (k / 2 + 2) as u64);
        }
    }
    assert_eq!(report["test_accuracy"].as_array().unwrap().len(), 1);
    assert!(report["baseline"].is_null());
    assert!(report["params"].as_u64().unwrap() < report["search_params"].as_u64().unwrap());
    // the model file carries the genotype
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let saved: serde_json::Value = serde_json::from_str(&meta["genotype"]).unwrap();
    assert_eq!(saved, report["genotype"]);
    // same seed, same machine: the same report figures and model bytes, a
    // baseline trained after the searched network changing none of them
    let again = dir.path().join("again");
    let stdout = ok(&run_with(&again, &["--baseline", "lenet-300-100"]));
    // 64·300 + 300 + 300·100 + 100 + 100·10 + 10 on 8×8 digits
    assert!(
        stdout.contains("baseline lenet-300-100: parameters: 50610  MACs: 50200"),
        "{stdout}"
    );
    let second: serde_json::Value =
        serde_json::from_slice(&std::fs::read(again.join("report.json")).unwrap()).unwrap();
    assert_eq!(second["genotypes"], report["genotypes"]);
    assert_eq!(second["test_accuracy"], report["test_accuracy"]);
    let base = &second["baseline"];
    assert_eq!(base["model"], "lenet-300-100");
    assert_eq!(base["test_accuracy"].as_array().unwrap().len(), 1);
    // six steps on 96 samples: above chance (0.1), nothing more
    assert!(base["test_accuracy"][0].as_f64().unwrap() > 0.12, "{base}");
    let other = std::fs::read(again.join("model.safetensors")).unwrap();
    assert!(other == bytes, "the same seed wrote other bytes");
    let (a, b) = (
        safetensors::SafeTensors::deserialize(&bytes).unwrap(),
        safetensors::SafeTensors::deserialize(&other).unwrap(),
    );
    assert_eq!(a.len(), b.len());
    for (name, t) in a.tensors() {
        assert!(
            b.tensor(&name).unwrap().data() == t.data(),
            "{name} differs"
        );
    }

    // bad settings are refused before any work
    std::fs::write(&config, "epochs = 0\n").unwrap();
    fails_with(&run(&dir.path().join("x")), "epochs must be at least 1");
    std::fs::write(&config, "chanels = 4\n").unwrap();
    fails_with(&run(&dir.path().join("y")), "unknown field");
    std::fs::write(&config, "channels = 3\n").unwrap();
    fails_with(&run(&dir.path().join("z")), "even channel count");
    std::fs::write(&config, "epochs = 1\n").unwrap();
    fails_with(
        &run_with(&dir.path().join("w"), &["--baseline", "resnet-7"]),
        "baseline resnet-7",
    );
    assert!(!dir.path().join("w").exists());
}
