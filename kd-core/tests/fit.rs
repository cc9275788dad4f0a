//! kd-core's training loop on a network and data of the caller's own, with
//! no kdprune crate: it trains, it is reproducible, the teacher's logit
//! table changes nothing but the time, the hook and the progress sink see
//! every step, augmented batches reach the source with their position, and a
//! diverging loss stops the run.

use std::cell::RefCell;

use candle_core::{DType, Device, Tensor, Var};
use kd_core::{
    FitOptions, KdError, LossConfig, ModelOutput, Network, NoHook, Progress, Samples, Sgd,
    SgdConfig, StepHook, StepInfo, TeacherCache, TrainConfig, TrainData,
};

/// Logistic regression `x Wᵀ + b`, weights from a fixed pattern.
struct Logistic {
    w: Var,
    b: Var,
    /// The most rows one forward pass has seen.
    widest: std::cell::Cell<usize>,
}

impl Logistic {
    fn new(inputs: usize, classes: usize, seed: u32) -> Self {
        let dev = Device::Cpu;
        let v: Vec<f32> = (0..inputs * classes)
            .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 200) as f32 / 1000.0 - 0.1)
            .collect();
        Self {
            w: Var::from_vec(v, (classes, inputs), &dev).unwrap(),
            b: Var::zeros(classes, DType::F32, &dev).unwrap(),
            widest: std::cell::Cell::new(0),
        }
    }

    fn bits(&self) -> Vec<u32> {
        let mut v: Vec<f32> = self.w.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        v.extend(self.b.as_tensor().to_vec1::<f32>().unwrap());
        v.into_iter().map(f32::to_bits).collect()
    }
}

impl Network for Logistic {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> candle_core::Result<ModelOutput> {
        self.widest.set(self.widest.get().max(xs.dim(0)?));
        let logits = xs
            .matmul(&self.w.as_tensor().t()?)?
            .broadcast_add(self.b.as_tensor())?;
        Ok(ModelOutput::logits(logits))
    }
    fn named_vars(&self) -> Vec<(String, Var)> {
        vec![
            ("fc.bias".into(), self.b.clone()),
            ("fc.weight".into(), self.w.clone()),
        ]
    }
    fn device(&self) -> &Device {
        self.w.device()
    }
}

/// `n` points of a fixed pattern labelled by their largest coordinate among
/// the first `classes`; with `augment`, training batches are shifted by
/// `epoch + step` (and record the positions asked for).
struct Points {
    xs: Tensor,
    ys: Tensor,
    augment: bool,
    asked: RefCell<Vec<(u64, usize, usize)>>,
}

fn points(n: usize, inputs: usize, classes: usize, offset: u32, augment: bool) -> Points {
    let v: Vec<f32> = (0..n * inputs)
        .map(|i| {
            ((((i as u32 + offset).wrapping_mul(2_246_822_519)) >> 7) % 2000) as f32 / 1000.0 - 1.0
        })
        .collect();
    let xs = Tensor::from_vec(v, (n, inputs), &Device::Cpu).unwrap();
    let ys = xs.narrow(1, 0, classes).unwrap().argmax(1).unwrap();
    Points {
        xs,
        ys,
        augment,
        asked: RefCell::new(Vec::new()),
    }
}

impl Samples for Points {
    fn len(&self) -> usize {
        self.ys.dims()[0]
    }
    fn batch(&self, idx: &[usize], device: &Device) -> kd_core::Result<(Tensor, Tensor)> {
        let i = Tensor::new(idx.iter().map(|&i| i as u32).collect::<Vec<_>>(), device)?;
        Ok((self.xs.index_select(&i, 0)?, self.ys.index_select(&i, 0)?))
    }
    fn train_batch(
        &self,
        idx: &[usize],
        seed: u64,
        epoch: usize,
        step: usize,
        device: &Device,
    ) -> kd_core::Result<(Tensor, Tensor)> {
        let (xs, ys) = self.batch(idx, device)?;
        if !self.augment {
            return Ok((xs, ys));
        }
        self.asked.borrow_mut().push((seed, epoch, step));
        Ok(((xs + 0.01 * (epoch + step) as f64)?, ys))
    }
    fn is_augmented(&self) -> bool {
        self.augment
    }
}

/// Counts what the loop reports.
#[derive(Default)]
struct Counts {
    epochs_started: usize,
    steps: usize,
    ends: usize,
    epochs_ended: usize,
}

impl Progress for Counts {
    fn start_epoch(&mut self, _epoch: usize, _epochs: usize, _steps: usize) {
        self.epochs_started += 1;
    }
    fn step(&mut self, _loss: f32) {
        self.steps += 1;
    }
    fn end_steps(&mut self) {
        self.ends += 1;
    }
    fn end_epoch(&mut self, _stats: &kd_core::EpochStats, _epochs: usize) {
        self.epochs_ended += 1;
    }
}

/// Records the steps it sees and the optimizer's momentum of the weight.
#[derive(Default)]
struct Recorder {
    steps: Vec<usize>,
    had_momentum: bool,
}

impl StepHook for Recorder {
    fn after_step(
        &mut self,
        vars: &[(String, Var)],
        info: &StepInfo,
        optimizer: &mut Sgd,
    ) -> kd_core::Result<()> {
        assert_eq!(vars.len(), 2);
        self.steps.push(info.step);
        self.had_momentum |= optimizer.momentum_buffer("fc.weight").is_some();
        Ok(())
    }
}

fn config(epochs: usize, objective: kd_core::Objective) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 32,
        sgd: SgdConfig {
            lr: 0.1,
            ..SgdConfig::default()
        },
        objective,
        seed: 5,
        ..TrainConfig::default()
    }
}

fn fit(
    student: &Logistic,
    teacher: Option<&Logistic>,
    train: &Points,
    cfg: &TrainConfig,
    cache: TeacherCache,
    hook: &mut dyn StepHook,
    progress: &mut dyn Progress,
) -> kd_core::Result<kd_core::TrainReport> {
    let test = points(200, 8, 4, 99, false);
    let data = TrainData { train, test: &test };
    let options = FitOptions {
        hook,
        progress,
        teacher_cache: cache,
        resume: None,
        on_epoch: None,
        save_every: None,
    };
    kd_core::fit(
        student,
        teacher.map(|t| t as &dyn Network),
        &data,
        cfg,
        options,
    )
}

#[test]
fn a_network_of_ones_own_trains_reproducibly() {
    let train = points(500, 8, 4, 0, false);
    let cfg = config(4, LossConfig::CrossEntropy.into());
    let (a, b) = (Logistic::new(8, 4, 1), Logistic::new(8, 4, 1));
    let mut counts = Counts::default();
    let mut hook = Recorder::default();
    let ra = fit(
        &a,
        None,
        &train,
        &cfg,
        TeacherCache::Memory,
        &mut hook,
        &mut counts,
    )
    .unwrap();
    let rb = fit(
        &b,
        None,
        &train,
        &cfg,
        TeacherCache::Memory,
        &mut NoHook,
        &mut kd_core::Quiet,
    )
    .unwrap();
    assert_eq!(a.bits(), b.bits());
    assert!(ra.epochs[3].train_loss < ra.epochs[0].train_loss, "{ra:?}");
    assert!(ra.final_accuracy().unwrap() > 0.6, "{ra:?}");
    assert_eq!(
        ra.epochs[3].train_loss.to_bits(),
        rb.epochs[3].train_loss.to_bits()
    );
    // 500 samples at batch 32: 16 steps per epoch.
    assert_eq!(hook.steps, (0..64).collect::<Vec<_>>());
    assert!(hook.had_momentum);
    assert_eq!(
        (
            counts.epochs_started,
            counts.steps,
            counts.ends,
            counts.epochs_ended
        ),
        (4, 64, 4, 4)
    );
}

#[test]
fn distillation_is_the_same_with_and_without_the_logit_table() {
    let train = points(500, 8, 4, 0, false);
    let teacher = Logistic::new(8, 4, 9);
    fit(
        &teacher,
        None,
        &train,
        &config(3, LossConfig::CrossEntropy.into()),
        TeacherCache::Off,
        &mut NoHook,
        &mut kd_core::Quiet,
    )
    .unwrap();
    let kd = config(
        2,
        LossConfig::Hinton {
            temperature: 4.0,
            alpha: 0.9,
        }
        .into(),
    );
    let run = |cache| {
        let s = Logistic::new(8, 4, 2);
        fit(
            &s,
            Some(&teacher),
            &train,
            &kd,
            cache,
            &mut NoHook,
            &mut kd_core::Quiet,
        )
        .unwrap();
        s.bits()
    };
    assert_eq!(run(TeacherCache::Off), run(TeacherCache::Memory));
    // The objective needs the teacher.
    let e = fit(
        &Logistic::new(8, 4, 2),
        None,
        &train,
        &kd,
        TeacherCache::Memory,
        &mut NoHook,
        &mut kd_core::Quiet,
    )
    .unwrap_err();
    assert!(e.to_string().contains("needs a teacher"), "{e}");
}

/// A batch size far above the training set does not size the teacher's
/// padding: the teacher never sees more rows than there are samples, and
/// the cached and uncached runs still agree bit for bit.
#[test]
fn a_huge_batch_size_does_not_size_the_teacher_padding() {
    let train = points(100, 8, 4, 0, false);
    let mut kd = config(
        2,
        LossConfig::Hinton {
            temperature: 2.0,
            alpha: 0.5,
        }
        .into(),
    );
    kd.batch_size = 1_000_000_000;
    let run = |cache| {
        let (s, teacher) = (Logistic::new(8, 4, 2), Logistic::new(8, 4, 9));
        fit(
            &s,
            Some(&teacher),
            &train,
            &kd,
            cache,
            &mut NoHook,
            &mut kd_core::Quiet,
        )
        .unwrap();
        assert_eq!(teacher.widest.get(), 100);
        s.bits()
    };
    assert_eq!(run(TeacherCache::Off), run(TeacherCache::Memory));
}

#[test]
fn augmented_batches_are_drawn_at_their_position() {
    let train = points(100, 8, 4, 0, true);
    let teacher = Logistic::new(8, 4, 9);
    let kd = config(
        2,
        LossConfig::Hinton {
            temperature: 2.0,
            alpha: 0.5,
        }
        .into(),
    );
    fit(
        &Logistic::new(8, 4, 2),
        Some(&teacher),
        &train,
        &kd,
        TeacherCache::Memory,
        &mut NoHook,
        &mut kd_core::Quiet,
    )
    .unwrap();
    // 100 samples at batch 32: 4 steps per epoch, each asked once with the run seed.
    let asked = train.asked.borrow().clone();
    let expected: Vec<(u64, usize, usize)> = (0..2)
        .flat_map(|e| (0..4).map(move |s| (5, e, s)))
        .collect();
    assert_eq!(asked, expected);
}

#[test]
fn a_diverging_loss_stops_the_run_and_the_progress() {
    let train = points(200, 8, 4, 0, false);
    let mut cfg = config(3, LossConfig::CrossEntropy.into());
    cfg.sgd.lr = 1e30;
    let mut counts = Counts::default();
    let e = fit(
        &Logistic::new(8, 4, 1),
        None,
        &train,
        &cfg,
        TeacherCache::Memory,
        &mut NoHook,
        &mut counts,
    )
    .unwrap_err();
    assert!(matches!(e, KdError::NonFiniteLoss { .. }), "{e}");
    assert_eq!(counts.epochs_started, counts.ends, "the bar is closed");
    assert!(cfg.validate().is_ok());
    let bad = TrainConfig {
        batch_size: 0,
        ..cfg
    };
    assert!(bad.validate().is_err());
}

/// A run continued from the resume point of its second epoch (weights,
/// momentum, step, figures) ends with the same bits as the run that was
/// never interrupted, from a student that started elsewhere.
#[test]
fn a_resumed_run_equals_the_uninterrupted_one() {
    let train = points(300, 8, 4, 0, false);
    let teacher = Logistic::new(8, 4, 9);
    let mut cfg = config(
        4,
        LossConfig::Hinton {
            temperature: 2.0,
            alpha: 0.5,
        }
        .into(),
    );
    cfg.sgd.momentum = 0.9;
    let test = points(200, 8, 4, 99, false);
    let data = TrainData {
        train: &train,
        test: &test,
    };
    let run = |student: &Logistic, resume: Option<kd_core::ResumePoint>, every: Option<usize>| {
        let mut points = Vec::new();
        let mut save = |p: &kd_core::ResumePoint| {
            points.push(p.clone());
            Ok(())
        };
        let report = kd_core::fit(
            student,
            Some(&teacher as &dyn Network),
            &data,
            &cfg,
            FitOptions {
                hook: &mut NoHook,
                progress: &mut kd_core::Quiet,
                teacher_cache: TeacherCache::Memory,
                resume,
                on_epoch: Some(&mut save),
                save_every: every,
            },
        )
        .unwrap();
        (report, points)
    };
    let whole = Logistic::new(8, 4, 2);
    let (report, points) = run(&whole, None, None);
    // a point after every epoch but the last
    assert_eq!(
        points.iter().map(|p| p.epochs_done).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(
        !points[1].optimizer.is_empty(),
        "momentum is part of the point"
    );
    let resumed = Logistic::new(8, 4, 77);
    let (report2, later) = run(&resumed, Some(points[1].clone()), None);
    assert_eq!(whole.bits(), resumed.bits());
    assert_eq!(later.len(), 1);
    let accuracies = |r: &kd_core::TrainReport| -> Vec<u64> {
        r.epochs.iter().map(|e| e.test_accuracy.to_bits()).collect()
    };
    assert_eq!(accuracies(&report), accuracies(&report2));
    // without the momentum the continuation differs (the test can fail)
    let mut no_momentum = points[1].clone();
    no_momentum.optimizer.clear();
    let other = Logistic::new(8, 4, 77);
    run(&other, Some(no_momentum), None);
    assert_ne!(whole.bits(), other.bits());

    // every 4 steps: points inside epochs too (300 samples at batch 32 are
    // 10 steps an epoch); continuing from one inside the third epoch (with
    // its running loss sums) gives the same bits and figures
    let (report3, points) = run(&Logistic::new(8, 4, 2), None, Some(4));
    assert_eq!(accuracies(&report3), accuracies(&report));
    let inside = points
        .iter()
        .find(|p| p.epochs_done == 2 && p.batches_done > 0)
        .expect("a point inside the third epoch")
        .clone();
    assert_eq!((inside.batches_done, inside.step), (4, 24));
    let from_inside = Logistic::new(8, 4, 5);
    let (report4, _) = run(&from_inside, Some(inside), None);
    assert_eq!(whole.bits(), from_inside.bits());
    let losses = |r: &kd_core::TrainReport| -> Vec<u64> {
        r.epochs.iter().map(|e| e.train_loss.to_bits()).collect()
    };
    assert_eq!(losses(&report4), losses(&report));
}
