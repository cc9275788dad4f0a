//! Pruning schedules and the small mask/weight operations of iterative
//! pruning, as pure functions of steps, sparsities, named tensors and masks:
//!
//! - [`GmpSchedule`]: Zhu & Gupta's cubic gradual magnitude pruning schedule;
//! - [`imp_sparsities`]: the cumulative sparsities of iterative magnitude
//!   pruning (IMP, lottery tickets) at a fixed rate per round;
//! - [`colt_round`]: one round of COLT (cyclic overlapping lottery tickets):
//!   prune each copy by global magnitude, intersect the masks;
//! - [`rewind`]: reset weights to stored values under a mask (lottery-ticket
//!   weight rewinding).

mod colt;
mod gmp;
mod imp;
mod rewind;

pub use colt::colt_round;
pub use gmp::GmpSchedule;
pub use imp::{imp_sparsities, MAX_IMP_ROUNDS};
pub use rewind::rewind;
