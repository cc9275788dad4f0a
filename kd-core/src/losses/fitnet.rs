//! FitNets hints (Romero et al., 2015): a trainable regressor maps a student
//! feature to the teacher's width, and the hint loss is the mean squared error
//! between the projected student feature and the teacher feature.
//!
//! ```text
//! 4-D  [N, C_s, H, W] → conv 1×1 (C_s→C_t, no bias) → BatchNorm (batch statistics) → ReLU → [N, C_t, H, W]
//! 2-D  [N, D_s]       → linear (D_s→D_t)                                             → [N, D_t]
//! hint = (1/M) Σ (r(f_s) − f_t)²   over all M elements
//! ```
//!
//! As in the paper, hints are added to the task loss, `L = CE + weight · hint`,
//! rather than mixed with `α`: they supervise an intermediate layer, not the output
//! distribution.

use candle_core::{DType, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Init, Linear, Module, VarBuilder};

use crate::{KdError, Result};

/// Hyper-parameters of a FitNets hint: the weight of the hint term and the
/// BatchNorm of the convolutional regressor.
///
/// Serialised as `{"weight": 100.0, "bn_momentum": 0.1, "bn_eps": 1e-5}`; missing
/// keys take these defaults.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct FitNetConfig {
    /// Weight of the hint term in `L = CE + weight · hint` (finite, `≥ 0`).
    pub weight: f64,
    /// Running-statistics momentum `m ∈ [0, 1]`: `running ← (1−m)·running + m·batch`.
    pub bn_momentum: f64,
    /// `ε > 0` added to the variance in the BatchNorm.
    pub bn_eps: f64,
}

impl Default for FitNetConfig {
    /// `weight = 100`, `bn_momentum = 0.1`, `bn_eps = 1e-5` (PyTorch's BatchNorm defaults).
    fn default() -> Self {
        Self {
            weight: 100.0,
            bn_momentum: 0.1,
            bn_eps: 1e-5,
        }
    }
}

impl FitNetConfig {
    /// Checks `weight` finite and `≥ 0`, `bn_momentum ∈ [0, 1]`, `bn_eps` finite and
    /// `> 0`. NaN is rejected everywhere.
    pub fn validate(&self) -> Result<()> {
        if !(self.weight.is_finite() && self.weight >= 0.0) {
            return Err(KdError::InvalidConfig(format!(
                "fitnet weight must be finite and >= 0, got {}",
                self.weight
            )));
        }
        if !(0.0..=1.0).contains(&self.bn_momentum) {
            return Err(KdError::InvalidConfig(format!(
                "fitnet bn_momentum must lie in [0, 1], got {}",
                self.bn_momentum
            )));
        }
        if !(self.bn_eps.is_finite() && self.bn_eps > 0.0) {
            return Err(KdError::InvalidConfig(format!(
                "fitnet bn_eps must be finite and > 0, got {}",
                self.bn_eps
            )));
        }
        Ok(())
    }

    /// The weighted hint `weight · fitnet_loss(projected, teacher)`, see [`fitnet_loss`].
    pub fn loss(&self, projected: &Tensor, teacher: &Tensor) -> Result<Tensor> {
        self.validate()?;
        Ok((fitnet_loss(projected, teacher)? * self.weight)?)
    }
}

/// BatchNorm over `[N, C, H, W]` with trainable `γ`, `β` (from the `VarBuilder`) and
/// running statistics kept as plain tensors, outside the trainable parameters.
///
/// Composed of elementary differentiable ops (no fused kernel), so gradients flow
/// to the input, `γ` and `β` through the batch statistics.
#[derive(Clone, Debug)]
struct BatchNorm2d {
    gamma: Tensor,
    beta: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    momentum: f64,
    eps: f64,
}

impl BatchNorm2d {
    fn new(channels: usize, momentum: f64, eps: f64, vb: VarBuilder) -> Result<Self> {
        // PyTorch's BatchNorm initialisation: γ = 1, β = 0, running mean 0, variance 1.
        let gamma = vb.get_with_hints(channels, "weight", Init::Const(1.0))?;
        let beta = vb.get_with_hints(channels, "bias", Init::Const(0.0))?;
        let running_mean = Tensor::zeros(channels, vb.dtype(), vb.device())?;
        let running_var = Tensor::ones(channels, vb.dtype(), vb.device())?;
        Ok(Self {
            gamma,
            beta,
            running_mean,
            running_var,
            momentum,
            eps,
        })
    }

    /// `y = (x − μ) / sqrt(σ² + ε) · γ + β` per channel. In train mode `μ`, `σ²` are the
    /// batch mean and biased variance over `(N, H, W)` and the running statistics are
    /// updated with the unbiased variance (`σ² · n/(n−1)`, `n = N·H·W`), as PyTorch
    /// does; in eval mode the running statistics are used.
    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let (mean, var) = if train {
            let count = n * h * w;
            if count < 2 {
                return Err(KdError::ShapeMismatch(format!(
                    "batch norm in train mode needs more than one value per channel, got {:?}",
                    x.dims()
                )));
            }
            let mean = x.mean_keepdim((0, 2, 3))?;
            let var = x.broadcast_sub(&mean)?.sqr()?.mean_keepdim((0, 2, 3))?;
            // Detached, so the running statistics never hold a piece of the graph.
            let unbiased = (var.detach().flatten_all()? * (count as f64 / (count - 1) as f64))?;
            let m = self.momentum;
            self.running_mean =
                ((&self.running_mean * (1.0 - m))? + (mean.detach().flatten_all()? * m)?)?;
            self.running_var = ((&self.running_var * (1.0 - m))? + (unbiased * m)?)?;
            (mean, var)
        } else {
            (
                self.running_mean.reshape((1, c, 1, 1))?,
                self.running_var.reshape((1, c, 1, 1))?,
            )
        };
        let normed = x
            .broadcast_sub(&mean)?
            .broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let gamma = self.gamma.reshape((1, c, 1, 1))?;
        let beta = self.beta.reshape((1, c, 1, 1))?;
        Ok(normed.broadcast_mul(&gamma)?.broadcast_add(&beta)?)
    }
}

/// The two regressor architectures.
#[derive(Clone, Debug)]
enum Regressor {
    Conv { conv: Conv2d, bn: BatchNorm2d },
    Linear(Linear),
}

/// The FitNets regressor `r`: projects a student feature to the teacher's channel
/// count so that [`fitnet_loss`] can compare them.
///
/// * 4-D features `[N, C_s, H, W]`: `r(x) = ReLU(BN(W ∗ x))` with a 1×1 convolution
///   `W ∈ ℝ^{C_t×C_s×1×1}` (no bias: the BatchNorm's mean subtraction would cancel it)
///   and a BatchNorm with batch statistics in train mode. Parameters, relative to the
///   `VarBuilder` prefix: `conv.weight` `[C_t, C_s, 1, 1]`, `bn.weight` `[C_t]` (γ, 1 at
///   creation), `bn.bias` `[C_t]` (β, 0). The running mean and variance are plain
///   tensors, updated in train mode and never trained.
/// * 2-D features `[N, D_s]`: `r(x) = x Wᵀ + b`, parameters `linear.weight`
///   `[D_t, D_s]` and `linear.bias` `[D_t]`.
///
/// Build it from a `VarBuilder` over the student's `VarMap` (e.g. prefixed
/// `regressor.<pair>`) so its parameters train with the student. Values already in
/// the `VarMap` under those names are used as they are, so a caller that needs a
/// seeded initialisation inserts them first; otherwise Candle's default
/// initialisers draw them.
#[derive(Clone, Debug)]
pub struct FitNetRegressor {
    regressor: Regressor,
    in_dim: usize,
    out_dim: usize,
}

impl FitNetRegressor {
    /// A convolutional regressor for features `[N, student_channels, H, W]` →
    /// `[N, teacher_channels, H, W]`; BatchNorm settings from `cfg`.
    pub fn conv(
        student_channels: usize,
        teacher_channels: usize,
        cfg: &FitNetConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        cfg.validate()?;
        check_dims(student_channels, teacher_channels)?;
        let conv = candle_nn::conv2d_no_bias(
            student_channels,
            teacher_channels,
            1,
            Conv2dConfig::default(),
            vb.pp("conv"),
        )?;
        let bn = BatchNorm2d::new(teacher_channels, cfg.bn_momentum, cfg.bn_eps, vb.pp("bn"))?;
        Ok(Self {
            regressor: Regressor::Conv { conv, bn },
            in_dim: student_channels,
            out_dim: teacher_channels,
        })
    }

    /// A linear regressor for features `[N, student_dim]` → `[N, teacher_dim]`.
    pub fn linear(student_dim: usize, teacher_dim: usize, vb: VarBuilder) -> Result<Self> {
        check_dims(student_dim, teacher_dim)?;
        let linear = candle_nn::linear(student_dim, teacher_dim, vb.pp("linear"))?;
        Ok(Self {
            regressor: Regressor::Linear(linear),
            in_dim: student_dim,
            out_dim: teacher_dim,
        })
    }

    /// The regressor that fits this pair of features: [`conv`](Self::conv) for 4-D
    /// features with the same `N, H, W`, [`linear`](Self::linear) for 2-D features with
    /// the same `N`; any other pair of shapes is a [`KdError::ShapeMismatch`].
    pub fn for_features(
        student: &Tensor,
        teacher: &Tensor,
        cfg: &FitNetConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        match (student.dims(), teacher.dims()) {
            (&[ns, cs, hs, ws], &[nt, ct, ht, wt]) if (ns, hs, ws) == (nt, ht, wt) => {
                Self::conv(cs, ct, cfg, vb)
            }
            (&[ns, ds], &[nt, dt]) if ns == nt => Self::linear(ds, dt, vb),
            (s, t) => Err(KdError::ShapeMismatch(format!(
                "fitnet needs two [N, C, H, W] features with equal N, H, W or two [N, D] \
                 features with equal N, got student {s:?} and teacher {t:?}"
            ))),
        }
    }

    /// Whether this is the convolutional (4-D) regressor.
    pub fn is_conv(&self) -> bool {
        matches!(self.regressor, Regressor::Conv { .. })
    }

    /// Input width `C_s` (or `D_s`).
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// Output width `C_t` (or `D_t`).
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// The BatchNorm's running `(mean, variance)`, each `[C_t]`, for the convolutional
    /// regressor; `None` for the linear one.
    pub fn running_stats(&self) -> Option<(&Tensor, &Tensor)> {
        match &self.regressor {
            Regressor::Conv { bn, .. } => Some((&bn.running_mean, &bn.running_var)),
            Regressor::Linear(_) => None,
        }
    }

    /// Projects a student feature: `[N, C_s, H, W]` → `[N, C_t, H, W]` or `[N, D_s]` →
    /// `[N, D_t]`. With `train = true` the BatchNorm normalises with the batch
    /// statistics (and needs `N·H·W ≥ 2`) and updates its running statistics; with
    /// `train = false` it uses the running statistics and changes nothing.
    pub fn forward_t(&mut self, student: &Tensor, train: bool) -> Result<Tensor> {
        let in_dim = self.in_dim;
        let wrong_input = |expected: String| {
            KdError::ShapeMismatch(format!(
                "regressor expects a non-empty {expected} feature, got {:?}",
                student.dims()
            ))
        };
        match &mut self.regressor {
            Regressor::Conv { conv, bn } => {
                if !matches!(*student.dims(), [n, c, h, w] if c == in_dim && n * h * w > 0) {
                    return Err(wrong_input(format!("[N, {in_dim}, H, W]")));
                }
                let y = conv.forward(student)?;
                Ok(bn.forward(&y, train)?.relu()?)
            }
            Regressor::Linear(linear) => {
                if !matches!(*student.dims(), [n, d] if d == in_dim && n > 0) {
                    return Err(wrong_input(format!("[N, {in_dim}]")));
                }
                Ok(linear.forward(student)?)
            }
        }
    }
}

/// Rejects a regressor with a zero width.
fn check_dims(student: usize, teacher: usize) -> Result<()> {
    if student == 0 || teacher == 0 {
        return Err(KdError::ShapeMismatch(format!(
            "regressor widths must be > 0, got {student} → {teacher}"
        )));
    }
    Ok(())
}

/// The FitNets hint `(1/M) Σ_i (s_i − t_i)²`, the mean squared error over all `M`
/// elements between the projected student feature `s = r(f_s)` and the teacher
/// feature `t` (same shape).
///
/// The teacher is detached here, so gradients reach the student side (student and
/// regressor) only. Computed in `f32`.
pub fn fitnet_loss(projected: &Tensor, teacher: &Tensor) -> Result<Tensor> {
    if projected.dims() != teacher.dims() {
        return Err(KdError::ShapeMismatch(format!(
            "fitnet: projected student feature {:?} and teacher feature {:?} differ",
            projected.dims(),
            teacher.dims()
        )));
    }
    if projected.rank() == 0 || projected.elem_count() == 0 {
        return Err(KdError::ShapeMismatch(format!(
            "fitnet needs a non-empty feature, got {:?}",
            projected.dims()
        )));
    }
    let s = projected.to_dtype(DType::F32)?;
    let t = teacher.detach().to_dtype(DType::F32)?;
    Ok((s - t)?.sqr()?.mean_all()?)
}
