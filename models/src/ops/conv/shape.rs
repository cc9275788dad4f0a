//! Shape planning: the hyper-parameters of a convolution and every size
//! derived from them, validated once.

use candle_core::{bail, Result};

/// Hyper-parameters of a convolution, as in `candle_nn::Conv2dConfig`
/// (same value on both axes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvParams {
    pub padding: usize,
    pub stride: usize,
    pub dilation: usize,
    pub groups: usize,
}

impl From<&candle_nn::Conv2dConfig> for ConvParams {
    fn from(cfg: &candle_nn::Conv2dConfig) -> Self {
        Self {
            padding: cfg.padding,
            stride: cfg.stride,
            dilation: cfg.dilation,
            groups: cfg.groups,
        }
    }
}

/// Every size of one convolution, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvShape {
    pub(super) batch: usize,
    pub(super) in_c: usize,
    pub(super) in_h: usize,
    pub(super) in_w: usize,
    pub(super) out_c: usize,
    pub(super) k_h: usize,
    pub(super) k_w: usize,
    pub(super) out_h: usize,
    pub(super) out_w: usize,
    pub(super) p: ConvParams,
}

impl ConvShape {
    /// Sizes for an input of dims `x` (`[N, C, H, W]`) and a weight of dims
    /// `w` (`[O, C/g, KH, KW]`); an error names the first inconsistency.
    pub(crate) fn new(x: &[usize], w: &[usize], p: ConvParams) -> Result<Self> {
        let (&[batch, in_c, in_h, in_w], &[out_c, in_cg, k_h, k_w]) = (x, w) else {
            bail!("conv2d: expected a 4-d input and a 4-d weight, got {x:?} and {w:?}")
        };
        if p.stride == 0 || p.dilation == 0 || p.groups == 0 {
            bail!("conv2d: stride, dilation and groups must be ≥ 1, got {p:?}")
        }
        if in_cg == 0 || out_c == 0 || k_h == 0 || k_w == 0 {
            bail!("conv2d: empty weight {w:?}")
        }
        if in_c != in_cg * p.groups || out_c % p.groups != 0 {
            bail!(
                "conv2d: input channels {in_c} and output channels {out_c} must be \
                 {} groups of weight {w:?}",
                p.groups
            )
        }
        let span_h = p.dilation * (k_h - 1) + 1;
        let span_w = p.dilation * (k_w - 1) + 1;
        if in_h + 2 * p.padding < span_h || in_w + 2 * p.padding < span_w {
            bail!(
                "conv2d: the {k_h}x{k_w} kernel (dilation {}) does not fit the padded \
                 {in_h}x{in_w} input (padding {})",
                p.dilation,
                p.padding
            )
        }
        Ok(Self {
            batch,
            in_c,
            in_h,
            in_w,
            out_c,
            k_h,
            k_w,
            out_h: (in_h + 2 * p.padding - span_h) / p.stride + 1,
            out_w: (in_w + 2 * p.padding - span_w) / p.stride + 1,
            p,
        })
    }

    /// `[N, O, OH, OW]`.
    pub(crate) fn out_dims(&self) -> [usize; 4] {
        [self.batch, self.out_c, self.out_h, self.out_w]
    }

    /// Padding, stride, dilation and groups.
    pub(crate) fn params(&self) -> ConvParams {
        self.p
    }

    pub(crate) fn in_dims(&self) -> [usize; 4] {
        [self.batch, self.in_c, self.in_h, self.in_w]
    }

    pub(crate) fn weight_dims(&self) -> [usize; 4] {
        [self.out_c, self.in_cg(), self.k_h, self.k_w]
    }

    pub(super) fn in_cg(&self) -> usize {
        self.in_c / self.p.groups
    }

    pub(super) fn out_cg(&self) -> usize {
        self.out_c / self.p.groups
    }

    /// Rows of the im2col matrix of one group, `C/g·KH·KW`.
    pub(crate) fn k(&self) -> usize {
        self.in_cg() * self.k_h * self.k_w
    }

    /// Output positions per channel, `OH·OW`.
    pub(crate) fn positions(&self) -> usize {
        self.out_h * self.out_w
    }

    pub(crate) fn in_sample(&self) -> usize {
        self.in_c * self.in_h * self.in_w
    }

    pub(crate) fn out_sample(&self) -> usize {
        self.out_c * self.positions()
    }

    /// 1×1, stride 1, no padding: the input of a group already is its im2col matrix.
    pub(super) fn pointwise(&self) -> bool {
        self.k_h == 1 && self.k_w == 1 && self.p.stride == 1 && self.p.padding == 0
    }

    /// One input channel per group (and more than one group): a direct kernel
    /// beats tiny GEMMs.
    pub(super) fn depthwise(&self) -> bool {
        self.p.groups > 1 && self.in_cg() == 1
    }

    /// Length of the im2col buffer (0 when none is needed).
    pub(crate) fn col_len(&self) -> usize {
        if self.pointwise() || self.depthwise() {
            0
        } else {
            self.k() * self.positions()
        }
    }

    /// Column offset into the input row of kernel column `b`, as a signed shift.
    pub(super) fn shift_w(&self, b: usize) -> isize {
        (b * self.p.dilation) as isize - self.p.padding as isize
    }

    /// Input row read by output row `i` and kernel row `a`, if inside the image.
    pub(super) fn in_row(&self, i: usize, a: usize) -> Option<usize> {
        let r = (i * self.p.stride + a * self.p.dilation) as isize - self.p.padding as isize;
        (r >= 0 && (r as usize) < self.in_h).then_some(r as usize)
    }
}
