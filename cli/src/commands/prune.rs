//! `kdprune prune`: score a checkpoint and prune it in one shot.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;
use kd_core::SelfDistillConfig;
use kdprune_cli::jobs::{self, PruneJob};
use prune_core::importance::{self, SynFlow};
use prune_core::{Importance, Scope};

use super::args::{DataArgs, LossArgs};

/// Flags of `kdprune prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Checkpoint to prune (weights its masks prune stay pruned).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Criterion; every one keeps the highest-scored weights and prunes the
    /// lowest: teacher-guided |θ·∂L/∂θ| (L = --loss under --teacher, and
    /// ca-kld when --loss is left at ce, which would make the score SNIP's;
    /// teacher-guided:kd and teacher-guided:ce for one term only), snip
    /// |θ·∂CE/∂θ|, self-distill |θ·∂L_SD/∂θ| (EPSD: α·T²·KL to the model's own
    /// detached predictions on a shifted or crop-flipped view, plus (1−α)·CE;
    /// --sd-temperature, --sd-alpha), grasp θ·H·g (H·g by finite differences of the
    /// CE gradient g over the scoring batches; the weights with the highest
    /// paper score −θ·H·g are removed), synflow (data-free, --synflow-rounds
    /// rounds on an all-ones input, global scope only), magnitude |θ|, lamp,
    /// random.
    #[arg(long, default_value = "teacher-guided")]
    pub criterion: String,
    /// Target sparsity in [0, 1): exactly round(s·n) of the n prunable
    /// weights end up pruned.
    #[arg(long, default_value_t = 0.9)]
    pub sparsity: f64,
    /// Selection scope: global (one threshold, the paper's) or layer (the
    /// same sparsity in every layer).
    #[arg(long, default_value = "global", value_parser = parse_scope)]
    pub scope: Scope,
    /// Teacher checkpoint (teacher-guided).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Batches over which gradient scores are accumulated (teacher-guided,
    /// snip, self-distill, grasp).
    #[arg(long, default_value_t = 8)]
    pub score_batches: usize,
    /// Temperature T of the self-distill criterion.
    #[arg(long, default_value_t = SelfDistillConfig::default().temperature)]
    pub sd_temperature: f64,
    /// Weight α of the KL term of the self-distill criterion:
    /// L_SD = α·T²·KL + (1−α)·CE (the default 0.5 is EPSD's DLB recipe, CE + T²·KL).
    #[arg(long, default_value_t = SelfDistillConfig::default().alpha)]
    pub sd_alpha: f64,
    /// Pruning rounds of synflow (exponential schedule to --sparsity).
    #[arg(long, default_value_t = importance::DEFAULT_SYNFLOW_ROUNDS)]
    pub synflow_rounds: usize,
    /// Mini-batch size of scoring.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Keep the first layer dense.
    #[arg(long)]
    pub keep_first: bool,
    /// Keep the last layer dense.
    #[arg(long)]
    pub keep_last: bool,
    #[command(flatten)]
    pub data: DataArgs,
    /// Loss whose gradient the teacher-guided score uses.
    #[command(flatten)]
    pub loss: LossArgs,
    /// Output checkpoint with masks (with --structured: the smaller model).
    #[arg(long)]
    pub out: PathBuf,
    /// Structured pruning: `channels` removes whole channels of the groups
    /// the network declares (CIFAR ResNets: each block's inner channels and
    /// the residual streams; VGG-BN: every convolution's outputs), leaving
    /// a smaller dense model; --criterion is then a group criterion (l1,
    /// l2, fpgm, bn-scale, taylor, teacher-guided) and --ratio the fraction
    /// of channels removed (--scope global: one threshold over all groups;
    /// layer: the ratio in each group). `blocks` removes whole residual
    /// blocks (those with an identity shortcut), the --ratio of them with
    /// the lowest mean |g·w| (g of cross-entropy, or of the distillation
    /// objective with --teacher).
    #[arg(long, value_parser = ["channels", "blocks"])]
    pub structured: Option<String>,
    /// With --structured: fraction of the channels (blocks) to remove, in [0, 1).
    #[arg(long, default_value_t = 0.5)]
    pub ratio: f64,
    /// With --structured: the most any group may lose, in [0, 1).
    #[arg(long, default_value_t = 0.95)]
    pub max_ratio: f64,
    /// With --structured: kept channel counts rounded up to a multiple of this.
    #[arg(long, default_value_t = 1)]
    pub round_to: usize,
    /// With --structured: channel groups left whole (comma-separated names,
    /// e.g. layer1.0.conv1).
    #[arg(long, value_delimiter = ',')]
    pub ignore: Vec<String>,
    /// With --structured and --scope layer: per-group ratios replacing
    /// --ratio for the groups named (comma-separated NAME=RATIO, e.g.
    /// layer1.0.conv1=0.25,layer3.2.conv1=0.75).
    #[arg(long, value_delimiter = ',', value_parser = parse_layer_ratio, conflicts_with = "target_macs")]
    pub layer_ratio: Vec<(String, f64)>,
    /// With --structured: instead of --ratio, prune in rounds of --step,
    /// rescoring the smaller model each round, until the MACs fall to this
    /// fraction of the network's (e.g. 0.5).
    #[arg(long)]
    pub target_macs: Option<f64>,
    /// With --target-macs: the fraction of the channels left that each
    /// round removes.
    #[arg(long, default_value_t = 0.1)]
    pub step: f64,
}

/// `NAME=RATIO`, e.g. `layer1.0.conv1=0.25`.
fn parse_layer_ratio(s: &str) -> Result<(String, f64), String> {
    let (name, ratio) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected NAME=RATIO, e.g. layer1.0.conv1=0.25"))?;
    let ratio: f64 = ratio
        .parse()
        .map_err(|_| format!("`{s}`: the ratio `{ratio}` is not a number"))?;
    Ok((name.to_string(), ratio))
}

/// `global`, `layer` (or `per-layer`).
fn parse_scope(s: &str) -> Result<Scope, String> {
    match s {
        "layer" => Ok(Scope::PerLayer),
        other => other
            .parse()
            .map_err(|e: prune_core::PruneError| e.to_string()),
    }
}

/// Scores, selects, applies and saves.
pub fn run(a: PruneArgs, device: &Device) -> Result<()> {
    if a.structured.is_some() {
        return run_structured(a, device);
    }
    let criterion: Box<dyn Importance> = match a.criterion.as_str() {
        "synflow" => Box::new(SynFlow {
            rounds: a.synflow_rounds,
        }),
        name => importance::by_name(name)?,
    };
    anyhow::ensure!(
        criterion.name() != "synflow" || a.scope == Scope::Global,
        "synflow prunes by one global threshold per round; --scope layer is not supported with it"
    );
    // `--loss ce` with the teacher-guided criterion would silently be SNIP.
    let loss = if criterion.needs().teacher && a.loss.loss == "ce" {
        a.loss.config(Some("ca-kld"))?
    } else {
        a.loss.config(None)?
    };
    let self_distill = SelfDistillConfig {
        temperature: a.sd_temperature,
        alpha: a.sd_alpha,
    };
    self_distill.validate()?;
    let job = PruneJob {
        checkpoint: a.checkpoint,
        criterion,
        sparsity: a.sparsity,
        scope: a.scope,
        teacher: a.teacher,
        score_batches: a.score_batches,
        batch_size: a.batch_size,
        kd_loss: loss,
        self_distill,
        keep_first: a.keep_first,
        keep_last: a.keep_last,
        data: a.data.spec(),
        out: a.out,
    };
    let outcome = jobs::prune_checkpoint(&job, device)?;
    println!("{}", outcome.report.table());
    println!("test accuracy: {:.4}", outcome.accuracy);
    println!("saved {}", outcome.out.display());
    Ok(())
}

/// `--structured channels`: scores the channel groups, removes channels,
/// saves the smaller model and prints the widths before and after.
fn run_structured(a: PruneArgs, device: &Device) -> Result<()> {
    use prune_core::group::{GroupCriterion, GroupRatios};
    if a.structured.as_deref() == Some("blocks") {
        return run_blocks(a, device);
    }
    let criterion: GroupCriterion = a.criterion.parse().map_err(|_| {
        anyhow::anyhow!(
            "--criterion {} is not a group criterion (with --structured: {})",
            a.criterion,
            GroupCriterion::ALL.map(|(n, _)| n).join(", ")
        )
    })?;
    let job = jobs::StructuredPruneJob {
        checkpoint: a.checkpoint,
        criterion,
        ratios: GroupRatios {
            ratio: a.ratio,
            global: a.scope == Scope::Global,
            max_ratio: a.max_ratio,
            ignore: a.ignore,
            round_to: a.round_to,
            per_group: a.layer_ratio.into_iter().collect(),
        },
        target_macs: a.target_macs,
        step: a.step,
        teacher: a.teacher,
        score_batches: a.score_batches,
        batch_size: a.batch_size,
        // `--loss ce` would make the teacher-guided score SNIP's
        kd_loss: a.loss.config((a.loss.loss == "ce").then_some("ca-kld"))?,
        data: a.data.spec(),
        out: a.out,
    };
    let o = jobs::prune_structured(&job, device)?;
    println!("| group | channels | kept |");
    println!("|---|---|---|");
    for (name, before, after) in &o.widths {
        println!("| {name} | {before} | {after} |");
    }
    println!(
        "parameters: {} → {} ({:.3}×); MACs per sample: {} → {} ({:.2}× fewer)",
        o.params.0,
        o.params.1,
        o.params.1 as f64 / o.params.0.max(1) as f64,
        o.macs.0,
        o.macs.1,
        o.macs.0 as f64 / o.macs.1.max(1) as f64
    );
    if o.rounds > 1 {
        println!("rounds of scoring and removal: {}", o.rounds);
    }
    println!("test accuracy: {:.4}", o.accuracy);
    println!("saved {}", o.out.display());
    Ok(())
}

fn run_blocks(a: PruneArgs, device: &Device) -> Result<()> {
    let job = jobs::BlockPruneJob {
        checkpoint: a.checkpoint,
        ratio: a.ratio,
        teacher: a.teacher,
        score_batches: a.score_batches,
        batch_size: a.batch_size,
        kd_loss: a.loss.config((a.loss.loss == "ce").then_some("ca-kld"))?,
        data: a.data.spec(),
        out: a.out,
    };
    let o = jobs::prune_blocks(&job, device)?;
    println!("| block | importance (mean abs g·w) | removed |");
    println!("|---|---|---|");
    for (name, score) in &o.scores {
        let gone = if o.removed.contains(name) { "yes" } else { "" };
        println!("| {name} | {score:.3e} | {gone} |");
    }
    println!(
        "parameters: {} → {} ({:.3}×); MACs per sample: {} → {} ({:.2}× fewer)",
        o.params.0,
        o.params.1,
        o.params.1 as f64 / o.params.0.max(1) as f64,
        o.macs.0,
        o.macs.1,
        o.macs.0 as f64 / o.macs.1.max(1) as f64
    );
    println!("test accuracy: {:.4}", o.accuracy);
    println!("saved {}", o.out.display());
    Ok(())
}
