//! Model names, configurations and parameter counts.

use kdprune_models::{ModelConfig, ModelError};

// Parameter counts, independently by arithmetic (a linear layer a→b has a·b + b
// parameters, a conv c→o with k×k kernels o·c·k·k + o):
//
// def mlp(i, h, c):
//     d = [i] + h + [c]; return sum(a*b + b for a, b in zip(d, d[1:]))
// def lenet5(c, h, w, k):
//     h1, w1 = h//2, w//2; p = 0 if min(h1, w1) >= 10 else 2
//     h2, w2 = (h1 + 2*p - 4)//2, (w1 + 2*p - 4)//2
//     L = [(6, c*25), (16, 150), (120, 16*h2*w2), (84, 120), (k, 84)]
//     return sum(o*i + o for o, i in L)
// mlp(784, [300, 100], 10)   -> 266610
// mlp(64, [300, 100], 10)    -> 50610
// mlp(784, [1200, 1200], 10) -> 2395210
// lenet5(1, 28, 28, 10)      -> 61706   (torchvision-style LeNet-5 on MNIST)
// lenet5(1, 8, 8, 10)        -> 21386
// lenet5(3, 7, 7, 10)        -> 15926
#[test]
fn parameter_counts() {
    let count = |name: &str, input, classes| {
        ModelConfig::from_name(name, input, classes)
            .unwrap()
            .num_params()
    };
    assert_eq!(count("lenet-300-100", (1, 28, 28), 10), 266_610);
    assert_eq!(count("lenet-300-100", (1, 8, 8), 10), 50_610);
    assert_eq!(count("mlp-1200-1200", (1, 28, 28), 10), 2_395_210);
    assert_eq!(count("lenet5", (1, 28, 28), 10), 61_706);
    assert_eq!(count("lenet5", (1, 8, 8), 10), 21_386);
    assert_eq!(count("lenet5", (3, 7, 7), 10), 15_926);
    // lenet5(c, h, w, k, s): every width ×s, conv2 sees 6·s channels ->
    // lenet5(1, 28, 28, 10, 4) = 972554
    assert_eq!(count("lenet5-x4", (1, 28, 28), 10), 972_554);
}

#[test]
fn names_resolve_to_configs() {
    assert_eq!(
        ModelConfig::from_name("lenet-300-100", (1, 28, 28), 10).unwrap(),
        ModelConfig::Mlp {
            input_dim: 784,
            hidden: vec![300, 100],
            num_classes: 10
        }
    );
    assert_eq!(
        ModelConfig::from_name("mlp-1200-1200", (1, 8, 8), 10).unwrap(),
        ModelConfig::Mlp {
            input_dim: 64,
            hidden: vec![1200, 1200],
            num_classes: 10
        }
    );
    assert_eq!(
        ModelConfig::from_name("lenet5", (3, 32, 32), 100).unwrap(),
        ModelConfig::LeNet5 {
            in_channels: 3,
            height: 32,
            width: 32,
            num_classes: 100,
            scale: 1,
            widths: Default::default(),
        }
    );
}

#[test]
fn name_round_trips() {
    for (name, canonical) in [
        ("lenet-300-100", "lenet-300-100"),
        ("mlp-300-100", "lenet-300-100"),
        ("mlp-50", "mlp-50"),
        ("mlp-1200-1200", "mlp-1200-1200"),
        ("lenet5", "lenet5"),
    ] {
        let config = ModelConfig::from_name(name, (1, 28, 28), 10).unwrap();
        assert_eq!(config.name(), canonical);
        assert_eq!(
            ModelConfig::from_name(canonical, (1, 28, 28), 10).unwrap(),
            config
        );
    }
}

#[test]
fn unknown_name_lists_known_ones() {
    match ModelConfig::from_name("resnet19", (1, 28, 28), 10) {
        Err(ModelError::UnknownModel { name, known }) => {
            assert_eq!(name, "resnet19");
            for k in ModelConfig::KNOWN {
                assert!(known.contains(k), "{known} lacks {k}");
            }
        }
        other => panic!("expected UnknownModel, got {other:?}"),
    }
}

#[test]
fn malformed_names_and_inputs_are_config_errors() {
    for name in [
        "mlp",
        "mlp-",
        "mlp-300-",
        "mlp-0",
        "mlp-abc",
        "mlp-300--100",
        "mlp--5",
    ] {
        let err = ModelConfig::from_name(name, (1, 28, 28), 10).unwrap_err();
        assert!(matches!(err, ModelError::Config(_)), "{name}: {err:?}");
    }
    assert!(matches!(
        ModelConfig::from_name("lenet5", (1, 3, 28), 10),
        Err(ModelError::Config(_))
    ));
    assert!(matches!(
        ModelConfig::from_name("lenet5", (0, 28, 28), 10),
        Err(ModelError::Config(_))
    ));
    assert!(matches!(
        ModelConfig::from_name("lenet-300-100", (1, 28, 28), 0),
        Err(ModelError::Config(_))
    ));
    assert!(matches!(
        ModelConfig::from_name("lenet-300-100", (0, 28, 28), 10),
        Err(ModelError::Config(_))
    ));
}

/// Sizes that would need more memory than any machine has are refused with
/// the figure before anything is allocated (an abort used to follow).
#[test]
fn oversized_networks_are_refused_with_their_size() {
    // 784·100000 + 100000 + 100000·100000 + 100000 + 100000·10 + 10
    // = 10_079_600_010 parameters, 40.3 GB as f32 (python3 -c "print(784*10**5+10**5+10**10+10**5+10**6+10)").
    let err = ModelConfig::from_name("mlp-100000-100000", (1, 28, 28), 10).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ModelError::Config(_)), "{err:?}");
    assert!(msg.contains("10079600010 parameters"), "{msg}");
    assert!(msg.contains("40.3 GB"), "{msg}");
    // widths whose product overflows 64 bits
    let name = format!("mlp-{}-{}", u64::MAX, u64::MAX);
    let msg = ModelConfig::from_name(&name, (1, 28, 28), 10)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("more than the 2000000000"), "{msg}");
    // a width multiplier whose sizes overflow, and one that is merely huge
    let name = format!("lenet5-x{}", usize::MAX / 4);
    let msg = ModelConfig::from_name(&name, (1, 28, 28), 10)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("too large"), "{msg}");
    let msg = ModelConfig::from_name("lenet5-x2000", (1, 28, 28), 10)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("parameters"), "{msg}");
    // the largest published widths still pass
    ModelConfig::from_name("mlp-1200-1200", (3, 32, 32), 100).unwrap();
}

#[test]
fn param_shapes_are_in_forward_order() {
    let mlp = ModelConfig::from_name("lenet-300-100", (1, 28, 28), 10).unwrap();
    let expected: Vec<(String, Vec<usize>)> = [
        ("fc1.weight", vec![300, 784]),
        ("fc1.bias", vec![300]),
        ("fc2.weight", vec![100, 300]),
        ("fc2.bias", vec![100]),
        ("fc3.weight", vec![10, 100]),
        ("fc3.bias", vec![10]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    assert_eq!(mlp.param_shapes(), expected);

    let lenet = ModelConfig::from_name("lenet5", (1, 28, 28), 10).unwrap();
    let expected: Vec<(String, Vec<usize>)> = [
        ("conv1.weight", vec![6, 1, 5, 5]),
        ("conv1.bias", vec![6]),
        ("conv2.weight", vec![16, 6, 5, 5]),
        ("conv2.bias", vec![16]),
        ("fc1.weight", vec![120, 400]),
        ("fc1.bias", vec![120]),
        ("fc2.weight", vec![84, 120]),
        ("fc2.bias", vec![84]),
        ("fc3.weight", vec![10, 84]),
        ("fc3.bias", vec![10]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    assert_eq!(lenet.param_shapes(), expected);
}

#[test]
fn serde_json_round_trip_and_tag() {
    let mlp = ModelConfig::from_name("lenet-300-100", (1, 28, 28), 10).unwrap();
    let json = serde_json::to_string(&mlp).unwrap();
    assert_eq!(
        json,
        r#"{"arch":"mlp","input_dim":784,"hidden":[300,100],"num_classes":10}"#
    );
    assert_eq!(serde_json::from_str::<ModelConfig>(&json).unwrap(), mlp);

    let lenet = ModelConfig::from_name("lenet5", (1, 8, 8), 10).unwrap();
    let json = serde_json::to_string(&lenet).unwrap();
    assert_eq!(
        json,
        r#"{"arch":"lenet5","in_channels":1,"height":8,"width":8,"num_classes":10}"#
    );
    assert_eq!(serde_json::from_str::<ModelConfig>(&json).unwrap(), lenet);
}

#[test]
fn display_tells_configs_with_the_same_name_apart() {
    let a = ModelConfig::from_name("lenet-300-100", (1, 28, 28), 10).unwrap();
    let b = ModelConfig::from_name("lenet-300-100", (1, 8, 8), 10).unwrap();
    assert_eq!(a.to_string(), "lenet-300-100 (input 784, 10 classes)");
    assert_eq!(b.to_string(), "lenet-300-100 (input 64, 10 classes)");
    let c = ModelConfig::from_name("lenet5", (1, 28, 28), 10).unwrap();
    assert_eq!(c.to_string(), "lenet5 (input 1x28x28, 10 classes)");
}
