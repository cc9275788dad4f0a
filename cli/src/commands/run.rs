//! `kdprune run` (the paper's method end to end, with a report) and
//! `kdprune sweep` (methods × sparsities × seeds).

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;
use kdprune_cli::data::AugmentChoice;
use kdprune_cli::method::{run_method_with, RunConfig, RunOptions};
use kdprune_cli::sweep::{run_sweep, sweep_report, SweepConfig};

use super::args::HubArgs;

/// Flags of `kdprune run`; each overrides the config file, which overrides the defaults.
#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// TOML file with any of the keys below (snake_case); flags win over it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Dataset: digits (built in), fashion-mnist, mnist, cifar10, cifar100,
    /// tiny-imagenet [default: digits].
    #[arg(long)]
    pub dataset: Option<String>,
    /// Folder with the dataset's files.
    #[arg(long, conflicts_with = "hub")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub hub: HubArgs,
    /// Training-set augmentation: auto, none, crop-flip [default: auto].
    #[arg(long, value_enum)]
    pub augment: Option<AugmentChoice>,
    /// Seed [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Target sparsity in [0, 1) [default: 0.9].
    #[arg(long)]
    pub sparsity: Option<f64>,
    /// Teacher architecture [default: mlp-1200-1200].
    #[arg(long)]
    pub teacher_model: Option<String>,
    /// Student architecture [default: lenet-300-100].
    #[arg(long)]
    pub student_model: Option<String>,
    /// Teacher epochs [default: 15].
    #[arg(long)]
    pub teacher_epochs: Option<usize>,
    /// Dense student epochs [default: 15].
    #[arg(long)]
    pub student_epochs: Option<usize>,
    /// KD fine-tuning epochs [default: 5].
    #[arg(long)]
    pub kd_epochs: Option<usize>,
    /// Retraining epochs under the mask [default: 10].
    #[arg(long)]
    pub retrain_epochs: Option<usize>,
    /// Mini-batch size [default: 64].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Learning rate from scratch [default: 0.05].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Learning rate of fine-tuning and retraining [default: 0.01].
    #[arg(long)]
    pub finetune_lr: Option<f64>,
    /// Distillation loss: ca-kld or kd [default: ca-kld].
    #[arg(long)]
    pub kd_loss: Option<String>,
    /// Temperature T [default: 4].
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Weight α of the distillation term, L = α·KD + (1−α)·CE [default: 0.9].
    #[arg(long)]
    pub alpha: Option<f64>,
    /// CA-KLD β: confidence, raw-confidence or a number in [0, 1]
    /// [default: confidence].
    #[arg(long)]
    pub beta: Option<String>,
    /// CA-KLD's logit standardisation: population or sample standard
    /// deviation [default: population].
    #[arg(long)]
    pub logit_std: Option<String>,
    /// Batches of teacher-guided scoring [default: 8].
    #[arg(long)]
    pub score_batches: Option<usize>,
    /// Keep the first layer dense.
    #[arg(long)]
    pub keep_first: bool,
    /// Keep the last layer dense.
    #[arg(long)]
    pub keep_last: bool,
    /// Output folder [default: runs/<dataset>-s<sparsity>-seed<seed>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Reuse this trained teacher instead of training one.
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Reuse this trained dense student instead of training one.
    #[arg(long)]
    pub student: Option<PathBuf>,
    /// No progress bars or per-epoch lines.
    #[arg(long, short)]
    pub quiet: bool,
    /// Start over in a run folder that holds a run of other settings (its
    /// checkpoints, config and report are removed first). Without it such a
    /// folder is refused, and one of the same settings is continued.
    #[arg(long)]
    pub force: bool,
    /// Inside a stage, also save its resume point every this many optimizer
    /// steps (long epochs); by default at the end of every epoch only.
    #[arg(long, value_parser = super::args::at_least_one)]
    pub save_every: Option<usize>,
}

impl RunArgs {
    /// Defaults ← config file ← flags.
    pub fn resolve(&self) -> Result<RunConfig> {
        let mut c = match &self.config {
            Some(p) => RunConfig::from_toml_file(p)?,
            None => RunConfig::default(),
        };
        macro_rules! over {
            ($($f:ident),*) => { $( if let Some(v) = &self.$f { c.settings.$f = v.clone(); } )* };
        }
        if let Some(v) = self.seed {
            c.seed = v;
        }
        if let Some(v) = self.sparsity {
            c.sparsity = v;
        }
        over!(
            dataset,
            teacher_model,
            student_model,
            teacher_epochs,
            student_epochs,
            kd_epochs,
            retrain_epochs,
            batch_size,
            lr,
            finetune_lr,
            kd_loss,
            temperature,
            alpha,
            beta,
            logit_std,
            score_batches,
            augment
        );
        let s = &mut c.settings;
        if self.data_dir.is_some() {
            s.data_dir = self.data_dir.clone();
            s.hub = false;
        }
        if self.hub.hub {
            s.hub = true;
            s.data_dir = None;
        }
        if self.hub.hub_cache.is_some() {
            s.hub_cache = self.hub.hub_cache.clone();
        }
        if self.hub.hub_revision.is_some() {
            s.hub_revision = self.hub.hub_revision.clone();
        }
        s.offline |= self.hub.offline;
        s.keep_first |= self.keep_first;
        s.keep_last |= self.keep_last;
        if self.out.is_some() {
            c.out = self.out.clone();
        }
        if self.teacher.is_some() {
            c.teacher_checkpoint = self.teacher.clone();
        }
        if self.student.is_some() {
            c.student_checkpoint = self.student.clone();
        }
        c.validate()?;
        Ok(c)
    }
}

/// Runs the seven stages and prints the report's table.
pub fn run(args: RunArgs, device: &Device) -> Result<()> {
    let cfg = args.resolve()?;
    let options = RunOptions {
        verbose: !args.quiet,
        force: args.force,
        save_every: args.save_every,
    };
    let report = run_method_with(&cfg, device, &options)?;
    println!("{}", report.table());
    println!("report: {}", cfg.out_dir().join("report.md").display());
    Ok(())
}

/// Flags of `kdprune sweep`.
#[derive(Args, Debug)]
pub struct SweepArgs {
    /// TOML file with the sweep's settings (every key optional; see the README).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output folder [default: the config's `out`, else runs/sweep].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write the tables, CSV/JSON and plots from the finished cells and
    /// compute nothing (after several workers filled the folder).
    #[arg(long)]
    pub report_only: bool,
    /// No progress bars or per-epoch lines.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Runs the sweep (or what is left of it) and says where its results are.
pub fn sweep(args: SweepArgs, device: &Device) -> Result<()> {
    let mut cfg = match &args.config {
        Some(p) => SweepConfig::from_toml_file(p)?,
        None => SweepConfig::default(),
    };
    if let Some(out) = &args.out {
        cfg.out = out.clone();
    }
    let command = match &args.config {
        Some(p) => format!(
            "kdprune sweep --config {} --out {}",
            p.display(),
            cfg.out.display()
        ),
        None => format!("kdprune sweep --out {}", cfg.out.display()),
    };
    let cells = if args.report_only {
        sweep_report(&cfg, &command)?
    } else {
        run_sweep(&cfg, &command, device, !args.quiet)?
    };
    println!(
        "{} cells; results in {}",
        cells.len(),
        cfg.out.join("table.md").display()
    );
    Ok(())
}
