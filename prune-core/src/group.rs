//! Structured pruning's arithmetic over named tensors: channel groups, their
//! importance, and which channels each group keeps. No model: a group is a
//! list of named slices, its scores come from tensors (and gradients) by
//! name, and the result is the kept channels of each group — what a model
//! crate then removes physically.
//!
//! A [`ChannelGroup`] lists the `(tensor, axis)` slices that must go
//! together: channel `c` of the group is index `c` along the axis of every
//! member — a convolution's output channels (axis 0 of its weight), its
//! batch norm's four vectors, the next layers' input channels (axis 1), and,
//! in a residual network, every member of the sum.
//!
//! | [`GroupCriterion`] | score of channel `c` | source |
//! |---|---|---|
//! | `L1` | `Σ |w|` over the group's parameter slices | Li et al., ICLR 2017 (filter pruning) |
//! | `L2` | `√(Σ w²)` over the same | — |
//! | `Fpgm` | `Σ_j ‖v_c − v_j‖₂` over the other channels `j` of the group, `v` the channel's parameter slices concatenated: the channels nearest the geometric median score lowest | He et al., CVPR 2019 |
//! | `BnScale` | `Σ |γ_c|` over the group's batch-norm scales | Liu et al., ICCV 2017 (network slimming) |
//! | `Taylor` | `|Σ w·g|` over the parameter slices, `g = ∂L/∂w` | Molchanov et al., CVPR 2019 (first order) |
//! | `TeacherGuided` | `Σ |w ⊙ g|` over the parameter slices, `g` the gradient of the distillation objective under the teacher (or, with [`ChannelGroup::sum_scores`], the paper's per-weight `Σ_batches |θ ⊙ ∂L/∂θ|` summed over the group) | arXiv 2511.16653, per group |
//!
//! The slices scored are the parameters ([`Role::Weight`], [`Role::Bias`],
//! [`Role::BnWeight`], [`Role::BnBias`]); running statistics
//! ([`Role::BnStat`]) are removed with their channel but never scored. The
//! lowest scores are pruned; among equal scores, the lower channel first.

use std::collections::{BTreeMap, BTreeSet};

use candle_core::{DType, Device, Tensor};

use crate::error::{PruneError, Result};
use crate::NamedTensors;

/// What a slice of a group is, for scoring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum Role {
    /// A convolution's or linear layer's weight (either axis).
    Weight,
    /// A bias.
    Bias,
    /// A batch norm's scale `γ`.
    BnWeight,
    /// A batch norm's shift `β`.
    BnBias,
    /// A batch norm's running mean or variance: removed, not scored.
    BnStat,
}

/// One member of a group: tensor `tensor` along `axis`, the group's
/// channel `c` at index `offset + c`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Slice {
    /// The tensor's name.
    pub tensor: String,
    /// The axis whose index is the group's channel.
    pub axis: usize,
    /// Where the group's channels start along the axis: `None` when the
    /// group owns the whole axis (its length is the group's channels);
    /// `Some(o)` for a part of a longer axis — a residual stream built from
    /// several groups, as shortcut A's zero padding builds one.
    #[cfg_attr(feature = "serde", serde(default))]
    pub offset: Option<usize>,
    /// Consecutive indices per channel along the axis (1 but where a
    /// flatten feeds a linear layer: channel `c` of a `[C, H, W]` map is
    /// the `H·W` inputs from `c·H·W` on).
    #[cfg_attr(feature = "serde", serde(default = "one"))]
    pub span: usize,
    /// What the tensor is.
    pub role: Role,
}

#[cfg(feature = "serde")]
fn one() -> usize {
    1
}

impl Slice {
    /// A member `tensor` along `axis` in `role`, the whole axis.
    pub fn new(tensor: impl Into<String>, axis: usize, role: Role) -> Self {
        Self {
            tensor: tensor.into(),
            axis,
            offset: None,
            span: 1,
            role,
        }
    }

    /// A member whose channels are `span` consecutive indices each (the
    /// inputs of a linear layer after a flatten).
    pub fn spanning(self, span: usize) -> Self {
        Self { span, ..self }
    }

    /// A member `tensor` along `axis` from index `offset` on, in `role`:
    /// part of a longer axis.
    pub fn at(tensor: impl Into<String>, axis: usize, offset: usize, role: Role) -> Self {
        Self {
            offset: Some(offset),
            ..Self::new(tensor, axis, role)
        }
    }

    /// The first index of the group's channels along the axis.
    pub fn start(&self) -> usize {
        self.offset.unwrap_or(0)
    }

    /// Whether an axis of length `len` holds `channels` channels of this
    /// member: exactly, or from its offset on.
    pub fn fits(&self, len: usize, channels: usize) -> bool {
        match self.offset {
            None => len == channels * self.span,
            Some(o) => len >= o + channels * self.span,
        }
    }

    /// The indices along the axis that channel `c` occupies.
    pub fn indices(&self, c: usize) -> std::ops::Range<usize> {
        let start = self.start() + c * self.span;
        start..start + self.span
    }
}

/// Channels that are removed together (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ChannelGroup {
    /// The group's name (usually its first convolution's, e.g. `layer1.0.conv1`).
    pub name: String,
    /// Channels in the group: the length of every member's axis.
    pub channels: usize,
    /// The members.
    pub members: Vec<Slice>,
}

/// How a group's channels are scored (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum GroupCriterion {
    /// `Σ |w|`.
    L1,
    /// `√(Σ w²)`.
    L2,
    /// Summed distance to the other channels.
    Fpgm,
    /// `Σ |γ|` of the batch norms.
    BnScale,
    /// `|Σ w·g|`.
    Taylor,
    /// `Σ |w ⊙ g|`, `g` of the distillation objective.
    TeacherGuided,
}

impl GroupCriterion {
    /// Every criterion, with its name.
    pub const ALL: [(&'static str, GroupCriterion); 6] = [
        ("l1", GroupCriterion::L1),
        ("l2", GroupCriterion::L2),
        ("fpgm", GroupCriterion::Fpgm),
        ("bn-scale", GroupCriterion::BnScale),
        ("taylor", GroupCriterion::Taylor),
        ("teacher-guided", GroupCriterion::TeacherGuided),
    ];

    /// Whether the criterion reads gradients.
    pub fn needs_gradients(self) -> bool {
        matches!(self, GroupCriterion::Taylor | GroupCriterion::TeacherGuided)
    }
}

impl std::str::FromStr for GroupCriterion {
    type Err = PruneError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, c)| *c)
            .ok_or_else(|| PruneError::UnknownCriterion(s.to_string()))
    }
}

/// The `f32` values of `t`, flattened, and its dims.
fn values(t: &Tensor) -> Result<(Vec<f32>, Vec<usize>)> {
    Ok((
        t.flatten_all()?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .to_vec1::<f32>()?,
        t.dims().to_vec(),
    ))
}

/// The entries of each of `channels` channels of member `m` in a tensor of
/// `dims`: `out[c]` = the flat positions whose index along the axis is in
/// `m.indices(c)`.
fn channel_positions(dims: &[usize], m: &Slice, channels: usize) -> Vec<Vec<usize>> {
    let len = dims[m.axis];
    let inner: usize = dims[m.axis + 1..].iter().product();
    let total: usize = dims.iter().product();
    let (start, end) = (m.start(), m.start() + channels * m.span);
    let mut out = vec![Vec::with_capacity(total / len.max(1)); channels];
    for i in 0..total {
        let j = (i / inner) % len;
        if (start..end).contains(&j) {
            out[(j - start) / m.span].push(i);
        }
    }
    out
}

impl ChannelGroup {
    /// Checks every member against `tensors`: present, the axis inside the
    /// tensor, of length `channels` (at least `offset + channels` for a
    /// member with an offset).
    pub fn check(&self, tensors: &NamedTensors) -> Result<()> {
        for m in &self.members {
            let t = tensors
                .get(&m.tensor)
                .ok_or_else(|| PruneError::MissingTensor(m.tensor.clone()))?;
            let dims = t.dims();
            if m.axis >= dims.len() {
                return Err(PruneError::InvalidDim {
                    name: m.tensor.clone(),
                    dim: m.axis,
                    rank: dims.len(),
                });
            }
            if !m.fits(dims[m.axis], self.channels) {
                let mut expected = dims.to_vec();
                expected[m.axis] = m.start() + self.channels * m.span;
                return Err(PruneError::ShapeMismatch {
                    name: m.tensor.clone(),
                    expected,
                    got: dims.to_vec(),
                });
            }
        }
        Ok(())
    }

    /// Each channel's score under `criterion`: from `tensors`, and from
    /// `grads` (same names) for the gradient criteria.
    pub fn scores(
        &self,
        criterion: GroupCriterion,
        tensors: &NamedTensors,
        grads: Option<&NamedTensors>,
    ) -> Result<Vec<f64>> {
        self.check(tensors)?;
        let scored = |r: Role| {
            if criterion == GroupCriterion::BnScale {
                r == Role::BnWeight
            } else {
                r != Role::BnStat
            }
        };
        // per channel: the scored entries (w, g) of every member, in order
        let mut entries: Vec<Vec<(f64, f64)>> = vec![Vec::new(); self.channels];
        for m in self.members.iter().filter(|m| scored(m.role)) {
            let (w, dims) = values(&tensors[&m.tensor])?;
            let g = if criterion.needs_gradients() {
                let grads =
                    grads.ok_or_else(|| PruneError::NeedsGradients(format!("{criterion:?}")))?;
                // A weight needs its gradient; a bias or batch norm without
                // one is left out of the gradient score (the callers score
                // the prunable weights' gradients).
                let Some(g) = grads.get(&m.tensor) else {
                    if m.role == Role::Weight {
                        return Err(PruneError::MissingTensor(format!(
                            "gradient of {}",
                            m.tensor
                        )));
                    }
                    continue;
                };
                if g.dims() != dims.as_slice() {
                    return Err(PruneError::ShapeMismatch {
                        name: m.tensor.clone(),
                        expected: dims.clone(),
                        got: g.dims().to_vec(),
                    });
                }
                Some(values(g)?.0)
            } else {
                None
            };
            for (c, positions) in channel_positions(&dims, m, self.channels)
                .into_iter()
                .enumerate()
            {
                for i in positions {
                    let gi = g.as_ref().map_or(0.0, |g| g[i] as f64);
                    entries[c].push((w[i] as f64, gi));
                }
            }
        }
        if let Some((c, _)) = entries
            .iter()
            .enumerate()
            .find(|(_, e)| e.iter().any(|(w, g)| !w.is_finite() || !g.is_finite()))
        {
            return Err(PruneError::NonFinite {
                name: format!("{} (channel {c})", self.name),
            });
        }
        Ok(match criterion {
            GroupCriterion::L1 | GroupCriterion::BnScale => entries
                .iter()
                .map(|e| e.iter().map(|(w, _)| w.abs()).sum())
                .collect(),
            GroupCriterion::L2 => entries
                .iter()
                .map(|e| e.iter().map(|(w, _)| w * w).sum::<f64>().sqrt())
                .collect(),
            GroupCriterion::Taylor => entries
                .iter()
                .map(|e| e.iter().map(|(w, g)| w * g).sum::<f64>().abs())
                .collect(),
            GroupCriterion::TeacherGuided => entries
                .iter()
                .map(|e| e.iter().map(|(w, g)| (w * g).abs()).sum())
                .collect(),
            GroupCriterion::Fpgm => (0..self.channels)
                .map(|c| {
                    (0..self.channels)
                        .filter(|&j| j != c)
                        .map(|j| {
                            entries[c]
                                .iter()
                                .zip(&entries[j])
                                .map(|((a, _), (b, _))| (a - b) * (a - b))
                                .sum::<f64>()
                                .sqrt()
                        })
                        .sum()
                })
                .collect(),
        })
    }
}

impl ChannelGroup {
    /// Each channel's sum of per-entry `scores` (e.g. an unstructured
    /// criterion's, such as the teacher-guided `Σ_batches |θ ⊙ ∂L/∂θ|`)
    /// over the members `scores` holds; every weight member must be there.
    pub fn sum_scores(&self, scores: &NamedTensors) -> Result<Vec<f64>> {
        let mut out = vec![0f64; self.channels];
        for m in &self.members {
            let Some(s) = scores.get(&m.tensor) else {
                if m.role == Role::Weight {
                    return Err(PruneError::MissingTensor(format!("scores of {}", m.tensor)));
                }
                continue;
            };
            let (v, dims) = values(s)?;
            if dims.get(m.axis).is_none_or(|&n| !m.fits(n, self.channels)) {
                return Err(PruneError::ShapeMismatch {
                    name: m.tensor.clone(),
                    expected: vec![m.start() + self.channels * m.span],
                    got: dims,
                });
            }
            for (c, positions) in channel_positions(&dims, m, self.channels)
                .into_iter()
                .enumerate()
            {
                out[c] += positions.iter().map(|&i| v[i] as f64).sum::<f64>();
            }
        }
        if out.iter().any(|v| !v.is_finite()) {
            return Err(PruneError::NonFinite {
                name: self.name.clone(),
            });
        }
        Ok(out)
    }
}

/// How many channels each group loses (see [`select_channels`]).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct GroupRatios {
    /// Fraction of the channels to remove, in `[0, 1)`.
    pub ratio: f64,
    /// One threshold over every group's scores (`true`), or `ratio` inside
    /// each group.
    pub global: bool,
    /// Per-group ratios that replace `ratio` for those groups (per-group
    /// selection only).
    pub per_group: BTreeMap<String, f64>,
    /// The most any group may lose, in `[0, 1)`.
    pub max_ratio: f64,
    /// Groups left whole.
    pub ignore: Vec<String>,
    /// Kept channel counts are rounded up to a multiple of this (1: none).
    pub round_to: usize,
}

impl Default for GroupRatios {
    fn default() -> Self {
        Self {
            ratio: 0.0,
            global: false,
            per_group: BTreeMap::new(),
            max_ratio: 0.95,
            ignore: Vec::new(),
            round_to: 1,
        }
    }
}

impl GroupRatios {
    /// Checks the ratios (in `[0, 1)`), `round_to` (≥ 1) and the group names
    /// against `groups`, before any scoring.
    pub fn validate(&self, groups: &[ChannelGroup]) -> Result<()> {
        check_ratio("the ratio", self.ratio)?;
        check_ratio("the maximum ratio per group", self.max_ratio)?;
        if self.round_to == 0 {
            return Err(PruneError::InvalidAmount(
                "round_to must be at least 1".into(),
            ));
        }
        let names: BTreeSet<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        for name in self.ignore.iter().chain(self.per_group.keys()) {
            if !names.contains(name.as_str()) {
                return Err(PruneError::UnknownGroup {
                    name: name.clone(),
                    known: names.iter().copied().collect::<Vec<_>>().join(", "),
                });
            }
        }
        for (name, r) in &self.per_group {
            check_ratio(&format!("the ratio of `{name}`"), *r)?;
        }
        if self.global && !self.per_group.is_empty() {
            return Err(PruneError::InvalidAmount(
                "per-group ratios apply to per-group selection, not to a global threshold".into(),
            ));
        }
        Ok(())
    }
}

fn check_ratio(what: &str, r: f64) -> Result<()> {
    if r.is_finite() && (0.0..1.0).contains(&r) {
        Ok(())
    } else {
        Err(PruneError::InvalidAmount(format!(
            "{what} must be in [0, 1), got {r}"
        )))
    }
}

/// The channels each group keeps (ascending), given each group's channel
/// scores (`scores[group.name]`, as [`ChannelGroup::scores`] gives them).
///
/// Per group, `round(ratio · channels)` of the lowest-scored channels go
/// (its `per_group` ratio if set); globally, the `round(ratio · N)`
/// lowest scores over the `N` channels of all groups not ignored. Then
/// every group is held to at most `max_ratio` of its channels removed and
/// at least one channel (or `round_to`) kept, and its kept count rounded up
/// to a multiple of `round_to` (capped at its channel count) — so the total
/// removed may fall short of the global target. Ignored groups keep every
/// channel.
pub fn select_channels(
    groups: &[ChannelGroup],
    scores: &BTreeMap<String, Vec<f64>>,
    ratios: &GroupRatios,
) -> Result<BTreeMap<String, Vec<usize>>> {
    ratios.validate(groups)?;
    let active: Vec<&ChannelGroup> = groups
        .iter()
        .filter(|g| !ratios.ignore.contains(&g.name))
        .collect();
    let score_of = |g: &ChannelGroup| -> Result<&Vec<f64>> {
        let s = scores
            .get(&g.name)
            .ok_or_else(|| PruneError::MissingTensor(format!("scores of group `{}`", g.name)))?;
        if s.len() != g.channels {
            return Err(PruneError::ShapeMismatch {
                name: g.name.clone(),
                expected: vec![g.channels],
                got: vec![s.len()],
            });
        }
        if s.iter().any(|v| !v.is_finite()) {
            return Err(PruneError::NonFinite {
                name: g.name.clone(),
            });
        }
        Ok(s)
    };
    // channels to remove per group, before the limits
    let mut remove: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    if ratios.global {
        let mut all: Vec<(f64, usize, usize)> = Vec::new();
        for (gi, g) in active.iter().enumerate() {
            all.extend(score_of(g)?.iter().enumerate().map(|(c, s)| (*s, gi, c)));
        }
        let k = (ratios.ratio * all.len() as f64).round() as usize;
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        for (_, gi, c) in all.into_iter().take(k) {
            remove.entry(active[gi].name.as_str()).or_default().push(c);
        }
    } else {
        for g in &active {
            let s = score_of(g)?;
            let r = ratios
                .per_group
                .get(&g.name)
                .copied()
                .unwrap_or(ratios.ratio);
            let k = (r * g.channels as f64).round() as usize;
            let mut order: Vec<usize> = (0..g.channels).collect();
            order.sort_by(|&a, &b| s[a].total_cmp(&s[b]).then(a.cmp(&b)));
            order.truncate(k);
            remove.insert(g.name.as_str(), order);
        }
    }
    let mut kept = BTreeMap::new();
    for g in groups {
        let mut gone = remove.remove(g.name.as_str()).unwrap_or_default();
        // the limits: at most max_ratio removed, at least one (or round_to) kept
        let floor = ratios.round_to.min(g.channels);
        let most =
            ((ratios.max_ratio * g.channels as f64).floor() as usize).min(g.channels - floor);
        if gone.len() > most {
            // keep the best-scored of those chosen: drop the last ones
            let s = scores.get(&g.name).map(Vec::as_slice).unwrap_or(&[]);
            gone.sort_by(|&a, &b| s[a].total_cmp(&s[b]).then(a.cmp(&b)));
            gone.truncate(most);
        }
        // round the kept count up to a multiple of round_to
        let keep_n = (g.channels - gone.len()).div_ceil(ratios.round_to) * ratios.round_to;
        let keep_n = keep_n.min(g.channels);
        if keep_n > g.channels - gone.len() {
            let s = scores.get(&g.name).map(Vec::as_slice).unwrap_or(&[]);
            gone.sort_by(|&a, &b| s[a].total_cmp(&s[b]).then(a.cmp(&b)));
            gone.truncate(g.channels - keep_n);
        }
        let gone: BTreeSet<usize> = gone.into_iter().collect();
        kept.insert(
            g.name.clone(),
            (0..g.channels).filter(|c| !gone.contains(c)).collect(),
        );
    }
    Ok(kept)
}

/// A block's (or layer's) importance, the guide's layer criterion: the mean
/// of `|w·g|` over every entry of its `tensors` (`g = ∂L/∂w` from `grads`,
/// the same names). Blocks of different sizes compare by their mean.
pub fn block_importance(
    tensors: &[String],
    weights: &NamedTensors,
    grads: &NamedTensors,
) -> Result<f64> {
    let (mut sum, mut n) = (0f64, 0usize);
    for name in tensors {
        let w = weights
            .get(name)
            .ok_or_else(|| PruneError::MissingTensor(name.clone()))?;
        let g = grads
            .get(name)
            .ok_or_else(|| PruneError::MissingTensor(format!("gradient of {name}")))?;
        if g.dims() != w.dims() {
            return Err(PruneError::ShapeMismatch {
                name: name.clone(),
                expected: w.dims().to_vec(),
                got: g.dims().to_vec(),
            });
        }
        let (w, _) = values(w)?;
        let (g, _) = values(g)?;
        sum += w
            .iter()
            .zip(&g)
            .map(|(a, b)| (*a as f64 * *b as f64).abs())
            .sum::<f64>();
        n += w.len();
    }
    if n == 0 {
        return Err(PruneError::InvalidAmount(
            "a block without tensors has no importance".into(),
        ));
    }
    let mean = sum / n as f64;
    if !mean.is_finite() {
        return Err(PruneError::NonFinite {
            name: tensors.join(", "),
        });
    }
    Ok(mean)
}

/// The `k` least important blocks of `scores`, in the order given: the
/// lowest scores, among equal scores the earlier block. An error when `k`
/// is more than the blocks there are.
pub fn select_blocks(scores: &[(String, f64)], k: usize) -> Result<Vec<String>> {
    if k > scores.len() {
        return Err(PruneError::InvalidAmount(format!(
            "cannot remove {k} of {} removable blocks",
            scores.len()
        )));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].1.total_cmp(&scores[b].1).then(a.cmp(&b)));
    order.truncate(k);
    order.sort_unstable();
    Ok(order.into_iter().map(|i| scores[i].0.clone()).collect())
}
