//! The scoring dispatch of the library (`kdprune_cli::scoring`) on real
//! models and the digits: what the criteria compute through kdprune's
//! `ScoringContext`.

use candle_core::{DType, Device, Tensor};
use kd_core::{LossConfig, SelfDistillConfig};
use kdprune_cli::checkpoints::{new_model, prunable_names};
use kdprune_cli::data::{load_data, Source};
use kdprune_cli::scoring::{scores, ScoringSettings};
use prune_core::importance::Grasp;
use prune_core::ParamFilter;

fn settings(batches: usize, batch_size: usize) -> ScoringSettings {
    ScoringSettings {
        batches,
        batch_size,
        seed: 0,
        kd_loss: LossConfig::CrossEntropy,
        self_distill: SelfDistillConfig::default(),
    }
}

/// A hidden unit that is dead on every input (zero incoming weights,
/// negative bias) makes its outgoing weights irrelevant to the loss: their
/// gradient and `H·g` are exactly 0, and so is their GraSP score, while
/// live weights get non-zero scores.
#[test]
fn grasp_scores_a_weight_without_effect_on_the_loss_zero() {
    let device = Device::Cpu;
    let data = load_data("digits", &Source::Embedded, 0).unwrap();
    let model = new_model("lenet-300-100", &data, 3, &device).unwrap();
    let mut t = model.tensors().unwrap();
    let dead = 7;
    let w1 = t["fc1.weight"].clone();
    let (h, d) = w1.dims2().unwrap();
    let keep = Tensor::ones((h, d), DType::F32, &device)
        .unwrap()
        .slice_assign(
            &[dead..dead + 1, 0..d],
            &Tensor::zeros((1, d), DType::F32, &device).unwrap(),
        )
        .unwrap();
    t.insert("fc1.weight".into(), w1.mul(&keep).unwrap());
    let mut b1: Vec<f32> = t["fc1.bias"].to_vec1().unwrap();
    b1[dead] = -1.0;
    t.insert("fc1.bias".into(), Tensor::new(b1, &device).unwrap());
    model.load_tensors(&t).unwrap();

    let prunable = prunable_names(model.config(), &ParamFilter::default());
    let scores = scores(&Grasp, &model, None, &data, &prunable, settings(2, 32)).unwrap();
    let s2: Vec<Vec<f32>> = scores["fc2.weight"].to_vec2().unwrap();
    let w2: Vec<Vec<f32>> = t["fc2.weight"].to_vec2().unwrap();
    for (row, w) in s2.iter().zip(&w2) {
        assert_ne!(w[dead], 0.0);
        assert_eq!(
            row[dead], 0.0,
            "a weight out of a dead unit scored {}",
            row[dead]
        );
    }
    let live = s2.iter().flatten().filter(|s| **s != 0.0).count();
    assert!(
        live > s2.len() * (s2[0].len() - 1) / 2,
        "only {live} non-zero scores"
    );
}

/// Scoring leaves the model it scores untouched, batch-norm running
/// statistics included: the train-mode forwards of gradient criteria run on
/// a copy.
#[test]
fn scoring_has_no_side_effect_on_the_model() {
    let device = Device::Cpu;
    let data = load_data("digits", &Source::Embedded, 0).unwrap();
    // ResNet-20 has batch norms (their running statistics are buffers).
    let student = new_model("resnet20", &data, 1, &device).unwrap();
    let teacher = new_model("lenet-300-100", &data, 2, &device).unwrap();
    assert!(!student.named_buffers().is_empty());
    let before = student.tensors().unwrap();
    let prunable = prunable_names(student.config(), &ParamFilter::default());
    let kd = LossConfig::Hinton {
        temperature: 4.0,
        alpha: 0.9,
    };
    let criteria: Vec<Box<dyn prune_core::Importance>> = vec![
        Box::new(prune_core::importance::TeacherGuided::default()),
        Box::new(prune_core::importance::Snip),
        Box::new(Grasp),
        Box::new(prune_core::importance::SelfDistill),
        Box::new(prune_core::importance::SynFlow { rounds: 2 }),
    ];
    for criterion in criteria {
        let name = criterion.name();
        let s = ScoringSettings {
            kd_loss: kd,
            ..settings(1, 4)
        };
        let masks = kdprune_cli::scoring::prune_masks(
            criterion.as_ref(),
            &student,
            Some(&teacher),
            &data,
            &prunable,
            s,
            0.5,
            prune_core::Scope::Global,
            &prune_core::MaskSet::new(),
        )
        .unwrap();
        assert!(masks.pruned_count().unwrap() > 0, "{name}");
        let after = student.tensors().unwrap();
        for (n, t) in &before {
            let (a, b): (Vec<f32>, Vec<f32>) = (
                t.flatten_all().unwrap().to_vec1().unwrap(),
                after[n].flatten_all().unwrap().to_vec1().unwrap(),
            );
            assert!(a == b, "{name} changed {n}");
        }
    }
}

/// The synaptic flow replaces every other parameter by its absolute value
/// on the scoring copy; a gradient taken after it is still the gradient of
/// the model's own weights (the one a fresh context gives), as the
/// `ScoringContext` contract says.
#[test]
fn a_gradient_after_the_synaptic_flow_is_the_models_own() {
    use kdprune_cli::scoring::ModelScoring;
    use prune_core::importance::{Loss, ScoringContext};
    let device = Device::Cpu;
    let data = load_data("digits", &Source::Embedded, 0).unwrap();
    let model = new_model("resnet20", &data, 1, &device).unwrap();
    let prunable = prunable_names(model.config(), &ParamFilter::default());
    let flat = |t: &prune_core::NamedTensors| -> Vec<Vec<f32>> {
        t.values()
            .map(|v| v.flatten_all().unwrap().to_vec1().unwrap())
            .collect()
    };
    let mut fresh = ModelScoring::new(&model, None, &data, &prunable, settings(1, 4)).unwrap();
    let expected = flat(&fresh.gradient(Loss::CrossEntropy, 0).unwrap());

    let mut ctx = ModelScoring::new(&model, None, &data, &prunable, settings(1, 4)).unwrap();
    let w = ctx.weights().unwrap();
    let abs: prune_core::NamedTensors = w
        .iter()
        .map(|(n, t)| (n.clone(), t.abs().unwrap()))
        .collect();
    ctx.synaptic_flow_gradient(&abs).unwrap();
    let after = flat(&ctx.gradient(Loss::CrossEntropy, 0).unwrap());
    assert!(
        after == expected,
        "the flow's absolute values leaked into the gradient"
    );

    // Weights moved by `set_weights` stay moved across a flow.
    let halved: prune_core::NamedTensors = w
        .iter()
        .map(|(n, t)| (n.clone(), (t * 0.5).unwrap()))
        .collect();
    ctx.set_weights(&halved).unwrap();
    let moved = flat(&ctx.gradient(Loss::CrossEntropy, 0).unwrap());
    assert!(moved != expected);
    ctx.synaptic_flow_gradient(&abs).unwrap();
    assert!(flat(&ctx.gradient(Loss::CrossEntropy, 0).unwrap()) == moved);
}

/// A teacher-guided score with cross-entropy as its distillation loss
/// would be SNIP's score under another name: refused with the reason.
#[test]
fn a_teacher_criterion_with_a_cross_entropy_loss_is_refused() {
    let criterion = prune_core::importance::TeacherGuided::default();
    let err = kdprune_cli::scoring::check_inputs(&criterion, true, &settings(1, 4))
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs a distillation loss"), "{err}");
    let kd = ScoringSettings {
        kd_loss: LossConfig::Hinton {
            temperature: 4.0,
            alpha: 0.9,
        },
        ..settings(1, 4)
    };
    kdprune_cli::scoring::check_inputs(&criterion, true, &kd).unwrap();
}

/// Calibration batches far beyond the data set are refused before the
/// batch list is built (it once reserved what `--score-batches` said), and
/// the message names the largest count accepted.
#[test]
fn score_batches_far_beyond_the_data_are_refused() {
    let device = Device::Cpu;
    let data = load_data("digits", &Source::Embedded, 0).unwrap();
    let model = new_model("lenet-300-100", &data, 3, &device).unwrap();
    let prunable = prunable_names(model.config(), &ParamFilter::default());
    let n = data.split.train.len();
    for (batches, batch_size) in [(usize::MAX, 32), (1 << 40, 1 << 40)] {
        let err = scores(
            &prune_core::importance::Snip,
            &model,
            None,
            &data,
            &prunable,
            settings(batches, batch_size),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("more than 100 passes"), "{err}");
        assert!(
            err.contains(&format!("over the {n} training samples")),
            "{err}"
        );
    }
    // a usual count is accepted
    scores(
        &prune_core::importance::Snip,
        &model,
        None,
        &data,
        &prunable,
        settings(3, 32),
    )
    .unwrap();
}
