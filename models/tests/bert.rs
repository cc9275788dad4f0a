//! The BERT encoder against the real all-MiniLM-L6-v2 checkpoint and the
//! embeddings sentence-transformers gives for it (`../shared/models`,
//! skipped when absent), and its gradients.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use kdprune_data::text::TextTokenizer;
use kdprune_models::bert::{l2_normalize, mean_pool, Bert};

fn shared_dir() -> PathBuf {
    std::env::var_os("KDPRUNE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared")))
}

fn minilm() -> Option<PathBuf> {
    let dir = shared_dir().join("models").join("all-MiniLM-L6-v2");
    if dir.join("model.safetensors").is_file() {
        Some(dir)
    } else {
        println!("skipping: {} not found", dir.display());
        None
    }
}

#[test]
fn minilm_token_ids_and_embeddings_equal_sentence_transformers() {
    let Some(dir) = minilm() else { return };
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.parent().unwrap().join("reference-embeddings.json")).unwrap(),
    )
    .unwrap();
    let items = reference["items"].as_array().unwrap();
    let sentences: Vec<&str> = items
        .iter()
        .map(|i| i["sentence"].as_str().unwrap())
        .collect();
    let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"), 256).unwrap();
    let batch = tokenizer.encode_batch(&sentences).unwrap();
    let bert = Bert::load_dir(&dir, &Device::Cpu).unwrap();
    // sum(p.numel() for p in SentenceTransformer(...).parameters()) = 22,713,216,
    // less the pooler this encoder does not load (384·384 + 384 = 147,840)
    assert_eq!(bert.config().num_params(), 22_713_216 - 147_840);
    // one padded batch: the attention mask must keep the padding out
    let (ids, mask) = batch.tensors(&Device::Cpu).unwrap();
    let out = bert.forward(&ids, &mask).unwrap();
    let emb = l2_normalize(&mean_pool(out.last_hidden(), &mask).unwrap()).unwrap();
    let emb: Vec<Vec<f32>> = emb.to_vec2().unwrap();
    for (i, item) in items.iter().enumerate() {
        let want_ids: Vec<u32> = item["token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            batch.row(i),
            want_ids.as_slice(),
            "ids of {:?}",
            sentences[i]
        );
        let want: Vec<f64> = item["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(want.len(), emb[i].len());
        let dot: f64 = want.iter().zip(&emb[i]).map(|(a, &b)| a * b as f64).sum();
        let na: f64 = want.iter().map(|a| a * a).sum::<f64>().sqrt();
        let nb: f64 = emb[i]
            .iter()
            .map(|&b| (b as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let cos = dot / (na * nb);
        assert!(cos >= 0.9999, "cosine {cos} for {:?}", sentences[i]);
    }
    // the fused inference path: the same embeddings without padding
    let runtime = kdprune_models::infer::BertRuntime::new(&bert).unwrap();
    let rows: Vec<&[u32]> = (0..sentences.len()).map(|i| batch.row(i)).collect();
    let fused = runtime.sentence_embeddings(&rows).unwrap();
    for (a, b) in fused.iter().flatten().zip(emb.iter().flatten()) {
        assert!((a - b).abs() < 1e-5, "fused {a} vs {b}");
    }
    // one sentence alone gives the same embedding as inside the padded batch
    let single = tokenizer.encode_batch(&sentences[1..2]).unwrap();
    let (ids1, mask1) = single.tensors(&Device::Cpu).unwrap();
    let out1 = bert.forward(&ids1, &mask1).unwrap();
    let e1: Vec<Vec<f32>> = l2_normalize(&mean_pool(out1.last_hidden(), &mask1).unwrap())
        .unwrap()
        .to_vec2()
        .unwrap();
    for (a, b) in e1[0].iter().zip(&emb[1]) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn a_crafted_config_is_refused_before_allocating() {
    use kdprune_models::bert::BertConfig;
    let base = r#"{"model_type":"bert","vocab_size":30522,"hidden_size":384,"num_hidden_layers":6,
        "num_attention_heads":12,"intermediate_size":1536}"#;
    assert_eq!(BertConfig::from_hf_json(base).unwrap().num_layers(), 6);
    let cases = [
        (base.replace("30522", "100000000000"), "vocab_size"),
        (
            base.replace("\"num_hidden_layers\":6", "\"num_hidden_layers\":100000"),
            "num_hidden_layers",
        ),
        (base.replace("1536", "1000000000"), "exceed"),
        (
            base.replace("\"num_attention_heads\":12", "\"num_attention_heads\":7"),
            "not a multiple",
        ),
        (
            base.replace("}", ",\"hidden_act\":\"relu\"}"),
            "hidden_act 'relu'",
        ),
        (base.replace("bert", "gpt2"), "model_type 'gpt2'"),
        ("{".to_string(), "config.json"),
    ];
    for (json, want) in cases {
        let err = BertConfig::from_hf_json(&json).unwrap_err().to_string();
        assert!(err.contains(want), "{err} should mention {want}");
    }
}

#[test]
fn a_checkpoint_missing_a_tensor_or_of_another_shape_is_refused() {
    let Some(dir) = minilm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let bert = Bert::load_dir(&dir, &Device::Cpu).unwrap();
    let mut tensors = bert.tensors().unwrap();
    let name = "encoder.layer.3.intermediate.dense.weight";
    tensors.insert(
        name.to_string(),
        Tensor::zeros((10, 384), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let err = Bert::from_tensors(bert.config().clone(), &tensors, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains(name), "{err}");
    tensors.remove(name);
    let err = Bert::from_tensors(bert.config().clone(), &tensors, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("missing tensor"), "{err}");
    // saved and loaded back: the same tensors
    bert.save_dir(tmp.path()).unwrap();
    let back = Bert::load_dir(tmp.path(), &Device::Cpu).unwrap();
    assert_eq!(back.config(), bert.config());
    let (a, b) = (bert.tensors().unwrap(), back.tensors().unwrap());
    for (n, t) in &a {
        let d = (t - &b[n])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(d, 0.0, "{n}");
    }
}

/// A two-layer BERT whose parameters are `0.5·sin(0.7·i + 1.3·k)` (+1 for
/// the layer-norm weights), `k` the parameter's index in sorted-name order.
fn tiny_bert() -> Bert {
    use kdprune_models::bert::BertConfig;
    let config = BertConfig::from_hf_json(
        r#"{"model_type":"bert","vocab_size":11,"hidden_size":8,"num_hidden_layers":2,
            "num_attention_heads":2,"intermediate_size":6,"max_position_embeddings":7,
            "type_vocab_size":2,"hidden_act":"gelu","layer_norm_eps":1e-12}"#,
    )
    .unwrap();
    let tensors = config
        .param_specs()
        .into_iter()
        .enumerate()
        .map(|(k, (name, shape))| {
            let n: usize = shape.iter().product();
            let one = if name.ends_with("LayerNorm.weight") {
                1.0
            } else {
                0.0
            };
            let v: Vec<f32> = (0..n)
                .map(|i| (0.5 * (0.7 * i as f64 + 1.3 * k as f64).sin() + one) as f32)
                .collect();
            (name, Tensor::from_vec(v, shape, &Device::Cpu).unwrap())
        })
        .collect();
    Bert::from_tensors(config, &tensors, &Device::Cpu).unwrap()
}

/// Loss and gradients against transformers' BertModel (eager attention, f64)
/// on the same weights; the snippet, with `torch.set_default_dtype(torch.float64)`:
///
/// ```python
/// cfg = BertConfig(vocab_size=11, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
///     intermediate_size=6, max_position_embeddings=7, type_vocab_size=2, hidden_act="gelu",
///     layer_norm_eps=1e-12, attn_implementation="eager")
/// m = BertModel(cfg, add_pooling_layer=False).eval()
/// names = sorted(n for n, _ in m.named_parameters()); sd = dict(m.named_parameters())
/// with torch.no_grad():
///     for k, n in enumerate(names):
///         i = torch.arange(sd[n].numel(), dtype=torch.float64)
///         sd[n].copy_((0.5 * torch.sin(0.7 * i + 1.3 * k)
///             + (1.0 if n.endswith("LayerNorm.weight") else 0.0)).reshape(sd[n].shape))
/// ids = torch.tensor([[1, 4, 9, 2, 0], [3, 10, 5, 0, 0]])
/// mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
/// out = m(input_ids=ids, attention_mask=mask, output_attentions=True)
/// h = out.last_hidden_state
/// r = torch.cos(0.3 * torch.arange(h.numel(), dtype=torch.float64)).reshape(h.shape)
/// loss = (h * r * mask[..., None]).sum() + (out.attentions[0] * 0.5).sum()
/// loss.backward()
/// # per parameter: grad.flatten()[:4] and grad.abs().sum()
/// ```
#[test]
fn gradients_flow_through_layer_norm_softmax_and_gelu_as_in_transformers() {
    let bert = tiny_bert();
    let dev = Device::Cpu;
    let ids = Tensor::new(&[[1u32, 4, 9, 2, 0], [3, 10, 5, 0, 0]], &dev).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 0], [1, 1, 1, 0, 0]], &dev).unwrap();
    let out = bert.forward(&ids, &mask).unwrap();
    let h = out.last_hidden();
    let n = h.elem_count();
    let r: Vec<f32> = (0..n).map(|i| (0.3 * i as f64).cos() as f32).collect();
    let r = Tensor::from_vec(r, h.dims(), &dev).unwrap();
    let m = mask
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .unsqueeze(2)
        .unwrap();
    let loss = (h * r)
        .unwrap()
        .broadcast_mul(&m)
        .unwrap()
        .sum_all()
        .unwrap()
        .add(&(out.attentions[0].sum_all().unwrap() * 0.5).unwrap())
        .unwrap();
    let value = loss.to_scalar::<f32>().unwrap() as f64;
    assert!((value - 17.335775000756705).abs() < 1e-4, "loss {value}");
    let grads = loss.backward().unwrap();
    let vars: std::collections::BTreeMap<_, _> = bert.named_vars().into_iter().collect();
    let want: [(&str, [f64; 4], f64); 6] = [
        (
            "embeddings.word_embeddings.weight",
            [0.0, 0.0, 0.0, 0.0],
            13.8882999,
        ),
        (
            "embeddings.LayerNorm.weight",
            [0.7246962, 0.6390588, -0.1648382, -0.4865811],
            4.0734084,
        ),
        (
            "encoder.layer.0.attention.self.query.weight",
            [-0.051635, -0.0321292, -0.0028724, 0.0125819],
            2.4300094,
        ),
        (
            "encoder.layer.0.attention.self.value.bias",
            [0.2333966, 0.3405008, 0.2874622, 0.0992256],
            1.9401257,
        ),
        (
            "encoder.layer.1.intermediate.dense.weight",
            [0.0468176, 0.0413105, 0.0602655, 0.1538706],
            12.8986124,
        ),
        (
            "encoder.layer.1.output.LayerNorm.bias",
            [1.0818146, 1.0292166, 0.8846817, 0.6611208],
            4.9159631,
        ),
    ];
    for (name, first, abs_sum) in want {
        let g = grads
            .get(vars[name].as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let g: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
        for (a, b) in g.iter().zip(first) {
            assert!((*a as f64 - b).abs() < 1e-4, "{name}: {a} vs {b}");
        }
        let s: f64 = g.iter().map(|v| v.abs() as f64).sum();
        assert!(
            (s - abs_sum).abs() < 1e-4 * abs_sum.max(1.0),
            "{name}: |g| sum {s} vs {abs_sum}"
        );
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Token ids and a mask with padding for the tiny BERT.
fn tiny_batch() -> (Tensor, Tensor) {
    let dev = Device::Cpu;
    (
        Tensor::new(&[[1u32, 4, 9, 2, 0], [3, 10, 5, 0, 0]], &dev).unwrap(),
        Tensor::new(&[[1u32, 1, 1, 1, 0], [1, 1, 1, 0, 0]], &dev).unwrap(),
    )
}

#[test]
fn removing_heads_and_neurons_equals_masking_them() {
    use kdprune_models::bert::ForwardMasks;
    let bert = tiny_bert();
    let (ids, mask) = tiny_batch();
    let dev = Device::Cpu;
    // layer 0 keeps head 1, layer 1 keeps none; neurons: 0, 2, 5 and 4
    let heads = bert.remove_heads(&[vec![1], vec![]]).unwrap();
    let small = heads.remove_neurons(&[vec![0, 2, 5], vec![4]]).unwrap();
    let sizes: Vec<(usize, usize)> = small
        .config()
        .layers
        .iter()
        .map(|l| (l.heads, l.intermediate))
        .collect();
    assert_eq!(sizes, [(1, 3), (0, 1)]);
    let masks = ForwardMasks {
        heads: Some(vec![
            Tensor::new(&[0f32, 1.0], &dev).unwrap(),
            Tensor::new(&[0f32, 0.0], &dev).unwrap(),
        ]),
        neurons: Some(vec![
            Tensor::new(&[1f32, 0.0, 1.0, 0.0, 0.0, 1.0], &dev).unwrap(),
            Tensor::new(&[0f32, 0.0, 0.0, 0.0, 1.0, 0.0], &dev).unwrap(),
        ]),
    };
    let masked = bert.forward_masked(&ids, &mask, &masks).unwrap();
    let removed = small.forward(&ids, &mask).unwrap();
    for (a, b) in masked.hidden_states.iter().zip(&removed.hidden_states) {
        assert!(max_diff(a, b) < 1e-5, "{}", max_diff(a, b));
    }
    // each head (d = 4): Q/K/V rows (3·d·H) and biases (3·d), output columns
    // (H·d); each neuron: a row (H), a bias (1) and an output column (H)
    let h = 8;
    let removed_params = (3 * 4 * h + 3 * 4 + h * 4) // one head (d = 4) of layer 0
        + 2 * (3 * 4 * h + 3 * 4 + h * 4) // both heads of layer 1
        + 3 * (h + 1 + h) // three neurons of layer 0
        + 5 * (h + 1 + h); // five of layer 1
    assert_eq!(
        small.config().num_params(),
        bert.config().num_params() - removed_params
    );
    // saved with per-layer sizes, loaded back as a BERT
    let dir = tempfile::tempdir().unwrap();
    small.save_dir(dir.path()).unwrap();
    let json = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    assert!(json.contains("kdprune_layers"), "{json}");
    let back = Bert::load_dir(dir.path(), &dev).unwrap();
    let again = back.forward(&ids, &mask).unwrap();
    assert_eq!(max_diff(again.last_hidden(), removed.last_hidden()), 0.0);
    // bad keep lists
    for (keep, want) in [
        (vec![vec![2], vec![]], "index 2 is out of range"),
        (vec![vec![0, 0], vec![]], "repeated"),
        (vec![vec![0]], "1 lists of heads to keep for 2 layers"),
    ] {
        let err = bert.remove_heads(&keep).unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }
}

#[test]
fn a_layer_subset_runs_the_chosen_layers() {
    let bert = tiny_bert();
    let (ids, mask) = tiny_batch();
    let full = bert.forward(&ids, &mask).unwrap();
    // the first layer alone: the full model's first hidden states
    let first = bert.layer_subset(&[0]).unwrap();
    let out = first.forward(&ids, &mask).unwrap();
    assert_eq!(out.hidden_states.len(), 2);
    assert_eq!(max_diff(&out.hidden_states[1], &full.hidden_states[1]), 0.0);
    // the identity subset is the model itself; a reordered one is not
    let same = bert
        .layer_subset(&[0, 1])
        .unwrap()
        .forward(&ids, &mask)
        .unwrap();
    assert_eq!(max_diff(same.last_hidden(), full.last_hidden()), 0.0);
    let swapped = bert
        .layer_subset(&[1, 0])
        .unwrap()
        .forward(&ids, &mask)
        .unwrap();
    assert!(max_diff(swapped.last_hidden(), full.last_hidden()) > 1e-3);
    // a layer repeated: one more layer's parameters (both layers have the same sizes)
    let full = bert.config().num_params();
    let per_layer = full - bert.layer_subset(&[1]).unwrap().config().num_params();
    let three = bert.layer_subset(&[0, 1, 1]).unwrap();
    assert_eq!(three.config().num_params(), full + per_layer);
    let err = bert.layer_subset(&[2]).unwrap_err().to_string();
    assert!(err.contains("layer 2 does not exist"), "{err}");
    assert!(bert.layer_subset(&[]).is_err());
}

/// The fused inference path against candle's forward pass on tiny random
/// models with weights of standard deviation 0.5 (attention far from
/// uniform): an encoder, a decoder, and one with a layer of no heads and a
/// layer of no neurons.
#[test]
fn the_fused_inference_path_equals_the_forward_pass() {
    use kdprune_models::bert::BertConfig;
    use kdprune_models::infer::BertRuntime;
    let lens = [7usize, 3, 5];
    let ids: Vec<Vec<u32>> = lens
        .iter()
        .enumerate()
        .map(|(s, &n)| (0..n).map(|i| ((i * 7 + s * 13 + 1) % 50) as u32).collect())
        .collect();
    for causal in [false, true] {
        let config = BertConfig::new(50, 24, 2, 3, 40, 16, 0, false, causal).unwrap();
        let init = Bert::init(config.clone(), 5, &Device::Cpu).unwrap();
        let scaled: std::collections::BTreeMap<String, Tensor> = init
            .tensors()
            .unwrap()
            .into_iter()
            .map(|(n, t)| {
                let t = if n.ends_with("LayerNorm.weight") {
                    t
                } else {
                    (t + 0.01).unwrap().affine(25.0, 0.0).unwrap()
                };
                (n, t)
            })
            .collect();
        let full = Bert::from_tensors(config, &scaled, &Device::Cpu).unwrap();
        let pruned = full
            .remove_heads(&[vec![2], vec![]])
            .unwrap()
            .remove_neurons(&[vec![], (0..17).collect()])
            .unwrap();
        for bert in [&full, &pruned] {
            let runtime = BertRuntime::new(bert).unwrap();
            let seqs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
            let fused = runtime.hidden_states(&seqs).unwrap();
            // candle: one padded batch
            let t = 7;
            let mut flat = vec![0u32; lens.len() * t];
            let mut mask = vec![0u32; lens.len() * t];
            for (s, row) in ids.iter().enumerate() {
                flat[s * t..s * t + row.len()].copy_from_slice(row);
                mask[s * t..s * t + row.len()]
                    .iter_mut()
                    .for_each(|m| *m = 1);
            }
            let ids_t = Tensor::from_vec(flat, (lens.len(), t), &Device::Cpu).unwrap();
            let mask_t = Tensor::from_vec(mask, (lens.len(), t), &Device::Cpu).unwrap();
            let out = bert.forward(&ids_t, &mask_t).unwrap();
            let want: Vec<Vec<Vec<f32>>> = out.last_hidden().to_vec3().unwrap();
            let mut row = 0;
            let mut worst = 0f32;
            for (s, &n) in lens.iter().enumerate() {
                for token in want[s].iter().take(n) {
                    for (j, &w) in token.iter().enumerate() {
                        worst = worst.max((fused[row * 24 + j] - w).abs());
                    }
                    row += 1;
                }
            }
            assert!(worst < 1e-4, "causal {causal}: largest difference {worst}");
            assert_eq!(fused.len(), row * 24);
        }
    }
    // ids and lengths beyond the model are refused
    let bert = Bert::init(
        BertConfig::new(50, 24, 1, 3, 40, 16, 0, false, false).unwrap(),
        0,
        &Device::Cpu,
    )
    .unwrap();
    let runtime = BertRuntime::new(&bert).unwrap();
    assert!(runtime.hidden_states(&[&[1, 50]]).is_err());
    assert!(runtime.hidden_states(&[&[1; 17]]).is_err());
}
