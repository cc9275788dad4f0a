//! The export encodings: compressed-tensors' sparse-bitmask against its
//! reference encoder's golden file, round trips of every encoding, file sizes,
//! and corrupt sparse files.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use kdprune_models::checkpoint::bitmask::BitmaskTensor;
use kdprune_models::checkpoint::{self, Checkpoint, Encoding};
use kdprune_models::ModelError;
use safetensors::tensor::{Dtype, SafeTensors};

fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sparse_bitmask/golden.safetensors")
}

/// Bit patterns with the sign of zero dropped (the encoding stores a zero as
/// a cleared bit).
fn canonical_bits(values: &[f32]) -> Vec<u32> {
    values
        .iter()
        .map(|v| if *v == 0.0 { 0 } else { v.to_bits() })
        .collect()
}

fn f32s(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn i64s(data: &[u8]) -> Vec<i64> {
    data.chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn encoding_equals_the_reference_encoder_byte_for_byte() {
    // golden.safetensors: made by tests/fixtures/sparse_bitmask/make_golden.py
    // with compressed-tensors 0.12.2's BitmaskTensor.from_dense.
    let bytes = std::fs::read(golden_path()).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut seen = 0;
    for name in st.names() {
        let Some(base) = name.strip_prefix("dense.") else {
            continue;
        };
        seen += 1;
        let dense = st.tensor(name).unwrap();
        let ours = BitmaskTensor::compress(&f32s(dense.data()), dense.shape());
        let part = |p: &str| st.tensor(&format!("{base}.{p}")).unwrap();
        assert_eq!(part("shape").dtype(), Dtype::I64, "{base}");
        let shape: Vec<usize> = i64s(part("shape").data())
            .iter()
            .map(|&d| d as usize)
            .collect();
        assert_eq!(shape, dense.shape(), "{base}.shape");
        assert_eq!(part("compressed").dtype(), Dtype::F32, "{base}");
        assert_eq!(
            canonical_bits(&ours.compressed),
            canonical_bits(&f32s(part("compressed").data())),
            "{base}.compressed"
        );
        assert_eq!(part("bitmask").dtype(), Dtype::U8, "{base}");
        assert_eq!(ours.bitmask, part("bitmask").data(), "{base}.bitmask");
        assert_eq!(
            kdprune_models::checkpoint::bitmask::bitmask_shape(dense.shape()),
            part("bitmask").shape(),
            "{base}.bitmask shape"
        );
        assert_eq!(part("row_offsets").dtype(), Dtype::I64, "{base}");
        assert_eq!(
            ours.row_offsets,
            i64s(part("row_offsets").data()),
            "{base}.row_offsets"
        );
        assert_eq!(
            kdprune_models::checkpoint::bitmask::row_offsets_shape(dense.shape()),
            part("row_offsets").shape(),
            "{base}.row_offsets shape"
        );
        // and the reference's parts decode to the dense tensor
        let theirs = BitmaskTensor {
            shape,
            compressed: f32s(part("compressed").data()),
            bitmask: part("bitmask").data().to_vec(),
            row_offsets: i64s(part("row_offsets").data()),
        };
        assert_eq!(
            canonical_bits(&theirs.decompress().unwrap()),
            canonical_bits(&f32s(dense.data())),
            "{base} decoded"
        );
    }
    assert_eq!(seen, 4, "the golden file holds four tensors");
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn assert_round_trip(a: &Checkpoint, b: &Checkpoint, with_masks: bool) {
    assert_eq!(a.config, b.config);
    assert_eq!(a.metadata, b.metadata);
    assert_eq!(
        a.tensors.keys().collect::<Vec<_>>(),
        b.tensors.keys().collect::<Vec<_>>()
    );
    for (name, t) in &a.tensors {
        assert_eq!(t.dims(), b.tensors[name].dims(), "{name}");
        assert_eq!(
            canonical_bits(&values(t)),
            canonical_bits(&values(&b.tensors[name])),
            "{name}"
        );
    }
    if with_masks {
        assert_eq!(
            a.masks.keys().collect::<Vec<_>>(),
            b.masks.keys().collect::<Vec<_>>()
        );
        for (name, m) in &a.masks {
            let u8s = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<u8>().unwrap();
            assert_eq!(u8s(m), u8s(&b.masks[name]), "mask {name}");
        }
    } else {
        assert!(b.masks.is_empty());
    }
}

#[test]
fn every_encoding_round_trips_and_a_sparse_file_rewrites_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for (name, input) in [
        ("lenet-300-100", (1, 28, 28)),
        ("lenet5", (1, 28, 28)),
        ("resnet20", (3, 32, 32)),
    ] {
        let ckpt = common::pruned_checkpoint(name, input, 0.9);
        for encoding in [Encoding::Native, Encoding::Dense, Encoding::Sparse] {
            let path = dir.path().join(format!("{name}-{encoding}.safetensors"));
            checkpoint::save_as(&path, &ckpt, encoding).unwrap();
            let back = checkpoint::load(&path, &Device::Cpu).unwrap();
            assert_round_trip(&ckpt, &back, encoding != Encoding::Dense);
            // and builds its architecture (names and shapes checked)
            back.to_model(&Device::Cpu).unwrap();
            let again = dir
                .path()
                .join(format!("{name}-{encoding}-again.safetensors"));
            checkpoint::save_as(&again, &back, encoding).unwrap();
            assert_eq!(
                std::fs::read(&path).unwrap(),
                std::fs::read(&again).unwrap(),
                "{name} {encoding}"
            );
        }
    }
}

#[test]
fn a_dense_file_has_pytorch_state_dict_entries() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = common::pruned_checkpoint("resnet20", (3, 32, 32), 0.5);
    let path = dir.path().join("dense.safetensors");
    checkpoint::save_as(&path, &ckpt, Encoding::Dense).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let tracked = st.tensor("layer1.0.bn1.num_batches_tracked").unwrap();
    assert_eq!((tracked.dtype(), tracked.shape()), (Dtype::I64, &[][..]));
    assert!(st.names().iter().all(|n| !n.starts_with("mask.")));
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(header.metadata().as_ref().unwrap()["format"], "pt");
}

#[test]
fn a_mask_that_keeps_a_zero_weight_is_stored_beside_the_bitmask() {
    let dir = tempfile::tempdir().unwrap();
    let mut ckpt = common::pruned_checkpoint("lenet-300-100", (1, 8, 8), 0.5);
    // a kept weight that is exactly zero: the mask is not the non-zero pattern
    let w = &ckpt.tensors["fc2.weight"];
    let m = values(&ckpt.masks["fc2.weight"].to_dtype(DType::F32).unwrap());
    let kept = m.iter().position(|v| *v == 1.0).unwrap();
    let mut vals = values(w);
    vals[kept] = 0.0;
    ckpt.tensors.insert(
        "fc2.weight".into(),
        Tensor::from_vec(vals, w.dims(), &Device::Cpu).unwrap(),
    );
    let path = dir.path().join("s.safetensors");
    checkpoint::save_as(&path, &ckpt, Encoding::Sparse).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let names = SafeTensors::deserialize(&bytes)
        .unwrap()
        .names()
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    assert!(
        names.contains(&"mask.fc2.weight.bitmask".to_string()),
        "{names:?}"
    );
    assert!(
        !names.contains(&"mask.fc1.weight.bitmask".to_string()),
        "{names:?}"
    );
    assert_round_trip(&ckpt, &checkpoint::load(&path, &Device::Cpu).unwrap(), true);
}

#[test]
fn a_sparse_lenet_300_100_at_95_percent_is_at_most_0_12_of_the_dense_file() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = common::pruned_checkpoint("lenet-300-100", (1, 28, 28), 0.95);
    let size = |encoding: Encoding| {
        let path = dir.path().join(format!("{encoding}.safetensors"));
        checkpoint::save_as(&path, &ckpt, encoding).unwrap();
        std::fs::metadata(&path).unwrap().len() as f64
    };
    let ratio = size(Encoding::Sparse) / size(Encoding::Dense);
    // 0.05·4 bytes of values + 1/8 byte of bitmask per weight ≈ 0.081 of 4 bytes
    assert!(ratio <= 0.12, "sparse/dense = {ratio:.3}");
    assert!(
        ratio >= 0.07,
        "sparse/dense = {ratio:.3}: fewer bytes than the non-zeros need"
    );
}

fn load_error(path: &Path) -> String {
    match checkpoint::load(path, &Device::Cpu) {
        Err(err @ ModelError::Checkpoint { .. }) => err.to_string(),
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}

#[test]
fn corrupt_sparse_files_are_errors_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = common::pruned_checkpoint("lenet-300-100", (1, 8, 8), 0.5);
    let fresh = || {
        let path = dir.path().join("s.safetensors");
        checkpoint::save_as(&path, &ckpt, Encoding::Sparse).unwrap();
        path
    };
    let i64_bytes = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();

    // one value too few for the bitmask
    let path = fresh();
    common::rewrite(&path, |t| {
        let c = t.get_mut("fc1.weight.compressed").unwrap();
        c.2.truncate(c.2.len() - 4);
        c.1[0] -= 1;
    });
    let msg = load_error(&path);
    assert!(
        msg.contains("'fc1.weight'") && msg.contains("values are stored"),
        "{msg}"
    );

    // a row offset past the value count
    let path = fresh();
    common::rewrite(&path, |t| {
        let r = t.get_mut("fc2.weight.row_offsets").unwrap();
        r.2[8..16].copy_from_slice(&i64::MAX.to_le_bytes());
    });
    let msg = load_error(&path);
    assert!(
        msg.contains("'fc2.weight'") && msg.contains("out of range"),
        "{msg}"
    );

    // row offsets that go down
    let path = fresh();
    common::rewrite(&path, |t| {
        let r = t.get_mut("fc2.weight.row_offsets").unwrap();
        let mut v = i64s(&r.2);
        v.swap(1, 2);
        r.2 = i64_bytes(&v);
    });
    let msg = load_error(&path);
    assert!(
        msg.contains("'fc2.weight'") && msg.contains("not increasing"),
        "{msg}"
    );

    // a shape whose element count overflows
    let path = fresh();
    common::rewrite(&path, |t| {
        t.get_mut("fc3.weight.shape").unwrap().2 = i64_bytes(&[i64::MAX, i64::MAX]);
    });
    let msg = load_error(&path);
    assert!(
        msg.contains("'fc3.weight'") && msg.contains("overflows"),
        "{msg}"
    );

    // a negative dimension
    let path = fresh();
    common::rewrite(&path, |t| {
        t.get_mut("fc3.weight.shape").unwrap().2 = i64_bytes(&[-10, 100]);
    });
    let msg = load_error(&path);
    assert!(msg.contains("'fc3.weight.shape' holds -10"), "{msg}");

    // a missing part
    let path = fresh();
    common::rewrite(&path, |t| {
        t.remove("fc1.weight.bitmask");
    });
    let msg = load_error(&path);
    assert!(msg.contains("no 'fc1.weight.bitmask'"), "{msg}");

    // a shape that does not match the model names the tensor when building it
    let path = fresh();
    common::rewrite(&path, |t| {
        let s = t.get_mut("fc3.weight.shape").unwrap();
        let mut v = i64s(&s.2);
        v.swap(0, 1);
        s.2 = i64_bytes(&v);
        let b = t.get_mut("fc3.weight.bitmask").unwrap();
        b.1 = vec![v[0] as usize, (v[1] as usize).div_ceil(8)];
        b.2 = vec![0; b.1[0] * b.1[1]];
        let c = t.get_mut("fc3.weight.compressed").unwrap();
        c.1 = vec![0];
        c.2.clear();
        let r = t.get_mut("fc3.weight.row_offsets").unwrap();
        r.1 = vec![v[0] as usize];
        r.2 = i64_bytes(&vec![0; v[0] as usize]);
    });
    // the file decodes (the mask follows the bitmask), but the model refuses the tensor
    let loaded = checkpoint::load(&path, &Device::Cpu).unwrap();
    match loaded.to_model(&Device::Cpu) {
        Err(ModelError::ShapeMismatch { name, .. }) => assert_eq!(name, "fc3.weight"),
        other => panic!("expected a shape mismatch, got {:?}", other.err()),
    }
}
