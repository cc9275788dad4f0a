//! The arguments of each subcommand and the one library call each makes.

pub mod args;
pub mod compare;
pub mod compress;
pub mod export;
pub mod infer;
pub mod inspect;
pub mod prune;
pub mod publish;
pub mod run;
pub mod search;
pub mod text;
pub mod train;
