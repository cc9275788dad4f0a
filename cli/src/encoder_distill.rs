//! Distillation of a sentence encoder into a smaller one on the WordNet
//! glosses text: the student (a layer subset of the teacher, or a given
//! folder such as a head/neuron-pruned teacher) learns the teacher's
//! sentence embeddings — DistilBERT's cosine term on the normalised
//! embedding and MSE on the mean-pooled one — with AdamW under a cosine
//! schedule; the dev split's retrieval accuracy@1 picks the best epoch, the
//! test split reports it.
//!
//! The teacher's embeddings of every training text are computed once
//! (they do not change) and kept in memory (65,872 texts × 384 floats).
//! Batches hold texts of similar lengths (sorted within pools of 50
//! batches, the batches then shuffled): little padding, which on 2 cores
//! is most of the cost of a step.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use kd_core::schedule::LrSchedule;
use kdprune_data::text::{load_glosses, GlossSplit};
use kdprune_models::bert::{l2_normalize, mean_pool, Bert};
use kdprune_models::infer::BertRuntime;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::files::write_atomic;
use crate::text::{eval_retrieval, text_bar, RetrievalReport, SentenceEncoder};

/// What [`distill_encoder`] runs.
#[derive(Debug, Clone, Serialize)]
pub struct EncoderDistillConfig {
    /// The teacher folder (Hugging Face layout with `tokenizer.json`).
    pub teacher: PathBuf,
    /// The student: a folder, or `None` for a layer subset of the teacher.
    pub student: Option<PathBuf>,
    /// The teacher's layers the student starts from (when `student` is `None`).
    pub layers: Vec<usize>,
    /// ALBERT's sharing: the student runs `layers[0]`'s weights
    /// `layers.len()` times.
    pub shared: bool,
    /// The WordNet glosses folder.
    pub data_dir: PathBuf,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Longest training input in tokens.
    pub max_length: usize,
    /// Weight of `1 − cos(student, teacher)` on the normalised embeddings.
    pub cosine: f64,
    /// Weight of the MSE between the mean-pooled embeddings.
    pub mse: f64,
    /// Weight of the hidden-state transfer: MSE between each student
    /// layer's output and its teacher layer's, over the tokens.
    pub hidden: f64,
    /// Weight of the attention-map transfer: MSE between each student
    /// layer's attention probabilities and its teacher layer's (averaged
    /// over the heads when the head counts differ).
    pub attention: f64,
    /// Use only the first `limit` training texts (0: all).
    pub limit: usize,
    pub seed: u64,
    pub out: PathBuf,
}

/// One epoch's figures.
#[derive(Debug, Clone, Serialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub loss: f64,
    pub dev_accuracy_at_1: f64,
    pub dev_mrr: f64,
    pub seconds: f64,
}

/// What [`distill_encoder`] returns (and writes as `report.json`).
#[derive(Debug, Clone, Serialize)]
pub struct EncoderDistillReport {
    pub config: EncoderDistillConfig,
    pub teacher_params: usize,
    pub student_params: usize,
    pub train_texts: usize,
    pub epochs: Vec<EpochReport>,
    pub best_epoch: usize,
    /// The student before any training, on test.
    pub untrained_test: RetrievalReport,
    /// The best epoch's student on test.
    pub test: RetrievalReport,
}

/// Distils the teacher into the student; writes the best epoch's student
/// (model, config, tokenizer files) and `report.json` into `config.out`.
pub fn distill_encoder(
    config: &EncoderDistillConfig,
    device: &Device,
    verbose: bool,
) -> Result<EncoderDistillReport> {
    if config.epochs == 0 || config.batch_size == 0 {
        bail!("--epochs and --batch-size must be at least 1");
    }
    if !(config.lr > 0.0 && config.lr.is_finite()) {
        bail!("--lr must be positive, got {}", config.lr);
    }
    let weights = [config.cosine, config.mse, config.hidden, config.attention];
    if weights.iter().any(|w| !(*w >= 0.0 && w.is_finite())) || weights.iter().sum::<f64>() == 0.0 {
        bail!("the loss weights (--cosine, --mse, --hidden, --attention) must be non-negative and not all 0");
    }
    refuse_nonempty(&config.out)?;
    let teacher = SentenceEncoder::load(&config.teacher, Some(config.max_length), device)?;
    let student = match &config.student {
        Some(dir) => SentenceEncoder::load(dir, Some(config.max_length), device)?,
        None => SentenceEncoder {
            bert: if config.shared {
                let first = *config.layers.first().context("--layers is empty")?;
                teacher.bert.shared_layer(first, config.layers.len())?
            } else {
                teacher.bert.layer_subset(&config.layers)?
            },
            tokenizer: kdprune_data::text::TextTokenizer::from_file(
                &config.teacher.join("tokenizer.json"),
                config.max_length,
            )?,
        },
    };
    let train = load_glosses(&config.data_dir, GlossSplit::Train)
        .with_context(|| format!("the training text in {}", config.data_dir.display()))?;
    // synset by synset: its gloss, then its examples (so that --limit keeps both kinds)
    let mut texts: Vec<&str> = train
        .iter()
        .flat_map(|s| {
            std::iter::once(s.gloss.as_str()).chain(s.examples.iter().map(String::as_str))
        })
        .collect();
    if config.limit > 0 {
        texts.truncate(config.limit);
    }

    // the teacher's pooled embeddings of every training text, once
    let start = Instant::now();
    let bar = verbose.then(|| text_bar(texts.len(), "teacher embeddings"));
    let mut targets: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
    // longest first, so that a batch carries little padding
    let mut by_length: Vec<usize> = (0..texts.len()).collect();
    by_length.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
    // on the CPU through the fused inference path
    let runtime = match device {
        Device::Cpu => Some(BertRuntime::new(&teacher.bert)?),
        _ => None,
    };
    for chunk in by_length.chunks(64) {
        let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
        let tokens = teacher.tokenizer.encode_batch(&batch)?;
        let rows = match &runtime {
            Some(rt) => {
                let seqs: Vec<&[u32]> = (0..tokens.batch).map(|i| tokens.row(i)).collect();
                rt.mean_pooled(&seqs)?
            }
            None => {
                let (ids, mask) = tokens.tensors(device)?;
                mean_pool(teacher.bert.forward(&ids, &mask)?.last_hidden(), &mask)?.to_vec2()?
            }
        };
        for (&i, row) in chunk.iter().zip(rows) {
            targets[i] = row;
        }
        if let Some(bar) = &bar {
            bar.inc(chunk.len() as u64);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if verbose {
        eprintln!(
            "teacher embeddings of {} texts in {:.0} s",
            texts.len(),
            start.elapsed().as_secs_f64()
        );
    }

    // the teacher layer each student layer learns from: the subset's own
    // layers, else the same index (as many layers) or a proportional one
    let (ls, lt) = (
        student.bert.config().num_layers(),
        teacher.bert.config().num_layers(),
    );
    let layer_map: Vec<usize> = match &config.student {
        None => config.layers.clone(),
        Some(_) if ls == lt => (0..ls).collect(),
        Some(_) => (0..ls).map(|j| ((j + 1) * lt).div_ceil(ls) - 1).collect(),
    };
    let untrained_test = eval_retrieval(
        &student,
        &config.out,
        &config.data_dir,
        GlossSplit::Test,
        64,
        false,
    )?;
    // AdamW, weight decay on the matrices only (not biases, layer norms)
    let (mut opt_decay, mut opt_plain) = bert_adamw(&student.bert, config.lr, config.weight_decay)?;
    let total = steps_per_epoch(texts.len(), config.batch_size) * config.epochs;
    let schedule = LrSchedule::Cosine {
        warmup_steps: total / 20,
        total_steps: total,
        min_lr: 0.0,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut epochs = Vec::new();
    let mut best: Option<(f64, usize)> = None;
    let tmp_best = config.out.with_extension("best.tmp");
    let mut step = 0;
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
            let tokens = student.tokenizer.encode_batch(&chunk)?;
            let (ids, mask) = tokens.tensors(device)?;
            let out = student.bert.forward(&ids, &mask)?;
            let pooled = mean_pool(out.last_hidden(), &mask)?;
            let flat: Vec<f32> = batch
                .iter()
                .flat_map(|&i| targets[i].iter().copied())
                .collect();
            let target = Tensor::from_vec(flat, pooled.dims(), device)?;
            let mut loss = Tensor::zeros((), DType::F32, device)?;
            if config.cosine > 0.0 {
                let cos = (l2_normalize(&pooled)? * l2_normalize(&target)?)?.sum(D::Minus1)?;
                loss = (loss + ((1.0 - cos)?.mean_all()? * config.cosine)?)?;
            }
            if config.mse > 0.0 {
                loss = (loss + ((pooled - &target)?.sqr()?.mean_all()? * config.mse)?)?;
            }
            if config.hidden > 0.0 || config.attention > 0.0 {
                let t = teacher.bert.forward(&ids, &mask)?;
                let keep = mask.to_dtype(DType::F32)?;
                let tokens_kept = keep.sum_all()?.to_scalar::<f32>()? as f64;
                for (j, &tl) in layer_map.iter().enumerate() {
                    if config.hidden > 0.0 {
                        let diff = (&out.hidden_states[j + 1] - t.hidden_states[tl + 1].detach())?;
                        let per_token = diff.sqr()?.mean(D::Minus1)?;
                        let term = ((per_token * &keep)?.sum_all()? / tokens_kept)?;
                        loss = (loss + (term * (config.hidden / layer_map.len() as f64))?)?;
                    }
                    if config.attention > 0.0 {
                        let (a, b) = (&out.attentions[j], t.attentions[tl].detach());
                        let (a, b) = if a.dim(1)? == b.dim(1)? {
                            (a.clone(), b)
                        } else {
                            (a.mean(1)?, b.mean(1)?)
                        };
                        if a.elem_count() > 0 && b.elem_count() > 0 {
                            let term = (a - b)?.sqr()?.mean_all()?;
                            loss = (loss + (term * (config.attention / layer_map.len() as f64))?)?;
                        }
                    }
                }
            }
            let value = loss.to_scalar::<f32>()? as f64;
            if !value.is_finite() {
                bail!("the loss became {value} at step {step} (epoch {epoch}): lower --lr");
            }
            let grads = loss.backward()?;
            opt_decay.step(&grads)?;
            opt_plain.step(&grads)?;
            loss_sum += value * batch.len() as f64;
            step += 1;
            if let Some(bar) = &bar {
                bar.inc(batch.len() as u64);
                bar.set_message(format!("loss {value:.4}"));
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let dev = eval_retrieval(
            &student,
            &config.out,
            &config.data_dir,
            GlossSplit::Dev,
            64,
            false,
        )?;
        let report = EpochReport {
            epoch,
            loss: loss_sum / texts.len() as f64,
            dev_accuracy_at_1: dev.accuracy_at_1,
            dev_mrr: dev.mrr,
            seconds: start.elapsed().as_secs_f64(),
        };
        if verbose {
            eprintln!(
                "epoch {epoch}: loss {:.5}, dev accuracy@1 {:.4}, MRR {:.4} ({:.0} s)",
                report.loss, report.dev_accuracy_at_1, report.dev_mrr, report.seconds
            );
        }
        if best.is_none_or(|(acc, _)| dev.accuracy_at_1 > acc) {
            best = Some((dev.accuracy_at_1, epoch));
            student.bert.save_dir(&tmp_best)?;
        }
        epochs.push(report);
    }
    let (_, best_epoch) = best.expect("at least one epoch");
    copy_tokenizer_files(&config.teacher, &tmp_best)?;
    let final_student = SentenceEncoder::load(&tmp_best, Some(config.max_length), device)?;
    let test = eval_retrieval(
        &final_student,
        &config.out,
        &config.data_dir,
        GlossSplit::Test,
        64,
        false,
    )?;
    let report = EncoderDistillReport {
        config: config.clone(),
        teacher_params: teacher.bert.config().num_params(),
        student_params: final_student.bert.config().num_params(),
        train_texts: texts.len(),
        epochs,
        best_epoch,
        untrained_test,
        test,
    };
    let json = serde_json::to_string_pretty(&report).context("cannot serialise the report")?;
    write_atomic(&tmp_best.join("report.json"), json + "\n")?;
    if config.out.exists() {
        std::fs::remove_dir(&config.out)
            .with_context(|| format!("cannot replace {}", config.out.display()))?;
    }
    std::fs::rename(&tmp_best, &config.out)
        .with_context(|| format!("cannot move the student to {}", config.out.display()))?;
    Ok(report)
}

/// Refuses `out` when it exists and is not an empty folder.
pub(crate) fn refuse_nonempty(out: &Path) -> Result<()> {
    if out.exists()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("{} exists and is not an empty folder", out.display());
    }
    Ok(())
}

/// AdamW at `lr` for a BERT's parameters: one optimiser with weight decay
/// `wd` on the matrices, one without it on biases, layer norms and embeddings.
pub(crate) fn bert_adamw(bert: &Bert, lr: f64, wd: f64) -> Result<(AdamW, AdamW)> {
    let (decayed, plain): (Vec<_>, Vec<_>) = bert
        .named_vars()
        .into_iter()
        .partition(|(n, v)| v.as_tensor().rank() == 2 && !n.contains("embeddings"));
    let params = |wd: f64| ParamsAdamW {
        lr,
        weight_decay: wd,
        ..Default::default()
    };
    let vars = |named: Vec<(String, candle_core::Var)>| named.into_iter().map(|(_, v)| v).collect();
    Ok((
        AdamW::new(vars(decayed), params(wd))?,
        AdamW::new(vars(plain), params(0.0))?,
    ))
}

/// Batches per pool of [`length_bucketed_batches`].
const POOL: usize = 50;

/// How many batches [`length_bucketed_batches`] makes of `texts` texts:
/// full pools, then the rest.
pub(crate) fn steps_per_epoch(texts: usize, batch_size: usize) -> usize {
    let pool = batch_size * POOL;
    texts / pool * POOL + (texts % pool).div_ceil(batch_size)
}

/// One epoch's batches: the texts shuffled, cut into pools of `POOL`
/// batches, each pool sorted by length and cut into batches, and the
/// batches shuffled — little padding, random composition (seeded).
pub(crate) fn length_bucketed_batches(
    texts: &[&str],
    batch_size: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.shuffle(rng);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for pool in order.chunks_mut(batch_size * POOL) {
        pool.sort_by_key(|&i| (texts[i].len(), i));
        batches.extend(pool.chunks(batch_size).map(<[usize]>::to_vec));
    }
    batches.shuffle(rng);
    batches
}

/// Copies the tokenizer and sentence-transformers files of `from` that
/// exist into `to`, so that the student folder loads on its own.
pub fn copy_tokenizer_files(from: &Path, to: &Path) -> Result<()> {
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
        "sentence_bert_config.json",
        "modules.json",
        "config_sentence_transformers.json",
    ] {
        let src = from.join(name);
        if src.is_file() {
            std::fs::copy(&src, to.join(name))
                .with_context(|| format!("cannot copy {}", src.display()))?;
        }
    }
    let pooling = from.join("1_Pooling").join("config.json");
    if pooling.is_file() {
        std::fs::create_dir_all(to.join("1_Pooling"))?;
        std::fs::copy(&pooling, to.join("1_Pooling").join("config.json"))?;
    }
    Ok(())
}
