//! `kdprune embed` and `kdprune eval-retrieval`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;
use kdprune_cli::files::write_atomic;
use kdprune_cli::text::{eval_retrieval as run_retrieval, text_bar, SentenceEncoder};
use kdprune_data::text::GlossSplit;

/// Flags of `kdprune embed`.
#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// A BERT folder in the Hugging Face layout (`config.json`,
    /// `model.safetensors`, `tokenizer.json`), such as a sentence-transformers model.
    #[arg(long)]
    pub model: PathBuf,
    /// Texts to embed (repeatable).
    #[arg(long, conflicts_with = "file")]
    pub text: Vec<String>,
    /// A file with one text per line (empty lines skipped).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Longest input in tokens (default: the folder's `sentence_bert_config.json`, else 256).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Write the JSON lines here (atomically) instead of to standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Prints one JSON object per text: `{"text": …, "embedding": […]}`.
pub fn embed(a: EmbedArgs, device: &Device) -> Result<()> {
    let texts: Vec<String> = match &a.file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        None => a.text.clone(),
    };
    if texts.is_empty() {
        bail!("nothing to embed: give --text TEXT or --file FILE");
    }
    let encoder = SentenceEncoder::load(&a.model, a.max_length, device)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let bar = text_bar(refs.len(), "embedding");
    let (embeddings, truncated) = encoder.embed_counted(&refs, a.batch_size, Some(&bar))?;
    bar.finish_and_clear();
    if truncated > 0 {
        eprintln!(
            "warning: {truncated} text(s) longer than {} tokens were truncated (--max-length)",
            encoder.tokenizer.max_length()
        );
    }
    let mut lines = String::new();
    for (text, e) in texts.iter().zip(&embeddings) {
        let line = serde_json::json!({ "text": text, "embedding": e });
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    match &a.out {
        Some(path) => {
            write_atomic(path, lines)?;
            eprintln!("wrote {} embeddings to {}", texts.len(), path.display());
        }
        None => std::io::stdout()
            .lock()
            .write_all(lines.as_bytes())
            .context("cannot write to standard output")?,
    }
    Ok(())
}

/// Flags of `kdprune eval-retrieval`.
#[derive(Args, Debug)]
pub struct EvalRetrievalArgs {
    /// A BERT folder in the Hugging Face layout (see `kdprune embed`).
    #[arg(long)]
    pub model: PathBuf,
    /// The split whose examples and glosses are used: train, dev or test.
    #[arg(long, default_value = "test")]
    pub split: GlossSplitArg,
    /// The WordNet glosses folder (`train.tsv.gz`, `dev.tsv.gz`, `test.tsv.gz`).
    #[arg(long, default_value = "../shared/datasets/wordnet-glosses")]
    pub data_dir: PathBuf,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Longest input in tokens (default: the folder's `sentence_bert_config.json`, else 256).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Also write the report as JSON here (atomically).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// A split name parsed by clap.
#[derive(Debug, Clone, Copy)]
pub struct GlossSplitArg(pub GlossSplit);

impl std::str::FromStr for GlossSplitArg {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        s.parse()
            .map(Self)
            .map_err(|e: kdprune_data::DataError| e.to_string())
    }
}

/// Every example sentence of the split against every gloss: accuracy@1 and MRR.
pub fn eval_retrieval(a: EvalRetrievalArgs, device: &Device) -> Result<()> {
    if !a.data_dir.is_dir() {
        bail!(
            "no WordNet glosses folder at {} (pass --data-dir DIR holding train.tsv.gz, dev.tsv.gz, test.tsv.gz)",
            a.data_dir.display()
        );
    }
    let encoder = SentenceEncoder::load(&a.model, a.max_length, device)?;
    let report = run_retrieval(
        &encoder,
        &a.model,
        &a.data_dir,
        a.split.0,
        a.batch_size,
        true,
    )?;
    println!("{}", report.table());
    eprintln!(
        "{} queries against {} glosses in {:.1} s",
        report.queries, report.candidates, report.seconds
    );
    if let Some(path) = &a.json {
        let json = serde_json::to_string_pretty(&report).context("cannot serialise the report")?;
        write_atomic(path, json + "\n")?;
    }
    Ok(())
}

/// Flags of `kdprune distill-encoder`.
#[derive(Args, Debug)]
pub struct DistillEncoderArgs {
    /// The teacher folder (Hugging Face layout with `tokenizer.json`).
    #[arg(long)]
    pub teacher: PathBuf,
    /// The student folder (e.g. a head/neuron-pruned teacher); without it,
    /// the student is the teacher's `--layers`.
    #[arg(long, conflicts_with = "layers")]
    pub student: Option<PathBuf>,
    /// The teacher's layers the student starts from, e.g. `0,2,4`
    /// (DistilBERT's every other layer).
    #[arg(long, value_delimiter = ',', default_value = "0,2,4")]
    pub layers: Vec<usize>,
    /// ALBERT's cross-layer sharing: the student runs the first of
    /// `--layers` as many times as `--layers` lists, with one set of weights.
    #[arg(long, conflicts_with = "student")]
    pub shared: bool,
    /// The WordNet glosses folder.
    #[arg(long, default_value = "../shared/datasets/wordnet-glosses")]
    pub data_dir: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Peak learning rate of AdamW (cosine schedule, 5 % warm-up).
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Longest training input in tokens.
    #[arg(long, default_value_t = 128)]
    pub max_length: usize,
    /// Weight of the cosine term (1 − cos of the normalised embeddings).
    #[arg(long, default_value_t = 1.0)]
    pub cosine: f64,
    /// Weight of the MSE between the mean-pooled embeddings.
    #[arg(long, default_value_t = 1.0)]
    pub mse: f64,
    /// Weight of the hidden-state transfer (MSE of each student layer's
    /// output to its teacher layer's; runs the teacher on every batch).
    #[arg(long, default_value_t = 0.0)]
    pub hidden: f64,
    /// Weight of the attention-map transfer (MSE of attention probabilities,
    /// head-averaged when the head counts differ).
    #[arg(long, default_value_t = 0.0)]
    pub attention: f64,
    /// Train on the texts of the first training synsets only, N texts (0: all
    /// 65,872 glosses and examples).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The student folder to write (must not exist, or be empty).
    #[arg(long)]
    pub out: PathBuf,
}

/// Distils the teacher's sentence embeddings into the student; prints the
/// teacher's, the untrained student's and the distilled student's test retrieval.
pub fn distill_encoder(a: DistillEncoderArgs, device: &Device) -> Result<()> {
    use kdprune_cli::encoder_distill::{distill_encoder as run, EncoderDistillConfig};
    let config = EncoderDistillConfig {
        teacher: a.teacher,
        student: a.student,
        layers: a.layers,
        shared: a.shared,
        data_dir: a.data_dir,
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        weight_decay: a.weight_decay,
        max_length: a.max_length,
        cosine: a.cosine,
        mse: a.mse,
        hidden: a.hidden,
        attention: a.attention,
        limit: a.limit,
        seed: a.seed,
        out: a.out,
    };
    let report = run(&config, device, true)?;
    println!("| model | parameters | test accuracy@1 | test MRR |");
    println!("|---|---|---|---|");
    println!(
        "| student before training | {} | {:.4} | {:.4} |",
        report.student_params, report.untrained_test.accuracy_at_1, report.untrained_test.mrr
    );
    println!(
        "| student, epoch {} of {} | {} | {:.4} | {:.4} |",
        report.best_epoch,
        report.epochs.len(),
        report.student_params,
        report.test.accuracy_at_1,
        report.test.mrr
    );
    eprintln!("wrote {}", config.out.display());
    Ok(())
}

/// Flags of `kdprune prune-encoder`.
#[derive(Args, Debug)]
pub struct PruneEncoderArgs {
    /// The encoder folder to prune (Hugging Face layout with `tokenizer.json`).
    #[arg(long)]
    pub model: PathBuf,
    /// A teacher folder: scores use the distillation loss to its embeddings
    /// (required by `teacher-guided`).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// The WordNet glosses folder (the training split scores).
    #[arg(long, default_value = "../shared/datasets/wordnet-glosses")]
    pub data_dir: PathBuf,
    /// Fraction of all attention heads to remove (one global threshold).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub heads: f64,
    /// Fraction of all intermediate neurons to remove.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub neurons: f64,
    /// Drop this many of the least important layers (mean |g·w|).
    #[arg(long, default_value_t = 0)]
    pub drop_layers: usize,
    /// Keep exactly these layers, in this order, e.g. `0,1,2` (instead of --drop-layers).
    #[arg(long, value_delimiter = ',')]
    pub keep_layers: Option<Vec<usize>>,
    /// magnitude, michel (head-mask gradients), attention-variance (heads by
    /// the variance of their attention; neurons as michel) or teacher-guided
    /// (|θ ⊙ ∂L/∂θ| of the distillation loss; needs a --teacher other than --model).
    #[arg(long, default_value = "michel")]
    pub criterion: String,
    /// Batches of training synsets the scores are summed over.
    #[arg(long, default_value_t = 8)]
    pub score_batches: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 128)]
    pub max_length: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The pruned encoder's folder (must not exist).
    #[arg(long)]
    pub out: PathBuf,
}

/// Scores and removes heads, neurons and layers; prints the sizes per layer.
pub fn prune_encoder(a: PruneEncoderArgs, device: &Device) -> Result<()> {
    use kdprune_cli::encoder_prune::{prune_encoder as run, EncoderPruneConfig};
    let criterion = a.criterion.parse().map_err(anyhow::Error::msg)?;
    let config = EncoderPruneConfig {
        model: a.model,
        teacher: a.teacher,
        data_dir: a.data_dir,
        heads: a.heads,
        neurons: a.neurons,
        drop_layers: a.drop_layers,
        keep_layers: a.keep_layers,
        criterion,
        score_batches: a.score_batches,
        batch_size: a.batch_size,
        max_length: a.max_length,
        seed: a.seed,
        out: a.out,
    };
    let report = run(&config, device)?;
    println!("| layer | heads | intermediate | layer importance |");
    println!("|---|---|---|---|");
    for (i, (h, n)) in report.before.iter().enumerate() {
        let after = report
            .kept_layers
            .iter()
            .position(|&k| k == i)
            .map(|j| report.after[j]);
        let (ha, na) = after.map_or(("dropped".to_string(), "dropped".to_string()), |(h, n)| {
            (h.to_string(), n.to_string())
        });
        println!(
            "| {i} | {h} → {ha} | {n} → {na} | {:.3e} |",
            report.layer_importance[i]
        );
    }
    println!(
        "parameters: {} → {} ({:.3}×)",
        report.params_before,
        report.params_after,
        report.params_after as f64 / report.params_before as f64
    );
    eprintln!("wrote {}", config.out.display());
    Ok(())
}

/// Flags of `kdprune train-lm`.
#[derive(Args, Debug)]
pub struct TrainLmArgs {
    /// The WordNet glosses folder.
    #[arg(long, default_value = "../shared/datasets/wordnet-glosses")]
    pub data_dir: PathBuf,
    /// A trained LM folder: the student learns its next-token distributions
    /// (token-level KD, weight --alpha) and uses its tokenizer.
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// The BERT tokenizer.json whose word-piece vocabulary is cut to --vocab-size
    /// (without --teacher).
    #[arg(
        long,
        default_value = "../shared/models/all-MiniLM-L6-v2/tokenizer.json"
    )]
    pub tokenizer: PathBuf,
    #[arg(long, default_value_t = 8192)]
    pub vocab_size: usize,
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    #[arg(long, default_value_t = 128)]
    pub hidden: usize,
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    #[arg(long, default_value_t = 512)]
    pub intermediate: usize,
    /// Longest sequence in tokens ([CLS] and [SEP] included).
    #[arg(long, default_value_t = 64)]
    pub max_length: usize,
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Peak learning rate of AdamW (cosine schedule, 5 % warm-up).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Weight α of the distillation term in α·KD + (1 − α)·CE (needs --teacher;
    /// 0: cross-entropy alone).
    #[arg(long, default_value_t = 0.0)]
    pub alpha: f64,
    /// Softmax temperature of the distillation term.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Train on the first N texts only (0: all 65,872).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// A masked LM (BERT's masking of 15 % of the tokens, bidirectional
    /// attention) instead of a causal one; under a teacher, DistilBERT's
    /// triple loss α·KD + (1 − α)·MLM + --cosine·(1 − cos).
    #[arg(long)]
    pub masked: bool,
    /// Weight of the cosine between the student's and the teacher's last
    /// hidden states (--masked with --teacher; same hidden size).
    #[arg(long, default_value_t = 0.0)]
    pub cosine: f64,
    /// Start the student from these teacher layers (e.g. `0,2`, DistilBERT's
    /// every other layer) instead of random weights; needs --teacher.
    #[arg(long, value_delimiter = ',')]
    pub init_layers: Option<Vec<usize>>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The model folder to write (must not exist, or be empty).
    #[arg(long)]
    pub out: PathBuf,
}

/// Trains a causal LM (teacher from scratch, or a student under a teacher)
/// and prints its test perplexity.
pub fn train_lm(a: TrainLmArgs, device: &Device) -> Result<()> {
    use kdprune_cli::lm::{train_lm as run, LmTrainConfig};
    let config = LmTrainConfig {
        data_dir: a.data_dir,
        teacher: a.teacher,
        tokenizer: a.tokenizer,
        vocab_size: a.vocab_size,
        layers: a.layers,
        hidden: a.hidden,
        heads: a.heads,
        intermediate: a.intermediate,
        max_length: a.max_length,
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        weight_decay: a.weight_decay,
        alpha: a.alpha,
        temperature: a.temperature,
        limit: a.limit,
        masked: a.masked,
        cosine: a.cosine,
        init_layers: a.init_layers,
        seed: a.seed,
        out: a.out,
    };
    let r = run(&config, device, true)?;
    println!("| model | parameters | vocabulary | best epoch | test perplexity |");
    println!("|---|---|---|---|---|");
    if let (Some(p), Some(t)) = (r.teacher_params, r.teacher_test) {
        println!(
            "| teacher | {p} | {} | | {:.3} |",
            r.vocab_size, t.perplexity
        );
    }
    println!(
        "| this model | {} | {} | {} of {} | {:.3} |",
        r.params,
        r.vocab_size,
        r.best_epoch,
        r.epochs.len(),
        r.test.perplexity
    );
    eprintln!("wrote {}", config.out.display());
    Ok(())
}

/// Flags of `kdprune eval-lm`.
#[derive(Args, Debug)]
pub struct EvalLmArgs {
    /// An LM folder written by `kdprune train-lm`.
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, default_value = "test")]
    pub split: GlossSplitArg,
    #[arg(long, default_value = "../shared/datasets/wordnet-glosses")]
    pub data_dir: PathBuf,
    #[arg(long, default_value_t = 64)]
    pub max_length: usize,
}

/// Perplexity of an LM folder on a split.
pub fn eval_lm(a: EvalLmArgs, device: &Device) -> Result<()> {
    let p = kdprune_cli::lm::eval_lm(&a.model, &a.data_dir, a.split.0, a.max_length, device)?;
    println!("| split | predicted tokens | cross-entropy | perplexity |");
    println!("|---|---|---|---|");
    println!(
        "| {} | {} | {:.4} | {:.3} |",
        a.split.0.name(),
        p.tokens,
        p.cross_entropy,
        p.perplexity
    );
    Ok(())
}
