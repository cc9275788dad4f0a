//! Retraining under a fixed mask with SGD + momentum + weight decay: masking
//! gradients before the step and weights after it keeps pruned weights at
//! exactly 0.0 and the momentum buffers clean.

use candle_core::{Device, Tensor, Var};
use prune_core::{importance, select, MaskSet, NamedTensors};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const LR: f64 = 0.05;
const MOMENTUM: f64 = 0.9;
const WEIGHT_DECAY: f64 = 5e-4;
const STEPS: usize = 50;

fn randn(rng: &mut ChaCha8Rng, shape: (usize, usize)) -> Tensor {
    // Uniform in [-1, 1): enough for a well-conditioned least-squares problem.
    let v: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

struct Problem {
    x: Tensor,
    y: Tensor,
    vars: Vec<(String, Var)>,
    masks: MaskSet,
}

/// `min_W,V mean((x Wᵀ Vᵀ − y)²)` with two weight matrices, half of each pruned
/// by magnitude (per layer) before training.
fn problem() -> Problem {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let x = randn(&mut rng, (64, 8));
    let target = randn(&mut rng, (4, 8));
    let y = x.matmul(&target.t().unwrap()).unwrap();
    let vars = vec![
        (
            "l1.weight".to_string(),
            Var::from_tensor(&randn(&mut rng, (6, 8))).unwrap(),
        ),
        (
            "l2.weight".to_string(),
            Var::from_tensor(&randn(&mut rng, (4, 6))).unwrap(),
        ),
    ];
    let weights: NamedTensors = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    let masks = select::per_layer(&importance::magnitude(&weights).unwrap(), 0.5).unwrap();
    masks.apply_to_vars(&vars).unwrap();
    Problem { x, y, vars, masks }
}

fn loss(p: &Problem) -> Tensor {
    let h = p.x.matmul(&p.vars[0].1.as_tensor().t().unwrap()).unwrap();
    let out = h.matmul(&p.vars[1].1.as_tensor().t().unwrap()).unwrap();
    out.sub(&p.y).unwrap().sqr().unwrap().mean_all().unwrap()
}

/// Values of `t` where `mask == 0`.
fn at_pruned(t: &Tensor, mask: &Tensor) -> Vec<f32> {
    let t = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let m = mask.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    t.into_iter()
        .zip(m)
        .filter(|&(_, m)| m == 0.0)
        .map(|(v, _)| v)
        .collect()
}

/// Runs PyTorch-style SGD (`d = g + wd·w; buf = μ·buf + d; w ← w − lr·buf`),
/// optionally masking gradients before and weights after every step. Returns
/// the first and last loss and the final momentum buffers.
fn train(p: &Problem, masked: bool, check_each_step: bool) -> (f32, f32, Vec<Tensor>) {
    let mut buffers: Vec<Tensor> = p
        .vars
        .iter()
        .map(|(_, v)| v.as_tensor().zeros_like().unwrap())
        .collect();
    let first = loss(p).to_scalar::<f32>().unwrap();
    for _ in 0..STEPS {
        let l = loss(p);
        let mut grads = l.backward().unwrap();
        if masked {
            p.masks.apply_to_grads(&mut grads, &p.vars).unwrap();
        }
        for ((_, var), buf) in p.vars.iter().zip(buffers.iter_mut()) {
            let w = var.as_tensor().detach();
            let g = grads.get(var.as_tensor()).unwrap();
            let d = g.add(&(&w * WEIGHT_DECAY).unwrap()).unwrap();
            *buf = ((&*buf * MOMENTUM).unwrap() + d).unwrap();
            var.set(&w.sub(&(&*buf * LR).unwrap()).unwrap()).unwrap();
        }
        if masked {
            p.masks.apply_to_vars(&p.vars).unwrap();
        }
        if check_each_step {
            for (name, var) in &p.vars {
                let pruned = at_pruned(var.as_tensor(), p.masks.get(name).unwrap());
                assert!(pruned.iter().all(|&v| v == 0.0), "{name}: {pruned:?}");
            }
        }
    }
    let last = loss(p).to_scalar::<f32>().unwrap();
    (first, last, buffers)
}

#[test]
fn masked_momentum_sgd_keeps_pruned_weights_exactly_zero() {
    let p = problem();
    assert_eq!(p.masks.pruned_count().unwrap(), 24 + 12);
    let (first, last, buffers) = train(&p, true, true);
    assert!(
        last < 0.5 * first,
        "training must make progress: {first} -> {last}"
    );
    for ((name, var), buf) in p.vars.iter().zip(&buffers) {
        let mask = p.masks.get(name).unwrap();
        assert_eq!(
            at_pruned(var.as_tensor(), mask),
            vec![0.0; mask.elem_count() / 2]
        );
        // The momentum buffer never saw a pruned coordinate.
        assert!(
            at_pruned(buf, mask).iter().all(|&v| v == 0.0),
            "{name} buffer"
        );
        // Kept weights did move.
        assert!(
            var.as_tensor()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        );
    }
}

#[test]
fn without_masking_pruned_weights_come_back() {
    let p = problem();
    let (_, _, buffers) = train(&p, false, false);
    for ((name, var), buf) in p.vars.iter().zip(&buffers) {
        let mask = p.masks.get(name).unwrap();
        let revived = at_pruned(var.as_tensor(), mask)
            .into_iter()
            .filter(|&v| v != 0.0)
            .count();
        assert!(revived > 0, "{name}: no pruned weight moved");
        assert!(at_pruned(buf, mask).iter().any(|&v| v != 0.0));
    }
}

#[test]
fn masking_weights_only_leaves_momentum_on_pruned_coordinates() {
    // apply_to_vars alone zeroes the weights after each step, but the
    // momentum buffer still accumulates gradients of pruned coordinates;
    // apply_to_grads is what keeps it clean.
    let p = problem();
    let mut buffers: Vec<Tensor> = p
        .vars
        .iter()
        .map(|(_, v)| v.as_tensor().zeros_like().unwrap())
        .collect();
    for _ in 0..5 {
        let grads = loss(&p).backward().unwrap();
        for ((_, var), buf) in p.vars.iter().zip(buffers.iter_mut()) {
            let g = grads.get(var.as_tensor()).unwrap();
            *buf = ((&*buf * MOMENTUM).unwrap() + g).unwrap();
            var.set(&var.as_tensor().sub(&(&*buf * LR).unwrap()).unwrap())
                .unwrap();
        }
        p.masks.apply_to_vars(&p.vars).unwrap();
    }
    let (name, _) = &p.vars[0];
    let mask = p.masks.get(name).unwrap();
    assert!(at_pruned(&buffers[0], mask).iter().any(|&v| v != 0.0));
    assert!(at_pruned(p.vars[0].1.as_tensor(), mask)
        .iter()
        .all(|&v| v == 0.0));
}
