//! Token-level language-model distillation on the WordNet glosses text: a
//! small causal transformer (a BERT with causal attention and a
//! language-model head, Hugging Face's `BertLMHeadModel`) trained from
//! scratch as a teacher, and smaller students trained either on the
//! next-token cross-entropy alone or on kd-core's token-level distillation
//! `α·T²·KL(p_T ‖ p_S) + (1 − α)·CE` under the frozen teacher
//! ([`kd_core::losses::token_kd::TokenKdConfig`]: next-token shift, padding
//! masked out).
//!
//! The vocabulary is a cut of the BERT word-piece vocabulary
//! ([`restrict_vocabulary`]): its special tokens, every character the
//! training text uses and its most frequent pieces. Every text is one
//! sequence `[CLS] text [SEP]`; `[SEP]` is predicted (end of text), `[CLS]`
//! is not. Perplexity is `exp` of the mean next-token cross-entropy over
//! the predicted tokens of a split; the dev split picks the epoch, the test
//! split reports it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use kd_core::losses::token_kd::{lm_ce_loss, TokenKdConfig};
use kd_core::schedule::LrSchedule;
use kdprune_data::text::{load_glosses, restrict_vocabulary, GlossSplit, TextTokenizer};
use kdprune_models::bert::{Bert, BertConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::encoder_distill::{length_bucketed_batches, steps_per_epoch};
use crate::files::write_atomic;
use crate::text::{text_bar, SentenceEncoder};

/// The texts of a split: each synset's gloss, then its examples.
pub fn split_texts(data_dir: &Path, split: GlossSplit) -> Result<Vec<String>> {
    let synsets = load_glosses(data_dir, split)
        .with_context(|| format!("the {} text in {}", split.name(), data_dir.display()))?;
    Ok(synsets
        .into_iter()
        .flat_map(|s| std::iter::once(s.gloss).chain(s.examples))
        .collect())
}

/// What [`train_lm`] trains.
#[derive(Debug, Clone, Serialize)]
pub struct LmTrainConfig {
    /// The WordNet glosses folder.
    pub data_dir: PathBuf,
    /// A trained LM folder to distil from; `None` trains on the
    /// cross-entropy alone.
    pub teacher: Option<PathBuf>,
    /// The BERT `tokenizer.json` whose vocabulary is cut to `vocab_size`
    /// (without a teacher; with one, the teacher's tokenizer is used).
    pub tokenizer: PathBuf,
    pub vocab_size: usize,
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
    /// Longest sequence in tokens (`[CLS]` and `[SEP]` included).
    pub max_length: usize,
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate of AdamW (cosine schedule, 5 % warm-up).
    pub lr: f64,
    pub weight_decay: f64,
    /// Weight `α` of the distillation term (with a teacher; 0 = CE alone).
    pub alpha: f64,
    pub temperature: f64,
    /// Train on the first `limit` texts only (0: all).
    pub limit: usize,
    pub seed: u64,
    /// The model folder to write (must not exist, or be empty).
    pub out: PathBuf,
}

/// One epoch of [`train_lm`].
#[derive(Debug, Clone, Serialize)]
pub struct LmEpoch {
    pub epoch: usize,
    /// Mean training loss per batch.
    pub loss: f64,
    pub dev_perplexity: f64,
    pub seconds: f64,
    /// Training sequences per second.
    pub sequences_per_second: f64,
}

/// Perplexity of a model on a split.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Perplexity {
    pub perplexity: f64,
    /// Mean next-token cross-entropy (nats).
    pub cross_entropy: f64,
    /// Predicted tokens.
    pub tokens: usize,
}

/// What [`train_lm`] reports (also `report.json` in the model folder).
#[derive(Debug, Clone, Serialize)]
pub struct LmReport {
    pub config: LmTrainConfig,
    pub params: usize,
    pub vocab_size: usize,
    pub train_texts: usize,
    pub epochs: Vec<LmEpoch>,
    pub best_epoch: usize,
    pub test: Perplexity,
    pub teacher_params: Option<usize>,
    pub teacher_test: Option<Perplexity>,
    /// Share of `[UNK]` among the test split's tokens.
    pub test_unknown_share: f64,
}

/// Loads an LM folder (`config.json` with a causal language-model head,
/// `model.safetensors`, `tokenizer.json`).
pub fn load_lm(dir: &Path, max_length: usize, device: &Device) -> Result<SentenceEncoder> {
    let lm = SentenceEncoder::load(dir, Some(max_length), device)?;
    let c = lm.bert.config();
    if !(c.lm_head && c.is_decoder) {
        bail!(
            "{} is not a causal language model (config.json: BertLMHeadModel with is_decoder)",
            dir.display()
        );
    }
    Ok(lm)
}

/// Perplexity of `lm` on `texts` (batches of `batch_size`, longest first).
pub fn perplexity(lm: &SentenceEncoder, texts: &[&str], batch_size: usize) -> Result<Perplexity> {
    let device = lm.bert.device();
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
    let (mut nll, mut tokens) = (0.0, 0usize);
    for chunk in order.chunks(batch_size.max(1)) {
        let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
        let encoded = lm.tokenizer.encode_batch(&batch)?;
        let (ids, mask) = encoded.tensors(device)?;
        let logits = lm
            .bert
            .lm_logits(lm.bert.forward(&ids, &mask)?.last_hidden())?;
        let predicted: usize = (0..encoded.batch)
            .map(|b| encoded.row(b).len().saturating_sub(1))
            .sum();
        let ce = lm_ce_loss(&logits, &ids, &mask)?.to_scalar::<f32>()? as f64;
        nll += ce * predicted as f64;
        tokens += predicted;
    }
    if tokens == 0 {
        bail!("no token to predict in {} texts", texts.len());
    }
    let cross_entropy = nll / tokens as f64;
    Ok(Perplexity {
        perplexity: cross_entropy.exp(),
        cross_entropy,
        tokens,
    })
}

/// Share of `[UNK]` among the tokens of `texts`.
fn unknown_share(tokenizer: &TextTokenizer, texts: &[&str]) -> Result<f64> {
    let Some(unk) = tokenizer.token_id("[UNK]") else {
        return Ok(0.0);
    };
    let (mut n, mut total) = (0usize, 0usize);
    for chunk in texts.chunks(256) {
        let batch = tokenizer.encode_batch(chunk)?;
        for b in 0..batch.batch {
            let row = batch.row(b);
            n += row.iter().filter(|&&id| id == unk).count();
            total += row.len();
        }
    }
    Ok(n as f64 / total.max(1) as f64)
}

/// Trains a causal LM on the WordNet training text, from scratch or under a
/// teacher; writes the best epoch's model (by dev perplexity) with its
/// tokenizer and `report.json` to `config.out`.
pub fn train_lm(config: &LmTrainConfig, device: &Device, verbose: bool) -> Result<LmReport> {
    if config.epochs == 0 || config.batch_size == 0 {
        bail!("--epochs and --batch-size must be at least 1");
    }
    if !(config.lr > 0.0 && config.lr.is_finite()) {
        bail!("--lr must be positive, got {}", config.lr);
    }
    if !(config.weight_decay >= 0.0 && config.weight_decay.is_finite()) {
        bail!(
            "--weight-decay must be non-negative, got {}",
            config.weight_decay
        );
    }
    let kd = TokenKdConfig {
        temperature: config.temperature,
        alpha: config.alpha,
    };
    kd.validate().context("--alpha and --temperature")?;
    if config.teacher.is_none() && config.alpha > 0.0 {
        bail!("--alpha {} needs a --teacher", config.alpha);
    }
    if config.out.exists()
        && std::fs::read_dir(&config.out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("{} exists and is not an empty folder", config.out.display());
    }
    let train = split_texts(&config.data_dir, GlossSplit::Train)?;
    let mut texts: Vec<&str> = train.iter().map(String::as_str).collect();
    if config.limit > 0 {
        texts.truncate(config.limit);
    }
    let teacher = config
        .teacher
        .as_ref()
        .map(|dir| load_lm(dir, config.max_length, device))
        .transpose()?;
    // the tokenizer: the teacher's, or a cut of the BERT vocabulary
    let tokenizer_json = match &config.teacher {
        Some(dir) => std::fs::read_to_string(dir.join("tokenizer.json"))
            .with_context(|| format!("cannot read {}", dir.join("tokenizer.json").display()))?,
        None => {
            let json = std::fs::read_to_string(&config.tokenizer)
                .with_context(|| format!("cannot read {}", config.tokenizer.display()))?;
            restrict_vocabulary(&json, &texts, config.vocab_size)?
        }
    };
    let tokenizer = TextTokenizer::from_json(&tokenizer_json, config.max_length)?;
    let vocab_size = tokenizer.vocab_size();
    let pad = tokenizer.token_id("[PAD]").unwrap_or(0);
    let model_config = BertConfig::new(
        vocab_size,
        config.hidden,
        config.layers,
        config.heads,
        config.intermediate,
        config.max_length,
        pad,
        true,
        true,
    )
    .context("the model's sizes")?;
    let lm = SentenceEncoder {
        bert: Bert::init(model_config, config.seed, device)?,
        tokenizer,
    };

    let dev = split_texts(&config.data_dir, GlossSplit::Dev)?;
    let dev: Vec<&str> = dev.iter().map(String::as_str).collect();
    let (decayed, plain): (Vec<_>, Vec<_>) = lm
        .bert
        .named_vars()
        .into_iter()
        .partition(|(n, v)| v.as_tensor().rank() == 2 && !n.contains("embeddings"));
    let params = |wd: f64| ParamsAdamW {
        lr: config.lr,
        weight_decay: wd,
        ..Default::default()
    };
    let mut opt_decay = AdamW::new(
        decayed.into_iter().map(|(_, v)| v).collect(),
        params(config.weight_decay),
    )?;
    let mut opt_plain = AdamW::new(plain.into_iter().map(|(_, v)| v).collect(), params(0.0))?;
    let total = steps_per_epoch(texts.len(), config.batch_size) * config.epochs;
    let schedule = LrSchedule::Cosine {
        warmup_steps: total / 20,
        total_steps: total,
        min_lr: 0.0,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let tmp_best = config.out.with_extension("best.tmp");
    let (mut epochs, mut best, mut step) = (Vec::new(), None::<(f64, usize)>, 0usize);
    for epoch in 1..=config.epochs {
        let start = Instant::now();
        let batches = length_bucketed_batches(&texts, config.batch_size, &mut rng);
        let bar =
            verbose.then(|| text_bar(texts.len(), &format!("epoch {epoch}/{}", config.epochs)));
        let mut loss_sum = 0.0;
        for batch in &batches {
            let lr = schedule.lr(config.lr, step);
            opt_decay.set_learning_rate(lr);
            opt_plain.set_learning_rate(lr);
            let chunk: Vec<&str> = batch.iter().map(|&i| texts[i]).collect();
            let (ids, mask) = lm.tokenizer.encode_batch(&chunk)?.tensors(device)?;
            let logits = lm
                .bert
                .lm_logits(lm.bert.forward(&ids, &mask)?.last_hidden())?;
            let loss = match &teacher {
                Some(t) if config.alpha > 0.0 => {
                    let z = t
                        .bert
                        .lm_logits(t.bert.forward(&ids, &mask)?.last_hidden())?;
                    kd.loss(&logits, &z, &ids, &mask)?
                }
                _ => lm_ce_loss(&logits, &ids, &mask)?,
            };
            let value = loss.to_scalar::<f32>()? as f64;
            if !value.is_finite() {
                bail!("the loss became {value} at step {step} (epoch {epoch}): lower --lr");
            }
            let grads = loss.backward()?;
            opt_decay.step(&grads)?;
            opt_plain.step(&grads)?;
            loss_sum += value;
            step += 1;
            if let Some(bar) = &bar {
                bar.inc(batch.len() as u64);
                bar.set_message(format!("loss {value:.4}"));
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let seconds = start.elapsed().as_secs_f64();
        let dev_ppl = perplexity(&lm, &dev, 64)?;
        let report = LmEpoch {
            epoch,
            loss: loss_sum / batches.len().max(1) as f64,
            dev_perplexity: dev_ppl.perplexity,
            seconds,
            sequences_per_second: texts.len() as f64 / seconds,
        };
        if verbose {
            eprintln!(
                "epoch {epoch}: loss {:.4}, dev perplexity {:.2} ({:.0} s, {:.0} sequences/s)",
                report.loss, report.dev_perplexity, report.seconds, report.sequences_per_second
            );
        }
        if best.is_none_or(|(p, _)| dev_ppl.perplexity < p) {
            best = Some((dev_ppl.perplexity, epoch));
            lm.bert.save_dir(&tmp_best)?;
        }
        epochs.push(report);
    }
    let (_, best_epoch) = best.expect("at least one epoch");
    write_atomic(&tmp_best.join("tokenizer.json"), tokenizer_json)?;
    let model = load_lm(&tmp_best, config.max_length, device)?;
    let test = split_texts(&config.data_dir, GlossSplit::Test)?;
    let test: Vec<&str> = test.iter().map(String::as_str).collect();
    let report = LmReport {
        config: config.clone(),
        params: model.bert.config().num_params(),
        vocab_size,
        train_texts: texts.len(),
        epochs,
        best_epoch,
        test: perplexity(&model, &test, 64)?,
        teacher_params: teacher.as_ref().map(|t| t.bert.config().num_params()),
        teacher_test: teacher
            .as_ref()
            .map(|t| perplexity(t, &test, 64))
            .transpose()?,
        test_unknown_share: unknown_share(&model.tokenizer, &test)?,
    };
    let json = serde_json::to_string_pretty(&report).context("cannot serialise the report")?;
    write_atomic(&tmp_best.join("report.json"), json + "\n")?;
    if config.out.exists() {
        std::fs::remove_dir(&config.out)
            .with_context(|| format!("cannot replace {}", config.out.display()))?;
    }
    std::fs::rename(&tmp_best, &config.out)
        .with_context(|| format!("cannot move the model to {}", config.out.display()))?;
    Ok(report)
}

/// The perplexity of an LM folder on a split of the WordNet text.
pub fn eval_lm(
    dir: &Path,
    data_dir: &Path,
    split: GlossSplit,
    max_length: usize,
    device: &Device,
) -> Result<Perplexity> {
    let lm = load_lm(dir, max_length, device)?;
    let texts = split_texts(data_dir, split)?;
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    perplexity(&lm, &texts, 64)
}
