//! One file per subcommand.

pub mod args;
pub mod eval;
pub mod prune;
pub mod retrain;
pub mod run;
pub mod summarize;
pub mod train;
pub mod verify;
