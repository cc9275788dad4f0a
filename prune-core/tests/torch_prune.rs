//! `torch_prune` against `torch.nn.utils.prune` (PyTorch 2.15) on the same
//! tensors. The golden masks come from this script:
//!
//! ```python
//! import math, torch, torch.nn as nn, torch.nn.utils.prune as prune
//! def va(i): return math.sin(1.3 * i + 0.7) * (1 + i % 5)
//! def vb(i): return math.cos(0.9 * i + 0.3) * (1 + i % 3)
//! def holder(shape, f):
//!     m = nn.Module(); n = math.prod(shape)
//!     m.weight = nn.Parameter(torch.tensor([f(i) for i in range(n)], dtype=torch.float32).view(*shape))
//!     return m
//! def flat(t): return [int(x) for x in t.flatten().tolist()]
//! a = holder((4, 6), va)
//! prune.l1_unstructured(a, "weight", amount=0.3); print("A1", flat(a.weight_mask))
//! prune.l1_unstructured(a, "weight", amount=0.5); print("A2", flat(a.weight_mask))
//! prune.ln_structured(a, "weight", amount=1, n=2, dim=0); print("A3", flat(a.weight_mask))
//! b = holder((4, 3, 2, 2), vb)
//! prune.ln_structured(b, "weight", amount=0.5, n=1, dim=0); print("B1", flat(b.weight_mask))
//! b = holder((4, 3, 2, 2), vb)
//! prune.ln_structured(b, "weight", amount=0.34, n=float("inf"), dim=1); print("B2", flat(b.weight_mask))
//! b = holder((4, 3, 2, 2), vb)
//! prune.ln_structured(b, "weight", amount=2, n=float("-inf"), dim=0); print("B3", flat(b.weight_mask))
//! a = holder((4, 6), va); b = holder((4, 3, 2, 2), vb)
//! prune.global_unstructured([(a, "weight"), (b, "weight")], pruning_method=prune.L1Unstructured, amount=0.4)
//! print("C1a", flat(a.weight_mask)); print("C1b", flat(b.weight_mask))
//! a = holder((4, 6), va); b = holder((4, 3, 2, 2), vb)
//! prune.l1_unstructured(a, "weight", amount=10)
//! prune.global_unstructured([(a, "weight"), (b, "weight")], pruning_method=prune.L1Unstructured, amount=20)
//! print("C2a", flat(a.weight_mask)); print("C2b", flat(b.weight_mask))
//! a = holder((4, 6), va)
//! imp = torch.tensor([float(24 - i) for i in range(24)]).view(4, 6)
//! prune.l1_unstructured(a, "weight", amount=5, importance_scores=imp); print("D1", flat(a.weight_mask))
//! for amt in (0.25, 0.35, 0.45, 0.05, 0.15):
//!     m = holder((10,), lambda i: i + 1.0)
//!     prune.l1_unstructured(m, "weight", amount=amt); print("E", amt, 10 - sum(flat(m.weight_mask)))
//! m = holder((5,), lambda i: [1, 1, 1, 1, 2][i]); prune.l1_unstructured(m, "weight", amount=2); print("F", flat(m.weight_mask))
//! a = holder((4, 6), va); prune.l1_unstructured(a, "weight", amount=0.3)
//! cm = torch.ones(4, 6); cm[0] = 0
//! prune.custom_from_mask(a, "weight", cm); print("G", flat(a.weight_mask))
//! ```

use candle_core::{Device, Tensor};
use prune_core::torch_prune::{
    custom_from_mask, global_unstructured, identity, is_pruned, l1_unstructured, ln_structured,
    random_structured, random_unstructured, remove, Amount, GlobalMethod, Norm, PrunableParams,
};
use prune_core::{NamedTensors, PruneError};

fn va(i: usize) -> f32 {
    ((1.3 * i as f64 + 0.7).sin() * (1 + i % 5) as f64) as f32
}

fn vb(i: usize) -> f32 {
    ((0.9 * i as f64 + 0.3).cos() * (1 + i % 3) as f64) as f32
}

fn tensor(shape: &[usize], f: impl Fn(usize) -> f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec((0..n).map(f).collect::<Vec<f32>>(), shape, &Device::Cpu).unwrap()
}

/// Parameters `a` (4×6, `va`) and `b` (4×3×2×2, `vb`).
fn params() -> PrunableParams {
    PrunableParams::new(NamedTensors::from([
        ("a".to_string(), tensor(&[4, 6], va)),
        ("b".to_string(), tensor(&[4, 3, 2, 2], vb)),
    ]))
}

fn mask(p: &PrunableParams, name: &str) -> Vec<u8> {
    p.mask(name)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| *v as u8)
        .collect()
}

#[test]
fn unstructured_then_structured_pruning_matches_pytorch() {
    let mut p = params();
    l1_unstructured(&mut p, "a", Amount::Fraction(0.3), None).unwrap();
    let a1 = [
        0, 1, 0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1,
    ];
    assert_eq!(mask(&p, "a"), a1);
    // a second pass prunes half of the 17 entries still kept
    l1_unstructured(&mut p, "a", Amount::Fraction(0.5), None).unwrap();
    let a2 = [
        0, 1, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1,
    ];
    assert_eq!(mask(&p, "a"), a2);
    // then one row by the L2 norm of the original values
    ln_structured(&mut p, "a", Amount::Count(1), Norm::P(2.0), 0, None).unwrap();
    let a3 = [
        0, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1,
    ];
    assert_eq!(mask(&p, "a"), a3);
    // weight = orig · mask, orig untouched
    let w = p
        .weight("a")
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let orig = p
        .orig("a")
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for i in 0..24 {
        assert_eq!(orig[i], va(i));
        assert_eq!(w[i], va(i) * a3[i] as f32);
    }
    let sd = p.state_dict();
    assert!(sd.contains_key("a_orig") && sd.contains_key("a_mask") && sd.contains_key("b"));
}

#[test]
fn ln_structured_matches_pytorch_for_each_norm() {
    let ones = |r: std::ops::Range<usize>| r.map(|_| 1u8);
    let zeros = |r: std::ops::Range<usize>| r.map(|_| 0u8);
    // B1: L1 over dim 0, half of the 4 filters: filters 0 and 3 go
    let mut p = params();
    ln_structured(&mut p, "b", Amount::Fraction(0.5), Norm::P(1.0), 0, None).unwrap();
    let b1: Vec<u8> = zeros(0..12)
        .chain(ones(12..36))
        .chain(zeros(36..48))
        .collect();
    assert_eq!(mask(&p, "b"), b1);
    // B2: max norm over dim 1, round(0.34·3) = 1 input channel: channel 2
    let mut p = params();
    ln_structured(&mut p, "b", Amount::Fraction(0.34), Norm::Inf, 1, None).unwrap();
    let b2: Vec<u8> = (0..48).map(|i| u8::from((i / 4) % 3 != 2)).collect();
    assert_eq!(mask(&p, "b"), b2);
    // B3: min norm over dim 0, two filters: 1 and 2
    let mut p = params();
    ln_structured(&mut p, "b", Amount::Count(2), Norm::NegInf, 0, None).unwrap();
    let b3: Vec<u8> = ones(0..12)
        .chain(zeros(12..36))
        .chain(ones(36..48))
        .collect();
    assert_eq!(mask(&p, "b"), b3);
}

#[test]
fn global_unstructured_matches_pytorch() {
    let mut p = params();
    global_unstructured(
        &mut p,
        &["a", "b"],
        GlobalMethod::L1,
        Amount::Fraction(0.4),
        None,
    )
    .unwrap();
    let c1a = [
        0, 1, 0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 1, 1, 1, 1, 0, 1, 1,
    ];
    let c1b = [
        1, 0, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 0, 0, 1, 0, 0, 1, 1, 1, 0, 0, 1, 0,
        0, 1, 1, 0, 1, 1, 0, 1, 1, 0, 0, 1, 0, 0, 1, 1, 1, 0,
    ];
    assert_eq!(mask(&p, "a"), c1a);
    assert_eq!(mask(&p, "b"), c1b);
    // after a first pass on `a`, 20 more among the 62 entries still kept
    let mut p = params();
    l1_unstructured(&mut p, "a", Amount::Count(10), None).unwrap();
    global_unstructured(
        &mut p,
        &["a", "b"],
        GlobalMethod::L1,
        Amount::Count(20),
        None,
    )
    .unwrap();
    let c2a = [
        0, 1, 0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1,
    ];
    let c2b = [
        1, 0, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 0, 0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 0,
        0, 1, 1, 0, 1, 1, 0, 1, 1, 0, 0, 1, 0, 0, 1, 1, 1, 0,
    ];
    assert_eq!(mask(&p, "a"), c2a);
    assert_eq!(mask(&p, "b"), c2b);
}

#[test]
fn importance_scores_custom_masks_and_remove_match_pytorch() {
    // D1: importance 24 − i prunes the last five entries
    let mut p = params();
    let imp = tensor(&[4, 6], |i| (24 - i) as f32);
    l1_unstructured(&mut p, "a", Amount::Count(5), Some(&imp)).unwrap();
    let d1: Vec<u8> = (0..24).map(|i| u8::from(i < 19)).collect();
    assert_eq!(mask(&p, "a"), d1);
    // G: a custom mask multiplies the current one
    let mut p = params();
    l1_unstructured(&mut p, "a", Amount::Fraction(0.3), None).unwrap();
    let custom = tensor(&[4, 6], |i| f32::from(u8::from(i >= 6)));
    custom_from_mask(&mut p, "a", &custom).unwrap();
    let g = [
        0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1,
    ];
    assert_eq!(mask(&p, "a"), g);
    assert!(is_pruned(&p));
    // remove: the weight becomes orig · mask, the mask goes
    remove(&mut p, "a").unwrap();
    assert!(p.mask("a").is_none() && !is_pruned(&p));
    let w = p
        .weight("a")
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for i in 0..24 {
        assert_eq!(w[i], va(i) * g[i] as f32, "{i}");
    }
    assert!(matches!(remove(&mut p, "a"), Err(PruneError::NotPruned(_))));
    // identity: all ones, and pruned
    identity(&mut p, "b").unwrap();
    assert!(mask(&p, "b").iter().all(|m| *m == 1) && is_pruned(&p));
}

#[test]
fn amounts_round_half_to_even_as_python() {
    // E: round(f · 10) for f = 0.25, 0.35, 0.45, 0.05, 0.15 → 2, 4, 4, 0, 2
    for (f, pruned) in [(0.25, 2), (0.35, 4), (0.45, 4), (0.05, 0), (0.15, 2)] {
        let mut p = PrunableParams::new(NamedTensors::from([(
            "w".to_string(),
            tensor(&[2, 5], |i| i as f32 + 1.0),
        )]));
        l1_unstructured(&mut p, "w", Amount::Fraction(f), None).unwrap();
        let m = mask(&p, "w");
        assert_eq!(m.iter().filter(|v| **v == 0).count(), pruned, "{f}");
        // the smallest magnitudes go: the first entries
        assert!(m[..pruned].iter().all(|v| *v == 0), "{f}");
    }
}

#[test]
fn ties_prune_as_many_units_of_the_same_scores() {
    // F: PyTorch's topk pruned entries 1 and 3 of [1, 1, 1, 1, 2]; kdprune
    // prunes the lower indices among equal scores, 0 and 1: the same count
    // and the same magnitudes.
    let values = [1.0f32, 1.0, 1.0, 1.0, 2.0];
    let torch = [1u8, 0, 1, 0, 1];
    let mut p = PrunableParams::new(NamedTensors::from([(
        "w".to_string(),
        Tensor::new(&values[..], &Device::Cpu).unwrap(),
    )]));
    l1_unstructured(&mut p, "w", Amount::Count(2), None).unwrap();
    let ours = mask(&p, "w");
    assert_eq!(ours, [0, 0, 1, 1, 1]);
    let pruned = |m: &[u8]| {
        let mut v: Vec<f32> = (0..5).filter(|&i| m[i] == 0).map(|i| values[i]).collect();
        v.sort_by(f32::total_cmp);
        v
    };
    assert_eq!(pruned(&ours), pruned(&torch));
}

#[test]
fn random_methods_prune_the_amount_and_repeat_with_the_seed() {
    let mut p = params();
    random_unstructured(&mut p, "a", Amount::Fraction(0.25), 7).unwrap();
    let first = mask(&p, "a");
    assert_eq!(first.iter().filter(|v| **v == 0).count(), 6);
    let mut q = params();
    random_unstructured(&mut q, "a", Amount::Fraction(0.25), 7).unwrap();
    assert_eq!(mask(&q, "a"), first);
    // H: half of 3 input channels rounds to 2: one channel of 16 entries is left
    random_structured(&mut p, "b", Amount::Fraction(0.5), 1, 3).unwrap();
    let b = mask(&p, "b");
    let per_channel: Vec<usize> = (0..3)
        .map(|c| (0..48).filter(|&i| (i / 4) % 3 == c && b[i] == 1).count())
        .collect();
    let mut sorted = per_channel.clone();
    sorted.sort();
    assert_eq!(sorted, [0, 0, 16], "{per_channel:?}");
}

#[test]
fn bad_arguments_are_errors() {
    let mut p = params();
    let err = |r: prune_core::Result<()>| r.unwrap_err().to_string();
    assert!(err(l1_unstructured(&mut p, "a", Amount::Fraction(1.2), None)).contains("[0, 1]"));
    assert!(err(l1_unstructured(&mut p, "a", Amount::Count(25), None)).contains("only 24"));
    assert!(err(l1_unstructured(&mut p, "zz", Amount::Count(1), None)).contains("zz"));
    assert!(err(ln_structured(
        &mut p,
        "a",
        Amount::Count(1),
        Norm::P(2.0),
        2,
        None
    ))
    .contains("dim 2"));
    let mut v = PrunableParams::new(NamedTensors::from([(
        "v".to_string(),
        tensor(&[5], |i| i as f32),
    )]));
    assert!(err(random_structured(&mut v, "v", Amount::Count(1), 0, 0)).contains("rank 1"));
    let wrong = tensor(&[6, 4], |_| 1.0);
    assert!(err(custom_from_mask(&mut p, "a", &wrong)).contains("shape mismatch"));
    let half = tensor(&[4, 6], |_| 0.5);
    assert!(err(custom_from_mask(&mut p, "a", &half)).contains("only 0 and 1"));
    assert!(
        err(l1_unstructured(&mut p, "a", Amount::Count(1), Some(&wrong)))
            .contains("shape mismatch")
    );
    // nothing was pruned by the failed calls
    assert!(!is_pruned(&p));
}
