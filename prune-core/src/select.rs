//! Turning importance scores into masks: exact-count selection of the
//! lowest-scored weights, globally or inside each tensor.
//!
//! Rule: with `n` scored weights and sparsity `s`, exactly `k = round(s·n)`
//! weights (rounded half away from zero) get mask 0, namely the `k` lowest in
//! the total order *(score, tensor name, flat row-major index)*. Scores are
//! compared as `f32`; `-0.0` equals `0.0`; `±∞` are ordered normally; NaN is
//! rejected with [`PruneError::NonFinite`].
//!
//! Layer-wise versus global pruning is a choice of selection, not of
//! criterion: layer-wise magnitude pruning is
//! `per_layer(&importance::magnitude(&w)?, s)`, global magnitude pruning
//! `global(&importance::magnitude(&w)?, s)`; [`Scope`] names the two for configs.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device, Shape, Tensor};

use crate::mask::check_shape;
use crate::{MaskSet, PruneError, Result, Scores};

/// Fails with [`PruneError::InvalidSparsity`] unless `s` is finite and in `[0, 1)`.
pub fn check_sparsity(s: f64) -> Result<()> {
    if s.is_finite() && (0.0..1.0).contains(&s) {
        Ok(())
    } else {
        Err(PruneError::InvalidSparsity(s))
    }
}

/// Number of weights pruned out of `n` at sparsity `s`: `round(s·n)`, half
/// away from zero, at most `n`.
pub fn prune_count(n: usize, sparsity: f64) -> usize {
    ((sparsity * n as f64).round() as usize).min(n)
}

/// One global threshold over all tensors of `scores` together: exactly
/// `round(s·n)` of the `n` scores get mask 0, the lowest ones, ties broken by
/// tensor name (map order) and then flat index. Masks are `f32` tensors on the
/// score tensors' devices.
pub fn global(scores: &Scores, sparsity: f64) -> Result<MaskSet> {
    global_within(scores, &MaskSet::new(), sparsity)
}

/// [`global`] restricted to the weights `current` still keeps: the
/// coordinates `current` prunes (mask 0) stay pruned, and the lowest-scored
/// kept weights are added until exactly `max(round(s·n), already pruned)` of
/// the `n` weights are pruned, `n` counting all weights of `scores`.
///
/// This is the step of iterative methods (IMP, SynFlow, COLT): prune to a
/// cumulative target by one global threshold over the remaining weights,
/// never regrowing. Ties among kept weights follow the rule of [`global`].
/// Every mask of `current` must name a tensor of `scores` with its shape;
/// tensors without a mask count as fully kept.
pub fn global_within(scores: &Scores, current: &MaskSet, sparsity: f64) -> Result<MaskSet> {
    let (host, already) = gather_within(scores, current, sparsity)?;
    let n: usize = host.iter().map(|h| h.keys.len()).sum();
    select_lowest(host, prune_count(n, sparsity).max(already.iter().sum()))
}

/// [`per_layer`] restricted to the weights `current` still keeps: in each
/// tensor `t`, the coordinates `current` prunes stay pruned and the
/// lowest-scored kept weights are added until exactly
/// `max(round(s·n_t), already pruned in t)` are pruned. Ties follow the rule
/// of [`global`] inside the tensor. Every mask of `current` must name a
/// tensor of `scores` with its shape; tensors without a mask count as fully kept.
pub fn per_layer_within(scores: &Scores, current: &MaskSet, sparsity: f64) -> Result<MaskSet> {
    let (host, already) = gather_within(scores, current, sparsity)?;
    let mut masks = MaskSet::new();
    for (h, already) in host.into_iter().zip(already) {
        let k = prune_count(h.keys.len(), sparsity).max(already);
        let mut cut = Cut::find(std::iter::once(h.keys.as_slice()), k);
        let (name, mask) = h.into_mask(&mut cut)?;
        masks.insert_trusted(name, mask);
    }
    Ok(masks)
}

/// The keys of `scores` with the coordinates `current` prunes forced below
/// every score, and how many each tensor has so forced.
fn gather_within(
    scores: &Scores,
    current: &MaskSet,
    sparsity: f64,
) -> Result<(Vec<HostKeys>, Vec<usize>)> {
    check_sparsity(sparsity)?;
    if scores.is_empty() {
        return Err(PruneError::NoPrunableParameters);
    }
    if let Some(name) = current.names().find(|n| !scores.contains_key(*n)) {
        return Err(PruneError::MissingTensor(name.to_string()));
    }
    let mut host = scores
        .iter()
        .map(|(name, t)| HostKeys::gather(name, t))
        .collect::<Result<Vec<_>>>()?;
    let mut already = vec![0; host.len()];
    for (h, already) in host.iter_mut().zip(&mut already) {
        let Some(mask) = current.get(&h.name) else {
            continue;
        };
        check_shape(&h.name, h.shape.dims(), mask.dims())?;
        let m = mask.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        for (key, &m) in h.keys.iter_mut().zip(&m) {
            if m == 0.0 {
                *key = PRUNED_KEY;
                *already += 1;
            }
        }
    }
    Ok((host, already))
}

/// Prunes the `k` lowest keys over all of `host`, in visiting order for ties.
fn select_lowest(host: Vec<HostKeys>, k: usize) -> Result<MaskSet> {
    let mut cut = Cut::find(host.iter().map(|h| h.keys.as_slice()), k);
    let mut masks = MaskSet::new();
    for h in host {
        let (name, mask) = h.into_mask(&mut cut)?;
        masks.insert_trusted(name, mask);
    }
    Ok(masks)
}

/// The rule of [`global`] applied inside each tensor separately: exactly
/// `round(s·n_t)` weights of each tensor `t` get mask 0.
pub fn per_layer(scores: &Scores, sparsity: f64) -> Result<MaskSet> {
    per_layer_within(scores, &MaskSet::new(), sparsity)
}

/// Where pruning is decided: one threshold over all tensors, or one per tensor.
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Scope {
    /// [`global`]: `round(s·n)` weights pruned over all tensors together, so
    /// layers end up with different sparsities.
    #[default]
    Global,
    /// [`per_layer`]: `round(s·n_t)` weights pruned in each tensor `t`, every
    /// layer at sparsity `s` (layer-wise magnitude pruning with
    /// [`crate::importance::magnitude`]).
    PerLayer,
}

impl Scope {
    /// Both scopes, in declaration order.
    pub const ALL: [Scope; 2] = [Scope::Global, Scope::PerLayer];

    /// The kebab-case name used on the command line and in configs.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::PerLayer => "per-layer",
        }
    }

    /// The masks of `scores` at `sparsity` under this scope.
    pub fn select(self, scores: &Scores, sparsity: f64) -> Result<MaskSet> {
        match self {
            Scope::Global => global(scores, sparsity),
            Scope::PerLayer => per_layer(scores, sparsity),
        }
    }

    /// The masks of `scores` at `sparsity` under this scope, among the
    /// weights `kept` still keeps ([`global_within`], [`per_layer_within`]);
    /// with an empty `kept`, the same as [`Scope::select`].
    pub fn select_within(self, scores: &Scores, kept: &MaskSet, sparsity: f64) -> Result<MaskSet> {
        match self {
            Scope::Global => global_within(scores, kept, sparsity),
            Scope::PerLayer => per_layer_within(scores, kept, sparsity),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scope {
    type Err = PruneError;

    /// Parses `global` or `per-layer`.
    fn from_str(s: &str) -> Result<Self> {
        Scope::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| PruneError::UnknownScope(s.to_string()))
    }
}

/// The key of a coordinate forced to the pruned side: below every key of a
/// non-NaN score (`order_key(-∞) = 0x007F_FFFF`), and NaN scores are rejected.
const PRUNED_KEY: u32 = 0;

/// Maps an `f32` to a `u32` whose unsigned order is the numeric order
/// (negative numbers have their bits flipped, positive ones their sign bit set).
fn order_key(x: f32) -> u32 {
    // -0.0 and 0.0 compare equal, so they must share a key.
    let x = if x == 0.0 { 0.0 } else { x };
    let bits = x.to_bits();
    if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

/// One score tensor copied to the host as order keys.
struct HostKeys {
    name: String,
    shape: Shape,
    device: Device,
    keys: Vec<u32>,
}

impl HostKeys {
    fn gather(name: &str, t: &Tensor) -> Result<Self> {
        let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let mut nan = false;
        // Same-size map: the standard library reuses the allocation.
        let keys: Vec<u32> = values
            .into_iter()
            .map(|x| {
                nan |= x.is_nan();
                order_key(x)
            })
            .collect();
        if nan {
            return Err(PruneError::NonFinite {
                name: name.to_string(),
            });
        }
        Ok(Self {
            name: name.to_string(),
            shape: t.shape().clone(),
            device: t.device().clone(),
            keys,
        })
    }

    /// Mask in flat order: 0 for keys below the cut and for the first
    /// `cut.ties` keys equal to it (across tensors, in visiting order).
    fn into_mask(self, cut: &mut Cut) -> Result<(String, Tensor)> {
        let values: Vec<f32> = self.keys.into_iter().map(|key| cut.keep(key)).collect();
        let mask = Tensor::from_vec(values, self.shape, &self.device)?;
        Ok((self.name, mask))
    }
}

/// The selection boundary: every key `< key` is pruned, plus the first `ties`
/// keys `== key` met in order; `None` prunes nothing.
struct Cut {
    boundary: Option<(u32, usize)>,
}

impl Cut {
    /// The boundary that prunes exactly the `k` smallest keys, by a two-pass
    /// radix select on the high and low 16 bits (O(n), no copy of the keys).
    fn find<'a>(chunks: impl Iterator<Item = &'a [u32]> + Clone, k: usize) -> Self {
        if k == 0 {
            return Self { boundary: None };
        }
        let mut hist = vec![0usize; 1 << 16];
        for chunk in chunks.clone() {
            for &key in chunk {
                hist[(key >> 16) as usize] += 1;
            }
        }
        let (high, below) = bucket_of(&hist, k, 0);
        hist.fill(0);
        for chunk in chunks {
            for &key in chunk {
                if key >> 16 == high {
                    hist[(key & 0xFFFF) as usize] += 1;
                }
            }
        }
        let (low, below) = bucket_of(&hist, k, below);
        let key = (high << 16) | low;
        Self {
            boundary: Some((key, k - below)),
        }
    }

    /// 1.0 to keep the next key in selection order, 0.0 to prune it.
    #[inline]
    fn keep(&mut self, key: u32) -> f32 {
        match &mut self.boundary {
            None => 1.0,
            Some((cut, _)) if key < *cut => 0.0,
            Some((cut, ties)) if key == *cut && *ties > 0 => {
                *ties -= 1;
                0.0
            }
            Some(_) => 1.0,
        }
    }
}

/// The bucket holding the `k`-th smallest element (1-based) given `below`
/// elements already known to be smaller than every bucket, and the number of
/// elements smaller than that bucket.
fn bucket_of(hist: &[usize], k: usize, mut below: usize) -> (u32, usize) {
    for (bucket, &count) in hist.iter().enumerate() {
        if below + count >= k {
            return (bucket as u32, below);
        }
        below += count;
    }
    // Unreachable while 0 < k <= n; the last bucket is a safe answer.
    (hist.len() as u32 - 1, below)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_key_is_monotone() {
        let xs = [
            f32::NEG_INFINITY,
            -3.5,
            -1e-30,
            0.0,
            1e-40,
            1e-30,
            2.0,
            f32::MAX,
            f32::INFINITY,
        ];
        for w in xs.windows(2) {
            assert!(order_key(w[0]) < order_key(w[1]), "{} < {}", w[0], w[1]);
        }
        assert_eq!(order_key(-0.0), order_key(0.0));
        assert!(PRUNED_KEY < order_key(f32::NEG_INFINITY));
    }

    #[test]
    fn cut_matches_sorting() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // Few distinct values so the tie path is exercised, plus a wide range.
        let keys: Vec<u32> = (0..5000)
            .map(|i| {
                if i % 2 == 0 {
                    order_key(rng.random_range(0..8) as f32)
                } else {
                    order_key(rng.random::<f32>() * 2.0 - 1.0)
                }
            })
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        for k in [1, 2, 17, 2500, 4999, 5000] {
            let cut = Cut::find(std::iter::once(keys.as_slice()), k);
            let (key, ties) = cut.boundary.unwrap();
            assert_eq!(key, sorted[k - 1]);
            assert_eq!(ties, k - sorted.iter().filter(|&&x| x < key).count());
        }
    }

    #[test]
    fn prune_count_rounds_half_away_from_zero() {
        assert_eq!(prune_count(3, 0.5), 2);
        assert_eq!(prune_count(10, 0.9), 9);
        assert_eq!(prune_count(10, 0.0), 0);
        assert_eq!(prune_count(10, 0.99), 10);
    }
}
