//! kd-core's training loop on general objectives with kdprune's models and
//! the digits ([`kd_core::fit`]): feature terms train with the same seed to
//! the same bits (with feature terms the teacher runs on every batch, so the
//! teacher-cache setting does not enter), the FitNets regressors train
//! beside (not inside) the student, a logit objective parsed from its
//! specification is the objective of the `LossConfig` it names, feature names
//! are checked before the first step, and a diverging loss stops the run.

use candle_core::{DType, Device, Tensor};
use kd_core::losses::Beta;
use kd_core::{
    FeaturePair, FitOptions, KdError, LossConfig, NoHook, Objective, ObjectiveLoss, Quiet,
    SgdConfig, TeacherCache, Term, TermParams, TrainConfig, TrainData, TrainReport,
};
use kdprune_cli::data::DataView;
use kdprune_data::{digits, stratified_split, Augment, Normalization, Split};
use kdprune_models::{Model, ModelConfig};

fn data() -> (Split, Normalization) {
    let split = stratified_split(&digits().unwrap(), 0.2, 5).unwrap();
    let norm = Normalization::fit(&split.train);
    (split, norm)
}

fn model(name: &str, seed: u64) -> Model {
    let cfg = ModelConfig::from_name(name, (1, 8, 8), 10).unwrap();
    Model::new(cfg, seed, &Device::Cpu).unwrap()
}

fn config(objective: Objective, epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 100,
        sgd: SgdConfig {
            lr: 0.05,
            ..SgdConfig::default()
        },
        warmup_epochs: 0,
        min_lr: 0.0,
        objective,
        seed: 11,
    }
}

/// Trains `student` on the digits split of `split` with no hook and no
/// progress output, the teacher's logits taken as `cache` says.
fn fit(
    student: &Model,
    teacher: Option<&Model>,
    split: &Split,
    norm: &Normalization,
    cfg: &TrainConfig,
    cache: TeacherCache,
) -> kd_core::Result<TrainReport> {
    let train = DataView::new(&split.train, norm, Augment::NONE);
    let test = DataView::new(&split.test, norm, Augment::NONE);
    let td = TrainData {
        train: &train,
        test: &test,
    };
    let options = FitOptions {
        hook: &mut NoHook,
        progress: &mut Quiet,
        teacher_cache: cache,
        resume: None,
        on_epoch: None,
        save_every: None,
    };
    kd_core::fit(
        student,
        teacher.map(|t| t as &dyn kd_core::Network),
        &td,
        cfg,
        options,
    )
}

fn pair(s: &str, t: &str) -> FeaturePair {
    FeaturePair::new(s, t)
}

/// CE + FitNets (a map and a vector pair) + AT + RKD + DKD: every term at once
/// (weights below the papers': their sum diverges at this learning rate under
/// an untrained teacher).
fn everything() -> Objective {
    Objective::new([
        (1.0, Term::Ce),
        (
            1.0,
            Term::Fitnet {
                pairs: vec![pair("conv2", "conv2"), pair("fc1", "fc1")],
                bn_momentum: 0.1,
                bn_eps: 1e-5,
            },
        ),
        (
            10.0,
            Term::At {
                pairs: vec![pair("conv1", "conv1"), pair("conv2", "conv2")],
                p: 2.0,
            },
        ),
        (
            0.1,
            Term::Rkd {
                pairs: vec![pair("fc2", "fc2")],
                distance_weight: 25.0,
                angle_weight: 50.0,
            },
        ),
        (
            0.5,
            Term::Dkd {
                alpha: 1.0,
                beta: 8.0,
                temperature: 4.0,
                warmup_epochs: 2,
            },
        ),
    ])
}

fn bits(m: &Model) -> Vec<(String, Vec<u32>)> {
    m.tensors()
        .unwrap()
        .into_iter()
        .map(|(n, t)| {
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            (n, v.into_iter().map(f32::to_bits).collect())
        })
        .collect()
}

fn run(objective: Objective, cache: TeacherCache) -> (TrainReport, Model) {
    let (split, norm) = data();
    let teacher = model("lenet5", 3);
    let student = model("lenet5", 21);
    let report = fit(
        &student,
        Some(&teacher),
        &split,
        &norm,
        &config(objective, 2),
        cache,
    )
    .unwrap();
    (report, student)
}

#[test]
fn feature_objectives_are_bit_identical_with_the_same_seed() {
    let (ra, a) = run(everything(), TeacherCache::Memory);
    let (rb, b) = run(everything(), TeacherCache::Off);
    assert_eq!(bits(&a), bits(&b));
    assert_eq!(
        ra.epochs[1].train_loss.to_bits(),
        rb.epochs[1].train_loss.to_bits()
    );
    // Every term is reported; their means add up to the mean loss.
    let terms = &ra.epochs[0].terms;
    for name in ["ce", "fitnet", "at", "rkd", "dkd"] {
        assert!(
            terms[name].is_finite() && terms[name] > 0.0,
            "{name}: {terms:?}"
        );
    }
    let total: f64 = terms.values().sum();
    assert!((total - ra.epochs[0].train_loss).abs() < 1e-4 * total);
    assert!(ra.epochs[1].train_loss < ra.epochs[0].train_loss, "{ra:?}");
    // The student's variables are only its own.
    assert!(a.named_vars().iter().all(|(n, _)| !n.starts_with("fitnet")));
}

#[test]
fn parsed_logit_objectives_train_like_their_loss_config() {
    let (split, norm) = data();
    let teacher = model("lenet5", 3);
    let loss = LossConfig::CaKld {
        temperature: 4.0,
        alpha: 0.9,
        beta: Beta::Confidence,
        eps: 1e-7,
        std: Default::default(),
    };
    let train = TrainConfig {
        epochs: 1,
        batch_size: 100,
        sgd: SgdConfig::default(),
        warmup_epochs: 0,
        min_lr: 0.0,
        objective: loss.into(),
        seed: 4,
    };
    let a = model("lenet-300-100", 1);
    fit(
        &a,
        Some(&teacher),
        &split,
        &norm,
        &train,
        TeacherCache::Memory,
    )
    .unwrap();
    let b = model("lenet-300-100", 1);
    let parsed = Objective::parse("ca-kld", &TermParams::default()).unwrap();
    assert_eq!(parsed.as_loss_config(), Some(loss));
    // The same terms and weights: `ce:0.1 + ca-kld:0.9` (0.1 as `1.0 − 0.9`).
    assert_eq!(parsed, Objective::from(loss));
    assert_eq!(parsed.terms.len(), 2);
    let cfg = TrainConfig {
        objective: parsed,
        ..train
    };
    fit(
        &b,
        Some(&teacher),
        &split,
        &norm,
        &cfg,
        TeacherCache::Memory,
    )
    .unwrap();
    assert_eq!(bits(&a), bits(&b));
}

/// The general path computes the same objective as `LossConfig::loss` (not
/// bit for bit: the sum is taken in another order).
#[test]
fn general_path_agrees_with_loss_config() {
    let (split, norm) = data();
    let student = model("lenet5", 1);
    let teacher = model("lenet5", 2);
    let idx: Vec<usize> = (0..64).collect();
    let (xs, ys) = split.train.batch(&idx, &norm, &Device::Cpu).unwrap();
    let s_out = student.forward_t(&xs, true).unwrap();
    let t_out = teacher.forward_t(&xs, false).unwrap();
    let general = Objective::new([(0.1, Term::Ce), (0.9, Term::Kd { temperature: 4.0 })]);
    assert_eq!(general.as_loss_config(), None);
    let mut loss = ObjectiveLoss::new(&general, &student, Some(&teacher), None, 0).unwrap();
    let parts = loss.loss(&s_out, Some(&t_out), &ys, 1, true).unwrap();
    let reference = LossConfig::Hinton {
        temperature: 4.0,
        alpha: 0.9,
    }
    .loss(&s_out.logits, Some(&t_out.logits), &ys)
    .unwrap();
    let scalar = |t: &Tensor| t.to_dtype(DType::F32).unwrap().to_scalar::<f32>().unwrap();
    let (g, r) = (scalar(&parts.total), scalar(&reference));
    assert!((g - r).abs() <= 1e-6 * r.abs(), "{g} vs {r}");
    assert_eq!(parts.terms.len(), 2);
}

#[test]
fn regressors_get_gradients_and_a_seeded_initialisation() {
    let (split, norm) = data();
    let student = model("lenet5", 1);
    let teacher = model("lenet-300-100", 2);
    let idx: Vec<usize> = (0..32).collect();
    let (xs, ys) = split.train.batch(&idx, &norm, &Device::Cpu).unwrap();
    let objective = Objective::new([
        (1.0, Term::Ce),
        (
            100.0,
            Term::Fitnet {
                pairs: vec![pair("conv2", "conv2"), pair("fc1", "fc1")],
                bn_momentum: 0.1,
                bn_eps: 1e-5,
            },
        ),
    ]);
    // The MLP has no feature map `conv2`.
    let e = ObjectiveLoss::new(&objective, &student, Some(&teacher), Some(&xs), 0)
        .err()
        .unwrap();
    assert!(e.to_string().contains("its features are: fc1, fc2"), "{e}");
    let teacher = model("lenet5", 2);
    // A map cannot be regressed onto a vector.
    let swapped = Objective::new([(
        1.0,
        Term::Fitnet {
            pairs: vec![pair("conv2", "fc1")],
            bn_momentum: 0.1,
            bn_eps: 1e-5,
        },
    )]);
    let e = ObjectiveLoss::new(&swapped, &student, Some(&teacher), Some(&xs), 0)
        .err()
        .unwrap();
    assert!(matches!(e, KdError::ShapeMismatch(_)), "{e}");
    let build =
        |seed| ObjectiveLoss::new(&objective, &student, Some(&teacher), Some(&xs), seed).unwrap();
    let mut loss = build(0);
    let vars = loss.trainable_vars();
    let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "fitnet0.bn.bias",
            "fitnet0.bn.weight",
            "fitnet0.conv.weight",
            "fitnet1.linear.bias",
            "fitnet1.linear.weight"
        ]
    );
    assert_eq!(vars[2].1.dims(), [16, 16, 1, 1]);
    assert_eq!(vars[4].1.dims(), [120, 120]);
    let values = |l: &ObjectiveLoss| {
        l.trainable_vars()
            .into_iter()
            .map(|(_, v)| {
                v.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(values(&build(0)), values(&build(0)));
    assert_ne!(values(&build(0)), values(&build(1)));

    let s_out = student.forward_t(&xs, true).unwrap();
    let t_out = teacher.forward_t(&xs, false).unwrap();
    let parts = loss.loss(&s_out, Some(&t_out), &ys, 1, true).unwrap();
    let grads = parts.total.backward().unwrap();
    for (name, var) in &vars {
        let g = grads.get(var.as_tensor()).expect(name);
        let norm = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(norm > 0.0, "{name} has a zero gradient");
    }
    // The teacher is detached: none of its variables receive a gradient.
    for (name, var) in teacher.named_vars() {
        assert!(grads.get(var.as_tensor()).is_none(), "teacher {name}");
    }
}

#[test]
fn unknown_feature_names_are_listed_before_training() {
    let (split, norm) = data();
    let objective = Objective::new([
        (1.0, Term::Ce),
        (
            1000.0,
            Term::At {
                pairs: vec![pair("conv9", "conv2")],
                p: 2.0,
            },
        ),
    ]);
    let student = model("lenet5", 1);
    let before = bits(&student);
    let e = fit(
        &student,
        Some(&model("lenet5", 2)),
        &split,
        &norm,
        &config(objective.clone(), 1),
        TeacherCache::Memory,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("student has no feature `conv9`") && e.contains("conv1, conv2, fc1, fc2"),
        "{e}"
    );
    assert_eq!(bits(&student), before);
    // Without a teacher, a feature objective is refused.
    let e = fit(
        &student,
        None,
        &split,
        &norm,
        &config(objective, 1),
        TeacherCache::Memory,
    )
    .unwrap_err();
    assert!(e.to_string().contains("needs a teacher"), "{e}");
}

#[test]
fn a_diverging_feature_objective_stops_with_non_finite_loss() {
    let (split, norm) = data();
    let mut cfg = config(
        Objective::new([
            (1.0, Term::Ce),
            (
                1.0,
                Term::Rkd {
                    pairs: vec![pair("fc2", "fc2")],
                    distance_weight: 25.0,
                    angle_weight: 50.0,
                },
            ),
        ]),
        3,
    );
    cfg.sgd.lr = 1e30;
    let e = fit(
        &model("lenet5", 1),
        Some(&model("lenet5", 2)),
        &split,
        &norm,
        &cfg,
        TeacherCache::Memory,
    )
    .unwrap_err();
    assert!(matches!(e, KdError::NonFiniteLoss { .. }), "{e}");
}
