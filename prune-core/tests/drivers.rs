//! The pruning drivers (one-shot, GMP, IMP with rewinding, COLT) and the
//! criteria behind the `Importance` trait, over a small least-squares model
//! trained by hand: what each driver asks of its learner, in which order,
//! and the masks it leaves.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var};
use prune_core::importance::{self, Grasp, Magnitude, Random, Snip, SynFlow, TeacherGuided};
use prune_core::schedule::{self, GmpSchedule, Learner, Stage, StepPruner};
use prune_core::{
    GradientSource, Importance, Loss, MaskSet, NamedTensors, PruneError, Scope, ScoringContext,
};

/// `min mean((x Wᵀ − y)²)` over two weight matrices used side by side:
/// `[w1; w2]` stacked as the rows of one linear map.
struct Linear {
    vars: Vec<(String, Var)>,
    rewind_point: NamedTensors,
    x: Tensor,
    y: Tensor,
    /// Stages trained, in order.
    stages: Vec<Stage>,
    /// Times `rewind` was called.
    rewinds: usize,
}

fn values(seed: u32, n: usize) -> Vec<f32> {
    // A fixed, varied pattern: no random generator needed.
    (0..n)
        .map(|i| (((i as u32).wrapping_mul(2_654_435_761u32) ^ seed) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

impl Linear {
    fn new(seed: u32) -> Self {
        let dev = Device::Cpu;
        let w1 = Tensor::from_vec(values(seed, 6 * 8), (6, 8), &dev).unwrap();
        let w2 = Tensor::from_vec(values(seed + 1, 4 * 8), (4, 8), &dev).unwrap();
        let x = Tensor::from_vec(values(seed + 2, 32 * 8), (32, 8), &dev).unwrap();
        let target = Tensor::from_vec(values(seed + 3, 10 * 8), (10, 8), &dev).unwrap();
        let y = x.matmul(&target.t().unwrap()).unwrap();
        let vars = vec![
            ("a.weight".to_string(), Var::from_tensor(&w1).unwrap()),
            ("b.weight".to_string(), Var::from_tensor(&w2).unwrap()),
        ];
        let rewind_point = vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().copy().unwrap()))
            .collect();
        Self {
            vars,
            rewind_point,
            x,
            y,
            stages: Vec::new(),
            rewinds: 0,
        }
    }

    fn loss(&self) -> Tensor {
        let w = Tensor::cat(&[self.vars[0].1.as_tensor(), self.vars[1].1.as_tensor()], 0).unwrap();
        let out = self.x.matmul(&w.t().unwrap()).unwrap();
        out.sub(&self.y).unwrap().sqr().unwrap().mean_all().unwrap()
    }
}

impl Learner for Linear {
    type Report = Vec<f32>;

    fn weights(&self) -> prune_core::Result<NamedTensors> {
        Ok(self
            .vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().copy().unwrap()))
            .collect())
    }

    fn apply(&mut self, masks: &MaskSet) -> prune_core::Result<()> {
        masks.apply_to_vars(&self.vars)
    }

    fn rewind(&mut self, masks: &MaskSet) -> prune_core::Result<()> {
        self.rewinds += 1;
        schedule::rewind(&self.vars, &self.rewind_point, masks)
    }

    /// Ten steps of plain gradient descent under the pruner; reports the losses.
    fn train(&mut self, stage: Stage, pruner: &mut dyn StepPruner) -> prune_core::Result<Vec<f32>> {
        self.stages.push(stage);
        let mut losses = Vec::new();
        for step in 0..10u64 {
            let loss = self.loss();
            losses.push(loss.to_scalar::<f32>()?);
            let mut grads = loss.backward()?;
            pruner.masks().apply_to_grads(&mut grads, &self.vars)?;
            for (_, v) in &self.vars {
                let g = grads.get(v.as_tensor()).unwrap();
                v.set(&(v.as_tensor() - (g * 0.05)?)?)?;
            }
            pruner.update(step, &self.vars)?;
            pruner.masks().apply_to_vars(&self.vars)?;
        }
        Ok(losses)
    }
}

/// Zeros (and pruned coordinates) among the weights.
fn zeros(l: &Linear) -> usize {
    l.vars
        .iter()
        .map(|(_, v)| {
            v.as_tensor()
                .eq(0f64)
                .unwrap()
                .to_dtype(DType::U32)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<u32>()
                .unwrap() as usize
        })
        .sum()
}

/// A scoring context over [`Linear`]: the loss gradients are the model's
/// (every loss the same), recorded by name.
struct Context<'a> {
    model: &'a Linear,
    asked: Vec<Loss>,
}

impl ScoringContext for Context<'_> {
    fn weights(&self) -> prune_core::Result<NamedTensors> {
        self.model.weights()
    }
    fn seed(&self) -> u64 {
        7
    }
    fn batches(&self) -> usize {
        2
    }
    fn gradient(&mut self, loss: Loss, _batch: usize) -> prune_core::Result<NamedTensors> {
        self.asked.push(loss);
        let grads = self.model.loss().backward()?;
        Ok(self
            .model
            .vars
            .iter()
            .map(|(n, v)| (n.clone(), grads.get(v.as_tensor()).unwrap().clone()))
            .collect())
    }
    fn set_weights(&mut self, _values: &NamedTensors) -> prune_core::Result<()> {
        Ok(())
    }
    fn synaptic_flow_gradient(
        &mut self,
        linear: &NamedTensors,
    ) -> prune_core::Result<NamedTensors> {
        // R = Σ |W| 1: the flow's gradient is 1 everywhere.
        linear
            .iter()
            .map(|(n, t)| Ok((n.clone(), t.ones_like()?)))
            .collect()
    }
}

#[test]
fn one_shot_prunes_exactly_then_retrains_under_the_mask() {
    let mut model = Linear::new(1);
    let scoring = Linear::new(1);
    let mut ctx = Context {
        model: &scoring,
        asked: Vec::new(),
    };
    let o = schedule::one_shot(
        &mut model,
        &Snip,
        &mut ctx,
        0.5,
        Scope::Global,
        &MaskSet::new(),
    )
    .unwrap();
    assert_eq!(ctx.asked, [Loss::CrossEntropy, Loss::CrossEntropy]);
    assert_eq!(o.masks.pruned_count().unwrap(), 40);
    assert_eq!(model.stages, [Stage::Retrain]);
    assert!(zeros(&model) >= 40);
    assert!(o.report.last() < o.report.first(), "{:?}", o.report);
    // Per layer: half of each tensor.
    let o = schedule::one_shot(
        &mut model,
        &Magnitude,
        &mut Context {
            model: &scoring,
            asked: Vec::new(),
        },
        0.5,
        Scope::PerLayer,
        &MaskSet::new(),
    )
    .unwrap();
    let count = |m: &Tensor| {
        m.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .filter(|v| **v == 0.0)
            .count()
    };
    assert_eq!(count(o.masks.get("a.weight").unwrap()), 24);
    assert_eq!(count(o.masks.get("b.weight").unwrap()), 16);
}

#[test]
fn gmp_grows_the_mask_to_the_target_and_never_regrows() {
    let mut model = Linear::new(2);
    let o = schedule::gmp(&mut model, 0.75, 10, 0.75, 2).unwrap();
    // ramp = min(⌊0.75·10⌋, 9) = 7, rounded down to a multiple of 2: 6.
    assert_eq!(o.masks_fixed_from_step, 6);
    assert_eq!(o.masks.pruned_count().unwrap(), 60);
    assert_eq!(model.stages, [Stage::Gmp]);
    assert!(zeros(&model) >= 60);
    let s = GmpSchedule::ramp(0.75, 10, 0.75, 2).unwrap();
    assert_eq!((s.begin_step, s.end_step, s.frequency), (0, 6, 2));
    assert!(matches!(
        GmpSchedule::ramp(0.75, 0, 0.75, 2),
        Err(prune_core::PruneError::NoTrainingSteps)
    ));
    assert!(GmpSchedule::ramp(0.75, 10, 0.0, 2).is_err());
    assert!(GmpSchedule::ramp(0.75, 10, 0.5, 0).is_err());
}

/// Between GMP's updates the weights move, and a pruned weight may become
/// the largest: the pruner still never lets it back (each update selects
/// among the weights still kept), and ends at exactly `round(s·n)`.
#[test]
fn the_gmp_pruner_never_regrows_a_pruned_weight() {
    let schedule = GmpSchedule::ramp(0.8, 10, 1.0, 1).unwrap();
    let mut pruner = schedule::GmpPruner::new(schedule, vec!["w".into()]);
    let w = Var::from_vec(values(9, 50), 50, &Device::Cpu).unwrap();
    let vars = vec![("w".to_string(), w.clone())];
    let mut kept = vec![1f32; 50];
    for step in 0..10u64 {
        // The weights a magnitude criterion would now keep first: the pruned ones.
        let moved: Vec<f32> = values(9 + step as u32, 50)
            .iter()
            .zip(&kept)
            .map(|(v, k)| if *k == 0.0 { 100.0 } else { *v })
            .collect();
        w.set(&Tensor::new(moved, &Device::Cpu).unwrap()).unwrap();
        pruner.update(step, &vars).unwrap();
        let m: Vec<f32> = pruner.masks().get("w").unwrap().to_vec1().unwrap();
        for (i, (now, before)) in m.iter().zip(&kept).enumerate() {
            assert!(
                *before != 0.0 || *now == 0.0,
                "step {step}: weight {i} regrew"
            );
        }
        kept = m;
    }
    assert_eq!(kept.iter().filter(|k| **k == 0.0).count(), 40);
}

#[test]
fn imp_rounds_rewind_then_train_to_the_cumulative_targets() {
    let mut model = Linear::new(3);
    let o = schedule::imp(&mut model, 0.5, 0.875).unwrap();
    // 0.5, 0.75, 0.875: three rounds, each after a rewind.
    assert_eq!(
        model.stages,
        [Stage::ImpRound(0), Stage::ImpRound(1), Stage::ImpRound(2)]
    );
    assert_eq!(model.rewinds, 3);
    assert_eq!(o.masks.pruned_count().unwrap(), 70);
    // No rounds at sparsity 0: the default report, empty masks.
    let mut fresh = Linear::new(3);
    let o = schedule::imp(&mut fresh, 0.5, 0.0).unwrap();
    assert!(o.report.is_empty() && o.masks.is_empty() && fresh.stages.is_empty());
}

#[test]
fn colt_trains_every_copy_per_round_then_the_ticket() {
    let mut copies = [Linear::new(4), Linear::new(5)];
    let mut ticket = Linear::new(4);
    let o = schedule::colt(&mut copies, &mut ticket, 0.5, 0.75).unwrap();
    for (k, c) in copies.iter().enumerate() {
        assert!(c.stages.len() >= 2);
        for (round, stage) in c.stages.iter().enumerate() {
            assert_eq!(*stage, Stage::ColtRound { round, copy: k });
        }
        assert_eq!(c.rewinds, c.stages.len());
    }
    assert_eq!(ticket.stages, [Stage::ColtFinal]);
    assert_eq!(ticket.rewinds, 1);
    // The intersection prunes at least the target.
    assert!(o.masks.sparsity().unwrap() >= 0.75);
    assert!(schedule::colt(&mut [] as &mut [Linear], &mut ticket, 0.5, 0.5).is_err());
}

#[test]
fn stages_have_distinct_salts_and_labels() {
    let stages = [
        Stage::Retrain,
        Stage::Gmp,
        Stage::ImpRound(0),
        Stage::ImpRound(1),
        Stage::ColtRound { round: 0, copy: 0 },
        Stage::ColtRound { round: 0, copy: 1 },
        Stage::ColtRound { round: 1, copy: 0 },
    ];
    let salts: std::collections::BTreeSet<u64> = stages.iter().map(|s| s.salt()).collect();
    assert_eq!(salts.len(), stages.len());
    // The final ticket trains on other data than COLT's first copy and
    // shares its salt (the sweeps' figures were made so).
    assert_eq!(
        Stage::ColtFinal.salt(),
        Stage::ColtRound { round: 0, copy: 0 }.salt()
    );
    // Any number of COLT copies and rounds, beside the other stages, gets
    // salts of its own; copies 0 and 1 keep the salts their figures were
    // made with (0x434F_4C54 ^ (round << 1 | copy)).
    let mut many: Vec<Stage> = vec![Stage::Retrain, Stage::Gmp];
    many.extend((0..8).map(Stage::ImpRound));
    for round in 0..8 {
        many.extend((0..5).map(|copy| Stage::ColtRound { round, copy }));
    }
    let salts: std::collections::BTreeSet<u64> = many.iter().map(|s| s.salt()).collect();
    assert_eq!(salts.len(), many.len());
    assert_eq!(Stage::ColtRound { round: 1, copy: 1 }.salt(), 0x434F_4C57);
    assert_eq!(Stage::ColtRound { round: 2, copy: 0 }.salt(), 0x434F_4C50);
    assert_eq!(Stage::ImpRound(1).label(), "imp round 2");
    assert_eq!(
        Stage::ColtRound { round: 0, copy: 1 }.label(),
        "colt round 1 copy 2"
    );
}

#[test]
fn criteria_read_the_model_through_the_context() {
    let model = Linear::new(6);
    let mut ctx = Context {
        model: &model,
        asked: Vec::new(),
    };
    // Teacher-guided asks for the distillation loss of its source.
    for (name, source) in [
        ("teacher-guided", GradientSource::Mixture),
        ("teacher-guided:kd", GradientSource::Kd),
        ("teacher-guided:ce", GradientSource::Ce),
    ] {
        ctx.asked.clear();
        let scores = importance::by_name(name).unwrap().score(&mut ctx).unwrap();
        assert_eq!(ctx.asked, [Loss::Distillation(source); 2], "{name}");
        // |θ ⊙ g| summed over the two (identical) batches: 2·|θ ⊙ g|.
        let once = TeacherGuided { source }.score(&mut Context {
            model: &model,
            asked: Vec::new(),
        });
        let a: Vec<f32> = scores["a.weight"].flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = once.unwrap()["a.weight"]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(a, b);
        // … and that is 2·|θ ⊙ g| computed here from the context's own
        // weight and gradient.
        let mut fresh = Context {
            model: &model,
            asked: Vec::new(),
        };
        let g: Vec<f32> = fresh.gradient(Loss::Distillation(source), 0).unwrap()["a.weight"]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let w: Vec<f32> = model.weights().unwrap()["a.weight"]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let expected: Vec<f32> = w.iter().zip(&g).map(|(w, g)| 2.0 * (w * g).abs()).collect();
        assert_eq!(a, expected, "{name}");
        assert!(expected.iter().any(|v| *v > 0.0));
    }
    // Random draws from the context's seed: the same as `random(weights, 7)`.
    let r = Random.score(&mut ctx).unwrap();
    let direct = importance::random(&model.weights().unwrap(), 7).unwrap();
    assert_eq!(
        r["b.weight"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        direct["b.weight"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    );
    // SynFlow prunes by one global threshold per round only.
    let e = SynFlow { rounds: 3 }
        .prune(&mut ctx, 0.5, Scope::PerLayer, &MaskSet::new())
        .unwrap_err();
    assert!(matches!(e, PruneError::UnsupportedScope { .. }), "{e}");
    let m = SynFlow { rounds: 3 }
        .prune(&mut ctx, 0.5, Scope::Global, &MaskSet::new())
        .unwrap();
    assert_eq!(m.pruned_count().unwrap(), 40);
    // GraSP without batches is refused.
    struct NoBatches<'a>(Context<'a>);
    impl ScoringContext for NoBatches<'_> {
        fn weights(&self) -> prune_core::Result<NamedTensors> {
            self.0.weights()
        }
        fn seed(&self) -> u64 {
            0
        }
        fn batches(&self) -> usize {
            0
        }
        fn gradient(&mut self, l: Loss, b: usize) -> prune_core::Result<NamedTensors> {
            self.0.gradient(l, b)
        }
        fn set_weights(&mut self, v: &NamedTensors) -> prune_core::Result<()> {
            self.0.set_weights(v)
        }
        fn synaptic_flow_gradient(&mut self, l: &NamedTensors) -> prune_core::Result<NamedTensors> {
            self.0.synaptic_flow_gradient(l)
        }
    }
    let e = Grasp
        .score(&mut NoBatches(Context {
            model: &model,
            asked: Vec::new(),
        }))
        .unwrap_err();
    assert!(matches!(e, PruneError::NeedsBatches(_)), "{e}");
}

#[test]
fn selection_within_a_mask_keeps_what_it_pruned_and_hits_the_count() {
    let dev = Device::Cpu;
    let scores: NamedTensors = BTreeMap::from([
        (
            "a".to_string(),
            Tensor::new(&[1f32, 2.0, 3.0, 4.0, 5.0, 6.0], &dev).unwrap(),
        ),
        (
            "b".to_string(),
            Tensor::new(&[0.5f32, 7.0, 8.0, 9.0], &dev).unwrap(),
        ),
    ]);
    let mut kept = MaskSet::new();
    // `a`'s largest score already pruned.
    kept.insert(
        "a",
        Tensor::new(&[1f32, 1.0, 1.0, 1.0, 1.0, 0.0], &dev).unwrap(),
    )
    .unwrap();
    let flat = |m: &MaskSet, n: &str| m.get(n).unwrap().to_vec1::<f32>().unwrap();
    // Per layer at 0.5: 3 of `a` (its pruned one and the two lowest), 2 of `b`.
    let m = prune_core::select::per_layer_within(&scores, &kept, 0.5).unwrap();
    assert_eq!(flat(&m, "a"), [0.0, 0.0, 1.0, 1.0, 1.0, 0.0]);
    assert_eq!(flat(&m, "b"), [0.0, 0.0, 1.0, 1.0]);
    // Scope::select_within is the same selection; globally, 5 of 10.
    let g = Scope::Global.select_within(&scores, &kept, 0.5).unwrap();
    assert_eq!(g.pruned_count().unwrap(), 5);
    assert_eq!(flat(&g, "a")[5], 0.0);
    // An empty mask selects as `per_layer` does.
    let plain = prune_core::select::per_layer(&scores, 0.5).unwrap();
    let within = prune_core::select::per_layer_within(&scores, &MaskSet::new(), 0.5).unwrap();
    assert_eq!(flat(&plain, "a"), flat(&within, "a"));
}
