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
//!
//! The masked variant (`masked`; Hugging Face's `BertForMaskedLM`, attention
//! in both directions) masks 15 % of each batch's tokens BERT's way (of
//! them 80 % `[MASK]`, 10 % a random token, 10 % unchanged) and learns to
//! restore them: alone on the masked-LM cross-entropy, or under a teacher
//! with DistilBERT's triple loss, `α·T²·KL + (1 − α)·MLM + w_cos·(1 − cos)`
//! of the last hidden states ([`kd_core::losses::distilbert`]); a student
//! may start from the teacher's layers (`init_layers`, DistilBERT's every
//! other layer). Its perplexity is over the masked tokens of a split under
//! one fixed masking (the same positions for every model).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::Optimizer;
use kd_core::losses::distilbert::{
    distilbert_loss, masked_lm_loss, DistilBertConfig, IGNORE_INDEX,
};
use kd_core::losses::token_kd::{lm_ce_loss, TokenKdConfig};
use kd_core::schedule::LrSchedule;
use kdprune_data::text::{load_glosses, restrict_vocabulary, GlossSplit, TextTokenizer};
use kdprune_models::bert::{Bert, BertConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::encoder_distill::{
    bert_adamw, length_bucketed_batches, refuse_nonempty, steps_per_epoch,
};
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
    /// A masked LM (bidirectional) instead of a causal one.
    pub masked: bool,
    /// Weight of the hidden-state cosine term (masked LMs under a teacher).
    pub cosine: f64,
    /// Start the student from these teacher layers instead of random weights.
    pub init_layers: Option<Vec<usize>>,
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

/// Loads an LM folder (`config.json` with a language-model head — causal,
/// `BertLMHeadModel`, or masked, `BertForMaskedLM` —, `model.safetensors`,
/// `tokenizer.json`).
pub fn load_lm(dir: &Path, max_length: usize, device: &Device) -> Result<SentenceEncoder> {
    let lm = SentenceEncoder::load(dir, Some(max_length), device)?;
    if !lm.bert.config().lm_head {
        bail!(
            "{} is not a language model (config.json: BertLMHeadModel or BertForMaskedLM)",
            dir.display()
        );
    }
    Ok(lm)
}

/// The seed of the one masking every masked LM is evaluated under.
const EVAL_MASK_SEED: u64 = 0x5eed;

/// BERT's masking of a padded batch (`ids`, `mask`: `[batch, tokens]`
/// row-major): each real token that is not in `specials` is chosen with
/// probability 0.15 (the first such token when none is), and a chosen token
/// becomes `mask_id` with probability 0.8, a random non-special token of
/// `[0, vocab)` with 0.1, and stays with 0.1. Returns the model's input ids
/// and the labels (the original id where chosen, −100 elsewhere).
pub fn mask_tokens(
    ids: &[u32],
    mask: &[u32],
    specials: &[u32],
    mask_id: u32,
    vocab: u32,
    rng: &mut ChaCha8Rng,
) -> (Vec<u32>, Vec<i64>) {
    use rand::Rng;
    let mut input = ids.to_vec();
    let mut labels = vec![IGNORE_INDEX; ids.len()];
    let eligible = |i: usize| mask[i] != 0 && !specials.contains(&ids[i]);
    let mut chosen: Vec<usize> = (0..ids.len())
        .filter(|&i| eligible(i) && rng.random::<f32>() < 0.15)
        .collect();
    if chosen.is_empty() {
        chosen.extend((0..ids.len()).find(|&i| eligible(i)));
    }
    let regular = (vocab as usize).saturating_sub(specials.len()) > 0;
    for i in chosen {
        labels[i] = ids[i] as i64;
        let r = rng.random::<f32>();
        if r < 0.8 {
            input[i] = mask_id;
        } else if r < 0.9 && regular {
            input[i] = loop {
                let id = rng.random_range(0..vocab);
                if !specials.contains(&id) {
                    break id;
                }
            };
        }
    }
    (input, labels)
}

/// The special-token ids of a tokenizer and its `[MASK]` id.
fn special_ids(tokenizer: &TextTokenizer) -> Result<(Vec<u32>, u32)> {
    let specials: Vec<u32> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .filter_map(|t| tokenizer.token_id(t))
        .collect();
    let mask_id = tokenizer
        .token_id("[MASK]")
        .context("a masked LM needs a [MASK] token in its vocabulary")?;
    Ok((specials, mask_id))
}

/// Perplexity of `lm` on `texts` (batches of `batch_size`, longest first):
/// over the next tokens for a causal LM, over the masked tokens of one fixed
/// masking for a masked LM.
pub fn perplexity(lm: &SentenceEncoder, texts: &[&str], batch_size: usize) -> Result<Perplexity> {
    let device = lm.bert.device();
    let masked = !lm.bert.config().is_decoder;
    let (specials, mask_id) = if masked {
        special_ids(&lm.tokenizer)?
    } else {
        (Vec::new(), 0)
    };
    let vocab = lm.bert.config().vocab_size as u32;
    let mut rng = ChaCha8Rng::seed_from_u64(EVAL_MASK_SEED);
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
    let (mut nll, mut tokens) = (0.0, 0usize);
    for chunk in order.chunks(batch_size.max(1)) {
        let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
        let encoded = lm.tokenizer.encode_batch(&batch)?;
        let (ids, mask) = encoded.tensors(device)?;
        let (ce, predicted) = if masked {
            let (input, labels) = mask_tokens(
                &encoded.ids,
                &encoded.mask,
                &specials,
                mask_id,
                vocab,
                &mut rng,
            );
            let count = labels.iter().filter(|&&l| l != IGNORE_INDEX).count();
            let shape = (encoded.batch, encoded.tokens);
            let input = Tensor::from_vec(input, shape, device)?;
            let labels = Tensor::from_vec(labels, shape, device)?;
            let out = lm.bert.forward(&input, &mask)?;
            let logits = lm.bert.lm_logits(out.last_hidden())?;
            (masked_lm_loss(&logits, &labels)?, count)
        } else {
            let out = lm.bert.forward(&ids, &mask)?;
            let logits = lm.bert.lm_logits(out.last_hidden())?;
            let predicted: usize = (0..encoded.batch)
                .map(|b| encoded.row(b).len().saturating_sub(1))
                .sum();
            (lm_ce_loss(&logits, &ids, &mask)?, predicted)
        };
        nll += ce.to_scalar::<f32>()? as f64 * predicted as f64;
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
    if !(config.cosine >= 0.0 && config.cosine.is_finite()) {
        bail!("--cosine must be non-negative, got {}", config.cosine);
    }
    if config.teacher.is_none() {
        if config.alpha > 0.0 {
            bail!("--alpha {} needs a --teacher", config.alpha);
        }
        if config.cosine > 0.0 || config.init_layers.is_some() {
            bail!("--cosine and --init-layers need a --teacher");
        }
    }
    if config.cosine > 0.0 && !config.masked {
        bail!("--cosine is a term of the masked-LM triple loss (add --masked)");
    }
    refuse_nonempty(&config.out)?;
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
    if let (Some(t), Some(dir)) = (&teacher, &config.teacher) {
        let teacher_masked = !t.bert.config().is_decoder;
        if teacher_masked != config.masked {
            bail!(
                "{} is a {} LM: train its student {}",
                dir.display(),
                if teacher_masked { "masked" } else { "causal" },
                if teacher_masked {
                    "with --masked"
                } else {
                    "without --masked"
                }
            );
        }
    }
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
        !config.masked,
    )
    .context("the model's sizes")?;
    let bert = match (&config.init_layers, &teacher) {
        (Some(layers), Some(t)) => t.bert.layer_subset(layers)?,
        _ => Bert::init(model_config, config.seed, device)?,
    };
    if let Some(t) = &teacher {
        let (hs, ht) = (bert.config().hidden_size, t.bert.config().hidden_size);
        if config.cosine > 0.0 && hs != ht {
            bail!(
                "--cosine compares hidden states: the student's {hs} and the teacher's {ht} differ (--hidden {ht})"
            );
        }
    }
    let lm = SentenceEncoder { bert, tokenizer };
    let (specials, mask_id) = if config.masked {
        special_ids(&lm.tokenizer)?
    } else {
        (Vec::new(), 0)
    };
    let triple = DistilBertConfig {
        alpha_ce: config.alpha,
        alpha_mlm: 1.0 - config.alpha,
        alpha_cos: config.cosine,
        temperature: config.temperature,
    };

    let dev = split_texts(&config.data_dir, GlossSplit::Dev)?;
    let dev: Vec<&str> = dev.iter().map(String::as_str).collect();
    let (mut opt_decay, mut opt_plain) = bert_adamw(&lm.bert, config.lr, config.weight_decay)?;
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
            let encoded = lm.tokenizer.encode_batch(&chunk)?;
            let (ids, mask) = encoded.tensors(device)?;
            let loss = if config.masked {
                let (input, labels) = mask_tokens(
                    &encoded.ids,
                    &encoded.mask,
                    &specials,
                    mask_id,
                    vocab_size as u32,
                    &mut rng,
                );
                let shape = (encoded.batch, encoded.tokens);
                let input = Tensor::from_vec(input, shape, device)?;
                let labels = Tensor::from_vec(labels, shape, device)?;
                let out = lm.bert.forward(&input, &mask)?;
                let logits = lm.bert.lm_logits(out.last_hidden())?;
                match &teacher {
                    Some(t) if config.alpha > 0.0 || config.cosine > 0.0 => {
                        let tout = t.bert.forward(&input, &mask)?;
                        let z = t.bert.lm_logits(tout.last_hidden())?;
                        distilbert_loss(
                            &logits,
                            &z,
                            &labels,
                            out.last_hidden(),
                            tout.last_hidden(),
                            &mask,
                            &triple,
                        )?
                        .total
                    }
                    _ => masked_lm_loss(&logits, &labels)?,
                }
            } else {
                let out = lm.bert.forward(&ids, &mask)?;
                let logits = lm.bert.lm_logits(out.last_hidden())?;
                match &teacher {
                    Some(t) if config.alpha > 0.0 => {
                        let tout = t.bert.forward(&ids, &mask)?;
                        let z = t.bert.lm_logits(tout.last_hidden())?;
                        kd.loss(&logits, &z, &ids, &mask)?
                    }
                    _ => lm_ce_loss(&logits, &ids, &mask)?,
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// BERT's masking: 15 % of the eligible tokens, of them 80 % `[MASK]`,
    /// 10 % random, 10 % kept; specials and padding never; seeded.
    #[test]
    fn masking_follows_bert() {
        let (b, t) = (200, 50);
        let mut ids = Vec::new();
        let mut mask = Vec::new();
        for row in 0..b {
            let len = 10 + row % 40;
            for j in 0..t {
                let id = match j {
                    0 => 2,
                    j if j + 1 == len => 3,
                    j if j < len => 5 + ((row * 31 + j * 7) % 90) as u32,
                    _ => 0,
                };
                ids.push(id);
                mask.push(u32::from(j < len));
            }
        }
        let specials = [0, 1, 2, 3, 4];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (input, labels) = mask_tokens(&ids, &mask, &specials, 4, 95, &mut rng);
        let eligible = (0..ids.len())
            .filter(|&i| mask[i] == 1 && !specials.contains(&ids[i]))
            .count();
        let chosen: Vec<usize> = (0..ids.len()).filter(|&i| labels[i] != -100).collect();
        let share = chosen.len() as f64 / eligible as f64;
        assert!((0.13..0.17).contains(&share), "{share}");
        for &i in &chosen {
            assert_eq!(labels[i], ids[i] as i64);
            assert!(mask[i] == 1 && !specials.contains(&ids[i]));
        }
        let masked = chosen.iter().filter(|&&i| input[i] == 4).count() as f64;
        let kept = chosen.iter().filter(|&&i| input[i] == ids[i]).count() as f64;
        let n = chosen.len() as f64;
        assert!((0.76..0.84).contains(&(masked / n)), "{}", masked / n);
        // a random replacement may draw the token itself: kept ≈ 10 % (+ 0.1 %)
        assert!((0.07..0.13).contains(&(kept / n)), "{}", kept / n);
        for i in 0..ids.len() {
            if labels[i] == -100 {
                assert_eq!(input[i], ids[i]);
            } else {
                assert!(input[i] == 4 || !specials.contains(&input[i]));
            }
        }
        // the same seed, the same masking
        let again = mask_tokens(
            &ids,
            &mask,
            &specials,
            4,
            95,
            &mut ChaCha8Rng::seed_from_u64(1),
        );
        assert_eq!(again, (input, labels));
        // a sequence too short to draw from still masks one token
        let (_, l) = mask_tokens(&[2, 7, 3], &[1, 1, 1], &specials, 4, 95, &mut rng);
        assert_eq!(l, vec![-100, 7, -100]);
    }
}
