//! Text: Hugging Face tokenisation (`tokenizer.json`, through the
//! `tokenizers` crate) into padded id and mask batches, and the WordNet
//! glosses data (`wordnet-glosses/{train,dev,test}.tsv.gz`) with its
//! retrieval task.

use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use tokenizers::{PaddingParams, PaddingStrategy, TruncationParams};

use crate::error::{DataError, Result};

/// A `tokenizer.json` tokenizer that truncates to `max_length` tokens
/// (special tokens included) and pads a batch to its longest member.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    max_length: usize,
}

/// A tokenised batch: ids and attention mask, `[batch, tokens]` row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    pub ids: Vec<u32>,
    pub mask: Vec<u32>,
    pub batch: usize,
    pub tokens: usize,
    /// How many texts were longer than the maximum length and truncated.
    pub truncated: usize,
}

impl TokenBatch {
    /// The ids and the mask as `[batch, tokens]` u32 tensors.
    pub fn tensors(&self, device: &Device) -> Result<(Tensor, Tensor)> {
        let shape = (self.batch, self.tokens);
        Ok((
            Tensor::from_slice(&self.ids, shape, device)?,
            Tensor::from_slice(&self.mask, shape, device)?,
        ))
    }

    /// The ids of row `i` without its padding.
    pub fn row(&self, i: usize) -> &[u32] {
        let row = &self.ids[i * self.tokens..(i + 1) * self.tokens];
        let len = self.mask[i * self.tokens..(i + 1) * self.tokens]
            .iter()
            .filter(|&&m| m == 1)
            .count();
        &row[..len]
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json` (at most 64 MB); `max_length` ≥ 2 (room for
    /// the special tokens).
    pub fn from_file(path: &Path, max_length: usize) -> Result<Self> {
        if max_length < 2 {
            return Err(DataError::Invalid(format!(
                "max_length {max_length} leaves no room for the special tokens"
            )));
        }
        let bytes = read_bounded(path, 64 << 20)?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| DataError::Corrupt {
            path: path.to_path_buf(),
            message: format!("not a tokenizer.json: {e}"),
        })?;
        Self::with_limits(inner, max_length)
    }

    /// A tokenizer from the text of a `tokenizer.json` (e.g. one that
    /// [`restrict_vocabulary`] made); `max_length` ≥ 2.
    pub fn from_json(json: &str, max_length: usize) -> Result<Self> {
        if max_length < 2 {
            return Err(DataError::Invalid(format!(
                "max_length {max_length} leaves no room for the special tokens"
            )));
        }
        let inner = tokenizers::Tokenizer::from_bytes(json.as_bytes())
            .map_err(|e| DataError::Invalid(format!("not a tokenizer.json: {e}")))?;
        Self::with_limits(inner, max_length)
    }

    /// `inner` truncating to `max_length` and padding to the batch's longest.
    fn with_limits(mut inner: tokenizers::Tokenizer, max_length: usize) -> Result<Self> {
        let pad_id = inner.token_to_id("[PAD]").unwrap_or(0);
        let pad_token = inner
            .id_to_token(pad_id)
            .unwrap_or_else(|| "[PAD]".to_string());
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(|e| DataError::Invalid(format!("truncation to {max_length}: {e}")))?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token,
            ..Default::default()
        }));
        Ok(Self { inner, max_length })
    }

    /// The vocabulary size, added tokens included (the ids it can produce).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of `token` (e.g. `[MASK]`), if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The longest sequence a batch may hold.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Tokenises `texts` (with the special tokens) into one padded batch.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<TokenBatch> {
        let encodings = self
            .inner
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| DataError::Invalid(format!("tokenisation failed: {e}")))?;
        let tokens = encodings.first().map_or(0, |e| e.get_ids().len());
        let truncated = encodings
            .iter()
            .filter(|e| !e.get_overflowing().is_empty())
            .count();
        let mut ids = Vec::with_capacity(texts.len() * tokens);
        let mut mask = Vec::with_capacity(texts.len() * tokens);
        for e in &encodings {
            if e.get_ids().len() != tokens {
                return Err(DataError::Mismatch(
                    "the tokenizer did not pad the batch to one length".to_string(),
                ));
            }
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        Ok(TokenBatch {
            ids,
            mask,
            batch: texts.len(),
            tokens,
            truncated,
        })
    }
}

/// A smaller word-piece vocabulary cut from a BERT `tokenizer.json` for a
/// model trained on `texts`: the special tokens, every single character
/// (and `##` character) the texts use, then the most frequent other pieces
/// of the texts (ties by their original id) up to `vocab_size` tokens;
/// specials first, the rest in their original order. Returns the new
/// `tokenizer.json` (no padding or truncation of its own).
///
/// Word-piece matching takes the longest piece that is in the vocabulary,
/// so a word whose piece was cut splits into shorter ones; with every
/// character kept, no word of `texts` becomes `[UNK]`. The same inputs give
/// the same file (the word-piece trainer of the `tokenizers` crate breaks
/// ties through hash-map order, which differs between runs).
pub fn restrict_vocabulary(
    tokenizer_json: &str,
    texts: &[&str],
    vocab_size: usize,
) -> Result<String> {
    use serde_json::Value;
    use std::collections::{BTreeMap, BTreeSet};
    let bad = |m: String| DataError::Invalid(format!("restricting the vocabulary: {m}"));
    if texts.is_empty() {
        return Err(bad("no text to count pieces in".to_string()));
    }
    let mut json: Value =
        serde_json::from_str(tokenizer_json).map_err(|e| bad(format!("not JSON: {e}")))?;
    if json["model"]["type"] != "WordPiece" {
        return Err(bad(format!(
            "the model is {}, not WordPiece",
            json["model"]["type"]
        )));
    }
    let vocab: BTreeMap<String, u32> = serde_json::from_value(json["model"]["vocab"].clone())
        .map_err(|e| bad(format!("model.vocab: {e}")))?;
    let specials: BTreeSet<u32> = json["added_tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["special"] == true)
        .filter_map(|t| t["id"].as_u64().map(|id| id as u32))
        .collect();
    // how often the texts use each piece
    let mut tokenizer = tokenizers::Tokenizer::from_bytes(tokenizer_json.as_bytes())
        .map_err(|e| bad(format!("not a tokenizer.json: {e}")))?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
        .map_err(|e| bad(e.to_string()))?;
    let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
    for chunk in texts.chunks(4096) {
        let encodings = tokenizer
            .encode_batch(chunk.to_vec(), true)
            .map_err(|e| bad(format!("tokenisation failed: {e}")))?;
        for e in &encodings {
            for &id in e.get_ids() {
                *counts.entry(id).or_default() += 1;
            }
        }
    }
    // every character of every piece used, alone and as a continuation, so
    // that any word of the texts can fall back to characters
    let by_id: BTreeMap<u32, &str> = vocab.iter().map(|(t, &id)| (id, t.as_str())).collect();
    let mut chars: BTreeSet<char> = BTreeSet::new();
    for id in counts.keys().filter(|id| !specials.contains(id)) {
        if let Some(token) = by_id.get(id) {
            chars.extend(token.strip_prefix("##").unwrap_or(token).chars());
        }
    }
    let mut keep: BTreeSet<u32> = specials.clone();
    for c in chars {
        for piece in [c.to_string(), format!("##{c}")] {
            if let Some(&id) = vocab.get(&piece) {
                keep.insert(id);
            }
        }
    }
    if keep.len() > vocab_size {
        return Err(bad(format!(
            "the special tokens and the {} single characters the texts use do not fit in {vocab_size} tokens",
            keep.len() - specials.len()
        )));
    }
    let mut by_count: Vec<(u64, u32)> = counts
        .iter()
        .filter(|(id, _)| !keep.contains(id))
        .map(|(&id, &c)| (c, id))
        .collect();
    by_count.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, id) in by_count.iter().take(vocab_size - keep.len()) {
        keep.insert(id);
    }
    // new ids: specials first, then the rest, each in original order
    let renumber: BTreeMap<u32, u32> = specials
        .iter()
        .chain(keep.iter().filter(|id| !specials.contains(id)))
        .enumerate()
        .map(|(new, &old)| (old, new as u32))
        .collect();
    let new_vocab: serde_json::Map<String, Value> = vocab
        .iter()
        .filter_map(|(t, id)| renumber.get(id).map(|&n| (t.clone(), Value::from(n))))
        .collect();
    json["model"]["vocab"] = Value::Object(new_vocab);
    let added: Vec<Value> = json["added_tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let old = t["id"].as_u64()? as u32;
            let mut t = t.clone();
            t["id"] = Value::from(*renumber.get(&old)?);
            Some(t)
        })
        .collect();
    json["added_tokens"] = Value::Array(added);
    let new_id = |token: &str| -> Result<u32> {
        vocab
            .get(token)
            .and_then(|id| renumber.get(id))
            .copied()
            .ok_or_else(|| {
                bad(format!(
                    "the post-processor's {token} is not in the vocabulary"
                ))
            })
    };
    let post = &mut json["post_processor"];
    match post["type"].as_str() {
        Some("TemplateProcessing") => {
            if let Some(map) = post["special_tokens"].as_object_mut() {
                for entry in map.values_mut() {
                    let tokens: Vec<String> = serde_json::from_value(entry["tokens"].clone())
                        .map_err(|e| bad(format!("post_processor: {e}")))?;
                    let ids = tokens
                        .iter()
                        .map(|t| new_id(t))
                        .collect::<Result<Vec<u32>>>()?;
                    entry["ids"] = Value::from(ids);
                }
            }
        }
        Some("BertProcessing") | Some("RobertaProcessing") => {
            for key in ["sep", "cls"] {
                let token = post[key][0].as_str().unwrap_or_default().to_string();
                post[key][1] = Value::from(new_id(&token)?);
            }
        }
        None => {}
        Some(other) => return Err(bad(format!("post-processor {other} is not supported"))),
    }
    json["padding"] = Value::Null;
    json["truncation"] = Value::Null;
    let out = serde_json::to_string_pretty(&json).map_err(|e| bad(e.to_string()))?;
    // it must load
    tokenizers::Tokenizer::from_bytes(out.as_bytes())
        .map_err(|e| bad(format!("the new tokenizer does not load: {e}")))?;
    Ok(out)
}

/// One WordNet synset: its id, part of speech, lemmas, gloss and example sentences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synset {
    pub id: String,
    pub pos: String,
    pub lemmas: Vec<String>,
    pub gloss: String,
    pub examples: Vec<String>,
}

/// The splits of the WordNet glosses data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlossSplit {
    Train,
    Dev,
    Test,
}

impl std::str::FromStr for GlossSplit {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(Self::Train),
            "dev" => Ok(Self::Dev),
            "test" => Ok(Self::Test),
            other => Err(DataError::Invalid(format!(
                "unknown split '{other}' (train, dev or test)"
            ))),
        }
    }
}

impl GlossSplit {
    pub fn name(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Dev => "dev",
            Self::Test => "test",
        }
    }
}

/// The synsets of one split, read from `DIR/<split>.tsv.gz` (tab-separated,
/// one header line `synset pos lemmas gloss examples`, examples joined by
/// ` ||| `). At most 256 MB decompressed are read.
pub fn load_glosses(dir: &Path, split: GlossSplit) -> Result<Vec<Synset>> {
    let path = dir.join(format!("{}.tsv.gz", split.name()));
    let file = std::fs::File::open(&path).map_err(|source| DataError::Io {
        path: path.clone(),
        source,
    })?;
    const MAX: u64 = 256 << 20;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .take(MAX + 1)
        .read_to_string(&mut text)
        .map_err(|source| DataError::Io {
            path: path.clone(),
            source,
        })?;
    if text.len() as u64 > MAX {
        return Err(corrupt(
            &path,
            format!("more than {MAX} bytes decompressed"),
        ));
    }
    parse_glosses(&path, &text)
}

fn corrupt(path: &Path, message: String) -> DataError {
    DataError::Corrupt {
        path: path.to_path_buf(),
        message,
    }
}

/// Parses the TSV text of a glosses file (see [`load_glosses`]).
pub fn parse_glosses(path: &Path, text: &str) -> Result<Vec<Synset>> {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    if header.split('\t').collect::<Vec<_>>() != ["synset", "pos", "lemmas", "gloss", "examples"] {
        return Err(corrupt(
            path,
            format!("header '{header}' is not 'synset\\tpos\\tlemmas\\tgloss\\texamples'"),
        ));
    }
    let mut synsets = Vec::new();
    for (i, line) in lines.enumerate() {
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [id, pos, lemmas, gloss, examples] = fields[..] else {
            return Err(DataError::Parse {
                what: path.display().to_string(),
                line: i + 2,
                message: format!("{} fields, expected 5", fields.len()),
            });
        };
        let examples: Vec<String> = examples
            .split(" ||| ")
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect();
        if gloss.trim().is_empty() || examples.is_empty() {
            return Err(DataError::Parse {
                what: path.display().to_string(),
                line: i + 2,
                message: "empty gloss or no example".to_string(),
            });
        }
        synsets.push(Synset {
            id: id.to_string(),
            pos: pos.to_string(),
            lemmas: lemmas.split(',').map(str::to_string).collect(),
            gloss: gloss.to_string(),
            examples,
        });
    }
    if synsets.is_empty() {
        return Err(corrupt(path, "no synsets".to_string()));
    }
    Ok(synsets)
}

/// The retrieval task of a split: every example sentence is a query, every
/// gloss a candidate; the query's answer is its own synset's gloss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrievalTask {
    /// The candidates (one gloss per synset, in file order).
    pub glosses: Vec<String>,
    /// The queries with the index of their gloss.
    pub queries: Vec<(String, usize)>,
}

impl RetrievalTask {
    pub fn new(synsets: &[Synset]) -> Self {
        let glosses = synsets.iter().map(|s| s.gloss.clone()).collect();
        let queries = synsets
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.examples.iter().map(move |e| (e.clone(), i)))
            .collect();
        Self { glosses, queries }
    }
}

/// Accuracy@1 and mean reciprocal rank of a retrieval: `ranks[q]` is the
/// 1-based rank of query `q`'s answer among the candidates.
pub fn retrieval_scores(ranks: &[usize]) -> (f64, f64) {
    if ranks.is_empty() {
        return (0.0, 0.0);
    }
    let n = ranks.len() as f64;
    let top1 = ranks.iter().filter(|&&r| r == 1).count() as f64 / n;
    let mrr = ranks.iter().map(|&r| 1.0 / r as f64).sum::<f64>() / n;
    (top1, mrr)
}

/// Reads at most `max` bytes of `path`, refusing a larger file.
fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    let io = |source| DataError::Io {
        path: PathBuf::from(path),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > max {
        return Err(corrupt(path, format!("{len} bytes exceed {max}")));
    }
    std::fs::read(path).map_err(io)
}

/// The 1-based rank of candidate `answer` by descending `scores`, ties
/// counted against it (every other candidate scoring at least as high is
/// ranked before it). A NaN score ranks the answer last.
pub fn rank_of(scores: &[f32], answer: usize) -> usize {
    let s = scores[answer];
    if s.is_nan() {
        return scores.len();
    }
    1 + scores
        .iter()
        .enumerate()
        .filter(|&(j, &x)| j != answer && (x >= s || x.is_nan()))
        .count()
}
