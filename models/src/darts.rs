//! DARTS (Liu et al. 2019, "Differentiable Architecture Search"): the
//! search network, whose every edge is a mixture of the candidate operations
//! weighted by a softmax over architecture parameters, the discretisation to
//! a genotype, and the discrete network built from a genotype.
//!
//! ```text
//! network: stem conv 3×3 (C_in → 3C) · bn, then `layers` cells; the cells at
//!          1/3 and 2/3 of the depth are reduction cells (stride 2, channels
//!          doubled); global average → fc
//! cell:    inputs s0 (the cell before the last; factorised reduce when the
//!          last cell reduced, else ReLU·conv 1×1·bn) and s1 (ReLU·conv
//!          1×1·bn); node i (4 of them) = Σ over earlier states j of
//!          edge(i, j)(s_j); output = the 4 nodes concatenated (4C channels)
//! edge:    search: Σ_o softmax(α_edge)_o · o(x) over the 8 primitives;
//!          discrete: the genotype's one operation, 2 edges per node
//! ```
//!
//! The primitives, as in DARTS's code: `none` (zeros), `skip_connect`
//! (identity, a factorised reduce at stride 2), `sep_conv_3x3/5x5` (twice
//! ReLU · depthwise k×k · pointwise 1×1 · bn), `dil_conv_3x3/5x5` (ReLU ·
//! depthwise k×k at dilation 2 · pointwise · bn), `avg_pool_3x3` (padding
//! not counted) and `max_pool_3x3`; in the search network the pools are
//! followed by a batch norm. Unlike DARTS's search the batch norms keep
//! their affine parameters (the zoo's batch norm has them always).

use std::collections::BTreeMap;
use std::fmt;

use candle_core::{DType, Device, Result, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::ops::transformer::softmax_last_dim;
use crate::ops::{Kernels, Pool2dConfig};
use crate::zoo::layers::{global_avg_pool, BatchNorm2d, Builder, Conv};
use kd_core::init::ParamSpec;
use kd_core::ModelOutput;

/// The candidate operations, in the order of the architecture parameters'
/// columns.
pub const PRIMITIVES: [&str; 8] = [
    "none",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "avg_pool_3x3",
    "max_pool_3x3",
];

/// Intermediate nodes per cell.
pub const STEPS: usize = 4;

/// Edges per cell: node `i` reads the two inputs and the `i` nodes before it.
pub const EDGES: usize = STEPS * (STEPS + 3) / 2;

/// The shape of a DARTS network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DartsConfig {
    /// Input `(C, H, W)`, taken at its size (no padding: two reductions
    /// need `H, W ≥ 4`).
    pub input: (usize, usize, usize),
    /// Classes.
    pub classes: usize,
    /// Channels of the first cells (`C`; doubled at each reduction).
    pub channels: usize,
    /// Cells (at least 3: the reductions sit at 1/3 and 2/3).
    pub layers: usize,
}

impl DartsConfig {
    /// Whether cell `i` is a reduction cell.
    pub fn is_reduction(&self, i: usize) -> bool {
        i == self.layers / 3 || i == 2 * self.layers / 3
    }

    fn validate(&self) -> Result<()> {
        let (c, h, w) = self.input;
        if self.layers < 3
            || self.channels < 2
            || !self.channels.is_multiple_of(2)
            || self.classes < 2
            || c == 0
            || h < 4
            || w < 4
        {
            candle_core::bail!(
                "a DARTS network needs at least 3 cells, an even channel count ≥ 2, 2 classes \
                 and inputs of at least 4×4, got {self:?}"
            )
        }
        Ok(())
    }
}

/// The discrete architecture: for each node of the normal and the
/// reduction cell, its two `(operation, input state)` pairs (states 0 and 1
/// are the cell's inputs, `2 + i` node `i`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genotype {
    /// The normal cell's 2 × [`STEPS`] edges.
    pub normal: Vec<(String, usize)>,
    /// The reduction cell's.
    pub reduce: Vec<(String, usize)>,
}

impl fmt::Display for Genotype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |edges: &[(String, usize)]| {
            edges
                .iter()
                .map(|(op, from)| format!("{op}<-{from}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        write!(
            f,
            "normal: {} | reduce: {}",
            side(&self.normal),
            side(&self.reduce)
        )
    }
}

impl Genotype {
    /// DARTS's discretisation of `alpha` (`[EDGES, 8]` per cell type, before
    /// the softmax): each node keeps the two incoming edges whose strongest
    /// operation other than `none` weighs most, each with that operation.
    /// Ties go to the earlier edge and the earlier operation.
    pub fn from_alphas(normal: &Tensor, reduce: &Tensor) -> Result<Self> {
        Ok(Self {
            normal: discretise(normal)?,
            reduce: discretise(reduce)?,
        })
    }

    fn check(&self) -> Result<()> {
        for edges in [&self.normal, &self.reduce] {
            if edges.len() != 2 * STEPS {
                candle_core::bail!(
                    "a genotype has {} edges per cell, got {}",
                    2 * STEPS,
                    edges.len()
                )
            }
            for (k, (op, from)) in edges.iter().enumerate() {
                let node = k / 2;
                if !PRIMITIVES.contains(&op.as_str()) || op == "none" || *from >= node + 2 {
                    candle_core::bail!("node {node} cannot take `{op}` from state {from}")
                }
                if k % 2 == 1 && edges[k - 1].1 == *from {
                    candle_core::bail!("node {node} takes state {from} twice")
                }
            }
        }
        Ok(())
    }
}

fn discretise(alpha: &Tensor) -> Result<Vec<(String, usize)>> {
    if alpha.dims() != [EDGES, PRIMITIVES.len()] {
        candle_core::bail!(
            "architecture parameters are {EDGES}×{}, got {:?}",
            PRIMITIVES.len(),
            alpha.dims()
        )
    }
    let weights: Vec<Vec<f32>> = softmax_last_dim(alpha)?.to_vec2()?;
    let mut genotype = Vec::with_capacity(2 * STEPS);
    let mut start = 0;
    for node in 0..STEPS {
        let inputs = node + 2;
        // (strength, edge, op) of each incoming edge's best non-none op
        let mut best: Vec<(f32, usize, usize)> = (0..inputs)
            .map(|j| {
                let w = &weights[start + j];
                let (op, v) = (1..PRIMITIVES.len()).map(|o| (o, w[o])).fold(
                    (1, f32::NEG_INFINITY),
                    |acc, (o, v)| {
                        if v > acc.1 {
                            (o, v)
                        } else {
                            acc
                        }
                    },
                );
                (v, j, op)
            })
            .collect();
        best.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut kept: Vec<(f32, usize, usize)> = best.into_iter().take(2).collect();
        kept.sort_by_key(|e| e.1);
        for (_, j, op) in kept {
            genotype.push((PRIMITIVES[op].to_string(), j));
        }
        start += inputs;
    }
    Ok(genotype)
}

/// `relu · conv 1×1 (stride 2)` on the input and on it shifted by one pixel,
/// concatenated, then a batch norm: halves the size without losing the odd
/// positions.
#[derive(Clone, Debug)]
struct FactorizedReduce {
    conv1: Conv,
    conv2: Conv,
    bn: BatchNorm2d,
}

impl FactorizedReduce {
    fn new(
        b: &mut Builder,
        name: &str,
        cin: usize,
        cout: usize,
        hw: (usize, usize),
    ) -> Result<Self> {
        b.scope(name, |b| {
            let (conv1, _) = b.conv("conv1", (cin, cout / 2), 1, 2, 0, 1, false, hw)?;
            let (conv2, _) = b.conv("conv2", (cin, cout - cout / 2), 1, 2, 0, 1, false, hw)?;
            Ok(Self {
                conv1,
                conv2,
                bn: b.bn("bn", cout)?,
            })
        })
    }

    fn forward(&self, xs: &Tensor, train: bool, k: Kernels) -> Result<Tensor> {
        let x = xs.relu()?;
        let (_, _, h, w) = x.dims4()?;
        let a = self.conv1.forward(&x, k)?;
        let shifted = x.narrow(2, 1, h - 1)?.narrow(3, 1, w - 1)?;
        let shifted = shifted.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?;
        let b = self.conv2.forward(&shifted, k)?;
        self.bn.forward(&Tensor::cat(&[a, b], 1)?, train, false, k)
    }
}

/// `relu · conv 1×1 · bn`.
#[derive(Clone, Debug)]
struct ReluConvBn {
    conv: Conv,
    bn: BatchNorm2d,
}

impl ReluConvBn {
    fn new(
        b: &mut Builder,
        name: &str,
        cin: usize,
        cout: usize,
        hw: (usize, usize),
    ) -> Result<Self> {
        b.scope(name, |b| {
            let (conv, _) = b.conv("conv", (cin, cout), 1, 1, 0, 1, false, hw)?;
            Ok(Self {
                conv,
                bn: b.bn("bn", cout)?,
            })
        })
    }

    fn forward(&self, xs: &Tensor, train: bool, k: Kernels) -> Result<Tensor> {
        self.bn
            .forward(&self.conv.forward(&xs.relu()?, k)?, train, false, k)
    }
}

/// `relu · depthwise k×k (stride, dilation) · pointwise 1×1 · bn`.
#[derive(Clone, Debug)]
struct DwPw {
    dw: Conv,
    pw: Conv,
    bn: BatchNorm2d,
}

impl DwPw {
    #[allow(clippy::too_many_arguments)]
    fn new(
        b: &mut Builder,
        name: &str,
        (cin, cout): (usize, usize),
        k: usize,
        stride: usize,
        dilation: usize,
        hw: (usize, usize),
    ) -> Result<(Self, (usize, usize))> {
        b.scope(name, |b| {
            let (dw, out) = b.conv_dilated("dw", cin, k, stride, dilation, hw)?;
            let (pw, _) = b.conv("pw", (cin, cout), 1, 1, 0, 1, false, out)?;
            Ok((
                Self {
                    dw,
                    pw,
                    bn: b.bn("bn", cout)?,
                },
                out,
            ))
        })
    }

    fn forward(&self, xs: &Tensor, train: bool, k: Kernels) -> Result<Tensor> {
        let h = self.dw.forward(&xs.relu()?, k)?;
        self.bn.forward(&self.pw.forward(&h, k)?, train, false, k)
    }
}

/// One candidate operation on an edge of `c` channels.
#[derive(Clone, Debug)]
enum Op {
    Zero {
        stride: usize,
    },
    Identity,
    Reduce(FactorizedReduce),
    Sep(DwPw, DwPw),
    Dil(DwPw),
    Pool {
        max: bool,
        stride: usize,
        /// Average pooling: each window's share of real (not padded)
        /// positions, `[1, 1, H', W']`, a constant of the input size.
        share: Option<Tensor>,
        bn: Option<BatchNorm2d>,
    },
}

/// DARTS's 3×3 pools: padding 1 at `stride`.
fn pool_config(stride: usize) -> Pool2dConfig {
    Pool2dConfig {
        kernel: (3, 3),
        stride: (stride, stride),
        padding: (1, 1),
    }
}

impl Op {
    /// Primitive `name` on `c` channels at `stride`; `pool_bn` adds the
    /// search network's batch norm after a pool.
    fn new(
        b: &mut Builder,
        name: &str,
        c: usize,
        stride: usize,
        pool_bn: bool,
        hw: (usize, usize),
    ) -> Result<Self> {
        b.scope(name, |b| {
            Ok(match name {
                "none" => Op::Zero { stride },
                "skip_connect" if stride == 1 => Op::Identity,
                "skip_connect" => Op::Reduce(FactorizedReduce::new(b, "reduce", c, c, hw)?),
                "sep_conv_3x3" | "sep_conv_5x5" => {
                    let k = if name == "sep_conv_3x3" { 3 } else { 5 };
                    let (first, out) = DwPw::new(b, "0", (c, c), k, stride, 1, hw)?;
                    let (second, _) = DwPw::new(b, "1", (c, c), k, 1, 1, out)?;
                    Op::Sep(first, second)
                }
                "dil_conv_3x3" | "dil_conv_5x5" => {
                    let k = if name == "dil_conv_3x3" { 3 } else { 5 };
                    Op::Dil(DwPw::new(b, "0", (c, c), k, stride, 2, hw)?.0)
                }
                "avg_pool_3x3" | "max_pool_3x3" => {
                    let max = name == "max_pool_3x3";
                    // padding not counted (count_include_pad=False): the
                    // average over a window is divided by its share of real
                    // positions, computed once here
                    let share = if max {
                        None
                    } else {
                        let ones = Tensor::ones((1, 1, hw.0, hw.1), DType::F32, &Device::Cpu)?;
                        let share = crate::ops::avg_pool2d_candle(&ones, &pool_config(stride))?;
                        Some(share.to_device(b.device())?)
                    };
                    Op::Pool {
                        max,
                        stride,
                        share,
                        bn: if pool_bn { Some(b.bn("bn", c)?) } else { None },
                    }
                }
                other => candle_core::bail!("unknown DARTS primitive `{other}`"),
            })
        })
    }

    fn forward(&self, xs: &Tensor, train: bool, k: Kernels) -> Result<Tensor> {
        match self {
            Op::Zero { stride } => {
                let (n, c, h, w) = xs.dims4()?;
                Tensor::zeros(
                    (n, c, h.div_ceil(*stride), w.div_ceil(*stride)),
                    xs.dtype(),
                    xs.device(),
                )
            }
            Op::Identity => Ok(xs.clone()),
            Op::Reduce(r) => r.forward(xs, train, k),
            Op::Sep(a, b) => b.forward(&a.forward(xs, train, k)?, train, k),
            Op::Dil(a) => a.forward(xs, train, k),
            Op::Pool {
                max,
                stride,
                share,
                bn,
            } => {
                let cfg = pool_config(*stride);
                let y = match share {
                    Some(share) if !*max => k.avg_pool2d(xs, &cfg)?.broadcast_div(share)?,
                    _ => k.max_pool2d(xs, &cfg)?,
                };
                match bn {
                    Some(bn) => bn.forward(&y, train, false, k),
                    None => Ok(y),
                }
            }
        }
    }
}

/// An edge: the operations it mixes (one in a discrete cell), with their
/// columns of the architecture parameters.
#[derive(Clone, Debug)]
struct Edge {
    from: usize,
    ops: Vec<(usize, Op)>,
}

/// The first cell's input preprocessing.
#[derive(Clone, Debug)]
enum Pre {
    Reduce(FactorizedReduce),
    Conv(ReluConvBn),
}

#[derive(Clone, Debug)]
struct Cell {
    reduction: bool,
    pre0: Pre,
    pre1: ReluConvBn,
    /// Per node, its edges.
    nodes: Vec<Vec<(usize, Edge)>>,
}

/// What a cell's edges are: every primitive of every edge (search), or the
/// genotype's.
enum Edges<'a> {
    Search,
    Discrete(&'a [(String, usize)]),
}

impl Cell {
    #[allow(clippy::too_many_arguments)]
    fn new(
        b: &mut Builder,
        (c_pp, c_p, c): (usize, usize, usize),
        reduction: bool,
        reduction_prev: bool,
        edges: Edges<'_>,
        (hw_pp, hw_p): ((usize, usize), (usize, usize)),
    ) -> Result<(Self, (usize, usize))> {
        let pre0 = if reduction_prev {
            Pre::Reduce(FactorizedReduce::new(b, "pre0", c_pp, c, hw_pp)?)
        } else {
            Pre::Conv(ReluConvBn::new(b, "pre0", c_pp, c, hw_pp)?)
        };
        let pre1 = ReluConvBn::new(b, "pre1", c_p, c, hw_p)?;
        let out = if reduction {
            (hw_p.0.div_ceil(2), hw_p.1.div_ceil(2))
        } else {
            hw_p
        };
        let mut nodes = Vec::with_capacity(STEPS);
        let mut index = 0;
        for node in 0..STEPS {
            let mut node_edges = Vec::new();
            for from in 0..node + 2 {
                let stride = if reduction && from < 2 { 2 } else { 1 };
                let hw = if from < 2 { hw_p } else { out };
                let name = format!("edges.{index}");
                let ops: Vec<(usize, Op)> = match &edges {
                    Edges::Search => PRIMITIVES
                        .iter()
                        .enumerate()
                        .map(|(o, p)| {
                            b.scope(&name, |b| Ok((o, Op::new(b, p, c, stride, true, hw)?)))
                        })
                        .collect::<Result<_>>()?,
                    Edges::Discrete(genotype) => genotype[2 * node..2 * node + 2]
                        .iter()
                        .filter(|(_, f)| *f == from)
                        .map(|(p, _)| {
                            let o = PRIMITIVES.iter().position(|q| q == p).expect("checked");
                            b.scope(&name, |b| Ok((o, Op::new(b, p, c, stride, false, hw)?)))
                        })
                        .collect::<Result<_>>()?,
                };
                if !ops.is_empty() {
                    node_edges.push((index, Edge { from, ops }));
                }
                index += 1;
            }
            nodes.push(node_edges);
        }
        Ok((
            Self {
                reduction,
                pre0,
                pre1,
                nodes,
            },
            out,
        ))
    }

    /// The cell on `(s0, s1)`; `weights` (`[EDGES, 8]`, after the softmax)
    /// mixes the search network's edges.
    fn forward(
        &self,
        s0: &Tensor,
        s1: &Tensor,
        weights: Option<&Tensor>,
        train: bool,
        k: Kernels,
    ) -> Result<Tensor> {
        let s0 = match &self.pre0 {
            Pre::Reduce(r) => r.forward(s0, train, k)?,
            Pre::Conv(c) => c.forward(s0, train, k)?,
        };
        let mut states = vec![s0, self.pre1.forward(s1, train, k)?];
        for node in &self.nodes {
            let mut sum: Option<Tensor> = None;
            for (index, edge) in node {
                let x = &states[edge.from];
                for (o, op) in &edge.ops {
                    if matches!(op, Op::Zero { .. }) {
                        continue; // adds nothing, whatever its weight
                    }
                    let y = op.forward(x, train, k)?;
                    let y = match weights {
                        Some(w) => y.broadcast_mul(&w.get(*index)?.get(*o)?)?,
                        None => y,
                    };
                    sum = Some(match sum {
                        Some(s) => (s + y)?,
                        None => y,
                    });
                }
            }
            let sum = sum.ok_or_else(|| candle_core::Error::Msg("a node without edges".into()))?;
            states.push(sum);
        }
        Tensor::cat(&states[2..], 1)
    }
}

/// A DARTS network: the search network (every edge mixes all primitives,
/// weighted by the architecture parameters) or the discrete one of a
/// genotype. Its weights and batch-norm buffers are named like the zoo's
/// (`cells.3.edges.5.sep_conv_3x3.0.dw.weight`); the architecture
/// parameters (`alpha_normal`, `alpha_reduce`, `[EDGES, 8]`) are separate
/// variables, not among [`DartsNetwork::named_vars`].
pub struct DartsNetwork {
    config: DartsConfig,
    genotype: Option<Genotype>,
    stem: Conv,
    stem_bn: BatchNorm2d,
    cells: Vec<Cell>,
    fc: candle_nn::Linear,
    alphas: Option<(Var, Var)>,
    vars: BTreeMap<String, Var>,
    buffers: BTreeMap<String, Var>,
    params: usize,
    macs: u64,
    kernels: Kernels,
    device: Device,
}

impl DartsNetwork {
    /// The search network, its weights initialised as PyTorch's defaults
    /// from `seed` and its architecture parameters at `1e-3 · N(0, 1)` (as
    /// DARTS), from the same seed.
    pub fn search(config: DartsConfig, seed: u64, device: &Device) -> Result<Self> {
        Self::build(config, None, seed, device)
    }

    /// The discrete network of `genotype`, initialised from `seed`.
    pub fn discrete(
        config: DartsConfig,
        genotype: Genotype,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        genotype.check()?;
        Self::build(config, Some(genotype), seed, device)
    }

    /// `(parameters, MACs)` of the network of `config` (the search network
    /// without `genotype`), counted without allocating it.
    pub fn count(config: &DartsConfig, genotype: Option<&Genotype>) -> Result<(usize, u64)> {
        config.validate()?;
        if let Some(g) = genotype {
            g.check()?;
        }
        let mut b = Builder::dry();
        Self::layers(config, genotype, &mut b)?;
        let params = b.specs.iter().map(ParamSpec::numel).sum();
        Ok((params, b.macs))
    }

    /// Stem, cells and head, built with `b`.
    fn layers(
        config: &DartsConfig,
        genotype: Option<&Genotype>,
        b: &mut Builder,
    ) -> Result<(Conv, BatchNorm2d, Vec<Cell>, candle_nn::Linear)> {
        let (cin, h, w) = config.input;
        let c_stem = 3 * config.channels;
        let (stem, hw) = b.conv("stem", (cin, c_stem), 3, 1, 1, 1, false, (h, w))?;
        let stem_bn = b.bn("stem_bn", c_stem)?;
        let (mut c_pp, mut c_p, mut c) = (c_stem, c_stem, config.channels);
        let (mut hw_pp, mut hw_p) = (hw, hw);
        let mut reduction_prev = false;
        let mut cells = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let reduction = config.is_reduction(i);
            if reduction {
                c *= 2;
            }
            let edges = match genotype {
                None => Edges::Search,
                Some(g) if reduction => Edges::Discrete(&g.reduce),
                Some(g) => Edges::Discrete(&g.normal),
            };
            let (cell, out) = b.scope(&format!("cells.{i}"), |b| {
                Cell::new(
                    b,
                    (c_pp, c_p, c),
                    reduction,
                    reduction_prev,
                    edges,
                    (hw_pp, hw_p),
                )
            })?;
            cells.push(cell);
            reduction_prev = reduction;
            (c_pp, c_p) = (c_p, STEPS * c);
            (hw_pp, hw_p) = (hw_p, out);
        }
        let fc = b.linear("fc", c_p, config.classes)?;
        Ok((stem, stem_bn, cells, fc))
    }

    fn build(
        config: DartsConfig,
        genotype: Option<Genotype>,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let mut b = Builder::new(device);
        let (stem, stem_bn, cells, fc) = Self::layers(&config, genotype.as_ref(), &mut b)?;
        let values = kd_core::init::pytorch_default_init(&b.specs, seed);
        for spec in &b.specs {
            let var = &b.vars[&spec.name];
            var.set(&Tensor::from_slice(
                &values[&spec.name],
                spec.shape.as_slice(),
                device,
            )?)?;
        }
        let alphas = if genotype.is_none() {
            let mut rng =
                <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed ^ ALPHA_SALT);
            let mut draw = || -> Result<Var> {
                let v: Vec<f32> = (0..EDGES * PRIMITIVES.len())
                    .map(|_| 1e-3 * standard_normal(&mut rng))
                    .collect();
                Var::from_tensor(&Tensor::from_vec(v, (EDGES, PRIMITIVES.len()), device)?)
            };
            Some((draw()?, draw()?))
        } else {
            None
        };
        let params = b.specs.iter().map(ParamSpec::numel).sum();
        Ok(Self {
            config,
            genotype,
            stem,
            stem_bn,
            cells,
            fc,
            alphas,
            params,
            macs: b.macs,
            vars: b.vars,
            buffers: b.buffer_vars,
            kernels: Kernels::Auto,
            device: device.clone(),
        })
    }

    /// The same network on `kernels`.
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &DartsConfig {
        &self.config
    }

    /// The genotype of a discrete network (`None` for the search network).
    pub fn genotype(&self) -> Option<&Genotype> {
        self.genotype.as_ref()
    }

    /// Trainable weights (architecture parameters excluded).
    pub fn num_params(&self) -> usize {
        self.params
    }

    /// Multiply–accumulates of one sample's forward pass (every mixed
    /// operation counted in the search network).
    pub fn macs(&self) -> u64 {
        self.macs
    }

    /// `(alpha_normal, alpha_reduce)` of the search network.
    pub fn alphas(&self) -> Option<(&Var, &Var)> {
        self.alphas.as_ref().map(|(n, r)| (n, r))
    }

    /// The architecture parameters as named variables (empty for a
    /// discrete network).
    pub fn alpha_vars(&self) -> Vec<(String, Var)> {
        match &self.alphas {
            Some((n, r)) => vec![
                ("alpha_normal".to_string(), n.clone()),
                ("alpha_reduce".to_string(), r.clone()),
            ],
            None => Vec::new(),
        }
    }

    /// DARTS's discretisation of the current architecture parameters.
    pub fn derive_genotype(&self) -> Result<Genotype> {
        let (n, r) = self.alphas.as_ref().ok_or_else(|| {
            candle_core::Error::Msg("a discrete network has no architecture parameters".into())
        })?;
        Genotype::from_alphas(n.as_tensor(), r.as_tensor())
    }

    /// Batch-norm running statistics, sorted by name.
    pub fn named_buffers(&self) -> Vec<(String, Var)> {
        self.buffers
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    }

    /// Forward pass on `[B, C, H, W]`; features `stem`, `cell{i}` and `pool`.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Result<ModelOutput> {
        let k = self.kernels;
        let s = self
            .stem_bn
            .forward(&self.stem.forward(xs, k)?, train, false, k)?;
        let mut features = vec![("stem".to_string(), s.clone())];
        let weights = match &self.alphas {
            Some((n, r)) => Some((
                softmax_last_dim(n.as_tensor())?,
                softmax_last_dim(r.as_tensor())?,
            )),
            None => None,
        };
        let (mut s0, mut s1) = (s.clone(), s);
        for (i, cell) in self.cells.iter().enumerate() {
            let w = weights
                .as_ref()
                .map(|(n, r)| if cell.reduction { r } else { n });
            let out = cell.forward(&s0, &s1, w, train, k)?;
            features.push((format!("cell{i}"), out.clone()));
            (s0, s1) = (s1, out);
        }
        use candle_nn::Module;
        let pooled = global_avg_pool(&s1)?;
        let logits = self.fc.forward(&pooled)?;
        features.push(("pool".to_string(), pooled));
        Ok(ModelOutput { logits, features })
    }
}

/// Salt of the architecture parameters' seed.
const ALPHA_SALT: u64 = 0xDA75_DA75_DA75_DA75;

/// A standard normal draw (Box–Muller).
fn standard_normal(rng: &mut rand_chacha::ChaCha8Rng) -> f32 {
    use rand::Rng;
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// kd-core trains the weights; the search driver trains the architecture
/// parameters ([`DartsNetwork::alpha_vars`]) itself.
impl kd_core::Network for DartsNetwork {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<ModelOutput> {
        DartsNetwork::forward_t(self, xs, train)
    }

    fn named_vars(&self) -> Vec<(String, Var)> {
        self.vars
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    }

    fn device(&self) -> &Device {
        &self.device
    }

    /// Weights, batch-norm running statistics and architecture parameters.
    fn state(&self) -> kd_core::Result<BTreeMap<String, Tensor>> {
        Ok(self
            .vars
            .iter()
            .chain(&self.buffers)
            .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
            .chain(
                self.alpha_vars()
                    .into_iter()
                    .map(|(n, v)| (n, v.as_tensor().detach())),
            )
            .collect())
    }

    fn load_state(&self, state: &BTreeMap<String, Tensor>) -> kd_core::Result<()> {
        let all = self
            .vars
            .iter()
            .chain(&self.buffers)
            .map(|(n, v)| (n.clone(), v.clone()))
            .chain(self.alpha_vars());
        for (name, var) in all {
            let t = state.get(&name).ok_or_else(|| {
                kd_core::KdError::InvalidConfig(format!("the saved state has no `{name}`"))
            })?;
            if t.dims() != var.dims() {
                return Err(kd_core::KdError::ShapeMismatch(format!(
                    "saved `{name}` is {:?}, the variable {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            var.set(&t.to_device(&self.device)?.to_dtype(DType::F32)?.copy()?)?;
        }
        Ok(())
    }
}
