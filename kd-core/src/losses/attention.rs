//! Attention transfer (Zagoruyko & Komodakis, 2017): the student matches the
//! teacher's spatial attention maps, the normalised channel-mean of `|f|^p`.
//!
//! ```text
//! E(f)[n, h, w] = (1/C) Σ_c |f[n, c, h, w]|^p          energy map   [N, H, W]
//! A(f)[n]       = vec(E(f)[n]) / max(‖vec(E(f)[n])‖₂, 1e-12)   attention map [N, H·W]
//! AT            = Σ_pairs (1/(N·H·W)) Σ_n ‖A(f_s)[n] − A(f_t)[n]‖²
//! ```
//!
//! As in the paper, the attention term is added to the task loss,
//! `L = CE + weight · AT`, rather than mixed with `α`.

use candle_core::{DType, Device, Tensor, D};

use crate::{KdError, Result};

/// Hyper-parameters of attention transfer.
///
/// Serialised as `{"p": 2.0, "weight": 1000.0}`; missing keys take these defaults.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AttentionConfig {
    /// Exponent `p ≥ 1` of `|f|^p` in the energy map.
    pub p: f64,
    /// Weight of the attention term in `L = CE + weight · AT` (finite, `≥ 0`). 1000 is
    /// the common choice with the element mean of [`at_loss`]; the paper's code adds
    /// `β/2 · AT` with `β = 10³`, i.e. a weight of 500.
    pub weight: f64,
}

impl Default for AttentionConfig {
    /// `p = 2`, `weight = 1000`.
    fn default() -> Self {
        Self {
            p: 2.0,
            weight: 1000.0,
        }
    }
}

impl AttentionConfig {
    /// Checks `p` finite and `≥ 1` and `weight` finite and `≥ 0` (NaN rejected).
    pub fn validate(&self) -> Result<()> {
        check_p(self.p)?;
        if !(self.weight.is_finite() && self.weight >= 0.0) {
            return Err(KdError::InvalidConfig(format!(
                "attention weight must be finite and >= 0, got {}",
                self.weight
            )));
        }
        Ok(())
    }

    /// The weighted term `weight · at_loss(pairs, p)`, see [`at_loss`].
    pub fn loss(&self, pairs: &[(Tensor, Tensor)]) -> Result<Tensor> {
        self.validate()?;
        Ok((at_loss(pairs, self.p)? * self.weight)?)
    }
}

/// Rejects an exponent that is not finite and `≥ 1`: below 1 the derivative of
/// `|f|^p` is infinite at `f = 0` (ReLU features are often exactly 0).
fn check_p(p: f64) -> Result<()> {
    if p.is_finite() && p >= 1.0 {
        Ok(())
    } else {
        Err(KdError::InvalidConfig(format!(
            "attention exponent p must be finite and >= 1, got {p}"
        )))
    }
}

/// Checks a non-empty `[N, C, H, W]` feature and returns its dims.
fn check_feature(f: &Tensor, what: &str) -> Result<(usize, usize, usize, usize)> {
    match *f.dims() {
        [n, c, h, w] if n > 0 && c > 0 && h > 0 && w > 0 => Ok((n, c, h, w)),
        ref dims => Err(KdError::ShapeMismatch(format!(
            "{what} must be a non-empty [N, C, H, W] feature, got {dims:?}"
        ))),
    }
}

/// The energy map `E[n, h, w] = (1/C) Σ_c |f[n, c, h, w]|^p`, `[N, H, W]`, in `f32`.
fn energy_map(f: &Tensor, p: f64) -> Result<Tensor> {
    let f = f.to_dtype(DType::F32)?;
    // `sqr` for the common p = 2: exact and no `abs` kink at 0.
    let powered = if p == 2.0 {
        f.sqr()?
    } else {
        f.abs()?.powf(p)?
    };
    Ok(powered.mean(1)?)
}

/// Row-wise L2 normalisation `x / max(‖x‖₂, 1e-12)` of a `[N, M]` tensor
/// (PyTorch's `F.normalize(x, dim=1)`).
fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    // max(‖x‖, 1e-12) = sqrt(max(‖x‖², 1e-24)); flooring inside the sqrt keeps the
    // gradient finite for an all-zero row.
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.maximum(1e-24f64)?.sqrt()?;
    Ok(x.broadcast_div(&norm)?)
}

/// The attention map of a feature `[N, C, H, W]`: `A = vec(E) / max(‖vec(E)‖₂, 1e-12)`
/// with `E = mean_c |f|^p`, one L2-normalised row of length `H·W` per sample,
/// `[N, H·W]`, in `f32`.
pub fn attention_map(feature: &Tensor, p: f64) -> Result<Tensor> {
    check_p(p)?;
    check_feature(feature, "feature")?;
    l2_normalize(&energy_map(feature, p)?.flatten_from(1)?)
}

/// The adaptive-average-pooling matrix `P ∈ ℝ^{out×len}`: row `i` averages the
/// window `[⌊i·len/out⌋, ⌈(i+1)·len/out⌉)`, PyTorch's `adaptive_avg_pool` windows.
/// When `out` divides `len` this is plain average pooling with stride `len/out`.
fn pooling_matrix(len: usize, out: usize, device: &Device) -> Result<Tensor> {
    let mut m = vec![0f32; out * len];
    for i in 0..out {
        let start = i * len / out;
        let end = ((i + 1) * len).div_ceil(out);
        let inv = 1.0 / (end - start) as f32;
        m[i * len + start..i * len + end].fill(inv);
    }
    Ok(Tensor::from_vec(m, (out, len), device)?)
}

/// Resizes an energy map `[N, H, W]` to `[N, oh, ow]` (`oh ≤ H`, `ow ≤ W`) with
/// adaptive average pooling, `P_h · E · P_wᵀ`; a no-op when the size already fits.
fn pool_to(map: &Tensor, oh: usize, ow: usize) -> Result<Tensor> {
    let (_, h, w) = map.dims3()?;
    let mut out = map.clone();
    if h != oh {
        out = pooling_matrix(h, oh, map.device())?.broadcast_matmul(&out)?;
    }
    if w != ow {
        let pw = pooling_matrix(w, ow, map.device())?.t()?;
        out = out.broadcast_matmul(&pw)?;
    }
    Ok(out)
}

/// Attention-transfer loss over `(student, teacher)` feature pairs `[N, C, H, W]`:
///
/// `AT = Σ_pairs mean((A(f_s) − A(f_t))²)`,
///
/// the reference definition `(at(x) − at(y)).pow(2).mean()` per pair, where the mean
/// runs over all `N·H·W` entries: for each pair it is the batch mean of the squared
/// L2 distance between the attention maps divided by `H·W`. Student and teacher may
/// differ in channel count. When their spatial sizes differ, each energy map `E`
/// (before normalisation) is resized to the smaller size, `min(H_s, H_t) ×
/// min(W_s, W_t)`, by adaptive average pooling (plain average pooling when the sizes
/// divide; PyTorch's `adaptive_avg_pool2d` windows otherwise).
///
/// Teachers are detached here. Errors on an empty slice, a non-4-D feature or
/// differing batch sizes.
pub fn at_loss(pairs: &[(Tensor, Tensor)], p: f64) -> Result<Tensor> {
    check_p(p)?;
    if pairs.is_empty() {
        return Err(KdError::InvalidConfig(
            "at_loss needs at least one feature pair".to_string(),
        ));
    }
    let mut total: Option<Tensor> = None;
    for (i, (student, teacher)) in pairs.iter().enumerate() {
        let (ns, _, hs, ws) = check_feature(student, &format!("student feature {i}"))?;
        let (nt, _, ht, wt) = check_feature(teacher, &format!("teacher feature {i}"))?;
        if ns != nt {
            return Err(KdError::ShapeMismatch(format!(
                "pair {i}: student batch {ns} and teacher batch {nt} differ"
            )));
        }
        let (oh, ow) = (hs.min(ht), ws.min(wt));
        let es = pool_to(&energy_map(student, p)?, oh, ow)?;
        let et = pool_to(&energy_map(&teacher.detach(), p)?, oh, ow)?;
        let a_s = l2_normalize(&es.flatten_from(1)?)?;
        let a_t = l2_normalize(&et.flatten_from(1)?)?;
        let term = (a_s - a_t)?.sqr()?.mean_all()?;
        total = Some(match total {
            None => term,
            Some(acc) => (acc + term)?,
        });
    }
    // `pairs` is non-empty, so the sum exists.
    total.ok_or_else(|| KdError::Other("at_loss: empty sum".to_string()))
}
