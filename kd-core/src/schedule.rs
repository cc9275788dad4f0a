//! Learning-rate schedules, evaluated per optimizer step.

use serde::{Deserialize, Serialize};

/// Learning rate as a function of the step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LrSchedule {
    /// η(t) = η₀.
    Constant,
    /// Linear warm-up over `warmup_steps`, η(t) = η₀·(t+1)/W, then cosine decay
    /// to `min_lr` at `total_steps`:
    /// η(t) = η_min + (η₀ − η_min)·(1 + cos(π·(t−W)/(T−W)))/2
    /// (PyTorch's `CosineAnnealingLR` closed form with `T_max = T − W`).
    Cosine {
        /// Steps of linear warm-up (0 for none).
        warmup_steps: usize,
        /// Steps of the whole run.
        total_steps: usize,
        /// Final learning rate η_min.
        min_lr: f64,
    },
}

impl LrSchedule {
    /// The learning rate at `step` (0-based) for base rate `base`.
    pub fn lr(&self, base: f64, step: usize) -> f64 {
        match *self {
            LrSchedule::Constant => base,
            LrSchedule::Cosine {
                warmup_steps,
                total_steps,
                min_lr,
            } => {
                if step < warmup_steps {
                    return base * (step + 1) as f64 / warmup_steps as f64;
                }
                let span = total_steps.saturating_sub(warmup_steps).max(1);
                let t = (step - warmup_steps).min(span) as f64 / span as f64;
                min_lr + (base - min_lr) * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_matches_pytorch_closed_form() {
        // import math
        // base, eta_min, T = 0.1, 0.001, 10
        // [eta_min + (base-eta_min)*(1+math.cos(math.pi*t/T))/2 for t in (0, 3, 5, 10)]
        // -> [0.1, 0.07959536998847742, 0.0505, 0.001]
        let s = LrSchedule::Cosine {
            warmup_steps: 0,
            total_steps: 10,
            min_lr: 0.001,
        };
        let want = [
            (0, 0.1),
            (3, 0.079_595_369_988_477_42),
            (5, 0.0505),
            (10, 0.001),
        ];
        for (t, w) in want {
            assert!((s.lr(0.1, t) - w).abs() < 1e-12, "step {t}");
        }
    }

    #[test]
    fn warmup_is_linear_then_cosine_starts_at_base() {
        let s = LrSchedule::Cosine {
            warmup_steps: 4,
            total_steps: 14,
            min_lr: 0.0,
        };
        assert!((s.lr(0.2, 0) - 0.05).abs() < 1e-12);
        assert!((s.lr(0.2, 3) - 0.2).abs() < 1e-12);
        assert!((s.lr(0.2, 4) - 0.2).abs() < 1e-12);
        assert!((s.lr(0.2, 9) - 0.1).abs() < 1e-12);
        assert!(s.lr(0.2, 14).abs() < 1e-12);
        assert!(s.lr(0.2, 100).abs() < 1e-12);
        assert_eq!(LrSchedule::Constant.lr(0.3, 77), 0.3);
    }
}
