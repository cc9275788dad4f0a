//! The DistilBERT triple loss (Sanh et al., 2019) for masked language modelling:
//! soft-target distillation, the masked-LM cross-entropy and a cosine loss that
//! aligns the directions of the student's and the teacher's hidden states.
//!
//! With logits `[B, L, V]`, labels `[B, L]` (`−100` = not masked), hidden states
//! `[B, L, H]` and the attention mask `[B, L]`; `M` the masked positions
//! (`label ≠ −100`) and `R` the real tokens (`attention_mask ≠ 0`):
//!
//! ```text
//! L_ce  = T² · (1/|M|) Σ_{m∈M} KL(softmax(z_T[m]/T) ‖ softmax(z_S[m]/T))
//! L_mlm = −(1/|M|) Σ_{m∈M} log softmax(z_S[m])[label[m]]
//! L_cos = (1/|R|) Σ_{r∈R} (1 − cos(h_S[r], h_T[r])),
//!         cos(a, b) = a·b / sqrt((‖a‖² + 1e-12)(‖b‖² + 1e-12))
//! L     = α_ce·L_ce + α_mlm·L_mlm + α_cos·L_cos
//! ```
//!
//! The three weights are independent, as in the paper (not the project-wide
//! `α·KD + (1−α)·CE` mix).

use candle_core::{DType, Tensor, D};

use super::kl::{check_temperature, cross_entropy, kl_div, log_softmax_t};
use super::token_kd::{check_sequence_logits, host_values};
use crate::{KdError, Result};

/// Label value of a position that is not predicted (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// `ε` added to each squared norm in the cosine similarity (as PyTorch's
/// `cosine_embedding_loss`).
const COS_EPS: f64 = 1e-12;

/// Weights and temperature of the DistilBERT triple loss.
///
/// Serialised as `{"alpha_ce": 5.0, "alpha_mlm": 2.0, "alpha_cos": 1.0, "temperature": 2.0}`;
/// missing keys take these defaults (the values DistilBERT was trained with).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DistilBertConfig {
    /// Weight `≥ 0` of the soft-target distillation term `L_ce`.
    pub alpha_ce: f64,
    /// Weight `≥ 0` of the masked-LM cross-entropy `L_mlm`.
    pub alpha_mlm: f64,
    /// Weight `≥ 0` of the cosine hidden-state loss `L_cos`.
    pub alpha_cos: f64,
    /// Softmax temperature `T > 0` of the distillation term.
    pub temperature: f64,
}

impl Default for DistilBertConfig {
    /// `alpha_ce = 5`, `alpha_mlm = 2`, `alpha_cos = 1`, `temperature = 2`.
    fn default() -> Self {
        Self {
            alpha_ce: 5.0,
            alpha_mlm: 2.0,
            alpha_cos: 1.0,
            temperature: 2.0,
        }
    }
}

impl DistilBertConfig {
    /// Checks the weights finite and `≥ 0`, not all 0, and `temperature` finite and
    /// `> 0` (NaN rejected).
    pub fn validate(&self) -> Result<()> {
        let weights = [
            ("alpha_ce", self.alpha_ce),
            ("alpha_mlm", self.alpha_mlm),
            ("alpha_cos", self.alpha_cos),
        ];
        for (name, w) in weights {
            if !(w.is_finite() && w >= 0.0) {
                return Err(KdError::InvalidConfig(format!(
                    "distilbert {name} must be finite and >= 0, got {w}"
                )));
            }
        }
        if weights.iter().all(|&(_, w)| w == 0.0) {
            return Err(KdError::InvalidConfig(
                "distilbert weights are all 0, leaving no loss term".to_string(),
            ));
        }
        check_temperature(self.temperature)
    }
}

/// The DistilBERT objective and its three unweighted parts (scalars, `f32`).
#[derive(Clone, Debug)]
pub struct DistilBertLoss {
    /// `α_ce·soft_target + α_mlm·mlm + α_cos·cosine`.
    pub total: Tensor,
    /// `L_ce`, the soft-target KL over the masked positions, `× T²`.
    pub soft_target: Tensor,
    /// `L_mlm`, the masked-LM cross-entropy.
    pub mlm: Tensor,
    /// `L_cos`, the mean of `1 − cos` over the real tokens.
    pub cosine: Tensor,
}

/// The DistilBERT triple loss for student and teacher logits `[B, L, V]`, `i64`
/// labels `[B, L]` (`−100` ignored, others in `[0, V)`), student and teacher hidden
/// states `[B, L, H]` and an attention mask `[B, L]` (non-zero = real token, any
/// dtype); see the module formulas.
///
/// The soft-target KL and the MLM cross-entropy use the masked positions only
/// (`label ≠ −100`), the cosine loss the real tokens only; each part is a zero
/// scalar when its set of positions is empty. All three parts are computed for
/// logging; the total weights them with `cfg`. Teacher logits and hidden states are
/// detached here.
pub fn distilbert_loss(
    student_logits: &Tensor,
    teacher_logits: &Tensor,
    labels: &Tensor,
    student_hidden: &Tensor,
    teacher_hidden: &Tensor,
    attention_mask: &Tensor,
    cfg: &DistilBertConfig,
) -> Result<DistilBertLoss> {
    cfg.validate()?;
    let t = cfg.temperature;
    let (b, l, _) = check_sequence_logits(student_logits, "student logits")?;
    if teacher_logits.dims() != student_logits.dims() {
        return Err(KdError::ShapeMismatch(format!(
            "student logits {:?} and teacher logits {:?} differ",
            student_logits.dims(),
            teacher_logits.dims()
        )));
    }
    match *student_hidden.dims() {
        [hb, hl, h] if (hb, hl) == (b, l) && h > 0 => {}
        ref dims => {
            return Err(KdError::ShapeMismatch(format!(
                "student hidden states must be [{b}, {l}, H] with H > 0, got {dims:?}"
            )))
        }
    }
    if teacher_hidden.dims() != student_hidden.dims() {
        return Err(KdError::ShapeMismatch(format!(
            "student hidden states {:?} and teacher hidden states {:?} differ",
            student_hidden.dims(),
            teacher_hidden.dims()
        )));
    }
    if labels.dtype() != DType::I64 {
        return Err(KdError::ShapeMismatch(format!(
            "labels must be i64 (with -100 for ignored positions), got {:?}",
            labels.dtype()
        )));
    }
    if labels.dims() != [b, l] {
        return Err(KdError::ShapeMismatch(format!(
            "labels must have shape [{b}, {l}], got {:?}",
            labels.dims()
        )));
    }
    let (soft_target, mlm) = masked_terms(student_logits, teacher_logits, labels, t)?;
    let cosine = cosine_term(student_hidden, teacher_hidden, attention_mask)?;
    let total =
        (((&soft_target * cfg.alpha_ce)? + (&mlm * cfg.alpha_mlm)?)? + (&cosine * cfg.alpha_cos)?)?;
    Ok(DistilBertLoss {
        total,
        soft_target,
        mlm,
        cosine,
    })
}

/// The masked-LM cross-entropy alone, `L_mlm = −(1/|M|) Σ_{m∈M} log
/// softmax(z[m])[label[m]]`, for logits `[B, L, V]` and `i64` labels `[B, L]`
/// (`−100` ignored, others in `[0, V)`): what a masked LM trains on without a
/// teacher. A zero scalar when no position is masked.
pub fn masked_lm_loss(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (b, l, v) = check_sequence_logits(logits, "logits")?;
    if labels.dims() != [b, l] || labels.dtype() != DType::I64 {
        return Err(KdError::ShapeMismatch(format!(
            "labels must be i64 [{b}, {l}], got {:?} {:?}",
            labels.dtype(),
            labels.dims()
        )));
    }
    match masked_rows(labels, v, logits.device())? {
        None => Ok(Tensor::zeros((), DType::F32, logits.device())?),
        Some((rows, targets)) => {
            let s = logits.reshape((b * l, v))?.index_select(&rows, 0)?;
            cross_entropy(&s, &targets)
        }
    }
}

/// The flat indices of the positions with `label ≠ −100` and their labels
/// (`u32` tensors), `None` when there are none; an error for a label
/// outside `[0, v)`.
fn masked_rows(
    labels: &Tensor,
    v: usize,
    device: &candle_core::Device,
) -> Result<Option<(Tensor, Tensor)>> {
    let values = labels.flatten_all()?.to_vec1::<i64>()?;
    if let Some(&bad) = values
        .iter()
        .find(|&&y| y != IGNORE_INDEX && !(0..v as i64).contains(&y))
    {
        return Err(KdError::ShapeMismatch(format!(
            "label {bad} out of range for a vocabulary of {v} (use {IGNORE_INDEX} to ignore)"
        )));
    }
    let (rows, targets): (Vec<u32>, Vec<u32>) = values
        .iter()
        .enumerate()
        .filter(|&(_, &y)| y != IGNORE_INDEX)
        .map(|(i, &y)| (i as u32, y as u32))
        .unzip();
    if rows.is_empty() {
        return Ok(None);
    }
    let count = rows.len();
    Ok(Some((
        Tensor::from_vec(rows, count, device)?,
        Tensor::from_vec(targets, count, device)?,
    )))
}

/// `(L_ce, L_mlm)` over the positions with `label ≠ −100` of logits `[B, L, V]` and
/// `i64` labels `[B, L]` (shapes checked by the caller); zeros when there are none.
fn masked_terms(
    student_logits: &Tensor,
    teacher_logits: &Tensor,
    labels: &Tensor,
    t: f64,
) -> Result<(Tensor, Tensor)> {
    let (b, l, v) = student_logits.dims3()?;
    let device = student_logits.device();
    let Some((rows, targets)) = masked_rows(labels, v, device)? else {
        let zero = Tensor::zeros((), DType::F32, device)?;
        return Ok((zero.clone(), zero));
    };
    let s = student_logits.reshape((b * l, v))?.index_select(&rows, 0)?;
    let te = teacher_logits
        .detach()
        .reshape((b * l, v))?
        .index_select(&rows, 0)?;
    let kl = kl_div(&log_softmax_t(&te, t)?, &log_softmax_t(&s, t)?)?;
    Ok(((kl * (t * t))?, cross_entropy(&s, &targets)?))
}

/// `L_cos = mean(1 − cos(h_S, h_T))` over the real tokens of hidden states
/// `[B, L, H]` (shapes checked by the caller, except the mask's); 0 when there are none.
fn cosine_term(
    student_hidden: &Tensor,
    teacher_hidden: &Tensor,
    attention_mask: &Tensor,
) -> Result<Tensor> {
    let (b, l, h) = student_hidden.dims3()?;
    let device = student_hidden.device();
    let mask = host_values(attention_mask, b, l, "attention mask")?;
    let real: Vec<u32> = (0..b * l)
        .filter(|&i| mask[i] != 0.0)
        .map(|i| i as u32)
        .collect();
    if real.is_empty() {
        return Ok(Tensor::zeros((), DType::F32, device)?);
    }
    let count = real.len();
    let rows = Tensor::from_vec(real, count, device)?;
    let hs = student_hidden
        .to_dtype(DType::F32)?
        .reshape((b * l, h))?
        .index_select(&rows, 0)?;
    let ht = teacher_hidden
        .detach()
        .to_dtype(DType::F32)?
        .reshape((b * l, h))?
        .index_select(&rows, 0)?;
    let dot = (&hs * &ht)?.sum(D::Minus1)?;
    let ns = (hs.sqr()?.sum(D::Minus1)? + COS_EPS)?;
    let nt = (ht.sqr()?.sum(D::Minus1)? + COS_EPS)?;
    let cos = (dot / (ns * nt)?.sqrt()?)?;
    // 1 − cos
    Ok(cos.affine(-1.0, 1.0)?.mean_all()?)
}
