//! # hvq-wgpu
//!
//! The wgpu / WGSL compute backend of the hvq codec: the encoder, the level chain, the shared
//! quantizer and the per-level decoders as static WGSL kernels (`src/shaders/*.wgsl`,
//! specialised only through `override` constants), on Vulkan, Metal and DX12 natively and on
//! WebGPU in browsers. Kernels keep to WebGPU's portable limits (f32, ≤ 256 invocations and
//! 16 KiB of workgroup memory per workgroup, ≤ 8 storage buffers per stage), so the browser runs
//! the same code; every read-back is asynchronous.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hvq_wgpu::GpuError> {
//! use hvq_spec::{FeatureMap, ModelConfig, random_weights};
//! let ctx = hvq_wgpu::GpuContext::new().await?;          // GpuError::NoAdapter without a GPU
//! let weights = random_weights(&ModelConfig::tiny(), 1).expect("valid config");
//! let model = hvq_wgpu::GpuModel::new(&ctx, &weights)?;   // uploads every tensor once
//! let image = FeatureMap::zeros(3, 32, 32);
//! let grids = model.encode(&image, &[0, 1, 2]).await?;    // one token grid per level
//! let rebuilt = model.decode(&grids[2]).await?;           // 3 × 32 × 32 from the coarsest level
//! # let _ = rebuilt; Ok(()) }
//! ```
//!
//! Graphs are built once per input shape and replayed: GroupNorm (+swish) is fused into the
//! following convolution's input, nearest ×2 up-sampling into the up-sampler's convolution,
//! residual adds into the convolution that ends each block, and an attention block's q, k and v
//! into one 1×1 convolution. Attention uses an online softmax, so memory is
//! O(channels × positions), and the codebook search visits entries in tiles, never holding the
//! distance matrix.
#![deny(missing_docs)]

mod context;
mod error;
mod graph;
pub mod kernels;
mod model;
mod profile;
mod shaders;
mod uniforms;

pub use context::GpuContext;
pub use error::{GpuError, Result};
pub use model::{DEFAULT_BATCH_BYTES, GpuModel};
pub use profile::{KernelTotal, Profile, Timing};
pub use shaders::{Precision, shader_names, shader_source};
