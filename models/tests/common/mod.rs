//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use kdprune_models::checkpoint::Checkpoint;
use kdprune_models::{Model, ModelConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A tensor of `U(−1, 1)` values drawn from `ChaCha8Rng::seed_from_u64(seed)`.
pub fn random_tensor(shape: &[usize], seed: u64, dev: &Device) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(values, shape, dev).unwrap()
}

/// Random class labels in `0..classes`.
pub fn random_labels(n: usize, classes: u32, seed: u64, dev: &Device) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let labels: Vec<u32> = (0..n).map(|_| rng.random_range(0..classes)).collect();
    Tensor::from_vec(labels, n, dev).unwrap()
}

/// The bit patterns of an f32 tensor, for exact comparisons.
pub fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

/// A fixed set of inputs as [`kd_core::Samples`] (labels all 0).
pub struct Inputs(pub Tensor);

impl kd_core::Samples for Inputs {
    fn len(&self) -> usize {
        self.0.dim(0).unwrap()
    }

    fn batch(&self, idx: &[usize], device: &Device) -> kd_core::Result<(Tensor, Tensor)> {
        let idx: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
        let idx = Tensor::new(idx.as_slice(), device)?;
        let ys = Tensor::zeros(idx.dim(0)?, DType::U32, device)?;
        Ok((self.0.index_select(&idx, 0)?, ys))
    }
}

/// `max |t|` of an f32 tensor.
pub fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// `max |a − b|` of two f32 tensors of one shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a - b).unwrap())
}

/// A checkpoint of the named network with every weight of rank ≥ 2 pruned
/// to `sparsity` by random masks applied as training applies them (`w·m`, so negative pruned weights
/// hold −0.0).
pub fn pruned_checkpoint(name: &str, input: (usize, usize, usize), sparsity: f64) -> Checkpoint {
    let config = ModelConfig::from_name(name, input, 10).unwrap();
    let model = Model::new(config, 7, &Device::Cpu).unwrap();
    let mut tensors = model.tensors().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut masks = BTreeMap::new();
    for (name, t) in tensors.iter_mut() {
        if t.rank() < 2 {
            continue;
        }
        let n = t.elem_count();
        let m: Vec<u8> = (0..n)
            .map(|_| u8::from(rng.random::<f64>() >= sparsity))
            .collect();
        let mask = Tensor::from_vec(m, t.dims(), &Device::Cpu).unwrap();
        *t = t.mul(&mask.to_dtype(DType::F32).unwrap()).unwrap();
        masks.insert(name.clone(), mask);
    }
    let metadata = BTreeMap::from([("stage".to_string(), "pruned".to_string())]);
    Checkpoint {
        config: model.config().clone(),
        tensors,
        masks,
        metadata,
        quantized: BTreeMap::new(),
    }
}

/// A safetensors file's tensors by name: dtype, shape, bytes.
pub type Parts = BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>;

/// Rewrites the safetensors file at `path` with `edit` applied to its
/// tensors, keeping the metadata (to make corrupt files).
pub fn rewrite(path: &std::path::Path, edit: impl FnOnce(&mut Parts)) {
    use safetensors::tensor::{SafeTensors, TensorView};
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let metadata: std::collections::HashMap<String, String> = header.metadata().clone().unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Parts = st
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                (v.dtype(), v.shape().to_vec(), v.data().to_vec()),
            )
        })
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, Some(metadata)).unwrap()).unwrap();
}

/// The evaluation-mode logits of `ckpt`'s network on `xs`, flattened.
pub fn logits(ckpt: &Checkpoint, xs: &Tensor) -> Vec<f32> {
    ckpt.to_model(&Device::Cpu)
        .unwrap()
        .forward_t(xs, false)
        .unwrap()
        .logits
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// Asserts that each `(name, first three values, largest magnitude)` of
/// `golden` matches the gradient of variable `name` in `grads`: the largest
/// magnitude and the first values to `tol` of the golden largest magnitude.
pub fn assert_gradients(
    grads: &candle_core::backprop::GradStore,
    vars: &std::collections::BTreeMap<String, candle_core::Var>,
    golden: &[(&str, [f32; 3], f32)],
    tol: f32,
) {
    for &(name, first, want_max) in golden {
        let g = grads.get(&vars[name]).unwrap().flatten_all().unwrap();
        let got_max = max_abs(&g);
        assert!(
            (got_max - want_max).abs() < tol * want_max,
            "{name}: max {got_max} vs {want_max}"
        );
        for (a, b) in g.to_vec1::<f32>().unwrap().iter().zip(first) {
            assert!((a - b).abs() < tol * want_max, "{name}: {a} vs {b}");
        }
    }
}
