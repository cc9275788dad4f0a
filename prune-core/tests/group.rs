//! Channel groups: each criterion's scores against values computed
//! independently with numpy, and the selection's ratios, limits and errors.
//!
//! The expected scores come from:
//!
//! ```python
//! import numpy as np, math
//! def f(n, a, b, s): return np.array([math.sin(a*i+b)*s for i in range(n)], dtype=np.float32)
//! conv1 = f(72, 0.7, 0.1, 1.0).reshape(4,2,3,3)
//! gamma = f(4, 1.9, 0.4, 1.0); beta = f(4, 2.3, 0.2, 0.5)
//! conv2 = f(108, 1.1, 0.5, 0.8).reshape(3,4,3,3)
//! g1 = f(72, 0.37, 0.9, 0.1).reshape(4,2,3,3); gg = f(4, 0.8, 0.3, 0.1); gb = f(4, 1.4, 0.6, 0.1)
//! g2 = f(108, 0.23, 0.2, 0.1).reshape(3,4,3,3)
//! def vec(c, W):
//!     c1, ga, be, c2 = W
//!     return np.concatenate([c1[c].ravel(), [ga[c]], [be[c]], c2[:, c].ravel()]).astype(np.float64)
//! W = (conv1, gamma, beta, conv2); G = (g1, gg, gb, g2)
//! l1 = [np.abs(vec(c, W)).sum() for c in range(4)]
//! l2 = [np.sqrt((vec(c, W)**2).sum()) for c in range(4)]
//! fpgm = [sum(np.linalg.norm(vec(c, W) - vec(j, W)) for j in range(4) if j != c) for c in range(4)]
//! bn = [abs(float(gamma[c])) for c in range(4)]
//! taylor = [abs((vec(c, W) * vec(c, G)).sum()) for c in range(4)]
//! tg = [np.abs(vec(c, W) * vec(c, G)).sum() for c in range(4)]
//! ```

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use prune_core::group::{
    block_importance, select_blocks, select_channels, ChannelGroup, GroupCriterion, GroupRatios,
    Role, Slice,
};
use prune_core::{NamedTensors, PruneError};

fn f(shape: &[usize], a: f64, b: f64, s: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((a * i as f64 + b).sin() * s) as f32)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// conv1 (4 filters) · bn1 · conv2, and the gradients of the parameters.
fn net() -> (NamedTensors, NamedTensors) {
    let var = f(&[4], 0.5, 1.0, 1.0)
        .abs()
        .unwrap()
        .affine(1.0, 0.5)
        .unwrap();
    let tensors = NamedTensors::from([
        ("conv1.weight".to_string(), f(&[4, 2, 3, 3], 0.7, 0.1, 1.0)),
        ("bn1.weight".to_string(), f(&[4], 1.9, 0.4, 1.0)),
        ("bn1.bias".to_string(), f(&[4], 2.3, 0.2, 0.5)),
        ("bn1.running_mean".to_string(), f(&[4], 0.3, 0.0, 1.0)),
        ("bn1.running_var".to_string(), var),
        ("conv2.weight".to_string(), f(&[3, 4, 3, 3], 1.1, 0.5, 0.8)),
    ]);
    let grads = NamedTensors::from([
        ("conv1.weight".to_string(), f(&[4, 2, 3, 3], 0.37, 0.9, 0.1)),
        ("bn1.weight".to_string(), f(&[4], 0.8, 0.3, 0.1)),
        ("bn1.bias".to_string(), f(&[4], 1.4, 0.6, 0.1)),
        ("conv2.weight".to_string(), f(&[3, 4, 3, 3], 0.23, 0.2, 0.1)),
    ]);
    (tensors, grads)
}

fn group() -> ChannelGroup {
    ChannelGroup {
        name: "conv1".to_string(),
        channels: 4,
        members: vec![
            Slice::new("conv1.weight", 0, Role::Weight),
            Slice::new("bn1.weight", 0, Role::BnWeight),
            Slice::new("bn1.bias", 0, Role::BnBias),
            Slice::new("bn1.running_mean", 0, Role::BnStat),
            Slice::new("bn1.running_var", 0, Role::BnStat),
            Slice::new("conv2.weight", 1, Role::Weight),
        ],
    }
}

#[test]
fn every_criterion_scores_as_computed_with_numpy() {
    let (tensors, grads) = net();
    let expected: [(&str, [f64; 4]); 6] = [
        ("l1", [26.0347331, 26.1034335, 26.8894605, 25.6462637]),
        ("l2", [4.21065471, 4.27784761, 4.32623429, 4.22502648]),
        ("fpgm", [13.2795235, 14.582193, 14.8970098, 13.210173]),
        (
            "bn-scale",
            [0.389418334, 0.745705187, 0.871575773, 0.182162508],
        ),
        (
            "taylor",
            [0.157065869, 0.0101265945, 0.226299569, 0.0838051178],
        ),
        (
            "teacher-guided",
            [1.67919159, 1.68721682, 1.78012023, 1.67093977],
        ),
    ];
    for (name, want) in expected {
        let criterion: GroupCriterion = name.parse().unwrap();
        let got = group().scores(criterion, &tensors, Some(&grads)).unwrap();
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                "{name}: {got:?} vs {want:?}"
            );
        }
    }
    // the gradient criteria need gradients
    let err = group()
        .scores(GroupCriterion::Taylor, &tensors, None)
        .unwrap_err();
    assert!(matches!(err, PruneError::NeedsGradients(_)), "{err}");
    assert!("l3".parse::<GroupCriterion>().is_err());
}

/// A group that owns channels 1 and 2 of every member (offset 1) scores
/// them as the whole-axis group does (the numpy values above), and one that
/// runs past the axis is refused.
#[test]
fn a_group_at_an_offset_scores_its_own_channels() {
    let (tensors, grads) = net();
    let at = |offset: usize, channels: usize| ChannelGroup {
        name: "stream".to_string(),
        channels,
        members: group()
            .members
            .into_iter()
            .map(|m| Slice::at(m.tensor, m.axis, offset, m.role))
            .collect(),
    };
    for (criterion, want) in [
        (GroupCriterion::L1, [26.1034335, 26.8894605]),
        (GroupCriterion::TeacherGuided, [1.68721682, 1.78012023]),
    ] {
        let got = at(1, 2).scores(criterion, &tensors, Some(&grads)).unwrap();
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-6 * w,
                "{criterion:?}: {got:?} vs {want:?}"
            );
        }
    }
    let err = at(3, 2)
        .scores(GroupCriterion::L1, &tensors, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("conv1.weight"), "{err}");
}

/// A member spanning two indices per channel (a flatten's inputs) scores
/// each channel over its span:
/// `np.abs(conv2[:, 0:2]).sum()` = 27.654361037537456,
/// `np.abs(conv2[:, 2:4]).sum()` = 27.6573553904891.
#[test]
fn a_spanning_member_scores_its_span() {
    let (tensors, _) = net();
    let g = ChannelGroup {
        name: "flat".to_string(),
        channels: 2,
        members: vec![Slice::new("conv2.weight", 1, Role::Weight).spanning(2)],
    };
    let got = g.scores(GroupCriterion::L1, &tensors, None).unwrap();
    for (g, w) in got.iter().zip([27.654361037537456, 27.6573553904891]) {
        assert!((g - w).abs() <= 1e-6 * w, "{got:?}");
    }
    assert_eq!(g.members[0].indices(1), 2..4);
    // three channels of two do not fit four inputs
    let wide = ChannelGroup { channels: 3, ..g };
    assert!(wide.scores(GroupCriterion::L1, &tensors, None).is_err());
}

#[test]
fn a_member_that_does_not_fit_is_named() {
    let (mut tensors, _) = net();
    tensors.insert("bn1.bias".to_string(), f(&[5], 1.0, 0.0, 1.0));
    let err = group()
        .scores(GroupCriterion::L1, &tensors, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bn1.bias"), "{err}");
    let mut g = group();
    g.members.push(Slice::new("conv2.weight", 4, Role::Weight));
    let err = g
        .scores(GroupCriterion::L1, &net().0, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("dim 4"), "{err}");
    let mut g = group();
    g.members.push(Slice::new("fc.weight", 1, Role::Weight));
    let err = g
        .scores(GroupCriterion::L1, &net().0, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("fc.weight"), "{err}");
}

fn named(name: &str, channels: usize) -> ChannelGroup {
    ChannelGroup {
        name: name.to_string(),
        channels,
        members: Vec::new(),
    }
}

#[test]
fn selection_per_group_global_and_limits() {
    let groups = [named("a", 8), named("b", 4), named("c", 16)];
    let scores = BTreeMap::from([
        ("a".to_string(), (0..8).map(|i| 10.0 - i as f64).collect()),
        ("b".to_string(), vec![0.5, 0.1, 0.3, 0.2]),
        ("c".to_string(), (0..16).map(|i| 1.0 + i as f64).collect()),
    ]);
    // per group: half of each, the lowest scores
    let ratios = GroupRatios {
        ratio: 0.5,
        ..GroupRatios::default()
    };
    let kept = select_channels(&groups, &scores, &ratios).unwrap();
    assert_eq!(kept["a"], [0, 1, 2, 3]);
    assert_eq!(kept["b"], [0, 2]);
    assert_eq!(kept["c"], (8..16).collect::<Vec<_>>());
    // global: the 14 lowest of 28 scores — b's four (≤ 0.5), a's 3..7 (≤ 7),
    // c's 1..=5 (≤ 5)… with at most 0.75 of a group removed and one kept
    let ratios = GroupRatios {
        ratio: 0.5,
        global: true,
        max_ratio: 0.75,
        ..GroupRatios::default()
    };
    let kept = select_channels(&groups, &scores, &ratios).unwrap();
    // b would lose all four: held to 3, keeping its best (0.5 at channel 0)
    assert_eq!(kept["b"], [0]);
    // the 14 lowest: b ×4, c's 1,2,3,4,5,6 (scores 1–6) and a's 7,6,5,4 (scores 3–6):
    // ties at 3, 4, 5, 6 go by group order (a before c)
    assert_eq!(kept["a"], [0, 1, 2, 3]);
    assert_eq!(kept["c"], (6..16).collect::<Vec<_>>());
    // round_to 4: c keeps 10 → 12; ignore leaves a whole; a per-group ratio for b
    let ratios = GroupRatios {
        ratio: 0.375,
        round_to: 4,
        ignore: vec!["a".to_string()],
        per_group: BTreeMap::from([("b".to_string(), 0.25)]),
        ..GroupRatios::default()
    };
    let kept = select_channels(&groups, &scores, &ratios).unwrap();
    assert_eq!(kept["a"].len(), 8);
    assert_eq!(kept["b"], [0, 1, 2, 3], "b keeps 3 → rounded up to 4");
    assert_eq!(
        kept["c"],
        (4..16).collect::<Vec<_>>(),
        "c loses 6 → 4 to keep 12"
    );
}

#[test]
fn bad_ratios_and_names_are_errors() {
    let groups = [named("a", 4)];
    let scores = BTreeMap::from([("a".to_string(), vec![1.0, 2.0, 3.0, 4.0])]);
    let err = |r: GroupRatios| {
        select_channels(&groups, &scores, &r)
            .unwrap_err()
            .to_string()
    };
    assert!(err(GroupRatios {
        ratio: 1.2,
        ..GroupRatios::default()
    })
    .contains("1.2"));
    assert!(err(GroupRatios {
        ratio: 1.0,
        ..GroupRatios::default()
    })
    .contains("[0, 1)"));
    assert!(err(GroupRatios {
        ignore: vec!["zz".into()],
        ..GroupRatios::default()
    })
    .contains("zz"));
    assert!(err(GroupRatios {
        round_to: 0,
        ..GroupRatios::default()
    })
    .contains("round_to"));
    let nan = BTreeMap::from([("a".to_string(), vec![1.0, f64::NAN, 3.0, 4.0])]);
    let r = GroupRatios {
        ratio: 0.5,
        ..GroupRatios::default()
    };
    assert!(select_channels(&groups, &nan, &r).is_err());
    // a ratio that would empty the group keeps one channel
    let r = GroupRatios {
        ratio: 0.9,
        max_ratio: 0.99,
        ..GroupRatios::default()
    };
    let kept = select_channels(
        &[named("a", 2)],
        &BTreeMap::from([("a".to_string(), vec![2.0, 1.0])]),
        &r,
    )
    .unwrap();
    assert_eq!(kept["a"], [0]);
}

#[test]
fn summed_entry_scores_and_partial_gradients() {
    let (tensors, grads) = net();
    // |w| of the two convolutions summed per channel: the L1 score without
    // the batch norm's |γ| + |β| (β_c = 0.5·sin(2.3c + 0.2), γ from numpy above)
    let abs = |n: &str| tensors[n].abs().unwrap();
    let scores = NamedTensors::from([
        ("conv1.weight".to_string(), abs("conv1.weight")),
        ("conv2.weight".to_string(), abs("conv2.weight")),
    ]);
    let got = group().sum_scores(&scores).unwrap();
    let l1 = [26.0347331, 26.1034335, 26.8894605, 25.6462637];
    let gamma = [0.389418334, 0.745705187, 0.871575773, 0.182162508];
    for c in 0..4 {
        let beta = (0.5 * (2.3 * c as f64 + 0.2).sin()).abs();
        let want = l1[c] - gamma[c] - beta;
        assert!((got[c] - want).abs() < 1e-5, "{c}: {} vs {want}", got[c]);
    }
    // a weight's scores are required
    let only_one = NamedTensors::from([("conv1.weight".to_string(), abs("conv1.weight"))]);
    assert!(group()
        .sum_scores(&only_one)
        .unwrap_err()
        .to_string()
        .contains("conv2.weight"));
    // gradient criteria: batch-norm gradients may be absent, a weight's may not
    let weights_only: NamedTensors = grads
        .iter()
        .filter(|(n, _)| n.starts_with("conv"))
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect();
    let partial = group()
        .scores(GroupCriterion::TeacherGuided, &tensors, Some(&weights_only))
        .unwrap();
    let full = group()
        .scores(GroupCriterion::TeacherGuided, &tensors, Some(&grads))
        .unwrap();
    assert!(partial.iter().zip(&full).all(|(p, f)| p < f));
    let no_conv2: NamedTensors = weights_only
        .into_iter()
        .filter(|(n, _)| n != "conv2.weight")
        .collect();
    let err = group()
        .scores(GroupCriterion::Taylor, &tensors, Some(&no_conv2))
        .unwrap_err();
    assert!(
        err.to_string().contains("gradient of conv2.weight"),
        "{err}"
    );
}

/// The guide's block importance, mean |w·g|, against numpy:
///
/// ```python
/// w = np.concatenate([conv1.ravel(), conv2.ravel()]).astype(np.float64)
/// g = np.concatenate([g1.ravel(), g2.ravel()]).astype(np.float64)
/// np.abs(w*g).mean()                        # 0.03648547230841504
/// np.abs(conv1.astype(np.float64)*g1).mean() # 0.04192041867634025
/// np.abs(conv2.astype(np.float64)*g2).mean() # 0.03286217472979823
/// ```
#[test]
fn block_importance_is_the_mean_of_w_times_g() {
    let (tensors, grads) = net();
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for (block, want) in [
        (
            names(&["conv1.weight", "conv2.weight"]),
            0.03648547230841504,
        ),
        (names(&["conv1.weight"]), 0.04192041867634025),
        (names(&["conv2.weight"]), 0.03286217472979823),
    ] {
        let got = block_importance(&block, &tensors, &grads).unwrap();
        assert!(
            (got - want).abs() <= 1e-7 * want,
            "{block:?}: {got} vs {want}"
        );
    }
    // the lowest go first; equal scores, the earlier block; order kept
    let scores = vec![
        ("a".to_string(), 0.3),
        ("b".to_string(), 0.1),
        ("c".to_string(), 0.2),
        ("d".to_string(), 0.1),
    ];
    assert_eq!(select_blocks(&scores, 1).unwrap(), ["b"]);
    assert_eq!(select_blocks(&scores, 3).unwrap(), ["b", "c", "d"]);
    assert!(select_blocks(&scores, 5).is_err());
    assert!(block_importance(&names(&["fc.weight"]), &tensors, &grads).is_err());
    assert!(
        block_importance(&names(&["bn1.running_mean"]), &tensors, &grads)
            .unwrap_err()
            .to_string()
            .contains("gradient of bn1.running_mean")
    );
}
