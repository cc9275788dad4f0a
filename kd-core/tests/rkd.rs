//! Relational KD against PyTorch, a finite-difference gradient check and its
//! scale invariances.
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
//! def pdist(e, eps=1e-12):
//!     sq = e.pow(2).sum(1)
//!     d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt().clone()
//!     d[range(len(e)), range(len(e))] = 0
//!     return d
//! def rkd_distance(s, t):
//!     s, t = s.flatten(1), t.flatten(1)
//!     td = pdist(t); td = td / td[td > 0].mean()
//!     sd = pdist(s); sd = sd / sd[sd > 0].mean()
//!     return F.smooth_l1_loss(sd, td)
//! def rkd_angle(s, t):
//!     def angles(e):
//!         v = F.normalize(e.flatten(1).unsqueeze(0) - e.flatten(1).unsqueeze(1), p=2, dim=2)
//!         return torch.bmm(v, v.transpose(1, 2)).view(-1)
//!     return F.smooth_l1_loss(angles(s), angles(t))
//! S = wave((5, 2, 2), 0.7, 0.3, 1.5)     # student embeddings, flattened to [5, 4]
//! Tt = wave((5, 6), 0.45, -0.2, 2.0)     # teacher embeddings [5, 6]
//! ```

use candle_core::{Tensor, Var};
use kd_core::losses::{rkd_angle_loss, rkd_distance_loss, rkd_loss, RkdConfig};
use kd_core::KdError;

mod common;
use common::*;

fn student() -> Tensor {
    wave(&[5, 2, 2], 0.7, 0.3, 1.5, 0.0)
}

fn teacher() -> Tensor {
    wave(&[5, 6], 0.45, -0.2, 2.0, 0.0)
}

#[test]
fn rkd_losses_match_torch() -> TestResult {
    let (s, t) = (student(), teacher());
    // rkd_distance(S, Tt).item()
    assert_close(
        &[scalar(&rkd_distance_loss(&s, &t)?)],
        &[0.00973424686707627],
    );
    // rkd_angle(S, Tt).item()
    assert_close(
        &[scalar(&rkd_angle_loss(&s, &t)?)],
        &[0.0043745021530407465],
    );
    // (25 * rkd_distance(S, Tt) + 50 * rkd_angle(S, Tt)).item()
    let cfg = RkdConfig::default();
    assert_eq!((cfg.distance_weight, cfg.angle_weight), (25.0, 50.0));
    assert_close(&[scalar(&rkd_loss(&s, &t, &cfg)?)], &[0.46208127932894405]);
    // A single weight gives that term alone.
    let only_angle = RkdConfig {
        distance_weight: 0.0,
        angle_weight: 2.0,
    };
    assert_close(
        &[scalar(&rkd_loss(&s, &t, &only_angle)?)],
        &[2.0 * 0.0043745021530407465],
    );
    Ok(())
}

#[test]
fn rkd_losses_match_torch_in_the_linear_part_of_smooth_l1() -> TestResult {
    // S2 = S.clone(); S2[0] *= 10   # an outlier: some |ψ_S − ψ_T| > 1
    let s = student();
    let outlier = Tensor::cat(&[(s.narrow(0, 0, 1)? * 10.0)?, s.narrow(0, 1, 4)?], 0)?;
    let t = teacher();
    // rkd_distance(S2, Tt).item()
    assert_close(
        &[scalar(&rkd_distance_loss(&outlier, &t)?)],
        &[0.31021717097441054],
    );
    // rkd_angle(S2, Tt).item()
    assert_close(
        &[scalar(&rkd_angle_loss(&outlier, &t)?)],
        &[0.053921875025624774],
    );
    Ok(())
}

#[test]
fn rkd_gradient_matches_torch_autograd() -> TestResult {
    let s = Var::from_tensor(&student())?;
    let t = Var::from_tensor(&teacher())?;
    let grads = rkd_loss(s.as_tensor(), t.as_tensor(), &RkdConfig::default())?.backward()?;
    assert!(
        grads.get(t.as_tensor()).is_none(),
        "teacher must be detached"
    );
    // Sv = S.clone().requires_grad_(True)
    // (25 * rkd_distance(Sv, Tt) + 50 * rkd_angle(Sv, Tt)).backward(); Sv.grad.flatten().tolist()
    let expected = [
        -0.3538770656275282,
        -0.11506066364692163,
        0.17787055602697655,
        0.38714648584790834,
        0.1956816165260708,
        -0.07316168903246911,
        -0.3075959044442332,
        -0.39736296811603844,
        -0.008061315012001184,
        0.024063687787949747,
        0.04487115496806923,
        0.04457501884768576,
        -0.33781343978586925,
        -0.2724906441329353,
        -0.07901124870258415,
        0.1516283727110584,
        0.5040702038993279,
        0.4366493090243763,
        0.16386544215177148,
        -0.18598690929061407,
    ];
    let g = grads
        .get(s.as_tensor())
        .ok_or("no gradient for the student")?;
    assert_eq!(g.dims(), &[5, 2, 2]);
    assert_close(&flat(g), &expected);
    Ok(())
}

#[test]
fn rkd_gradient_matches_finite_differences() -> TestResult {
    let t = teacher();
    let cfg = RkdConfig::default();
    for (name, s) in [
        ("plain", student()),
        ("outlier", {
            let s = student();
            Tensor::cat(&[(s.narrow(0, 0, 1)? * 10.0)?, s.narrow(0, 1, 4)?], 0)?
        }),
    ] {
        let v = Var::from_tensor(&s)?;
        let grads = rkd_loss(v.as_tensor(), &t, &cfg)?.backward()?;
        let analytic = flat(grads.get(v.as_tensor()).ok_or("no gradient")?);
        let numeric = finite_differences(&s, 1e-3, |x| scalar(&rkd_loss(x, &t, &cfg).unwrap()));
        let scale = analytic.iter().fold(0f64, |m, g| m.max(g.abs()));
        let worst = analytic
            .iter()
            .zip(&numeric)
            .map(|(a, n)| (a - n).abs())
            .fold(0f64, f64::max);
        // FD in f32 with h = 1e-3: the loss (~0.5, ~9 with the outlier) carries a
        // rounding error of ~1e-7 relative, which the step 2h turns into up to ~1e-3
        // in the quotient; truncation h²/6·|L‴| is ~1e-6 (observed worst: 1.3e-4 and
        // 1.7e-3 of the largest entry). 1 % of the largest entry (~0.5) is above both,
        // while a wrong term (e.g. a missing normalisation by the mean distance)
        // changes entries by their own size.
        assert!(
            worst <= 1e-2 * scale,
            "{name}: worst |analytic − numeric| = {worst:e}, scale {scale:e}"
        );
    }
    Ok(())
}

#[test]
fn distance_loss_is_invariant_to_scaling_both_embeddings() -> TestResult {
    let (s, t) = (student(), teacher());
    let reference = scalar(&rkd_distance_loss(&s, &t)?);
    for c in [0.1, 3.0, 250.0] {
        let got = scalar(&rkd_distance_loss(&(&s * c)?, &(&t * c)?)?);
        assert!(
            (got - reference).abs() <= RTOL * reference,
            "×{c}: {got} vs {reference}"
        );
    }
    Ok(())
}

#[test]
fn angle_loss_is_invariant_to_scaling_the_student() -> TestResult {
    let (s, t) = (student(), teacher());
    let reference = scalar(&rkd_angle_loss(&s, &t)?);
    for c in [0.05, 2.0, 40.0] {
        let got = scalar(&rkd_angle_loss(&(&s * c)?, &t)?);
        assert!(
            (got - reference).abs() <= RTOL * reference,
            "×{c}: {got} vs {reference}"
        );
    }
    // Equal embeddings relate identically: both losses vanish.
    assert!(scalar(&rkd_distance_loss(&t, &t)?).abs() < 1e-7);
    assert!(scalar(&rkd_angle_loss(&t, &t)?).abs() < 1e-7);
    Ok(())
}

#[test]
fn rkd_rejects_bad_inputs_and_configs() -> TestResult {
    let (s, t) = (student(), teacher());
    assert!(matches!(
        rkd_distance_loss(&s, &t.narrow(0, 0, 4)?),
        Err(KdError::ShapeMismatch(_))
    ));
    assert!(matches!(
        rkd_angle_loss(&s.narrow(0, 0, 1)?, &t.narrow(0, 0, 1)?),
        Err(KdError::ShapeMismatch(_))
    ));
    for bad in [
        RkdConfig {
            distance_weight: 0.0,
            angle_weight: 0.0,
        },
        RkdConfig {
            distance_weight: -1.0,
            angle_weight: 1.0,
        },
        RkdConfig {
            distance_weight: 1.0,
            angle_weight: f64::INFINITY,
        },
    ] {
        assert!(matches!(
            rkd_loss(&s, &t, &bad),
            Err(KdError::InvalidConfig(_))
        ));
    }
    let cfg: RkdConfig = serde_json::from_str(r#"{"angle_weight": 10.0}"#)?;
    assert_eq!((cfg.distance_weight, cfg.angle_weight), (25.0, 10.0));
    Ok(())
}
