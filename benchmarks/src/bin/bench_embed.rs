//! Sentence embeddings per second of a BERT encoder folder (default: the
//! shared all-MiniLM-L6-v2) through kdprune's encoder (`kdprune embed`'s
//! code: tokenisation, the fused inference path, mean pooling, L2
//! normalisation), against candle's forward pass on padded batches (the
//! path training uses) and sentence-transformers on PyTorch with the same
//! texts, batch size and threads, measured in the same run when a Python
//! with sentence-transformers is found (`KDPRUNE_PYTHON`, else `python3`):
//!
//! ```text
//! model=DIR texts=1024 batch=32 threads=2 kdprune_sent_s=X candle_forward_sent_s=C fused_speedup=X/C pytorch_sent_s=Y ratio=X/Y
//! ```
//!
//! The texts are the glosses then the example sentences of the WordNet
//! glosses test split, the first `--texts` of them; each figure is the
//! median over `--rounds` passes over them (after a warm-up batch).
//!
//! `--train` times instead a training step — forward pass, mean pooling,
//! a loss on the embeddings, backward pass — at batch 32 and exactly 64
//! tokens per text (padded or truncated), and prints the peak resident
//! memory of the process (`VmHWM`):
//!
//! ```text
//! model=DIR train_tokens=64 batch=32 threads=2 train_sent_s=X peak_rss_mib=M
//! ```
//!
//! `RAYON_NUM_THREADS=2 cargo run --release -p kdprune-benchmarks --bin bench-embed [-- --texts 1024 --rounds 3 --model DIR --data-dir DIR] [--train]`

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use kdprune_benchmarks::{count_arg, cpu_features, load_average, text_arg};
use kdprune_cli::runtime::tune_process;
use kdprune_cli::text::SentenceEncoder;
use kdprune_data::text::{load_glosses, GlossSplit, RetrievalTask};

fn main() -> Result<()> {
    tune_process();
    let shared = std::env::var_os("KDPRUNE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared"));
    let model = text_arg("--model")
        .map(PathBuf::from)
        .unwrap_or_else(|| shared.join("models/all-MiniLM-L6-v2"));
    let data = text_arg("--data-dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| shared.join("datasets/wordnet-glosses"));
    let n = count_arg("--texts", 1024).map_err(anyhow::Error::msg)?;
    let rounds = count_arg("--rounds", 3).map_err(anyhow::Error::msg)?;
    let batch = count_arg("--batch-size", 32).map_err(anyhow::Error::msg)?;
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if !model.join("config.json").is_file() {
        bail!(
            "no model folder at {} (pass --model DIR or set KDPRUNE_SHARED)",
            model.display()
        );
    }
    let synsets =
        load_glosses(&data, GlossSplit::Test).context("the texts: pass --data-dir DIR")?;
    let task = RetrievalTask::new(&synsets);
    let texts: Vec<&str> = task
        .glosses
        .iter()
        .map(String::as_str)
        .chain(task.queries.iter().map(|(q, _)| q.as_str()))
        .take(n)
        .collect();
    eprintln!(
        "cpu: {} · threads {threads} · load {:?}",
        cpu_features(),
        load_average()
    );
    if std::env::args().any(|a| a == "--train") {
        return train_step(&model, &texts, batch, rounds, threads);
    }
    let encoder = SentenceEncoder::load(&model, None, &Device::Cpu)?;
    encoder.embed(&texts[..batch.min(texts.len())], batch, None)?;
    let mut rates: Vec<f64> = (0..rounds)
        .map(|_| -> Result<f64> {
            let start = Instant::now();
            encoder.embed(&texts, batch, None)?;
            Ok(texts.len() as f64 / start.elapsed().as_secs_f64())
        })
        .collect::<Result<_>>()?;
    rates.sort_by(f64::total_cmp);
    let ours = rates[rates.len() / 2];
    // the baseline: candle's forward pass on padded batches
    let mut unfused: Vec<f64> = (0..rounds)
        .map(|_| -> Result<f64> {
            let start = Instant::now();
            encoder.embed_unfused(&texts, batch)?;
            Ok(texts.len() as f64 / start.elapsed().as_secs_f64())
        })
        .collect::<Result<_>>()?;
    unfused.sort_by(f64::total_cmp);
    let unfused = unfused[unfused.len() / 2];
    let mut line = format!(
        "model={} texts={} batch={batch} threads={threads} kdprune_sent_s={ours:.1} candle_forward_sent_s={unfused:.1} fused_speedup={:.2}",
        model.display(),
        texts.len(),
        ours / unfused
    );
    let python = std::env::var("KDPRUNE_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("embed_reference.py");
    let out = Command::new(&python)
        .arg(&script)
        .args([
            "--model",
            &model.to_string_lossy(),
            "--data-dir",
            &data.to_string_lossy(),
        ])
        .args(["--threads", &threads.to_string(), "--texts", &n.to_string()])
        .args([
            "--batch-size",
            &batch.to_string(),
            "--rounds",
            &rounds.to_string(),
        ])
        .output();
    let theirs = out.ok().filter(|o| o.status.success()).and_then(|o| {
        String::from_utf8_lossy(&o.stdout).lines().find_map(|l| {
            l.strip_prefix("pytorch_sent_s=")
                .and_then(|v| v.parse::<f64>().ok())
        })
    });
    match theirs {
        Some(t) => line += &format!(" pytorch_sent_s={t:.1} ratio={:.2}", ours / t),
        None => eprintln!(
            "no PyTorch figure: `{python} {}` failed (set KDPRUNE_PYTHON to a Python with sentence-transformers)",
            script.display()
        ),
    }
    println!("{line}");
    Ok(())
}

/// Sentences per second of a training step at exactly 64 tokens, and the
/// process's peak resident memory.
fn train_step(
    model: &std::path::Path,
    texts: &[&str],
    batch: usize,
    rounds: usize,
    threads: usize,
) -> Result<()> {
    use kdprune_models::bert::{l2_normalize, mean_pool};
    const TOKENS: usize = 64;
    let encoder = SentenceEncoder::load(model, Some(TOKENS), &Device::Cpu)?;
    // padded to 64 tokens whatever the texts' lengths (pad id 0, mask 0)
    let batches: Vec<(candle_core::Tensor, candle_core::Tensor)> = texts
        .chunks(batch)
        .filter(|c| c.len() == batch)
        .map(|chunk| -> Result<_> {
            let t = encoder.tokenizer.encode_batch(chunk)?;
            let (mut ids, mut mask) = (vec![0u32; batch * TOKENS], vec![0u32; batch * TOKENS]);
            for r in 0..batch {
                let n = t.tokens.min(TOKENS);
                ids[r * TOKENS..r * TOKENS + n]
                    .copy_from_slice(&t.ids[r * t.tokens..r * t.tokens + n]);
                mask[r * TOKENS..r * TOKENS + n]
                    .copy_from_slice(&t.mask[r * t.tokens..r * t.tokens + n]);
            }
            let dev = Device::Cpu;
            Ok((
                candle_core::Tensor::from_vec(ids, (batch, TOKENS), &dev)?,
                candle_core::Tensor::from_vec(mask, (batch, TOKENS), &dev)?,
            ))
        })
        .collect::<Result<_>>()?;
    if batches.is_empty() {
        bail!("fewer than {batch} texts");
    }
    let step = |(ids, mask): &(candle_core::Tensor, candle_core::Tensor)| -> Result<()> {
        let out = encoder.bert.forward(ids, mask)?;
        let emb = l2_normalize(&mean_pool(out.last_hidden(), mask)?)?;
        let loss = emb.sum_all()?;
        let grads = loss.backward()?;
        std::hint::black_box(grads);
        Ok(())
    };
    step(&batches[0])?;
    let mut rates: Vec<f64> = (0..rounds)
        .map(|_| -> Result<f64> {
            let start = Instant::now();
            for b in &batches {
                step(b)?;
            }
            Ok((batches.len() * batch) as f64 / start.elapsed().as_secs_f64())
        })
        .collect::<Result<_>>()?;
    rates.sort_by(f64::total_cmp);
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or("unknown".to_string(), |kb| format!("{:.0}", kb / 1024.0));
    println!(
        "model={} train_tokens={TOKENS} batch={batch} threads={threads} train_sent_s={:.1} peak_rss_mib={peak}",
        model.display(),
        rates[rates.len() / 2]
    );
    Ok(())
}
