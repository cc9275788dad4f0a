//! The composition layer of kdprune: kd-core's training, prune-core's
//! criteria and drivers, the models and the datasets put together into the
//! method and the jobs the `kdprune` binary runs — callable from Rust, so
//! that benchmarks and other programs run exactly what the command line runs.
//!
//! - [`method`] — the paper's method end to end ([`method::run_method`]) with
//!   its configuration ([`method::RunConfig`]) and report;
//! - [`sweep`] — methods × sparsities × seeds through prune-core's drivers,
//!   resumable, with its results table and plots ([`sweep::run_sweep`]);
//! - [`scoring`] — one scoring entry point for every criterion
//!   ([`scoring::prune_masks`], [`scoring::scores`]) over
//!   [`scoring::ModelScoring`], kdprune's [`prune_core::ScoringContext`];
//! - [`jobs`] — train, distill, prune, retrain, evaluate, verify, the zoo;
//! - [`text`], [`encoder_distill`], [`encoder_prune`], [`lm`] — sentence
//!   encoders (embeddings, retrieval, distillation, head/neuron/layer
//!   pruning) and token-level distillation of causal language models;
//! - [`summary`] — mean ± std, per-seed values and paired differences of
//!   run reports, distillation reports and sweeps ([`stats`] computes and
//!   prints them);
//! - [`settings`], [`data`], [`checkpoints`], [`training`] — the shared
//!   settings, datasets as kd-core samples, checkpoints with metadata, the
//!   hooks and progress bars of training;
//! - [`runtime`], [`device`], [`files`] — process tuning, device names,
//!   atomic writes.
//!
//! ```no_run
//! use kdprune_cli::method::{run_method, RunConfig};
//!
//! let report = run_method(&RunConfig::default(), &candle_core::Device::Cpu, false)?;
//! println!("{}", report.table());
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod checkpoints;
pub mod claim;
pub mod compare;
pub mod compress;
pub mod darts;
pub mod data;
pub mod device;
pub mod encoder_distill;
pub mod encoder_prune;
pub mod files;
pub mod hub;
pub mod infer;
pub mod jobs;
pub mod lm;
pub mod method;
pub mod publish;
pub mod resume;
pub mod runtime;
pub mod scoring;
pub mod settings;
pub mod stats;
pub mod summary;
pub mod sweep;
pub mod text;
pub mod training;
