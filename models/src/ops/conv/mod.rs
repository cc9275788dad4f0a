//! 2-D convolution on the CPU as candle custom ops: forward, input gradient and
//! weight gradient, by im2col + GEMM (a direct kernel for depthwise layers),
//! parallel over the batch.
//!
//! With `x` of shape `[N, C, H, W]`, `w` of shape `[O, C/g, KH, KW]`, stride
//! `s`, padding `p`, dilation `d` and `g` groups:
//!
//! ```text
//! y[n, o, i, j] = Σ_{c ∈ group(o)} Σ_{a, b} w[o, c, a, b] · x[n, c, i·s + a·d − p, j·s + b·d − p]
//! ```
//! (`x` is 0 outside the image). The per-sample, per-group product is
//! `Y_g (O/g × P) = W_g (O/g × K) · col_g (K × P)` with `K = C/g·KH·KW`,
//! `P = OH·OW` and `col` the im2col matrix. Its gradients are
//! `∂W_g = Σ_n ∂Y_g · col_gᵀ` and `∂col_g = W_gᵀ · ∂Y_g`, scattered back
//! into `∂x` by col2im.
//!
//! Every sample is processed by one thread with a single-threaded GEMM, so the
//! result does not depend on the batch it was computed in nor on the number of
//! threads; the weight gradient sums per-chunk partials in a fixed order.

mod backward;
mod depthwise;
mod forward;
mod im2col;
mod op;
mod scratch;
mod shape;

pub(crate) use backward::backward_into;
pub(crate) use forward::forward;
pub(crate) use im2col::im2col;
pub(crate) use op::Conv2dOp;
pub(crate) use scratch::with_scratch;
pub(crate) use shape::{ConvParams, ConvShape};

#[cfg(test)]
mod tests;

/// Timings of the kernels (the fastest of 11 runs), not tests:
/// `cargo test --release -p kdprune-models --lib -- --ignored conv_timing --nocapture --test-threads=1`.
#[cfg(test)]
mod timing;
