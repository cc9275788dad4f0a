//! A fused CPU inference path for BERT encoders: what [`Bert::forward`]
//! computes, without autograd, on plain slices.
//!
//! candle's forward pass spends about half of MiniLM's time outside the
//! matrix products (a profile on one core: 54 % in GEMM): a pass and an
//! allocation per bias add, the transposes and copies that split and merge
//! the heads, per-head products that run one after another. Here:
//!
//! - the sequences of a batch are packed, without padding, into one
//!   `[tokens, hidden]` matrix (a batch of unequal texts computes only its
//!   real tokens);
//! - query, key and value are one product with the three weights side by
//!   side (stored transposed, `[in, out]`, so that the product streams them
//!   without packing), the bias (and, for the output projections, the
//!   residual) written into the destination first and the product added to
//!   it; the rows are split between the threads;
//! - attention runs per sequence in parallel, per head reading `Q`, `K`,
//!   `V` in place from the packed product and writing the context straight
//!   into its columns of the output: no transpose, no copy;
//! - GELU and layer norm run in place, with the one-pass kernels of
//!   [`crate::ops::transformer`].
//!
//! The results equal [`Bert::forward`]'s up to the order of float additions
//! (`tests/bert.rs`: hidden states within 1e-4, embeddings' cosine ≥
//! 0.99999 on MiniLM). Causal attention (`is_decoder`) is supported; the
//! language-model head is not part of this path.

use rayon::prelude::*;

use crate::bert::Bert;
use crate::error::{ModelError, Result};
use crate::ops::cpu::simd;
use crate::ops::gemm::{matmul, MatMut, MatRef};
use crate::ops::transformer::{exp_f32, gelu_f32, row_stats};

/// A linear layer with its weight transposed (`[in, out]`, row-major).
struct Linear {
    wt: Vec<f32>,
    bias: Vec<f32>,
    n_in: usize,
    n_out: usize,
}

impl Linear {
    /// From `[out, in]` weights (one or more stacked along `out`) and biases.
    fn stacked(parts: &[(&[f32], &[f32])], n_in: usize) -> Self {
        let n_out: usize = parts.iter().map(|(_, b)| b.len()).sum();
        let mut wt = vec![0f32; n_in * n_out];
        let mut bias = Vec::with_capacity(n_out);
        let mut col = 0;
        for (w, b) in parts {
            let rows = b.len();
            for r in 0..rows {
                for i in 0..n_in {
                    wt[i * n_out + col + r] = w[r * n_in + i];
                }
            }
            bias.extend_from_slice(b);
            col += rows;
        }
        Self {
            wt,
            bias,
            n_in,
            n_out,
        }
    }

    /// `y = [residual +] bias + x·Wᵀ` for `rows` rows, the rows split
    /// between the threads (each block one single-threaded product).
    fn apply(&self, x: &[f32], rows: usize, y: &mut [f32], residual: Option<&[f32]>) {
        let (k, n) = (self.n_in, self.n_out);
        if rows == 0 || n == 0 {
            return;
        }
        let chunk = rows_per_task(rows);
        y[..rows * n]
            .par_chunks_mut(chunk * n)
            .enumerate()
            .for_each(|(c, yc)| {
                let r = yc.len() / n;
                let first = c * chunk;
                match residual {
                    Some(res) => {
                        let res = &res[first * n..(first + r) * n];
                        for (row, rr) in yc.chunks_exact_mut(n).zip(res.chunks_exact(n)) {
                            for ((o, &a), &b) in row.iter_mut().zip(rr).zip(&self.bias) {
                                *o = a + b;
                            }
                        }
                    }
                    None => {
                        for row in yc.chunks_exact_mut(n) {
                            row.copy_from_slice(&self.bias);
                        }
                    }
                }
                if k > 0 {
                    matmul(
                        MatMut::row_major(yc, r, n),
                        MatRef::row_major(&x[first * k..(first + r) * k], r, k),
                        MatRef::row_major(&self.wt, k, n),
                        true,
                    );
                }
            });
    }
}

/// Rows per thread of a product over `rows` rows: an even split between
/// rayon's threads, at least 16 rows.
fn rows_per_task(rows: usize) -> usize {
    rows.div_ceil(rayon::current_num_threads().max(1)).max(16)
}

struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

struct Layer {
    heads: usize,
    qkv: Linear,
    out: Linear,
    norm1: Norm,
    up: Linear,
    down: Linear,
    norm2: Norm,
}

/// A [`Bert`]'s weights laid out for the fused forward pass (a copy: build
/// it again after training changes the model).
pub struct BertRuntime {
    hidden: usize,
    head_dim: usize,
    vocab: usize,
    max_positions: usize,
    causal: bool,
    eps: f32,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embed_norm: Norm,
    /// Width of the embeddings (`hidden` unless factorised).
    embed: usize,
    /// ALBERT's `E → hidden` mapping of factorised embeddings.
    mapping: Option<Linear>,
    /// One entry per layer run (a shared layer's weights copied to each).
    layers: Vec<Layer>,
}

impl BertRuntime {
    /// Copies `bert`'s weights (f32, any device) into the runtime's layout.
    pub fn new(bert: &Bert) -> Result<Self> {
        let c = bert.config();
        let t = bert.tensors()?;
        let get = |name: &str| -> Result<Vec<f32>> {
            let tensor = t
                .get(name)
                .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
            Ok(tensor.flatten_all()?.to_vec1::<f32>()?)
        };
        let norm = |p: &str| -> Result<Norm> {
            Ok(Norm {
                weight: get(&format!("{p}.weight"))?,
                bias: get(&format!("{p}.bias"))?,
            })
        };
        let h = c.hidden_size;
        let mut layers = Vec::with_capacity(c.num_layers());
        for (i, sizes) in c.layers.iter().enumerate() {
            let p = format!("encoder.layer.{}", c.weights_of_layer(i));
            let a = sizes.heads * c.head_dim;
            let (wq, bq) = (
                get(&format!("{p}.attention.self.query.weight"))?,
                get(&format!("{p}.attention.self.query.bias"))?,
            );
            let (wk, bk) = (
                get(&format!("{p}.attention.self.key.weight"))?,
                get(&format!("{p}.attention.self.key.bias"))?,
            );
            let (wv, bv) = (
                get(&format!("{p}.attention.self.value.weight"))?,
                get(&format!("{p}.attention.self.value.bias"))?,
            );
            let lin = |w: &str, b: &str, n_in: usize| -> Result<Linear> {
                let (w, b) = (get(&format!("{p}.{w}"))?, get(&format!("{p}.{b}"))?);
                Ok(Linear::stacked(&[(&w, &b)], n_in))
            };
            layers.push(Layer {
                heads: sizes.heads,
                qkv: Linear::stacked(&[(&wq, &bq), (&wk, &bk), (&wv, &bv)], h),
                out: lin(
                    "attention.output.dense.weight",
                    "attention.output.dense.bias",
                    a,
                )?,
                norm1: norm(&format!("{p}.attention.output.LayerNorm"))?,
                up: lin("intermediate.dense.weight", "intermediate.dense.bias", h)?,
                down: lin(
                    "output.dense.weight",
                    "output.dense.bias",
                    sizes.intermediate,
                )?,
                norm2: norm(&format!("{p}.output.LayerNorm"))?,
            });
        }
        let e = c.embedding_width();
        let token_type = get("embeddings.token_type_embeddings.weight")?[..e].to_vec();
        let mapping = match c.embedding_size {
            Some(_) => {
                let (w, b) = (
                    get("encoder.embedding_hidden_mapping_in.weight")?,
                    get("encoder.embedding_hidden_mapping_in.bias")?,
                );
                Some(Linear::stacked(&[(&w, &b)], e))
            }
            None => None,
        };
        Ok(Self {
            hidden: h,
            head_dim: c.head_dim,
            vocab: c.vocab_size,
            max_positions: c.max_position_embeddings,
            causal: c.is_decoder,
            eps: c.layer_norm_eps as f32,
            word: get("embeddings.word_embeddings.weight")?,
            position: get("embeddings.position_embeddings.weight")?,
            token_type,
            embed_norm: norm("embeddings.LayerNorm")?,
            embed: e,
            mapping,
            layers,
        })
    }

    /// The last layer's hidden states of every token of `seqs` (token ids,
    /// no padding), packed: `[Σ len, hidden]`, sequence after sequence.
    pub fn hidden_states(&self, seqs: &[&[u32]]) -> Result<Vec<f32>> {
        let h = self.hidden;
        for s in seqs {
            if s.len() > self.max_positions {
                return Err(ModelError::Config(format!(
                    "bert: {} tokens exceed max_position_embeddings {}",
                    s.len(),
                    self.max_positions
                )));
            }
            if let Some(&id) = s.iter().find(|&&id| id as usize >= self.vocab) {
                return Err(ModelError::Config(format!(
                    "bert: token id {id} is not below vocab_size {}",
                    self.vocab
                )));
            }
        }
        let mut spans = Vec::with_capacity(seqs.len());
        let mut n = 0;
        for s in seqs {
            spans.push((n, s.len()));
            n += s.len();
        }
        // embeddings: word + position + token type 0, then layer norm (and
        // the mapping to the hidden width of factorised embeddings)
        let e = self.embed;
        let mut x = vec![0f32; n * e];
        for (s, &(start, _)) in seqs.iter().zip(&spans) {
            for (i, &id) in s.iter().enumerate() {
                let row = &mut x[(start + i) * e..(start + i + 1) * e];
                let w = &self.word[id as usize * e..(id as usize + 1) * e];
                let p = &self.position[i * e..(i + 1) * e];
                for (((o, &a), &b), &c) in row.iter_mut().zip(w).zip(p).zip(&self.token_type) {
                    *o = (a + b) + c;
                }
            }
        }
        self.norm_rows_of(&mut x, &self.embed_norm, e);
        if let Some(mapping) = &self.mapping {
            let mut mapped = vec![0f32; n * h];
            mapping.apply(&x, n, &mut mapped, None);
            x = mapped;
        }
        let widest = |f: &dyn Fn(&Layer) -> usize| self.layers.iter().map(f).max().unwrap_or(0);
        let mut qkv = vec![0f32; n * widest(&|l| l.qkv.n_out)];
        let mut ctx = vec![0f32; n * widest(&|l| l.out.n_in)];
        let mut mid = vec![0f32; n * widest(&|l| l.up.n_out)];
        let mut y = vec![0f32; n * h];
        for layer in &self.layers {
            let a = layer.heads * self.head_dim;
            layer.qkv.apply(&x, n, &mut qkv, None);
            self.attention(layer, &qkv[..n * 3 * a], &mut ctx[..n * a], &spans);
            layer.out.apply(&ctx, n, &mut y, Some(&x));
            self.norm_rows(&mut y, &layer.norm1);
            let inter = layer.up.n_out;
            layer.up.apply(&y, n, &mut mid, None);
            gelu_rows(&mut mid[..n * inter]);
            layer.down.apply(&mid, n, &mut x, Some(&y));
            self.norm_rows(&mut x, &layer.norm2);
        }
        Ok(x)
    }

    /// The mean of each sequence's last hidden states (sentence-transformers'
    /// pooling), one `[hidden]` vector per sequence.
    pub fn mean_pooled(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let h = self.hidden;
        let x = self.hidden_states(seqs)?;
        let mut out = Vec::with_capacity(seqs.len());
        let mut start = 0;
        for s in seqs {
            let mut sum = vec![0f32; h];
            for row in x[start * h..(start + s.len()) * h].chunks_exact(h) {
                for (o, &v) in sum.iter_mut().zip(row) {
                    *o += v;
                }
            }
            let count = (s.len() as f32).max(1e-9);
            sum.iter_mut().for_each(|v| *v /= count);
            out.push(sum);
            start += s.len();
        }
        Ok(out)
    }

    /// [`BertRuntime::mean_pooled`] divided by its L2 norm (clamped at
    /// 1e-12): sentence-transformers' embeddings.
    pub fn sentence_embeddings(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let mut out = self.mean_pooled(seqs)?;
        for v in &mut out {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|x| *x /= norm);
        }
        Ok(out)
    }

    /// Self-attention of every sequence (in parallel), every head reading
    /// its query, key and value columns of `qkv` (`[tokens, 3·a]`) in place
    /// and writing its context into its columns of `ctx` (`[tokens, a]`).
    fn attention(&self, layer: &Layer, qkv: &[f32], ctx: &mut [f32], spans: &[(usize, usize)]) {
        let (heads, d) = (layer.heads, self.head_dim);
        let a = heads * d;
        if a == 0 {
            return;
        }
        let scale = 1.0 / (d as f32).sqrt();
        let causal = self.causal;
        let mut blocks = Vec::with_capacity(spans.len());
        let mut rest = ctx;
        for &(_, len) in spans {
            let (block, tail) = rest.split_at_mut(len * a);
            blocks.push(block);
            rest = tail;
        }
        blocks
            .into_par_iter()
            .zip(spans.par_iter())
            .for_each(|(block, &(start, n))| {
                if n == 0 {
                    return;
                }
                let mut scores = vec![0f32; n * n];
                let rows = &qkv[start * 3 * a..(start + n) * 3 * a];
                for head in 0..heads {
                    let q = MatRef::strided(&rows[head * d..], n, d, 3 * a, 1);
                    let k = MatRef::strided(&rows[a + head * d..], n, d, 3 * a, 1);
                    let v = MatRef::strided(&rows[2 * a + head * d..], n, d, 3 * a, 1);
                    matmul(MatMut::row_major(&mut scores, n, n), q, k.t(), false);
                    softmax_rows(&mut scores, n, scale, causal);
                    matmul(
                        MatMut::strided(&mut block[head * d..], n, d, a, 1),
                        MatRef::row_major(&scores, n, n),
                        v,
                        false,
                    );
                }
            });
    }

    /// Layer norm of every row of `x` in place.
    fn norm_rows(&self, x: &mut [f32], norm: &Norm) {
        self.norm_rows_of(x, norm, self.hidden)
    }

    /// [`Self::norm_rows`] of rows `h` wide.
    fn norm_rows_of(&self, x: &mut [f32], norm: &Norm, h: usize) {
        let eps = self.eps;
        let chunk = rows_per_task(x.len() / h.max(1)) * h;
        x.par_chunks_mut(chunk.max(h)).for_each(|c| {
            simd(
                #[inline(always)]
                || {
                    for row in c.chunks_exact_mut(h) {
                        let (mean, rstd) = row_stats(row, eps);
                        for ((o, &w), &b) in row.iter_mut().zip(&norm.weight).zip(&norm.bias) {
                            *o = (*o - mean) * rstd * w + b;
                        }
                    }
                },
            )
        });
    }
}

/// `softmax(scale · s)` of every row of the `n × n` scores in place; with
/// `causal`, row `i` over its first `i + 1` entries (the rest 0).
fn softmax_rows(scores: &mut [f32], n: usize, scale: f32, causal: bool) {
    simd(
        #[inline(always)]
        || {
            for (i, row) in scores.chunks_exact_mut(n).enumerate() {
                let keys = if causal { i + 1 } else { n };
                let (live, masked) = row.split_at_mut(keys);
                masked.iter_mut().for_each(|v| *v = 0.0);
                let max = live.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let mut sum = 0f32;
                for v in live.iter_mut() {
                    *v = exp_f32((*v - max) * scale);
                    sum += *v;
                }
                let inv = 1.0 / sum;
                live.iter_mut().for_each(|v| *v *= inv);
            }
        },
    )
}

/// The erf GELU in place, in parallel.
fn gelu_rows(x: &mut [f32]) {
    x.par_chunks_mut(1 << 14).for_each(|c| {
        simd(
            #[inline(always)]
            || c.iter_mut().for_each(|v| *v = gelu_f32(*v)),
        )
    });
}
