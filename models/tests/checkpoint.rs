//! Checkpoint round trips, corrupt files and architecture checks.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use kdprune_models::checkpoint::{self, Checkpoint};
use kdprune_models::{Model, ModelConfig, ModelError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random_mask(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let values: Vec<u8> = (0..n).map(|_| u8::from(rng.random::<bool>())).collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

fn u8s(t: &Tensor) -> Vec<u8> {
    t.flatten_all().unwrap().to_vec1::<u8>().unwrap()
}

fn sample_checkpoint(name: &str, input: (usize, usize, usize)) -> Checkpoint {
    let config = ModelConfig::from_name(name, input, 10).unwrap();
    let model = Model::new(config, 42, &Device::Cpu).unwrap();
    let tensors = model.tensors().unwrap();
    let masks: BTreeMap<String, Tensor> = ["fc1.weight", "fc2.weight"]
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), random_mask(tensors[*n].dims(), i as u64)))
        .collect();
    let metadata = BTreeMap::from([
        ("dataset".to_string(), "digits".to_string()),
        ("seed".to_string(), "42".to_string()),
        ("stage".to_string(), "pruned".to_string()),
    ]);
    Checkpoint::from_model(&model, masks, metadata).unwrap()
}

fn assert_same(a: &Checkpoint, b: &Checkpoint) {
    assert_eq!(a.config, b.config);
    assert_eq!(a.metadata, b.metadata);
    assert_eq!(
        a.tensors.keys().collect::<Vec<_>>(),
        b.tensors.keys().collect::<Vec<_>>()
    );
    for (name, t) in &a.tensors {
        assert_eq!(b.tensors[name].dtype(), DType::F32);
        assert_eq!(t.dims(), b.tensors[name].dims(), "{name}");
        assert_eq!(common::bits(t), common::bits(&b.tensors[name]), "{name}");
    }
    assert_eq!(
        a.masks.keys().collect::<Vec<_>>(),
        b.masks.keys().collect::<Vec<_>>()
    );
    for (name, m) in &a.masks {
        assert_eq!(b.masks[name].dtype(), DType::U8);
        assert_eq!(m.dims(), b.masks[name].dims(), "{name}");
        assert_eq!(u8s(m), u8s(&b.masks[name]), "{name}");
    }
}

fn checkpoint_error(result: kdprune_models::Result<Checkpoint>, path: &Path) -> String {
    match result {
        Err(err @ ModelError::Checkpoint { .. }) => {
            let msg = err.to_string();
            assert!(
                msg.contains(&path.display().to_string()),
                "message does not name the file: {msg}"
            );
            msg
        }
        other => panic!("expected a Checkpoint error, got {other:?}"),
    }
}

#[test]
fn round_trip_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    for (name, input) in [("lenet-300-100", (1, 8, 8)), ("lenet5", (1, 28, 28))] {
        let ckpt = sample_checkpoint(name, input);
        let path = dir.path().join(format!("{name}.safetensors"));
        checkpoint::save(&path, &ckpt).unwrap();
        let loaded = checkpoint::load(&path, &Device::Cpu).unwrap();
        assert_same(&ckpt, &loaded);

        // the rebuilt model computes exactly what the original tensors compute
        let model = loaded.to_model(&Device::Cpu).unwrap();
        let original = ckpt.to_model(&Device::Cpu).unwrap();
        let (c, h, w) = input;
        let xs = common::random_tensor(&[3, c, h, w], 1, &Device::Cpu);
        let a = model.forward_t(&xs, false).unwrap().logits;
        let b = original.forward_t(&xs, false).unwrap().logits;
        assert_eq!(common::bits(&a), common::bits(&b));
    }
}

#[test]
fn save_is_atomic_and_creates_parents() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs/a/b/student.safetensors");
    let ckpt = sample_checkpoint("lenet-300-100", (1, 8, 8));
    checkpoint::save(&path, &ckpt).unwrap();
    assert!(path.is_file());
    // overwriting goes through the same temporary file
    checkpoint::save(&path, &ckpt).unwrap();
    let entries: Vec<String> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, ["student.safetensors"]);
    assert_same(&ckpt, &checkpoint::load(&path, &Device::Cpu).unwrap());
}

#[test]
fn truncated_or_garbage_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.safetensors");
    checkpoint::save(&path, &sample_checkpoint("lenet5", (1, 8, 8))).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let cut = dir.path().join("cut.safetensors");
    for len in [
        0,
        4,
        8,
        20,
        8 + header_len / 2,
        8 + header_len,
        bytes.len() / 2,
        bytes.len() - 1,
    ] {
        std::fs::write(&cut, &bytes[..len]).unwrap();
        checkpoint_error(checkpoint::load(&cut, &Device::Cpu), &cut);
    }
    let garbage = dir.path().join("garbage.safetensors");
    let mut noise = vec![0u8; 256];
    ChaCha8Rng::seed_from_u64(3).fill(&mut noise[..]);
    std::fs::write(&garbage, &noise).unwrap();
    checkpoint_error(checkpoint::load(&garbage, &Device::Cpu), &garbage);

    let missing = dir.path().join("absent.safetensors");
    assert!(matches!(
        checkpoint::load(&missing, &Device::Cpu),
        Err(ModelError::Io { path, .. }) if path == missing
    ));
}

#[test]
fn plain_safetensors_without_kdprune_metadata_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.safetensors");
    let t = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(&HashMap::from([("fc1.weight", t)]), &path).unwrap();
    let msg = checkpoint_error(checkpoint::load(&path, &Device::Cpu), &path);
    assert!(msg.contains("no kdprune metadata"), "{msg}");
}

/// Writes a safetensors file with the given metadata and raw tensors.
fn write_raw(
    path: &Path,
    metadata: &[(&str, &str)],
    tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)],
) {
    let views: Vec<(&str, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                *n,
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let meta: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

#[test]
fn bad_metadata_and_masks_are_rejected_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    let config = r#"{"arch":"mlp","input_dim":2,"hidden":[2],"num_classes":2}"#;
    let weight = (
        "fc1.weight",
        safetensors::Dtype::F32,
        vec![2, 2],
        vec![0u8; 16],
    );

    write_raw(
        &path,
        &[("kdprune.format", "1"), ("kdprune.model", "{not json")],
        std::slice::from_ref(&weight),
    );
    let msg = checkpoint_error(checkpoint::load(&path, &Device::Cpu), &path);
    assert!(msg.contains("config"), "{msg}");

    write_raw(
        &path,
        &[("kdprune.format", "2"), ("kdprune.model", config)],
        std::slice::from_ref(&weight),
    );
    let msg = checkpoint_error(checkpoint::load(&path, &Device::Cpu), &path);
    assert!(msg.contains("format version"), "{msg}");

    let mask = |bytes: Vec<u8>, dtype, shape: Vec<usize>| ("mask.fc1.weight", dtype, shape, bytes);
    let meta = [("kdprune.format", "1"), ("kdprune.model", config)];
    for (case, bad_mask) in [
        (
            "value 2",
            mask(vec![0, 1, 2, 1], safetensors::Dtype::U8, vec![2, 2]),
        ),
        ("shape", mask(vec![0, 1], safetensors::Dtype::U8, vec![2])),
        (
            "dtype",
            mask(vec![0; 16], safetensors::Dtype::F32, vec![2, 2]),
        ),
    ] {
        write_raw(&path, &meta, &[weight.clone(), bad_mask]);
        let msg = checkpoint_error(checkpoint::load(&path, &Device::Cpu), &path);
        assert!(msg.contains("mask of 'fc1.weight'"), "{case}: {msg}");
    }
    // a mask whose tensor is absent
    write_raw(
        &path,
        &meta,
        &[
            weight.clone(),
            ("mask.fc9.weight", safetensors::Dtype::U8, vec![1], vec![1]),
        ],
    );
    let msg = checkpoint_error(checkpoint::load(&path, &Device::Cpu), &path);
    assert!(msg.contains("fc9.weight"), "{msg}");

    // the valid version of the same file loads
    write_raw(
        &path,
        &meta,
        &[
            weight,
            mask(vec![0, 1, 1, 0], safetensors::Dtype::U8, vec![2, 2]),
        ],
    );
    let ckpt = checkpoint::load(&path, &Device::Cpu).unwrap();
    assert_eq!(u8s(&ckpt.masks["fc1.weight"]), [0, 1, 1, 0]);
    assert!(ckpt.metadata.is_empty());
}

/// A crafted config in a small file: refused on load by its size, and a
/// config larger than its tensors is refused by their shapes before the
/// model is built.
#[test]
fn crafted_configs_cannot_size_an_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crafted.safetensors");
    let weight = (
        "fc1.weight",
        safetensors::Dtype::F32,
        vec![2, 2],
        vec![0u8; 16],
    );
    let huge = r#"{"arch":"mlp","input_dim":2,"hidden":[4000000000,4000000000],"num_classes":2}"#;
    write_raw(
        &path,
        &[("kdprune.format", "1"), ("kdprune.model", huge)],
        std::slice::from_ref(&weight),
    );
    let msg = checkpoint_error(checkpoint::load(&path, &Device::Cpu), &path);
    assert!(msg.contains("parameters"), "{msg}");

    // 1000 × 1000 weights (a 4 MB model) announced by a file of 2 × 2 ones
    let large = r#"{"arch":"mlp","input_dim":1000,"hidden":[1000],"num_classes":2}"#;
    let small = |name| (name, safetensors::Dtype::F32, vec![2], vec![0u8; 8]);
    write_raw(
        &path,
        &[("kdprune.format", "1"), ("kdprune.model", large)],
        &[
            weight,
            small("fc1.bias"),
            small("fc2.bias"),
            small("fc2.weight"),
        ],
    );
    let ckpt = checkpoint::load(&path, &Device::Cpu).unwrap();
    let err = ckpt.to_model(&Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, ModelError::ShapeMismatch { name, expected, .. } if name == "fc1.bias" && expected == &[1000]),
        "{err:?}"
    );
}

#[test]
fn invalid_checkpoints_are_refused_on_save() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.safetensors");
    let base = sample_checkpoint("lenet-300-100", (1, 8, 8));

    let mut reserved = base.clone();
    reserved.metadata.insert("kdprune.model".into(), "x".into());
    let mut value_two = base.clone();
    value_two.masks.insert(
        "fc3.bias".into(),
        Tensor::new(&[2u8; 10], &Device::Cpu).unwrap(),
    );
    let mut wrong_shape = base.clone();
    wrong_shape.masks.insert(
        "fc3.bias".into(),
        Tensor::new(&[1u8; 9], &Device::Cpu).unwrap(),
    );
    let mut float_mask = base.clone();
    float_mask.masks.insert(
        "fc3.bias".into(),
        Tensor::new(&[1f32; 10], &Device::Cpu).unwrap(),
    );
    let mut orphan = base.clone();
    orphan.masks.insert(
        "fc9.bias".into(),
        Tensor::new(&[1u8; 10], &Device::Cpu).unwrap(),
    );
    for (case, ckpt) in [
        ("reserved key", reserved),
        ("mask value 2", value_two),
        ("mask shape", wrong_shape),
        ("mask dtype", float_mask),
        ("orphan mask", orphan),
    ] {
        let err = checkpoint::save(&path, &ckpt).unwrap_err();
        assert!(
            matches!(err, ModelError::Checkpoint { .. }),
            "{case}: {err:?}"
        );
        assert!(!path.exists(), "{case}: a file was written");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn other_architecture_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.safetensors");
    checkpoint::save(&path, &sample_checkpoint("lenet-300-100", (1, 8, 8))).unwrap();
    let ckpt = checkpoint::load(&path, &Device::Cpu).unwrap();

    let lenet = ModelConfig::from_name("lenet5", (1, 8, 8), 10).unwrap();
    match ckpt.expect_config(&lenet) {
        Err(ModelError::ArchitectureMismatch { expected, found }) => {
            assert_eq!(expected, "lenet5 (input 1x8x8, 10 classes)");
            assert_eq!(found, "lenet-300-100 (input 64, 10 classes)");
        }
        other => panic!("expected ArchitectureMismatch, got {other:?}"),
    }
    ckpt.expect_config(&ckpt.config.clone()).unwrap();
    // same name, other input size: still a mismatch
    let mnist_mlp = ModelConfig::from_name("lenet-300-100", (1, 28, 28), 10).unwrap();
    assert!(matches!(
        ckpt.expect_config(&mnist_mlp),
        Err(ModelError::ArchitectureMismatch { .. })
    ));

    // loading the tensors into other architectures names the offending tensor
    // (checked in name order: LeNet-5's conv1.bias is the first one the MLP lacks)
    let model = Model::new(lenet, 0, &Device::Cpu).unwrap();
    match model.load_tensors(&ckpt.tensors) {
        Err(err @ ModelError::MissingTensor(_)) => {
            assert_eq!(err.to_string(), "missing tensor 'conv1.bias'")
        }
        other => panic!("expected MissingTensor, got {other:?}"),
    }
    let model = Model::new(mnist_mlp, 0, &Device::Cpu).unwrap();
    match model.load_tensors(&ckpt.tensors) {
        Err(ModelError::ShapeMismatch {
            name,
            expected,
            got,
        }) => {
            assert_eq!(name, "fc1.weight");
            assert_eq!(expected, [300, 784]);
            assert_eq!(got, [300, 64]);
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    // a checkpoint whose config disagrees with its own tensors cannot become a model
    let mut lying = ckpt.clone();
    lying.config = ModelConfig::from_name("mlp-300-50", (1, 8, 8), 10).unwrap();
    assert!(matches!(
        lying.to_model(&Device::Cpu),
        Err(ModelError::ShapeMismatch { name, expected, got }) if name == "fc2.bias" && expected == [50] && got == [100]
    ));
    // and one from a LeNet-5 file fed to an MLP config meets an unexpected tensor
    let mut foreign = sample_checkpoint("lenet5", (1, 8, 8));
    foreign.config = ckpt.config.clone();
    assert!(matches!(
        foreign.to_model(&Device::Cpu),
        Err(ModelError::UnexpectedTensor(name)) if name == "conv1.bias"
    ));
}

#[test]
fn load_tensors_checks_names_and_dtypes_without_partial_updates() {
    let dev = Device::Cpu;
    let config = ModelConfig::from_name("lenet-300-100", (1, 8, 8), 10).unwrap();
    let model = Model::new(config.clone(), 1, &dev).unwrap();
    let before = model.tensors().unwrap();
    let other = Model::new(config, 2, &dev).unwrap().tensors().unwrap();

    let mut missing = other.clone();
    missing.remove("fc2.bias");
    assert!(
        matches!(model.load_tensors(&missing), Err(ModelError::MissingTensor(n)) if n == "fc2.bias")
    );

    let mut extra = other.clone();
    extra.insert(
        "fc4.weight".into(),
        Tensor::zeros(1, DType::F32, &dev).unwrap(),
    );
    assert!(
        matches!(model.load_tensors(&extra), Err(ModelError::UnexpectedTensor(n)) if n == "fc4.weight")
    );

    let mut wrong_dtype = other.clone();
    wrong_dtype.insert(
        "fc3.bias".into(),
        Tensor::zeros(10, DType::F64, &dev).unwrap(),
    );
    assert!(matches!(
        model.load_tensors(&wrong_dtype),
        Err(ModelError::DtypeMismatch { name, .. }) if name == "fc3.bias"
    ));

    // failed loads changed nothing
    let now = model.tensors().unwrap();
    for (name, t) in &before {
        assert_eq!(common::bits(t), common::bits(&now[name]), "{name}");
    }
    // a valid load replaces every value; the model's own tensors are accepted too
    model.load_tensors(&other).unwrap();
    let now = model.tensors().unwrap();
    for (name, t) in &other {
        assert_eq!(common::bits(t), common::bits(&now[name]), "{name}");
    }
    let own: BTreeMap<String, Tensor> = model
        .named_vars()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    model.load_tensors(&own).unwrap();
}

/// A checkpoint whose weights hold a NaN or an infinity is refused on load,
/// naming the tensor (dense and compressed encodings alike).
#[test]
fn non_finite_weights_are_refused_on_load() {
    let dir = tempfile::tempdir().unwrap();
    for (bad, shown) in [(f32::NAN, "NaN"), (f32::INFINITY, "inf")] {
        let mut ckpt = sample_checkpoint("lenet-300-100", (1, 8, 8));
        let w = &ckpt.tensors["fc2.weight"];
        let mut v: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        v[5] = bad;
        let t = Tensor::from_vec(v, w.dims(), &Device::Cpu).unwrap();
        ckpt.tensors.insert("fc2.weight".into(), t);
        for encoding in [checkpoint::Encoding::Native, checkpoint::Encoding::Dense] {
            let path = dir.path().join(format!("{shown}-{encoding}.safetensors"));
            checkpoint::save_as(&path, &ckpt, encoding).unwrap();
            let msg = checkpoint_error(checkpoint::load(&path, &Device::Cpu), &path);
            assert!(
                msg.contains("'fc2.weight' holds")
                    && msg.contains(shown)
                    && msg.contains("index 5"),
                "{encoding}: {msg}"
            );
        }
    }
}
