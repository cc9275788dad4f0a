//! Parameter filters and glob matching.

use prune_core::{glob_match, ParamFilter};

fn params() -> Vec<(String, Vec<usize>)> {
    [
        ("conv1.weight", vec![16, 3, 3, 3]),
        ("conv1.bias", vec![16]),
        ("bn1.weight", vec![16]),
        ("bn1.running_mean", vec![16]),
        ("bn1.running_var", vec![16]),
        ("bn1.num_batches_tracked", vec![]),
        ("layer1.0.conv1.weight", vec![16, 16, 3, 3]),
        ("layer1.0.bn1.weight", vec![16]),
        ("blocks.0.norm1.weight", vec![16]),
        ("blocks.0.attn.qkv.weight", vec![48, 16]),
        ("blocks.0.layernorm.weight", vec![4, 4]),
        ("blocks.0.scale", vec![16]),
        ("fc.weight", vec![10, 16]),
        ("fc.bias", vec![10]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect()
}

#[test]
fn default_filter_keeps_rank2_weights_only() {
    let f = ParamFilter::default();
    assert_eq!(
        f.prunable(&params()),
        vec![
            "conv1.weight",
            "layer1.0.conv1.weight",
            "blocks.0.attn.qkv.weight",
            "fc.weight"
        ]
    );
    for name in [
        "conv1.bias",
        "bn1.weight",
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
        "blocks.0.norm1.weight",
        "blocks.0.layernorm.weight",
    ] {
        assert!(f.is_excluded(name), "{name}");
    }
    assert!(!f.is_excluded("fc.weight"));
    assert!(!f.keep_first && !f.keep_last);
}

#[test]
fn keep_first_and_keep_last_spare_the_ends_in_forward_order() {
    let mut f = ParamFilter {
        keep_first: true,
        ..ParamFilter::default()
    };
    assert_eq!(
        f.prunable(&params()),
        vec![
            "layer1.0.conv1.weight",
            "blocks.0.attn.qkv.weight",
            "fc.weight"
        ]
    );
    f.keep_last = true;
    assert_eq!(
        f.prunable(&params()),
        vec!["layer1.0.conv1.weight", "blocks.0.attn.qkv.weight"]
    );
    f.keep_first = false;
    assert_eq!(
        f.prunable(&params()),
        vec![
            "conv1.weight",
            "layer1.0.conv1.weight",
            "blocks.0.attn.qkv.weight"
        ]
    );
    // One candidate, both flags: nothing left, no panic.
    let one = vec![("w".to_string(), vec![2, 2])];
    let both = ParamFilter {
        keep_first: true,
        keep_last: true,
        ..ParamFilter::default()
    };
    assert!(both.prunable(&one).is_empty());
}

#[test]
fn custom_excludes_replace_the_defaults() {
    let f = ParamFilter {
        exclude: vec!["fc.*".to_string()],
        keep_first: false,
        keep_last: false,
    };
    let names = f.prunable(&params());
    assert!(!names.contains(&"fc.weight".to_string()));
    // bias patterns no longer apply, but rank 1 is still never prunable.
    assert!(names.contains(&"blocks.0.layernorm.weight".to_string()));
    assert!(!names.contains(&"conv1.bias".to_string()));
}

#[test]
fn filter_serde_fills_missing_fields_with_defaults() {
    let f: ParamFilter = serde_json::from_str(r#"{"keep_last": true}"#).unwrap();
    assert!(f.keep_last);
    assert!(!f.keep_first);
    assert_eq!(f.exclude, ParamFilter::default().exclude);
    let back: ParamFilter = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
    assert_eq!(back, f);
}

#[test]
fn glob_cases() {
    let cases = [
        ("*.bias", "conv1.bias", true),
        ("*.bias", "conv1.bias_extra", false),
        ("*.bias", "bias", false),
        ("*bn*", "layer1.0.bn2.weight", true),
        ("*bn*", "bn", true),
        ("*bn*", "b.n", false),
        ("fc.weight", "fc.weight", true),
        ("fc.weight", "fc.weights", false),
        ("fc.weight", "xfc.weight", false),
        ("*", "", true),
        ("*", "anything.at.all", true),
        ("", "", true),
        ("", "a", false),
        ("a*b*c", "abc", true),
        ("a*b*c", "aXXbYYc", true),
        ("a*b*c", "aXXbYY", false),
        ("a*b*c", "acb", false),
        ("**x", "yyx", true),
        ("layer*.conv*.weight", "layer3.1.conv2.weight", true),
        ("layer*.conv*.weight", "layer3.1.bn2.weight", false),
        ("*running_mean", "bn1.running_mean", true),
        ("*Norm*", "blocks.0.norm1.weight", false),
        ("*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
        ("é*ü", "éaü", true),
    ];
    for (pattern, name, expected) in cases {
        assert_eq!(
            glob_match(pattern, name),
            expected,
            "{pattern:?} vs {name:?}"
        );
    }
}
