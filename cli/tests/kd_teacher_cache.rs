//! The teacher-logit cache: training with the logits cached in memory or on
//! disk (written by a first run, read by a second) is bit-identical to
//! training that runs the teacher on every batch; a file that does not match
//! the run is replaced; and the cost of a distillation epoch with and without
//! the cache (printed, not asserted).

use std::path::PathBuf;

use kd_core::losses::Beta;
use kd_core::{
    FitOptions, LossConfig, NoHook, Quiet, SgdConfig, TeacherCache, TrainConfig, TrainData,
    TrainReport,
};
use kdprune_cli::data::DataView;
use kdprune_data::{digits, stratified_split, Augment, Normalization, Split};
use kdprune_models::{Model, ModelConfig};

/// The digits split (1,438 training images: batches of 100 leave a partial
/// last batch, which lands elsewhere in every shuffled epoch).
fn data() -> (Split, Normalization) {
    let split = stratified_split(&digits().unwrap(), 0.2, 5).unwrap();
    let norm = Normalization::fit(&split.train);
    (split, norm)
}

fn config(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 100,
        sgd: SgdConfig {
            lr: 0.05,
            ..SgdConfig::default()
        },
        warmup_epochs: 0,
        min_lr: 0.0,
        objective: LossConfig::CaKld {
            temperature: 4.0,
            alpha: 0.9,
            beta: Beta::Confidence,
            eps: 1e-7,
            std: Default::default(),
        }
        .into(),
        seed: 11,
    }
}

fn model(name: &str, seed: u64) -> Model {
    let cfg = ModelConfig::from_name(name, (1, 8, 8), 10).unwrap();
    Model::new(cfg, seed, &candle_core::Device::Cpu).unwrap()
}

/// Trains a fresh student under `teacher` and returns the report and the
/// bit patterns of every student tensor.
fn train(
    teacher: &Model,
    cache: TeacherCache,
    epochs: usize,
) -> (TrainReport, Vec<(String, Vec<u32>)>) {
    train_with(teacher, cache, epochs, Augment::NONE)
}

/// [`train`] with the training set augmented by `augment`.
fn train_with(
    teacher: &Model,
    cache: TeacherCache,
    epochs: usize,
    augment: Augment,
) -> (TrainReport, Vec<(String, Vec<u32>)>) {
    let (split, norm) = data();
    let student = model("lenet-300-100", 21);
    let train = DataView::new(&split.train, &norm, augment);
    let test = DataView::new(&split.test, &norm, Augment::NONE);
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
    let report = kd_core::fit(&student, Some(teacher), &td, &config(epochs), options).unwrap();
    let bits = student
        .tensors()
        .unwrap()
        .into_iter()
        .map(|(name, t)| {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (name, v.into_iter().map(f32::to_bits).collect())
        })
        .collect();
    (report, bits)
}

fn losses(report: &TrainReport) -> Vec<u64> {
    report
        .epochs
        .iter()
        .map(|e| e.train_loss.to_bits())
        .collect()
}

/// A fresh, empty directory under the system's temporary directory.
fn scratch_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "kdprune-teacher-cache-{tag}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn cache_files(dir: &PathBuf) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn cached_training_is_bit_identical_to_uncached() {
    // A convolutional teacher, and a fully connected one wide enough (800)
    // for the matrix kernels to split the sum of its second layer.
    for (name, seed) in [("lenet5", 7), ("mlp-800-64", 8)] {
        let teacher = model(name, seed);
        let (off_report, off_bits) = train(&teacher, TeacherCache::Off, 2);
        let (mem_report, mem_bits) = train(&teacher, TeacherCache::Memory, 2);
        assert_eq!(losses(&off_report), losses(&mem_report), "{name}: losses");
        assert!(
            off_bits == mem_bits,
            "{name}: memory cache changed the student"
        );

        let dir = scratch_dir(name);
        let (first_report, first_bits) = train(&teacher, TeacherCache::Disk(dir.clone()), 2);
        let files = cache_files(&dir);
        assert_eq!(files.len(), 1, "{name}: one cache file, got {files:?}");
        let written = std::fs::metadata(&files[0]).unwrap().modified().unwrap();
        let (second_report, second_bits) = train(&teacher, TeacherCache::Disk(dir.clone()), 2);
        assert_eq!(
            std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
            written,
            "{name}: the second run must read the file, not rewrite it"
        );
        for (report, bits) in [(first_report, first_bits), (second_report, second_bits)] {
            assert_eq!(losses(&off_report), losses(&report), "{name}: disk losses");
            assert!(off_bits == bits, "{name}: disk cache changed the student");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn augmented_training_bypasses_the_cache_and_is_reproducible() {
    // 8×8 digits: shifts of up to 2 pixels and flips.
    let augment = Augment { pad: 2, flip: true };
    let teacher = model("lenet5", 7);
    let dir = scratch_dir("augment");
    let (off_report, off_bits) = train_with(&teacher, TeacherCache::Off, 2, augment);
    let (disk_report, disk_bits) =
        train_with(&teacher, TeacherCache::Disk(dir.clone()), 2, augment);
    assert_eq!(losses(&off_report), losses(&disk_report));
    assert!(off_bits == disk_bits, "same seed, same augmented run");
    assert!(
        cache_files(&dir).is_empty(),
        "the teacher's logits of augmented batches must not be cached"
    );
    let (plain_report, _) = train(&teacher, TeacherCache::Off, 2);
    assert_ne!(
        losses(&plain_report),
        losses(&off_report),
        "augmentation must change what the student sees"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_cache_file_of_another_run_is_not_used() {
    let dir = scratch_dir("mismatch");
    let teacher = model("mlp-64-32", 1);
    train(&teacher, TeacherCache::Disk(dir.clone()), 1);
    // Another teacher: another key, another file.
    let other = model("mlp-64-32", 2);
    let (report, bits) = train(&other, TeacherCache::Disk(dir.clone()), 1);
    assert_eq!(cache_files(&dir).len(), 2);
    let (off_report, off_bits) = train(&other, TeacherCache::Off, 1);
    assert_eq!(losses(&off_report), losses(&report));
    assert!(off_bits == bits);
    // A damaged file under the right name is recomputed and replaced.
    for file in cache_files(&dir) {
        std::fs::write(&file, b"not a safetensors file").unwrap();
    }
    let (report, bits) = train(&other, TeacherCache::Disk(dir.clone()), 1);
    assert_eq!(losses(&off_report), losses(&report));
    assert!(off_bits == bits);
    let repaired = cache_files(&dir)
        .into_iter()
        .filter(|f| std::fs::read(f).unwrap() != b"not a safetensors file")
        .count();
    assert_eq!(repaired, 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// With a teacher much larger than the student (the paper's setting), the
/// cached logits train to the losses of a teacher run on every batch. What
/// the cache saves is measured by `scripts/fashion_mnist_table.sh`'s reports
/// (the README's KD-retraining time), not timed here.
#[test]
fn a_large_teachers_cached_logits_train_to_the_same_losses() {
    let teacher = model("mlp-1200-1200", 3);
    let (off_report, _) = train(&teacher, TeacherCache::Off, 3);
    let (cached_report, _) = train(&teacher, TeacherCache::Memory, 3);
    assert_eq!(losses(&off_report), losses(&cached_report));
}
