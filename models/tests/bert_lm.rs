//! BERT with a language-model head and causal attention (Hugging Face's
//! `BertLMHeadModel`): the logits equal what transformers computes from the
//! folder `Bert::save_dir` writes, attention never looks ahead, and the
//! model saves and loads.

use candle_core::{Device, Tensor};
use kdprune_models::bert::{Bert, BertConfig};

/// A tiny causal LM: 40 tokens, hidden 16, 2 layers of 2 heads, 24 neurons.
fn tiny(seed: u64) -> Bert {
    let config = BertConfig::new(40, 16, 2, 2, 24, 12, 0, true, true).unwrap();
    Bert::init(config, seed, &Device::Cpu).unwrap()
}

fn inputs() -> (Tensor, Tensor) {
    let ids = Tensor::new(&[[2u32, 17, 5, 33, 3, 0], [2, 9, 3, 0, 0, 0]], &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], &Device::Cpu).unwrap();
    (ids, mask)
}

#[test]
fn causal_lm_logits_equal_transformers() {
    let bert = tiny(7);
    // `KDPRUNE_GOLDEN_OUT=/tmp/lmgold cargo test -p kdprune-models --test bert_lm`
    // writes the folder the values below come from:
    //
    //   import torch, transformers
    //   m = transformers.BertLMHeadModel.from_pretrained("/tmp/lmgold").eval()
    //   ids = torch.tensor([[2, 17, 5, 33, 3, 0], [2, 9, 3, 0, 0, 0]])
    //   mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]])
    //   z = m(input_ids=ids, attention_mask=mask).logits
    //   print(z[0, :5, :4].tolist(), z[1, :3, 36:].tolist())
    //
    // (transformers 5.24, torch 2.15; every `bert.*` and `cls.*` tensor
    // loads, the decoder tied to the word embeddings)
    if let Some(dir) = std::env::var_os("KDPRUNE_GOLDEN_OUT") {
        bert.save_dir(std::path::Path::new(&dir)).unwrap();
    }
    let (ids, mask) = inputs();
    let out = bert.forward(&ids, &mask).unwrap();
    let logits = bert.lm_logits(out.last_hidden()).unwrap();
    assert_eq!(logits.dims(), &[2, 6, 40]);
    let a: Vec<Vec<f32>> = logits
        .get(0)
        .unwrap()
        .narrow(0, 0, 5)
        .unwrap()
        .narrow(1, 0, 4)
        .unwrap()
        .to_vec2()
        .unwrap();
    let b: Vec<Vec<f32>> = logits
        .get(1)
        .unwrap()
        .narrow(0, 0, 3)
        .unwrap()
        .narrow(1, 36, 4)
        .unwrap()
        .to_vec2()
        .unwrap();
    let want_a: [[f32; 4]; 5] = GOLD_A;
    let want_b: [[f32; 4]; 3] = GOLD_B;
    for (got, want) in a
        .iter()
        .flatten()
        .chain(b.iter().flatten())
        .zip(want_a.iter().flatten().chain(want_b.iter().flatten()))
    {
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}

// column 0 is the padding token: its embedding is 0 and so is its logit
const GOLD_A: [[f32; 4]; 5] = [
    [0.0, -0.225_607_1, 0.054_900_95, 0.048_439_574],
    [0.0, -0.171_860_43, 0.051_878_437, 0.059_363_525],
    [0.0, 0.091_692_85, -0.128_263, -0.083_315_12],
    [0.0, -0.083_230_35, -0.003_752_886_8, 0.146_097_14],
    [0.0, -0.125_663_83, -0.058_234_03, 0.000_979_217_1],
];
const GOLD_B: [[f32; 4]; 3] = [
    [-0.014_320_763, 0.038_949_45, -0.033_577_61, -0.035_042_234],
    [-0.121_673_68, 0.054_991_055, 0.001_910_392_7, -0.103_623_93],
    [-0.101_836_17, -0.030_590_503, 0.051_516_544, -0.073_642_99],
];

#[test]
fn attention_never_looks_ahead() {
    let bert = tiny(3);
    let (ids, mask) = inputs();
    let logits = |ids: &Tensor| -> Vec<Vec<f32>> {
        let out = bert.forward(ids, &mask).unwrap();
        let z = bert.lm_logits(out.last_hidden()).unwrap();
        z.get(0).unwrap().to_vec2().unwrap()
    };
    let before = logits(&ids);
    // change the fourth token of the first row: positions 0..3 must not move,
    // position 3 and later must
    let changed = Tensor::new(&[[2u32, 17, 5, 8, 3, 0], [2, 9, 3, 0, 0, 0]], &Device::Cpu).unwrap();
    let after = logits(&changed);
    for j in 0..3 {
        assert_eq!(before[j], after[j], "position {j} saw a later token");
    }
    for j in 3..5 {
        assert_ne!(before[j], after[j], "position {j} ignored its own token");
    }
}

#[test]
fn saves_loads_and_initialises_deterministically() {
    let bert = tiny(11);
    let dir = tempfile::tempdir().unwrap();
    bert.save_dir(dir.path()).unwrap();
    let config = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    assert!(config.contains("BertLMHeadModel") && config.contains("\"is_decoder\": true"));
    let loaded = Bert::load_dir(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(loaded.config(), bert.config());
    let (ids, mask) = inputs();
    let z = |m: &Bert| -> Vec<f32> {
        let out = m.forward(&ids, &mask).unwrap();
        m.lm_logits(out.last_hidden())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    assert_eq!(z(&bert), z(&loaded));
    // same seed, same values; another seed, others
    assert_eq!(z(&tiny(11)), z(&bert));
    assert_ne!(z(&tiny(12)), z(&bert));
    // the head survives a layer subset (a 1-layer student of the 2-layer model)
    let student = bert.layer_subset(&[1]).unwrap();
    assert!(student.config().lm_head && student.config().is_decoder);
    assert_eq!(
        bert.config().num_params() - student.config().num_params(),
        // one layer: q, k, v, o (16·16 + 16 each), two layer norms, 16·24 + 24 + 24·16 + 16
        4 * (16 * 16 + 16) + 2 * 2 * 16 + (16 * 24 + 24) + (24 * 16 + 16)
    );
}

#[test]
fn an_encoder_has_no_lm_head_and_sizes_are_checked() {
    let config = BertConfig::new(40, 16, 1, 2, 24, 12, 0, false, false).unwrap();
    let bert = Bert::init(config, 0, &Device::Cpu).unwrap();
    let (ids, mask) = inputs();
    let out = bert.forward(&ids, &mask).unwrap();
    let err = bert.lm_logits(out.last_hidden()).unwrap_err().to_string();
    assert!(err.contains("no language-model head"), "{err}");
    let err = BertConfig::new(40, 16, 1, 3, 24, 12, 0, true, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a multiple of 3 heads"), "{err}");
    let err = BertConfig::new(40, 16, 1, 2, 24, 12, 40, true, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("pad_token_id"), "{err}");
    // a head with untied word embeddings is refused when read
    let json = r#"{"model_type": "bert", "architectures": ["BertLMHeadModel"], "vocab_size": 40,
        "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 24, "tie_word_embeddings": false}"#;
    let err = BertConfig::from_hf_json(json).unwrap_err().to_string();
    assert!(err.contains("untied"), "{err}");
}
