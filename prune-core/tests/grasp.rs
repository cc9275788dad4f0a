//! GraSP: the finite-difference Hessian–gradient product against the exact
//! value on a quadratic, and the sign convention of the scores.

use candle_core::{DType, Device, Tensor, Var};
use prune_core::importance::{grasp, hessian_gradient_product};
use prune_core::{select, NamedTensors, PruneError, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const N: usize = 7; // "a" is 2×2, "b" has 3 elements: θ ∈ R⁷ in name order

/// A = MᵀM + I (symmetric positive definite) and b, with random M and b.
struct Quadratic {
    a: Vec<Vec<f64>>,
    b: Vec<f64>,
}

impl Quadratic {
    fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let m: Vec<Vec<f64>> = (0..N)
            .map(|_| (0..N).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect())
            .collect();
        let a = (0..N)
            .map(|i| {
                (0..N)
                    .map(|j| {
                        let mtm: f64 = (0..N).map(|k| m[k][i] * m[k][j]).sum();
                        mtm + f64::from(u8::from(i == j))
                    })
                    .collect()
            })
            .collect();
        let b = (0..N).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect();
        Self { a, b }
    }

    fn tensors(&self, dtype: DType) -> (Tensor, Tensor) {
        let flat: Vec<f64> = self.a.iter().flatten().copied().collect();
        let a = Tensor::from_vec(flat, (N, N), &Device::Cpu).unwrap();
        let b = Tensor::from_vec(self.b.clone(), (N, 1), &Device::Cpu).unwrap();
        (a.to_dtype(dtype).unwrap(), b.to_dtype(dtype).unwrap())
    }

    /// ∇L(θ) for L = ½ θᵀAθ + bᵀθ by Candle autograd, in the params' dtype.
    fn grad_at(&self, params: &NamedTensors) -> Result<NamedTensors> {
        let va = Var::from_tensor(&params["a"])?;
        let vb = Var::from_tensor(&params["b"])?;
        let (a, b) = self.tensors(va.dtype());
        let theta =
            Tensor::cat(&[va.flatten_all()?, vb.as_tensor().clone()], 0)?.reshape((N, 1))?;
        let quad = theta.t()?.matmul(&a.matmul(&theta)?)?.affine(0.5, 0.0)?;
        let loss = quad.add(&b.t()?.matmul(&theta)?)?.sum_all()?;
        let grads = loss.backward()?;
        Ok([
            ("a".to_string(), grads.get(&va).unwrap().clone()),
            ("b".to_string(), grads.get(&vb).unwrap().clone()),
        ]
        .into_iter()
        .collect())
    }
}

fn flat64(named: &NamedTensors) -> Vec<f64> {
    named
        .values()
        .flat_map(|t| {
            t.flatten_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        })
        .collect()
}

fn params(seed: u64, dtype: DType) -> NamedTensors {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut draw = |n: usize| -> Vec<f64> {
        (0..n)
            .map(|_| {
                let x = 0.05 + rng.random::<f64>();
                if rng.random::<bool>() {
                    x
                } else {
                    -x
                }
            })
            .collect()
    };
    let a = Tensor::from_vec(draw(4), (2, 2), &Device::Cpu).unwrap();
    let b = Tensor::from_vec(draw(3), 3, &Device::Cpu).unwrap();
    [
        ("a".to_string(), a.to_dtype(dtype).unwrap()),
        ("b".to_string(), b.to_dtype(dtype).unwrap()),
    ]
    .into_iter()
    .collect()
}

fn relative_error(got: &[f64], want: &[f64]) -> f64 {
    let diff: f64 = got.iter().zip(want).map(|(x, y)| (x - y).powi(2)).sum();
    let norm: f64 = want.iter().map(|y| y * y).sum();
    (diff / norm).sqrt()
}

#[test]
fn finite_difference_hg_matches_the_exact_hessian_on_a_quadratic() {
    let q = Quadratic::new(21);
    for (dtype, epsilon, tolerance) in [(DType::F32, 1e-3, 1e-3), (DType::F64, 1e-4, 1e-9)] {
        let theta = params(22, dtype);
        let g = q.grad_at(&theta).unwrap();
        let mut calls = 0;
        let hg = hessian_gradient_product(&theta, &g, epsilon, |p: &NamedTensors| {
            calls += 1;
            q.grad_at(p)
        })
        .unwrap();
        assert_eq!(calls, 1);
        assert_eq!(hg["a"].dims(), &[2, 2]);
        assert_eq!(hg["a"].dtype(), dtype);
        // H = A exactly, so H·g = A·g with g = Aθ + b, all in f64.
        let t = flat64(&theta);
        let g_exact: Vec<f64> = (0..N)
            .map(|i| (0..N).map(|j| q.a[i][j] * t[j]).sum::<f64>() + q.b[i])
            .collect();
        let hg_exact: Vec<f64> = (0..N)
            .map(|i| (0..N).map(|j| q.a[i][j] * g_exact[j]).sum())
            .collect();
        let err = relative_error(&flat64(&hg), &hg_exact);
        assert!(err < tolerance, "{dtype:?}: relative error {err}");
    }
}

#[test]
fn hg_checks_its_arguments_and_passes_closure_errors_through() {
    let q = Quadratic::new(1);
    let theta = params(2, DType::F32);
    let g = q.grad_at(&theta).unwrap();
    for eps in [0.0, -1e-3, f64::NAN, f64::INFINITY] {
        assert!(
            matches!(
                hessian_gradient_product(&theta, &g, eps, |p: &NamedTensors| q.grad_at(p)),
                Err(PruneError::InvalidEpsilon(_))
            ),
            "{eps}"
        );
    }
    let mut only_a = theta.clone();
    only_a.remove("b");
    assert!(matches!(
        hessian_gradient_product(&only_a, &g, 1e-3, |p: &NamedTensors| q.grad_at(p)),
        Err(PruneError::MissingTensor(name)) if name == "b"
    ));
    // Any error type a PruneError converts into works (here a boxed error, as
    // with anyhow); the closure's own error comes back unchanged.
    type BoxError = Box<dyn std::error::Error + Send + Sync>;
    let failing = |_: &NamedTensors| -> std::result::Result<NamedTensors, BoxError> {
        Err("no model".into())
    };
    let err = hessian_gradient_product(&theta, &g, 1e-3, failing).unwrap_err();
    assert_eq!(err.to_string(), "no model");
}

#[test]
fn grasp_scores_are_the_negated_paper_score_so_select_prunes_its_highest() {
    let dev = Device::Cpu;
    let weights: NamedTensors = [(
        "w".to_string(),
        Tensor::new(&[1.0f32, -2.0, 3.0, 0.5], &dev).unwrap(),
    )]
    .into_iter()
    .collect();
    let hg: NamedTensors = [(
        "w".to_string(),
        Tensor::new(&[1.0f32, 1.0, -1.0, 4.0], &dev).unwrap(),
    )]
    .into_iter()
    .collect();
    let scores = grasp(&weights, &hg).unwrap();
    // Paper: S = −θ ⊙ Hg = [−1, 2, 3, −2], prune the highest S first.
    // Returned: θ ⊙ Hg = [1, −2, −3, 2].
    assert_eq!(
        scores["w"].to_vec1::<f32>().unwrap(),
        vec![1.0, -2.0, -3.0, 2.0]
    );
    // Pruning half removes the two highest S (indices 2 and 1).
    let masks = select::global(&scores, 0.5).unwrap();
    assert_eq!(
        masks.get("w").unwrap().to_vec1::<f32>().unwrap(),
        vec![1.0, 0.0, 0.0, 1.0]
    );
    let mut missing = hg.clone();
    missing.clear();
    assert!(matches!(
        grasp(&weights, &missing),
        Err(PruneError::MissingTensor(_))
    ));
}
