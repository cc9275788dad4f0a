//! Structured pruning, the model's side: the channel groups a network
//! declares ([`channel_groups`], no tracing) and the physical removal of
//! channels ([`remove_channels`]): a smaller dense network, its config
//! giving the new widths, that loads and runs as any other.
//!
//! Declared so far:
//!
//! - the CIFAR ResNets' block-internal channels — for each basic block, the
//!   outputs of `conv1`, the four vectors of `bn1` and the inputs of
//!   `conv2`. These groups touch no residual sum, so any subset of them can
//!   go; the residual streams (coupled through every addition of a stage,
//!   and across stages by shortcut A's zero padding) keep their width;
//! - VGG-BN's convolutions — each one's outputs, bias and batch norm, and
//!   the inputs of the next convolution or, after the global average pool,
//!   of `fc`.

use std::collections::BTreeMap;

use candle_core::Tensor;
use prune_core::group::{ChannelGroup, Role, Slice};

use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::zoo::{CifarLayout, ZooArch};

/// The channel groups of `config` (see the module docs); an error for the
/// networks that declare none yet.
pub fn channel_groups(config: &ModelConfig) -> Result<Vec<ChannelGroup>> {
    let model = match config {
        ModelConfig::Cnn { model, .. } => Some(*model),
        _ => None,
    };
    let bn_slices = |bn: &str| {
        [
            Slice::new(format!("{bn}.weight"), 0, Role::BnWeight),
            Slice::new(format!("{bn}.bias"), 0, Role::BnBias),
            Slice::new(format!("{bn}.running_mean"), 0, Role::BnStat),
            Slice::new(format!("{bn}.running_var"), 0, Role::BnStat),
        ]
    };
    let widths = config.width_groups();
    match model {
        Some(m) if CifarLayout::of(m).is_some() => Ok(widths
            .into_iter()
            .map(|(layer, channels)| {
                let block = layer.trim_end_matches("conv1");
                let mut members = vec![Slice::new(format!("{layer}.weight"), 0, Role::Weight)];
                members.extend(bn_slices(&format!("{block}bn1")));
                members.push(Slice::new(format!("{block}conv2.weight"), 1, Role::Weight));
                ChannelGroup {
                    name: layer,
                    channels,
                    members,
                }
            })
            .collect()),
        // VGG: each convolution's outputs, its bias and batch norm, and the
        // inputs of the next convolution (or of `fc`, after the global pool)
        Some(ZooArch::Vgg11 | ZooArch::Vgg13 | ZooArch::Vgg16 | ZooArch::Vgg19) => {
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
                    members.extend(bn_slices(&bn));
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
            "structured pruning covers the CIFAR ResNets and VGG so far, not {}",
            config.name()
        ))),
    }
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
    let mut widths = match &ckpt.config {
        ModelConfig::Cnn { widths, .. } => widths.clone(),
        _ => BTreeMap::new(),
    };
    for name in kept.keys() {
        if !groups.iter().any(|g| &g.name == name) {
            return Err(ModelError::Config(format!(
                "no channel group `{name}` in {}",
                ckpt.config.name()
            )));
        }
    }
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
        let index = Tensor::new(
            channels.iter().map(|&c| c as u32).collect::<Vec<u32>>(),
            &candle_core::Device::Cpu,
        )?;
        for m in &g.members {
            let cut = |t: &Tensor| -> Result<Tensor> {
                if t.dims().get(m.axis) != Some(&g.channels) {
                    return Err(ModelError::ShapeMismatch {
                        name: m.tensor.clone(),
                        expected: vec![g.channels],
                        got: t.dims().to_vec(),
                    });
                }
                Ok(t.index_select(&index.to_device(t.device())?, m.axis)?)
            };
            // from `out`: a tensor in two groups (a convolution's outputs in
            // one, its inputs in the one before) is cut along both axes
            let t = out
                .tensors
                .get(&m.tensor)
                .ok_or_else(|| ModelError::MissingTensor(m.tensor.clone()))?;
            let t = cut(t)?;
            out.tensors.insert(m.tensor.clone(), t);
            if let Some(mask) = out.masks.get(&m.tensor) {
                let mask = cut(mask)?;
                out.masks.insert(m.tensor.clone(), mask);
            }
            out.quantized.remove(&m.tensor);
        }
        widths.insert(g.name.clone(), channels.len());
    }
    if let ModelConfig::Cnn { widths: w, .. } = &mut out.config {
        *w = widths;
    }
    out.config.validate()?;
    Ok(out)
}
