//! ALBERT's two parameter reductions in the BERT encoder: cross-layer
//! sharing (one layer's weights applied N times) and factorised embeddings
//! (vocab × E, then E → hidden).

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use kdprune_models::bert::{Bert, BertConfig};

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn count(config: &BertConfig, prefix: &str) -> usize {
    config
        .param_specs()
        .iter()
        .filter(|(n, _)| n.starts_with(prefix))
        .map(|(_, s)| s.iter().product::<usize>())
        .sum()
}

/// BERT-base sizes (hidden 768, 12 layers of 12 heads, 3,072 neurons).
fn base(vocab: usize) -> BertConfig {
    BertConfig::new(vocab, 768, 12, 12, 3072, 512, 0, false, false).unwrap()
}

#[test]
fn parameter_counts_match_the_albert_arithmetic() -> TestResult {
    // One layer, by hand: Q, K, V and the attention output are 768·768 + 768
    // each (4 · 590,592 = 2,362,368), two layer norms 2 · 1,536 = 3,072, the
    // feed-forward 768·3072 + 3072 + 3072·768 + 768 = 4,722,432: 7,087,872.
    let per_layer = 7_087_872;
    let unshared = base(30_000);
    assert_eq!(count(&unshared, "encoder.layer."), 12 * per_layer); // 85.05 M
    let shared = base(30_000).albert(true, None)?;
    assert_eq!(count(&shared, "encoder.layer."), per_layer); // 7.09 M
    assert!(shared
        .param_specs()
        .iter()
        .all(|(n, _)| !n.starts_with("encoder.layer.1.")));

    // Word embeddings 30,000 · 768 = 23,040,000 (23.0 M); factorised at
    // E = 128: 30,000 · 128 + 128 · 768 + 768 (the mapping's bias) = 3,939,072.
    assert_eq!(count(&unshared, "embeddings.word_embeddings"), 23_040_000);
    let factorised = base(30_000).albert(false, Some(128))?;
    assert_eq!(
        count(&factorised, "embeddings.word_embeddings")
            + count(&factorised, "encoder.embedding_hidden_mapping_in"),
        3_939_072
    );
    // whole models (one token type, 512 positions): BERT-base-sized
    // 23,040,000 + 512·768 + 768 + 2·768 (embeddings) + 12 · 7,087,872 =
    // 108,489,984; both reductions 30,000·128 + 512·128 + 128 + 2·128 +
    // 128·768 + 768 (embeddings and mapping) + 7,087,872 = 11,092,864
    assert_eq!(unshared.num_params(), 108_489_984);
    let both = base(30_000).albert(true, Some(128))?;
    assert_eq!(both.num_params(), 11_092_864);
    Ok(())
}

/// A small encoder, its config and input.
fn small(shared: bool, embedding: Option<usize>) -> BertConfig {
    BertConfig::new(50, 16, 3, 2, 24, 12, 0, false, false)
        .unwrap()
        .albert(shared, embedding)
        .unwrap()
}

fn input() -> (Tensor, Tensor) {
    let ids = Tensor::new(&[[3u32, 7, 9, 0], [1, 4, 0, 0]], &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 0], [1, 1, 0, 0]], &Device::Cpu).unwrap();
    (ids, mask)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn a_shared_layer_equals_an_unshared_encoder_with_copies_of_it() -> TestResult {
    let dev = Device::Cpu;
    let shared = Bert::init(small(true, None), 7, &dev)?;
    // the unshared encoder with layer 0's tensors copied to layers 1 and 2
    let mut tensors: BTreeMap<String, Tensor> = shared.tensors()?;
    for (name, t) in shared.tensors()? {
        if let Some(rest) = name.strip_prefix("encoder.layer.0.") {
            for i in [1, 2] {
                tensors.insert(format!("encoder.layer.{i}.{rest}"), t.clone());
            }
        }
    }
    let copies = Bert::from_tensors(small(false, None), &tensors, &dev)?;
    let (ids, mask) = input();
    let a = shared.forward(&ids, &mask)?;
    let b = copies.forward(&ids, &mask)?;
    assert_eq!(a.hidden_states.len(), 4);
    assert_eq!(max_diff(a.last_hidden(), b.last_hidden()), 0.0);
    // and it has one layer's parameters, not three
    assert_eq!(
        copies.config().num_params() - shared.config().num_params(),
        2 * count(&small(true, None), "encoder.layer.0.")
    );
    // structural removal would change every layer: refused
    assert!(shared.remove_heads(&[vec![0], vec![0], vec![0]]).is_err());
    Ok(())
}

#[test]
fn factorised_and_shared_encoders_train_save_and_load() -> TestResult {
    let dev = Device::Cpu;
    let dir = tempfile::tempdir()?;
    let model = Bert::init(small(true, Some(6)), 3, &dev)?;
    assert_eq!(
        model.tensors()?["embeddings.word_embeddings.weight"].dims(),
        [50, 6]
    );
    let (ids, mask) = input();
    let out = model.forward(&ids, &mask)?;
    assert_eq!(out.last_hidden().dims(), [2, 4, 16]);
    // gradients reach the mapping, the narrow embeddings and the shared layer
    let loss = out.last_hidden().sqr()?.sum_all()?;
    let grads = loss.backward()?;
    for (name, var) in model.named_vars() {
        if name.ends_with("LayerNorm.bias") || name.contains("position") {
            continue;
        }
        let g = grads
            .get(var.as_tensor())
            .ok_or(format!("no gradient for {name}"))?;
        let norm: f32 = g.sqr()?.sum_all()?.to_scalar()?;
        assert!(norm > 0.0, "zero gradient for {name}");
    }
    // the folder round trip keeps both switches and the outputs
    model.save_dir(dir.path())?;
    let json = std::fs::read_to_string(dir.path().join("config.json"))?;
    assert!(json.contains("\"kdprune_shared_layers\": true"), "{json}");
    assert!(json.contains("\"embedding_size\": 6"), "{json}");
    let back = Bert::load_dir(dir.path(), &dev)?;
    assert_eq!(back.config(), model.config());
    let again = back.forward(&ids, &mask)?;
    assert_eq!(max_diff(out.last_hidden(), again.last_hidden()), 0.0);
    // unequal shared layers and a zero embedding width are refused
    let mut bad = small(false, None);
    bad.layers[1].heads = 1;
    assert!(bad.clone().albert(true, None).is_err());
    assert!(small(false, None).albert(false, Some(0)).is_err());
    Ok(())
}

#[test]
fn a_shared_student_is_made_from_one_layer_of_a_teacher() -> TestResult {
    let dev = Device::Cpu;
    let teacher = Bert::init(small(false, None), 5, &dev)?;
    let student = teacher.shared_layer(1, 2)?;
    assert!(student.config().shared_layers);
    assert_eq!(student.config().num_layers(), 2);
    let t = teacher.tensors()?;
    let s = student.tensors()?;
    assert_eq!(
        max_diff(
            &t["encoder.layer.1.output.dense.weight"],
            &s["encoder.layer.0.output.dense.weight"]
        ),
        0.0
    );
    assert!(!s.contains_key("encoder.layer.1.output.dense.weight"));
    let (ids, mask) = input();
    assert_eq!(student.forward(&ids, &mask)?.hidden_states.len(), 3);
    Ok(())
}

/// The fused CPU runtime (what retrieval and the teacher's targets use)
/// runs shared layers and factorised embeddings as the training forward pass does.
#[test]
fn the_runtime_agrees_with_the_forward_pass() -> TestResult {
    use kdprune_models::bert::mean_pool;
    use kdprune_models::infer::BertRuntime;
    let dev = Device::Cpu;
    for (shared, embedding) in [(true, None), (false, Some(6)), (true, Some(6))] {
        let model = Bert::init(small(shared, embedding), 11, &dev)?;
        let seqs: [&[u32]; 2] = [&[3, 7, 9], &[1, 4]];
        let fused = BertRuntime::new(&model)?.mean_pooled(&seqs)?;
        let (ids, mask) = input();
        let reference: Vec<Vec<f32>> =
            mean_pool(model.forward(&ids, &mask)?.last_hidden(), &mask)?.to_vec2()?;
        for (a, b) in fused.iter().zip(&reference) {
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() < 1e-5, "{shared} {embedding:?}: {x} vs {y}");
            }
        }
    }
    Ok(())
}
