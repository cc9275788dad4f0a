//! Once-for-All's elastic kernels in training: a network with elastic
//! depthwise kernels (`efficientnet-b0-k7`) that runs each training batch at
//! a kernel size drawn from a set, so one set of weights learns to work at
//! every size (progressive shrinking trains it on {7}, then {7, 5}, then
//! {7, 5, 3}; Cai et al. 2020, §3.2).
//!
//! One size is drawn per batch for the whole network (OFA draws one per
//! layer): the sub-networks evaluated afterwards are the uniform ones.

use std::cell::Cell;
use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var};
use kd_core::{KdError, ModelOutput, Network};

use crate::error::{ModelError, Result};
use crate::Model;

/// The name of the draw counter in [`Network::state`].
pub const DRAWS_KEY: &str = "elastic.draws";

/// A [`Model`] with elastic kernels that, in training mode, runs each
/// forward pass at a kernel size drawn from `sizes` and, in evaluation mode,
/// at the smallest of them.
///
/// The draw of the `i`-th training forward pass is a hash of `(seed, i)`;
/// the counter is part of the network's state, so a run resumed from a saved
/// state draws what the uninterrupted run would have.
pub struct ElasticKernels<'a> {
    model: &'a Model,
    sizes: Vec<usize>,
    seed: u64,
    draws: Cell<u64>,
}

impl<'a> ElasticKernels<'a> {
    /// `model` trained at the kernel sizes `sizes` (odd, distinct, not
    /// empty); an error when the model has no elastic kernels.
    pub fn new(model: &'a Model, sizes: &[usize], seed: u64) -> Result<Self> {
        if sizes.is_empty() || sizes.iter().any(|&s| s < 1 || s.is_multiple_of(2)) {
            return Err(ModelError::Config(format!(
                "elastic kernel sizes must be odd and at least one, got {sizes:?}"
            )));
        }
        let mut sorted = sizes.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != sizes.len() {
            return Err(ModelError::Config(format!(
                "elastic kernel sizes repeat: {sizes:?}"
            )));
        }
        model.set_kernel(sorted[0])?; // fails without elastic kernels
        Ok(Self {
            model,
            sizes: sizes.to_vec(),
            seed,
            draws: Cell::new(0),
        })
    }

    /// The size of the `i`-th training forward pass.
    pub fn draw(&self, i: u64) -> usize {
        let h = splitmix64(self.seed ^ splitmix64(i));
        self.sizes[(h % self.sizes.len() as u64) as usize]
    }

    /// Training forward passes so far.
    pub fn draws(&self) -> u64 {
        self.draws.get()
    }
}

/// SplitMix64's output function (Steele et al. 2014): a well-mixed 64-bit
/// hash, enough to draw among a few sizes.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Network for ElasticKernels<'_> {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<ModelOutput> {
        let size = if train {
            let i = self.draws.get();
            self.draws.set(i + 1);
            self.draw(i)
        } else {
            *self.sizes.iter().min().expect("not empty")
        };
        self.model
            .set_kernel(size)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        self.model.forward_t(xs, train)
    }

    fn named_vars(&self) -> Vec<(String, Var)> {
        self.model.named_vars()
    }

    fn device(&self) -> &Device {
        self.model.device()
    }

    /// The model's parameters and buffers, and the draw counter.
    fn state(&self) -> kd_core::Result<BTreeMap<String, Tensor>> {
        let mut state = self.model.tensors().map_err(KdError::external)?;
        let draws = i64::try_from(self.draws.get())
            .map_err(|_| KdError::Other("elastic draw counter overflow".into()))?;
        state.insert(DRAWS_KEY.to_string(), Tensor::new(&[draws], &Device::Cpu)?);
        Ok(state)
    }

    fn load_state(&self, state: &BTreeMap<String, Tensor>) -> kd_core::Result<()> {
        let mut state = state.clone();
        let draws = state.remove(DRAWS_KEY).ok_or_else(|| {
            KdError::InvalidConfig(format!("the saved state has no `{DRAWS_KEY}`"))
        })?;
        let draws = draws.to_dtype(DType::I64)?.to_vec1::<i64>()?;
        match draws.as_slice() {
            [d] if *d >= 0 => self.draws.set(*d as u64),
            _ => {
                return Err(KdError::InvalidConfig(format!(
                    "`{DRAWS_KEY}` must hold one count ≥ 0, got {draws:?}"
                )))
            }
        }
        self.model.load_tensors(&state).map_err(KdError::external)
    }
}
