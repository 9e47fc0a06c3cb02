//! Every op of the model (DESIGN.md §2) as a free function on [`FeatureMap`](hvq_spec::FeatureMap)s.
//!
//! These are the reference the wgpu kernels are tested against, and what [`CpuModel`](crate::CpuModel)
//! runs. Convolutions are tiled im2col + GEMM (the `gemm` crate), parallel over output tiles.

mod attention;
mod conv;
mod gemm;
mod norm;
mod quant;
#[cfg(test)]
pub(crate) mod reference;
mod resample;
mod winograd;

pub use attention::{Affine, AttnWeights, attention};
pub use conv::{Conv2dParams, Padding, conv2d, conv2d_accumulate, upsample_conv2d};
pub use norm::{GroupNormParams, group_norm, swish_inplace};
pub use quant::{gather_codes, nearest_codes, nearest_k_codes, project};
pub use resample::{add, add_assign, avg_pool2, crop, pad_edge, subsample2, upsample_nearest2};
#[cfg(test)]
pub(crate) mod tests;
