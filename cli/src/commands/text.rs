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
