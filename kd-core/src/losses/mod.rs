//! Distillation losses on logits `[N, K]` (N samples, K classes).
//!
//! * [`kl`] — tempered (log-)softmax, the batch-mean KL divergence and cross-entropy;
//! * [`hinton`] — Hinton KD, `T² · KL(p_T ‖ p_S)`;
//! * [`ca_kld`](mod@ca_kld) — CA-KLD on standardised logits, a β-mix of reverse and forward KL;
//! * [`self_distill`](mod@self_distill) — the network's own detached predictions on another view as the target (EPSD);
//! * [`config`] — [`LossConfig`], a complete objective `α·KD + (1−α)·CE` as serde data.
//!
//! Every loss is computed in `f32` on the device of its inputs, with differentiable
//! ops only, so gradients flow back to the student logits.

pub mod attention;
pub mod ca_kld;
pub mod config;
pub mod distilbert;
pub mod dkd;
pub mod fitnet;
pub mod hinton;
pub mod kl;
pub mod rkd;
pub mod self_distill;
pub mod token_kd;

pub use attention::{at_loss, attention_map, AttentionConfig};
pub use ca_kld::{ca_kld, ca_kld_beta, ca_kld_with, standardize, standardize_with, Beta, LogitStd};
pub use config::{LossConfig, DEFAULT_ALPHA, DEFAULT_EPS, DEFAULT_TEMPERATURE};
pub use distilbert::{
    distilbert_loss, masked_lm_loss, DistilBertConfig, DistilBertLoss, IGNORE_INDEX,
};
pub use dkd::{dkd_loss, dkd_terms, DkdConfig, DkdTerms};
pub use fitnet::{fitnet_loss, FitNetConfig, FitNetRegressor};
pub use hinton::hinton_kd;
pub use kl::{cross_entropy, kl_div, log_softmax_t, softmax_t};
pub use rkd::{rkd_angle_loss, rkd_distance_loss, rkd_loss, RkdConfig};
pub use self_distill::{self_distill_loss, SelfDistillConfig};
pub use token_kd::{lm_ce_loss, token_kd_loss, TokenKdConfig};
