//! SynFlow: the single-round score against its closed form on a two-layer
//! linear network, and the iterative schedule's exact final count.

use std::cell::Cell;

use candle_core::{DType, Device, Tensor, Var};
use prune_core::importance::{synflow, synflow_scores, DEFAULT_SYNFLOW_ROUNDS};
use prune_core::{select, MaskSet, NamedTensors, PruneError, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const D: usize = 5; // inputs
const H: usize = 6; // hidden units
const O: usize = 3; // outputs

/// Values in `±[0.05, 1.05)`: random, never zero.
fn nonzero(rng: &mut ChaCha8Rng, rows: usize, cols: usize) -> Tensor {
    let v: Vec<f32> = (0..rows * cols)
        .map(|_| {
            let x = 0.05 + rng.random::<f32>();
            if rng.random::<bool>() {
                x
            } else {
                -x
            }
        })
        .collect();
    Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
}

fn net(seed: u64) -> NamedTensors {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    [
        ("l1.weight".to_string(), nonzero(&mut rng, H, D)),
        ("l2.weight".to_string(), nonzero(&mut rng, O, H)),
    ]
    .into_iter()
    .collect()
}

/// `∂R/∂θ` for `y = W2 W1 x` (no bias), `x = 1`, `R = Σ y`, by Candle autograd
/// at the parameter values handed in (SynFlow passes `|θ| ⊙ m`).
fn flow_grad(params: &NamedTensors) -> Result<NamedTensors> {
    let w1 = Var::from_tensor(&params["l1.weight"])?;
    let w2 = Var::from_tensor(&params["l2.weight"])?;
    let x = Tensor::ones((D, 1), DType::F32, &Device::Cpu)?;
    let r = w2.matmul(&w1.matmul(&x)?)?.sum_all()?;
    let grads = r.backward()?;
    let get = |v: &Var| grads.get(v).cloned().expect("gradient");
    Ok([
        ("l1.weight".to_string(), get(&w1)),
        ("l2.weight".to_string(), get(&w2)),
    ]
    .into_iter()
    .collect())
}

fn vec2(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2::<f32>().unwrap()
}

#[test]
fn single_round_matches_the_closed_form_of_a_two_layer_linear_net() {
    let params = net(3);
    let scores = synflow_scores(&params, &MaskSet::new(), flow_grad).unwrap();
    let w1 = vec2(&params["l1.weight"]);
    let w2 = vec2(&params["l2.weight"]);
    // R = 1ᵀ|W2||W1|1, so
    //   S(W1[i][j]) = |W1[i][j]| · Σ_k |W2[k][i]|
    //   S(W2[k][i]) = |W2[k][i]| · Σ_j |W1[i][j]|
    let col_w2: Vec<f32> = (0..H)
        .map(|i| (0..O).map(|k| w2[k][i].abs()).sum())
        .collect();
    let row_w1: Vec<f32> = (0..H)
        .map(|i| w1[i].iter().map(|x| x.abs()).sum())
        .collect();
    let s1 = vec2(&scores["l1.weight"]);
    let s2 = vec2(&scores["l2.weight"]);
    let close = |got: f32, want: f32| (got - want).abs() <= 1e-6 * want.abs();
    for i in 0..H {
        for j in 0..D {
            let want = w1[i][j].abs() * col_w2[i];
            assert!(
                close(s1[i][j], want),
                "W1[{i}][{j}]: {} vs {want}",
                s1[i][j]
            );
        }
    }
    for k in 0..O {
        for i in 0..H {
            let want = w2[k][i].abs() * row_w1[i];
            assert!(
                close(s2[k][i], want),
                "W2[{k}][{i}]: {} vs {want}",
                s2[k][i]
            );
        }
    }
    // Under a mask, pruned weights neither score nor carry flow: zeroing
    // hidden unit 0's input row removes W2[·][0]'s flow as well.
    let mut row0 = vec![1f32; H * D];
    row0[..D].fill(0.0);
    let mut masks = MaskSet::new();
    masks
        .insert(
            "l1.weight",
            Tensor::from_vec(row0, (H, D), &Device::Cpu).unwrap(),
        )
        .unwrap();
    let masked = synflow_scores(&params, &masks, flow_grad).unwrap();
    assert!(vec2(&masked["l1.weight"])[0].iter().all(|&s| s == 0.0));
    assert!(vec2(&masked["l2.weight"]).iter().all(|row| row[0] == 0.0));
    assert!(vec2(&masked["l2.weight"]).iter().all(|row| row[1] > 0.0));
}

#[test]
fn iterative_synflow_reaches_the_exact_target_count_without_regrowth() {
    let params = net(4);
    let n = H * D + O * H; // 48
    for (sparsity, rounds) in [(0.8, DEFAULT_SYNFLOW_ROUNDS), (0.5, 7), (0.9, 1)] {
        let calls = Cell::new(0usize);
        let out = synflow(&params, sparsity, rounds, |p: &NamedTensors| {
            let k = calls.get() + 1;
            calls.set(k);
            // Round k sees |θ| ⊙ m with m from round k − 1, which pruned
            // round(s_{k−1}·n), s_j = 1 − (1 − s)^(j/rounds); the weights
            // themselves are never zero.
            let mut zeros = 0;
            for t in p.values() {
                let v = t.flatten_all()?.to_vec1::<f32>()?;
                assert!(v.iter().all(|&x| x >= 0.0));
                zeros += v.iter().filter(|&&x| x == 0.0).count();
            }
            let previous = 1.0 - (1.0 - sparsity).powf((k - 1) as f64 / rounds as f64);
            assert_eq!(zeros, (previous * n as f64).round() as usize, "round {k}");
            flow_grad(p)
        })
        .unwrap();
        assert_eq!(calls.get(), rounds);
        let k = (sparsity * n as f64).round() as usize;
        assert_eq!(out.masks.pruned_count().unwrap(), k, "s = {sparsity}");
        assert_eq!(out.masks.total_count(), n);
        // The last round is a threshold on the last scores: every pruned
        // weight scores at most every kept one.
        let (mut max_pruned, mut min_kept) = (f32::NEG_INFINITY, f32::INFINITY);
        for (name, s) in &out.scores {
            let s = s.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let m = out.masks.get(name).unwrap();
            let m = m.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (&s, &m) in s.iter().zip(&m) {
                if m == 0.0 {
                    max_pruned = max_pruned.max(s);
                } else {
                    min_kept = min_kept.min(s);
                }
            }
        }
        assert!(max_pruned <= min_kept, "{max_pruned} > {min_kept}");
        if rounds == 1 {
            // One round is one global threshold on the unmasked scores.
            let once = synflow_scores(&params, &MaskSet::new(), flow_grad).unwrap();
            let global = select::global(&once, sparsity).unwrap();
            for (name, m) in global.iter() {
                assert_eq!(
                    m.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    out.masks
                        .get(name)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                );
            }
        }
    }
    // Deterministic: same inputs, same bits.
    let a = synflow(&params, 0.8, 20, flow_grad).unwrap();
    let b = synflow(&params, 0.8, 20, flow_grad).unwrap();
    for name in ["l1.weight", "l2.weight"] {
        let bits = |s: &prune_core::Scores| -> Vec<u32> {
            s[name]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect()
        };
        assert_eq!(bits(&a.scores), bits(&b.scores));
    }
}

#[test]
fn synflow_rejects_bad_arguments() {
    let params = net(1);
    assert!(matches!(
        synflow(&params, 0.5, 0, flow_grad),
        Err(PruneError::InvalidRounds { rounds: 0, .. })
    ));
    assert!(matches!(
        synflow(&params, 1.0, 10, flow_grad),
        Err(PruneError::InvalidSparsity(_))
    ));
    // A closure that forgets a tensor.
    let forgetful = |p: &NamedTensors| -> Result<NamedTensors> {
        let mut g = flow_grad(p)?;
        g.remove("l2.weight");
        Ok(g)
    };
    assert!(matches!(
        synflow_scores(&params, &MaskSet::new(), forgetful),
        Err(PruneError::MissingTensor(name)) if name == "l2.weight"
    ));
    // The closure's own error comes back unchanged.
    let failing = |_: &NamedTensors| -> std::result::Result<NamedTensors, PruneError> {
        Err(PruneError::NoBatches)
    };
    assert!(matches!(
        synflow(&params, 0.5, 3, failing),
        Err(PruneError::NoBatches)
    ));
}
