//! # hvq-cpu
//!
//! The pure-Rust CPU backend of hvq: the reference every other backend is tested against,
//! and the fallback runtime where no GPU adapter exists. No C dependencies; multi-threaded
//! through rayon with the default `parallel` feature, sequential without it (wasm32).
//!
//! Two layers:
//! - [`ops`]: every op of the model as a free function on [`FeatureMap`](hvq_spec::FeatureMap)s
//!   (convolutions, GroupNorm + swish, attention, pooling, the codebook search, …), each tested
//!   against a naive version; the wgpu kernels are tested against these.
//! - [`CpuModel`]: a validated [`Weights`](hvq_spec::Weights) file run end to end by one
//!   interpreter of the model's [`graph`](hvq_spec::graph) programs: image →
//!   projected latents → token grids of every level, and any level's tokens → image.
//!
//! ```
//! use hvq_cpu::{CpuModel, ops};
//! use hvq_spec::{FeatureMap, ModelConfig, random_weights};
//!
//! let model = CpuModel::new(random_weights(&ModelConfig::tiny(), 7).unwrap());
//! // A 13×10 RGB image in [0, 1]: pad to the coarsest stride, encode, decode, crop back.
//! let image = FeatureMap { channels: 3, height: 10, width: 13, data: vec![0.25; 3 * 10 * 13] };
//! let padded = ops::pad_edge(&image, model.config().coarsest_stride()).unwrap();
//! let grids = model.encode(&padded, &[0, 1, 2]).unwrap();
//! let coarse = model.decode(&grids[2]).unwrap();
//! let thumb = ops::crop(&coarse, 10, 13).unwrap();
//! assert_eq!((thumb.height, thumb.width), (10, 13));
//! ```
//!
//! Speed: 3×3 stride-1 convolutions use Winograd F(2×2, 3×3) (16 multiplies per 2×2 outputs
//! instead of 36), other convolutions tiled im2col + GEMM (the `gemm` crate), the decoders'
//! nearest-×2 + 3×3 convolution is done as four 2×2 sub-pixel convolutions (4/9 of the work),
//! GroupNorm is fused with swish, and the residual add is fused into the second convolution of
//! each ResBlock. `benches/cpu.rs` and `benches/ops.rs` measure them.
#![deny(missing_docs)]

mod error;
mod model;
pub mod ops;
mod par;

pub use error::CpuError;
pub use model::CpuModel;
