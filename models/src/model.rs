//! A built network with its variables: seeded construction, forward pass,
//! named access to the parameters.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use kd_core::init::{pytorch_default_init, seeded_varmap};
use kd_core::ModelOutput;

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::ops::Kernels;
use crate::zoo::lenet5::{Geometry, LeNet5};
use crate::zoo::mlp::Mlp;
use crate::zoo::{self, Builder, Network, ZooArch};

/// The concrete network behind a [`Model`].
#[derive(Clone, Debug)]
enum Net {
    Mlp(Mlp),
    LeNet5(LeNet5),
    Cnn(Network),
}

/// A network built from a [`ModelConfig`], owning its f32 variables.
pub struct Model {
    config: ModelConfig,
    varmap: VarMap,
    vars: BTreeMap<String, Var>,
    buffers: BTreeMap<String, Var>,
    net: Net,
    kernels: Kernels,
    device: Device,
}

impl Model {
    /// Builds the network with PyTorch's default initialisation, seeded.
    ///
    /// Every weight and bias is drawn from `U(−1/√fan_in, 1/√fan_in)` (what
    /// `kaiming_uniform_(a=√5)` gives for weights; `fan_in = in_features`, or
    /// `in_channels·kh·kw` for a convolution) from one
    /// `ChaCha8Rng::seed_from_u64(seed)` stream, parameters taken in sorted-name
    /// order (see [`kd_core::init`]). The same seed gives bit-identical values.
    pub fn new(config: ModelConfig, seed: u64, device: &Device) -> Result<Self> {
        Self::build(config, seed, device, false)
    }

    /// [`Model::new`] for inference: every layer holds a detached view of its
    /// variable (same storage, so [`Model::load_tensors`] and batch-norm
    /// recalibration still change it), and no forward pass records a graph.
    /// A forward pass then keeps one layer's activations alive at a time
    /// instead of all of them: an EfficientNet-B0 evaluated at batch 512
    /// needs a fraction of the memory. Gradients never reach the variables,
    /// so such a model cannot be trained or scored by gradient.
    pub fn new_frozen(config: ModelConfig, seed: u64, device: &Device) -> Result<Self> {
        Self::build(config, seed, device, true)
    }

    fn build(config: ModelConfig, seed: u64, device: &Device, frozen: bool) -> Result<Self> {
        config.validate()?;
        if let ModelConfig::Cnn {
            model,
            in_channels,
            height,
            width,
            num_classes,
            widths,
        } = &config
        {
            let mut builder = Builder::new(device).with_widths(widths.clone());
            if frozen {
                builder = builder.frozen();
            }
            return Self::new_zoo(
                *model,
                (*in_channels, *height, *width),
                *num_classes,
                builder,
                config.clone(),
                seed,
                device,
            );
        }
        let (varmap, vars) = seeded_varmap(&config.param_specs(), seed, device)?;
        // The layers find the variables inserted above (same names and shapes),
        // so candle's own initialisers never run.
        let vb = if frozen {
            let detached = vars
                .iter()
                .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
                .collect();
            VarBuilder::from_tensors(detached, DType::F32, device)
        } else {
            VarBuilder::from_varmap(&varmap, DType::F32, device)
        };
        let net = match &config {
            ModelConfig::Mlp {
                input_dim,
                hidden,
                num_classes,
            } => Net::Mlp(Mlp::new(*input_dim, hidden, *num_classes, vb)?),
            ModelConfig::LeNet5 {
                in_channels,
                height,
                width,
                num_classes,
                scale,
                widths,
            } => {
                let geometry = Geometry::with_scale(*height, *width, *scale)
                    .ok_or_else(|| {
                        ModelError::Config(format!(
                            "lenet5: input {height}x{width} is smaller than 4x4"
                        ))
                    })?
                    .with_widths(widths)
                    .map_err(|e| ModelError::Config(format!("lenet5: {e}")))?;
                Net::LeNet5(LeNet5::new(*in_channels, &geometry, *num_classes, vb)?)
            }
            ModelConfig::Cnn { .. } => unreachable!("zoo networks are built by new_zoo"),
        };
        // A layer asking for a name the config does not list would have created a
        // fresh, unseeded variable: refuse rather than hide it.
        let built: Vec<String> = {
            let data = varmap
                .data()
                .lock()
                .map_err(|_| ModelError::Config("variable map lock poisoned".to_string()))?;
            data.keys().cloned().collect()
        };
        if let Some(extra) = built.into_iter().find(|name| !vars.contains_key(name)) {
            return Err(ModelError::UnexpectedTensor(extra));
        }
        Ok(Self {
            config,
            varmap,
            vars,
            buffers: BTreeMap::new(),
            net,
            kernels: Kernels::Auto,
            device: device.clone(),
        })
    }

    /// A zoo network: the builder creates the variables, then they are set
    /// from the seeded initialisation.
    fn new_zoo(
        arch: ZooArch,
        input: (usize, usize, usize),
        classes: usize,
        mut builder: Builder,
        config: ModelConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let network = zoo::build(arch, input, classes, &mut builder)?;
        let values = pytorch_default_init(&builder.specs, seed);
        for spec in &builder.specs {
            let var = builder
                .vars
                .get(&spec.name)
                .ok_or_else(|| ModelError::MissingTensor(spec.name.clone()))?;
            let init = values
                .get(&spec.name)
                .ok_or_else(|| ModelError::MissingTensor(spec.name.clone()))?;
            var.set(&Tensor::from_slice(init, spec.shape.as_slice(), device)?)?;
        }
        let varmap = VarMap::new();
        {
            let mut data = varmap
                .data()
                .lock()
                .map_err(|_| ModelError::Config("variable map lock poisoned".to_string()))?;
            for (name, var) in &builder.vars {
                data.insert(name.clone(), var.clone());
            }
        }
        Ok(Self {
            config,
            varmap,
            vars: builder.vars,
            buffers: builder.buffer_vars,
            net: Net::Cnn(network),
            kernels: Kernels::Auto,
            device: device.clone(),
        })
    }

    /// The same model running its convolutions, pools and batch norms on
    /// `kernels` (the default is [`Kernels::Auto`]).
    pub fn with_kernels(self, kernels: Kernels) -> Self {
        let net = match self.net {
            Net::LeNet5(n) => Net::LeNet5(n.with_kernels(kernels)),
            other => other,
        };
        Self {
            kernels,
            net,
            ..self
        }
    }

    /// The configuration this model was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The device holding the variables.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The backing variable map (same variables as [`Model::named_vars`]).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Forward pass on `[B, C, H, W]` (the MLP flattens it). `train` selects
    /// training behaviour: the batch norms of the zoo networks normalise with
    /// the batch statistics and update their running statistics; in
    /// evaluation mode they use the running statistics. The MLP and LeNet-5
    /// have no train-only layers.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<ModelOutput> {
        match &self.net {
            Net::Mlp(net) => net.forward_t(xs, train),
            Net::LeNet5(net) => net.forward_t(xs, train),
            Net::Cnn(net) => net.forward_t(xs, train, self.kernels),
        }
    }

    /// Runs every elastic depthwise kernel (`efficientnet-b0-k7`) at its
    /// centre `size × size`, odd; 0 runs them whole. The setting holds for
    /// every later forward pass. An error for networks without elastic
    /// kernels.
    pub fn set_kernel(&self, size: usize) -> Result<()> {
        match &self.net {
            Net::Cnn(net) => Ok(net.set_kernel(size)?),
            _ => Err(candle_core::Error::Msg(format!(
                "{} has no elastic kernels",
                self.config.name()
            ))
            .into()),
        }
    }

    /// Non-trainable tensors (batch-norm running statistics) sorted by name:
    /// saved in checkpoints, never trained, pruned or decayed.
    pub fn named_buffers(&self) -> Vec<(String, Var)> {
        self.buffers
            .iter()
            .map(|(name, var)| (name.clone(), var.clone()))
            .collect()
    }

    /// Trainable variables sorted by name.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        self.vars
            .iter()
            .map(|(name, var)| (name.clone(), var.clone()))
            .collect()
    }

    /// Every tensor of the model by name — parameters and buffers — as
    /// detached copies (later updates of the variables do not change them).
    pub fn tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        self.all_vars()
            .map(|(name, var)| Ok((name.clone(), var.as_tensor().copy()?.detach())))
            .collect()
    }

    /// Parameters and buffers together.
    fn all_vars(&self) -> impl Iterator<Item = (&String, &Var)> {
        self.vars.iter().chain(self.buffers.iter())
    }

    /// Sets every variable from `tensors` (moved to the model's device).
    ///
    /// The map must hold exactly the model's names with the same shapes and
    /// dtype; otherwise nothing is changed and the error names the first
    /// offending tensor ([`ModelError::UnexpectedTensor`],
    /// [`ModelError::MissingTensor`], [`ModelError::ShapeMismatch`],
    /// [`ModelError::DtypeMismatch`]).
    pub fn load_tensors(&self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        if let Some(extra) = tensors
            .keys()
            .find(|name| !self.vars.contains_key(*name) && !self.buffers.contains_key(*name))
        {
            return Err(ModelError::UnexpectedTensor(extra.clone()));
        }
        for (name, var) in self.all_vars() {
            let t = tensors
                .get(name)
                .ok_or_else(|| ModelError::MissingTensor(name.clone()))?;
            if t.dims() != var.dims() {
                return Err(ModelError::ShapeMismatch {
                    name: name.clone(),
                    expected: var.dims().to_vec(),
                    got: t.dims().to_vec(),
                });
            }
            if t.dtype() != var.dtype() {
                return Err(ModelError::DtypeMismatch {
                    name: name.clone(),
                    expected: var.dtype(),
                    got: t.dtype(),
                });
            }
        }
        for (name, var) in self.all_vars() {
            if let Some(t) = tensors.get(name) {
                // A fresh copy: `Var::set` refuses a source sharing the variable's storage.
                var.set(&t.to_device(&self.device)?.copy()?)?;
            }
        }
        Ok(())
    }
}

/// kd-core trains a [`Model`] directly: [`kd_core::fit`], distillation from
/// a `Model` teacher, gradients for importance scores.
impl kd_core::Network for Model {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<ModelOutput> {
        Model::forward_t(self, xs, train)
    }

    fn named_vars(&self) -> Vec<(String, Var)> {
        Model::named_vars(self)
    }

    fn device(&self) -> &Device {
        Model::device(self)
    }

    /// Parameters and batch-norm running statistics.
    fn state(&self) -> kd_core::Result<BTreeMap<String, Tensor>> {
        self.tensors().map_err(kd_core::KdError::external)
    }

    /// Parameters and batch-norm running statistics, exactly.
    fn load_state(&self, state: &BTreeMap<String, Tensor>) -> kd_core::Result<()> {
        self.load_tensors(state).map_err(kd_core::KdError::external)
    }
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("config", &self.config)
            .field("params", &self.vars.keys().collect::<Vec<_>>())
            .field("device", &self.device)
            .finish()
    }
}
