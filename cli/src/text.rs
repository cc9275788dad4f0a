//! Sentence embeddings with a BERT encoder folder (Hugging Face layout:
//! `config.json`, `model.safetensors`, `tokenizer.json`), as
//! sentence-transformers computes them — mean pooling over the attention
//! mask, then L2 normalisation — and the WordNet gloss retrieval task.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use kdprune_data::text::{
    load_glosses, rank_of, retrieval_scores, GlossSplit, RetrievalTask, TextTokenizer, TokenBatch,
};
use kdprune_models::bert::{l2_normalize, mean_pool, Bert};
use kdprune_models::infer::BertRuntime;
use serde::Serialize;

/// The longest input when the folder does not say (`sentence_bert_config.json`'s
/// `max_seq_length`, which sentence-transformers reads).
pub const DEFAULT_MAX_LENGTH: usize = 256;

/// A BERT encoder with its tokenizer.
pub struct SentenceEncoder {
    pub bert: Bert,
    pub tokenizer: TextTokenizer,
}

impl SentenceEncoder {
    /// Loads `dir`: the encoder, `tokenizer.json`, and the maximum length
    /// (`max_length`, else `sentence_bert_config.json`'s `max_seq_length`,
    /// else [`DEFAULT_MAX_LENGTH`]; never beyond the position embeddings).
    pub fn load(dir: &Path, max_length: Option<usize>, device: &Device) -> Result<Self> {
        if !dir.is_dir() {
            bail!(
                "{} is not a model folder (config.json, model.safetensors, tokenizer.json)",
                dir.display()
            );
        }
        let bert = Bert::load_dir(dir, device)
            .with_context(|| format!("cannot load the encoder in {}", dir.display()))?;
        let max_length = match max_length {
            Some(n) => n,
            None => folder_max_length(dir)?.unwrap_or(DEFAULT_MAX_LENGTH),
        };
        let positions = bert.config().max_position_embeddings;
        if max_length > positions {
            bail!(
                "a maximum length of {max_length} tokens exceeds the model's {positions} positions"
            );
        }
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"), max_length)
            .with_context(|| format!("cannot load the tokenizer of {}", dir.display()))?;
        let (vocab, model_vocab) = (tokenizer.vocab_size(), bert.config().vocab_size);
        if vocab > model_vocab {
            bail!(
                "the tokenizer of {} has {vocab} tokens, the model's embeddings {model_vocab}: they do not belong together",
                dir.display()
            );
        }
        Ok(Self { bert, tokenizer })
    }

    /// Unit-length embeddings of `texts`, in their order. Texts are batched
    /// by length (longest first, as sentence-transformers does), so that a
    /// batch carries little padding; on the CPU they run through the fused
    /// inference path ([`BertRuntime`], no padding at all).
    pub fn embed(
        &self,
        texts: &[&str],
        batch_size: usize,
        bar: Option<&ProgressBar>,
    ) -> Result<Vec<Vec<f32>>> {
        Ok(self.embed_counted(texts, batch_size, bar)?.0)
    }

    /// [`SentenceEncoder::embed`], and how many texts were truncated to the
    /// maximum length.
    pub fn embed_counted(
        &self,
        texts: &[&str],
        batch_size: usize,
        bar: Option<&ProgressBar>,
    ) -> Result<(Vec<Vec<f32>>, usize)> {
        self.embed_by(texts, batch_size, bar, true)
    }

    /// [`SentenceEncoder::embed`] through candle's forward pass (padded
    /// batches, the autograd graph built) everywhere: the baseline of the
    /// fused path in `bench-embed`.
    pub fn embed_unfused(&self, texts: &[&str], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        Ok(self.embed_by(texts, batch_size, None, false)?.0)
    }

    fn embed_by(
        &self,
        texts: &[&str],
        batch_size: usize,
        bar: Option<&ProgressBar>,
        fused: bool,
    ) -> Result<(Vec<Vec<f32>>, usize)> {
        if batch_size == 0 {
            bail!("the batch size must be at least 1");
        }
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].chars().count()));
        let mut out = vec![Vec::new(); texts.len()];
        let mut truncated = 0;
        // on the CPU, the fused inference path (a copy of the weights, made
        // once per call: the model may have been trained since the last)
        let runtime = match self.bert.device() {
            Device::Cpu if fused => Some(BertRuntime::new(&self.bert)?),
            _ => None,
        };
        for chunk in order.chunks(batch_size) {
            let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
            let tokens = self.tokenizer.encode_batch(&batch)?;
            truncated += tokens.truncated;
            let rows = match &runtime {
                Some(rt) => {
                    let seqs: Vec<&[u32]> = (0..tokens.batch).map(|i| tokens.row(i)).collect();
                    rt.sentence_embeddings(&seqs)?
                }
                None => self.embed_tokens(&tokens)?,
            };
            for (&i, row) in chunk.iter().zip(rows) {
                out[i] = row;
            }
            if let Some(bar) = bar {
                bar.inc(chunk.len() as u64);
            }
        }
        Ok((out, truncated))
    }

    /// Unit-length embeddings of one batch.
    pub fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.embed_tokens(&self.tokenizer.encode_batch(texts)?)
    }

    /// Unit-length embeddings of a tokenised batch.
    pub fn embed_tokens(&self, tokens: &TokenBatch) -> Result<Vec<Vec<f32>>> {
        let (ids, mask) = tokens.tensors(self.bert.device())?;
        let out = self.bert.forward(&ids, &mask)?;
        let emb = l2_normalize(&mean_pool(out.last_hidden(), &mask)?)?;
        Ok(emb.to_vec2()?)
    }
}

/// `max_seq_length` of `dir/sentence_bert_config.json`, if the file is there.
fn folder_max_length(dir: &Path) -> Result<Option<usize>> {
    let path = dir.join("sentence_bert_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    Ok(json
        .get("max_seq_length")
        .and_then(|v| v.as_u64())
        .map(|v| v as usize))
}

/// A progress bar over `n` texts on stderr (hidden when it is not a terminal).
pub fn text_bar(n: usize, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(n as u64);
    if let Ok(style) =
        ProgressStyle::with_template("  {prefix} [{bar:30}] {pos}/{len} ({elapsed}, {per_sec})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_string());
    bar
}

/// The result of the retrieval task on one split.
#[derive(Debug, Clone, Serialize)]
pub struct RetrievalReport {
    pub model: PathBuf,
    pub split: String,
    pub queries: usize,
    pub candidates: usize,
    /// Share of queries whose own gloss ranks first.
    pub accuracy_at_1: f64,
    /// Mean reciprocal rank of the query's own gloss.
    pub mrr: f64,
    pub seconds: f64,
}

impl RetrievalReport {
    pub fn table(&self) -> String {
        format!(
            "| model | split | queries | glosses | accuracy@1 | MRR |\n|---|---|---|---|---|---|\n| {} | {} | {} | {} | {:.4} | {:.4} |",
            self.model.display(),
            self.split,
            self.queries,
            self.candidates,
            self.accuracy_at_1,
            self.mrr
        )
    }
}

/// The 1-based rank of every query's gloss by cosine similarity (unit
/// vectors: the dot product), ties counted against it.
pub fn retrieval_ranks(
    queries: &[Vec<f32>],
    answers: &[usize],
    candidates: &[Vec<f32>],
) -> Result<Vec<usize>> {
    let dim = candidates.first().map_or(0, Vec::len);
    let to_tensor = |rows: &[Vec<f32>]| -> Result<Tensor> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Ok(Tensor::from_vec(flat, (rows.len(), dim), &Device::Cpu)?)
    };
    let sims: Vec<Vec<f32>> = to_tensor(queries)?
        .matmul(&to_tensor(candidates)?.t()?)?
        .to_vec2()?;
    Ok(sims
        .iter()
        .zip(answers)
        .map(|(row, &a)| rank_of(row, a))
        .collect())
}

/// Every example sentence of `split` as a query against every gloss of the
/// split: accuracy@1 and MRR.
pub fn eval_retrieval(
    encoder: &SentenceEncoder,
    model: &Path,
    data_dir: &Path,
    split: GlossSplit,
    batch_size: usize,
    verbose: bool,
) -> Result<RetrievalReport> {
    let synsets = load_glosses(data_dir, split).with_context(|| {
        format!(
            "cannot read the {} split in {}",
            split.name(),
            data_dir.display()
        )
    })?;
    let task = RetrievalTask::new(&synsets);
    let start = std::time::Instant::now();
    let bar = verbose.then(|| text_bar(task.glosses.len() + task.queries.len(), "embedding"));
    let glosses: Vec<&str> = task.glosses.iter().map(String::as_str).collect();
    let candidates = encoder.embed(&glosses, batch_size, bar.as_ref())?;
    let texts: Vec<&str> = task.queries.iter().map(|(q, _)| q.as_str()).collect();
    let queries = encoder.embed(&texts, batch_size, bar.as_ref())?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let answers: Vec<usize> = task.queries.iter().map(|&(_, a)| a).collect();
    let ranks = retrieval_ranks(&queries, &answers, &candidates)?;
    let (accuracy_at_1, mrr) = retrieval_scores(&ranks);
    Ok(RetrievalReport {
        model: model.to_path_buf(),
        split: split.name().to_string(),
        queries: queries.len(),
        candidates: candidates.len(),
        accuracy_at_1,
        mrr,
        seconds: start.elapsed().as_secs_f64(),
    })
}
