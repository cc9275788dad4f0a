//! Knowledge distillation for Candle: the losses, objectives as weighted sums
//! of logit and feature terms, SGD with momentum, learning-rate schedules, the
//! teacher-logit cache and one training loop, generic over what it trains.
//!
//! Convention used everywhere: `L = α·KD + (1−α)·CE` — α is the weight of the
//! distillation term.
//!
//! * [`losses`] — every loss as a function with its serde config;
//! * [`objective`] — [`Objective`], a weighted sum of logit terms (ce, kd,
//!   ca-kld, dkd) and feature terms (fitnet, at, rkd) on named features, with
//!   its specification grammar (`"ce:0.1+kd:0.9"`, [`Objective::parse`]);
//! * [`train`] — [`fit`]: the epoch loop over any [`Network`] (forward →
//!   logits and named features; parameters by name) and any [`Samples`],
//!   with a [`StepHook`] around every optimizer step and a [`Progress`] sink;
//!   [`evaluate`], [`loss_gradients`];
//! * [`optim`], [`schedule`], [`init`] — SGD with momentum and weight decay,
//!   cosine schedule with warm-up, PyTorch's default initialisation, seeded;
//! * [`batcher`] — the seeded batch order of every run.
//!
//! The crate depends on candle and small pure-Rust crates only: it does not
//! know any model zoo or dataset. See `examples/` for distilling a
//! two-layer Candle model of your own.

pub mod batcher;
pub mod data;
pub mod error;
pub mod init;
pub mod losses;
pub mod network;
pub mod objective;
pub mod optim;
pub mod progress;
pub mod schedule;
pub mod teacher_cache;
pub mod train;

pub use batcher::Batcher;
pub use data::{Samples, TrainData};
pub use error::{KdError, Result};
pub use losses::{LossConfig, SelfDistillConfig};
pub use network::{feature_shapes, FeatureShapes, ModelOutput, Network};
pub use objective::{FeaturePair, Objective, ObjectiveLoss, Term, TermParams, WeightedTerm};
pub use optim::{Sgd, SgdConfig};
pub use progress::{EpochStats, Progress, Quiet};
pub use schedule::LrSchedule;
pub use teacher_cache::TeacherCache;
pub use train::{
    evaluate, fit, gradients_of, loss_gradients, recalibrate_batch_norm, FitOptions, NoHook,
    ResumePoint, StepHook, StepInfo, TrainConfig, TrainReport,
};
