//! Datasets by name, where their files come from, and the view kd-core's
//! training loop takes of them ([`DataView`], a [`kd_core::Samples`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use kd_core::teacher_cache::fnv1a;
use kd_core::{KdError, Samples, TrainData};
use kdprune_data::{Augment, Augmenter, Dataset, DatasetName, HubOptions, Normalization, Split};
use serde::{Deserialize, Serialize};

/// Salts of the seeds of [`Data::limit_train`]'s and [`Data::limit_test`]'s
/// shuffles.
const TRAIN_SALT: u64 = 0x7A1E_5B5E_7A1E_5B5E;
const TEST_SALT: u64 = 0x7E57_5B5E_7E57_5B5E;

/// The first `n` samples of a shuffle of `set` seeded by `seed`, in their
/// order in `set`; `flag` names the setting in the error.
fn seeded_subset(set: &Dataset, n: usize, seed: u64, flag: &str) -> Result<Dataset> {
    let len = set.len();
    anyhow::ensure!(
        (1..=len).contains(&n),
        "{flag} {n}: the {} set has {len} samples",
        set.name
    );
    let mut idx = kd_core::Batcher::new(len, len, true, seed)
        .epoch(0)
        .remove(0);
    idx.truncate(n);
    idx.sort_unstable();
    Ok(set.subset(&idx))
}

/// A dataset split with its normalisation (fitted on the training part).
pub struct Data {
    /// Which dataset.
    pub name: DatasetName,
    /// Its training and test sets.
    pub split: Split,
    /// Per-channel statistics of the training set.
    pub norm: Normalization,
}

impl Data {
    /// `(C, H, W)` of one sample.
    pub fn input_shape(&self) -> (usize, usize, usize) {
        let t = &self.split.train;
        (t.channels, t.height, t.width)
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.split.train.num_classes
    }

    /// Keeps `n` samples of the training set — the first `n` of a shuffle
    /// seeded by `seed`, in their original order: a budget for slow networks
    /// on CPU. The normalisation stays the whole training set's, so the
    /// model evaluates as any other.
    pub fn limit_train(&mut self, n: usize, seed: u64) -> Result<()> {
        self.split.train =
            seeded_subset(&self.split.train, n, seed ^ TRAIN_SALT, "--train-samples")?;
        Ok(())
    }

    /// Keeps `n` samples of the test set, chosen as [`Data::limit_train`]
    /// chooses (another salt): a quicker, noisier test (standard error
    /// about `sqrt(p(1-p)/n)`).
    pub fn limit_test(&mut self, n: usize, seed: u64) -> Result<()> {
        self.split.test = seeded_subset(&self.split.test, n, seed ^ TEST_SALT, "--test-samples")?;
        Ok(())
    }

    /// The training set (batches augmented by `augment`) and the test set, as
    /// the training loop sees them.
    pub fn views(&self, augment: Augment) -> Views<'_> {
        Views {
            train: DataView::new(&self.split.train, &self.norm, augment),
            test: self.test_view(),
        }
    }

    /// The test set as the training loop sees it.
    pub fn test_view(&self) -> DataView<'_> {
        DataView::new(&self.split.test, &self.norm, Augment::NONE)
    }
}

/// A training and a test view, to hand to [`kd_core::fit`] as
/// [`Views::train_data`].
pub struct Views<'a> {
    /// The training set.
    pub train: DataView<'a>,
    /// The test set.
    pub test: DataView<'a>,
}

impl Views<'_> {
    /// What [`kd_core::fit`] trains and evaluates on.
    pub fn train_data(&self) -> TrainData<'_> {
        TrainData {
            train: &self.train,
            test: &self.test,
        }
    }
}

/// A dataset, normalised, with its training augmentation: the
/// [`kd_core::Samples`] of kdprune's datasets.
#[derive(Clone, Copy)]
pub struct DataView<'a> {
    /// The samples.
    pub ds: &'a Dataset,
    /// Their normalisation.
    pub norm: &'a Normalization,
    /// The augmentation of training batches (drawn from the run seed, the
    /// epoch and the batch, [`Augmenter`]).
    pub augment: Augment,
}

impl<'a> DataView<'a> {
    /// The view of `ds` normalised by `norm`, training batches augmented by
    /// `augment`.
    pub fn new(ds: &'a Dataset, norm: &'a Normalization, augment: Augment) -> Self {
        Self { ds, norm, augment }
    }
}

impl Samples for DataView<'_> {
    fn len(&self) -> usize {
        self.ds.len()
    }

    fn batch(&self, idx: &[usize], device: &Device) -> kd_core::Result<(Tensor, Tensor)> {
        self.ds
            .batch(idx, self.norm, device)
            .map_err(KdError::external)
    }

    fn train_batch(
        &self,
        idx: &[usize],
        seed: u64,
        epoch: usize,
        step: usize,
        device: &Device,
    ) -> kd_core::Result<(Tensor, Tensor)> {
        if self.augment.is_identity() {
            return self.batch(idx, device);
        }
        Augmenter::new(self.augment, seed)
            .batch(self.ds, idx, self.norm, epoch, step, device)
            .map_err(KdError::external)
    }

    fn is_augmented(&self) -> bool {
        !self.augment.is_identity()
    }

    /// The dataset's name, sample count and shape, pixel range, a hash of
    /// its pixels and the normalisation (bit patterns).
    fn fingerprint(&self) -> Option<String> {
        let ds = self.ds;
        let norm: Vec<String> = self
            .norm
            .mean
            .iter()
            .chain(&self.norm.std)
            .map(|v| format!("{:08x}", v.to_bits()))
            .collect();
        Some(format!(
            "dataset={:?} samples={} shape={}x{}x{} max={:08x} pixels={:016x} norm={}",
            ds.name,
            ds.len(),
            ds.channels,
            ds.height,
            ds.width,
            ds.max_value.to_bits(),
            fnv1a(&ds.images),
            norm.join(","),
        ))
    }
}

/// Training-set augmentation as a user picks it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AugmentChoice {
    /// `crop-flip` for the natural-image datasets (CIFAR-10/100,
    /// TinyImageNet), `none` for digits and the MNISTs (whose digits and
    /// garments are centred and not mirror-symmetric in meaning).
    #[default]
    Auto,
    /// No augmentation.
    None,
    /// Random crop from 4-pixel zero padding and random horizontal flip.
    CropFlip,
}

impl AugmentChoice {
    /// The augmentation for dataset `name`.
    pub fn resolve(self, name: DatasetName) -> Augment {
        match self {
            AugmentChoice::None => Augment::NONE,
            AugmentChoice::CropFlip => Augment::CROP_FLIP,
            AugmentChoice::Auto => match name {
                DatasetName::Cifar10 | DatasetName::Cifar100 | DatasetName::TinyImageNet => {
                    Augment::CROP_FLIP
                }
                DatasetName::Digits | DatasetName::Mnist | DatasetName::FashionMnist => {
                    Augment::NONE
                }
            },
        }
    }
}

/// Where a dataset's files come from.
#[derive(Clone, Debug, Default)]
pub enum Source {
    /// No files: only the built-in `digits` loads from here.
    #[default]
    Embedded,
    /// The published files in this folder.
    Dir(PathBuf),
    /// The dataset's Hugging Face Hub repository, through the hf-hub cache.
    Hub(HubOptions),
}

impl Source {
    /// From the data settings: the Hub (with its cache, revision and offline
    /// switches) or a folder.
    pub fn new(data_dir: Option<&Path>, hub: Option<HubOptions>) -> Self {
        match (hub, data_dir) {
            (Some(options), _) => Source::Hub(options),
            (None, Some(dir)) => Source::Dir(dir.to_path_buf()),
            (None, None) => Source::Embedded,
        }
    }
}

/// The Hub options of `--hub` and its flags (the cache folder, a revision,
/// offline), offline also when `HF_HUB_OFFLINE` says so.
pub fn hub_options(
    cache_dir: Option<PathBuf>,
    revision: Option<String>,
    offline: bool,
) -> HubOptions {
    let env = HubOptions::from_env();
    HubOptions {
        cache_dir,
        offline: offline || env.offline,
        revision,
    }
}

/// Loads a dataset by name (the built-in `digits` needs no folder); `seed`
/// picks the split of datasets without an official one (digits).
pub fn load_data(dataset: &str, source: &Source, seed: u64) -> Result<Data> {
    let name: DatasetName = dataset.parse()?;
    let split = match source {
        Source::Embedded => kdprune_data::load(name, None, seed),
        Source::Dir(dir) => kdprune_data::load(name, Some(dir), seed),
        Source::Hub(options) => kdprune_data::load_from_hub(name, options),
    }
    .with_context(|| match source {
        Source::Hub(_) => format!("cannot load dataset `{dataset}` from the Hub"),
        _ => format!("cannot load dataset `{dataset}`"),
    })?;
    let norm = Normalization::fit(&split.train);
    Ok(Data { name, split, norm })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits() -> Data {
        load_data("digits", &Source::Embedded, 0).unwrap()
    }

    #[test]
    fn limit_train_keeps_a_seeded_subset_in_order_and_the_normalisation() {
        let full = digits();
        let d = full.split.train.sample_dim();
        let mut a = digits();
        a.limit_train(100, 3).unwrap();
        assert_eq!(a.split.train.len(), 100);
        assert_eq!(a.split.test.len(), full.split.test.len());
        // every kept sample is one of the full set's, in the full set's order
        let mut at = 0;
        for i in 0..100 {
            let img = &a.split.train.images[i * d..(i + 1) * d];
            while &full.split.train.images[at * d..(at + 1) * d] != img {
                at += 1;
                assert!(at < full.split.train.len(), "sample {i} not in order");
            }
            assert_eq!(a.split.train.labels[i], full.split.train.labels[at]);
            at += 1;
        }
        assert_eq!(a.norm, full.norm);
        // the same seed keeps the same samples, another seed others
        let mut b = digits();
        b.limit_train(100, 3).unwrap();
        assert_eq!(a.split.train.images, b.split.train.images);
        let mut c = digits();
        c.limit_train(100, 4).unwrap();
        assert_ne!(a.split.train.images, c.split.train.images);
        // the whole set is the whole set
        let mut all = digits();
        all.limit_train(full.split.train.len(), 3).unwrap();
        assert_eq!(all.split.train.images, full.split.train.images);
    }

    #[test]
    fn limit_test_keeps_other_samples_than_limit_train_would() {
        let full = digits();
        let mut d = digits();
        d.limit_test(50, 3).unwrap();
        assert_eq!(d.split.test.len(), 50);
        assert_eq!(d.split.train.images, full.split.train.images);
        let mut again = digits();
        again.limit_test(50, 3).unwrap();
        assert_eq!(d.split.test.images, again.split.test.images);
        // the test shuffle is not the training one's on a set of that size
        let train_like = seeded_subset(&full.split.test, 50, 3 ^ TRAIN_SALT, "x").unwrap();
        assert_ne!(d.split.test.images, train_like.images);
    }

    #[test]
    fn limits_refuse_zero_and_more_than_the_set() {
        let mut d = digits();
        let (train, test) = (d.split.train.len(), d.split.test.len());
        for n in [0, train + 1, usize::MAX] {
            let err = d.limit_train(n, 0).unwrap_err().to_string();
            assert!(err.contains(&format!("--train-samples {n}")), "{err}");
            assert!(err.contains(&format!("has {train} samples")), "{err}");
        }
        for n in [0, test + 1] {
            let err = d.limit_test(n, 0).unwrap_err().to_string();
            assert!(err.contains(&format!("--test-samples {n}")), "{err}");
            assert!(err.contains(&format!("has {test} samples")), "{err}");
        }
    }
}
