//! `kdprune`: teacher-guided one-shot pruning and knowledge distillation.
//!
//! The binary parses arguments, makes one call into the `kdprune_cli`
//! library per command and prints what it returns.

mod commands;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

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
    Retrain(commands::train::RetrainArgs),
    /// Train a fresh student under a frozen teacher with logit and feature
    /// losses (kd, ca-kld, dkd, fitnet, at, rkd, weighted sums of them).
    Distill(commands::train::DistillArgs),
    /// Test accuracy of a checkpoint.
    Eval(commands::inspect::EvalArgs),
    /// Per-layer sparsity of a checkpoint; fails if a masked weight is not 0.
    Verify(commands::inspect::VerifyArgs),
    /// Models side by side: parameters, non-zeros, file size, test accuracy,
    /// latency at batch 1 and 64, and each against the first.
    Compare(commands::compare::CompareArgs),
    /// The whole pipeline: teacher, distilled student, one-shot pruning,
    /// retraining under the mask, sparse and INT8 exports, and the comparison
    /// (`--config compress.toml`; resumable).
    Compress(commands::compress::CompressArgs),
    /// Write a checkpoint as dense safetensors for PyTorch or as
    /// compressed-tensors' sparse-bitmask (size ∝ non-zeros).
    Export(commands::export::ExportArgs),
    /// Publish a run folder or a checkpoint, with a model card, to a Hugging
    /// Face Hub model repository in one commit (HF_TOKEN, HF_ENDPOINT).
    Publish(commands::publish::PublishArgs),
    /// Predictions of an MLP or LeNet-5 checkpoint for IDX or PNG images, on
    /// the inference runtime (each layer dense or sparse by its density), as JSON.
    Infer(commands::infer::InferArgs),
    /// Sentence embeddings of a BERT folder (Hugging Face layout), as JSON lines.
    Embed(commands::text::EmbedArgs),
    /// The WordNet gloss retrieval task: accuracy@1 and MRR of a BERT folder.
    EvalRetrieval(commands::text::EvalRetrievalArgs),
    /// Distil a sentence encoder into a smaller one (a layer subset or a
    /// given folder) on the WordNet glosses text.
    DistillEncoder(commands::text::DistillEncoderArgs),
    /// Remove attention heads, feed-forward neurons and layers of a sentence
    /// encoder by importance (magnitude, michel, teacher-guided).
    PruneEncoder(commands::text::PruneEncoderArgs),
    /// Train a small causal (or, with --masked, masked) language model on the
    /// WordNet text: a teacher from scratch, or a student under a teacher with
    /// token-level KD (DistilBERT's triple loss when masked).
    TrainLm(commands::text::TrainLmArgs),
    /// Perplexity of a causal or masked language model on a split of the WordNet text.
    EvalLm(commands::text::EvalLmArgs),
    /// The model zoo with parameter and MAC counts.
    Models(commands::inspect::ModelsArgs),
    /// Mean ± std over seeds of run reports, distillation reports or sweeps
    /// as Markdown tables, with per-seed values and paired differences.
    Summarize(commands::inspect::SummarizeArgs),
    /// Pruning methods × sparsities × seeds (one-shot criteria, GMP, IMP,
    /// COLT), resumable, with a table, a CSV/JSON and a plot.
    Sweep(commands::run::SweepArgs),
    /// Architecture search: `search darts` (a DARTS cell searched, then its
    /// network trained from scratch).
    Search(commands::search::SearchArgs),
}

fn main() -> ExitCode {
    kdprune_cli::runtime::tune_process();
    // Negative numbers are values (`--sparsity -0.1` is then refused by its
    // range check, not taken for a flag).
    let matches = Cli::command()
        .mut_subcommands(|c| c.allow_negative_numbers(true))
        .get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let device = match kdprune_cli::device::parse_device(&cli.device) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut command = cli.command;
    if offline_flag(&command) {
        // read by every Hub access of the process (datasets and `hub:`
        // checkpoints); no other thread runs yet
        std::env::set_var("HF_HUB_OFFLINE", "1");
    }
    if let Err(e) = resolve_hub_references(&mut command) {
        eprintln!("error: {}", kdprune_cli::files::error_text(&e));
        return ExitCode::FAILURE;
    }
    let result = match command {
        Command::Publish(a) => commands::publish::publish(a, &device),
        Command::Run(a) => commands::run::run(a, &device),
        Command::Sweep(a) => commands::run::sweep(a, &device),
        Command::Search(a) => commands::search::search(a, &device),
        Command::Train(a) => commands::train::train(a, &device),
        Command::Retrain(a) => commands::train::retrain(a, &device),
        Command::Distill(a) => commands::train::distill(a, &device),
        Command::Prune(a) => commands::prune::run(a, &device),
        Command::Eval(a) => commands::inspect::eval(a, &device),
        Command::Embed(a) => commands::text::embed(a, &device),
        Command::EvalRetrieval(a) => commands::text::eval_retrieval(a, &device),
        Command::DistillEncoder(a) => commands::text::distill_encoder(a, &device),
        Command::PruneEncoder(a) => commands::text::prune_encoder(a, &device),
        Command::TrainLm(a) => commands::text::train_lm(a, &device),
        Command::EvalLm(a) => commands::text::eval_lm(a, &device),
        Command::Verify(a) => commands::inspect::verify(a, &device),
        Command::Compare(a) => commands::compare::compare(a),
        Command::Compress(a) => commands::compress::compress(a, &device),
        Command::Export(a) => commands::export::export(a, &device),
        Command::Infer(a) => commands::infer::infer(a),
        Command::Models(a) => commands::inspect::models(a),
        Command::Summarize(a) => commands::inspect::summarize(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", kdprune_cli::files::error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// Whether the command was given `--offline`.
fn offline_flag(command: &Command) -> bool {
    match command {
        Command::Run(a) => a.hub.offline,
        Command::Train(a) => a.data.hub.offline,
        Command::Retrain(a) => a.data.hub.offline,
        Command::Distill(a) => a.data.hub.offline,
        Command::Prune(a) => a.data.hub.offline,
        Command::Eval(a) => a.data.hub.offline,
        Command::Export(a) => a.data.hub.offline,
        Command::Compare(a) => a.data.hub.offline,
        _ => false,
    }
}

/// Replaces every `hub:OWNER/NAME[@REV][/FILE]` checkpoint argument by the
/// file's path in the hf-hub cache, fetching it first (see
/// `kdprune_cli::hub`).
fn resolve_hub_references(command: &mut Command) -> anyhow::Result<()> {
    use kdprune_cli::hub::resolve_checkpoint as r;
    fn opt(p: &mut Option<std::path::PathBuf>) -> anyhow::Result<()> {
        if let Some(path) = p {
            *path = r(path)?;
        }
        Ok(())
    }
    match command {
        Command::Run(a) => {
            opt(&mut a.teacher)?;
            opt(&mut a.student)?;
        }
        Command::Train(a) => {
            opt(&mut a.teacher)?;
            opt(&mut a.init)?;
        }
        Command::Retrain(a) => {
            a.checkpoint = r(&a.checkpoint)?;
            opt(&mut a.teacher)?;
        }
        Command::Distill(a) => opt(&mut a.teacher)?,
        Command::Prune(a) => {
            a.checkpoint = r(&a.checkpoint)?;
            opt(&mut a.teacher)?;
        }
        Command::Eval(a) => a.checkpoint = r(&a.checkpoint)?,
        Command::Verify(a) => a.checkpoint = r(&a.checkpoint)?,
        Command::Export(a) => a.checkpoint = r(&a.checkpoint)?,
        Command::Infer(a) => a.checkpoint = r(&a.checkpoint)?,
        Command::Compare(a) => {
            for c in &mut a.checkpoints {
                *c = r(c)?;
            }
        }
        _ => {}
    }
    Ok(())
}
