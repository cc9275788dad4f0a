//! SGD with momentum, Nesterov and decoupled-from-biases weight decay.
//!
//! Candle's `SGD` has neither momentum nor weight decay, so this follows
//! `torch.optim.SGD` exactly (dampening 0):
//!
//! ```text
//! g ← ∇θ + λ·θ            (λ only for parameters that decay)
//! b ← g                    (first step)      b ← μ·b + g   (later steps)
//! g ← g + μ·b  (Nesterov)  or  g ← b
//! θ ← θ − η·g
//! ```

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::{KdError, Result};

/// Hyper-parameters of [`Sgd`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SgdConfig {
    /// Base learning rate η (a schedule may scale it per step).
    pub lr: f64,
    /// Momentum μ (0 disables the buffer).
    pub momentum: f64,
    /// Nesterov momentum (requires μ > 0).
    pub nesterov: bool,
    /// L2 weight decay λ, applied to weights only (see [`decays`]).
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            lr: 0.05,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
        }
    }
}

impl SgdConfig {
    /// Rejects negative or non-finite values and Nesterov without momentum.
    pub fn validate(&self) -> Result<()> {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if !(ok(self.lr) && self.lr > 0.0) {
            return Err(KdError::InvalidConfig(format!(
                "learning rate must be a positive number, got {}",
                self.lr
            )));
        }
        if !ok(self.momentum) || self.momentum >= 1.0 {
            return Err(KdError::InvalidConfig(format!(
                "momentum must be in [0, 1), got {}",
                self.momentum
            )));
        }
        if !ok(self.weight_decay) {
            return Err(KdError::InvalidConfig(format!(
                "weight decay must be ≥ 0, got {}",
                self.weight_decay
            )));
        }
        if self.nesterov && self.momentum == 0.0 {
            return Err(KdError::InvalidConfig(
                "Nesterov momentum requires momentum > 0".into(),
            ));
        }
        Ok(())
    }
}

/// Whether weight decay applies to a parameter: not to biases, normalisation
/// parameters or running statistics (decaying them only hurts accuracy).
pub fn decays(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !(lower.ends_with(".bias")
        || lower.contains("bn")
        || lower.contains("norm")
        || lower.contains("running_"))
}

struct Slot {
    name: String,
    var: Var,
    decay: bool,
    buffer: Option<Tensor>,
}

/// SGD over a fixed, name-sorted list of parameters.
pub struct Sgd {
    config: SgdConfig,
    slots: Vec<Slot>,
}

impl Sgd {
    /// `vars` should be sorted by name (as `Model::named_vars` returns them).
    pub fn new(vars: &[(String, Var)], config: SgdConfig) -> Result<Self> {
        config.validate()?;
        let slots = vars
            .iter()
            .map(|(name, var)| Slot {
                name: name.clone(),
                var: var.clone(),
                decay: decays(name),
                buffer: None,
            })
            .collect();
        Ok(Self { config, slots })
    }

    /// The configuration in use.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    /// Every momentum buffer by parameter name (those that have one: after
    /// the first step, with momentum), for a resume point.
    pub fn state(&self) -> BTreeMap<String, Tensor> {
        self.slots
            .iter()
            .filter_map(|s| Some((s.name.clone(), s.buffer.as_ref()?.clone())))
            .collect()
    }

    /// Restores the buffers [`Sgd::state`] gave; a name the optimizer does
    /// not have or a wrong shape is an error, a parameter absent from
    /// `state` starts without a buffer.
    pub fn set_state(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()> {
        if let Some(name) = state
            .keys()
            .find(|n| !self.slots.iter().any(|s| &s.name == *n))
        {
            return Err(KdError::InvalidConfig(format!(
                "the saved optimizer state has `{name}`, which is not a parameter"
            )));
        }
        for slot in &mut self.slots {
            slot.buffer = match state.get(&slot.name) {
                Some(t) if t.dims() != slot.var.dims() => {
                    return Err(KdError::ShapeMismatch(format!(
                        "saved momentum of `{}` is {:?}, the parameter {:?}",
                        slot.name,
                        t.dims(),
                        slot.var.dims()
                    )))
                }
                Some(t) => Some(t.to_device(slot.var.device())?.copy()?),
                None => None,
            };
        }
        Ok(())
    }

    /// The momentum buffer of parameter `name` (after its first step).
    pub fn momentum_buffer(&self, name: &str) -> Option<&Tensor> {
        self.slots
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.buffer.as_ref())
    }

    /// Multiplies the momentum buffer of each named parameter by its mask
    /// (1 = kept, 0 = pruned, the parameter's shape), so that no momentum
    /// remains at a pruned coordinate: a pruning schedule calls it when its
    /// masks grow. Names without a buffer (no step yet, or no momentum) are
    /// skipped; an unknown name or a wrong shape is an error.
    pub fn mask_state<'a>(
        &mut self,
        masks: impl IntoIterator<Item = (&'a String, &'a Tensor)>,
    ) -> Result<()> {
        for (name, mask) in masks {
            let slot = self
                .slots
                .iter_mut()
                .find(|s| &s.name == name)
                .ok_or_else(|| {
                    KdError::InvalidConfig(format!("the optimizer has no parameter `{name}`"))
                })?;
            if mask.dims() != slot.var.dims() {
                return Err(KdError::ShapeMismatch(format!(
                    "mask of `{name}` is {:?}, the parameter {:?}",
                    mask.dims(),
                    slot.var.dims()
                )));
            }
            if let Some(buf) = &slot.buffer {
                let m = mask.to_dtype(buf.dtype())?.to_device(buf.device())?;
                slot.buffer = Some(buf.mul(&m)?);
            }
        }
        Ok(())
    }

    /// One update with learning rate `lr` (the schedule's value for this step).
    /// Parameters without a gradient in `grads` are left untouched.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        let SgdConfig {
            momentum,
            nesterov,
            weight_decay,
            ..
        } = self.config;
        for slot in &mut self.slots {
            let Some(grad) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            // Detached copies: arithmetic on a Var records an autograd graph, and
            // the momentum buffer would then chain every step's graph (and its
            // parameter-sized intermediates) into one that is never freed.
            let theta = slot.var.as_tensor().detach();
            let grad = grad.detach();
            let mut g = if slot.decay && weight_decay > 0.0 {
                (&grad + (&theta * weight_decay)?)?
            } else {
                grad
            };
            if momentum > 0.0 {
                let buf = match slot.buffer.take() {
                    None => g.clone(),
                    Some(b) => ((b * momentum)? + &g)?,
                };
                g = if nesterov {
                    (&g + (&buf * momentum)?)?
                } else {
                    buf.clone()
                };
                slot.buffer = Some(buf);
            }
            let updated = (&theta - (g * lr)?)?;
            slot.var.set(&updated)?;
        }
        Ok(())
    }
}
