//! Decoupled KD against the reference formula in PyTorch, hand-made logits with
//! closed-form values, a finite-difference gradient check and the warm-up.
//!
//! Golden values: PyTorch in float64. Every snippet below runs after this prelude
//! (`dkd_parts` is the reference implementation's `dkd_loss`, returning both terms):
//!
//! ```python
//! import math, torch, torch.nn.functional as F
//! def wave(shape, a, b, scale=1.0, offset=0.0):
//!     # scale·sin(i·a + b) + offset over the flat index i, rounded to f32 like the Rust side
//!     n = math.prod(shape)
//!     x = scale * torch.sin(torch.arange(n, dtype=torch.float64) * a + b) + offset
//!     return x.float().double().reshape(shape)
//! def cat_mask(t, mask1, mask2):
//!     return torch.cat([(t * mask1).sum(1, keepdims=True), (t * mask2).sum(1, keepdims=True)], dim=1)
//! def dkd_parts(ls, lt, target, T):
//!     gt = torch.zeros_like(ls).scatter_(1, target.unsqueeze(1), 1).bool()
//!     other = torch.ones_like(ls).scatter_(1, target.unsqueeze(1), 0).bool()
//!     ps = cat_mask(F.softmax(ls / T, dim=1), gt, other)
//!     pt = cat_mask(F.softmax(lt / T, dim=1), gt, other)
//!     tckd = F.kl_div(torch.log(ps), pt, reduction='sum') * T**2 / target.shape[0]
//!     pt2 = F.softmax(lt / T - 1000.0 * gt, dim=1)
//!     log_ps2 = F.log_softmax(ls / T - 1000.0 * gt, dim=1)
//!     nckd = F.kl_div(log_ps2, pt2, reduction='sum') * T**2 / target.shape[0]
//!     return tckd, nckd
//! def dkd(ls, lt, target, alpha, beta, T, epoch, warmup):
//!     tckd, nckd = dkd_parts(ls, lt, target, T)
//!     return min(epoch / warmup, 1.0) * (alpha * tckd + beta * nckd)
//! S = wave((4, 6), 0.7, 0.3, 3.0)
//! Tt = wave((4, 6), 0.45, -0.2, 4.0)
//! y = torch.tensor([2, 0, 5, 3])
//! ```

use candle_core::{DType, Device, Tensor, Var};
use kd_core::losses::{dkd_loss, dkd_terms, hinton_kd, softmax_t, DkdConfig};
use kd_core::KdError;

mod common;
use common::*;

fn student() -> Tensor {
    wave(&[4, 6], 0.7, 0.3, 3.0, 0.0)
}

fn teacher() -> Tensor {
    wave(&[4, 6], 0.45, -0.2, 4.0, 0.0)
}

fn labels() -> Tensor {
    Tensor::new(&[2u32, 0, 5, 3], &Device::Cpu).unwrap()
}

#[test]
fn dkd_terms_and_loss_match_the_reference() -> TestResult {
    let (s, t, y) = (student(), teacher(), labels());
    let terms = dkd_terms(&s, &t, &y, 4.0)?;
    // tckd, nckd = dkd_parts(S, Tt, y, 4.0); tckd.item(), nckd.item()
    assert_close(&[scalar(&terms.tckd)], &[1.9498229739257467]);
    assert_close(&[scalar(&terms.nckd)], &[4.965586908493397]);

    let cfg = DkdConfig::PAPER;
    // dkd(S, Tt, y, 1.0, 8.0, 4.0, 5, 20).item()
    assert_close(
        &[scalar(&dkd_loss(&s, &t, &y, &cfg, 5)?)],
        &[10.418629560468231],
    );
    // dkd(S, Tt, y, 1.0, 8.0, 4.0, 30, 20).item()
    assert_close(
        &[scalar(&dkd_loss(&s, &t, &y, &cfg, 30)?)],
        &[41.674518241872924],
    );
    // dkd(S, Tt, y, 0.5, 2.0, 2.0, 1, 1).item()
    let other = DkdConfig {
        alpha: 0.5,
        beta: 2.0,
        temperature: 2.0,
        warmup_epochs: 1,
    };
    assert_close(
        &[scalar(&dkd_loss(&s, &t, &y, &other, 1)?)],
        &[9.657253794181267],
    );
    Ok(())
}

#[test]
fn dkd_gradient_matches_torch_autograd() -> TestResult {
    let s = Var::from_tensor(&student())?;
    let t = Var::from_tensor(&teacher())?;
    let loss = dkd_loss(
        s.as_tensor(),
        t.as_tensor(),
        &labels(),
        &DkdConfig::PAPER,
        30,
    )?;
    let grads = loss.backward()?;
    assert!(
        grads.get(t.as_tensor()).is_none(),
        "teacher must be detached"
    );
    // Sv = S.clone().requires_grad_(True)
    // dkd(Sv, Tt, y, 1.0, 8.0, 4.0, 30, 20).backward(); Sv.grad.flatten().tolist()
    let expected = [
        0.8583325123918691,
        1.2548328046112176,
        0.0823304701495422,
        -0.009742997359806807,
        -0.9660691197840711,
        -1.2196836700087508,
        -0.2886297216343739,
        -2.3012154550884207,
        -0.9329662286515816,
        0.3294601969515064,
        1.425739936764517,
        1.7676112716583532,
        2.480814071125089,
        1.0644765243784269,
        -0.13102625361478543,
        -1.155357964044327,
        -2.0775657556301725,
        -0.18134062221422978,
        -1.1808438473867195,
        -0.16252600564781433,
        0.6573828721745939,
        0.06408341929128462,
        0.41248047874919985,
        0.20942308281945465,
    ];
    let g = grads
        .get(s.as_tensor())
        .ok_or("no gradient for the student")?;
    assert_close(&flat(g), &expected);
    Ok(())
}

#[test]
fn dkd_gradient_matches_finite_differences() -> TestResult {
    let (s, t, y) = (student(), teacher(), labels());
    let cfg = DkdConfig::PAPER;
    let v = Var::from_tensor(&s)?;
    let grads = dkd_loss(v.as_tensor(), &t, &y, &cfg, 30)?.backward()?;
    let analytic = flat(grads.get(v.as_tensor()).ok_or("no gradient")?);
    let numeric = finite_differences(&s, 1e-2, |x| {
        scalar(&dkd_loss(x, &t, &y, &cfg, 30).unwrap())
    });
    let scale = analytic.iter().fold(0f64, |m, g| m.max(g.abs()));
    let worst = analytic
        .iter()
        .zip(&numeric)
        .map(|(a, n)| (a - n).abs())
        .fold(0f64, f64::max);
    // FD in f32 with h = 1e-2 on logits of size ~3 (T = 4, so the softmax sees steps
    // of 2.5e-3): the loss (~40) has a rounding error of ~1e-5, i.e. ~5e-4 in the
    // quotient; truncation h²/6·|L‴| is ~1e-4 (observed worst: 1.8e-4 of the largest
    // entry). 0.2 % of the largest entry (~2.5) covers both, while a wrong mask or
    // reduction changes entries by their own size.
    assert!(
        worst <= 2e-3 * scale,
        "worst |analytic − numeric| = {worst:e}, scale {scale:e}"
    );
    Ok(())
}

#[test]
fn dkd_reduces_to_closed_forms_on_hand_made_logits() -> TestResult {
    // T = 1, student logits all 0 (uniform over 3 classes), label 0 for both rows:
    // row A: teacher [ln 2, 0, 0] → p_T = [1/2, 1/4, 1/4], b_T = [1/2, 1/2], non-target [1/2, 1/2]
    //        TCKD_A = ½ ln(3/2) + ½ ln(3/4) = ½ ln(9/8), NCKD_A = 0 (both non-target parts uniform)
    // row B: teacher [0, ln 3, 0] → p_T = [1/5, 3/5, 1/5], b_T = [1/5, 4/5], non-target [3/4, 1/4]
    //        TCKD_B = 1/5 ln(3/5) + 4/5 ln(6/5), NCKD_B = 3/4 ln(3/2) + 1/4 ln(1/2)
    // python: from math import log
    //   ta = 0.5*log(9/8); tb = 0.2*log(3/5) + 0.8*log(6/5); nb = 0.75*log(1.5) + 0.25*log(0.5)
    //   (ta + tb) / 2, nb / 2, (ta + tb) / 2 + 8 * nb / 2
    //   → 0.05129181925507863 0.06540601797056848 0.5745399630196265
    // (dkd_parts(torch.zeros(2, 3), Th, torch.tensor([0, 0]), 1.0) gives the same.)
    let ln2 = std::f32::consts::LN_2;
    let ln3 = 3f32.ln();
    let s = Tensor::zeros((2, 3), DType::F32, &Device::Cpu)?;
    let t = Tensor::new(&[[ln2, 0.0, 0.0], [0.0, ln3, 0.0]], &Device::Cpu)?;
    let y = Tensor::new(&[0u32, 0], &Device::Cpu)?;
    let terms = dkd_terms(&s, &t, &y, 1.0)?;
    assert_close(&[scalar(&terms.tckd)], &[0.05129181925507863]);
    assert_close(&[scalar(&terms.nckd)], &[0.06540601797056848]);
    let cfg = DkdConfig {
        temperature: 1.0,
        warmup_epochs: 0,
        ..DkdConfig::default()
    };
    assert_close(
        &[scalar(&dkd_loss(&s, &t, &y, &cfg, 0)?)],
        &[0.5745399630196265],
    );

    // Equal logits: both terms vanish.
    let same = dkd_terms(&t, &t, &y, 2.0)?;
    assert!(scalar(&same.tckd).abs() < 1e-7 && scalar(&same.nckd).abs() < 1e-7);
    Ok(())
}

#[test]
fn dkd_decomposes_hinton_kd_per_sample() -> TestResult {
    // The paper's identity, per sample: KD = TCKD + (1 − p_T[y])·NCKD (all × T²).
    let (s, t) = (student(), teacher());
    let y: Vec<u32> = labels().to_vec1()?;
    for (n, &label) in y.iter().enumerate() {
        let (sn, tn) = (s.narrow(0, n, 1)?, t.narrow(0, n, 1)?);
        let yn = Tensor::new(&[label], &Device::Cpu)?;
        let terms = dkd_terms(&sn, &tn, &yn, 4.0)?;
        let pt = flat(&softmax_t(&tn, 4.0)?)[label as usize];
        let recomposed = scalar(&terms.tckd) + (1.0 - pt) * scalar(&terms.nckd);
        assert_close(&[recomposed], &[scalar(&hinton_kd(&sn, &tn, 4.0)?)]);
    }
    Ok(())
}

#[test]
fn warm_up_scales_the_loss_linearly() -> TestResult {
    let (s, t, y) = (student(), teacher(), labels());
    let cfg = DkdConfig::PAPER;
    let full = scalar(&dkd_loss(&s, &t, &y, &cfg, 20)?);
    assert_eq!(cfg.warmup_factor(0), 0.0);
    assert_eq!(cfg.warmup_factor(1), 0.05);
    assert_eq!(cfg.warmup_factor(10), 0.5);
    assert_eq!(cfg.warmup_factor(400), 1.0);
    assert_eq!(scalar(&dkd_loss(&s, &t, &y, &cfg, 0)?), 0.0);
    assert_close(&[scalar(&dkd_loss(&s, &t, &y, &cfg, 10)?)], &[0.5 * full]);
    assert_close(&[scalar(&dkd_loss(&s, &t, &y, &cfg, 21)?)], &[full]);
    let no_warmup = DkdConfig {
        warmup_epochs: 0,
        ..cfg
    };
    assert_eq!(no_warmup.warmup_factor(0), 1.0);
    Ok(())
}

#[test]
fn dkd_rejects_bad_inputs_and_configs() -> TestResult {
    let (s, t) = (student(), teacher());
    let cfg = DkdConfig::PAPER;
    let out_of_range = Tensor::new(&[2u32, 0, 6, 3], &Device::Cpu)?;
    assert!(matches!(
        dkd_loss(&s, &t, &out_of_range, &cfg, 1),
        Err(KdError::ShapeMismatch(_))
    ));
    let signed = Tensor::new(&[2i64, 0, 5, 3], &Device::Cpu)?;
    assert!(matches!(
        dkd_loss(&s, &t, &signed, &cfg, 1),
        Err(KdError::ShapeMismatch(_))
    ));
    assert!(matches!(
        dkd_loss(&s, &t.narrow(0, 0, 3)?, &labels(), &cfg, 1),
        Err(KdError::ShapeMismatch(_))
    ));
    for bad in [
        DkdConfig {
            temperature: 0.0,
            ..cfg
        },
        DkdConfig { beta: -1.0, ..cfg },
        DkdConfig {
            alpha: f64::NAN,
            ..cfg
        },
    ] {
        assert!(matches!(
            dkd_loss(&s, &t, &labels(), &bad, 1),
            Err(KdError::InvalidConfig(_))
        ));
    }
    let parsed: DkdConfig = serde_json::from_str(r#"{"beta": 2.0}"#)?;
    assert_eq!(
        parsed,
        DkdConfig {
            beta: 2.0,
            ..DkdConfig::default()
        }
    );
    assert_eq!(
        (cfg.alpha, cfg.beta, cfg.temperature, cfg.warmup_epochs),
        (1.0, 8.0, 4.0, 20)
    );
    // The defaults are the paper's without the warm-up, and a `dkd` term
    // of the objective grammar takes them.
    let dkd = kd_core::Objective::parse("dkd", &kd_core::TermParams::default())?;
    assert!(
        dkd.terms.iter().any(|t| matches!(
            t.term,
            kd_core::Term::Dkd {
                alpha,
                beta,
                temperature,
                warmup_epochs: 0,
            } if (alpha, beta, temperature) == (1.0, 8.0, 4.0)
        )),
        "{dkd:?}"
    );
    assert_eq!(
        DkdConfig::default(),
        DkdConfig {
            warmup_epochs: 0,
            ..DkdConfig::PAPER
        }
    );
    Ok(())
}
