//! Unstructured pruning over named Candle tensors: parameter filters,
//! importance criteria ([`importance`]: magnitude, random, SNIP,
//! teacher-guided, EPSD self-distillation, LAMP, GraSP, SynFlow, and any
//! criterion of the caller's behind the [`Importance`] trait), exact-count
//! global / per-layer selection ([`select`]), binary masks applied to weights
//! and gradients, pruning schedules and their drivers ([`schedule`]: one-shot,
//! GMP, IMP with rewinding, COLT, over the caller's training through
//! [`Learner`]), sparsity reports, channel groups with their importance and
//! selection for structured pruning ([`group`]), and the
//! `torch.nn.utils.prune` API ([`torch_prune`]).
//!
//! Conventions: a mask is an `f32` tensor of the weight's shape with 1 = kept,
//! 0 = pruned; selection at sparsity `s` over `n` weights prunes exactly
//! `round(s·n)` of them, the lowest-scored, ties broken by tensor name then
//! flat index. Everything iterates over parameters in name order.
//!
//! candle-core is the one heavy dependency; `serde` support is the optional
//! feature `serde`.

#![warn(missing_docs)]

mod error;
mod filter;
pub mod group;
pub mod importance;
mod mask;
pub mod report;
pub mod rng;
pub mod schedule;
pub mod select;
pub mod torch_prune;

use std::collections::BTreeMap;

use candle_core::Tensor;

pub use error::{PruneError, Result};
pub use filter::{glob_match, ParamFilter};
pub use importance::{GradientSource, Importance, Loss, Needs, ScoringContext};
pub use mask::MaskSet;
pub use report::{sparsity_report, LayerSparsity, SparsityReport};
pub use schedule::{GmpSchedule, Learner, Outcome, Stage, StepPruner};
pub use select::{check_sparsity, Scope};

/// Importance scores: parameter name → `f32` tensor of the weight's shape
/// (higher = more important).
pub type Scores = BTreeMap<String, Tensor>;

/// Tensors keyed by parameter name, iterated in name order.
pub type NamedTensors = BTreeMap<String, Tensor>;
