//! Training-time augmentation: random crop of the zero-padded image and random
//! horizontal flip, drawn from a seeded `ChaCha8Rng` and applied while a batch is
//! built (the dataset itself is never modified).

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::normalize::Normalization;

/// Salt of the augmentation stream, so that it is independent of the split and
/// batch-order streams drawn from the same run seed.
pub const AUGMENT_SALT: u64 = 0x6175_676d_656e_7421;

/// What to draw for each training image.
///
/// With padding `p`, the image is padded with `p` zero pixels on every side and
/// an `H x W` window is cut at a uniformly drawn offset `(dy, dx)` in
/// `[-p, p]²`; with `flip`, the window is mirrored left-right with probability
/// 1/2. This is torchvision's `RandomCrop(size, padding=p)` followed by
/// `RandomHorizontalFlip()`, applied before normalisation (so a padded pixel
/// becomes `(0 - mean[c]) / std[c]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Augment {
    /// Zero padding on each side, in pixels (the largest shift).
    pub pad: usize,
    /// Whether to mirror half of the images left-right.
    pub flip: bool,
}

impl Augment {
    /// No augmentation: every [`Placement`] is the identity.
    pub const NONE: Augment = Augment {
        pad: 0,
        flip: false,
    };
    /// The standard CIFAR / TinyImageNet recipe: 4-pixel padding and flips.
    pub const CROP_FLIP: Augment = Augment { pad: 4, flip: true };

    /// Whether every draw is the identity (`pad = 0` and no flip).
    pub fn is_identity(&self) -> bool {
        self.pad == 0 && !self.flip
    }

    /// `n` placements drawn from `rng`, one per sample: for each sample in turn,
    /// `dy` then `dx` uniform in `[-pad, pad]`, then (only when `flip` is set) a
    /// fair coin for the mirror.
    pub fn draw<R: Rng>(&self, rng: &mut R, n: usize) -> Vec<Placement> {
        let p = self.pad as isize;
        // rand samples usize, not isize: draw in 0..=2p and centre.
        let span = 2 * self.pad;
        (0..n)
            .map(|_| {
                let dy = rng.random_range(0..=span) as isize - p;
                let dx = rng.random_range(0..=span) as isize - p;
                let flip = self.flip && rng.random::<bool>();
                Placement { dy, dx, flip }
            })
            .collect()
    }
}

/// Where the output window of one sample comes from.
///
/// Output pixel `(c, y, x)` is the source pixel `(c, y + dy, x' + dx)` with
/// `x' = W - 1 - x` when `flip` is set and `x' = x` otherwise, or zero when that
/// source pixel lies outside the image. So the content moves by `(-dy, -dx)`:
/// `dy = 2` shows rows 2.. at the top and two zero rows at the bottom.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// Vertical offset of the window in the source image.
    pub dy: isize,
    /// Horizontal offset of the window in the source image.
    pub dx: isize,
    /// Whether the window is mirrored left-right.
    pub flip: bool,
}

impl Placement {
    /// The placement that copies the image unchanged.
    pub const IDENTITY: Placement = Placement {
        dy: 0,
        dx: 0,
        flip: false,
    };
}

/// An [`Augment`] with its seed: the draws of batch `b` of epoch `e` are a
/// function of `(seed, e, b)` only, so a run can be replayed batch by batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Augmenter {
    /// What to draw.
    pub augment: Augment,
    /// The run seed.
    pub seed: u64,
}

impl Augmenter {
    /// An augmenter drawing `augment` from `seed`.
    pub fn new(augment: Augment, seed: u64) -> Self {
        Augmenter { augment, seed }
    }

    /// The RNG seed of batch `batch` of epoch `epoch`: SplitMix64 finalisations of
    /// `seed ^ AUGMENT_SALT`, folded with the epoch, then with the batch, so that
    /// nearby `(epoch, batch)` pairs get unrelated seeds.
    pub fn batch_seed(&self, epoch: usize, batch: usize) -> u64 {
        let s = splitmix64(self.seed ^ AUGMENT_SALT);
        let s = splitmix64(s ^ epoch as u64);
        splitmix64(s ^ batch as u64)
    }

    /// The placements of the `n` samples of batch `batch` of epoch `epoch`.
    pub fn placements(&self, epoch: usize, batch: usize, n: usize) -> Vec<Placement> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.batch_seed(epoch, batch));
        self.augment.draw(&mut rng, n)
    }

    /// [`Dataset::batch_augmented`] of `ds` with the seed of batch `batch` of
    /// epoch `epoch` ([`Augmenter::batch_seed`]).
    pub fn batch(
        &self,
        ds: &Dataset,
        idx: &[usize],
        norm: &Normalization,
        epoch: usize,
        batch: usize,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        ds.batch_augmented(
            idx,
            norm,
            &self.augment,
            self.batch_seed(epoch, batch),
            device,
        )
    }
}

impl Dataset {
    /// Like [`Dataset::batch`], with each image augmented: the placements are
    /// `aug.draw(ChaCha8Rng::seed_from_u64(rng_seed), idx.len())`, in batch order,
    /// and applied by [`Dataset::batch_placed`]. Same arguments, same tensors.
    pub fn batch_augmented(
        &self,
        idx: &[usize],
        norm: &Normalization,
        aug: &Augment,
        rng_seed: u64,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let mut rng = ChaCha8Rng::seed_from_u64(rng_seed);
        let placements = aug.draw(&mut rng, idx.len());
        self.batch_placed(idx, norm, &placements, device)
    }

    /// The samples at `idx`, sample `i` cut by `placements[i]` (see [`Placement`]),
    /// then normalised as in [`Dataset::batch`]: f32 images `[B, C, H, W]`, u32
    /// labels `[B]`. A pixel outside the source image has raw value 0.
    ///
    /// Fails like [`Dataset::batch`], and with [`DataError::Mismatch`] when there
    /// is not one placement per index.
    pub fn batch_placed(
        &self,
        idx: &[usize],
        norm: &Normalization,
        placements: &[Placement],
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        if placements.len() != idx.len() {
            return Err(DataError::Mismatch(format!(
                "{} placements for a batch of {} samples",
                placements.len(),
                idx.len()
            )));
        }
        let tables = self.prepare_batch(idx, norm)?;
        let (h, w) = (self.height, self.width);
        let plane = h * w;
        let d = self.sample_dim();
        let mut x = Vec::with_capacity(idx.len() * d);
        let mut y = Vec::with_capacity(idx.len());
        for (&i, pl) in idx.iter().zip(placements) {
            let sample = &self.images[i * d..(i + 1) * d];
            for (c, table) in tables.iter().enumerate() {
                let src = &sample[c * plane..(c + 1) * plane];
                let zero = table[0];
                for oy in 0..h {
                    let sy = oy as isize + pl.dy;
                    if sy < 0 || sy >= h as isize {
                        x.extend(std::iter::repeat_n(zero, w));
                        continue;
                    }
                    let row = &src[sy as usize * w..(sy as usize + 1) * w];
                    x.extend((0..w).map(|ox| {
                        let xs = if pl.flip { w - 1 - ox } else { ox };
                        let sx = xs as isize + pl.dx;
                        if sx < 0 || sx >= w as isize {
                            zero
                        } else {
                            table[row[sx as usize] as usize]
                        }
                    }));
                }
            }
            y.push(u32::from(self.labels[i]));
        }
        let b = idx.len();
        let x = Tensor::from_vec(x, (b, self.channels, h, w), device)?;
        let y = Tensor::from_vec(y, b, device)?;
        Ok((x, y))
    }
}

/// The SplitMix64 finaliser (Steele, Lea & Flood 2014): a bijection of u64 that
/// mixes every input bit into every output bit.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
