//! Seeded mini-batch index generation: the batch order of every training run.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Cuts `0..len` into batches of `batch_size` indices, epoch by epoch.
#[derive(Clone, Debug)]
pub struct Batcher {
    len: usize,
    batch_size: usize,
    shuffle: bool,
    seed: u64,
}

impl Batcher {
    /// A batcher over `len` samples. A `batch_size` of 0 is treated as 1.
    pub fn new(len: usize, batch_size: usize, shuffle: bool, seed: u64) -> Self {
        Batcher {
            len,
            batch_size: batch_size.max(1),
            shuffle,
            seed,
        }
    }

    /// The index batches of epoch `epoch`, every index in `0..len` exactly once.
    /// Without shuffle they are in order; with shuffle the order is a permutation
    /// drawn from a `ChaCha8Rng` seeded with `seed` on stream `epoch`, so epochs
    /// differ but each is reproducible. The last batch holds the remainder
    /// (`len % batch_size` indices) when `batch_size` does not divide `len`.
    pub fn epoch(&self, epoch: usize) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.len).collect();
        if self.shuffle {
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
            // A separate ChaCha stream per epoch: independent permutations from one seed.
            rng.set_stream(epoch as u64);
            order.shuffle(&mut rng);
        }
        order
            .chunks(self.batch_size)
            .map(<[usize]>::to_vec)
            .collect()
    }

    /// Batches per epoch: `ceil(len / batch_size)`.
    pub fn num_batches(&self) -> usize {
        self.len.div_ceil(self.batch_size)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no sample (and so no batch).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Indices per batch (the last one may hold fewer).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
}
