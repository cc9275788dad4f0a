//! Training-mode batch normalisation (optionally fused with a ReLU) on the CPU
//! as a candle custom op with its own backward pass.
//!
//! For `x` of shape `[N, C, H, W]`, with `M = N·H·W` values per channel:
//!
//! ```text
//! μ_c = (1/M) Σ x,   σ²_c = (1/M) Σ (x − μ_c)²   (biased, as PyTorch normalises)
//! x̂ = (x − μ_c) / √(σ²_c + ε),   y = γ_c · x̂ + β_c   (then max(0, y) when fused)
//! ```
//! and, with `g` the incoming gradient (zeroed where a fused ReLU output is 0),
//!
//! ```text
//! ∂β_c = Σ g,   ∂γ_c = Σ g·x̂,   ∂x = γ_c / (M·√(σ²_c + ε)) · (M·g − ∂β_c − x̂·∂γ_c)
//! ```
//! Sums run in f64, channel by channel in a fixed order, so the result does not
//! depend on the number of threads. The op keeps the batch mean and biased
//! variance of its last forward pass for the caller's running statistics.

use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::contiguous_f32;

/// Per-channel batch statistics `(mean, 1/√(σ² + ε), biased variance σ²)`.
pub(crate) type BatchStats = Vec<(f64, f64, f64)>;

/// `y = γ·x̂ + β` (then ReLU if `relu`), inputs `(x, γ, β)`.
pub(crate) struct BatchNormTrainOp {
    pub eps: f64,
    pub relu: bool,
    /// Statistics of the forward pass: read by the caller for the running
    /// statistics and by the backward pass, which then need not recompute them.
    pub stats: Arc<Mutex<Option<BatchStats>>>,
}

/// `(N, C, H·W)` of a `[N, C, H, W]` layout whose parameters have `[C]`.
fn dims(x: &[usize], gamma: &[usize], beta: &[usize]) -> Result<(usize, usize, usize)> {
    let &[n, c, h, w] = x else {
        bail!("batch_norm: expected a 4-d input [N, C, H, W], got {x:?}")
    };
    if gamma != [c] || beta != [c] {
        bail!("batch_norm: weight and bias must be [{c}], got {gamma:?} and {beta:?}")
    }
    if n * h * w == 0 {
        bail!("batch_norm: empty input {x:?}")
    }
    Ok((n, c, h * w))
}

/// Mean and `1/√(σ² + ε)` of every channel, plus the biased variance.
fn channel_stats(x: &[f32], n: usize, c: usize, p: usize, eps: f64) -> Vec<(f64, f64, f64)> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let planes = (0..n).map(|i| &x[(i * c + ch) * p..(i * c + ch + 1) * p]);
            let m = (n * p) as f64;
            let mean = planes
                .clone()
                .map(|pl| pl.iter().map(|&v| v as f64).sum::<f64>())
                .sum::<f64>()
                / m;
            let var = planes
                .map(|pl| {
                    pl.iter()
                        .map(|&v| {
                            let d = v as f64 - mean;
                            d * d
                        })
                        .sum::<f64>()
                })
                .sum::<f64>()
                / m;
            (mean, 1.0 / (var + eps).sqrt(), var)
        })
        .collect()
}

/// `(γ/σ, β − μ·γ/σ)` in f32: `y = x·scale + shift`.
fn affine((mean, inv_std, _): (f64, f64, f64), gamma: f32, beta: f32) -> (f32, f32) {
    let scale = gamma as f64 * inv_std;
    (scale as f32, (beta as f64 - mean * scale) as f32)
}

impl CustomOp3 for BatchNormTrainOp {
    fn name(&self) -> &'static str {
        "kdprune-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, p) = dims(l1.dims(), l2.dims(), l3.dims())?;
        let x = contiguous_f32(s1, l1, "batch_norm input")?;
        let gamma = contiguous_f32(s2, l2, "batch_norm weight")?;
        let beta = contiguous_f32(s3, l3, "batch_norm bias")?;
        let stats = channel_stats(x, n, c, p, self.eps);
        let mut y = vec![0f32; x.len()];
        let relu = self.relu;
        y.par_chunks_mut(p)
            .zip(x.par_chunks(p))
            .enumerate()
            .for_each(|(plane, (out, inp))| {
                let ch = plane % c;
                let (scale, shift) = affine(stats[ch], gamma[ch], beta[ch]);
                if relu {
                    for (o, &v) in out.iter_mut().zip(inp) {
                        *o = (v * scale + shift).max(0.0);
                    }
                } else {
                    for (o, &v) in out.iter_mut().zip(inp) {
                        *o = v * scale + shift;
                    }
                }
            });
        if let Ok(mut slot) = self.stats.lock() {
            *slot = Some(stats);
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, p) = dims(x.dims(), gamma.dims(), beta.dims())?;
        let op = BatchNormBackwardOp {
            eps: self.eps,
            relu: self.relu,
            stats: self.stats.lock().ok().and_then(|s| s.clone()),
        };
        // One op computes the three gradients (they share every sum); they
        // come back packed as [∂x (N·C·H·W), ∂γ (C), ∂β (C)].
        // Where the fused ReLU cut the output is recomputed from x, γ and β.
        let _ = y;
        let dy = dy.contiguous()?;
        let params = Tensor::cat(&[gamma, beta], 0)?;
        let packed = x.contiguous()?.apply_op3_no_bwd(&params, &dy, &op)?;
        let len = n * c * p;
        let dx = packed.narrow(0, 0, len)?.reshape(x.shape())?;
        let dgamma = packed.narrow(0, len, c)?;
        let dbeta = packed.narrow(0, len + c, c)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// Packed gradients of [`BatchNormTrainOp`]; inputs `(x, [γ; β], ∂y)`.
struct BatchNormBackwardOp {
    eps: f64,
    relu: bool,
    /// The forward pass's statistics (recomputed from `x` when absent).
    stats: Option<BatchStats>,
}

impl CustomOp3 for BatchNormBackwardOp {
    fn name(&self) -> &'static str {
        "kdprune-batch-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "batch_norm backward input")?;
        let params = contiguous_f32(s2, l2, "batch_norm backward parameters")?;
        let dy = contiguous_f32(s3, l3, "batch_norm backward gradient")?;
        if l1.dims() != l3.dims() {
            bail!(
                "batch_norm backward: input {:?} and gradient {:?} differ",
                l1.dims(),
                l3.dims()
            )
        }
        let c = params.len() / 2;
        let (gamma, beta) = params.split_at(c);
        let (n, c, p) = dims(l1.dims(), &[c], &[c])?;
        let len = n * c * p;
        let stats = match &self.stats {
            Some(stats) if stats.len() == c => stats.clone(),
            _ => channel_stats(x, n, c, p, self.eps),
        };
        let relu = self.relu;
        // The incoming gradient, zero where the fused ReLU cut γ·x̂ + β.
        // Same f32 arithmetic as the forward pass, so the cut is the same.
        let affine: Vec<(f32, f32)> = (0..c)
            .map(|ch| affine(stats[ch], gamma[ch], beta[ch]))
            .collect();
        let grad = |i: usize, ch: usize| -> f32 {
            if relu {
                let (scale, shift) = affine[ch];
                if x[i] * scale + shift <= 0.0 {
                    return 0.0;
                }
            }
            dy[i]
        };
        // Σ g and Σ g·x̂ per channel.
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mean, inv_std, _) = stats[ch];
                let (mut sg, mut sgx) = (0f64, 0f64);
                for i in 0..n {
                    let start = (i * c + ch) * p;
                    for (k, &xv) in (start..start + p).zip(&x[start..start + p]) {
                        let g = grad(k, ch) as f64;
                        sg += g;
                        sgx += g * (xv as f64 - mean) * inv_std;
                    }
                }
                (sg, sgx)
            })
            .collect();
        let mut out = vec![0f32; len + 2 * c];
        let m = (n * p) as f64;
        out[..len]
            .par_chunks_mut(p)
            .enumerate()
            .for_each(|(plane, dx)| {
                let ch = plane % c;
                let (mean, inv_std, _) = stats[ch];
                let (sg, sgx) = sums[ch];
                let k = gamma[ch] as f64 * inv_std / m;
                let start = plane * p;
                for (j, d) in dx.iter_mut().enumerate() {
                    let idx = start + j;
                    let xhat = (x[idx] as f64 - mean) * inv_std;
                    *d = (k * (m * grad(idx, ch) as f64 - sg - xhat * sgx)) as f32;
                }
            });
        for ch in 0..c {
            out[len + ch] = sums[ch].1 as f32;
            out[len + c + ch] = sums[ch].0 as f32;
        }
        Ok((CpuStorage::F32(out), Shape::from(len + 2 * c)))
    }
}

/// Training-mode batch norm (ReLU fused when `relu`) with kdprune's CPU
/// kernel: the output and the batch `(mean, biased variance)` per channel.
/// Only f32 tensors on the CPU.
pub fn batch_norm_train(
    xs: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let slot = Arc::new(Mutex::new(None));
    let op = BatchNormTrainOp {
        eps,
        relu,
        stats: slot.clone(),
    };
    let y = xs
        .contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    let stats = slot.lock().ok().and_then(|s| s.clone());
    let Some(stats) = stats else {
        bail!("batch_norm: the kernel left no statistics")
    };
    let c = stats.len();
    let mean = stats.iter().map(|s| s.0 as f32).collect();
    let var = stats.iter().map(|s| s.2 as f32).collect();
    Ok((
        y,
        Tensor::from_vec(mean, c, xs.device())?,
        Tensor::from_vec(var, c, xs.device())?,
    ))
}

/// The same computation as [`batch_norm_train`] from candle's differentiable
/// ops, on any device (the reference the kernel is tested against).
pub fn batch_norm_train_candle(
    xs: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (_, c, _, _) = xs.dims4()?;
    let mean = xs.mean_keepdim((0, 2, 3))?;
    let centred = xs.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim((0, 2, 3))?;
    let normed = centred.broadcast_div(&(&var + eps)?.sqrt()?)?;
    let y = normed
        .broadcast_mul(&gamma.reshape((1, c, 1, 1))?)?
        .broadcast_add(&beta.reshape((1, c, 1, 1))?)?;
    let y = if relu { y.relu()? } else { y };
    Ok((y, mean.flatten_all()?.detach(), var.flatten_all()?.detach()))
}
