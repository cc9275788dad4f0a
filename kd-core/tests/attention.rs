//! Attention transfer against PyTorch, a finite-difference gradient check and its
//! invariances.
//!
//! Golden values: PyTorch in float64. Every snippet below runs after this prelude:
//!
//! ```python
//! import math, torch, torch.nn.functional as F
//! def wave(shape, a, b, scale=1.0, offset=0.0):
//!     # scale·sin(i·a + b) + offset over the flat index i, rounded to f32 like the Rust side
//!     n = math.prod(shape)
//!     x = scale * torch.sin(torch.arange(n, dtype=torch.float64) * a + b) + offset
//!     return x.float().double().reshape(shape)
//! def energy(f, p):
//!     return f.abs().pow(p).mean(1)
//! def at_pair(fs, ft, p):
//!     es, et = energy(fs, p), energy(ft, p)
//!     size = (min(es.shape[1], et.shape[1]), min(es.shape[2], et.shape[2]))
//!     es = F.adaptive_avg_pool2d(es.unsqueeze(1), size).flatten(1)
//!     et = F.adaptive_avg_pool2d(et.unsqueeze(1), size).flatten(1)
//!     return (F.normalize(es) - F.normalize(et)).pow(2).mean()
//! sa, ta = wave((2, 3, 3, 3), 0.7, 0.3), wave((2, 4, 3, 3), 0.45, -0.2, 2.0)   # same size
//! sb, tb = wave((2, 2, 4, 4), 0.9, 0.1), wave((2, 3, 2, 2), 1.1, 0.6)          # 4×4 → 2×2
//! sc, tc = wave((2, 2, 2, 4), 1.3, -0.4), wave((2, 2, 3, 2), 0.6, 0.9)         # W 4→2, H 3→2 (adaptive)
//! ```

use candle_core::{Tensor, Var};
use kd_core::losses::{at_loss, attention_map, AttentionConfig};
use kd_core::KdError;

mod common;
use common::*;

fn pairs() -> Vec<(Tensor, Tensor)> {
    vec![
        (
            wave(&[2, 3, 3, 3], 0.7, 0.3, 1.0, 0.0),
            wave(&[2, 4, 3, 3], 0.45, -0.2, 2.0, 0.0),
        ),
        (
            wave(&[2, 2, 4, 4], 0.9, 0.1, 1.0, 0.0),
            wave(&[2, 3, 2, 2], 1.1, 0.6, 1.0, 0.0),
        ),
        (
            wave(&[2, 2, 2, 4], 1.3, -0.4, 1.0, 0.0),
            wave(&[2, 2, 3, 2], 0.6, 0.9, 1.0, 0.0),
        ),
    ]
}

#[test]
fn attention_map_matches_torch() -> TestResult {
    let f = wave(&[2, 3, 3, 3], 0.7, 0.3, 1.0, 0.0);
    // F.normalize(sa.pow(2).mean(1).view(2, -1)).flatten().tolist()
    let expected_p2 = [
        0.05299007262301727,
        0.3942006569931419,
        0.5334712878517806,
        0.23960356333313246,
        0.00043721174886985844,
        0.2130041120171463,
        0.5244292263302442,
        0.4177264022074722,
        0.07002933874132518,
        0.07035338745281386,
        0.4181357255557121,
        0.5242443421328451,
        0.21253196510931435,
        0.0004616143552850442,
        0.2400840228920941,
        0.5336102419698706,
        0.39376745534275504,
        0.05270388105508891,
    ];
    let map = attention_map(&f, 2.0)?;
    assert_eq!(map.dims(), &[2, 9]);
    assert_close(&flat(&map), &expected_p2);
    // F.normalize(sa.abs().pow(3).mean(1).view(2, -1)).flatten().tolist()
    let expected_p3 = [
        0.01814774224155415,
        0.3672962425364161,
        0.5781795438284957,
        0.17409643710819805,
        1.7438943935771572e-05,
        0.14593747009324104,
        0.5635450513474575,
        0.4006533676087808,
        0.027551479068651904,
        0.02774265114141745,
        0.40124220596185584,
        0.5632470523053714,
        0.14545272443578974,
        1.8749671198255585e-05,
        0.17462010692093008,
        0.578405339690276,
        0.36669106636912135,
        0.018001201522445838,
    ];
    assert_close(&flat(&attention_map(&f, 3.0)?), &expected_p3);
    Ok(())
}

#[test]
fn at_loss_matches_torch_with_and_without_resizing() -> TestResult {
    let pairs = pairs();
    // at_pair(sa, ta, 2).item(), at_pair(sb, tb, 2).item(), at_pair(sc, tc, 2).item()
    let expected = [
        0.04533650656304412,
        0.0071812493399484485,
        0.013700780673412034,
    ];
    for (i, e) in expected.iter().enumerate() {
        let got = scalar(&at_loss(&pairs[i..i + 1], 2.0)?);
        assert_close(&[got], &[*e]);
    }
    // (at_pair(sa, ta, 2) + at_pair(sb, tb, 2) + at_pair(sc, tc, 2)).item()
    assert_close(&[scalar(&at_loss(&pairs, 2.0)?)], &[0.0662185365764046]);
    // (at_pair(sa, ta, 3) + at_pair(sb, tb, 3) + at_pair(sc, tc, 3)).item()
    assert_close(&[scalar(&at_loss(&pairs, 3.0)?)], &[0.09078783772993983]);
    // AttentionConfig::loss is weight · at_loss.
    let cfg = AttentionConfig::default();
    assert_eq!((cfg.p, cfg.weight), (2.0, 1000.0));
    assert_close(
        &[scalar(&cfg.loss(&pairs)?)],
        &[1000.0 * 0.0662185365764046],
    );
    Ok(())
}

#[test]
fn at_gradient_through_adaptive_pooling_matches_torch() -> TestResult {
    let mut pairs = pairs();
    let sc = Var::from_tensor(&pairs[2].0)?;
    let tc = Var::from_tensor(&pairs[2].1)?;
    pairs[2] = (sc.as_tensor().clone(), tc.as_tensor().clone());
    let grads = at_loss(&pairs, 2.0)?.backward()?;
    assert!(
        grads.get(tc.as_tensor()).is_none(),
        "teacher must be detached"
    );
    // scv = sc.clone().requires_grad_(True)
    // (at_pair(sa, ta, 2) + at_pair(sb, tb, 2) + at_pair(scv, tc, 2)).backward()
    // scv.grad.flatten().tolist()
    let expected = [
        0.008349730982522247,
        -0.016795740000708916,
        -0.008244891530504455,
        0.0035772201545107266,
        -0.012555742334782051,
        -0.0022959915182592903,
        0.01637332633777868,
        0.012078461871587887,
        0.011664653887950497,
        0.020455647272454688,
        -0.0003428813925609192,
        -0.009912346371758423,
        0.006130609929428203,
        -0.008971401766847109,
        -0.015799327869679466,
        0.004515226137866147,
        -0.000980278800141629,
        -0.0002814499339180614,
        -0.013643663224654429,
        -0.011927494752886294,
        0.0020543825762110433,
        0.004473093699806945,
        -0.001476970247911551,
        0.018714967858921308,
        0.0005664391298537834,
        -0.0006196206310973094,
        0.014765654066272256,
        -0.0022894619284877273,
        -0.004523333942614724,
        -0.0017723388697454075,
        -0.015589558896194755,
        -0.01606874753221844,
    ];
    let g = grads.get(sc.as_tensor()).ok_or("no gradient for sc")?;
    assert_close(&flat(g), &expected);
    Ok(())
}

#[test]
fn at_gradient_matches_finite_differences() -> TestResult {
    for p in [2.0, 3.0] {
        for i in 0..3 {
            let pairs = pairs();
            let s = Var::from_tensor(&pairs[i].0)?;
            let mut with_var = pairs.clone();
            with_var[i].0 = s.as_tensor().clone();
            let grads = at_loss(&with_var, p)?.backward()?;
            let analytic = flat(grads.get(s.as_tensor()).ok_or("no gradient")?);
            let numeric = finite_differences(&pairs[i].0, 1e-2, |x| {
                let mut moved = pairs.clone();
                moved[i].0 = x.clone();
                scalar(&at_loss(&moved, p).unwrap())
            });
            let scale = analytic.iter().fold(0f64, |m, g| m.max(g.abs()));
            let worst = analytic
                .iter()
                .zip(&numeric)
                .map(|(a, n)| (a - n).abs())
                .fold(0f64, f64::max);
            // FD in f32: the loss (~0.05) carries a rounding error of ~1e-9, which the
            // step 2h = 2e-2 turns into ~1e-7..1e-6 in the quotient; the truncation error
            // h²/6·|L‴| is of the same order (observed worst: 3e-4 of the largest entry).
            // 0.2 % of the largest gradient entry (~1e-2) is above both and far below a
            // real error (a wrong pooling window or a missing term moves entries by
            // their own size).
            assert!(
                worst <= 2e-3 * scale,
                "p {p}, pair {i}: worst |analytic − numeric| = {worst:e}, scale {scale:e}"
            );
        }
    }
    Ok(())
}

#[test]
fn at_loss_is_invariant_to_positive_scaling_of_a_feature() -> TestResult {
    let pairs = pairs();
    for p in [2.0, 3.0] {
        let reference = scalar(&at_loss(&pairs, p)?);
        for (i, c) in [(0, 3.5), (1, 0.2), (2, 17.0)] {
            for side in [0, 1] {
                let mut scaled = pairs.clone();
                if side == 0 {
                    scaled[i].0 = (&scaled[i].0 * c)?;
                } else {
                    scaled[i].1 = (&scaled[i].1 * c)?;
                }
                let got = scalar(&at_loss(&scaled, p)?);
                assert!(
                    (got - reference).abs() <= RTOL * reference,
                    "p {p}, pair {i}, side {side}, ×{c}: {got} vs {reference}"
                );
            }
        }
        // Equal features give a zero loss.
        let same = [(pairs[0].0.clone(), pairs[0].0.clone())];
        assert!(scalar(&at_loss(&same, p)?).abs() < 1e-7);
    }
    Ok(())
}

#[test]
fn at_loss_rejects_bad_inputs() -> TestResult {
    let pairs = pairs();
    assert!(matches!(at_loss(&[], 2.0), Err(KdError::InvalidConfig(_))));
    assert!(matches!(
        at_loss(&pairs, 0.5),
        Err(KdError::InvalidConfig(_))
    ));
    let batch_mismatch = [(pairs[0].0.clone(), pairs[0].1.narrow(0, 0, 1)?)];
    assert!(matches!(
        at_loss(&batch_mismatch, 2.0),
        Err(KdError::ShapeMismatch(_))
    ));
    let flat_feature = [(pairs[0].0.flatten_from(1)?, pairs[0].1.flatten_from(1)?)];
    assert!(matches!(
        at_loss(&flat_feature, 2.0),
        Err(KdError::ShapeMismatch(_))
    ));
    let cfg: AttentionConfig = serde_json::from_str(r#"{"p": 4.0}"#)?;
    assert_eq!((cfg.p, cfg.weight), (4.0, 1000.0));
    assert!(matches!(
        AttentionConfig {
            weight: -1.0,
            ..cfg
        }
        .validate(),
        Err(KdError::InvalidConfig(_))
    ));
    Ok(())
}
