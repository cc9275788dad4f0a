//! A trainable BERT encoder that loads Hugging Face BERT checkpoints by
//! their tensor names, with a head count and an intermediate size per layer
//! (so that models whose heads and neurons were removed load as they are).
//!
//! Everything here has a backward pass: layer norm, softmax and the erf GELU
//! are kdprune's one-pass CPU ops with their own gradients
//! ([`crate::ops::transformer`]; composed candle operations elsewhere).
//! candle's fused `LayerNorm` and `softmax_last_dim` have no backward pass,
//! and `candle-transformers`' BERT has one head count for the whole model
//! and private layers.
//!
//! ```no_run
//! use candle_core::{Device, Tensor};
//! use kdprune_models::bert::{mean_pool, l2_normalize, Bert};
//!
//! let bert = Bert::load_dir("all-MiniLM-L6-v2".as_ref(), &Device::Cpu)?;
//! let ids = Tensor::new(&[[101u32, 7592, 102]], &Device::Cpu)?;
//! let mask = Tensor::new(&[[1u32, 1, 1]], &Device::Cpu)?;
//! let out = bert.forward(&ids, &mask)?;
//! let embedding = l2_normalize(&mean_pool(out.last_hidden(), &mask)?)?;
//! assert_eq!(embedding.dims(), &[1, 384]);
//! # Ok::<(), kdprune_models::ModelError>(())
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::checkpoint::write_atomic;
use crate::config::MAX_PARAMS;
use crate::error::{ModelError, Result};
use crate::ops::transformer as ops;

/// Bounds on what a `config.json` may ask for, checked before anything is
/// allocated: larger than any published BERT, small enough that a crafted
/// file cannot make the process allocate what it says.
const MAX_VOCAB: usize = 1 << 20;
const MAX_HIDDEN: usize = 1 << 14;
const MAX_LAYERS: usize = 256;
const MAX_POSITIONS: usize = 1 << 16;

/// The sizes of one encoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSizes {
    /// Attention heads (0: the layer's attention adds only its output bias).
    pub heads: usize,
    /// Intermediate (feed-forward) neurons (0: the feed-forward block adds only its output bias).
    pub intermediate: usize,
}

/// A BERT encoder's configuration: the Hugging Face `config.json` fields it
/// needs, with per-layer sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// The width of every attention head (`hidden_size / num_attention_heads` of the original model).
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub pad_token_id: u32,
    /// One entry per encoder layer.
    pub layers: Vec<LayerSizes>,
    /// Causal self-attention: a token attends to itself and the tokens
    /// before it (Hugging Face's `is_decoder`).
    pub is_decoder: bool,
    /// A language-model head, `cls.predictions.*` of Hugging Face's
    /// `BertLMHeadModel` (causal) or `BertForMaskedLM`: dense, erf GELU,
    /// layer norm, then the word embeddings (tied) and a bias per token.
    pub lm_head: bool,
    /// ALBERT's cross-layer sharing: one layer's weights
    /// (`encoder.layer.0.*`) applied `layers.len()` times; every entry of
    /// `layers` must then be equal.
    pub shared_layers: bool,
    /// ALBERT's factorised embeddings: word, position and token-type
    /// embeddings of width `E` (and their layer norm), then
    /// `encoder.embedding_hidden_mapping_in` (`E → hidden`); `None`: width
    /// `hidden_size`, no mapping.
    pub embedding_size: Option<usize>,
}

/// The fields of a Hugging Face BERT `config.json` that matter here, and
/// kdprune's per-layer extension (`kdprune_layers`).
#[derive(Debug, Deserialize)]
struct HfConfig {
    #[serde(default)]
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default = "default_positions")]
    max_position_embeddings: usize,
    #[serde(default = "default_types")]
    type_vocab_size: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    pad_token_id: u32,
    #[serde(default)]
    position_embedding_type: Option<String>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default)]
    kdprune_layers: Option<Vec<LayerSizes>>,
    #[serde(default)]
    is_decoder: bool,
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    tie_word_embeddings: Option<bool>,
    #[serde(default)]
    kdprune_shared_layers: bool,
    #[serde(default)]
    embedding_size: Option<usize>,
}

fn default_act() -> String {
    "gelu".to_string()
}
fn default_positions() -> usize {
    512
}
fn default_types() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

fn config_error(msg: impl Into<String>) -> ModelError {
    ModelError::Config(format!("bert: {}", msg.into()))
}

impl BertConfig {
    /// Parses a Hugging Face BERT `config.json` (with kdprune's optional
    /// `kdprune_layers` per-layer sizes), refusing what this encoder does not
    /// implement (another activation, relative positions) and sizes beyond
    /// any published BERT.
    pub fn from_hf_json(json: &str) -> Result<Self> {
        let hf: HfConfig =
            serde_json::from_str(json).map_err(|e| config_error(format!("config.json: {e}")))?;
        if let Some(t) = hf.model_type.as_deref() {
            if t != "bert" {
                return Err(config_error(format!("model_type '{t}' is not 'bert'")));
            }
        }
        if hf.hidden_act != "gelu" {
            return Err(config_error(format!(
                "hidden_act '{}' is not supported (only 'gelu', the erf GELU)",
                hf.hidden_act
            )));
        }
        if let Some(p) = hf.position_embedding_type.as_deref() {
            if p != "absolute" {
                return Err(config_error(format!(
                    "position_embedding_type '{p}' is not supported (only 'absolute')"
                )));
            }
        }
        if hf.num_attention_heads == 0 || hf.hidden_size == 0 {
            return Err(config_error(
                "hidden_size and num_attention_heads must be positive",
            ));
        }
        let head_dim = match hf.head_dim {
            Some(d) => d,
            None => {
                if !hf.hidden_size.is_multiple_of(hf.num_attention_heads) {
                    return Err(config_error(format!(
                        "hidden_size {} is not a multiple of num_attention_heads {}",
                        hf.hidden_size, hf.num_attention_heads
                    )));
                }
                hf.hidden_size / hf.num_attention_heads
            }
        };
        let layers = match hf.kdprune_layers {
            Some(layers) => {
                if layers.len() != hf.num_hidden_layers {
                    return Err(config_error(format!(
                        "kdprune_layers lists {} layers, num_hidden_layers is {}",
                        layers.len(),
                        hf.num_hidden_layers
                    )));
                }
                layers
            }
            None => {
                if hf.num_hidden_layers > MAX_LAYERS {
                    return Err(config_error(format!(
                        "num_hidden_layers {} exceeds {MAX_LAYERS}",
                        hf.num_hidden_layers
                    )));
                }
                vec![
                    LayerSizes {
                        heads: hf.num_attention_heads,
                        intermediate: hf.intermediate_size,
                    };
                    hf.num_hidden_layers
                ]
            }
        };
        let lm_head = hf
            .architectures
            .iter()
            .any(|a| a == "BertLMHeadModel" || a == "BertForMaskedLM");
        if lm_head && hf.tie_word_embeddings == Some(false) {
            return Err(config_error(
                "a language-model head with untied word embeddings is not supported",
            ));
        }
        let config = Self {
            vocab_size: hf.vocab_size,
            hidden_size: hf.hidden_size,
            head_dim,
            max_position_embeddings: hf.max_position_embeddings,
            type_vocab_size: hf.type_vocab_size,
            layer_norm_eps: hf.layer_norm_eps,
            pad_token_id: hf.pad_token_id,
            layers,
            is_decoder: hf.is_decoder,
            lm_head,
            shared_layers: hf.kdprune_shared_layers,
            embedding_size: hf.embedding_size,
        };
        config.validate()?;
        Ok(config)
    }

    /// The `config.json` of this configuration: a Hugging Face BERT config
    /// (the largest layer's sizes as `num_attention_heads` and
    /// `intermediate_size`) and, when the layers differ from one another,
    /// their sizes under `kdprune_layers`.
    pub fn to_hf_json(&self) -> String {
        let heads = self.layers.iter().map(|l| l.heads).max().unwrap_or(0);
        let intermediate = self
            .layers
            .iter()
            .map(|l| l.intermediate)
            .max()
            .unwrap_or(0);
        let architecture = match (self.lm_head, self.is_decoder) {
            (false, _) => "BertModel",
            (true, true) => "BertLMHeadModel",
            (true, false) => "BertForMaskedLM",
        };
        let mut json = serde_json::json!({
            "architectures": [architecture],
            "model_type": "bert",
            "hidden_act": "gelu",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.layers.len(),
            "num_attention_heads": heads,
            "intermediate_size": intermediate,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "layer_norm_eps": self.layer_norm_eps,
            "pad_token_id": self.pad_token_id,
            "position_embedding_type": "absolute",
        });
        if heads * self.head_dim != self.hidden_size {
            json["head_dim"] = self.head_dim.into();
        }
        if self.is_decoder {
            json["is_decoder"] = true.into();
        }
        if self.lm_head {
            json["tie_word_embeddings"] = true.into();
        }
        if self.shared_layers {
            json["kdprune_shared_layers"] = true.into();
        }
        if let Some(e) = self.embedding_size {
            json["embedding_size"] = e.into();
        }
        let uniform = self
            .layers
            .iter()
            .all(|l| l.heads == heads && l.intermediate == intermediate);
        if !uniform {
            json["kdprune_layers"] = serde_json::to_value(&self.layers).expect("plain struct");
        }
        serde_json::to_string_pretty(&json).expect("plain JSON")
    }

    /// A configuration of `layers` equal layers of `heads` heads of width
    /// `hidden_size / heads` and `intermediate` neurons, with a
    /// language-model head (`lm_head`) and causal attention (`is_decoder`)
    /// as asked; one token type, positions up to `max_positions`, layer-norm
    /// ε 1e-12, padding id `pad_token_id`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vocab_size: usize,
        hidden_size: usize,
        layers: usize,
        heads: usize,
        intermediate: usize,
        max_positions: usize,
        pad_token_id: u32,
        lm_head: bool,
        is_decoder: bool,
    ) -> Result<Self> {
        if heads == 0 || !hidden_size.is_multiple_of(heads) {
            return Err(config_error(format!(
                "hidden size {hidden_size} is not a multiple of {heads} heads"
            )));
        }
        if layers > MAX_LAYERS {
            return Err(config_error(format!("{layers} layers exceed {MAX_LAYERS}")));
        }
        let config = Self {
            vocab_size,
            hidden_size,
            head_dim: hidden_size / heads,
            max_position_embeddings: max_positions,
            type_vocab_size: 1,
            layer_norm_eps: 1e-12,
            pad_token_id,
            layers: vec![
                LayerSizes {
                    heads,
                    intermediate
                };
                layers
            ],
            is_decoder,
            lm_head,
            shared_layers: false,
            embedding_size: None,
        };
        config.validate()?;
        Ok(config)
    }

    /// This configuration with ALBERT's sharing (`shared`: one layer's
    /// weights for every layer) and factorised embeddings (`embedding_size`
    /// `Some(E)`), validated.
    pub fn albert(mut self, shared: bool, embedding_size: Option<usize>) -> Result<Self> {
        self.shared_layers = shared;
        self.embedding_size = embedding_size;
        self.validate()?;
        Ok(self)
    }

    /// The width of the embeddings: `embedding_size`, else `hidden_size`.
    pub fn embedding_width(&self) -> usize {
        self.embedding_size.unwrap_or(self.hidden_size)
    }

    /// The layer whose weights layer `i` runs: 0 when shared, else `i`.
    pub fn weights_of_layer(&self, i: usize) -> usize {
        if self.shared_layers {
            0
        } else {
            i
        }
    }

    /// Checks every size against its bound and the parameter count against
    /// [`MAX_PARAMS`] (before anything is allocated).
    pub fn validate(&self) -> Result<()> {
        let bounded = [
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("hidden_size", self.hidden_size, MAX_HIDDEN),
            ("head_dim", self.head_dim, MAX_HIDDEN),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                MAX_POSITIONS,
            ),
            ("type_vocab_size", self.type_vocab_size, 1024),
            ("layers", self.layers.len(), MAX_LAYERS),
        ];
        for (name, value, max) in bounded {
            if value == 0 || value > max {
                return Err(config_error(format!("{name} {value} is not in 1..={max}")));
            }
        }
        if self.shared_layers && self.layers.iter().any(|l| *l != self.layers[0]) {
            return Err(config_error(
                "shared layers must all have the same heads and intermediate size",
            ));
        }
        if let Some(e) = self.embedding_size {
            if e == 0 || e > MAX_HIDDEN {
                return Err(config_error(format!(
                    "embedding_size {e} is not in 1..={MAX_HIDDEN}"
                )));
            }
            if self.lm_head {
                return Err(config_error(
                    "factorised embeddings with a language-model head are not supported",
                ));
            }
        }
        for (i, l) in self.layers.iter().enumerate() {
            if l.heads > MAX_HIDDEN || l.intermediate > 16 * MAX_HIDDEN {
                return Err(config_error(format!(
                    "layer {i}: {} heads and {} intermediate neurons exceed the bounds",
                    l.heads, l.intermediate
                )));
            }
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps < 1.0) {
            return Err(config_error(format!(
                "layer_norm_eps {} is not in (0, 1)",
                self.layer_norm_eps
            )));
        }
        if self.pad_token_id as usize >= self.vocab_size {
            return Err(config_error(format!(
                "pad_token_id {} is not below vocab_size {}",
                self.pad_token_id, self.vocab_size
            )));
        }
        let params = self.num_params();
        if params > MAX_PARAMS {
            return Err(config_error(format!(
                "{params} parameters ({} GB in f32) exceed {MAX_PARAMS}",
                params as u64 * 4 / 1_000_000_000
            )));
        }
        Ok(())
    }

    /// The number of encoder layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Every parameter's name and shape, in sorted-name order. Sizes are
    /// multiplied in u128 and saturated, so a crafted config cannot overflow.
    pub fn param_specs(&self) -> Vec<(String, Vec<usize>)> {
        let h = self.hidden_size;
        let e = self.embedding_width();
        let mut specs = vec![
            (
                "embeddings.word_embeddings.weight".to_string(),
                vec![self.vocab_size, e],
            ),
            (
                "embeddings.position_embeddings.weight".to_string(),
                vec![self.max_position_embeddings, e],
            ),
            (
                "embeddings.token_type_embeddings.weight".to_string(),
                vec![self.type_vocab_size, e],
            ),
            ("embeddings.LayerNorm.weight".to_string(), vec![e]),
            ("embeddings.LayerNorm.bias".to_string(), vec![e]),
        ];
        if self.embedding_size.is_some() {
            specs.push((
                "encoder.embedding_hidden_mapping_in.weight".to_string(),
                vec![h, e],
            ));
            specs.push((
                "encoder.embedding_hidden_mapping_in.bias".to_string(),
                vec![h],
            ));
        }
        let distinct = if self.shared_layers {
            self.layers.len().min(1)
        } else {
            self.layers.len()
        };
        for (i, l) in self.layers.iter().enumerate().take(distinct) {
            let p = format!("encoder.layer.{i}");
            let a = l.heads * self.head_dim;
            for qkv in ["query", "key", "value"] {
                specs.push((format!("{p}.attention.self.{qkv}.weight"), vec![a, h]));
                specs.push((format!("{p}.attention.self.{qkv}.bias"), vec![a]));
            }
            specs.push((format!("{p}.attention.output.dense.weight"), vec![h, a]));
            specs.push((format!("{p}.attention.output.dense.bias"), vec![h]));
            specs.push((format!("{p}.attention.output.LayerNorm.weight"), vec![h]));
            specs.push((format!("{p}.attention.output.LayerNorm.bias"), vec![h]));
            specs.push((
                format!("{p}.intermediate.dense.weight"),
                vec![l.intermediate, h],
            ));
            specs.push((format!("{p}.intermediate.dense.bias"), vec![l.intermediate]));
            specs.push((format!("{p}.output.dense.weight"), vec![h, l.intermediate]));
            specs.push((format!("{p}.output.dense.bias"), vec![h]));
            specs.push((format!("{p}.output.LayerNorm.weight"), vec![h]));
            specs.push((format!("{p}.output.LayerNorm.bias"), vec![h]));
        }
        if self.lm_head {
            let p = "cls.predictions";
            specs.push((format!("{p}.transform.dense.weight"), vec![h, h]));
            specs.push((format!("{p}.transform.dense.bias"), vec![h]));
            specs.push((format!("{p}.transform.LayerNorm.weight"), vec![h]));
            specs.push((format!("{p}.transform.LayerNorm.bias"), vec![h]));
            specs.push((format!("{p}.bias"), vec![self.vocab_size]));
        }
        specs.sort();
        specs
    }

    /// The number of parameters (saturating).
    pub fn num_params(&self) -> usize {
        self.param_specs()
            .iter()
            .map(|(_, s)| s.iter().fold(1usize, |a, &b| a.saturating_mul(b)))
            .fold(0usize, |a, b| a.saturating_add(b))
    }
}

/// What [`Bert::forward`] returns: the hidden states after the embeddings
/// and after every layer (`[batch, tokens, hidden]`, `num_layers + 1` of
/// them) and every layer's attention probabilities (`[batch, heads,
/// tokens, tokens]`).
#[derive(Debug, Clone)]
pub struct BertOutput {
    pub hidden_states: Vec<Tensor>,
    pub attentions: Vec<Tensor>,
}

impl BertOutput {
    /// The last layer's hidden states.
    pub fn last_hidden(&self) -> &Tensor {
        self.hidden_states
            .last()
            .expect("the embeddings' output at least")
    }
}

/// Optional masks over heads and feed-forward neurons, per layer (1 keeps,
/// 0 removes); gradients with respect to them give Michel et al.'s head
/// importance.
#[derive(Debug, Clone, Default)]
pub struct ForwardMasks {
    /// Per layer, a `[heads]` tensor multiplying each head's attention output.
    pub heads: Option<Vec<Tensor>>,
    /// Per layer, an `[intermediate]` tensor multiplying each neuron's activation.
    pub neurons: Option<Vec<Tensor>>,
}

/// A BERT encoder whose parameters are candle [`Var`]s (trainable).
#[derive(Debug, Clone)]
pub struct Bert {
    config: BertConfig,
    vars: BTreeMap<String, Var>,
    device: Device,
}

impl Bert {
    /// Builds the encoder from named tensors (Hugging Face names, with or
    /// without a `bert.` prefix; `embeddings.position_ids`, the pooler and
    /// heads of other tasks are ignored). Every tensor the config needs must
    /// be present with its shape; f16 and bf16 are converted to f32.
    pub fn from_tensors(
        config: BertConfig,
        tensors: &BTreeMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let mut vars = BTreeMap::new();
        for (name, shape) in config.param_specs() {
            let t = tensors
                .get(&name)
                .or_else(|| tensors.get(&format!("bert.{name}")))
                .ok_or_else(|| ModelError::MissingTensor(name.clone()))?;
            if t.dims() != shape.as_slice() {
                return Err(ModelError::ShapeMismatch {
                    name,
                    expected: shape,
                    got: t.dims().to_vec(),
                });
            }
            let t = match t.dtype() {
                DType::F32 => t.to_device(device)?,
                DType::F16 | DType::BF16 | DType::F64 => {
                    t.to_dtype(DType::F32)?.to_device(device)?
                }
                other => {
                    return Err(ModelError::DtypeMismatch {
                        name,
                        expected: DType::F32,
                        got: other,
                    })
                }
            };
            vars.insert(name, Var::from_tensor(&t)?);
        }
        Ok(Self {
            config,
            vars,
            device: device.clone(),
        })
    }

    /// A freshly initialised model: weight matrices and embeddings from
    /// `U(−a, a)` with `a = 0.02·√3` (standard deviation 0.02, BERT's), the
    /// padding token's embedding 0, biases 0, layer-norm scales 1. One
    /// `ChaCha8Rng::seed_from_u64(seed)` stream is drawn in sorted-name
    /// order, so the same seed gives the same model.
    pub fn init(config: BertConfig, seed: u64, device: &Device) -> Result<Self> {
        use rand::SeedableRng;
        config.validate()?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let bound = (0.02 * 3f64.sqrt()) as f32;
        let mut tensors = BTreeMap::new();
        for (name, shape) in config.param_specs() {
            let n: usize = shape.iter().product();
            let values = if name.ends_with("LayerNorm.weight") {
                vec![1f32; n]
            } else if shape.len() == 1 {
                vec![0f32; n]
            } else {
                let mut v = kd_core::init::uniform_values(&mut rng, n, bound);
                if name == "embeddings.word_embeddings.weight" {
                    let h = config.embedding_width();
                    let pad = config.pad_token_id as usize;
                    v[pad * h..(pad + 1) * h].fill(0.0);
                }
                v
            };
            tensors.insert(name, Tensor::from_vec(values, shape, device)?);
        }
        Self::from_tensors(config, &tensors, device)
    }

    /// Loads a model folder in the Hugging Face layout: `config.json` and
    /// `model.safetensors`.
    pub fn load_dir(dir: &Path, device: &Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        let json = read_bounded(&config_path, 1 << 20)?;
        let json = String::from_utf8(json).map_err(|_| ModelError::Checkpoint {
            path: config_path.clone(),
            reason: "not UTF-8".to_string(),
        })?;
        let config = BertConfig::from_hf_json(&json).map_err(|e| ModelError::Checkpoint {
            path: config_path.clone(),
            reason: e.to_string(),
        })?;
        let weights = dir.join("model.safetensors");
        let tensors = read_safetensors(&weights, &config)?;
        Self::from_tensors(config, &tensors, device).map_err(|e| match e {
            e @ (ModelError::MissingTensor(_) | ModelError::ShapeMismatch { .. }) => {
                ModelError::Checkpoint {
                    path: weights.clone(),
                    reason: e.to_string(),
                }
            }
            e => e,
        })
    }

    /// Writes `config.json` and `model.safetensors` into `dir` (created if
    /// missing), each through a temporary file renamed into place.
    pub fn save_dir(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let tensors = self.tensors()?;
        let mut entries = Vec::new();
        for (name, t) in &tensors {
            let data: Vec<f32> = t.flatten_all()?.to_vec1()?;
            let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            // a model with a head keeps the encoder under `bert.`, as
            // `BertLMHeadModel` and `BertForMaskedLM` name it
            let name = if self.config.lm_head && !name.starts_with("cls.") {
                format!("bert.{name}")
            } else {
                name.clone()
            };
            entries.push((name, t.dims().to_vec(), bytes));
        }
        let views = entries
            .iter()
            .map(|(name, shape, bytes)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .map(|v| (name.as_str(), v))
                    .map_err(|e| ModelError::Checkpoint {
                        path: dir.join("model.safetensors"),
                        reason: format!("tensor '{name}': {e}"),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
        let buffer =
            safetensors::serialize(views, Some(metadata)).map_err(|e| ModelError::Checkpoint {
                path: dir.join("model.safetensors"),
                reason: format!("cannot serialise: {e}"),
            })?;
        write_atomic(&dir.join("model.safetensors"), &buffer)?;
        write_atomic(
            &dir.join("config.json"),
            self.config.to_hf_json().as_bytes(),
        )
    }

    /// A smaller encoder with only the heads `keep[layer]` of each layer
    /// (indices into the layer's current heads, each below its head count,
    /// no repeats; order kept as given): the query, key and value rows of
    /// the other heads and the output projection's matching columns are
    /// removed. Its forward pass equals this one's with the other heads
    /// masked out ([`ForwardMasks::heads`]).
    pub fn remove_heads(&self, keep: &[Vec<usize>]) -> Result<Self> {
        let d = self.config.head_dim;
        self.remove_units(
            keep,
            "heads",
            |l| l.heads,
            d,
            |l, n| l.heads = n,
            |i| {
                let p = format!("encoder.layer.{i}");
                (
                    ["query", "key", "value"]
                        .iter()
                        .flat_map(|q| {
                            [
                                format!("{p}.attention.self.{q}.weight"),
                                format!("{p}.attention.self.{q}.bias"),
                            ]
                        })
                        .collect(),
                    vec![format!("{p}.attention.output.dense.weight")],
                )
            },
        )
    }

    /// A smaller encoder with only the intermediate neurons `keep[layer]`
    /// of each layer (as [`Bert::remove_heads`]): the intermediate layer's
    /// rows and bias entries and the output layer's columns of the others
    /// are removed; the forward pass equals this one's with them masked
    /// ([`ForwardMasks::neurons`]).
    pub fn remove_neurons(&self, keep: &[Vec<usize>]) -> Result<Self> {
        self.remove_units(
            keep,
            "neurons",
            |l| l.intermediate,
            1,
            |l, n| l.intermediate = n,
            |i| {
                let p = format!("encoder.layer.{i}");
                (
                    vec![
                        format!("{p}.intermediate.dense.weight"),
                        format!("{p}.intermediate.dense.bias"),
                    ],
                    vec![format!("{p}.output.dense.weight")],
                )
            },
        )
    }

    /// The removal behind [`Bert::remove_heads`] and [`Bert::remove_neurons`]:
    /// units of `width` rows of the `rows` tensors (axis 0) and columns of
    /// the `cols` tensors (axis 1) of each layer.
    #[allow(clippy::too_many_arguments)]
    fn remove_units(
        &self,
        keep: &[Vec<usize>],
        what: &str,
        count: impl Fn(&LayerSizes) -> usize,
        width: usize,
        set: impl Fn(&mut LayerSizes, usize),
        tensors: impl Fn(usize) -> (Vec<String>, Vec<String>),
    ) -> Result<Self> {
        if self.config.shared_layers {
            return Err(config_error(format!(
                "removing {what} of a shared-layer encoder would change every layer; it is not supported"
            )));
        }
        let layers = self.config.num_layers();
        if keep.len() != layers {
            return Err(config_error(format!(
                "{} lists of {what} to keep for {layers} layers",
                keep.len()
            )));
        }
        let mut config = self.config.clone();
        // copies: the new encoder's variables must not share storage with these
        let mut values = self
            .tensors()?
            .into_iter()
            .map(|(n, t)| Ok((n, t.copy()?)))
            .collect::<Result<BTreeMap<_, _>>>()?;
        for (i, kept) in keep.iter().enumerate() {
            let n = count(&self.config.layers[i]);
            let mut seen = vec![false; n];
            for &k in kept {
                if k >= n || std::mem::replace(&mut seen[k], true) {
                    return Err(config_error(format!(
                        "layer {i}: {what} index {k} is out of range (0..{n}) or repeated"
                    )));
                }
            }
            let index: Vec<u32> = kept
                .iter()
                .flat_map(|&k| (k * width..(k + 1) * width).map(|j| j as u32))
                .collect();
            let index = Tensor::new(index.as_slice(), &self.device)?;
            let (rows, cols) = tensors(i);
            for (names, axis) in [(rows, 0), (cols, 1)] {
                for name in names {
                    let t = &values[&name];
                    let t = t.index_select(&index, axis)?;
                    values.insert(name, t);
                }
            }
            set(&mut config.layers[i], kept.len());
        }
        Self::from_tensors(config, &values, &self.device)
    }

    /// An encoder of the layers `layers` of this one, in that order (the
    /// embeddings kept): DistilBERT's every-other-layer student is
    /// `layer_subset(&[0, 2, 4])` of a 6-layer teacher. Indices may repeat
    /// (a layer copied twice).
    pub fn layer_subset(&self, layers: &[usize]) -> Result<Self> {
        let n = self.config.num_layers();
        if layers.is_empty() {
            return Err(config_error("a layer subset needs at least one layer"));
        }
        if let Some(&bad) = layers.iter().find(|&&l| l >= n) {
            return Err(config_error(format!("layer {bad} does not exist (0..{n})")));
        }
        let mut config = self.config.clone();
        config.layers = layers.iter().map(|&l| self.config.layers[l]).collect();
        if self.config.shared_layers {
            // one set of weights: a subset is the same layer fewer times
            return Self::from_tensors(config, &self.tensors()?, &self.device);
        }
        let values = self.tensors()?;
        let mut out = BTreeMap::new();
        for (name, t) in &values {
            match name.strip_prefix("encoder.layer.") {
                Some(rest) => {
                    let (idx, tail) = rest.split_once('.').unwrap_or((rest, ""));
                    let Ok(old) = idx.parse::<usize>() else {
                        continue;
                    };
                    for (new, _) in layers.iter().enumerate().filter(|(_, &l)| l == old) {
                        out.insert(format!("encoder.layer.{new}.{tail}"), t.copy()?);
                    }
                }
                None => {
                    out.insert(name.clone(), t.copy()?);
                }
            }
        }
        Self::from_tensors(config, &out, &self.device)
    }

    /// ALBERT's cross-layer sharing from this encoder: layer `layer`'s
    /// weights applied `times` times (the embeddings kept), one layer's
    /// parameters for the whole stack.
    pub fn shared_layer(&self, layer: usize, times: usize) -> Result<Self> {
        if times == 0 {
            return Err(config_error("a shared encoder needs at least one layer"));
        }
        let one = self.layer_subset(&[layer])?;
        let mut config = one.config.clone();
        config.layers = vec![config.layers[0]; times];
        config.shared_layers = true;
        Self::from_tensors(config, &one.tensors()?, &self.device)
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The parameters by name (sorted).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        self.vars
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    }

    /// The parameters' current values by name.
    pub fn tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        Ok(self
            .vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect())
    }

    fn var(&self, name: &str) -> &Tensor {
        self.vars
            .get(name)
            .unwrap_or_else(|| panic!("parameter '{name}' is built with the model"))
            .as_tensor()
    }

    /// Runs the encoder on `input_ids` (`[batch, tokens]`, u32 or i64) with
    /// `attention_mask` (same shape, 1 for a token, 0 for padding; any
    /// dtype); token type 0 everywhere.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<BertOutput> {
        self.forward_masked(input_ids, attention_mask, &ForwardMasks::default())
    }

    /// [`Bert::forward`] with head and neuron masks.
    pub fn forward_masked(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        masks: &ForwardMasks,
    ) -> Result<BertOutput> {
        let (b, t) = input_ids.dims2()?;
        if attention_mask.dims() != [b, t] {
            return Err(config_error(format!(
                "attention mask of shape {:?} for input ids of shape [{b}, {t}]",
                attention_mask.dims()
            )));
        }
        if t > self.config.max_position_embeddings {
            return Err(config_error(format!(
                "{t} tokens exceed max_position_embeddings {}",
                self.config.max_position_embeddings
            )));
        }
        for (what, m) in [("head", &masks.heads), ("neuron", &masks.neurons)] {
            if let Some(m) = m {
                if m.len() != self.config.num_layers() {
                    return Err(config_error(format!(
                        "{} {what} masks for {} layers",
                        m.len(),
                        self.config.num_layers()
                    )));
                }
            }
        }
        let ids = input_ids.to_dtype(DType::U32)?;
        let max_id = ids.flatten_all()?.max(0)?.to_scalar::<u32>()?;
        if b * t > 0 && max_id as usize >= self.config.vocab_size {
            return Err(config_error(format!(
                "token id {max_id} is not below vocab_size {}",
                self.config.vocab_size
            )));
        }
        let e = self.config.embedding_width();
        let word = self
            .var("embeddings.word_embeddings.weight")
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, e))?;
        let pos = self
            .var("embeddings.position_embeddings.weight")
            .narrow(0, 0, t)?
            .unsqueeze(0)?;
        let typ = self
            .var("embeddings.token_type_embeddings.weight")
            .narrow(0, 0, 1)?
            .unsqueeze(0)?;
        let x = word.broadcast_add(&pos)?.broadcast_add(&typ)?;
        let mut x = self.layer_norm(&x, "embeddings.LayerNorm")?;
        if self.config.embedding_size.is_some() {
            x = self.linear(&x, "encoder.embedding_hidden_mapping_in")?;
        }
        // additive mask: 0 for tokens, f32::MIN for padding (what transformers
        // adds) and, in a decoder, for the tokens after the query's
        let keep = attention_mask.to_dtype(DType::F32)?.reshape((b, 1, 1, t))?;
        let keep = if self.config.is_decoder {
            let causal = Tensor::tril2(t, DType::F32, x.device())?.reshape((1, 1, t, t))?;
            keep.broadcast_mul(&causal)?
        } else {
            keep
        };
        let bias = ((keep.ones_like()? - &keep)? * f32::MIN as f64)?;
        let mut hidden_states = vec![x.clone()];
        let mut attentions = Vec::with_capacity(self.config.num_layers());
        for i in 0..self.config.num_layers() {
            let head_mask = masks.heads.as_ref().map(|m| &m[i]);
            let neuron_mask = masks.neurons.as_ref().map(|m| &m[i]);
            let (y, probs) = self.layer(i, &x, &bias, head_mask, neuron_mask)?;
            x = y;
            hidden_states.push(x.clone());
            attentions.push(probs);
        }
        Ok(BertOutput {
            hidden_states,
            attentions,
        })
    }

    /// One encoder layer: self-attention, add & norm, feed-forward, add & norm.
    fn layer(
        &self,
        i: usize,
        x: &Tensor,
        bias: &Tensor,
        head_mask: Option<&Tensor>,
        neuron_mask: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let (b, t, h) = x.dims3()?;
        let sizes = self.config.layers[i];
        let (heads, d) = (sizes.heads, self.config.head_dim);
        let p = format!("encoder.layer.{}", self.config.weights_of_layer(i));
        let attn_out_bias = self.var(&format!("{p}.attention.output.dense.bias"));
        let (attn, probs) = if heads == 0 {
            let probs = Tensor::zeros((b, 0, t, t), DType::F32, x.device())?;
            (attn_out_bias.broadcast_as((b, t, h))?.clone(), probs)
        } else {
            let split = |name: &str| -> Result<Tensor> {
                let y = self.linear(x, &format!("{p}.attention.self.{name}"))?;
                Ok(y.reshape((b, t, heads, d))?.transpose(1, 2)?.contiguous()?)
            };
            let (q, k, v) = (split("query")?, split("key")?, split("value")?);
            let scores = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?.broadcast_add(bias)?;
            let probs = ops::softmax_last_dim(&scores)?;
            let weighted = match head_mask {
                Some(m) => probs.broadcast_mul(&m.reshape((1, heads, 1, 1))?)?,
                None => probs.clone(),
            };
            let ctx = weighted
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b, t, heads * d))?;
            (
                self.linear(&ctx, &format!("{p}.attention.output.dense"))?,
                probs,
            )
        };
        let x = self.layer_norm(&(attn + x)?, &format!("{p}.attention.output.LayerNorm"))?;
        let ffn = if sizes.intermediate == 0 {
            self.var(&format!("{p}.output.dense.bias"))
                .broadcast_as((b, t, h))?
                .clone()
        } else {
            let mid = self.linear(&x, &format!("{p}.intermediate.dense"))?;
            let mid = ops::gelu_erf(&mid)?;
            let mid = match neuron_mask {
                Some(m) => mid.broadcast_mul(m)?,
                None => mid,
            };
            self.linear(&mid, &format!("{p}.output.dense"))?
        };
        let y = self.layer_norm(&(ffn + &x)?, &format!("{p}.output.LayerNorm"))?;
        Ok((y, probs))
    }

    /// The language-model head's logits `[batch, tokens, vocab]` for hidden
    /// states `[batch, tokens, hidden]` (e.g. [`BertOutput::last_hidden`]):
    /// dense, erf GELU, layer norm, times the word embeddings transposed,
    /// plus the per-token bias. An error for a model without a head.
    pub fn lm_logits(&self, hidden: &Tensor) -> Result<Tensor> {
        if !self.config.lm_head {
            return Err(config_error("this model has no language-model head"));
        }
        let (b, t, h) = hidden.dims3()?;
        let x = self.linear(hidden, "cls.predictions.transform.dense")?;
        let x = self.layer_norm(&ops::gelu_erf(&x)?, "cls.predictions.transform.LayerNorm")?;
        let words = self.var("embeddings.word_embeddings.weight");
        let logits = x
            .reshape((b * t, h))?
            .matmul(&words.t()?)?
            .broadcast_add(self.var("cls.predictions.bias"))?;
        Ok(logits.reshape((b, t, self.config.vocab_size))?)
    }

    /// `x · Wᵀ + b` over the last axis of a `[batch, tokens, in]` tensor.
    fn linear(&self, x: &Tensor, prefix: &str) -> Result<Tensor> {
        let (b, t, n) = x.dims3()?;
        let w = self.var(&format!("{prefix}.weight"));
        let y = x
            .reshape((b * t, n))?
            .matmul(&w.t()?)?
            .broadcast_add(self.var(&format!("{prefix}.bias")))?;
        Ok(y.reshape((b, t, w.dim(0)?))?)
    }

    /// Layer norm over the last axis, composed of differentiable operations.
    fn layer_norm(&self, x: &Tensor, prefix: &str) -> Result<Tensor> {
        layer_norm(
            x,
            self.var(&format!("{prefix}.weight")),
            self.var(&format!("{prefix}.bias")),
            self.config.layer_norm_eps,
        )
    }
}

/// Layer norm over the last axis (biased variance, as PyTorch), with a
/// backward pass ([`ops::transformer::layer_norm`]).
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(ops::layer_norm(x, weight, bias, eps)?)
}

/// Mean of `hidden` (`[batch, tokens, hidden]`) over the tokens that
/// `attention_mask` (`[batch, tokens]`) keeps, as sentence-transformers
/// pools (the count clamped at 1e-9).
pub fn mean_pool(hidden: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
    let m = attention_mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let sum = hidden.broadcast_mul(&m)?.sum(1)?;
    let count = m.sum(1)?.clamp(1e-9, f64::MAX)?;
    Ok(sum.broadcast_div(&count)?)
}

/// Each row divided by its L2 norm (clamped at 1e-12, as `F.normalize`).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    Ok(x.broadcast_div(&norm)?)
}

/// Reads at most `max` bytes of `path`, refusing a larger file.
fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > max {
        return Err(ModelError::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("{len} bytes exceed the {max} this file may have"),
        });
    }
    std::fs::read(path).map_err(io)
}

/// The tensors of a Hugging Face `model.safetensors` that `config` names;
/// the file may not be larger than the config's parameters (plus what an
/// unused pooler, position ids and a header take) allow.
fn read_safetensors(path: &Path, config: &BertConfig) -> Result<BTreeMap<String, Tensor>> {
    let h = config.hidden_size as u64;
    // f32 parameters, a pooler (h² + h), position ids (i64) and 100 MB of header
    let max = 4 * (config.num_params() as u64 + h * h + h)
        + 8 * config.max_position_embeddings as u64
        + 100_000_000;
    let bytes = read_bounded(path, max)?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| ModelError::Checkpoint {
        path: path.to_path_buf(),
        reason: format!("not a valid safetensors file (or truncated): {e}"),
    })?;
    let wanted: std::collections::BTreeSet<String> =
        config.param_specs().into_iter().map(|(n, _)| n).collect();
    let mut tensors = BTreeMap::new();
    for (name, view) in st.iter() {
        let key = name.strip_prefix("bert.").unwrap_or(name);
        if !wanted.contains(key) {
            continue;
        }
        let dtype = DType::try_from(view.dtype()).map_err(|_| ModelError::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("tensor '{name}' has unsupported dtype {:?}", view.dtype()),
        })?;
        let t = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)?;
        tensors.insert(key.to_string(), t);
    }
    Ok(tensors)
}
