//! The convolution as candle custom ops (`x, w → y`, `x, w, b → y`) with
//! their backward passes.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::backward::{backward_into, bias_grad, input_grad_into};
use super::forward::forward;
use super::shape::{ConvParams, ConvShape};
use crate::ops::cpu::{inputs, output, with_data};

/// Forward custom op: `(x, w) → y` or `(x, w, b) → y`.
pub(crate) struct Conv2dOp {
    pub(crate) params: ConvParams,
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "kdprune-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = ConvShape::new(l1.dims(), l2.dims(), self.params)?;
        let [x, w] = inputs("conv2d", [(s1, l1, "input"), (s2, l2, "weight")])?;
        Ok(output(forward(&shape, x, w, None), &shape.out_dims()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = conv_grads(self.params, x, w, None, dy)?;
        Ok((dx, dw))
    }
}

/// The gradients of `conv(x, w) (+ b)` that candle asks for (the tensors
/// that track their op), from `∂y`, computed in one pass by [`backward_into`].
/// A data batch needs no gradient: skipping it saves a third of the work of
/// the first layer.
#[allow(clippy::type_complexity)]
pub(super) fn conv_grads(
    params: ConvParams,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    dy: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let shape = ConvShape::new(x.dims(), w.dims(), params)?;
    if dy.dims() != shape.out_dims() {
        bail!(
            "conv2d backward: gradient {:?} for an output of {:?}",
            dy.dims(),
            shape.out_dims()
        )
    }
    let (want_dx, want_dw) = (x.track_op(), w.track_op());
    let want_db = b.is_some_and(|b| b.track_op());
    let mut dx = want_dx.then(|| vec![0f32; shape.batch * shape.in_sample()]);
    let (dw, db) = with_data(
        "conv2d backward",
        [(x, "input"), (w, "weight"), (dy, "gradient")],
        |[xv, wv, dyv]| {
            Ok(if want_dw {
                let (dw, db) = backward_into(&shape, xv, dyv, wv, dx.as_deref_mut(), want_db);
                (Some(dw), db)
            } else {
                if let Some(dx) = dx.as_deref_mut() {
                    input_grad_into(&shape, dyv, wv, dx);
                }
                (None, want_db.then(|| bias_grad(&shape, dyv)))
            })
        },
    )?;
    let dev = x.device();
    Ok((
        dx.map(|d| Tensor::from_vec(d, shape.in_dims().to_vec(), dev))
            .transpose()?,
        dw.map(|d| Tensor::from_vec(d, shape.weight_dims().to_vec(), dev))
            .transpose()?,
        db.map(|d| Tensor::from_vec(d, shape.out_c, dev))
            .transpose()?,
    ))
}

impl CustomOp3 for Conv2dOp {
    fn name(&self) -> &'static str {
        "kdprune-conv2d-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = ConvShape::new(l1.dims(), l2.dims(), self.params)?;
        if l3.dims() != [shape.out_c] {
            bail!(
                "conv2d: bias of shape {:?} for {} output channels",
                l3.dims(),
                shape.out_c
            )
        }
        let [x, w, b] = inputs(
            "conv2d",
            [(s1, l1, "input"), (s2, l2, "weight"), (s3, l3, "bias")],
        )?;
        Ok(output(forward(&shape, x, w, Some(b)), &shape.out_dims()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        conv_grads(self.params, x, w, Some(b), dy)
    }
}
