//! Knowledge-distillation losses and the distillation training step.
//!
//! Convention used everywhere: `L = α·KD + (1−α)·CE` — α is the weight of the
//! distillation term (see `DEVELOPERS.md`).
//!
//! * [`losses`] — every loss as a function with its serde config;
//! * [`objective`] — [`Objective`], a weighted sum of logit terms (ce, kd,
//!   ca-kld, dkd) and feature terms (fitnet, at, rkd) on named features;
//! * [`train`] — the epoch loop: [`fit`] / [`fit_with`] on a [`LossConfig`],
//!   [`distill`] on an [`Objective`] (FitNets regressors trained beside the
//!   student, the teacher run per batch when its features are needed).

pub mod error;
pub mod losses;
pub mod objective;
pub mod optim;
pub mod schedule;
pub mod train;

pub use error::{KdError, Result};
pub use losses::{LossConfig, SelfDistillConfig};
pub use objective::{FeaturePair, Objective, ObjectiveLoss, Term, WeightedTerm};
pub use optim::{Sgd, SgdConfig};
pub use schedule::LrSchedule;
pub use train::{
    distill, evaluate, fit, fit_with, gradients_of, loss_gradients, DistillConfig, FitOptions,
    NoHook, StepHook, StepInfo, TeacherCache, TrainConfig, TrainData, TrainReport,
};
