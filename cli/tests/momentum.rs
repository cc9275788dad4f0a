//! Training under a mask with the real optimizer (`kd_core::Sgd`: momentum,
//! weight decay) through the real hook (`PruneHook` over a prune-core
//! `StepPruner`): gradients masked before each step and weights after it
//! keep pruned weights at exactly 0.0 and the momentum buffers clean.

use candle_core::{Device, Tensor, Var};
use kd_core::{
    FitOptions, LossConfig, Quiet, Sgd, SgdConfig, StepHook, StepInfo, TeacherCache, TrainConfig,
};
use kdprune_cli::checkpoints::{apply_masks, new_model, prunable_names, select};
use kdprune_cli::data::{load_data, Source};
use kdprune_cli::training::PruneHook;
use prune_core::schedule::{GmpPruner, GmpSchedule};
use prune_core::{importance, MaskSet, NamedTensors, ParamFilter, StepPruner};
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
    let masks =
        prune_core::select::per_layer(&importance::magnitude(&weights).unwrap(), 0.5).unwrap();
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

/// PyTorch-style SGD with momentum and weight decay (`kd_core::Sgd`), with
/// `hook` around every step. Returns the first and last loss and the optimizer.
fn train(p: &Problem, hook: &mut dyn StepHook, each_step: impl Fn(&Problem)) -> (f32, f32, Sgd) {
    let mut sgd = Sgd::new(
        &p.vars,
        SgdConfig {
            lr: LR,
            momentum: MOMENTUM,
            nesterov: false,
            weight_decay: WEIGHT_DECAY,
        },
    )
    .unwrap();
    let first = loss(p).to_scalar::<f32>().unwrap();
    for step in 0..STEPS {
        let l = loss(p);
        let value = l.to_scalar::<f32>().unwrap();
        let mut grads = l.backward().unwrap();
        hook.before_step(&mut grads, &p.vars).unwrap();
        sgd.step(&grads, LR).unwrap();
        let info = StepInfo {
            epoch: 0,
            step,
            loss: value,
            lr: LR,
        };
        hook.after_step(&p.vars, &info, &mut sgd).unwrap();
        each_step(p);
    }
    let last = loss(p).to_scalar::<f32>().unwrap();
    (first, last, sgd)
}

#[test]
fn masked_momentum_sgd_keeps_pruned_weights_exactly_zero() {
    let p = problem();
    assert_eq!(p.masks.pruned_count().unwrap(), 24 + 12);
    let mut fixed = p.masks.clone();
    let (first, last, sgd) = train(&p, &mut PruneHook(&mut fixed), |p| {
        for (name, var) in &p.vars {
            let pruned = at_pruned(var.as_tensor(), p.masks.get(name).unwrap());
            assert!(pruned.iter().all(|&v| v == 0.0), "{name}: {pruned:?}");
        }
    });
    assert!(
        last < 0.5 * first,
        "training must make progress: {first} -> {last}"
    );
    for (name, var) in &p.vars {
        let mask = p.masks.get(name).unwrap();
        assert_eq!(
            at_pruned(var.as_tensor(), mask),
            vec![0.0; mask.elem_count() / 2]
        );
        // The momentum buffer never saw a pruned coordinate.
        let buf = sgd.momentum_buffer(name).unwrap();
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
    let (_, _, sgd) = train(&p, &mut kd_core::NoHook, |_| {});
    for (name, var) in &p.vars {
        let mask = p.masks.get(name).unwrap();
        let revived = at_pruned(var.as_tensor(), mask)
            .into_iter()
            .filter(|&v| v != 0.0)
            .count();
        assert!(revived > 0, "{name}: no pruned weight moved");
        let buf = sgd.momentum_buffer(name).unwrap();
        assert!(at_pruned(buf, mask).iter().any(|&v| v != 0.0));
    }
}

/// Under a growing mask (gradual magnitude pruning, updated every 5 steps
/// up to 75 % sparsity), no momentum is left at a coordinate once it is
/// pruned: the hook clears it when the mask grows, so the invariant "a
/// pruned weight is 0 and so is its momentum" holds after every step, not
/// only thanks to the weights being masked after the step.
#[test]
fn a_growing_mask_clears_the_momentum_of_newly_pruned_weights() {
    let p = problem();
    let names: Vec<String> = p.vars.iter().map(|(n, _)| n.clone()).collect();
    let schedule = GmpSchedule::new(0.0, 0.75, 0, 40, 5).unwrap();
    let mut pruner = GmpPruner::new(schedule, names);
    let mut sgd = Sgd::new(
        &p.vars,
        SgdConfig {
            lr: LR,
            momentum: MOMENTUM,
            nesterov: true,
            weight_decay: WEIGHT_DECAY,
        },
    )
    .unwrap();
    let mut checked_updates = 0;
    for step in 0..STEPS {
        let l = loss(&p);
        let value = l.to_scalar::<f32>().unwrap();
        let mut grads = l.backward().unwrap();
        let before = pruner.masks().pruned_count().unwrap();
        let mut hook = PruneHook(&mut pruner);
        hook.before_step(&mut grads, &p.vars).unwrap();
        sgd.step(&grads, LR).unwrap();
        let info = StepInfo {
            epoch: 0,
            step,
            loss: value,
            lr: LR,
        };
        hook.after_step(&p.vars, &info, &mut sgd).unwrap();
        if pruner.masks().pruned_count().unwrap() > before && before > 0 {
            checked_updates += 1;
        }
        for (name, var) in &p.vars {
            let Some(mask) = pruner.masks().get(name) else {
                continue;
            };
            let w = at_pruned(var.as_tensor(), mask);
            assert!(w.iter().all(|&v| v == 0.0), "step {step}: {name} revived");
            let buf = at_pruned(sgd.momentum_buffer(name).unwrap(), mask);
            assert!(
                buf.iter().all(|&v| v == 0.0),
                "step {step}: stale momentum at pruned coordinates of {name}: {buf:?}"
            );
        }
    }
    assert!(checked_updates >= 5, "{checked_updates} growing updates");
    assert_eq!(
        pruner.masks().pruned_count().unwrap(),
        prune_core::select::prune_count(48 + 24, 0.75)
    );
}

/// Masks the weights after each step, not the gradients before it.
struct WeightsOnly<'a>(&'a MaskSet);

impl StepHook for WeightsOnly<'_> {
    fn after_step(
        &mut self,
        vars: &[(String, Var)],
        _info: &StepInfo,
        _optimizer: &mut Sgd,
    ) -> kd_core::Result<()> {
        self.0
            .apply_to_vars(vars)
            .map_err(kd_core::KdError::external)
    }
}

#[test]
fn masking_weights_only_leaves_momentum_on_pruned_coordinates() {
    // apply_to_vars alone zeroes the weights after each step, but the
    // momentum buffer still accumulates gradients of pruned coordinates;
    // apply_to_grads is what keeps it clean.
    let p = problem();
    let (_, _, sgd) = train(&p, &mut WeightsOnly(&p.masks), |_| {});
    let (name, var) = &p.vars[0];
    let mask = p.masks.get(name).unwrap();
    let buf = sgd.momentum_buffer(name).unwrap();
    assert!(at_pruned(buf, mask).iter().any(|&v| v != 0.0));
    assert!(at_pruned(var.as_tensor(), mask).iter().all(|&v| v == 0.0));
}

/// The real optimizer (momentum 0.9, Nesterov, weight decay) under the
/// mask hook inside kd-core's training loop for 69 steps: every masked
/// weight stays exactly 0 while the kept ones train.
#[test]
fn masked_weights_stay_exactly_zero_under_momentum_sgd() {
    let device = Device::Cpu;
    let data = load_data("digits", &Source::Embedded, 0).unwrap();
    let model = new_model("lenet-300-100", &data, 3, &device).unwrap();
    let prunable = prunable_names(model.config(), &ParamFilter::default());
    let scores =
        importance::random(&select(&model.tensors().unwrap(), &prunable).unwrap(), 9).unwrap();
    let masks = prune_core::select::global(&scores, 0.8).unwrap();
    apply_masks(&model, &masks).unwrap();
    let before = model.tensors().unwrap();
    let cfg = TrainConfig {
        epochs: 3, // 23 steps per epoch at batch 64: 69 steps
        batch_size: 64,
        sgd: SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
        },
        warmup_epochs: 1,
        min_lr: 0.0,
        objective: LossConfig::CrossEntropy.into(),
        seed: 0,
    };
    let views = data.views(kdprune_data::Augment::NONE);
    let mut fixed = masks.clone();
    let options = FitOptions {
        hook: &mut PruneHook(&mut fixed),
        progress: &mut Quiet,
        teacher_cache: TeacherCache::Memory,
        resume: None,
        on_epoch: None,
        save_every: None,
    };
    kd_core::fit(&model, None, &views.train_data(), &cfg, options).unwrap();
    let after = model.tensors().unwrap();
    for (name, mask) in masks.iter() {
        let m: Vec<f32> = mask.flatten_all().unwrap().to_vec1().unwrap();
        let w: Vec<f32> = after[name].flatten_all().unwrap().to_vec1().unwrap();
        let w0: Vec<f32> = before[name].flatten_all().unwrap().to_vec1().unwrap();
        let mut kept_moved = 0;
        for i in 0..m.len() {
            if m[i] == 0.0 {
                // ±0 both count: the mask multiplies, so a negative weight becomes −0.
                assert!(w[i] == 0.0, "{name}[{i}] revived: {}", w[i]);
            } else if w[i] != w0[i] {
                kept_moved += 1;
            }
        }
        assert!(kept_moved > 0, "{name}: kept weights did not train");
    }
}
