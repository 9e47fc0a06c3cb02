//! Parameters of the model's ops (DESIGN.md §2), shared by every backend: the CPU reference
//! (`hvq-cpu`) and the wgpu kernels (`hvq-wgpu`) take the very same values, so a kernel test
//! passes one parameter set to both.

use crate::Tensor;

/// Where a convolution's implicit zeros go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// `k / 2` zeros on all four sides (PyTorch `padding = k // 2`).
    Same,
    /// One zero row at the bottom and one zero column at the right, none elsewhere: the
    /// encoder's down-sampler (`F.pad(x, (0, 1, 0, 1))` then a stride-2 convolution).
    DownsampleRightBottom,
}

/// Everything about a 2-D convolution besides its operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    /// 1 or 2.
    pub stride: usize,
    /// Where the zeros go.
    pub padding: Padding,
    /// Nearest ×2 up-sampling of the input first (backends fuse it into the convolution).
    pub upsample: bool,
}

impl Conv2dParams {
    /// Stride 1, `Same` padding: the ordinary 3×3 (or 1×1) convolution.
    pub const SAME: Conv2dParams = Conv2dParams {
        stride: 1,
        padding: Padding::Same,
        upsample: false,
    };
    /// Stride 2 after a right/bottom zero pad: the encoder's and level chain's down-sampler.
    pub const DOWNSAMPLE: Conv2dParams = Conv2dParams {
        stride: 2,
        padding: Padding::DownsampleRightBottom,
        upsample: false,
    };
    /// Nearest ×2 then a `Same` convolution: the decoder's up-sampler.
    pub const UPSAMPLE: Conv2dParams = Conv2dParams {
        stride: 1,
        padding: Padding::Same,
        upsample: true,
    };
}

/// Parameters of a GroupNorm (PyTorch semantics), optionally followed by swish.
#[derive(Debug, Clone, Copy)]
pub struct GroupNormParams<'a> {
    /// Per-channel scale.
    pub gamma: &'a Tensor,
    /// Per-channel shift.
    pub beta: &'a Tensor,
    /// Number of groups; must divide the channel count.
    pub groups: usize,
    /// Added to the variance (the model uses 1e-6).
    pub eps: f32,
    /// Whether to apply swish to the result (the fused `GN → swish` of every ResBlock).
    pub swish: bool,
}

/// A weight and a bias, as a layer stores them (a norm's γ/β or a convolution's kernel/bias).
#[derive(Debug, Clone, Copy)]
pub struct Affine<'a> {
    /// Scale (norm) or kernel (convolution).
    pub weight: &'a Tensor,
    /// Shift (norm) or bias (convolution).
    pub bias: &'a Tensor,
}

/// The tensors of one attention block (projections are 1×1 convolutions `[C, C, 1, 1]`).
#[derive(Debug, Clone, Copy)]
pub struct AttnWeights<'a> {
    /// GroupNorm applied before the projections.
    pub norm: Affine<'a>,
    /// Query projection.
    pub q: Affine<'a>,
    /// Key projection.
    pub k: Affine<'a>,
    /// Value projection.
    pub v: Affine<'a>,
    /// Output projection.
    pub proj_out: Affine<'a>,
    /// GroupNorm groups.
    pub groups: usize,
    /// GroupNorm epsilon (the model uses 1e-6).
    pub eps: f32,
}

impl<'a> AttnWeights<'a> {
    /// The GroupNorm (no swish) that the block applies before its projections.
    pub fn norm_params(&self) -> GroupNormParams<'a> {
        GroupNormParams {
            gamma: self.norm.weight,
            beta: self.norm.bias,
            groups: self.groups,
            eps: self.eps,
            swish: false,
        }
    }
}
