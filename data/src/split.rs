//! Seeded stratified train/test split.

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::dataset::{Dataset, Split};
use crate::error::{DataError, Result};

/// Splits `ds` class by class: the indices of each class (in ascending label order)
/// are shuffled by one `ChaCha8Rng` seeded with `seed`, and the first
/// `round(test_fraction * count)` of them go to the test set, the rest to train.
/// Both sets keep the original sample order. Same inputs, same split.
///
/// Fails with [`DataError::Invalid`] when `test_fraction` is not in `[0, 1]`.
pub fn stratified_split(ds: &Dataset, test_fraction: f64, seed: u64) -> Result<Split> {
    if !(0.0..=1.0).contains(&test_fraction) {
        return Err(DataError::Invalid(format!(
            "test fraction {test_fraction} is not in [0, 1]"
        )));
    }
    let mut by_class: BTreeMap<u8, Vec<usize>> = BTreeMap::new();
    for (i, &label) in ds.labels.iter().enumerate() {
        by_class.entry(label).or_default().push(i);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut train = Vec::with_capacity(ds.len());
    let mut test = Vec::new();
    for mut members in by_class.into_values() {
        members.shuffle(&mut rng);
        let n_test = ((test_fraction * members.len() as f64).round() as usize).min(members.len());
        test.extend_from_slice(&members[..n_test]);
        train.extend_from_slice(&members[n_test..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    Ok(Split {
        train: ds.subset(&train),
        test: ds.subset(&test),
    })
}
