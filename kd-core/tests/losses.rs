//! Distillation losses against PyTorch golden values, autograd gradients and the
//! properties every divergence must have.
//!
//! Golden values: PyTorch 2.15 in float64. Every snippet below runs after this prelude:
//!
//! ```python
//! import torch, torch.nn.functional as F
//! S = torch.tensor([[1.2, -0.5, 0.3, 2.0, -1.1], [0.0, 0.7, -0.3, -1.5, 1.9],
//!                   [-0.8, 1.4, 0.6, 0.2, -0.4]], dtype=torch.float64)   # student
//! Tt = torch.tensor([[2.5, -1.0, 0.1, 3.2, -2.0], [-0.6, 1.8, 0.4, -2.2, 3.1],
//!                    [0.3, 2.6, -0.9, 1.1, -1.7]], dtype=torch.float64)  # teacher
//! y = torch.tensor([3, 4, 1])
//! def hinton(s, t, T):
//!     return T**2 * F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1),
//!                            log_target=True, reduction='batchmean')
//! def ca_kld(s, t, T, beta, eps=1e-7):  # beta=None: teacher's mean top-1 confidence
//!     zs = (s - s.mean(-1, keepdim=True)) / (s.std(-1, unbiased=False, keepdim=True) + eps) / T
//!     zt = (t - t.mean(-1, keepdim=True)) / (t.std(-1, unbiased=False, keepdim=True) + eps) / T
//!     ps, pt = F.softmax(zs, -1), F.softmax(zt, -1)
//!     b = pt.max(-1).values.mean().detach() if beta is None else beta
//!     rev = (ps * (ps.log() - pt.log())).sum(-1).mean()
//!     fwd = (pt * (pt.log() - ps.log())).sum(-1).mean()
//!     return T**2 * (b * rev + (1 - b) * fwd), float(b)
//! ```

use candle_core::{DType, Device, Tensor, Var};
use kd_core::losses::{
    ca_kld, ca_kld_beta, ca_kld_with, cross_entropy, hinton_kd, kl_div, log_softmax_t, softmax_t,
    standardize, standardize_with, Beta, LogitStd, LossConfig, DEFAULT_EPS,
};
use kd_core::KdError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

const STUDENT: [[f32; 5]; 3] = [
    [1.2, -0.5, 0.3, 2.0, -1.1],
    [0.0, 0.7, -0.3, -1.5, 1.9],
    [-0.8, 1.4, 0.6, 0.2, -0.4],
];
const TEACHER: [[f32; 5]; 3] = [
    [2.5, -1.0, 0.1, 3.2, -2.0],
    [-0.6, 1.8, 0.4, -2.2, 3.1],
    [0.3, 2.6, -0.9, 1.1, -1.7],
];
const LABELS: [u32; 3] = [3, 4, 1];
const RTOL: f64 = 1e-5;

fn student() -> Tensor {
    Tensor::new(&STUDENT, &Device::Cpu).unwrap()
}

fn teacher() -> Tensor {
    Tensor::new(&TEACHER, &Device::Cpu).unwrap()
}

fn labels() -> Tensor {
    Tensor::new(&LABELS, &Device::Cpu).unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    f64::from(t.to_dtype(DType::F32).unwrap().to_scalar::<f32>().unwrap())
}

fn flat(t: &Tensor) -> Vec<f64> {
    let v = t.flatten_all().unwrap().to_dtype(DType::F64).unwrap();
    v.to_vec1::<f64>().unwrap()
}

/// `|a − e| ≤ RTOL · max(|e|, max_i |e_i|)`: relative to the tensor's scale, so an
/// entry that is 0 in exact arithmetic does not demand an impossible f32 precision.
fn assert_close(actual: &[f64], expected: &[f64]) {
    assert_eq!(actual.len(), expected.len(), "length");
    let scale = expected.iter().fold(0f64, |m, e| m.max(e.abs()));
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let tol = RTOL * e.abs().max(scale);
        assert!(
            (a - e).abs() <= tol,
            "entry {i}: got {a}, expected {e} (tol {tol})"
        );
    }
}

fn random_logits(rng: &mut ChaCha8Rng, n: usize, k: usize, scale: f32) -> Tensor {
    let data: Vec<f32> = (0..n * k)
        .map(|_| scale * (rng.random::<f32>() * 2.0 - 1.0))
        .collect();
    Tensor::from_vec(data, (n, k), &Device::Cpu).unwrap()
}

#[test]
fn log_softmax_t_and_softmax_t_match_torch() -> TestResult {
    // F.log_softmax(S / 2.0, dim=-1).flatten().tolist()
    let expected_log = [
        -1.3541596658899104,
        -2.2041596658899105,
        -1.8041596658899106,
        -0.9541596658899105,
        -2.504159665889911,
        -1.8465398682963425,
        -1.4965398682963427,
        -1.9965398682963424,
        -2.5965398682963423,
        -0.8965398682963426,
        -2.184706863338043,
        -1.0847068633380432,
        -1.4847068633380431,
        -1.684706863338043,
        -1.9847068633380431,
    ];
    assert_close(&flat(&log_softmax_t(&student(), 2.0)?), &expected_log);

    // F.softmax(S / 2.0, dim=-1).flatten().tolist()
    let expected = [
        0.25816414746368904,
        0.1103432115197937,
        0.164612728162283,
        0.3851356512318343,
        0.0817442616224,
        0.15778216996623606,
        0.22390355714571128,
        0.1358043722275936,
        0.07453101971094779,
        0.4079788809495112,
        0.11251070983470506,
        0.33800085181551676,
        0.2265687465490625,
        0.18549880048604836,
        0.13742089131466734,
    ];
    assert_close(&flat(&softmax_t(&student(), 2.0)?), &expected);
    Ok(())
}

#[test]
fn kl_div_matches_torch_batchmean() -> TestResult {
    let log_p = log_softmax_t(&student(), 1.0)?;
    let log_q = log_softmax_t(&teacher(), 1.0)?;
    // KL(P‖Q) with P = softmax(S), Q = softmax(Tt):
    // F.kl_div(F.log_softmax(Tt, -1), F.log_softmax(S, -1), log_target=True, reduction='batchmean').item()
    assert_close(&[scalar(&kl_div(&log_p, &log_q)?)], &[0.2342923559028789]);
    Ok(())
}

#[test]
fn cross_entropy_matches_torch() -> TestResult {
    // F.cross_entropy(S, y).item()
    assert_close(
        &[scalar(&cross_entropy(&student(), &labels())?)],
        &[0.5793454890631901],
    );
    Ok(())
}

#[test]
fn standardize_matches_torch_population_std() -> TestResult {
    // ((S - S.mean(-1, keepdim=True)) / (S.std(-1, unbiased=False, keepdim=True) + 1e-7)).flatten().tolist()
    let expected = [
        0.7323763673815177,
        -0.7859648820679702,
        -0.07145135291527004,
        1.446889896534218,
        -1.3218500289324955,
        -0.14240375822751075,
        0.4806126840178489,
        -0.4094108049040935,
        -1.4774389916104242,
        1.5486408707241797,
        -1.2996879433561939,
        1.5596255320274326,
        0.5198751773424776,
        7.214717397708813e-17,
        -0.7798127660137163,
    ];
    assert_close(&flat(&standardize(&student(), 1e-7)?), &expected);
    Ok(())
}

/// The sample standard deviation (divide by K − 1), computed in float64 by
/// plain Python, independently of the crate and of torch:
///
/// ```python
/// import math
/// def stdz(r, eps=1e-7):
///     m = sum(r) / len(r)
///     sd = math.sqrt(sum((x - m) ** 2 for x in r) / (len(r) - 1))
///     return [(x - m) / (sd + eps) for x in r]
/// def lsm(r):
///     mx = max(r); l = math.log(sum(math.exp(x - mx) for x in r)) + mx
///     return [x - l for x in r]
/// def ca_kld_sample(S, Tt, T):
///     L = [(lsm([x / T for x in stdz(s)]), lsm([x / T for x in stdz(t)])) for s, t in zip(S, Tt)]
///     b = sum(max(math.exp(x) for x in lt) for _, lt in L) / len(L)
///     rev = sum(sum(math.exp(a) * (a - c) for a, c in zip(ls, lt)) for ls, lt in L) / len(L)
///     fwd = sum(sum(math.exp(c) * (c - a) for a, c in zip(ls, lt)) for ls, lt in L) / len(L)
///     return T * T * (b * rev + (1 - b) * fwd)
/// [x for r in S for x in stdz(r)]; ca_kld_sample(S, Tt, 2.0)   # S, Tt as above, as lists
/// ```
#[test]
fn sample_std_standardisation_matches_reference() -> TestResult {
    let expected = [
        0.6550573432084073,
        -0.7029883683212176,
        -0.06390803348374706,
        1.2941376780458778,
        -1.1822986194493204,
        -0.12736979465605924,
        0.42987305696420003,
        -0.36618815963617035,
        -1.321461619556615,
        1.3851465168846444,
        -1.1624762523030734,
        1.3949715027636882,
        0.4649905009212294,
        9.679559256651262e-17,
        -0.6974857513818441,
    ];
    assert_close(
        &flat(&standardize_with(&student(), 1e-7, LogitStd::Sample)?),
        &expected,
    );
    let loss = ca_kld_with(
        &student(),
        &teacher(),
        2.0,
        Beta::Confidence,
        1e-7,
        LogitStd::Sample,
    )?;
    assert_close(&[scalar(&loss)], &[0.09569656237473415]);
    // the population default is unchanged, and the loss config carries the choice
    let cfg = LossConfig::named("ca-kld", 2.0, 1.0, Beta::Confidence)?;
    assert_close(
        &[scalar(&cfg.loss(
            &student(),
            Some(&teacher()),
            &labels(),
        )?)],
        &[0.11537577088495607],
    );
    let sample = cfg.with_logit_std(LogitStd::Sample);
    assert_close(
        &[scalar(&sample.loss(
            &student(),
            Some(&teacher()),
            &labels(),
        )?)],
        &[0.09569656237473415],
    );
    assert_eq!("sample".parse::<LogitStd>()?, LogitStd::Sample);
    assert!("unbiased".parse::<LogitStd>().is_err());
    // one logit per row has no sample std
    let one = Tensor::new(&[[1f32], [2f32]], &Device::Cpu)?;
    assert!(standardize_with(&one, 1e-7, LogitStd::Sample).is_err());
    Ok(())
}

#[test]
fn hinton_kd_matches_standard_formula() -> TestResult {
    // hinton(S, Tt, 4.0).item()
    let loss = hinton_kd(&student(), &teacher(), 4.0)?;
    assert_close(&[scalar(&loss)], &[0.43654955196816175]);
    Ok(())
}

#[test]
fn ca_kld_confidence_beta_matches_reference() -> TestResult {
    let loss = ca_kld(&student(), &teacher(), 2.0, Beta::Confidence, 1e-7)?;
    // ca_kld(S, Tt, 2.0, None)[0].item()
    assert_close(&[scalar(&loss)], &[0.11537577088495607]);
    // ca_kld(S, Tt, 2.0, None)[1]
    let beta = ca_kld_beta(&teacher(), 2.0, Beta::Confidence, 1e-7)?;
    assert_close(&[beta], &[0.3605905541416712]);
    Ok(())
}

/// β from the teacher's raw logits at T = 1 (no standardisation):
/// `b = F.softmax(Tt, -1).max(-1).values.mean()`, then `ca_kld(S, Tt, 2.0, b)`.
#[test]
fn ca_kld_raw_confidence_beta_matches_reference() -> TestResult {
    let beta = ca_kld_beta(&teacher(), 2.0, Beta::RawConfidence, 1e-7)?;
    assert_close(&[beta], &[0.7006032071095301]);
    let loss = ca_kld(&student(), &teacher(), 2.0, Beta::RawConfidence, 1e-7)?;
    assert_close(&[scalar(&loss)], &[0.11591868736786329]);
    assert_eq!("raw-confidence".parse::<Beta>()?, Beta::RawConfidence);
    // the bound that motivates it: a one-hot-like teacher of 10 classes,
    // standardised at T = 4, is no more than 0.2036 confident
    // (F.softmax(((z - z.mean()) / z.std(unbiased=False)) / 4, -1).max() for z = [10, 0, …, 0])
    let mut z = [0f32; 10];
    z[0] = 10.0;
    let one_hot = Tensor::new(&[z], &Device::Cpu)?;
    let bounded = ca_kld_beta(&one_hot, 4.0, Beta::Confidence, 1e-7)?;
    assert_close(&[bounded], &[0.20360860098348887]);
    assert!(ca_kld_beta(&one_hot, 4.0, Beta::RawConfidence, 1e-7)? > 0.99);
    Ok(())
}

#[test]
fn ca_kld_fixed_beta_matches_reference() -> TestResult {
    let loss = ca_kld(&student(), &teacher(), 3.0, Beta::Fixed(0.25), 1e-7)?;
    // ca_kld(S, Tt, 3.0, 0.25)[0].item()
    assert_close(&[scalar(&loss)], &[0.12845760480048765]);
    assert_eq!(ca_kld_beta(&teacher(), 3.0, Beta::Fixed(0.25), 1e-7)?, 0.25);
    Ok(())
}

#[test]
fn ca_kld_gradient_matches_torch_autograd() -> TestResult {
    let s = Var::from_tensor(&student())?;
    let loss = ca_kld(s.as_tensor(), &teacher(), 2.0, Beta::Confidence, 1e-7)?;
    let grads = loss.backward()?;
    let grad = grads
        .get(s.as_tensor())
        .ok_or("no gradient for the student")?;
    // Sv = S.clone().requires_grad_(True); ca_kld(Sv, Tt, 2.0, None)[0].backward()
    // Sv.grad.flatten().tolist()
    let expected = [
        -0.01999412477986085,
        0.000638950210477974,
        0.007783946172487152,
        0.011195352520234689,
        0.00037587587666103713,
        0.020595101148389753,
        -0.0182476660798634,
        -0.015190314241246125,
        0.004760351947740691,
        0.00808252722497908,
        -0.038527499840308795,
        -0.04173980959880978,
        0.0895826826315485,
        -0.049770022979034295,
        0.04045464978660438,
    ];
    assert_close(&flat(grad), &expected);
    Ok(())
}

#[test]
fn hinton_kd_gradient_matches_torch_autograd() -> TestResult {
    let s = Var::from_tensor(&student())?;
    let loss = hinton_kd(s.as_tensor(), &teacher(), 4.0)?;
    let grads = loss.backward()?;
    let grad = grads
        .get(s.as_tensor())
        .ok_or("no gradient for the student")?;
    // Sv = S.clone().requires_grad_(True); hinton(Sv, Tt, 4.0).backward()
    // Sv.grad.flatten().tolist()
    let expected = [
        -0.06823562103795444,
        0.04611787848422014,
        0.041141796514191836,
        -0.0717941633576032,
        0.05277010939714556,
        0.06357162152511046,
        -0.03952474208712623,
        -0.006111035161819039,
        0.04679220528446018,
        -0.06472804956062564,
        -0.04558683181930664,
        -0.08995714175938335,
        0.10447351058914323,
        -0.04291573592909268,
        0.07398619891863965,
    ];
    assert_close(&flat(grad), &expected);
    Ok(())
}

#[test]
fn loss_config_variants_match_torch_with_alpha_0_3() -> TestResult {
    let (s, t, y) = (student(), teacher(), labels());

    // F.cross_entropy(S, y).item()
    let ce = LossConfig::CrossEntropy.loss(&s, None, &y)?;
    assert_close(&[scalar(&ce)], &[0.5793454890631901]);

    // (0.3 * hinton(S, Tt, 4.0) + 0.7 * F.cross_entropy(S, y)).item()
    let hinton = LossConfig::Hinton {
        temperature: 4.0,
        alpha: 0.3,
    };
    assert_close(
        &[scalar(&hinton.loss(&s, Some(&t), &y)?)],
        &[0.5365067079346815],
    );

    // (0.3 * ca_kld(S, Tt, 2.0, None)[0] + 0.7 * F.cross_entropy(S, y)).item()
    let cakld = LossConfig::CaKld {
        temperature: 2.0,
        alpha: 0.3,
        beta: Beta::Confidence,
        eps: 1e-7,
        std: Default::default(),
    };
    assert_close(
        &[scalar(&cakld.loss(&s, Some(&t), &y)?)],
        &[0.4401545736097198],
    );
    Ok(())
}

#[test]
fn alpha_is_the_weight_of_the_distillation_term() -> TestResult {
    let (s, t, y) = (student(), teacher(), labels());
    let pure_kd = LossConfig::CaKld {
        temperature: 2.0,
        alpha: 1.0,
        beta: Beta::Confidence,
        eps: 1e-7,
        std: Default::default(),
    };
    let kd = ca_kld(&s, &t, 2.0, Beta::Confidence, 1e-7)?;
    assert_close(&[scalar(&pure_kd.loss(&s, Some(&t), &y)?)], &[scalar(&kd)]);

    let pure_ce = LossConfig::Hinton {
        temperature: 4.0,
        alpha: 0.0,
    };
    let ce = cross_entropy(&s, &y)?;
    assert_close(&[scalar(&pure_ce.loss(&s, Some(&t), &y)?)], &[scalar(&ce)]);
    Ok(())
}

#[test]
fn loss_config_detaches_the_teacher() -> TestResult {
    let s = Var::from_tensor(&student())?;
    let t = Var::from_tensor(&teacher())?;
    let cfg = LossConfig::CaKld {
        temperature: 2.0,
        alpha: 0.5,
        beta: Beta::Confidence,
        eps: DEFAULT_EPS,
        std: Default::default(),
    };
    let grads = cfg
        .loss(s.as_tensor(), Some(t.as_tensor()), &labels())?
        .backward()?;
    assert!(
        grads.get(s.as_tensor()).is_some(),
        "student must get a gradient"
    );
    assert!(
        grads.get(t.as_tensor()).is_none(),
        "teacher must be detached"
    );
    Ok(())
}

#[test]
fn divergences_are_non_negative_on_random_inputs() -> TestResult {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..20 {
        let s = random_logits(&mut rng, 8, 10, 4.0);
        let t = random_logits(&mut rng, 8, 10, 4.0);
        let temp = rng.random_range(0.5..6.0);
        let kl = scalar(&kl_div(
            &log_softmax_t(&s, temp)?,
            &log_softmax_t(&t, temp)?,
        )?);
        assert!(kl >= 0.0, "kl_div = {kl}");
        let kd = scalar(&hinton_kd(&s, &t, temp)?);
        assert!(kd >= 0.0, "hinton_kd = {kd}");
        for beta in [
            Beta::Confidence,
            Beta::Fixed(0.0),
            Beta::Fixed(0.6),
            Beta::Fixed(1.0),
        ] {
            let ca = scalar(&ca_kld(&s, &t, temp, beta, DEFAULT_EPS)?);
            assert!(ca >= 0.0, "ca_kld({beta:?}) = {ca}");
        }
    }
    Ok(())
}

#[test]
fn divergences_vanish_for_equal_inputs() -> TestResult {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let z = random_logits(&mut rng, 6, 10, 5.0);
    let log_p = log_softmax_t(&z, 3.0)?;
    assert!(scalar(&kl_div(&log_p, &log_p)?).abs() < 1e-6);
    assert!(scalar(&hinton_kd(&z, &z, 3.0)?).abs() < 1e-6);
    for beta in [Beta::Confidence, Beta::Fixed(0.3)] {
        assert!(scalar(&ca_kld(&z, &z, 3.0, beta, DEFAULT_EPS)?).abs() < 1e-6);
    }
    Ok(())
}

#[test]
fn ca_kld_is_invariant_to_per_sample_shift_and_positive_scale() -> TestResult {
    let (s, t) = (student(), teacher());
    let reference = scalar(&ca_kld(&s, &t, 2.0, Beta::Confidence, DEFAULT_EPS)?);
    let shift = Tensor::new(&[[2.5f32], [-1.75], [4.0]], &Device::Cpu)?;
    let variants = [
        (s.broadcast_add(&shift)?, t.clone()),
        (s.clone(), t.broadcast_add(&shift)?),
        ((&s * 3.0)?, t.clone()),
        (s.clone(), (&t * 0.4)?),
        ((&s * 0.5)?.broadcast_add(&shift)?, (&t * 2.0)?),
    ];
    for (i, (sv, tv)) in variants.iter().enumerate() {
        let got = scalar(&ca_kld(sv, tv, 2.0, Beta::Confidence, DEFAULT_EPS)?);
        assert!(
            (got - reference).abs() <= RTOL * reference,
            "variant {i}: {got} vs {reference}"
        );
    }
    Ok(())
}

#[test]
fn ca_kld_gradient_is_finite_for_constant_logits() -> TestResult {
    // A freshly initialised model with zero weights produces constant rows.
    let s = Var::from_tensor(&Tensor::ones((3, 5), DType::F32, &Device::Cpu)?)?;
    let loss = ca_kld(
        s.as_tensor(),
        &teacher(),
        2.0,
        Beta::Confidence,
        DEFAULT_EPS,
    )?;
    let grads = loss.backward()?;
    let grad = flat(grads.get(s.as_tensor()).ok_or("no gradient")?);
    assert!(scalar(&loss).is_finite());
    assert!(grad.iter().all(|g| g.is_finite()), "{grad:?}");
    Ok(())
}

#[test]
fn validate_rejects_out_of_range_hyper_parameters() {
    let bad = [
        LossConfig::Hinton {
            temperature: 0.0,
            alpha: 0.5,
        },
        LossConfig::Hinton {
            temperature: 4.0,
            alpha: 1.5,
        },
        LossConfig::Hinton {
            temperature: f64::NAN,
            alpha: 0.5,
        },
        LossConfig::Hinton {
            temperature: 4.0,
            alpha: f64::NAN,
        },
        LossConfig::CaKld {
            temperature: 0.0,
            alpha: 0.5,
            beta: Beta::Confidence,
            eps: 1e-7,
            std: Default::default(),
        },
        LossConfig::CaKld {
            temperature: 2.0,
            alpha: 1.5,
            beta: Beta::Confidence,
            eps: 1e-7,
            std: Default::default(),
        },
        LossConfig::CaKld {
            temperature: 2.0,
            alpha: 0.5,
            beta: Beta::Fixed(f64::NAN),
            eps: 1e-7,
            std: Default::default(),
        },
        LossConfig::CaKld {
            temperature: 2.0,
            alpha: 0.5,
            beta: Beta::Fixed(1.2),
            eps: 1e-7,
            std: Default::default(),
        },
        LossConfig::CaKld {
            temperature: 2.0,
            alpha: 0.5,
            beta: Beta::Confidence,
            eps: 0.0,
            std: Default::default(),
        },
    ];
    for cfg in bad {
        assert!(
            matches!(cfg.validate(), Err(KdError::InvalidConfig(_))),
            "{cfg:?} accepted"
        );
    }
    let good = [
        LossConfig::CrossEntropy,
        LossConfig::Hinton {
            temperature: 4.0,
            alpha: 0.0,
        },
        LossConfig::CaKld {
            temperature: 1.0,
            alpha: 1.0,
            beta: Beta::Fixed(0.0),
            eps: 1e-7,
            std: Default::default(),
        },
    ];
    for cfg in good {
        assert!(cfg.validate().is_ok(), "{cfg:?} rejected");
    }
}

#[test]
fn loss_without_teacher_is_an_error() {
    let (s, y) = (student(), labels());
    let hinton = LossConfig::Hinton {
        temperature: 4.0,
        alpha: 0.3,
    };
    assert!(hinton.needs_teacher());
    assert!(matches!(
        hinton.loss(&s, None, &y),
        Err(KdError::InvalidConfig(_))
    ));
    let cakld = LossConfig::CaKld {
        temperature: 2.0,
        alpha: 0.3,
        beta: Beta::Confidence,
        eps: DEFAULT_EPS,
        std: Default::default(),
    };
    assert!(matches!(
        cakld.loss(&s, None, &y),
        Err(KdError::InvalidConfig(_))
    ));
    assert!(!LossConfig::CrossEntropy.needs_teacher());
}

#[test]
fn bad_shapes_and_labels_are_errors() -> TestResult {
    let (s, y) = (student(), labels());
    let narrow = Tensor::zeros((3, 4), DType::F32, &Device::Cpu)?;
    assert!(matches!(
        hinton_kd(&s, &narrow, 2.0),
        Err(KdError::ShapeMismatch(_))
    ));
    assert!(matches!(
        ca_kld(&s, &narrow, 2.0, Beta::Confidence, DEFAULT_EPS),
        Err(KdError::ShapeMismatch(_))
    ));
    let out_of_range = Tensor::new(&[3u32, 5, 1], &Device::Cpu)?;
    assert!(matches!(
        cross_entropy(&s, &out_of_range),
        Err(KdError::ShapeMismatch(_))
    ));
    let signed = Tensor::new(&[3i64, 4, 1], &Device::Cpu)?;
    assert!(matches!(
        cross_entropy(&s, &signed),
        Err(KdError::ShapeMismatch(_))
    ));
    let short = Tensor::new(&[3u32, 4], &Device::Cpu)?;
    assert!(matches!(
        cross_entropy(&s, &short),
        Err(KdError::ShapeMismatch(_))
    ));
    assert!(matches!(
        log_softmax_t(&s, 0.0),
        Err(KdError::InvalidConfig(_))
    ));
    assert!(matches!(
        ca_kld(&s, &s, 2.0, Beta::Fixed(-0.1), DEFAULT_EPS),
        Err(KdError::InvalidConfig(_))
    ));
    let cfg = LossConfig::Hinton {
        temperature: 4.0,
        alpha: 0.3,
    };
    assert!(matches!(
        cfg.loss(&s, Some(&narrow), &y),
        Err(KdError::ShapeMismatch(_))
    ));
    Ok(())
}

#[test]
fn losses_compute_in_f32_for_f64_inputs() -> TestResult {
    let s64 = student().to_dtype(DType::F64)?;
    let t64 = teacher().to_dtype(DType::F64)?;
    let loss = hinton_kd(&s64, &t64, 4.0)?;
    assert_eq!(loss.dtype(), DType::F32);
    // hinton(S, Tt, 4.0).item()
    assert_close(&[scalar(&loss)], &[0.43654955196816175]);
    Ok(())
}

#[test]
fn loss_config_serde_round_trip_and_defaults() -> TestResult {
    let cfg: LossConfig =
        serde_json::from_str(r#"{"kind": "ca-kld", "temperature": 4.0, "alpha": 0.9}"#)?;
    assert_eq!(
        cfg,
        LossConfig::CaKld {
            temperature: 4.0,
            alpha: 0.9,
            beta: Beta::Confidence,
            eps: DEFAULT_EPS,
            std: Default::default(),
        }
    );
    let fixed: LossConfig = serde_json::from_str(
        r#"{"kind": "ca-kld", "temperature": 2.0, "alpha": 0.5, "beta": {"fixed": 0.25}, "eps": 1e-6}"#,
    )?;
    assert_eq!(
        fixed,
        LossConfig::CaKld {
            temperature: 2.0,
            alpha: 0.5,
            beta: Beta::Fixed(0.25),
            eps: 1e-6,
            std: Default::default(),
        }
    );
    let ce: LossConfig = serde_json::from_str(r#"{"kind": "cross-entropy"}"#)?;
    assert_eq!(ce, LossConfig::CrossEntropy);
    for c in [
        cfg,
        fixed,
        ce,
        LossConfig::Hinton {
            temperature: 4.0,
            alpha: 0.7,
        },
    ] {
        let back: LossConfig = serde_json::from_str(&serde_json::to_string(&c)?)?;
        assert_eq!(back, c);
    }
    assert_eq!(serde_json::to_string(&Beta::Confidence)?, r#""confidence""#);
    Ok(())
}

#[test]
fn names_and_error_messages() {
    assert_eq!(LossConfig::CrossEntropy.name(), "ce");
    let hinton = LossConfig::Hinton {
        temperature: 4.0,
        alpha: 0.5,
    };
    assert_eq!(hinton.name(), "kd");
    let cakld = LossConfig::CaKld {
        temperature: 4.0,
        alpha: 0.5,
        beta: Beta::Confidence,
        eps: DEFAULT_EPS,
        std: Default::default(),
    };
    assert_eq!(cakld.name(), "ca-kld");
    let err = KdError::NonFiniteLoss {
        epoch: 2,
        step: 7,
        value: f32::NAN,
    };
    assert_eq!(err.to_string(), "loss became NaN/inf at epoch 2, step 7");
}
