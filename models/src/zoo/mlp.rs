//! Fully connected network: `fc1 → ReLU → … → fc{L}`.
//!
//! `lenet-300-100` (LeCun et al., 1998) is this network with hidden widths 300 and 100.

use candle_core::{Result, Tensor};
use candle_nn::{Linear, Module, VarBuilder};

use kd_core::init::ParamSpec;
use kd_core::ModelOutput;

/// A multi-layer perceptron with ReLU between layers and none after the last.
///
/// Layers are named `fc1 … fc{L}` with `L = hidden.len() + 1`; the feature of
/// hidden layer `i` is its post-ReLU activation, named `fc{i}`.
#[derive(Clone, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
}

/// Layer widths `[input, hidden…, classes]`.
fn widths(input_dim: usize, hidden: &[usize], num_classes: usize) -> Vec<usize> {
    let mut dims = Vec::with_capacity(hidden.len() + 2);
    dims.push(input_dim);
    dims.extend_from_slice(hidden);
    dims.push(num_classes);
    dims
}

/// Parameters in forward order: `fc1.weight [h1, in]`, `fc1.bias [h1]`, `fc2.weight`, …
pub(crate) fn param_specs(
    input_dim: usize,
    hidden: &[usize],
    num_classes: usize,
) -> Vec<ParamSpec> {
    let dims = widths(input_dim, hidden, num_classes);
    dims.windows(2)
        .enumerate()
        .flat_map(|(i, w)| {
            let (fan_in, out) = (w[0], w[1]);
            [
                ParamSpec {
                    name: format!("fc{}.weight", i + 1),
                    shape: vec![out, fan_in],
                    fan_in,
                    init: Default::default(),
                },
                ParamSpec {
                    name: format!("fc{}.bias", i + 1),
                    shape: vec![out],
                    fan_in,
                    init: Default::default(),
                },
            ]
        })
        .collect()
}

impl Mlp {
    /// Builds the layers from `vb` (paths `fc1`, `fc2`, …); the variables must
    /// already exist in the backing map or are created by candle's default init.
    pub fn new(
        input_dim: usize,
        hidden: &[usize],
        num_classes: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let dims = widths(input_dim, hidden, num_classes);
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, w)| candle_nn::linear(w[0], w[1], vb.pp(format!("fc{}", i + 1))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }

    /// Forward pass. `xs` is `[B, …]` and is flattened to `[B, input_dim]`.
    /// `train` is accepted for symmetry: the network has no train-only layers.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Result<ModelOutput> {
        let _ = train;
        let mut x = xs.flatten_from(1)?;
        let mut features = Vec::with_capacity(self.layers.len().saturating_sub(1));
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x)?;
            if i < last {
                x = x.relu()?;
                features.push((format!("fc{}", i + 1), x.clone()));
            }
        }
        Ok(ModelOutput {
            logits: x,
            features,
        })
    }
}
