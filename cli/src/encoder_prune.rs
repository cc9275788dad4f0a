//! Structured pruning of a BERT sentence encoder with physical removal:
//! attention heads, feed-forward neurons and whole layers, scored on the
//! WordNet training text and removed globally (one threshold over all
//! layers).
//!
//! Criteria:
//! - `magnitude`: the L2 norm of a head's query, key, value rows and output
//!   columns (a neuron's intermediate row and output column);
//! - `michel`: Michel et al.'s head importance, `Σ_batches |∂L/∂ξ|` for a
//!   mask ξ multiplying the head's (neuron's) output, with L the in-batch
//!   contrastive loss of the retrieval task on the training split (each
//!   synset's first example against all glosses of the batch, τ = 0.05);
//! - `attention-variance`: the guide's attention-variance score of a head,
//!   the variance over the keys of its attention probabilities,
//!   `(1/n) Σ_k a_qk² − 1/n²` for a query with `n` real keys, averaged
//!   over the real queries of the scoring texts (glosses and first
//!   examples) — a head that spreads its attention evenly moves little; its
//!   neurons are scored as `michel` scores them (the score has no neuron
//!   form);
//! - `teacher-guided`: the paper's `Σ |θ ⊙ ∂L/∂θ|` over the head's (neuron's)
//!   parameters, L the distillation loss `1 − cos` between the model's
//!   sentence embeddings and the teacher's (`--teacher`), the gradient
//!   accumulated over the scoring batches. (For the teacher itself L is 0:
//!   score a student that differs from it, such as a distilled layer subset.)
//!
//! Layers are scored by the guide's layer importance, the mean `|g·w|` over
//! the layer's parameters under the same loss (contrastive, or distillation
//! with a teacher), and the lowest are dropped.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use kdprune_data::text::{load_glosses, GlossSplit, Synset};
use kdprune_models::bert::{l2_normalize, mean_pool, Bert, ForwardMasks};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::encoder_distill::copy_tokenizer_files;
use crate::files::write_atomic;
use crate::text::SentenceEncoder;

/// How heads and neurons are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitCriterion {
    Magnitude,
    Michel,
    AttentionVariance,
    TeacherGuided,
}

impl std::str::FromStr for UnitCriterion {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "magnitude" => Ok(Self::Magnitude),
            "michel" => Ok(Self::Michel),
            "attention-variance" => Ok(Self::AttentionVariance),
            "teacher-guided" => Ok(Self::TeacherGuided),
            other => Err(format!(
                "unknown criterion '{other}' (magnitude, michel, attention-variance, teacher-guided)"
            )),
        }
    }
}

/// What [`prune_encoder`] does.
#[derive(Debug, Clone, Serialize)]
pub struct EncoderPruneConfig {
    pub model: PathBuf,
    pub teacher: Option<PathBuf>,
    pub data_dir: PathBuf,
    /// Fraction of all heads to remove (one global threshold).
    pub heads: f64,
    /// Fraction of all intermediate neurons to remove.
    pub neurons: f64,
    /// How many of the least important layers to drop.
    pub drop_layers: usize,
    /// Keep exactly these layers, in this order (instead of `drop_layers`).
    pub keep_layers: Option<Vec<usize>>,
    pub criterion: UnitCriterion,
    pub score_batches: usize,
    pub batch_size: usize,
    pub max_length: usize,
    pub seed: u64,
    pub out: PathBuf,
}

/// Per-layer sizes and scores, and the result.
#[derive(Debug, Clone, Serialize)]
pub struct EncoderPruneReport {
    pub config: EncoderPruneConfig,
    pub params_before: usize,
    pub params_after: usize,
    /// Per layer of the input model: (heads, neurons) before.
    pub before: Vec<(usize, usize)>,
    /// Per layer of the output model: (heads, neurons) after.
    pub after: Vec<(usize, usize)>,
    /// The layers of the input model that were kept.
    pub kept_layers: Vec<usize>,
    pub layer_importance: Vec<f64>,
    pub head_scores: Vec<Vec<f64>>,
    pub neuron_scores: Vec<Vec<f64>>,
}

/// Scores per head and per neuron of every layer, and per layer.
pub struct Scores {
    pub heads: Vec<Vec<f64>>,
    pub neurons: Vec<Vec<f64>>,
    pub layers: Vec<f64>,
}

/// The scoring batches: `count` batches of `size` synsets of the training
/// split, drawn without replacement from a seeded shuffle.
fn scoring_batches(synsets: &[Synset], count: usize, size: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..synsets.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    order
        .chunks(size)
        .take(count)
        .map(<[usize]>::to_vec)
        .collect()
}

/// Sentence embeddings (unit length) of `texts` under `masks`.
fn embed(enc: &SentenceEncoder, texts: &[&str], masks: &ForwardMasks) -> Result<Tensor> {
    let tokens = enc.tokenizer.encode_batch(texts)?;
    let (ids, mask) = tokens.tensors(enc.bert.device())?;
    let out = enc.bert.forward_masked(&ids, &mask, masks)?;
    Ok(l2_normalize(&mean_pool(out.last_hidden(), &mask)?)?)
}

/// The loss of one batch of synsets: distillation to the teacher's
/// embeddings (`1 − cos` over glosses and first examples) when there is a
/// teacher, else the in-batch contrastive retrieval loss.
fn batch_loss(
    enc: &SentenceEncoder,
    teacher: Option<&SentenceEncoder>,
    synsets: &[&Synset],
    masks: &ForwardMasks,
) -> Result<Tensor> {
    let glosses: Vec<&str> = synsets.iter().map(|s| s.gloss.as_str()).collect();
    let examples: Vec<&str> = synsets.iter().map(|s| s.examples[0].as_str()).collect();
    match teacher {
        Some(t) => {
            let texts: Vec<&str> = glosses.iter().chain(&examples).copied().collect();
            let target = embed(t, &texts, &ForwardMasks::default())?.detach();
            let ours = embed(enc, &texts, masks)?;
            Ok((1.0 - (ours * target)?.sum(D::Minus1)?)?.mean_all()?)
        }
        None => {
            let q = embed(enc, &examples, masks)?;
            let k = embed(enc, &glosses, masks)?;
            let logits = (q.matmul(&k.t()?)? / 0.05)?;
            let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
            let n = synsets.len();
            let eye = Tensor::eye(n, DType::F32, enc.bert.device())?;
            Ok(((logp * eye)?.sum_all()? / -(n as f64))?)
        }
    }
}

/// Scores every head, neuron and layer of `enc` (see the module docs).
pub fn score_units(
    enc: &SentenceEncoder,
    teacher: Option<&SentenceEncoder>,
    criterion: UnitCriterion,
    synsets: &[Synset],
    batches: &[Vec<usize>],
) -> Result<Scores> {
    let cfg = enc.bert.config().clone();
    let device = enc.bert.device().clone();
    let d = cfg.head_dim;
    let n_layers = cfg.num_layers();
    let head_vars: Vec<Var> = cfg
        .layers
        .iter()
        .map(|l| Var::ones(l.heads, DType::F32, &device))
        .collect::<candle_core::Result<_>>()?;
    let neuron_vars: Vec<Var> = cfg
        .layers
        .iter()
        .map(|l| Var::ones(l.intermediate, DType::F32, &device))
        .collect::<candle_core::Result<_>>()?;
    let masks = ForwardMasks {
        heads: Some(head_vars.iter().map(|v| v.as_tensor().clone()).collect()),
        neurons: Some(neuron_vars.iter().map(|v| v.as_tensor().clone()).collect()),
    };
    let vars = enc.bert.named_vars();
    let mut mask_scores: Vec<(Vec<f64>, Vec<f64>)> = cfg
        .layers
        .iter()
        .map(|l| (vec![0.0; l.heads], vec![0.0; l.intermediate]))
        .collect();
    let mut grad_sum: Vec<Option<Tensor>> = vec![None; vars.len()];
    let mut variance: Vec<Vec<f64>> = cfg.layers.iter().map(|l| vec![0.0; l.heads]).collect();
    let mut queries = 0.0f64;
    for batch in batches {
        let synsets: Vec<&Synset> = batch.iter().map(|&i| &synsets[i]).collect();
        if criterion == UnitCriterion::AttentionVariance {
            let texts: Vec<&str> = synsets
                .iter()
                .map(|s| s.gloss.as_str())
                .chain(synsets.iter().map(|s| s.examples[0].as_str()))
                .collect();
            queries += attention_variance(enc, &texts, &mut variance)?;
        }
        let loss = batch_loss(enc, teacher, &synsets, &masks)?;
        let grads = loss.backward()?;
        for (i, (hv, nv)) in head_vars.iter().zip(&neuron_vars).enumerate() {
            let (hs, ns) = &mut mask_scores[i];
            for (var, out) in [(hv, hs), (nv, ns)] {
                if let Some(g) = grads.get(var.as_tensor()) {
                    for (o, v) in out.iter_mut().zip(g.to_vec1::<f32>()?) {
                        *o += v.abs() as f64;
                    }
                }
            }
        }
        for ((_, var), slot) in vars.iter().zip(grad_sum.iter_mut()) {
            if let Some(g) = grads.get(var.as_tensor()) {
                *slot = Some(match slot.take() {
                    Some(s) => (s + g)?,
                    None => g.clone(),
                });
            }
        }
    }
    // |θ ⊙ Σg| per parameter, by name
    let mut saliency = std::collections::BTreeMap::new();
    for ((name, var), g) in vars.iter().zip(&grad_sum) {
        let s = match g {
            Some(g) => (var.as_tensor() * g)?.abs()?,
            None => var.as_tensor().zeros_like()?,
        };
        saliency.insert(name.clone(), s);
    }
    let values = enc.bert.tensors()?;
    let mut heads = Vec::with_capacity(n_layers);
    let mut neurons = Vec::with_capacity(n_layers);
    let mut layers = Vec::with_capacity(n_layers);
    for (i, l) in cfg.layers.iter().enumerate() {
        let p = format!("encoder.layer.{i}");
        // per row (axis 0) and per column (axis 1) sums of |θ ⊙ g|, or of θ²
        let pick = |name: &str| -> Result<Tensor> {
            Ok(match criterion {
                UnitCriterion::Magnitude => values[name].sqr()?,
                _ => saliency[name].clone(),
            })
        };
        let (h_scores, n_scores) = match criterion {
            UnitCriterion::Michel => mask_scores[i].clone(),
            UnitCriterion::AttentionVariance => (
                variance[i].iter().map(|v| v / queries.max(1.0)).collect(),
                mask_scores[i].1.clone(),
            ),
            _ => {
                let mut h = vec![0.0; l.heads * d];
                for q in ["query", "key", "value"] {
                    let w = pick(&format!("{p}.attention.self.{q}.weight"))?;
                    let b = pick(&format!("{p}.attention.self.{q}.bias"))?;
                    let per_row = w.sum(1)?.to_vec1::<f32>()?;
                    for ((acc, a), c) in h.iter_mut().zip(per_row).zip(b.to_vec1::<f32>()?) {
                        *acc += a as f64 + c as f64;
                    }
                }
                let o = pick(&format!("{p}.attention.output.dense.weight"))?;
                for (acc, v) in h.iter_mut().zip(o.sum(0)?.to_vec1::<f32>()?) {
                    *acc += v as f64;
                }
                let per_head: Vec<f64> = h.chunks(d.max(1)).map(|c| c.iter().sum()).collect();
                let mut n: Vec<f64> = pick(&format!("{p}.intermediate.dense.weight"))?
                    .sum(1)?
                    .to_vec1::<f32>()?
                    .into_iter()
                    .map(f64::from)
                    .collect();
                let nb = pick(&format!("{p}.intermediate.dense.bias"))?.to_vec1::<f32>()?;
                let no = pick(&format!("{p}.output.dense.weight"))?
                    .sum(0)?
                    .to_vec1::<f32>()?;
                for ((acc, b), c) in n.iter_mut().zip(nb).zip(no) {
                    *acc += b as f64 + c as f64;
                }
                if criterion == UnitCriterion::Magnitude {
                    (
                        per_head.into_iter().map(f64::sqrt).collect(),
                        n.into_iter().map(f64::sqrt).collect(),
                    )
                } else {
                    (per_head, n)
                }
            }
        };
        heads.push(h_scores);
        neurons.push(n_scores);
        // the layer's mean |g·w|
        let (mut sum, mut count) = (0.0f64, 0usize);
        for (name, s) in &saliency {
            if name.starts_with(&format!("{p}.")) {
                sum += s.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                count += s.elem_count();
            }
        }
        layers.push(if count > 0 { sum / count as f64 } else { 0.0 });
    }
    Ok(Scores {
        heads,
        neurons,
        layers,
    })
}

/// Adds, per layer and head, the variance over the keys of each real
/// query's attention probabilities, `(1/n) Σ_k a_qk² − 1/n²` (`n` real keys:
/// the probabilities sum to 1, so their mean is `1/n`), summed over the
/// real queries of `texts`; returns how many queries there were.
pub fn attention_variance(
    enc: &SentenceEncoder,
    texts: &[&str],
    sums: &mut [Vec<f64>],
) -> Result<f64> {
    let tokens = enc.tokenizer.encode_batch(texts)?;
    let (ids, mask) = tokens.tensors(enc.bert.device())?;
    let out = enc.bert.forward(&ids, &mask)?;
    let keep = mask.to_dtype(DType::F32)?;
    // 1/n per text, [B, 1, 1]
    let inv_n = keep.sum_keepdim(1)?.recip()?.unsqueeze(2)?;
    let queries = keep.sum_all()?.to_scalar::<f32>()? as f64;
    for (layer, probs) in out.attentions.iter().enumerate() {
        if probs.dim(1)? == 0 {
            continue;
        }
        // Σ_k a² per query, [B, H, T]
        let sq = probs.sqr()?.sum(D::Minus1)?;
        let var = sq.broadcast_mul(&inv_n)?.broadcast_sub(&inv_n.sqr()?)?;
        let per_head = var
            .broadcast_mul(&keep.unsqueeze(1)?)?
            .sum(2)?
            .sum(0)?
            .to_vec1::<f32>()?;
        for (acc, v) in sums[layer].iter_mut().zip(per_head) {
            *acc += v as f64;
        }
    }
    Ok(queries)
}

/// The units to keep per layer when the `ratio` of all units with the
/// lowest scores go (one global threshold; ties broken by layer, then index).
pub fn keep_global(scores: &[Vec<f64>], ratio: f64) -> Vec<Vec<usize>> {
    let mut all: Vec<(f64, usize, usize)> = scores
        .iter()
        .enumerate()
        .flat_map(|(l, s)| s.iter().enumerate().map(move |(i, &v)| (v, l, i)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let remove = (ratio * all.len() as f64).round() as usize;
    let mut keep: Vec<Vec<bool>> = scores.iter().map(|s| vec![true; s.len()]).collect();
    for &(_, l, i) in &all[..remove.min(all.len())] {
        keep[l][i] = false;
    }
    keep.iter()
        .map(|k| {
            k.iter()
                .enumerate()
                .filter(|(_, &x)| x)
                .map(|(i, _)| i)
                .collect()
        })
        .collect()
}

/// Scores, removes and writes the smaller encoder (with the tokenizer
/// files and `prune-report.json`) to `config.out`.
pub fn prune_encoder(config: &EncoderPruneConfig, device: &Device) -> Result<EncoderPruneReport> {
    for (name, r) in [("--heads", config.heads), ("--neurons", config.neurons)] {
        if !(0.0..1.0).contains(&r) {
            bail!("{name} {r} must lie in [0, 1)");
        }
    }
    if config.score_batches == 0 || config.batch_size < 2 {
        bail!("--score-batches must be at least 1 and --batch-size at least 2");
    }
    if config.out.exists() {
        bail!("{} exists: give a new folder", config.out.display());
    }
    if config.criterion == UnitCriterion::TeacherGuided {
        let Some(teacher) = &config.teacher else {
            bail!("the teacher-guided criterion needs --teacher DIR");
        };
        let same = match (teacher.canonicalize(), config.model.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if same {
            bail!(
                "teacher-guided scores of the teacher itself are all 0 (the distillation loss is at \
                 its minimum): score a student that differs from it (e.g. a distilled layer subset), \
                 or use --criterion michel or attention-variance"
            );
        }
    }
    let enc = SentenceEncoder::load(&config.model, Some(config.max_length), device)?;
    let n_layers = enc.bert.config().num_layers();
    if config.drop_layers >= n_layers {
        bail!(
            "--drop-layers {} leaves no layer of {n_layers}",
            config.drop_layers
        );
    }
    let teacher = match &config.teacher {
        Some(t) => Some(SentenceEncoder::load(t, Some(config.max_length), device)?),
        None => None,
    };
    let synsets = load_glosses(&config.data_dir, GlossSplit::Train)
        .with_context(|| format!("the scoring text in {}", config.data_dir.display()))?;
    let batches = scoring_batches(
        &synsets,
        config.score_batches,
        config.batch_size,
        config.seed,
    );
    let scores = if config.heads == 0.0 && config.neurons == 0.0 && config.keep_layers.is_some() {
        // nothing to score: the layers are named
        let cfg = enc.bert.config();
        Scores {
            heads: cfg.layers.iter().map(|l| vec![0.0; l.heads]).collect(),
            neurons: cfg
                .layers
                .iter()
                .map(|l| vec![0.0; l.intermediate])
                .collect(),
            layers: vec![0.0; n_layers],
        }
    } else {
        score_units(&enc, teacher.as_ref(), config.criterion, &synsets, &batches)?
    };
    let before: Vec<(usize, usize)> = enc
        .bert
        .config()
        .layers
        .iter()
        .map(|l| (l.heads, l.intermediate))
        .collect();
    let mut bert: Bert = enc.bert.clone();
    if config.heads > 0.0 {
        bert = bert.remove_heads(&keep_global(&scores.heads, config.heads))?;
    }
    if config.neurons > 0.0 {
        bert = bert.remove_neurons(&keep_global(&scores.neurons, config.neurons))?;
    }
    let mut order: Vec<usize> = (0..n_layers).collect();
    order.sort_by(|&a, &b| {
        scores.layers[a]
            .total_cmp(&scores.layers[b])
            .then(a.cmp(&b))
    });
    let kept_layers: Vec<usize> = match &config.keep_layers {
        Some(layers) => layers.clone(),
        None => {
            let mut kept = order[config.drop_layers..].to_vec();
            kept.sort_unstable();
            kept
        }
    };
    if kept_layers != (0..n_layers).collect::<Vec<_>>() {
        bert = bert.layer_subset(&kept_layers)?;
    }
    let tmp = config.out.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("cannot clear {}", tmp.display()))?;
    }
    bert.save_dir(&tmp)?;
    copy_tokenizer_files(&config.model, &tmp)?;
    let report = EncoderPruneReport {
        config: config.clone(),
        params_before: enc.bert.config().num_params(),
        params_after: bert.config().num_params(),
        before,
        after: bert
            .config()
            .layers
            .iter()
            .map(|l| (l.heads, l.intermediate))
            .collect(),
        kept_layers,
        layer_importance: scores.layers,
        head_scores: scores.heads,
        neuron_scores: scores.neurons,
    };
    let json = serde_json::to_string_pretty(&report).context("cannot serialise the report")?;
    write_atomic(&tmp.join("prune-report.json"), json + "\n")?;
    std::fs::rename(&tmp, &config.out)
        .with_context(|| format!("cannot move the model to {}", config.out.display()))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_global_threshold_over_all_layers_ties_by_position() {
        let scores = vec![vec![0.5, 0.1, 0.9], vec![0.1, 0.3]];
        // 2 of 5 go: the two 0.1s (layer 0 index 1, layer 1 index 0)
        assert_eq!(keep_global(&scores, 0.4), vec![vec![0, 2], vec![1]]);
        // 3 of 5: then 0.3; a layer may lose every unit
        assert_eq!(keep_global(&scores, 0.6), vec![vec![0, 2], vec![]]);
        assert_eq!(keep_global(&scores, 0.0), vec![vec![0, 1, 2], vec![0, 1]]);
        // round(0.5 × 5) = 3 (half away from zero)
        assert_eq!(keep_global(&scores, 0.5), vec![vec![0, 2], vec![]]);
    }
}
