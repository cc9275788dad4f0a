//! `kdprune embed` and `kdprune eval-retrieval` on the real all-MiniLM-L6-v2
//! and WordNet glosses of `../shared` (skipped when absent).

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use common::{fails_with, kdprune, ok, p};
use kdprune_models::bert::{Bert, BertConfig};

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
fn embed_prints_the_reference_embeddings_as_json_lines() {
    let Some(model) = minilm() else { return };
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(model.parent().unwrap().join("reference-embeddings.json"))
            .unwrap(),
    )
    .unwrap();
    let items = reference["items"].as_array().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("texts.txt");
    let texts: Vec<&str> = items
        .iter()
        .map(|i| i["sentence"].as_str().unwrap())
        .collect();
    std::fs::write(&file, texts.join("\n\n") + "\n").unwrap();
    let out = ok(&kdprune(&[
        "embed",
        "--model",
        p(&model),
        "--file",
        p(&file),
        "--batch-size",
        "3",
    ]));
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), items.len());
    for (line, item) in lines.iter().zip(items) {
        assert_eq!(line["text"], item["sentence"]);
        let (a, b) = (
            line["embedding"].as_array().unwrap(),
            item["embedding"].as_array().unwrap(),
        );
        let cos: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| x.as_f64().unwrap() * y.as_f64().unwrap())
            .sum::<f64>()
            / b.iter()
                .map(|y| y.as_f64().unwrap().powi(2))
                .sum::<f64>()
                .sqrt();
        assert!(cos >= 0.9999, "cosine {cos} for {}", item["sentence"]);
    }
}

#[test]
fn eval_retrieval_matches_sentence_transformers_on_a_small_split() {
    let Some(model) = minilm() else { return };
    let glosses = shared_dir().join("datasets").join("wordnet-glosses");
    let dir = tempfile::tempdir().unwrap();
    // the header and the first 8 synsets of the shared test split
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(glosses.join("test.tsv.gz")).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let head: String = text.lines().take(9).map(|l| format!("{l}\n")).collect();
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(dir.path().join("test.tsv.gz")).unwrap(),
        flate2::Compression::default(),
    );
    gz.write_all(head.as_bytes()).unwrap();
    gz.finish().unwrap();
    // python3 benchmarks/embed_reference.py --model …/all-MiniLM-L6-v2 --data-dir DIR --retrieval
    // → split=test queries=11 glosses=8 accuracy_at_1=0.7273 mrr=0.7909
    let json = dir.path().join("report.json");
    let out = ok(&kdprune(&[
        "eval-retrieval",
        "--model",
        p(&model),
        "--data-dir",
        p(dir.path()),
        "--json",
        p(&json),
    ]));
    assert!(out.contains("| test | 11 | 8 | 0.7273 | 0.7909 |"), "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!((report["mrr"].as_f64().unwrap() - 0.7909).abs() < 5e-5);
    fails_with(
        &kdprune(&[
            "eval-retrieval",
            "--model",
            p(&model),
            "--data-dir",
            p(dir.path()),
            "--split",
            "dev",
        ]),
        "dev.tsv.gz",
    );
    fails_with(
        &kdprune(&["eval-retrieval", "--model", p(&model), "--split", "valid"]),
        "unknown split 'valid'",
    );
}

#[test]
fn bad_text_arguments_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    fails_with(
        &kdprune(&["embed", "--model", p(dir.path()), "--text", "a"]),
        "config.json",
    );
    fails_with(
        &kdprune(&[
            "embed",
            "--model",
            p(&dir.path().join("none")),
            "--text",
            "a",
        ]),
        "is not a model folder",
    );
    fails_with(
        &kdprune(&[
            "eval-retrieval",
            "--model",
            p(dir.path()),
            "--data-dir",
            p(&dir.path().join("none")),
        ]),
        "no WordNet glosses folder",
    );
    let Some(model) = minilm() else { return };
    fails_with(
        &kdprune(&["embed", "--model", p(&model)]),
        "nothing to embed",
    );
    fails_with(
        &kdprune(&[
            "embed",
            "--model",
            p(&model),
            "--text",
            "a",
            "--max-length",
            "1000",
        ]),
        "exceeds the model's 512 positions",
    );
    fails_with(
        &kdprune(&[
            "embed",
            "--model",
            p(&model),
            "--text",
            "a",
            "--batch-size",
            "0",
        ]),
        "batch size",
    );
    // over-long text: truncated, with a warning
    let long = "one two three four five six seven";
    let out = kdprune(&[
        "embed",
        "--model",
        p(&model),
        "--text",
        long,
        "--max-length",
        "4",
    ]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 text(s) longer than 4 tokens were truncated"),
        "{stderr}"
    );
    // a tokenizer with more tokens than the model's embeddings
    let small = dir.path().join("small");
    let config = BertConfig::from_hf_json(
        r#"{"model_type":"bert","vocab_size":11,"hidden_size":8,"num_hidden_layers":1,
            "num_attention_heads":2,"intermediate_size":6,"max_position_embeddings":16}"#,
    )
    .unwrap();
    let tensors = config
        .param_specs()
        .into_iter()
        .map(|(n, shape)| (n, Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap()))
        .collect();
    let bert = Bert::from_tensors(config, &tensors, &Device::Cpu).unwrap();
    bert.save_dir(&small).unwrap();
    std::fs::copy(model.join("tokenizer.json"), small.join("tokenizer.json")).unwrap();
    fails_with(
        &kdprune(&[
            "embed",
            "--model",
            p(&small),
            "--text",
            "a",
            "--max-length",
            "16",
        ]),
        "30522 tokens, the model's embeddings 11",
    );
}

/// A glosses folder whose three splits are the first 8 synsets of the shared test split.
fn tiny_glosses(dir: &std::path::Path) {
    let glosses = shared_dir().join("datasets").join("wordnet-glosses");
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(glosses.join("test.tsv.gz")).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let head: String = text.lines().take(9).map(|l| format!("{l}\n")).collect();
    for split in ["train", "dev", "test"] {
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(dir.join(format!("{split}.tsv.gz"))).unwrap(),
            flate2::Compression::default(),
        );
        gz.write_all(head.as_bytes()).unwrap();
        gz.finish().unwrap();
    }
}

#[test]
fn distill_encoder_trains_a_layer_subset_that_loads_as_a_model() {
    let Some(model) = minilm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("glosses");
    std::fs::create_dir(&data).unwrap();
    tiny_glosses(&data);
    let out = dir.path().join("student");
    let args = |out: &std::path::Path, extra: &[&str]| {
        let mut a = vec![
            "distill-encoder",
            "--teacher",
            p(&model),
            "--data-dir",
            p(&data),
            "--layers",
            "0,5",
            "--epochs",
            "3",
            "--batch-size",
            "8",
        ];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--out", out.to_str().unwrap()]);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| kdprune(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let table = ok(&run(args(&out, &["--lr", "1e-3"])));
    assert!(table.contains("| student, epoch "), "{table}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let losses: Vec<f64> = report["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 3);
    assert!(
        losses[2] < losses[0],
        "the distillation loss does not fall: {losses:?}"
    );
    assert_eq!(report["train_texts"], 19);
    // the student folder is a model of its own: 2 layers, the tokenizer beside it
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_hidden_layers"], 2);
    let eval = ok(&kdprune(&[
        "eval-retrieval",
        "--model",
        p(&out),
        "--data-dir",
        p(&data),
    ]));
    let acc = report["test"]["accuracy_at_1"].as_f64().unwrap();
    assert!(eval.contains(&format!("| {acc:.4} |")), "{eval} vs {acc}");
    // ALBERT's sharing: teacher layer 0 run twice with one set of weights,
    // saved with one layer's tensors and loaded back as a model
    let shared = dir.path().join("shared");
    ok(&run(args(&shared, &["--shared", "--lr", "1e-3"])));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(shared.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["num_hidden_layers"], 2);
    assert_eq!(config["kdprune_shared_layers"], true);
    let names = safetensors::SafeTensors::deserialize(
        &std::fs::read(shared.join("model.safetensors")).unwrap(),
    )
    .unwrap()
    .names()
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    assert!(names.iter().any(|n| n.starts_with("encoder.layer.0.")));
    assert!(!names.iter().any(|n| n.starts_with("encoder.layer.1.")));
    ok(&kdprune(&[
        "eval-retrieval",
        "--model",
        p(&shared),
        "--data-dir",
        p(&data),
    ]));

    // bad input: an existing non-empty --out, a layer the teacher lacks, a zero lr
    fails_with(&run(args(&out, &[])), "is not an empty folder");
    fails_with(
        &run(args(&dir.path().join("b"), &["--layers", "0,9"])),
        "layer 9 does not exist",
    );
    fails_with(
        &run(args(&dir.path().join("c"), &["--lr", "0"])),
        "--lr must be positive",
    );
    assert!(!dir.path().join("b").exists() && !dir.path().join("c").exists());
}

#[test]
fn prune_encoder_removes_heads_neurons_and_layers_into_a_model_that_loads() {
    let Some(model) = minilm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("glosses");
    std::fs::create_dir(&data).unwrap();
    tiny_glosses(&data);
    let out = dir.path().join("pruned");
    let base = |out: &std::path::Path, extra: &[&str]| {
        let mut a = vec![
            "prune-encoder".to_string(),
            "--model".into(),
            p(&model).into(),
            "--data-dir".into(),
            p(&data).into(),
            "--score-batches".into(),
            "1".into(),
            "--batch-size".into(),
            "8".into(),
            "--out".into(),
            p(out).into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        kdprune(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let table = ok(&base(
        &out,
        &["--heads", "0.5", "--neurons", "0.25", "--drop-layers", "2"],
    ));
    let dropped = table.lines().filter(|l| l.contains("→ dropped")).count();
    assert_eq!(dropped, 2, "{table}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("prune-report.json")).unwrap())
            .unwrap();
    // half of the 72 heads and a quarter of the 9,216 neurons go before the layers are dropped
    let kept = report["kept_layers"].as_array().unwrap().len();
    assert_eq!(kept, 4);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_hidden_layers"], 4);
    let layers = config["kdprune_layers"].as_array().unwrap();
    let heads: u64 = layers.iter().map(|l| l["heads"].as_u64().unwrap()).sum();
    assert!(
        heads < 36,
        "{heads} heads left in 4 of 6 layers after removing 36 of 72"
    );
    // the pruned folder is an encoder of its own
    let eval = ok(&kdprune(&[
        "eval-retrieval",
        "--model",
        p(&out),
        "--data-dir",
        p(&data),
    ]));
    assert!(eval.contains("| test | 11 | 8 |"), "{eval}");
    // and a student: 4 layers under 6, fewer heads — hidden states and
    // head-averaged attention maps of proportionally mapped layers
    let student = dir.path().join("student");
    let args = [
        "distill-encoder",
        "--teacher",
        p(&model),
        "--student",
        p(&out),
        "--data-dir",
        p(&data),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--cosine",
        "0",
        "--mse",
        "0",
        "--hidden",
        "1",
        "--attention",
        "1",
        "--out",
        p(&student),
    ];
    ok(&kdprune(&args));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(student.join("report.json")).unwrap())
            .unwrap();
    let loss = report["epochs"][0]["loss"].as_f64().unwrap();
    assert!(loss > 0.0 && loss.is_finite(), "{loss}");
    fails_with(&base(&out, &["--heads", "0.1"]), "exists");
    fails_with(
        &base(&dir.path().join("a"), &["--heads", "1.0"]),
        "--heads 1 must lie in [0, 1)",
    );
    fails_with(
        &base(&dir.path().join("b"), &["--criterion", "teacher-guided"]),
        "needs --teacher",
    );
    fails_with(
        &base(
            &dir.path().join("b"),
            &["--criterion", "teacher-guided", "--teacher", p(&model)],
        ),
        "scores of the teacher itself are all 0",
    );
    // the attention-variance criterion removes heads by their variance
    let av = dir.path().join("av");
    ok(&base(
        &av,
        &["--criterion", "attention-variance", "--heads", "0.25"],
    ));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(av.join("prune-report.json")).unwrap())
            .unwrap();
    let scores: Vec<f64> = report["head_scores"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    assert_eq!(scores.len(), 72);
    // a variance of probabilities over n keys lies in [0, 1/n − 1/n²] ⊂ [0, 1/4]
    assert!(
        scores.iter().all(|&v| (0.0..=0.25).contains(&v)),
        "{scores:?}"
    );
    let after: u64 = report["after"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l[0].as_u64().unwrap())
        .sum();
    assert_eq!(after, 54);
    fails_with(
        &base(&dir.path().join("c"), &["--drop-layers", "6"]),
        "leaves no layer",
    );
    fails_with(
        &base(&dir.path().join("d"), &["--criterion", "random"]),
        "unknown criterion 'random'",
    );
    for name in ["a", "b", "c", "d"] {
        assert!(!dir.path().join(name).exists());
    }
}

#[test]
fn attention_variance_is_the_variance_of_each_query_over_its_keys() {
    use kdprune_cli::encoder_prune::attention_variance;
    use kdprune_cli::text::SentenceEncoder;
    let Some(model) = minilm() else { return };
    let enc = SentenceEncoder::load(&model, Some(32), &Device::Cpu).unwrap();
    let texts = ["a small domesticated carnivore", "run fast"];
    let mut sums: Vec<Vec<f64>> = vec![vec![0.0; 12]; 6];
    let queries = attention_variance(&enc, &texts, &mut sums).unwrap();
    // independently: two-pass mean and variance over the real keys, in f64
    let batch = enc.tokenizer.encode_batch(&texts).unwrap();
    let (ids, mask) = batch.tensors(&Device::Cpu).unwrap();
    let out = enc.bert.forward(&ids, &mask).unwrap();
    let lens: Vec<usize> = (0..2).map(|b| batch.row(b).len()).collect();
    assert_eq!(queries, (lens[0] + lens[1]) as f64);
    for (layer, probs) in out.attentions.iter().enumerate() {
        let a: Vec<Vec<Vec<Vec<f32>>>> = (0..2)
            .map(|b| probs.get(b).unwrap().to_vec3().unwrap())
            .collect();
        for h in 0..12 {
            let mut want = 0.0f64;
            for (b, &n) in lens.iter().enumerate() {
                for query in a[b][h].iter().take(n) {
                    let row: Vec<f64> = query[..n].iter().map(|&x| x as f64).collect();
                    let mean = row.iter().sum::<f64>() / n as f64;
                    want += row.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
                }
            }
            let got = sums[layer][h];
            assert!(
                (got - want).abs() < 1e-5 * want.max(1e-3),
                "layer {layer} head {h}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn train_lm_trains_causal_and_masked_teachers_and_their_students() {
    let Some(model) = minilm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("glosses");
    std::fs::create_dir(&data).unwrap();
    tiny_glosses(&data);
    let tokenizer = model.join("tokenizer.json");
    let args = |out: &std::path::Path, extra: &[&str]| {
        let mut a = vec![
            "train-lm",
            "--data-dir",
            p(&data),
            "--tokenizer",
            p(&tokenizer),
            "--vocab-size",
            "200",
            "--hidden",
            "32",
            "--heads",
            "2",
            "--intermediate",
            "64",
            "--max-length",
            "32",
            "--batch-size",
            "4",
            "--lr",
            "3e-3",
        ];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--out", out.to_str().unwrap()]);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| kdprune(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let report = |dir: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
    };
    let teacher = dir.path().join("teacher");
    ok(&run(args(&teacher, &["--layers", "2", "--epochs", "20"])));
    let t = report(&teacher);
    let losses: Vec<f64> = t["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["loss"].as_f64().unwrap())
        .collect();
    assert!(
        losses[3] < losses[0],
        "the LM loss does not fall: {losses:?}"
    );
    let vocab = t["vocab_size"].as_u64().unwrap();
    assert!(vocab <= 200, "{vocab}");
    // the splits hold the same text here: well below a uniform guess
    let teacher_ppl = t["test"]["perplexity"].as_f64().unwrap();
    assert!(teacher_ppl < vocab as f64 / 4.0, "{teacher_ppl} vs {vocab}");
    assert_eq!(t["test_unknown_share"], 0.0);
    // a causal LM in Hugging Face's layout, its tokenizer beside it
    let config = std::fs::read_to_string(teacher.join("config.json")).unwrap();
    assert!(config.contains("BertLMHeadModel"), "{config}");
    assert!(teacher.join("tokenizer.json").is_file());
    // the same seed gives the same model, byte for byte
    let again = dir.path().join("again");
    ok(&run(args(&again, &["--layers", "2", "--epochs", "20"])));
    assert_eq!(
        std::fs::read(teacher.join("model.safetensors")).unwrap(),
        std::fs::read(again.join("model.safetensors")).unwrap()
    );
    // a 1-layer student under the teacher: token-level KD
    let student = dir.path().join("student");
    let table = ok(&run(args(
        &student,
        &[
            "--teacher",
            p(&teacher),
            "--layers",
            "1",
            "--epochs",
            "2",
            "--alpha",
            "0.5",
            "--temperature",
            "2",
        ],
    )));
    assert!(table.contains("| teacher |"), "{table}");
    let s = report(&student);
    assert_eq!(s["vocab_size"], t["vocab_size"]);
    assert!(s["params"].as_u64() < t["params"].as_u64());
    let reported_teacher = s["teacher_test"]["perplexity"].as_f64().unwrap();
    assert!((reported_teacher - teacher_ppl).abs() < 1e-9 * teacher_ppl);
    // eval-lm reads the folder back to the reported perplexity
    let eval = ok(&kdprune(&[
        "eval-lm",
        "--model",
        p(&student),
        "--data-dir",
        p(&data),
        "--max-length",
        "32",
    ]));
    let ppl = s["test"]["perplexity"].as_f64().unwrap();
    assert!(eval.contains(&format!("| {ppl:.3} |")), "{eval} vs {ppl}");
    // bad input
    fails_with(
        &run(args(&dir.path().join("b"), &["--alpha", "0.5"])),
        "needs a --teacher",
    );
    fails_with(
        &run(args(
            &dir.path().join("c"),
            &["--teacher", p(&teacher), "--alpha", "1.5"],
        )),
        "alpha must lie in [0, 1]",
    );
    fails_with(
        &run(args(&dir.path().join("d"), &["--layers", "0"])),
        "layers 0 is not in 1..=256",
    );
    fails_with(&run(args(&teacher, &[])), "is not an empty folder");
    fails_with(
        &kdprune(&["eval-lm", "--model", p(&model), "--data-dir", p(&data)]),
        "is not a language model",
    );
    fails_with(
        &run(args(
            &dir.path().join("e"),
            &["--teacher", p(&teacher), "--masked"],
        )),
        "is a causal LM: train its student without --masked",
    );
    fails_with(
        &run(args(&dir.path().join("f"), &["--cosine", "1"])),
        "need a --teacher",
    );
    for d in ["b", "c", "d", "e", "f"] {
        assert!(!dir.path().join(d).exists(), "{d}");
    }

    // the masked variant: a BertForMaskedLM teacher, then a student from its
    // layer 1 on DistilBERT's triple loss
    let mlm = dir.path().join("mlm");
    ok(&run(args(
        &mlm,
        &["--masked", "--layers", "2", "--epochs", "20"],
    )));
    let config = std::fs::read_to_string(mlm.join("config.json")).unwrap();
    assert!(
        config.contains("BertForMaskedLM") && !config.contains("is_decoder"),
        "{config}"
    );
    let m = report(&mlm);
    let masked_ppl = m["test"]["perplexity"].as_f64().unwrap();
    // 15 % of the tokens teach it per step: below a uniform guess, not far
    assert!(masked_ppl < 0.75 * vocab as f64, "{masked_ppl} vs {vocab}");
    let small = dir.path().join("mlm-student");
    ok(&run(args(
        &small,
        &[
            "--masked",
            "--teacher",
            p(&mlm),
            "--init-layers",
            "1",
            "--alpha",
            "0.5",
            "--cosine",
            "1",
            "--temperature",
            "2",
            "--epochs",
            "2",
        ],
    )));
    let ms = report(&small);
    assert!(ms["params"].as_u64() < m["params"].as_u64());
    let first = ms["epochs"][0]["loss"].as_f64().unwrap();
    assert!(first > 0.0 && first.is_finite(), "{first}");
    let eval = ok(&kdprune(&[
        "eval-lm",
        "--model",
        p(&small),
        "--data-dir",
        p(&data),
        "--max-length",
        "32",
    ]));
    let ppl = ms["test"]["perplexity"].as_f64().unwrap();
    assert!(eval.contains(&format!("| {ppl:.3} |")), "{eval} vs {ppl}");
}
