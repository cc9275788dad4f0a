//! Knowledge-distillation losses and the distillation training step.
//!
//! Convention used everywhere: `L = α·KD + (1−α)·CE` — α is the weight of the
//! distillation term (see `DEVELOPERS.md`).

pub mod error;
pub mod losses;
pub mod optim;
pub mod schedule;
pub mod train;

pub use error::{KdError, Result};
pub use losses::LossConfig;
pub use optim::{Sgd, SgdConfig};
pub use schedule::LrSchedule;
pub use train::{
    evaluate, fit, fit_with, loss_gradients, FitOptions, NoHook, StepHook, StepInfo, TeacherCache,
    TrainConfig, TrainData, TrainReport,
};
