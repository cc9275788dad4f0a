//! Self-distillation: the network is its own teacher. Its detached, softened
//! predictions on a second view of the batch (another augmentation, as in
//! CS-KD / DLB, which EPSD builds on) are the targets of its predictions on
//! the first view.
//!
//! ```text
//! L_SD = α · T² · KL(softmax(z̃/T) ‖ softmax(z/T)) + (1−α) · CE(z, y),   z̃ detached
//! ```
//!
//! `z` are the logits on the batch, `z̃` the same network's logits on the other
//! view, `α` the project-wide weight of the distillation term. This is the
//! loss whose gradient EPSD's saliency `|θ ⊙ ∂L_SD/∂θ|` takes (Chen et al.,
//! "EPSD: Early Pruning with Self-Distillation for Efficient Model
//! Compression", AAAI 2024). When both views are the same tensor the KL term
//! sits at its minimum and contributes no gradient: `∂L_SD/∂z` is then
//! `(1−α)·∂CE/∂z`, and the saliency ranks like SNIP's.

use candle_core::Tensor;

use crate::{LossConfig, Result};

/// Hyper-parameters of [`self_distill_loss`].
///
/// Serialised as `{"temperature": 3.0, "alpha": 0.5}`; missing keys take
/// these defaults, DLB's recipe that EPSD uses (`L = CE + T²·KL` at `T = 3`,
/// i.e. `α = 0.5` in this crate's convention up to a factor 2).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SelfDistillConfig {
    /// Softmax temperature `T > 0` of both views.
    pub temperature: f64,
    /// Weight `α ∈ [0, 1]` of the self-distillation term.
    pub alpha: f64,
}

impl Default for SelfDistillConfig {
    /// `temperature = 3`, `alpha = 0.5`.
    fn default() -> Self {
        Self {
            temperature: 3.0,
            alpha: 0.5,
        }
    }
}

impl From<SelfDistillConfig> for LossConfig {
    /// The same loss as Hinton KD with the other view as the teacher.
    fn from(c: SelfDistillConfig) -> Self {
        LossConfig::Hinton {
            temperature: c.temperature,
            alpha: c.alpha,
        }
    }
}

impl SelfDistillConfig {
    /// Checks `T` finite and `> 0` and `α ∈ [0, 1]` (NaN rejected).
    pub fn validate(&self) -> Result<()> {
        LossConfig::from(*self).validate()
    }
}

/// `L_SD` (see the module docs) for logits `[N, K]` on the batch, logits
/// `[N, K]` of the same network on the other view, and `u32` labels `[N]`:
/// [`LossConfig::Hinton`]'s loss with the view as the (detached) teacher.
///
/// Gradients reach the network only through `logits`. A term whose weight
/// is exactly 0 is not computed. Errors: [`KdError::InvalidConfig`] for a
/// bad configuration, [`KdError::ShapeMismatch`] for mismatched logits or
/// labels.
///
/// [`KdError::InvalidConfig`]: crate::KdError::InvalidConfig
/// [`KdError::ShapeMismatch`]: crate::KdError::ShapeMismatch
pub fn self_distill_loss(
    logits: &Tensor,
    view_logits: &Tensor,
    labels: &Tensor,
    cfg: &SelfDistillConfig,
) -> Result<Tensor> {
    LossConfig::from(*cfg).loss(logits, Some(view_logits), labels)
}

#[cfg(test)]
mod tests {
    //! Golden values from PyTorch (float64):
    //!
    //! ```python
    //! import math, torch, torch.nn.functional as F
    //! def wave(shape, a, b, scale=1.0, offset=0.0):
    //!     # scale·sin(i·a + b) + offset over the flat index i, rounded to f32 like the Rust side
    //!     n = math.prod(shape)
    //!     x = scale * torch.sin(torch.arange(n, dtype=torch.float64) * a + b) + offset
    //!     return x.float().double().reshape(shape)
    //! def self_distill(z, zv, y, T, alpha):
    //!     kl = F.kl_div(F.log_softmax(z / T, 1), F.softmax(zv.detach() / T, 1), reduction='batchmean')
    //!     return alpha * T**2 * kl + (1 - alpha) * F.cross_entropy(z, y)
    //! Z = wave((3, 5), 0.7, 0.3, 3.0)
    //! Zv = wave((3, 5), 0.45, -0.2, 2.5)
    //! y = torch.tensor([1, 4, 0])
    //! Zg, Zvg = Z.clone().requires_grad_(True), Zv.clone().requires_grad_(True)
    //! l = self_distill(Zg, Zvg, y, 3.0, 0.6); l.backward()
    //! l.item(), Zg.grad.flatten().tolist(), Zvg.grad      # Zvg.grad is None
    //! self_distill(Z, Z, y, 3.0, 0.6).item()              # = 0.4 · CE(Z, y)
    //! self_distill(Z, Zv, y, 1.0, 1.0).item()
    //! ```

    use candle_core::{DType, Device, Var};

    use super::*;
    use crate::KdError;

    fn wave(shape: &[usize], a: f64, b: f64, scale: f64) -> Tensor {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|i| (scale * (i as f64 * a + b).sin()) as f32)
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    fn flat(t: &Tensor) -> Vec<f64> {
        let t = t.flatten_all().unwrap().to_dtype(DType::F64).unwrap();
        t.to_vec1::<f64>().unwrap()
    }

    /// Within 1e-5 of the largest expected magnitude.
    fn assert_close(actual: &[f64], expected: &[f64]) {
        assert_eq!(actual.len(), expected.len());
        let scale = expected.iter().fold(0f64, |m, e| m.max(e.abs()));
        for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
            let tol = 1e-5 * e.abs().max(scale);
            assert!((a - e).abs() <= tol, "entry {i}: got {a}, expected {e}");
        }
    }

    fn inputs() -> (Tensor, Tensor, Tensor) {
        let z = wave(&[3, 5], 0.7, 0.3, 3.0);
        let zv = wave(&[3, 5], 0.45, -0.2, 2.5);
        let y = Tensor::new(&[1u32, 4, 0], &Device::Cpu).unwrap();
        (z, zv, y)
    }

    #[test]
    fn value_and_gradient_match_torch_and_the_view_is_detached() {
        let (z, zv, y) = inputs();
        let (z, zv) = (
            Var::from_tensor(&z).unwrap(),
            Var::from_tensor(&zv).unwrap(),
        );
        let cfg = SelfDistillConfig {
            temperature: 3.0,
            alpha: 0.6,
        };
        let loss = self_distill_loss(z.as_tensor(), zv.as_tensor(), &y, &cfg).unwrap();
        assert_close(&flat(&loss), &[1.8536460153700145]);
        let grads = loss.backward().unwrap();
        assert!(
            grads.get(zv.as_tensor()).is_none(),
            "the view must be detached"
        );
        let expected = [
            0.031762991216932504,
            -0.03585538837184659,
            0.1083540770585105,
            -0.0067765336024302215,
            -0.09748514630116621,
            -0.09655183416241468,
            -0.08781497994307101,
            -0.03532072473808912,
            0.05877315014229545,
            0.16091438870127933,
            -0.024943981046516184,
            0.16115073267473284,
            0.05951646373354494,
            -0.05297364124147558,
            -0.14274957412028588,
        ];
        assert_close(&flat(grads.get(z.as_tensor()).unwrap()), &expected);
    }

    #[test]
    fn same_view_leaves_the_weighted_ce_and_pure_kd_matches_torch() {
        let (z, zv, y) = inputs();
        let cfg = SelfDistillConfig {
            temperature: 3.0,
            alpha: 0.6,
        };
        let same = self_distill_loss(&z, &z, &y, &cfg).unwrap();
        assert_close(&flat(&same), &[0.3485523861901248]);
        let pure = SelfDistillConfig {
            temperature: 1.0,
            alpha: 1.0,
        };
        let kd = self_distill_loss(&z, &zv, &y, &pure).unwrap();
        assert_close(&flat(&kd), &[2.046115739909665]);
    }

    #[test]
    fn rejects_bad_configs_and_shapes() {
        let (z, zv, y) = inputs();
        for (temperature, alpha) in [(0.0, 0.5), (f64::NAN, 0.5), (2.0, 1.5), (2.0, f64::NAN)] {
            let cfg = SelfDistillConfig { temperature, alpha };
            assert!(matches!(
                self_distill_loss(&z, &zv, &y, &cfg),
                Err(KdError::InvalidConfig(_))
            ));
        }
        let short = zv.narrow(0, 0, 2).unwrap();
        assert!(matches!(
            self_distill_loss(&z, &short, &y, &SelfDistillConfig::default()),
            Err(KdError::ShapeMismatch(_))
        ));
    }
}
