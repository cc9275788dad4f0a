//! Model architectures for kdprune: networks that return their logits together
//! with named intermediate features, seeded PyTorch-default initialisation,
//! serde configurations and safetensors checkpoints holding weights, masks and
//! metadata. Convolutions and pooling run on kdprune's own CPU kernels
//! ([`ops`]) on the CPU and on candle's elsewhere.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use kdprune_models::{Model, ModelConfig};
//!
//! let config = ModelConfig::from_name("lenet-300-100", (1, 8, 8), 10)?;
//! assert_eq!(config.num_params(), 50_610);
//! let model = Model::new(config, 42, &Device::Cpu)?;
//! let xs = Tensor::zeros((4, 1, 8, 8), DType::F32, &Device::Cpu)?;
//! let out = model.forward_t(&xs, false)?;
//! assert_eq!(out.logits.dims(), &[4, 10]);
//! assert_eq!(out.features[0].0, "fc1");
//! # Ok::<(), kdprune_models::ModelError>(())
//! ```

pub mod bert;
pub mod checkpoint;
pub mod config;
pub mod darts;
pub mod elastic;
pub mod error;
pub mod infer;
pub mod model;
pub mod ops;
pub mod quant;
pub mod structured;
pub mod zoo;

pub use checkpoint::Checkpoint;
pub use config::ModelConfig;
pub use error::{ModelError, Result};
/// The output of every network (`kd_core`'s, so that kd-core trains these
/// models directly through [`kd_core::Network`]).
pub use kd_core::ModelOutput;
pub use model::Model;
pub use ops::Kernels;
pub use zoo::ZooArch;
