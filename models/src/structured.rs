//! Structured pruning, the model's side: the channel groups a network
//! declares ([`channel_groups`], no tracing) and the physical removal of
//! channels ([`remove_channels`]): a smaller dense network, its config
//! giving the new widths, that loads and runs as any other.
//!
//! Declared so far:
//!
//! - the CIFAR ResNets (shortcut A and B): each basic block's inner
//!   channels (`layerS.i.conv1`: conv1's outputs, bn1, conv2's inputs), and
//!   the residual streams — every tensor that writes or reads a stream's
//!   channel through the additions is in its group. With shortcut A the
//!   stem's stream (`conv1`) runs through all three stages, shifted by each
//!   stage's zero padding, whose channels form groups of their own
//!   (`layer2.pad_lo`, `layer2.pad_hi`, …); with shortcut B each stage's
//!   projection starts a stream (`layer1`, `layer2`, `layer3`). Pruned
//!   streams may leave the padding uneven (`lo ≠ hi`), which the kernels
//!   take as it is;
//! - ResNet-18/34/50 (projection shortcuts): each block's inner channels
//!   (`conv1`, and a bottleneck's `conv2`), the stem's stream (`conv1`)
//!   and each projected stage's stream (`layerS`);
//! - the wide ResNets (pre-activation): each block's inner channels
//!   (`blockS.i.conv1`), the stem's stream (`conv1`) and each projected
//!   stage's (`blockS`), whose readers include every block's `bn1` and
//!   the head's `bn`;
//! - MobileNetV2: each block's expanded channels (`stageS.i.expand`,
//!   carried through the depthwise convolution), the stem's stream, each
//!   stage's (`stageS`) and the head's (`conv2`);
//! - LeNet-5: each layer's outputs (`conv1`, `conv2`, `fc1`, `fc2`), its
//!   bias and the next layer's inputs (`conv2` into `fc1` through the
//!   flatten: each channel is a span of `fc1`'s inputs);
//! - VGG-BN's convolutions — each one's outputs, bias and batch norm, and
//!   the inputs of the next convolution or, after the global average pool,
//!   of `fc`.

use std::collections::BTreeMap;

use candle_core::Tensor;
use prune_core::group::{ChannelGroup, Role, Slice};

use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::zoo::{resnet_layout, wrn_layout, CifarLayout, ResNetBlock, StageEntry, ZooArch};

/// The channel groups of `config` (see the module docs); an error for the
/// networks that declare none yet.
pub fn channel_groups(config: &ModelConfig) -> Result<Vec<ChannelGroup>> {
    let model = match config {
        ModelConfig::Cnn { model, .. } => Some(*model),
        _ => None,
    };
    let widths = config.width_groups();
    match (model, config) {
        (Some(m), ModelConfig::Cnn { widths, .. }) if CifarLayout::of(m).is_some() => {
            let layout = CifarLayout::of(m).expect("checked");
            cifar_groups(layout, widths)
        }
        // VGG: each convolution's outputs, its bias and batch norm, and the
        // inputs of the next convolution (or of `fc`, after the global pool)
        (Some(m), ModelConfig::Cnn { widths, .. }) if resnet_layout(m).is_some() => {
            let (kind, blocks) = resnet_layout(m).expect("checked");
            Ok(resnet_groups(kind, blocks, widths))
        }
        (Some(m), ModelConfig::Cnn { widths, .. }) if wrn_layout(m).is_some() => {
            let (depth, k) = wrn_layout(m).expect("checked");
            Ok(wrn_groups(depth, k, widths))
        }
        (Some(ZooArch::MobileNetV2), ModelConfig::Cnn { widths, .. }) => Ok(mobilenet_groups(widths)),
        (None, ModelConfig::LeNet5 { .. }) => {
            let g = config
                .lenet_geometry()
                .ok_or_else(|| ModelError::Config(format!("{}: unusable input or widths", config.name())))?;
            Ok(lenet_groups(&g))
        }
        (Some(ZooArch::Vgg11 | ZooArch::Vgg13 | ZooArch::Vgg16 | ZooArch::Vgg19), _) => {
            let next: Vec<String> = widths
                .iter()
                .skip(1)
                .map(|(layer, _)| format!("{layer}.weight"))
                .chain(std::iter::once("fc.weight".to_string()))
                .collect();
            Ok(widths
                .into_iter()
                .zip(next)
                .map(|((layer, channels), next)| {
                    let bn = layer.trim_end_matches("conv").to_string() + "bn";
                    let mut members = vec![
                        Slice::new(format!("{layer}.weight"), 0, Role::Weight),
                        Slice::new(format!("{layer}.bias"), 0, Role::Bias),
                    ];
                    members.extend(bn_slices(&bn, None));
                    members.push(Slice::new(next, 1, Role::Weight));
                    ChannelGroup {
                        name: layer,
                        channels,
                        members,
                    }
                })
                .collect())
        }
        _ => Err(ModelError::Config(format!(
            "structured pruning covers LeNet-5, VGG-BN and the residual networks of the zoo, not {}",
            config.name()
        ))),
    }
}

/// A batch norm's four vectors: whole (`None`), or from an offset.
fn bn_slices(bn: &str, offset: Option<usize>) -> [Slice; 4] {
    [
        ("weight", Role::BnWeight),
        ("bias", Role::BnBias),
        ("running_mean", Role::BnStat),
        ("running_var", Role::BnStat),
    ]
    .map(|(v, role)| Slice {
        offset,
        ..Slice::new(format!("{bn}.{v}"), 0, role)
    })
}

/// A CIFAR ResNet's groups: each block's inner channels (`layerS.i.conv1`),
/// then the residual streams.
///
/// A stream's channels are coupled through every addition that reads them:
/// the stem's outputs, every block's `conv2`/`bn2` outputs in the stage,
/// the projection's outputs, and the inputs of every `conv1`, projection
/// and `fc` that read the stream. With shortcut A, stage `s+1`'s stream is
/// `[lo zeros | stage s's stream | hi zeros]`, so the stem's group runs
/// through every stage at a growing offset, and each stage's padded
/// channels are groups of their own (`layerS.pad_lo`, `layerS.pad_hi`).
/// With shortcut B each stage's projection starts a stream (`layerS`).
fn cifar_groups(
    layout: CifarLayout,
    widths: &BTreeMap<String, usize>,
) -> Result<Vec<ChannelGroup>> {
    let streams = layout
        .streams(|name, default| Ok(widths.get(name).copied().unwrap_or(default)))
        .map_err(|e| ModelError::Config(e.to_string()))?;
    let n = layout.blocks_per_stage();
    let mut inner = Vec::new();
    let mut stream_groups = vec![ChannelGroup {
        name: "conv1".to_string(),
        channels: streams.stem,
        members: vec![Slice::new("conv1.weight", 0, Role::Weight)],
    }];
    stream_groups[0].members.extend(bn_slices("bn1", None));
    // the current stream: (group, offset) of each of its parts
    let mut stream: Vec<(usize, usize)> = vec![(0, 0)];
    let add = |groups: &mut Vec<ChannelGroup>,
               stream: &[(usize, usize)],
               make: &dyn Fn(usize) -> Vec<Slice>| {
        for &(g, offset) in stream {
            groups[g].members.extend(make(offset));
        }
    };
    for (s, &(width, entry)) in streams.stages.iter().enumerate() {
        let stage = format!("layer{}", s + 1);
        let before = stream.clone();
        match entry {
            StageEntry::Same => {}
            StageEntry::Projection => {
                stream_groups.push(ChannelGroup {
                    name: stage.clone(),
                    channels: width,
                    members: Vec::new(),
                });
                stream = vec![(stream_groups.len() - 1, 0)];
            }
            StageEntry::ZeroPad { lo, hi } => {
                let carried: usize = widths_of(&stream_groups, &before);
                for (side, channels) in [("pad_lo", lo), ("pad_hi", hi)] {
                    stream_groups.push(ChannelGroup {
                        name: format!("{stage}.{side}"),
                        channels,
                        members: Vec::new(),
                    });
                }
                let (glo, ghi) = (stream_groups.len() - 2, stream_groups.len() - 1);
                stream = std::iter::once((glo, 0))
                    .chain(before.iter().map(|&(g, o)| (g, o + lo)))
                    .chain(std::iter::once((ghi, lo + carried)))
                    .collect();
            }
        }
        for i in 0..n {
            let block = format!("{stage}.{i}");
            if widths.get(&block) == Some(&0) {
                continue; // removed
            }
            let input = if i == 0 { &before } else { &stream };
            add(&mut stream_groups, input, &|o| {
                vec![Slice::at(
                    format!("{block}.conv1.weight"),
                    1,
                    o,
                    Role::Weight,
                )]
            });
            if i == 0 && entry == StageEntry::Projection {
                add(&mut stream_groups, &before, &|o| {
                    vec![Slice::at(
                        format!("{block}.shortcut.conv.weight"),
                        1,
                        o,
                        Role::Weight,
                    )]
                });
                add(&mut stream_groups, &stream, &|o| {
                    let mut m = vec![Slice::at(
                        format!("{block}.shortcut.conv.weight"),
                        0,
                        o,
                        Role::Weight,
                    )];
                    m.extend(bn_slices(&format!("{block}.shortcut.bn"), Some(o)));
                    m
                });
            }
            add(&mut stream_groups, &stream, &|o| {
                let mut m = vec![Slice::at(
                    format!("{block}.conv2.weight"),
                    0,
                    o,
                    Role::Weight,
                )];
                m.extend(bn_slices(&format!("{block}.bn2"), Some(o)));
                m
            });
            // the block's inner channels: conv1's outputs, bn1, conv2's inputs
            let layer = format!("{block}.conv1");
            let mut members = vec![Slice::new(format!("{layer}.weight"), 0, Role::Weight)];
            members.extend(bn_slices(&format!("{block}.bn1"), None));
            members.push(Slice::new(format!("{block}.conv2.weight"), 1, Role::Weight));
            inner.push(ChannelGroup {
                channels: widths.get(&layer).copied().unwrap_or(layout.widths[s + 1]),
                name: layer,
                members,
            });
        }
    }
    add(&mut stream_groups, &stream, &|o| {
        vec![Slice::at("fc.weight", 1, o, Role::Weight)]
    });
    inner.extend(stream_groups);
    Ok(inner)
}

/// ResNet-18/34/50's groups: each block's inner channels (`conv1`'s
/// outputs, and a bottleneck's `conv2`'s), then the streams — the stem's
/// (`conv1`, carried through `layer1` by its identity shortcuts in
/// ResNet-18/34) and each projected stage's (`layerS`), with every
/// convolution, batch norm and `fc` input that writes or reads them.
fn resnet_groups(
    kind: ResNetBlock,
    blocks: [usize; 4],
    widths: &BTreeMap<String, usize>,
) -> Vec<ChannelGroup> {
    let w = |name: &str, default: usize| widths.get(name).copied().unwrap_or(default);
    let mut inner = Vec::new();
    let mut streams = vec![ChannelGroup {
        name: "conv1".to_string(),
        channels: w("conv1", 64),
        members: vec![Slice::new("conv1.weight", 0, Role::Weight)],
    }];
    streams[0].members.extend(bn_slices("bn1", None));
    let mut published = 64;
    let last_conv = match kind {
        ResNetBlock::Basic => 2,
        ResNetBlock::Bottleneck => 3,
    };
    for (s, (&n, planes)) in blocks.iter().zip([64, 128, 256, 512]).enumerate() {
        let full = planes * kind.expansion();
        let stage = format!("layer{}", s + 1);
        let before = streams.len() - 1;
        if s > 0 || published != full {
            streams.push(ChannelGroup {
                channels: w(&stage, full),
                name: stage.clone(),
                members: Vec::new(),
            });
        }
        let now = streams.len() - 1;
        for i in 0..n {
            let block = format!("{stage}.{i}");
            if widths.get(&block) == Some(&0) {
                continue; // removed
            }
            let input = if i == 0 { before } else { now };
            streams[input].members.push(Slice::new(
                format!("{block}.conv1.weight"),
                1,
                Role::Weight,
            ));
            if i == 0 && now != before {
                let sc = format!("{block}.shortcut");
                streams[before].members.push(Slice::new(
                    format!("{sc}.conv.weight"),
                    1,
                    Role::Weight,
                ));
                streams[now]
                    .members
                    .push(Slice::new(format!("{sc}.conv.weight"), 0, Role::Weight));
                streams[now]
                    .members
                    .extend(bn_slices(&format!("{sc}.bn"), None));
            }
            streams[now].members.push(Slice::new(
                format!("{block}.conv{last_conv}.weight"),
                0,
                Role::Weight,
            ));
            streams[now]
                .members
                .extend(bn_slices(&format!("{block}.bn{last_conv}"), None));
            // inner: conv k's outputs, bn k, conv k+1's inputs
            for k in 1..last_conv {
                let layer = format!("{block}.conv{k}");
                let mut members = vec![Slice::new(format!("{layer}.weight"), 0, Role::Weight)];
                members.extend(bn_slices(&format!("{block}.bn{k}"), None));
                members.push(Slice::new(
                    format!("{block}.conv{}.weight", k + 1),
                    1,
                    Role::Weight,
                ));
                inner.push(ChannelGroup {
                    channels: w(&layer, planes),
                    name: layer,
                    members,
                });
            }
        }
        published = full;
    }
    let last = streams.len() - 1;
    streams[last]
        .members
        .push(Slice::new("fc.weight", 1, Role::Weight));
    inner.extend(streams);
    inner
}

/// A wide ResNet's groups (pre-activation): each block's inner channels
/// (`blockS.i.conv1`: conv1's outputs, bn2, conv2's inputs), then the
/// streams — the stem's (`conv1`) and each projected stage's (`blockS`).
/// A stream's readers include every block's `bn1` (it normalises the
/// stream before `conv1` and the projection) and the head's `bn`.
fn wrn_groups(depth: usize, k: usize, widths: &BTreeMap<String, usize>) -> Vec<ChannelGroup> {
    let w = |name: &str, default: usize| widths.get(name).copied().unwrap_or(default);
    let n = (depth - 4) / 6;
    let mut inner = Vec::new();
    let mut streams = vec![ChannelGroup {
        name: "conv1".to_string(),
        channels: w("conv1", 16),
        members: vec![Slice::new("conv1.weight", 0, Role::Weight)],
    }];
    let mut published = 16;
    for (s, full) in [16 * k, 32 * k, 64 * k].into_iter().enumerate() {
        let stage = format!("block{}", s + 1);
        let before = streams.len() - 1;
        if s > 0 || published != full {
            streams.push(ChannelGroup {
                channels: w(&stage, full),
                name: stage.clone(),
                members: Vec::new(),
            });
        }
        let now = streams.len() - 1;
        for i in 0..n {
            let block = format!("{stage}.{i}");
            if widths.get(&block) == Some(&0) {
                continue; // removed
            }
            let input = if i == 0 { before } else { now };
            streams[input]
                .members
                .extend(bn_slices(&format!("{block}.bn1"), None));
            streams[input].members.push(Slice::new(
                format!("{block}.conv1.weight"),
                1,
                Role::Weight,
            ));
            if i == 0 && now != before {
                let sc = format!("{block}.shortcut.weight");
                streams[before]
                    .members
                    .push(Slice::new(&sc, 1, Role::Weight));
                streams[now].members.push(Slice::new(&sc, 0, Role::Weight));
            }
            streams[now]
                .members
                .push(Slice::new(format!("{block}.conv2.weight"), 0, Role::Weight));
            let layer = format!("{block}.conv1");
            let mut members = vec![Slice::new(format!("{layer}.weight"), 0, Role::Weight)];
            members.extend(bn_slices(&format!("{block}.bn2"), None));
            members.push(Slice::new(format!("{block}.conv2.weight"), 1, Role::Weight));
            inner.push(ChannelGroup {
                channels: w(&layer, full),
                name: layer,
                members,
            });
        }
        published = full;
    }
    let last = streams.len() - 1;
    streams[last].members.extend(bn_slices("bn", None));
    streams[last]
        .members
        .push(Slice::new("fc.weight", 1, Role::Weight));
    inner.extend(streams);
    inner
}

/// MobileNetV2's groups: each expanding block's hidden channels
/// (`stageS.i.expand`: the expansion's outputs and batch norm, the
/// depthwise convolution's channels and batch norm — a depthwise channel
/// reads only its own input channel, so it carries the group through —
/// and the projection's inputs); the streams: the stem's (`conv1`, through
/// the first block's depthwise convolution, which has no expansion) and
/// each stage's (`stageS`: every projection and its batch norm, summed by
/// the residuals, and the next expansion or `conv2` reading it); the
/// head's (`conv2`, read by `fc`).
fn mobilenet_groups(widths: &BTreeMap<String, usize>) -> Vec<ChannelGroup> {
    use crate::zoo::mobilenetv2::STAGES;
    let w = |name: &str, default: usize| widths.get(name).copied().unwrap_or(default);
    let mut inner = Vec::new();
    let mut streams = vec![ChannelGroup {
        name: "conv1".to_string(),
        channels: w("conv1", 32),
        members: vec![Slice::new("conv1.weight", 0, Role::Weight)],
    }];
    streams[0].members.extend(bn_slices("bn1", None));
    let mut published = 32;
    for (s, &(t, c, n, _)) in STAGES.iter().enumerate() {
        let stage = format!("stage{}", s + 1);
        let before = streams.len() - 1;
        streams.push(ChannelGroup {
            channels: w(&stage, c),
            name: stage.clone(),
            members: Vec::new(),
        });
        let now = streams.len() - 1;
        for i in 0..n {
            let block = format!("{stage}.{i}");
            if widths.get(&block) == Some(&0) {
                continue; // removed
            }
            let input = if i == 0 { before } else { now };
            // the depthwise convolution and the projection's inputs: the
            // hidden channels' group, or the input stream's without expansion
            let mut hidden = vec![Slice::new(
                format!("{block}.depthwise.weight"),
                0,
                Role::Weight,
            )];
            hidden.extend(bn_slices(&format!("{block}.depthwise_bn"), None));
            hidden.push(Slice::new(
                format!("{block}.project.weight"),
                1,
                Role::Weight,
            ));
            if t == 1 {
                streams[input].members.extend(hidden);
            } else {
                streams[input].members.push(Slice::new(
                    format!("{block}.expand.weight"),
                    1,
                    Role::Weight,
                ));
                let layer = format!("{block}.expand");
                let mut members = vec![Slice::new(format!("{layer}.weight"), 0, Role::Weight)];
                members.extend(bn_slices(&format!("{block}.expand_bn"), None));
                members.extend(hidden);
                let full = if i == 0 { published } else { c } * t;
                inner.push(ChannelGroup {
                    channels: w(&layer, full),
                    name: layer,
                    members,
                });
            }
            streams[now].members.push(Slice::new(
                format!("{block}.project.weight"),
                0,
                Role::Weight,
            ));
            streams[now]
                .members
                .extend(bn_slices(&format!("{block}.project_bn"), None));
        }
        published = c;
    }
    let last = streams.len() - 1;
    streams[last]
        .members
        .push(Slice::new("conv2.weight", 1, Role::Weight));
    let mut head = vec![Slice::new("conv2.weight", 0, Role::Weight)];
    head.extend(bn_slices("bn2", None));
    head.push(Slice::new("fc.weight", 1, Role::Weight));
    streams.push(ChannelGroup {
        name: "conv2".to_string(),
        channels: w("conv2", 1280),
        members: head,
    });
    inner.extend(streams);
    inner
}

/// LeNet-5's groups: each layer's outputs and bias with the next layer's
/// inputs — for `conv2`, through the flatten into `fc1`, where each
/// channel is `h2·w2` consecutive inputs.
fn lenet_groups(g: &crate::zoo::lenet5::Geometry) -> Vec<ChannelGroup> {
    let span = g.pool2.0 * g.pool2.1;
    let next = ["conv2", "fc1", "fc2", "fc3"];
    crate::zoo::lenet5::WIDTH_LAYERS
        .iter()
        .zip(next)
        .zip(g.widths)
        .map(|((layer, next), channels)| ChannelGroup {
            name: layer.to_string(),
            channels,
            members: vec![
                Slice::new(format!("{layer}.weight"), 0, Role::Weight),
                Slice::new(format!("{layer}.bias"), 0, Role::Bias),
                Slice::new(format!("{next}.weight"), 1, Role::Weight)
                    .spanning(if *layer == "conv2" { span } else { 1 }),
            ],
        })
        .collect()
}

/// The channels of a stream made of `parts`.
fn widths_of(groups: &[ChannelGroup], parts: &[(usize, usize)]) -> usize {
    parts.iter().map(|&(g, _)| groups[g].channels).sum()
}

/// `ckpt` with only the channels `kept[group]` (ascending, distinct) of
/// each named group: every member tensor (and its mask) cut along its axis,
/// the group's width written into the config. Groups not named keep all
/// their channels. Errors name an unknown group, an empty or out-of-range
/// channel list, or a tensor that disagrees with the config.
pub fn remove_channels(
    ckpt: &Checkpoint,
    kept: &BTreeMap<String, Vec<usize>>,
) -> Result<Checkpoint> {
    let groups = channel_groups(&ckpt.config)?;
    let mut out = ckpt.clone();
    let mut widths = ckpt.config.widths().cloned().unwrap_or_default();
    for name in kept.keys() {
        if !groups.iter().any(|g| &g.name == name) {
            return Err(ModelError::Config(format!(
                "no channel group `{name}` in {}",
                ckpt.config.name()
            )));
        }
    }
    // per (tensor, axis): which indices stay — several groups may share an
    // axis at different offsets (a residual stream), so every cut is
    // decided before any tensor is narrowed
    let mut keep: BTreeMap<(String, usize), Vec<bool>> = BTreeMap::new();
    for g in &groups {
        let Some(channels) = kept.get(&g.name) else {
            continue;
        };
        if channels.is_empty()
            || channels.windows(2).any(|w| w[0] >= w[1])
            || channels.last().is_some_and(|&c| c >= g.channels)
        {
            return Err(ModelError::Config(format!(
                "group `{}`: the kept channels must be ascending, distinct, in 0..{} and not none",
                g.name, g.channels
            )));
        }
        for m in &g.members {
            let t = ckpt
                .tensors
                .get(&m.tensor)
                .ok_or_else(|| ModelError::MissingTensor(m.tensor.clone()))?;
            let len = t.dims().get(m.axis).copied().unwrap_or(0);
            if !m.fits(len, g.channels) {
                return Err(ModelError::ShapeMismatch {
                    name: m.tensor.clone(),
                    expected: vec![m.start() + g.channels * m.span],
                    got: t.dims().to_vec(),
                });
            }
            let k = keep
                .entry((m.tensor.clone(), m.axis))
                .or_insert_with(|| vec![true; len]);
            for c in 0..g.channels {
                m.indices(c).for_each(|i| k[i] = false);
            }
            for &c in channels {
                m.indices(c).for_each(|i| k[i] = true);
            }
        }
        widths.insert(g.name.clone(), channels.len());
    }
    for ((name, axis), k) in &keep {
        if k.iter().all(|&k| k) {
            continue;
        }
        let index: Vec<u32> = (0..k.len()).filter(|&i| k[i]).map(|i| i as u32).collect();
        let cut = |t: &Tensor| -> Result<Tensor> {
            let index = Tensor::new(index.as_slice(), t.device())?;
            Ok(t.index_select(&index, *axis)?)
        };
        // from `out`: a tensor in two groups (a convolution's outputs in
        // one, its inputs in another) is cut along both axes
        let t = cut(&out.tensors[name])?;
        out.tensors.insert(name.clone(), t);
        if let Some(mask) = out.masks.get(name) {
            let mask = cut(mask)?;
            out.masks.insert(name.clone(), mask);
        }
        out.quantized.remove(name);
    }
    if let Some(w) = out.config.widths_mut() {
        *w = widths;
    }
    out.config.validate()?;
    Ok(out)
}

/// The residual blocks of `config` that may be removed whole (those whose
/// shortcut is the identity, so the network stays valid without them), each
/// with its weight tensors, in forward order; blocks already removed are
/// left out. An error for the networks that declare none.
pub fn removable_blocks(config: &ModelConfig) -> Result<Vec<(String, Vec<String>)>> {
    let blocks = config.residual_blocks();
    let residual = matches!(config, ModelConfig::Cnn { model, .. }
        if CifarLayout::of(*model).is_some()
            || resnet_layout(*model).is_some()
            || wrn_layout(*model).is_some()
            || *model == ZooArch::MobileNetV2);
    if !residual {
        return Err(ModelError::Config(format!(
            "block removal covers the residual networks of the zoo, not {}",
            config.name()
        )));
    }
    let specs = config.param_specs();
    Ok(blocks
        .into_iter()
        .filter(|(_, kept)| *kept)
        .map(|(block, _)| {
            let prefix = format!("{block}.");
            let weights = specs
                .iter()
                .filter(|s| s.name.starts_with(&prefix) && s.shape.len() == 4)
                .map(|s| s.name.clone())
                .collect();
            (block, weights)
        })
        .collect())
}

/// `ckpt` without the residual blocks `names` (each one of
/// [`removable_blocks`]): their tensors, masks and widths dropped, each
/// block's width set to 0 in the config — the block's input passes on
/// through its identity shortcut. Errors name an unknown, fixed or already
/// removed block.
pub fn remove_blocks(ckpt: &Checkpoint, names: &[String]) -> Result<Checkpoint> {
    let removable = removable_blocks(&ckpt.config)?;
    let mut out = ckpt.clone();
    let ModelConfig::Cnn { widths, .. } = &mut out.config else {
        unreachable!("removable_blocks covers zoo networks only")
    };
    for name in names {
        if !removable.iter().any(|(b, _)| b == name) {
            let known: Vec<&str> = removable.iter().map(|(b, _)| b.as_str()).collect();
            return Err(ModelError::Config(format!(
                "no removable block `{name}` (those with an identity shortcut: {})",
                known.join(", ")
            )));
        }
        let prefix = format!("{name}.");
        widths.retain(|k, _| !k.starts_with(&prefix));
        widths.insert(name.clone(), 0);
        out.tensors.retain(|k, _| !k.starts_with(&prefix));
        out.masks.retain(|k, _| !k.starts_with(&prefix));
        out.quantized.retain(|k, _| !k.starts_with(&prefix));
    }
    out.config.validate()?;
    Ok(out)
}
