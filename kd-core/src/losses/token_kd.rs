//! Token-level distillation for causal language models: at every position the
//! student matches the teacher's next-token distribution.
//!
//! Logits `[B, L, V]` at position `j` predict token `j + 1`, so the last position is
//! dropped and a position `j < L − 1` counts when its target token is real,
//! `attention_mask[b, j + 1] ≠ 0`. With `R` the set of counted positions:
//!
//! ```text
//! KD = T² · (1/|R|) Σ_{(b,j)∈R} KL(softmax(z_T[b,j]/T) ‖ softmax(z_S[b,j]/T))
//! CE = −(1/|R|) Σ_{(b,j)∈R} log softmax(z_S[b,j])[x[b, j+1]]
//! L  = α·KD + (1−α)·CE
//! ```

use candle_core::{DType, Tensor};

use super::kl::{check_temperature, cross_entropy, kl_div, log_softmax_t};
use crate::{KdError, Result};

/// Hyper-parameters of token-level distillation.
///
/// Serialised as `{"temperature": 1.0, "alpha": 0.5}`; missing keys take these
/// defaults.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TokenKdConfig {
    /// Softmax temperature `T > 0` of the distillation term.
    pub temperature: f64,
    /// Weight `α ∈ [0, 1]` of the distillation term in `α·KD + (1−α)·CE`.
    pub alpha: f64,
}

impl Default for TokenKdConfig {
    /// `temperature = 1`, `alpha = 0.5`.
    fn default() -> Self {
        Self {
            temperature: 1.0,
            alpha: 0.5,
        }
    }
}

impl TokenKdConfig {
    /// Checks `temperature` finite and `> 0` and `alpha ∈ [0, 1]` (NaN rejected).
    pub fn validate(&self) -> Result<()> {
        check_temperature(self.temperature)?;
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(KdError::InvalidConfig(format!(
                "alpha must lie in [0, 1], got {}",
                self.alpha
            )));
        }
        Ok(())
    }

    /// The objective `α·token_kd_loss + (1−α)·lm_ce_loss` for student and teacher
    /// logits `[B, L, V]`, token ids `[B, L]` and the attention mask `[B, L]`. The
    /// teacher is detached; a term whose weight is exactly 0 is not computed.
    pub fn loss(
        &self,
        student: &Tensor,
        teacher: &Tensor,
        input_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor> {
        self.validate()?;
        let alpha = self.alpha;
        let kd = (alpha > 0.0)
            .then(|| token_kd_loss(student, teacher, attention_mask, self.temperature))
            .transpose()?;
        let ce = (alpha < 1.0)
            .then(|| lm_ce_loss(student, input_ids, attention_mask))
            .transpose()?;
        match (kd, ce) {
            (Some(kd), Some(ce)) => Ok(((kd * alpha)? + (ce * (1.0 - alpha))?)?),
            (Some(kd), None) => Ok(kd),
            (None, Some(ce)) => Ok(ce),
            // `validate` guarantees α ∈ [0, 1], so at least one weight is non-zero.
            (None, None) => Err(KdError::InvalidConfig(format!(
                "alpha {alpha} leaves no loss term"
            ))),
        }
    }
}

/// Checks logits `[B, L, V]` with every dimension non-zero and returns the dims.
pub(crate) fn check_sequence_logits(logits: &Tensor, what: &str) -> Result<(usize, usize, usize)> {
    match *logits.dims() {
        [b, l, v] if b > 0 && l > 0 && v > 0 => Ok((b, l, v)),
        ref dims => Err(KdError::ShapeMismatch(format!(
            "{what} must be a non-empty [B, L, V] tensor, got {dims:?}"
        ))),
    }
}

/// Checks that `t` is `[b, l]` and returns its values as `f64` on the host.
pub(crate) fn host_values(t: &Tensor, b: usize, l: usize, what: &str) -> Result<Vec<f64>> {
    if t.dims() != [b, l] {
        return Err(KdError::ShapeMismatch(format!(
            "{what} must have shape [{b}, {l}], got {:?}",
            t.dims()
        )));
    }
    Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}

/// Flat row indices `b·L + j` of the positions `j < L − 1` whose next token is real
/// (`attention_mask[b, j + 1] ≠ 0`), in order, as a `u32` tensor with its length.
fn shifted_positions(attention_mask: &Tensor, b: usize, l: usize) -> Result<(Tensor, usize)> {
    let mask = host_values(attention_mask, b, l, "attention mask")?;
    let rows: Vec<u32> = (0..b)
        .flat_map(|bi| (0..l.saturating_sub(1)).map(move |j| (bi, j)))
        .filter(|&(bi, j)| mask[bi * l + j + 1] != 0.0)
        .map(|(bi, j)| (bi * l + j) as u32)
        .collect();
    let count = rows.len();
    Ok((
        Tensor::from_vec(rows, count, attention_mask.device())?,
        count,
    ))
}

/// Token-level distillation `T² · (1/|R|) Σ_{(b,j)∈R} KL(p_T ‖ p_S)` with
/// `p = softmax(z[b, j]/T)` over the vocabulary, for student and teacher logits
/// `[B, L, V]` and an attention mask `[B, L]` (non-zero = real token, any dtype).
///
/// `R` holds the positions `j < L − 1` whose target token `j + 1` is real (the
/// next-token shift: the mask used is `attention_mask[:, 1:]`); other positions are
/// never read, so their logits cannot change the loss. Returns a zero scalar when
/// `R` is empty. The teacher is detached here.
pub fn token_kd_loss(
    student: &Tensor,
    teacher: &Tensor,
    attention_mask: &Tensor,
    t: f64,
) -> Result<Tensor> {
    check_temperature(t)?;
    let (b, l, v) = check_sequence_logits(student, "student logits")?;
    check_sequence_logits(teacher, "teacher logits")?;
    if student.dims() != teacher.dims() {
        return Err(KdError::ShapeMismatch(format!(
            "student logits {:?} and teacher logits {:?} differ",
            student.dims(),
            teacher.dims()
        )));
    }
    let (rows, count) = shifted_positions(attention_mask, b, l)?;
    if count == 0 {
        return Ok(Tensor::zeros((), DType::F32, student.device())?);
    }
    let s = student.reshape((b * l, v))?.index_select(&rows, 0)?;
    let te = teacher
        .detach()
        .reshape((b * l, v))?
        .index_select(&rows, 0)?;
    let kl = kl_div(&log_softmax_t(&te, t)?, &log_softmax_t(&s, t)?)?;
    Ok((kl * (t * t))?)
}

/// Next-token cross-entropy `−(1/|R|) Σ_{(b,j)∈R} log softmax(z[b, j])[x[b, j+1]]` for
/// logits `[B, L, V]`, token ids `[B, L]` (`u32` or `i64`) and an attention mask
/// `[B, L]`, with the same shift and positions `R` as [`token_kd_loss`].
///
/// Target ids at counted positions must lie in `[0, V)`; ids at other positions are
/// ignored. Returns a zero scalar when `R` is empty.
pub fn lm_ce_loss(logits: &Tensor, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
    let (b, l, v) = check_sequence_logits(logits, "logits")?;
    if !matches!(input_ids.dtype(), DType::U32 | DType::I64) {
        return Err(KdError::ShapeMismatch(format!(
            "input ids must be u32 or i64, got {:?}",
            input_ids.dtype()
        )));
    }
    let ids = host_values(input_ids, b, l, "input ids")?;
    let mask = host_values(attention_mask, b, l, "attention mask")?;
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for bi in 0..b {
        for j in 0..l.saturating_sub(1) {
            let next = bi * l + j + 1;
            if mask[next] == 0.0 {
                continue;
            }
            let id = ids[next];
            if !(0.0..v as f64).contains(&id) {
                return Err(KdError::ShapeMismatch(format!(
                    "token id {id} at [{bi}, {}] out of range for a vocabulary of {v}",
                    j + 1
                )));
            }
            rows.push((bi * l + j) as u32);
            targets.push(id as u32);
        }
    }
    let count = rows.len();
    if count == 0 {
        return Ok(Tensor::zeros((), DType::F32, logits.device())?);
    }
    let device = logits.device();
    let rows = Tensor::from_vec(rows, count, device)?;
    let targets = Tensor::from_vec(targets, count, device)?;
    let picked = logits.reshape((b * l, v))?.index_select(&rows, 0)?;
    cross_entropy(&picked, &targets)
}
