//! Serialisable model configurations and the model-name registry.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::zoo::lenet5::Geometry;
use crate::zoo::{lenet5, mlp};
use crate::zoo::{BufferSpec, Builder, ZooArch};
use kd_core::init::ParamSpec;

/// Which network to build and for which input and class count.
///
/// Serialised with an `arch` tag, e.g.
/// `{"arch":"mlp","input_dim":784,"hidden":[300,100],"num_classes":10}` or
/// `{"arch":"lenet5","in_channels":1,"height":28,"width":28,"num_classes":10}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "kebab-case")]
pub enum ModelConfig {
    /// Fully connected ReLU network on the flattened input ([`crate::zoo::mlp::Mlp`]).
    Mlp {
        /// Inputs after flattening, `C·H·W`.
        input_dim: usize,
        /// Hidden widths, at least one.
        hidden: Vec<usize>,
        /// Output classes.
        num_classes: usize,
    },
    /// LeNet-5 on `C×H×W` images ([`crate::zoo::lenet5::LeNet5`]).
    #[serde(rename = "lenet5")]
    LeNet5 {
        /// Input channels.
        in_channels: usize,
        /// Input height in pixels (at least 4).
        height: usize,
        /// Input width in pixels (at least 4).
        width: usize,
        /// Output classes.
        num_classes: usize,
        /// Width multiplier `K` of `lenet5-xK` (1, the classic network, is
        /// left out of the serialised form).
        #[serde(default = "one", skip_serializing_if = "is_one")]
        scale: usize,
        /// Widths that differ from the network's (`conv1`, `conv2`, `fc1`,
        /// `fc2`): a structurally pruned network; empty and left out of
        /// the serialised form otherwise.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        widths: BTreeMap<String, usize>,
    },
    /// A network of the CNN zoo ([`crate::zoo`]) on `C×H×W` images.
    Cnn {
        /// Which network, e.g. `resnet56`.
        model: ZooArch,
        /// Input channels.
        in_channels: usize,
        /// Input height in pixels.
        height: usize,
        /// Input width in pixels.
        width: usize,
        /// Output classes.
        num_classes: usize,
        /// Channel counts that differ from the network's defaults, by the
        /// layer that produces them (`layer1.0.conv1`): a structurally pruned
        /// network. Empty (and left out of the serialised form) for the
        /// network as published; [`ModelConfig::width_groups`] lists the
        /// layers that take one.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        widths: BTreeMap<String, usize>,
    },
}

fn one() -> usize {
    1
}

fn is_one(v: &usize) -> bool {
    *v == 1
}

impl ModelConfig {
    /// The names [`ModelConfig::from_name`] accepts, for help texts.
    pub const KNOWN: &'static [&'static str] = &[
        "lenet-300-100",
        "mlp-<w1>-<w2>-...",
        "lenet5",
        "lenet5-x<k>",
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
        "resnet110",
        "resnet8x4",
        "resnet32x4",
        "resnet18",
        "resnet34",
        "resnet50",
        "vgg11",
        "vgg13",
        "vgg16",
        "vgg19",
        "wrn-16-4",
        "wrn-40-2",
        "mobilenetv2",
        "efficientnet-b0",
        "efficientnet-b0-k7",
    ];

    /// Configuration from a model name and the input shape `(C, H, W)`.
    ///
    /// - `lenet-300-100`: MLP with hidden widths 300 and 100 on `C·H·W` inputs;
    /// - `mlp-W1-W2-…`, e.g. `mlp-1200-1200`: MLP with those hidden widths (`mlp`
    ///   alone is an error);
    /// - `lenet5`: LeNet-5 on `C×H×W` images; `lenet5-xK` with every width
    ///   multiplied by `K`;
    /// - a zoo network ([`ZooArch`], e.g. `resnet56`, `wrn-40-2`, `vgg16`).
    ///
    /// Unknown names give [`ModelError::UnknownModel`] listing [`ModelConfig::KNOWN`];
    /// a malformed width list or an unusable input gives [`ModelError::Config`].
    pub fn from_name(name: &str, input: (usize, usize, usize), num_classes: usize) -> Result<Self> {
        let (c, h, w) = input;
        let input_dim = || {
            c.checked_mul(h)
                .and_then(|n| n.checked_mul(w))
                .ok_or_else(|| ModelError::Config(format!("input {c}x{h}x{w} is too large")))
        };
        let config = match name {
            "lenet-300-100" => ModelConfig::Mlp {
                input_dim: input_dim()?,
                hidden: vec![300, 100],
                num_classes,
            },
            "lenet5" => ModelConfig::LeNet5 {
                in_channels: c,
                height: h,
                width: w,
                num_classes,
                scale: 1,
                widths: BTreeMap::new(),
            },
            "mlp" => {
                return Err(ModelError::Config(
                    "'mlp' needs hidden widths, e.g. 'mlp-300-100'".to_string(),
                ))
            }
            _ => {
                if let Some(widths) = name.strip_prefix("mlp-") {
                    ModelConfig::Mlp {
                        input_dim: input_dim()?,
                        hidden: parse_widths(name, widths)?,
                        num_classes,
                    }
                } else if let Some(k) = name.strip_prefix("lenet5-x") {
                    let scale = match k.parse::<usize>() {
                        Ok(k) if k > 0 => k,
                        _ => {
                            return Err(ModelError::Config(format!(
                                "'{name}': the width multiplier must be a positive integer (e.g. 'lenet5-x4')"
                            )))
                        }
                    };
                    ModelConfig::LeNet5 {
                        in_channels: c,
                        height: h,
                        width: w,
                        num_classes,
                        scale,
                        widths: BTreeMap::new(),
                    }
                } else if let Ok(model) = name.parse::<ZooArch>() {
                    ModelConfig::Cnn {
                        model,
                        in_channels: c,
                        height: h,
                        width: w,
                        num_classes,
                        widths: BTreeMap::new(),
                    }
                } else {
                    return Err(ModelError::UnknownModel {
                        name: name.to_string(),
                        known: Self::KNOWN.join(", "),
                    });
                }
            }
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks that the network can be built: non-zero widths, input and class
    /// count, at least one hidden layer for an MLP, an input of at least 4×4 for LeNet-5.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(ModelError::Config(msg));
        match self {
            ModelConfig::Mlp {
                input_dim,
                hidden,
                num_classes,
            } => {
                if *input_dim == 0 {
                    return bad("mlp: input_dim must be positive".into());
                }
                if hidden.is_empty() {
                    return bad("mlp: needs at least one hidden layer".into());
                }
                if hidden.contains(&0) {
                    return bad(format!(
                        "mlp: hidden widths must be positive, got {hidden:?}"
                    ));
                }
                if *num_classes == 0 {
                    return bad("mlp: num_classes must be positive".into());
                }
            }
            ModelConfig::LeNet5 {
                in_channels,
                height,
                width,
                num_classes,
                scale,
                widths,
            } => {
                if let Some(Err(e)) = Geometry::with_scale(*height, *width, (*scale).max(1))
                    .map(|g| g.with_widths(widths))
                {
                    return bad(format!("lenet5: {e}"));
                }
                if *in_channels == 0 {
                    return bad("lenet5: in_channels must be positive".into());
                }
                if *scale == 0 {
                    return bad("lenet5: the width multiplier must be positive".into());
                }
                if Geometry::new(*height, *width).is_none() {
                    return bad(format!(
                        "lenet5: input {height}x{width} is smaller than 4x4"
                    ));
                }
                if Geometry::with_scale(*height, *width, *scale).is_none() {
                    return bad(format!(
                        "lenet5: the width multiplier {scale} on a {height}x{width} input gives sizes too large to count"
                    ));
                }
                if *num_classes == 0 {
                    return bad("lenet5: num_classes must be positive".into());
                }
            }
            ModelConfig::Cnn {
                model,
                in_channels,
                height,
                width,
                num_classes,
                widths,
            } => {
                if *in_channels == 0 || *height == 0 || *width == 0 || *num_classes == 0 {
                    return bad(format!(
                        "{model}: input {in_channels}x{height}x{width} and {num_classes} classes must all be positive"
                    ));
                }
                // A dry build checks that every layer fits the input, and
                // every width names a layer that takes one.
                let mut b = Builder::dry().with_widths(widths.clone());
                crate::zoo::build(
                    *model,
                    (*in_channels, *height, *width),
                    *num_classes,
                    &mut b,
                )
                .map_err(|e| ModelError::Config(format!("{model}: {e}")))?;
                b.check_widths()
                    .map_err(|e| ModelError::Config(format!("{model}: {e}")))?;
            }
        }
        // Counted before anything is allocated, in u128 with saturation:
        // the widths may come from a command line or a checkpoint's metadata.
        let params = self
            .param_specs()
            .iter()
            .map(|spec| {
                spec.shape
                    .iter()
                    .fold(1u128, |n, &d| n.saturating_mul(d as u128))
            })
            .fold(0u128, u128::saturating_add);
        if params > MAX_PARAMS as u128 {
            return bad(format!(
                "{} has {params} parameters ({:.1} GB as f32), more than the {MAX_PARAMS} a model may have",
                self.name(),
                params as f64 * 4.0 / 1e9
            ));
        }
        Ok(())
    }

    /// Short name, e.g. `lenet-300-100`, `mlp-1200-1200` or `lenet5`;
    /// `from_name` of it gives back this configuration (for the same input
    /// and class count). The 300-100 MLP keeps its published name.
    pub fn name(&self) -> String {
        match self {
            ModelConfig::Mlp { hidden, .. } if hidden[..] == [300, 100] => {
                "lenet-300-100".to_string()
            }
            ModelConfig::Mlp { hidden, .. } => std::iter::once("mlp".to_string())
                .chain(hidden.iter().map(|w| w.to_string()))
                .collect::<Vec<_>>()
                .join("-"),
            ModelConfig::LeNet5 { scale: 1, .. } => "lenet5".to_string(),
            ModelConfig::LeNet5 { scale, .. } => format!("lenet5-x{scale}"),
            ModelConfig::Cnn { model, .. } => model.name().to_string(),
        }
    }

    /// Number of output classes.
    pub fn num_classes(&self) -> usize {
        match self {
            ModelConfig::Mlp { num_classes, .. }
            | ModelConfig::LeNet5 { num_classes, .. }
            | ModelConfig::Cnn { num_classes, .. } => *num_classes,
        }
    }

    /// Trainable parameter count, `Σ Π shape` over [`ModelConfig::param_shapes`].
    pub fn num_params(&self) -> usize {
        self.param_specs().iter().map(ParamSpec::numel).sum()
    }

    /// Parameter `(name, shape)` pairs in forward order (layer by layer, weight
    /// before bias).
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.param_specs()
            .into_iter()
            .map(|spec| (spec.name, spec.shape))
            .collect()
    }

    /// Parameters with their fan-in, in forward order. A LeNet-5 input smaller
    /// than 4×4 (rejected by [`ModelConfig::validate`]) yields no parameters.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        match self {
            ModelConfig::Mlp {
                input_dim,
                hidden,
                num_classes,
            } => mlp::param_specs(*input_dim, hidden, *num_classes),
            ModelConfig::LeNet5 {
                in_channels,
                num_classes,
                ..
            } => match self.lenet_geometry() {
                Some(geometry) => lenet5::param_specs(*in_channels, &geometry, *num_classes),
                None => Vec::new(),
            },
            ModelConfig::Cnn { .. } => self.dry_build().map(|b| b.specs).unwrap_or_default(),
        }
    }

    /// Non-trainable tensors (batch-norm running statistics) of the network,
    /// in forward order; empty for the MLP and LeNet-5.
    pub fn buffer_specs(&self) -> Vec<BufferSpec> {
        match self {
            ModelConfig::Cnn { .. } => self.dry_build().map(|b| b.buffers).unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Multiply–accumulates of one forward pass on one sample, counting the
    /// convolutions and linear layers (batch norm, activations, pooling and
    /// additions are left out, as the published counts do).
    pub fn macs(&self) -> u64 {
        match self {
            ModelConfig::Mlp {
                input_dim,
                hidden,
                num_classes,
            } => {
                let mut dims = vec![*input_dim];
                dims.extend_from_slice(hidden);
                dims.push(*num_classes);
                dims.windows(2).map(|w| (w[0] * w[1]) as u64).sum()
            }
            ModelConfig::LeNet5 {
                in_channels,
                height,
                width,
                num_classes,
                ..
            } => match self.lenet_geometry() {
                Some(g) => lenet5::macs(*in_channels, (*height, *width), &g, *num_classes),
                None => 0,
            },
            ModelConfig::Cnn { .. } => self.dry_build().map(|b| b.macs).unwrap_or(0),
        }
    }

    /// Input `(C, H, W)` the network was configured for (`None` for an MLP,
    /// which takes any input of `input_dim` values).
    pub fn input_shape(&self) -> Option<(usize, usize, usize)> {
        match self {
            ModelConfig::Mlp { .. } => None,
            ModelConfig::LeNet5 {
                in_channels,
                height,
                width,
                ..
            }
            | ModelConfig::Cnn {
                in_channels,
                height,
                width,
                ..
            } => Some((*in_channels, *height, *width)),
        }
    }

    /// This config with the network's default widths (a structurally pruned
    /// network's architecture as published).
    pub fn with_default_widths(&self) -> ModelConfig {
        let mut c = self.clone();
        if let Some(widths) = c.widths_mut() {
            widths.clear();
        }
        c
    }

    /// The widths that differ from the network's, where the network takes
    /// any (zoo networks and LeNet-5).
    pub fn widths(&self) -> Option<&BTreeMap<String, usize>> {
        match self {
            ModelConfig::LeNet5 { widths, .. } | ModelConfig::Cnn { widths, .. } => Some(widths),
            ModelConfig::Mlp { .. } => None,
        }
    }

    /// Mutable [`ModelConfig::widths`].
    pub fn widths_mut(&mut self) -> Option<&mut BTreeMap<String, usize>> {
        match self {
            ModelConfig::LeNet5 { widths, .. } | ModelConfig::Cnn { widths, .. } => Some(widths),
            ModelConfig::Mlp { .. } => None,
        }
    }

    /// LeNet-5's geometry with its widths (`None` for the other networks,
    /// or an unusable input or width).
    pub fn lenet_geometry(&self) -> Option<Geometry> {
        match self {
            ModelConfig::LeNet5 {
                height,
                width,
                scale,
                widths,
                ..
            } => Geometry::with_scale(*height, *width, *scale)?
                .with_widths(widths)
                .ok(),
            _ => None,
        }
    }

    /// The layers whose output channels a structured pruning may change,
    /// with their current widths (zoo networks that declare them; empty
    /// otherwise).
    pub fn width_groups(&self) -> Vec<(String, usize)> {
        if let Some(g) = self.lenet_geometry() {
            return lenet5::WIDTH_LAYERS
                .iter()
                .zip(g.widths)
                .map(|(l, w)| (l.to_string(), w))
                .collect();
        }
        self.dry_build().map(|b| b.width_groups).unwrap_or_default()
    }

    /// The residual blocks that may be removed whole, with whether each is
    /// still there (empty for the networks that declare none).
    pub fn residual_blocks(&self) -> Vec<(String, bool)> {
        self.dry_build().map(|b| b.blocks).unwrap_or_default()
    }

    fn dry_build(&self) -> Option<Builder> {
        let ModelConfig::Cnn {
            model,
            in_channels,
            height,
            width,
            num_classes,
            widths,
        } = self
        else {
            return None;
        };
        let mut b = Builder::dry().with_widths(widths.clone());
        crate::zoo::build(
            *model,
            (*in_channels, *height, *width),
            *num_classes,
            &mut b,
        )
        .ok()?;
        Some(b)
    }
}

/// The most parameters a network may have (8 GB of f32 weights; training
/// holds about four times that). [`ModelConfig::validate`] and the BERT
/// config refuse more before allocating anything, so a width such as
/// `mlp-100000-100000` or a crafted checkpoint config gives an error with
/// the figure instead of an aborted allocation.
pub const MAX_PARAMS: usize = 2_000_000_000;

/// `lenet-300-100 (input 784, 10 classes)`, `lenet5 (input 1x28x28, 10 classes)`.
impl fmt::Display for ModelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelConfig::Mlp {
                input_dim,
                num_classes,
                ..
            } => write!(
                f,
                "{} (input {input_dim}, {num_classes} classes)",
                self.name()
            ),
            ModelConfig::LeNet5 {
                in_channels,
                height,
                width,
                num_classes,
                ..
            }
            | ModelConfig::Cnn {
                in_channels,
                height,
                width,
                num_classes,
                ..
            } => write!(
                f,
                "{} (input {in_channels}x{height}x{width}, {num_classes} classes)",
                self.name()
            ),
        }
    }
}

/// Parses `300-100` into `[300, 100]`; every width must be a positive integer.
fn parse_widths(name: &str, widths: &str) -> Result<Vec<usize>> {
    widths
        .split('-')
        .map(|w| match w.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(ModelError::Config(format!(
                "'{name}': hidden width '{w}' is not a positive integer (expected e.g. 'mlp-300-100')"
            ))),
        })
        .collect()
}
