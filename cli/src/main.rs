//! `kdprune`: teacher-guided one-shot pruning and knowledge distillation.

mod commands;
mod common;
mod config;
mod report;
mod sweep;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Knowledge distillation and pruning on Candle.
#[derive(Parser)]
#[command(name = "kdprune", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Where tensors live: cpu, cuda, cuda:N, metal (cuda and metal need a
    /// build with `--features cuda` or `--features metal`).
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
}

#[derive(Subcommand)]
enum Command {
    /// The whole method end to end: teacher, dense student, KD fine-tuning,
    /// teacher-guided scoring, one-shot pruning, retraining with and without KD,
    /// and a global-magnitude baseline, with a report.
    Run(commands::run::RunArgs),
    /// Train a model (from scratch, or under a teacher with a KD loss).
    Train(commands::train::TrainArgs),
    /// Score and prune a checkpoint to a target sparsity in one shot.
    Prune(commands::prune::PruneArgs),
    /// Retrain a pruned checkpoint under its fixed mask.
    Retrain(commands::retrain::RetrainArgs),
    /// Train a fresh student under a frozen teacher with logit and feature
    /// losses (kd, ca-kld, dkd, fitnet, at, rkd, weighted sums of them).
    Distill(commands::distill::DistillArgs),
    /// Test accuracy of a checkpoint.
    Eval(commands::eval::EvalArgs),
    /// Per-layer sparsity of a checkpoint; fails if a masked weight is not 0.
    Verify(commands::verify::VerifyArgs),
    /// The model zoo with parameter and MAC counts.
    Models(commands::models::ModelsArgs),
    /// Mean ± std over seeds of several run reports, as a Markdown table.
    Summarize(commands::summarize::SummarizeArgs),
    /// Pruning methods × sparsities × seeds (one-shot criteria, GMP, IMP,
    /// COLT), resumable, with a table, a CSV/JSON and a plot.
    Sweep(sweep::SweepArgs),
}

fn main() -> ExitCode {
    kdprune_models::runtime::tune_process();
    let cli = Cli::parse();
    if let Err(e) = common::select_device(&cli.device) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Run(a) => commands::run::run(a),
        Command::Train(a) => commands::train::run(a),
        Command::Prune(a) => commands::prune::run(a),
        Command::Retrain(a) => commands::retrain::run(a),
        Command::Distill(a) => commands::distill::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Verify(a) => commands::verify::run(a),
        Command::Summarize(a) => commands::summarize::run(a),
        Command::Sweep(a) => sweep::sweep(a),
        Command::Models(a) => commands::models::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
