//! Seeded PyTorch-default initialisation.
//!
//! PyTorch initialises `nn.Linear` and `nn.Conv2d` weights with
//! `kaiming_uniform_(w, a=√5)`: gain `g = √(2/(1+a²)) = √(1/3)`, bound
//! `√3 · g / √fan_in = 1/√fan_in`; biases are drawn from the same
//! `U(−1/√fan_in, 1/√fan_in)`. Here every parameter is drawn from
//! `U(−b, b)`, `b = 1/√fan_in`, with `fan_in = in_features` for a linear layer
//! and `in_channels·kh·kw` for a convolution.

use std::collections::BTreeMap;

use candle_core::{Device, Var};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One trainable parameter: its name, its shape (PyTorch layout) and the fan-in
/// of the layer it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    /// Tensor name, e.g. `fc1.weight`.
    pub name: String,
    /// Shape: `[out, in]` for a linear weight, `[out, in, kh, kw]` for a conv weight, `[out]` for a bias.
    pub shape: Vec<usize>,
    /// Fan-in of the owning layer (`in` or `in·kh·kw`).
    pub fan_in: usize,
    /// How the initial values are drawn.
    pub init: Init,
}

/// Initial values of a parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Init {
    /// `U(−1/√fan_in, 1/√fan_in)`, PyTorch's default for linear and conv layers.
    #[default]
    Uniform,
    /// All ones (a batch-norm scale).
    Ones,
    /// All zeros (a batch-norm shift).
    Zeros,
}

impl ParamSpec {
    /// Number of scalars, `Π shape`.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The PyTorch default bound `b = 1/√fan_in` (computed in f64, rounded to f32).
pub fn default_bound(fan_in: usize) -> f32 {
    (1.0 / (fan_in as f64).sqrt()) as f32
}

/// `n` values from `U(−b, b)`: `b·(2u − 1)` with `u ∈ [0, 1)` drawn by
/// `rng.random::<f32>()`, so `|v| ≤ b` holds exactly in f32.
pub fn uniform_values(rng: &mut ChaCha8Rng, n: usize, bound: f32) -> Vec<f32> {
    (0..n)
        .map(|_| bound * (2.0 * rng.random::<f32>() - 1.0))
        .collect()
}

/// Initial values of every parameter, keyed by name.
///
/// One `ChaCha8Rng::seed_from_u64(seed)` stream is consumed by the parameters in
/// sorted-name order, so the values do not depend on the order of `specs`.
pub fn pytorch_default_init(specs: &[ParamSpec], seed: u64) -> BTreeMap<String, Vec<f32>> {
    let mut sorted: Vec<&ParamSpec> = specs.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    sorted
        .into_iter()
        .map(|spec| {
            // Constants draw nothing, so adding batch norms to a network does
            // not change the stream the other parameters see.
            let values = match spec.init {
                Init::Uniform => uniform_values(&mut rng, spec.numel(), default_bound(spec.fan_in)),
                Init::Ones => vec![1.0; spec.numel()],
                Init::Zeros => vec![0.0; spec.numel()],
            };
            (spec.name.clone(), values)
        })
        .collect()
}

/// The values of [`pytorch_default_init`] as variables on `device`, in a
/// [`VarMap`] (for candle-nn layers built from it through a `VarBuilder`,
/// which then find every variable and run no initialiser of their own) and
/// by name.
pub fn seeded_varmap(
    specs: &[ParamSpec],
    seed: u64,
    device: &Device,
) -> candle_core::Result<(VarMap, BTreeMap<String, Var>)> {
    let values = pytorch_default_init(specs, seed);
    let varmap = VarMap::new();
    let mut vars = BTreeMap::new();
    {
        let mut data = varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?;
        for spec in specs {
            // Every name of `specs` is a key of `values`.
            let var = Var::from_slice(&values[&spec.name], spec.shape.as_slice(), device)?;
            data.insert(spec.name.clone(), var.clone());
            vars.insert(spec.name.clone(), var);
        }
    }
    Ok((varmap, vars))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_of_specs_does_not_matter() {
        let a = ParamSpec {
            name: "fc1.weight".into(),
            shape: vec![3, 4],
            fan_in: 4,
            init: Default::default(),
        };
        let b = ParamSpec {
            name: "fc1.bias".into(),
            shape: vec![3],
            fan_in: 4,
            init: Default::default(),
        };
        let x = pytorch_default_init(&[a.clone(), b.clone()], 7);
        let y = pytorch_default_init(&[b, a], 7);
        assert_eq!(x, y);
    }

    #[test]
    fn bound_is_inverse_sqrt_fan_in() {
        assert_eq!(default_bound(4), 0.5);
        assert_eq!(default_bound(100), 0.1);
    }
}
