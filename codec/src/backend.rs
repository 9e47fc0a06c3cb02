//! The model on one backend, behind one enum (static dispatch: two variants, no trait objects).

use std::sync::Arc;

use hvq_cpu::CpuModel;
use hvq_spec::{FeatureMap, TokenGrid, Weights};

use crate::{Backend, BackendKind, CodecError, Result};

/// A wgpu device to reuse, if the caller has one.
#[cfg(feature = "wgpu")]
pub(crate) type SharedContext = Option<hvq_wgpu::GpuContext>;
#[cfg(not(feature = "wgpu"))]
pub(crate) type SharedContext = Option<std::convert::Infallible>;

/// A model instantiated on one backend.
pub(crate) enum Engine {
    Cpu(CpuModel),
    #[cfg(feature = "wgpu")]
    Wgpu(Box<hvq_wgpu::GpuModel>),
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Engine({})", self.kind())
    }
}

impl Engine {
    /// Instantiates `weights` on the backend `choice` asks for.
    pub(crate) async fn new(
        weights: &Arc<Weights>,
        choice: Backend,
        ctx: SharedContext,
        f16: bool,
    ) -> Result<Self> {
        match choice {
            Backend::Cpu => Ok(Self::cpu(weights)),
            Backend::Wgpu => Self::wgpu(weights, ctx, true, f16).await,
            Backend::Auto => match Self::wgpu(weights, ctx, false, f16).await {
                Ok(engine) => Ok(engine),
                Err(e) => {
                    // A machine without a GPU is normal, not an error: say why at info level and go on.
                    log::info!(
                        "backend auto: using the CPU backend because {}",
                        error_chain(&e)
                    );
                    Ok(Self::cpu(weights))
                }
            },
        }
    }

    fn cpu(weights: &Arc<Weights>) -> Self {
        Engine::Cpu(CpuModel::new(Arc::clone(weights)))
    }

    /// The wgpu backend; with `allow_software` false, a software adapter (lavapipe/llvmpipe,
    /// WARP) is refused on native targets: there the multi-threaded CPU backend is faster than
    /// a GPU emulated on the same cores. In a browser any WebGPU adapter is taken, since the
    /// wasm CPU backend runs on one thread.
    #[cfg(feature = "wgpu")]
    async fn wgpu(
        weights: &Weights,
        ctx: SharedContext,
        allow_software: bool,
        f16: bool,
    ) -> Result<Self> {
        let ctx = match ctx {
            Some(ctx) => ctx,
            None => hvq_wgpu::GpuContext::new().await.map_err(CodecError::Gpu)?,
        };
        let info = ctx.adapter_info();
        let software = info.device_type == wgpu::DeviceType::Cpu && !cfg!(target_arch = "wasm32");
        if software && !allow_software {
            return Err(CodecError::SoftwareAdapter {
                adapter: info.name.clone(),
            });
        }
        log::info!(
            "wgpu adapter: {} ({:?}, {:?})",
            info.name,
            info.backend,
            info.device_type
        );
        let precision = if f16 {
            hvq_wgpu::Precision::F16
        } else {
            hvq_wgpu::Precision::F32
        };
        let model = hvq_wgpu::GpuModel::with_precision(&ctx, weights, precision)
            .map_err(CodecError::Gpu)?;
        log::info!("wgpu kernels in {}", precision.name());
        Ok(Engine::Wgpu(Box::new(model)))
    }

    #[cfg(not(feature = "wgpu"))]
    async fn wgpu(
        _weights: &Weights,
        _ctx: SharedContext,
        _allow_software: bool,
        _f16: bool,
    ) -> Result<Self> {
        Err(CodecError::WgpuNotCompiled)
    }

    /// Whether the kernels run with f16 activations (only ever on wgpu).
    pub(crate) fn f16(&self) -> bool {
        match self {
            Engine::Cpu(_) => false,
            #[cfg(feature = "wgpu")]
            Engine::Wgpu(m) => m.precision() == hvq_wgpu::Precision::F16,
        }
    }

    pub(crate) fn kind(&self) -> BackendKind {
        match self {
            Engine::Cpu(_) => BackendKind::Cpu,
            #[cfg(feature = "wgpu")]
            Engine::Wgpu(_) => BackendKind::Wgpu,
        }
    }

    /// Tokens of `levels` (ascending, valid) for an image already padded to the coarsest stride.
    pub(crate) async fn encode(
        &self,
        image: &FeatureMap,
        levels: &[usize],
    ) -> Result<Vec<TokenGrid>> {
        match self {
            Engine::Cpu(m) => m.encode(image, levels).map_err(CodecError::Cpu),
            #[cfg(feature = "wgpu")]
            Engine::Wgpu(m) => m.encode(image, levels).await.map_err(CodecError::Gpu),
        }
    }

    /// The latent map of every level (quantizer input, `D` channels) for an image already padded to
    /// the coarsest stride.
    pub(crate) async fn latents(&self, image: &FeatureMap) -> Result<Vec<FeatureMap>> {
        match self {
            Engine::Cpu(m) => m.encode_latents(image).map_err(CodecError::Cpu),
            #[cfg(feature = "wgpu")]
            Engine::Wgpu(m) => m.encode_latents(image).await.map_err(CodecError::Gpu),
        }
    }

    /// [`Engine::encode`] of images of one size, in one device batch on wgpu.
    #[cfg(feature = "wgpu")]
    pub(crate) async fn encode_batch(
        &self,
        images: &[FeatureMap],
        levels: &[usize],
    ) -> Result<Vec<Vec<TokenGrid>>> {
        match self {
            Engine::Cpu(m) => images
                .iter()
                .map(|image| m.encode(image, levels).map_err(CodecError::Cpu))
                .collect(),
            #[cfg(feature = "wgpu")]
            Engine::Wgpu(m) => m
                .encode_batch(images, levels)
                .await
                .map_err(CodecError::Gpu),
        }
    }

    /// The padded-size RGB map in `[0, 1]` that one grid decodes to.
    pub(crate) async fn decode(&self, grid: &TokenGrid) -> Result<FeatureMap> {
        match self {
            Engine::Cpu(m) => m.decode(grid).map_err(CodecError::Cpu),
            #[cfg(feature = "wgpu")]
            Engine::Wgpu(m) => m.decode(grid).await.map_err(CodecError::Gpu),
        }
    }
}

/// `error: cause: cause` on one line, for logs.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
