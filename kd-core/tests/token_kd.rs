//! Token-level LM distillation and the next-token cross-entropy against PyTorch,
//! with the shift and the padding mask.
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
//! def token_kd(s, t, mask, T):
//!     lt, ls = F.log_softmax(t[:, :-1] / T, -1), F.log_softmax(s[:, :-1] / T, -1)
//!     kl = (lt.exp() * (lt - ls)).sum(-1)          # per-token KL(p_T ‖ p_S)
//!     m = mask[:, 1:].double()                     # position j counts when token j+1 is real
//!     return T**2 * (kl * m).sum() / m.sum()
//! def lm_ce(z, ids, mask):
//!     y = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
//!     return F.cross_entropy(z[:, :-1].reshape(-1, z.size(-1)), y.reshape(-1), ignore_index=-100)
//! zs = wave((2, 5, 4), 0.7, 0.3, 3.0)
//! zt = wave((2, 5, 4), 0.45, -0.2, 4.0)
//! ids = torch.tensor([[0, 3, 1, 2, 1], [2, 0, 3, 0, 0]])
//! am = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
//! ```

use candle_core::{DType, Device, Tensor, Var};
use kd_core::losses::{lm_ce_loss, token_kd_loss, TokenKdConfig};
use kd_core::KdError;

mod common;
use common::*;

fn student() -> Tensor {
    wave(&[2, 5, 4], 0.7, 0.3, 3.0, 0.0)
}

fn teacher() -> Tensor {
    wave(&[2, 5, 4], 0.45, -0.2, 4.0, 0.0)
}

fn ids() -> Tensor {
    Tensor::new(&[[0i64, 3, 1, 2, 1], [2, 0, 3, 0, 0]], &Device::Cpu).unwrap()
}

fn mask() -> Tensor {
    Tensor::new(&[[1u32, 1, 1, 1, 1], [1, 1, 1, 0, 0]], &Device::Cpu).unwrap()
}

/// Positions whose logits must not count: every sequence's last position (it
/// predicts nothing) and, in row 1, positions 2 and 3 (their targets, tokens 3 and
/// 4, are padding; position 4 is both padding and last).
const UNREAD: [(usize, usize); 4] = [(0, 4), (1, 2), (1, 3), (1, 4)];

/// `z` with wild values written at every position of [`UNREAD`].
fn scramble_unread(z: &Tensor) -> Tensor {
    let mut z = z.clone();
    for (k, &(b, j)) in UNREAD.iter().enumerate() {
        let wild = Tensor::new(
            &[[[1e4f32 * (k as f32 + 1.0), -3e3, f32::MAX / 2.0, -1e4]]],
            &Device::Cpu,
        )
        .unwrap();
        z = z.slice_assign(&[b..b + 1, j..j + 1, 0..4], &wild).unwrap();
    }
    z
}

#[test]
fn token_kd_and_lm_ce_match_torch() -> TestResult {
    let (s, t) = (student(), teacher());
    // token_kd(zs, zt, am, 2.0).item()
    assert_close(
        &[scalar(&token_kd_loss(&s, &t, &mask(), 2.0)?)],
        &[1.879333234084445],
    );
    // lm_ce(zs, ids, am).item()
    assert_close(
        &[scalar(&lm_ce_loss(&s, &ids(), &mask())?)],
        &[1.2492253034214658],
    );
    // u32 ids give the same value.
    let ids_u32 = ids().to_dtype(DType::U32)?;
    assert_close(
        &[scalar(&lm_ce_loss(&s, &ids_u32, &mask())?)],
        &[1.2492253034214658],
    );
    // (0.3 * token_kd(zs, zt, am, 2.0) + 0.7 * lm_ce(zs, ids, am)).item()
    let cfg = TokenKdConfig {
        temperature: 2.0,
        alpha: 0.3,
    };
    assert_close(
        &[scalar(&cfg.loss(&s, &t, &ids(), &mask())?)],
        &[1.4382576826203595],
    );
    Ok(())
}

#[test]
fn token_kd_gradient_matches_torch_and_skips_the_teacher() -> TestResult {
    let s = Var::from_tensor(&student())?;
    let t = Var::from_tensor(&teacher())?;
    let grads = token_kd_loss(s.as_tensor(), t.as_tensor(), &mask(), 2.0)?.backward()?;
    assert!(
        grads.get(t.as_tensor()).is_none(),
        "teacher must be detached"
    );
    // zsv = zs.clone().requires_grad_(True)
    // token_kd(zsv, zt, am, 2.0).backward(); zsv.grad.flatten().tolist()
    let expected = [
        0.023869392320427552,
        0.05095904317451508,
        0.020679133151406733,
        -0.09550756864634938,
        0.0446842598788609,
        -0.040986733644878336,
        -0.021867338773309774,
        0.018169812539327267,
        -0.15251849190697092,
        -0.025344917911730148,
        0.07182014259344488,
        0.1060432672252562,
        0.18669129752052524,
        0.04369158661433755,
        -0.050869479302713974,
        -0.17951340483214878,
        0.0,
        0.0,
        0.0,
        0.0,
        -0.022344627996352628,
        0.01865526042258327,
        0.004659700767674031,
        -0.0009703331939046597,
        -0.03985003172620343,
        -0.025122402638718982,
        -0.0020834791338881047,
        0.06705591349881056,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
    ];
    let g = grads
        .get(s.as_tensor())
        .ok_or("no gradient for the student")?;
    assert_close(&flat(g), &expected);
    Ok(())
}

#[test]
fn lm_ce_gradient_matches_torch() -> TestResult {
    let s = Var::from_tensor(&student())?;
    let grads = lm_ce_loss(s.as_tensor(), &ids(), &mask())?.backward()?;
    // zsv = zs.clone().requires_grad_(True)
    // lm_ce(zsv, ids, am).backward(); zsv.grad.flatten().tolist()
    let expected = [
        0.009610243751118124,
        0.049436145084147315,
        0.07757641023122905,
        -0.1366227990664945,
        0.13331522528614237,
        -0.1478940212500241,
        0.006267541711718103,
        0.008311254252163603,
        0.001544549090077411,
        0.012073174958282648,
        -0.10586168055382075,
        0.09224395650546069,
        0.14177169626006772,
        -0.1457690195832219,
        0.0029745665829998933,
        0.0010227567401542557,
        0.0,
        0.0,
        0.0,
        0.0,
        -0.04971673841350358,
        0.042618712498236566,
        0.006204777052555868,
        0.0008932488627111667,
        0.0026494968094146172,
        0.0037620275738125147,
        0.01815821015566755,
        -0.024569734538894696,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
    ];
    let g = grads
        .get(s.as_tensor())
        .ok_or("no gradient for the student")?;
    assert_close(&flat(g), &expected);
    Ok(())
}

#[test]
fn logits_at_padded_positions_do_not_change_the_loss() -> TestResult {
    let (s, t) = (student(), teacher());
    let kd = scalar(&token_kd_loss(&s, &t, &mask(), 2.0)?);
    let ce = scalar(&lm_ce_loss(&s, &ids(), &mask())?);
    let (s2, t2) = (scramble_unread(&s), scramble_unread(&t));
    assert_ne!(flat(&s2), flat(&s), "the scramble changes the logits");
    assert_eq!(scalar(&token_kd_loss(&s2, &t2, &mask(), 2.0)?), kd);
    assert_eq!(scalar(&lm_ce_loss(&s2, &ids(), &mask())?), ce);
    // Ids behind padding are never read either, even out of the vocabulary.
    let wild_ids = Tensor::new(&[[0i64, 3, 1, 2, 1], [2, 0, 3, 99, -7]], &Device::Cpu)?;
    assert_eq!(scalar(&lm_ce_loss(&s, &wild_ids, &mask())?), ce);

    // A real target at a formerly padded position does change it.
    let longer = Tensor::new(&[[1u32, 1, 1, 1, 1], [1, 1, 1, 1, 0]], &Device::Cpu)?;
    assert!((scalar(&token_kd_loss(&s, &t, &longer, 2.0)?) - kd).abs() > 1e-4);
    Ok(())
}

#[test]
fn no_real_target_gives_zero_and_bad_inputs_are_errors() -> TestResult {
    let (s, t) = (student(), teacher());
    let only_first = Tensor::new(&[[1u8, 0, 0, 0, 0], [1, 0, 0, 0, 0]], &Device::Cpu)?;
    assert_eq!(scalar(&token_kd_loss(&s, &t, &only_first, 1.0)?), 0.0);
    assert_eq!(scalar(&lm_ce_loss(&s, &ids(), &only_first)?), 0.0);

    assert!(matches!(
        token_kd_loss(&s, &t.narrow(1, 0, 4)?, &mask(), 1.0),
        Err(KdError::ShapeMismatch(_))
    ));
    assert!(matches!(
        token_kd_loss(&s, &t, &mask().narrow(1, 0, 4)?, 1.0),
        Err(KdError::ShapeMismatch(_))
    ));
    assert!(matches!(
        token_kd_loss(&s, &t, &mask(), 0.0),
        Err(KdError::InvalidConfig(_))
    ));
    let bad_id = Tensor::new(&[[0i64, 4, 1, 2, 1], [2, 0, 3, 0, 0]], &Device::Cpu)?;
    assert!(matches!(
        lm_ce_loss(&s, &bad_id, &mask()),
        Err(KdError::ShapeMismatch(_))
    ));
    assert!(matches!(
        lm_ce_loss(&s, &ids().to_dtype(DType::F32)?, &mask()),
        Err(KdError::ShapeMismatch(_))
    ));
    assert!(matches!(
        TokenKdConfig {
            alpha: 1.5,
            ..TokenKdConfig::default()
        }
        .validate(),
        Err(KdError::InvalidConfig(_))
    ));
    let cfg: TokenKdConfig = serde_json::from_str(r#"{"alpha": 0.9}"#)?;
    assert_eq!((cfg.temperature, cfg.alpha), (1.0, 0.9));
    Ok(())
}
