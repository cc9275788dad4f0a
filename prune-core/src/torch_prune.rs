//! The `torch.nn.utils.prune` API over named tensors, for users who know it.
//!
//! [`PrunableParams`] plays the module: it holds named parameters, and a
//! pruned one as PyTorch keeps it — the original values (`weight_orig`) and
//! the mask (`weight_mask`) side by side, the weight being their product.
//! The functions are PyTorch's, with the module and parameter name replaced
//! by the holder and the parameter's name:
//!
//! | PyTorch | kdprune |
//! |---|---|
//! | `prune.identity(m, "weight")` | [`identity`]`(&mut p, "fc1.weight")` |
//! | `prune.random_unstructured(m, "weight", amount=0.3)` | [`random_unstructured`]`(&mut p, name, Amount::Fraction(0.3), seed)` |
//! | `prune.l1_unstructured(m, "weight", amount=5, importance_scores=s)` | [`l1_unstructured`]`(&mut p, name, Amount::Count(5), Some(&s))` |
//! | `prune.random_structured(m, "weight", amount=0.5, dim=0)` | [`random_structured`]`(&mut p, name, Amount::Fraction(0.5), 0, seed)` |
//! | `prune.ln_structured(m, "weight", amount=0.5, n=2, dim=0)` | [`ln_structured`]`(&mut p, name, Amount::Fraction(0.5), Norm::P(2.0), 0, None)` |
//! | `prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=0.2)` | [`global_unstructured`]`(&mut p, &names, GlobalMethod::L1, Amount::Fraction(0.2), None)` |
//! | `prune.custom_from_mask(m, "weight", mask)` | [`custom_from_mask`]`(&mut p, name, &mask)` |
//! | `prune.remove(m, "weight")` | [`remove`]`(&mut p, name)` |
//! | `prune.is_pruned(m)` | [`is_pruned`]`(&p)` |
//! | `m.weight_orig`, `m.weight_mask`, `m.weight` | [`PrunableParams::orig`], [`PrunableParams::mask`], [`PrunableParams::weight`] |
//! | `m.state_dict()` | [`PrunableParams::state_dict`] (`NAME_orig`, `NAME_mask`) |
//!
//! The semantics are PyTorch's (`torch/nn/utils/prune.py`):
//!
//! - **amount**: a fraction in `[0, 1]` prunes `round(amount · n)` units,
//!   rounded half to even as Python's `round`; a count prunes that many and
//!   may not exceed `n`. `n` counts the units still unpruned.
//! - **Pruning a pruned parameter** combines the masks: an unstructured
//!   method prunes among the entries still kept (the amount relative to
//!   them), a structured one among the channels that still hold a kept
//!   entry, and a custom mask multiplies the current one.
//! - **Scores**: the original values (not the masked weight) unless
//!   importance scores are given; [`global_unstructured`] scores each
//!   parameter by its current weight (masked), as PyTorch does.
//! - **Ties**: PyTorch selects with `torch.topk`, whose choice among equal
//!   scores is left to its sort; here the lowest-scored units are pruned
//!   and, among equal scores, the lower flat index first (for
//!   `ln_structured`, the lower channel). Without ties the masks equal
//!   PyTorch's; with ties the same number of units is pruned, of the same
//!   scores (`tests/torch_prune.rs` holds both cases against PyTorch).
//! - **Random methods** draw from [`crate::rng::SeededRng`] with the given
//!   seed, not from PyTorch's generator: the same amount, other units.
//!
//! Masks are `f32` tensors of the parameter's shape (1 kept, 0 pruned), as
//! everywhere in the crate; [`PrunableParams::masks`] gives them as a
//! [`MaskSet`].

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};

use crate::error::{PruneError, Result};
use crate::rng::SeededRng;
use crate::{MaskSet, NamedTensors};

/// How much a method prunes: PyTorch's `amount`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Amount {
    /// A fraction in `[0, 1]` of the units still unpruned.
    Fraction(f64),
    /// A number of units.
    Count(usize),
}

impl Amount {
    /// The units to prune out of `n`: `round(f·n)` half to even, or the
    /// count; errors for a fraction outside `[0, 1]` and a count above `n`.
    pub fn units(self, n: usize) -> Result<usize> {
        match self {
            Amount::Fraction(f) if f.is_finite() && (0.0..=1.0).contains(&f) => {
                Ok((f * n as f64).round_ties_even() as usize)
            }
            Amount::Fraction(f) => Err(PruneError::InvalidAmount(format!(
                "a fraction must be in [0, 1], got {f}"
            ))),
            Amount::Count(c) if c <= n => Ok(c),
            Amount::Count(c) => Err(PruneError::InvalidAmount(format!(
                "{c} units asked, but only {n} are left to prune"
            ))),
        }
    }
}

/// The norm of [`ln_structured`]: PyTorch's `n`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Norm {
    /// `(Σ |x|ᵖ)^(1/p)`; `P(0.0)` counts the non-zeros; `P(2.0)` is also
    /// PyTorch's `"fro"` here (the norm of a flattened slice).
    P(f64),
    /// `max |x|` (`n=float("inf")`).
    Inf,
    /// `min |x|` (`n=float("-inf")`).
    NegInf,
}

impl Norm {
    fn of(self, values: impl Iterator<Item = f32>) -> f64 {
        let abs = values.map(|v| (v as f64).abs());
        match self {
            Norm::Inf => abs.fold(0.0, f64::max),
            Norm::NegInf => abs.fold(f64::INFINITY, f64::min),
            Norm::P(0.0) => abs.filter(|v| *v != 0.0).count() as f64,
            Norm::P(p) => abs.map(|v| v.powf(p)).sum::<f64>().powf(1.0 / p),
        }
    }
}

/// The method of [`global_unstructured`] (PyTorch's `pruning_method`
/// class): the unstructured ones.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GlobalMethod {
    /// `prune.L1Unstructured`: the smallest magnitudes.
    L1,
    /// `prune.RandomUnstructured`, drawn from this seed.
    Random {
        /// Seed of the draw.
        seed: u64,
    },
}

/// One parameter: as it is, or pruned (original values and mask).
#[derive(Clone, Debug)]
enum Param {
    Plain(Tensor),
    Pruned { orig: Tensor, mask: Tensor },
}

/// Named parameters, some of them pruned the way `torch.nn.utils.prune`
/// prunes a module's (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct PrunableParams {
    params: BTreeMap<String, Param>,
}

/// The `f32` values of `t`, flattened.
fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?)
}

/// `keep` as an `f32` mask of `like`'s shape, on its device.
fn mask_like(keep: &[bool], like: &Tensor) -> Result<Tensor> {
    let v: Vec<f32> = keep.iter().map(|k| f32::from(u8::from(*k))).collect();
    Ok(Tensor::from_vec(v, like.dims(), &Device::Cpu)?.to_device(like.device())?)
}

/// The positions of the `k` lowest of `scores` (ties: lower position first).
fn lowest(scores: &[f64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

/// `k` distinct positions out of `n`, drawn from `seed` (a partial
/// Fisher–Yates shuffle).
fn random_positions(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut rng = SeededRng::new(seed);
    let mut order: Vec<usize> = (0..n).collect();
    for i in 0..k.min(n) {
        let j = i + ((rng.next_f32() as f64 * (n - i) as f64) as usize).min(n - i - 1);
        order.swap(i, j);
    }
    order.truncate(k);
    order
}

/// How an unstructured method picks among the entries still kept.
enum Pick {
    /// The lowest of these scores (one per entry of the parameter).
    Lowest(Vec<f64>),
    /// At random, from this seed.
    Random(u64),
}

impl PrunableParams {
    /// Every tensor of `params` as an unpruned parameter.
    pub fn new(params: NamedTensors) -> Self {
        Self {
            params: params
                .into_iter()
                .map(|(n, t)| (n, Param::Plain(t)))
                .collect(),
        }
    }

    fn get(&self, name: &str) -> Result<&Param> {
        self.params
            .get(name)
            .ok_or_else(|| PruneError::MissingTensor(name.to_string()))
    }

    /// The parameter's values as PyTorch's `weight`: `orig · mask` when
    /// pruned, else the tensor as given.
    pub fn weight(&self, name: &str) -> Result<Tensor> {
        match self.get(name)? {
            Param::Plain(t) => Ok(t.clone()),
            Param::Pruned { orig, mask } => Ok(orig.mul(&mask.to_dtype(orig.dtype())?)?),
        }
    }

    /// `weight_orig`: the values before the mask, when pruned.
    pub fn orig(&self, name: &str) -> Option<&Tensor> {
        match self.params.get(name)? {
            Param::Pruned { orig, .. } => Some(orig),
            Param::Plain(_) => None,
        }
    }

    /// `weight_mask`, when pruned.
    pub fn mask(&self, name: &str) -> Option<&Tensor> {
        match self.params.get(name)? {
            Param::Pruned { mask, .. } => Some(mask),
            Param::Plain(_) => None,
        }
    }

    /// The parameters' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.params.keys().map(String::as_str)
    }

    /// The masks of the pruned parameters.
    pub fn masks(&self) -> Result<MaskSet> {
        let mut set = MaskSet::new();
        for (name, p) in &self.params {
            if let Param::Pruned { mask, .. } = p {
                set.insert(name.clone(), mask.clone())?;
            }
        }
        Ok(set)
    }

    /// Every parameter's current weight ([`PrunableParams::weight`]).
    pub fn tensors(&self) -> Result<NamedTensors> {
        self.names()
            .map(|n| Ok((n.to_string(), self.weight(n)?)))
            .collect()
    }

    /// What PyTorch's `state_dict()` holds: a pruned parameter `NAME` as
    /// `NAME_orig` and `NAME_mask`, the others under their names.
    pub fn state_dict(&self) -> NamedTensors {
        let mut out = NamedTensors::new();
        for (name, p) in &self.params {
            match p {
                Param::Plain(t) => {
                    out.insert(name.clone(), t.clone());
                }
                Param::Pruned { orig, mask } => {
                    out.insert(format!("{name}_orig"), orig.clone());
                    out.insert(format!("{name}_mask"), mask.clone());
                }
            }
        }
        out
    }

    /// The original values and current mask of `name` (ones when unpruned).
    fn orig_and_mask(&self, name: &str) -> Result<(Tensor, Vec<f32>)> {
        match self.get(name)? {
            Param::Plain(t) => Ok((t.clone(), vec![1.0; t.elem_count()])),
            Param::Pruned { orig, mask } => Ok((orig.clone(), values(mask)?)),
        }
    }

    /// Stores `keep` as the mask of `name` (whose values are `orig`).
    fn set_mask(&mut self, name: &str, orig: Tensor, keep: &[bool]) -> Result<()> {
        let mask = mask_like(keep, &orig)?;
        self.params
            .insert(name.to_string(), Param::Pruned { orig, mask });
        Ok(())
    }

    /// Scores of `name`: `importance` (checked for the shape) or the
    /// original values, flattened.
    fn scores(&self, name: &str, orig: &Tensor, importance: Option<&Tensor>) -> Result<Vec<f32>> {
        match importance {
            None => values(orig),
            Some(s) if s.dims() == orig.dims() => values(s),
            Some(s) => Err(PruneError::ShapeMismatch {
                name: name.to_string(),
                expected: orig.dims().to_vec(),
                got: s.dims().to_vec(),
            }),
        }
    }

    /// An unstructured method on `name`: `amount` of the entries still kept.
    fn unstructured(&mut self, name: &str, amount: Amount, pick: Pick) -> Result<()> {
        let (orig, mask) = self.orig_and_mask(name)?;
        let kept: Vec<usize> = (0..mask.len()).filter(|&i| mask[i] != 0.0).collect();
        let k = amount.units(kept.len())?;
        let chosen = match pick {
            Pick::Lowest(scores) => {
                let sub: Vec<f64> = kept.iter().map(|&i| scores[i]).collect();
                lowest(&sub, k)
            }
            Pick::Random(seed) => random_positions(kept.len(), k, seed),
        };
        let mut keep: Vec<bool> = mask.iter().map(|m| *m != 0.0).collect();
        for j in chosen {
            keep[kept[j]] = false;
        }
        self.set_mask(name, orig, &keep)
    }

    /// A structured method on `name` along `dim`: `amount` of the channels
    /// that still hold a kept entry, picked by `channel_scores` (computed
    /// from the channels' flattened entries) or at random.
    fn structured(
        &mut self,
        name: &str,
        amount: Amount,
        dim: usize,
        importance: Option<&Tensor>,
        pick: impl FnOnce(&[Vec<f32>], usize) -> Vec<usize>,
    ) -> Result<()> {
        let (orig, mask) = self.orig_and_mask(name)?;
        let dims = orig.dims().to_vec();
        if dims.len() < 2 || dim >= dims.len() {
            return Err(PruneError::InvalidDim {
                name: name.to_string(),
                dim,
                rank: dims.len(),
            });
        }
        let scores = self.scores(name, &orig, importance)?;
        let channels = dims[dim];
        let inner: usize = dims[dim + 1..].iter().product();
        let channel_of = |i: usize| (i / inner) % channels;
        // the entries of each channel, and which channels hold a kept entry
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); channels];
        for i in 0..mask.len() {
            members[channel_of(i)].push(i);
        }
        let live: Vec<usize> = (0..channels)
            .filter(|&c| members[c].iter().any(|&i| mask[i] != 0.0))
            .collect();
        let k = amount.units(live.len())?;
        let slices: Vec<Vec<f32>> = live
            .iter()
            .map(|&c| members[c].iter().map(|&i| scores[i]).collect())
            .collect();
        let mut keep: Vec<bool> = mask.iter().map(|m| *m != 0.0).collect();
        for j in pick(&slices, k) {
            for &i in &members[live[j]] {
                keep[i] = false;
            }
        }
        self.set_mask(name, orig, &keep)
    }
}

/// `prune.identity`: a mask of ones (the parameter counts as pruned).
pub fn identity(p: &mut PrunableParams, name: &str) -> Result<()> {
    let (orig, mask) = p.orig_and_mask(name)?;
    let keep: Vec<bool> = mask.iter().map(|m| *m != 0.0).collect();
    p.set_mask(name, orig, &keep)
}

/// `prune.random_unstructured`: `amount` of the kept entries, at random.
pub fn random_unstructured(
    p: &mut PrunableParams,
    name: &str,
    amount: Amount,
    seed: u64,
) -> Result<()> {
    p.unstructured(name, amount, Pick::Random(seed))
}

/// `prune.l1_unstructured`: `amount` of the kept entries, those of the
/// smallest `|importance|` (default: the original values).
pub fn l1_unstructured(
    p: &mut PrunableParams,
    name: &str,
    amount: Amount,
    importance: Option<&Tensor>,
) -> Result<()> {
    let orig = match p.get(name)? {
        Param::Plain(t) | Param::Pruned { orig: t, .. } => t.clone(),
    };
    let scores: Vec<f64> = p
        .scores(name, &orig, importance)?
        .iter()
        .map(|v| (*v as f64).abs())
        .collect();
    p.unstructured(name, amount, Pick::Lowest(scores))
}

/// `prune.random_structured`: `amount` of the channels along `dim`, at random.
pub fn random_structured(
    p: &mut PrunableParams,
    name: &str,
    amount: Amount,
    dim: usize,
    seed: u64,
) -> Result<()> {
    p.structured(name, amount, dim, None, |slices, k| {
        random_positions(slices.len(), k, seed)
    })
}

/// `prune.ln_structured`: `amount` of the channels along `dim`, those of
/// the smallest `n`-norm of the importance scores (default: the original
/// values) over each channel.
pub fn ln_structured(
    p: &mut PrunableParams,
    name: &str,
    amount: Amount,
    n: Norm,
    dim: usize,
    importance: Option<&Tensor>,
) -> Result<()> {
    p.structured(name, amount, dim, importance, |slices, k| {
        let norms: Vec<f64> = slices.iter().map(|s| n.of(s.iter().copied())).collect();
        lowest(&norms, k)
    })
}

/// `prune.global_unstructured`: `amount` of the kept entries of all of
/// `names` together, scored by `importance[name]` or the parameter's
/// current weight; each parameter's mask becomes its current mask times
/// its part of the result.
pub fn global_unstructured(
    p: &mut PrunableParams,
    names: &[&str],
    method: GlobalMethod,
    amount: Amount,
    importance: Option<&NamedTensors>,
) -> Result<()> {
    if names.is_empty() {
        return Err(PruneError::NoPrunableParameters);
    }
    let (mut scores, mut mask, mut sizes) = (Vec::new(), Vec::new(), Vec::new());
    for &name in names {
        let weight = p.weight(name)?;
        let s = p.scores(name, &weight, importance.and_then(|m| m.get(name)))?;
        let (_, m) = p.orig_and_mask(name)?;
        sizes.push(s.len());
        scores.extend(s.iter().map(|v| (*v as f64).abs()));
        mask.extend(m);
    }
    let kept: Vec<usize> = (0..mask.len()).filter(|&i| mask[i] != 0.0).collect();
    let k = amount.units(kept.len())?;
    let chosen = match method {
        GlobalMethod::L1 => {
            let sub: Vec<f64> = kept.iter().map(|&i| scores[i]).collect();
            lowest(&sub, k)
        }
        GlobalMethod::Random { seed } => random_positions(kept.len(), k, seed),
    };
    let mut keep = vec![true; mask.len()];
    for j in chosen {
        keep[kept[j]] = false;
    }
    let mut at = 0;
    for (&name, &size) in names.iter().zip(&sizes) {
        let like = p.weight(name)?;
        custom_from_mask(p, name, &mask_like(&keep[at..at + size], &like)?)?;
        at += size;
    }
    Ok(())
}

/// `prune.custom_from_mask`: the current mask (ones when unpruned) times
/// `mask` (0/1, the parameter's shape).
pub fn custom_from_mask(p: &mut PrunableParams, name: &str, mask: &Tensor) -> Result<()> {
    let (orig, current) = p.orig_and_mask(name)?;
    if mask.dims() != orig.dims() {
        return Err(PruneError::ShapeMismatch {
            name: name.to_string(),
            expected: orig.dims().to_vec(),
            got: mask.dims().to_vec(),
        });
    }
    let given = values(mask)?;
    if given.iter().any(|v| *v != 0.0 && *v != 1.0) {
        return Err(PruneError::InvalidMask {
            name: name.to_string(),
        });
    }
    let keep: Vec<bool> = current
        .iter()
        .zip(&given)
        .map(|(c, g)| *c != 0.0 && *g != 0.0)
        .collect();
    p.set_mask(name, orig, &keep)
}

/// `prune.remove`: makes the pruning permanent — the parameter becomes
/// `orig · mask`, without its mask. Errors when `name` is not pruned.
pub fn remove(p: &mut PrunableParams, name: &str) -> Result<()> {
    match p.get(name)? {
        Param::Plain(_) => Err(PruneError::NotPruned(name.to_string())),
        Param::Pruned { .. } => {
            let w = p.weight(name)?;
            p.params.insert(name.to_string(), Param::Plain(w));
            Ok(())
        }
    }
}

/// `prune.is_pruned`: whether any parameter carries a mask.
pub fn is_pruned(p: &PrunableParams) -> bool {
    p.params.values().any(|x| matches!(x, Param::Pruned { .. }))
}
