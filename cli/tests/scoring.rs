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
