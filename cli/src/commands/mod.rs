//! One file per subcommand.

pub mod args;
pub mod distill;
pub mod eval;
pub mod models;
pub mod prune;
pub mod retrain;
pub mod run;
pub mod summarize;
pub mod train;
pub mod verify;
