//! The DistilBERT triple loss against PyTorch, its masking, and its errors.
//!
//! Golden values: PyTorch in float64. Every snippet below runs after this prelude
//! (the loss as in the DistilBERT training code, soft targets restricted to the
//! masked positions):
//!
//! ```python
//! import math, torch, torch.nn as nn, torch.nn.functional as F
//! def wave(shape, a, b, scale=1.0, offset=0.0):
//!     # scale·sin(i·a + b) + offset over the flat index i, rounded to f32 like the Rust side
//!     n = math.prod(shape)
//!     x = scale * torch.sin(torch.arange(n, dtype=torch.float64) * a + b) + offset
//!     return x.float().double().reshape(shape)
//! def distilbert(s_logits, t_logits, lm_labels, s_hidden, t_hidden, attention_mask, a_ce, a_mlm, a_cos, T):
//!     V, H = s_logits.size(-1), s_hidden.size(-1)
//!     mask = (lm_labels > -1).unsqueeze(-1).expand_as(s_logits)
//!     s_slct = torch.masked_select(s_logits, mask).view(-1, V)
//!     t_slct = torch.masked_select(t_logits, mask).view(-1, V)
//!     loss_ce = nn.KLDivLoss(reduction="batchmean")(
//!         F.log_softmax(s_slct / T, dim=-1), F.softmax(t_slct / T, dim=-1)) * T**2
//!     loss_mlm = nn.CrossEntropyLoss(ignore_index=-100)(s_logits.view(-1, V), lm_labels.view(-1))
//!     hmask = attention_mask.unsqueeze(-1).expand_as(s_hidden).bool()
//!     s_h = torch.masked_select(s_hidden, hmask).view(-1, H)
//!     t_h = torch.masked_select(t_hidden, hmask).view(-1, H)
//!     loss_cos = nn.CosineEmbeddingLoss(reduction="mean")(s_h, t_h, s_h.new(s_h.size(0)).fill_(1))
//!     return a_ce * loss_ce + a_mlm * loss_mlm + a_cos * loss_cos, loss_ce, loss_mlm, loss_cos
//! zs = wave((2, 4, 5), 0.7, 0.3, 3.0)      # student logits [B, L, V]
//! zt = wave((2, 4, 5), 0.45, -0.2, 4.0)    # teacher logits
//! hs = wave((2, 4, 3), 0.9, 0.1, 1.0, 0.2) # student hidden [B, L, H]
//! ht = wave((2, 4, 3), 1.1, 0.6, 2.0)      # teacher hidden
//! labels = torch.tensor([[-100, 3, -100, 1], [0, -100, 4, -100]])
//! am = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
//! ```

use candle_core::{DType, Device, Tensor, Var};
use kd_core::losses::{distilbert_loss, DistilBertConfig, DistilBertLoss, IGNORE_INDEX};
use kd_core::KdError;

mod common;
use common::*;

/// The prelude's inputs: `(zs, zt, labels, hs, ht, am)`.
struct Inputs {
    zs: Tensor,
    zt: Tensor,
    labels: Tensor,
    hs: Tensor,
    ht: Tensor,
    am: Tensor,
}

fn inputs() -> Inputs {
    Inputs {
        zs: wave(&[2, 4, 5], 0.7, 0.3, 3.0, 0.0),
        zt: wave(&[2, 4, 5], 0.45, -0.2, 4.0, 0.0),
        labels: Tensor::new(&[[-100i64, 3, -100, 1], [0, -100, 4, -100]], &Device::Cpu).unwrap(),
        hs: wave(&[2, 4, 3], 0.9, 0.1, 1.0, 0.2),
        ht: wave(&[2, 4, 3], 1.1, 0.6, 2.0, 0.0),
        am: Tensor::new(&[[1u8, 1, 1, 1], [1, 1, 1, 0]], &Device::Cpu).unwrap(),
    }
}

fn run(x: &Inputs, cfg: &DistilBertConfig) -> kd_core::Result<DistilBertLoss> {
    distilbert_loss(&x.zs, &x.zt, &x.labels, &x.hs, &x.ht, &x.am, cfg)
}

fn parts(l: &DistilBertLoss) -> [f64; 4] {
    [
        scalar(&l.total),
        scalar(&l.soft_target),
        scalar(&l.mlm),
        scalar(&l.cosine),
    ]
}

#[test]
fn triple_loss_matches_torch() -> TestResult {
    let cfg = DistilBertConfig::default();
    assert_eq!(
        (cfg.alpha_ce, cfg.alpha_mlm, cfg.alpha_cos, cfg.temperature),
        (5.0, 2.0, 1.0, 2.0)
    );
    let loss = run(&inputs(), &cfg)?;
    // total, ce, mlm, cos = distilbert(zs, zt, labels, hs, ht, am, 5.0, 2.0, 1.0, 2.0)
    // total.item()
    assert_close(&[scalar(&loss.total)], &[16.980210909274486]);
    // ce.item()
    assert_close(&[scalar(&loss.soft_target)], &[1.863434257207623]);
    // mlm.item()
    assert_close(&[scalar(&loss.mlm)], &[3.1753885563035773]);
    // cos.item()
    assert_close(&[scalar(&loss.cosine)], &[1.312262510629217]);
    Ok(())
}

#[test]
fn the_masked_lm_loss_alone_matches_torch() -> TestResult {
    use kd_core::losses::distilbert::masked_lm_loss;
    let x = inputs();
    // mlm from the prelude: nn.CrossEntropyLoss(ignore_index=-100)(zs.view(-1, 5), labels.view(-1))
    assert_close(
        &[scalar(&masked_lm_loss(&x.zs, &x.labels)?)],
        &[3.1753885563035773],
    );
    // nothing masked: 0; a label past the vocabulary or u32 labels: errors
    let none = Tensor::full(IGNORE_INDEX, (2, 4), &Device::Cpu)?;
    assert_eq!(scalar(&masked_lm_loss(&x.zs, &none)?), 0.0);
    let bad = Tensor::new(
        &[[5i64, -100, -100, -100], [-100, -100, -100, -100]],
        &Device::Cpu,
    )?;
    assert!(masked_lm_loss(&x.zs, &bad).is_err());
    assert!(masked_lm_loss(&x.zs, &x.labels.to_dtype(DType::U32)?).is_err());
    Ok(())
}

#[test]
fn triple_loss_gradients_match_torch_and_skip_the_teacher() -> TestResult {
    let x = inputs();
    let zs = Var::from_tensor(&x.zs)?;
    let hs = Var::from_tensor(&x.hs)?;
    let zt = Var::from_tensor(&x.zt)?;
    let ht = Var::from_tensor(&x.ht)?;
    let loss = distilbert_loss(
        zs.as_tensor(),
        zt.as_tensor(),
        &x.labels,
        hs.as_tensor(),
        ht.as_tensor(),
        &x.am,
        &DistilBertConfig::default(),
    )?;
    let grads = loss.total.backward()?;
    assert!(
        grads.get(zt.as_tensor()).is_none(),
        "teacher logits detached"
    );
    assert!(
        grads.get(ht.as_tensor()).is_none(),
        "teacher hidden detached"
    );
    // zsv, hsv = zs.clone().requires_grad_(True), hs.clone().requires_grad_(True)
    // distilbert(zsv, zt, labels, hsv, ht, am, 5.0, 2.0, 1.0, 2.0)[0].backward()
    // zsv.grad.flatten().tolist()
    let expected_logits = [
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        -0.9260738805631651,
        -0.5199694584150079,
        -0.08879625233598198,
        -0.11235284329724726,
        1.647192434611402,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        -0.07814080769763251,
        -0.7656180273204514,
        -0.3912456293713529,
        -0.014921425047000905,
        1.2499258894364371,
        -0.31057496993017525,
        0.2648988593646939,
        0.05303971164803012,
        -0.004212675069534369,
        -0.0031509260130142534,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        1.516542545980961,
        0.009321115113413068,
        -0.47751304189285565,
        -0.4105454984437999,
        -0.6378051207577189,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
    ];
    let g = grads.get(zs.as_tensor()).ok_or("no gradient for logits")?;
    assert_close(&flat(g), &expected_logits);
    // hsv.grad.flatten().tolist()
    let expected_hidden = [
        -0.028443113817112398,
        -0.02496638794871594,
        0.030122972002774168,
        0.08700943689285191,
        0.10978829899395483,
        0.013023798385804088,
        -0.0750417996537182,
        -0.09068717356038566,
        -0.008786538201907678,
        -0.010652045367060006,
        0.033475678973990224,
        0.015191092106401509,
        0.003029728144196636,
        -0.014267296149502132,
        -0.013898162013770837,
        0.027205220720211212,
        -0.002734553675074601,
        -0.051103878920429696,
        -0.09605751693016408,
        -0.0120077876222184,
        0.09133879718076292,
        0.0,
        0.0,
        0.0,
    ];
    let g = grads.get(hs.as_tensor()).ok_or("no gradient for hidden")?;
    assert_close(&flat(g), &expected_hidden);
    Ok(())
}

#[test]
fn unmasked_and_padded_positions_do_not_count() -> TestResult {
    let cfg = DistilBertConfig::default();
    let reference = parts(&run(&inputs(), &cfg)?);
    let mut x = inputs();
    // Position [0, 0] has label −100: its logits are not part of L_ce or L_mlm.
    let bump = Tensor::zeros((2, 4, 5), DType::F32, &Device::Cpu)?.slice_assign(
        &[0..1, 0..1, 0..5],
        &Tensor::full(50f32, (1, 1, 5), &Device::Cpu)?
            .broadcast_mul(&Tensor::new(&[1f32, -2.0, 3.0, 0.5, -1.0], &Device::Cpu)?)?,
    )?;
    x.zs = (&x.zs + &bump)?;
    x.zt = (&x.zt - &bump)?;
    // Token [1, 3] is padding: its hidden states are not part of L_cos.
    let pad = Tensor::zeros((2, 4, 3), DType::F32, &Device::Cpu)?.slice_assign(
        &[1..2, 3..4, 0..3],
        &Tensor::new(&[[[9f32, -7.0, 3.0]]], &Device::Cpu)?,
    )?;
    x.hs = (&x.hs + &pad)?;
    x.ht = (&x.ht - &pad)?;
    assert_close(&parts(&run(&x, &cfg)?), &reference);

    // …whereas the same change at a masked position does count.
    let mut y = inputs();
    let at_masked = Tensor::zeros((2, 4, 5), DType::F32, &Device::Cpu)?.slice_assign(
        &[0..1, 1..2, 0..5],
        &Tensor::new(&[[[5f32, -5.0, 0.0, 1.0, 2.0]]], &Device::Cpu)?,
    )?;
    y.zs = (&y.zs + &at_masked)?;
    let changed = parts(&run(&y, &cfg)?);
    assert!((changed[1] - reference[1]).abs() > 1e-3);
    assert!((changed[2] - reference[2]).abs() > 1e-3);
    Ok(())
}

#[test]
fn empty_position_sets_give_zero_parts_and_weights_combine_linearly() -> TestResult {
    let mut x = inputs();
    x.labels = Tensor::full(IGNORE_INDEX, (2, 4), &Device::Cpu)?;
    let cfg = DistilBertConfig::default();
    let loss = run(&x, &cfg)?;
    assert_eq!(scalar(&loss.soft_target), 0.0);
    assert_eq!(scalar(&loss.mlm), 0.0);
    // cos.item() — unchanged, it does not look at the labels
    assert_close(&[scalar(&loss.cosine)], &[1.312262510629217]);
    assert_close(&[scalar(&loss.total)], &[1.312262510629217]);

    let only_mlm = DistilBertConfig {
        alpha_ce: 0.0,
        alpha_mlm: 1.0,
        alpha_cos: 0.0,
        temperature: 2.0,
    };
    let loss = run(&inputs(), &only_mlm)?;
    // mlm.item()
    assert_close(&[scalar(&loss.total)], &[3.1753885563035773]);
    Ok(())
}

#[test]
fn triple_loss_rejects_bad_inputs_and_configs() -> TestResult {
    let cfg = DistilBertConfig::default();
    let mut x = inputs();
    x.labels = Tensor::new(&[[0u32, 3, 1, 1], [0, 2, 4, 0]], &Device::Cpu)?;
    assert!(matches!(run(&x, &cfg), Err(KdError::ShapeMismatch(_))));
    let mut x = inputs();
    x.labels = Tensor::new(&[[-100i64, 5, -100, 1], [0, -100, 4, -100]], &Device::Cpu)?;
    assert!(matches!(run(&x, &cfg), Err(KdError::ShapeMismatch(_))));
    let mut x = inputs();
    x.ht = x.ht.narrow(2, 0, 2)?;
    assert!(matches!(run(&x, &cfg), Err(KdError::ShapeMismatch(_))));
    let mut x = inputs();
    x.am = x.am.narrow(1, 0, 3)?;
    assert!(matches!(run(&x, &cfg), Err(KdError::ShapeMismatch(_))));
    for bad in [
        DistilBertConfig {
            temperature: -1.0,
            ..cfg
        },
        DistilBertConfig {
            alpha_cos: -0.5,
            ..cfg
        },
        DistilBertConfig {
            alpha_ce: 0.0,
            alpha_mlm: 0.0,
            alpha_cos: 0.0,
            ..cfg
        },
    ] {
        assert!(matches!(
            run(&inputs(), &bad),
            Err(KdError::InvalidConfig(_))
        ));
    }
    let parsed: DistilBertConfig = serde_json::from_str(r#"{"alpha_cos": 0.0}"#)?;
    assert_eq!(
        parsed,
        DistilBertConfig {
            alpha_cos: 0.0,
            ..cfg
        }
    );
    Ok(())
}
