//! What kd-core trains and distils from: any network that maps a batch to
//! logits and named intermediate features and exposes its parameters by name.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, Var};

use crate::Result;

/// Output of a forward pass: the logits `[B, classes]` and the named
/// intermediate features, in forward order.
#[derive(Clone, Debug)]
pub struct ModelOutput {
    /// Unnormalised class scores, `[B, classes]`.
    pub logits: Tensor,
    /// `(name, activation)` pairs in forward order, e.g. `("fc1", [B, 300])`.
    /// Feature losses (FitNets, attention transfer, RKD) pair them by name.
    pub features: Vec<(String, Tensor)>,
}

impl ModelOutput {
    /// An output with logits only.
    pub fn logits(logits: Tensor) -> Self {
        Self {
            logits,
            features: Vec::new(),
        }
    }

    /// The feature called `name`, if the network has one.
    pub fn feature(&self, name: &str) -> Option<&Tensor> {
        self.features
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
    }
}

/// A network kd-core can train, or distil from as a frozen teacher.
///
/// Implement it for your own Candle model in a few lines (see the crate's
/// `examples/`): a forward pass returning a [`ModelOutput`] and the
/// trainable variables sorted by name.
pub trait Network {
    /// Forward pass on a batch. `train` selects training behaviour (batch
    /// statistics in batch norms, which then update their running statistics).
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<ModelOutput>;

    /// The trainable variables, sorted by name.
    fn named_vars(&self) -> Vec<(String, Var)>;

    /// The device holding the variables.
    fn device(&self) -> &Device;

    /// Every tensor the outputs depend on (parameters and buffers such as
    /// batch-norm running statistics) by name: what identifies a teacher in
    /// the on-disk logit cache. By default the trainable variables.
    fn state(&self) -> Result<BTreeMap<String, Tensor>> {
        Ok(self
            .named_vars()
            .into_iter()
            .map(|(name, var)| (name, var.as_tensor().detach()))
            .collect())
    }

    /// Sets every tensor of [`Network::state`] from `state` (a resumed run's
    /// network); a missing name or another shape is an error. By default the
    /// trainable variables.
    fn load_state(&self, state: &BTreeMap<String, Tensor>) -> Result<()> {
        for (name, var) in self.named_vars() {
            let t = state.get(&name).ok_or_else(|| {
                crate::KdError::InvalidConfig(format!("the saved state has no `{name}`"))
            })?;
            if t.dims() != var.dims() {
                return Err(crate::KdError::ShapeMismatch(format!(
                    "saved `{name}` is {:?}, the variable {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            var.set(&t.to_device(var.device())?.to_dtype(var.dtype())?.copy()?)?;
        }
        Ok(())
    }
}

/// `(name, dims without the batch)` of every feature of a network, in forward
/// order.
pub type FeatureShapes = Vec<(String, Vec<usize>)>;

/// The feature shapes of `net` on `probe` (a small batch of the input's shape;
/// evaluation mode, so no running statistic moves).
pub fn feature_shapes(net: &dyn Network, probe: &Tensor) -> Result<FeatureShapes> {
    let out = net.forward_t(probe, false)?;
    Ok(out
        .features
        .iter()
        .map(|(n, t)| (n.clone(), t.dims().get(1..).unwrap_or(&[]).to_vec()))
        .collect())
}
