//! `kdprune prune --structured channels`: a ResNet-20 loses half of each
//! group's channels (blocks' inner channels and residual streams), the smaller model evaluates like any other, and
//! bad arguments fail before any file is written.

mod common;

use std::path::Path;
use std::process::Output;

use candle_core::Device;
use common::{fails_with, kdprune, ok, p};
use kdprune_models::checkpoint::{self, Checkpoint};
use kdprune_models::{Model, ModelConfig};

/// An (untrained) network for digits' 1×8×8 inputs, saved at `dir/NAME.safetensors`.
fn network(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let config = ModelConfig::from_name(name, (1, 8, 8), 10).unwrap();
    let model = Model::new(config, 0, &Device::Cpu).unwrap();
    let ckpt = Checkpoint::from_model(&model, Default::default(), Default::default()).unwrap();
    let path = dir.join(format!("{name}.safetensors"));
    checkpoint::save(&path, &ckpt).unwrap();
    path
}

/// `kdprune prune --checkpoint CKPT --structured channels --out OUT` and `extra`.
fn prune_structured(ckpt: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "prune",
        "--checkpoint",
        p(ckpt),
        "--structured",
        "channels",
        "--out",
        p(out),
    ];
    args.extend_from_slice(extra);
    kdprune(&args)
}

#[test]
fn channels_are_removed_and_the_smaller_model_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let r20 = network(dir.path(), "resnet20");
    let small = dir.path().join("small.safetensors");
    let layer = ["--criterion", "l1", "--scope", "layer"];
    let out = ok(&prune_structured(
        &r20,
        &small,
        &[&layer[..], &["--ratio", "0.5"]].concat(),
    ));
    assert!(out.contains("| layer1.0.conv1 | 16 | 8 |"), "{out}");
    assert!(out.contains("| layer3.2.conv1 | 64 | 32 |"), "{out}");
    assert!(out.contains("| layer2.pad_lo | 8 | 4 |"), "{out}");
    // half of every group: every width halves, 269,434 → 67,906 parameters
    // (stem 72 + 16; layer1 3·(2·576 + 2·16); layer2 (1152 + 2304 + 64) +
    // 2·(2·2304 + 64); layer3 (4608 + 9216 + 128) + 2·(2·9216 + 128); fc 330)
    assert!(out.contains("parameters: 269434 → 67906"), "{out}");
    let ckpt = checkpoint::load(&small, &Device::Cpu).unwrap();
    let ModelConfig::Cnn { widths, .. } = &ckpt.config else {
        panic!("a zoo config")
    };
    assert_eq!(widths["layer2.1.conv1"], 16);
    assert_eq!(ckpt.tensors["layer2.1.conv2.weight"].dims(), [16, 16, 3, 3]);
    // `models --checkpoint` shows the widths and the counts before and after
    let widths = ok(&kdprune(&["models", "--checkpoint", p(&small)]));
    assert!(widths.contains("| layer1.0.conv1 | 16 | 8 |"), "{widths}");
    assert!(
        widths.contains("parameters: 269434 unpruned, 67906 here"),
        "{widths}"
    );
    assert!(
        widths.contains("MACs per sample: 40256128 unpruned, 10101056 here"),
        "{widths}"
    );
    // a per-group ratio table overrides --ratio for the groups it names
    let table = dir.path().join("table.safetensors");
    let out = ok(&prune_structured(
        &r20,
        &table,
        &[
            &layer[..],
            &[
                "--ratio",
                "0.5",
                "--layer-ratio",
                "layer1.0.conv1=0.25,layer3.2.conv1=0.75",
            ],
        ]
        .concat(),
    ));
    assert!(out.contains("| layer1.0.conv1 | 16 | 12 |"), "{out}");
    assert!(out.contains("| layer1.1.conv1 | 16 | 8 |"), "{out}");
    assert!(out.contains("| layer3.2.conv1 | 64 | 16 |"), "{out}");
    // or in rounds, rescored each time, to a MAC target
    let target = dir.path().join("target.safetensors");
    let out = ok(&prune_structured(
        &r20,
        &target,
        &[&layer[..], &["--target-macs", "0.6"]].concat(),
    ));
    assert!(out.contains("rounds of scoring and removal"), "{out}");
    let macs = checkpoint::load(&target, &Device::Cpu)
        .unwrap()
        .config
        .macs();
    assert!(
        macs as f64 <= 0.6 * 40_256_128.0 && macs as f64 > 0.5 * 40_256_128.0,
        "{macs}"
    );
    // with --round-to every round removes whole multiples, every width
    // stays one
    let rounded = dir.path().join("rounded.safetensors");
    ok(&prune_structured(
        &r20,
        &rounded,
        &[&layer[..], &["--target-macs", "0.5", "--round-to", "4"]].concat(),
    ));
    let config = checkpoint::load(&rounded, &Device::Cpu).unwrap().config;
    assert!((config.macs() as f64) <= 0.5 * 40_256_128.0);
    for (name, w) in config.width_groups() {
        assert_eq!(w % 4, 0, "{name}: {w}");
    }
    // eval runs it on the runtime and through candle alike
    let runtime = ok(&kdprune(&["eval", p(&small)]));
    let candle = ok(&kdprune(&["eval", p(&small), "--layers", "candle"]));
    assert_eq!(runtime, candle);
}

#[test]
fn bad_structured_arguments_fail_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let r20 = network(dir.path(), "resnet20");
    let out = dir.path().join("never.safetensors");
    let prune = |extra: &[&str]| prune_structured(&r20, &out, extra);
    fails_with(&prune(&["--criterion", "l1", "--ratio", "1.2"]), "1.2");
    fails_with(
        &prune(&["--criterion", "l1", "--ignore", "layer9.0.conv1"]),
        "no channel group `layer9.0.conv1`",
    );
    let layer = |table: &str| {
        let args = [
            "--criterion",
            "l1",
            "--scope",
            "layer",
            "--layer-ratio",
            table,
        ];
        prune(&args)
    };
    fails_with(
        &layer("layer9.0.conv1=0.5"),
        "no channel group `layer9.0.conv1`",
    );
    fails_with(&layer("layer1.0.conv1"), "expected NAME=RATIO");
    fails_with(&layer("layer1.0.conv1=half"), "is not a number");
    fails_with(&layer("layer1.0.conv1=1.5"), "1.5");
    fails_with(
        &prune(&["--criterion", "l1", "--layer-ratio", "layer1.0.conv1=0.5"]),
        "per-group ratios apply to per-group selection",
    );
    // a ratio table has no meaning for the rounds of --target-macs
    fails_with(
        &prune(&[
            "--criterion",
            "l1",
            "--target-macs",
            "0.5",
            "--layer-ratio",
            "layer1.0.conv1=0.5",
        ]),
        "cannot be used with",
    );
    fails_with(
        &prune(&["--criterion", "magnitude"]),
        "not a group criterion",
    );
    fails_with(
        &prune(&["--criterion", "teacher-guided"]),
        "needs --teacher",
    );
    fails_with(
        &prune(&["--criterion", "l1", "--round-to", "0"]),
        "round_to must be at least 1",
    );
    fails_with(
        &prune(&["--criterion", "l1", "--target-macs", "1.5"]),
        "(0, 1)",
    );
    // every group keeping ≥ 70 % of its channels cannot bring ResNet-20 to 30 %
    fails_with(
        &prune(&[
            "--criterion",
            "l1",
            "--target-macs",
            "0.3",
            "--max-ratio",
            "0.3",
        ]),
        "every group is at its floor",
    );
    assert!(!out.exists());
    fails_with(
        &kdprune(&["models", "--checkpoint", p(&out)]),
        "never.safetensors",
    );
    // a network without declared channel groups
    let mlp = network(dir.path(), "mlp-16-8");
    fails_with(
        &prune_structured(&mlp, &out, &["--criterion", "l1"]),
        "not mlp-16-8",
    );
    assert!(!out.exists());
}

#[test]
fn residual_blocks_are_removed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let r20 = network(dir.path(), "resnet20");
    let short = dir.path().join("short.safetensors");
    let blocks = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "prune",
            "--checkpoint",
            p(&r20),
            "--structured",
            "blocks",
            "--out",
            p(out),
            "--score-batches",
            "1",
            "--batch-size",
            "16",
        ];
        args.extend_from_slice(extra);
        kdprune(&args)
    };
    // 2 of the 7 removable blocks (round(0.3 · 7)): each 2·(9·64·64) + 4·64
    // = 73,984 parameters of stage 3, or fewer of an earlier stage
    let out = ok(&blocks(&short, &["--ratio", "0.3"]));
    assert_eq!(out.matches("| yes |").count(), 2, "{out}");
    assert!(
        out.contains("| layer2.1 |") && !out.contains("| layer2.0 |"),
        "{out}"
    );
    let ckpt = checkpoint::load(&short, &Device::Cpu).unwrap();
    let gone: Vec<&str> = ckpt.metadata["structured_removed_blocks"]
        .split(',')
        .collect();
    assert_eq!(gone.len(), 2);
    let removed_params: usize = gone
        .iter()
        .map(|b| match &b[..6] {
            "layer1" => 2 * 9 * 16 * 16 + 4 * 16,
            "layer2" => 2 * 9 * 32 * 32 + 4 * 32,
            _ => 2 * 9 * 64 * 64 + 4 * 64,
        })
        .sum();
    assert!(
        out.contains(&format!("parameters: 269434 → {}", 269434 - removed_params)),
        "{out}"
    );
    // the shorter network loads, evaluates and shows what went
    let widths = ok(&kdprune(&["models", "--checkpoint", p(&short)]));
    assert!(
        widths.contains(&format!("removed blocks: {}", gone.join(", "))),
        "{widths}"
    );
    assert!(
        widths.contains(&format!("| {}.conv1 |", gone[0])),
        "{widths}"
    );
    ok(&kdprune(&["eval", p(&short)]));
    // it can lose channels too
    let both = dir.path().join("both.safetensors");
    ok(&kdprune(&[
        "prune",
        "--checkpoint",
        p(&short),
        "--structured",
        "channels",
        "--criterion",
        "l1",
        "--scope",
        "layer",
        "--ratio",
        "0.25",
        "--out",
        p(&both),
    ]));
    // bad ratios and networks without removable blocks fail, nothing written
    let never = dir.path().join("never.safetensors");
    fails_with(&blocks(&never, &["--ratio", "1.0"]), "[0, 1)");
    let r8 = network(dir.path(), "resnet8x4");
    fails_with(
        &kdprune(&[
            "prune",
            "--checkpoint",
            p(&r8),
            "--structured",
            "blocks",
            "--ratio",
            "0.5",
            "--out",
            p(&never),
        ]),
        "resnet8x4 has no residual block with an identity shortcut",
    );
    assert!(!never.exists());
}
