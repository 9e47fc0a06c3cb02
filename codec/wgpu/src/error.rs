//! The crate's one error type.

/// Everything that can go wrong in `hvq-wgpu`, split by whose fault it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    // --- no usable device ---
    /// No wgpu adapter is available (no GPU, no Vulkan/Metal/DX12 driver, no WebGPU in the
    /// browser). Returned by [`crate::GpuContext::new`]; callers fall back to the CPU backend.
    #[error("no wgpu adapter available: {0}")]
    NoAdapter(#[source] wgpu::RequestAdapterError),
    /// The adapter refused to create a device with the limits this crate needs.
    /// Returned by [`crate::GpuContext::new`].
    #[error("the wgpu adapter refused to create a device: {0}")]
    RequestDevice(#[source] wgpu::RequestDeviceError),
    /// The device reported an error while running kernels (device lost, out of memory,
    /// validation). Returned by any call that runs kernels.
    #[error("wgpu device error during {during}: {source}")]
    Device {
        /// What was running.
        during: &'static str,
        /// The device's report.
        #[source]
        source: wgpu::Error,
    },
    /// Mapping the read-back buffer failed (device lost). Returned by any call that runs kernels.
    #[error("reading results back from the device failed: {0}")]
    Readback(#[source] wgpu::BufferAsyncError),
    /// Waiting for the device failed (device lost, timeout). Returned by any call that runs kernels.
    #[error("waiting for the device failed: {0}")]
    Poll(#[source] wgpu::PollError),
    /// The mapped read-back range was not accessible. Returned by any call that runs kernels.
    #[error("the read-back buffer's mapped range is not accessible: {0}")]
    MappedRange(#[source] wgpu::MapRangeError),
    /// The read-back callback was dropped without an answer (the device was destroyed).
    /// Returned by any call that runs kernels.
    #[error("the device dropped the read-back request")]
    ReadbackCancelled,

    // --- bad input ---
    /// An input map or grid has a shape the operation does not accept.
    /// Returned by [`crate::GpuModel`] methods and [`crate::kernels`] functions.
    #[error("bad input to {op}: {reason}")]
    BadInput {
        /// The operation.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An image, level or token grid the model cannot take: the checks every backend shares.
    /// Returned by [`crate::GpuModel`] methods and [`crate::kernels::codebook_gather`].
    #[error(transparent)]
    Input(#[from] hvq_spec::InputError),

    // --- features ---
    /// The caller asked for something the adapter lacks an optional feature for (f16 kernels
    /// without `shader-f16`). Returned by [`crate::GpuModel::with_precision`] and
    /// [`crate::GpuContext::compile_kernels`]; [`crate::Precision::F32`] always works.
    #[error("{what} need the adapter feature `{needs}`, which {adapter} does not offer")]
    Unsupported {
        /// What was asked for.
        what: &'static str,
        /// The missing feature, as WebGPU names it.
        needs: &'static str,
        /// The adapter's name.
        adapter: String,
    },

    // --- limits ---
    /// A buffer or dispatch would exceed a limit of the device (checked before allocation).
    /// Returned by any call that creates buffers or runs kernels.
    #[error("{what} needs {got}, over the device limit of {limit}")]
    LimitExceeded {
        /// Which limit.
        what: &'static str,
        /// The amount needed.
        got: u64,
        /// The device's limit.
        limit: u64,
    },

    // --- shaders (a bug in this crate, or a driver that rejects valid WGSL) ---
    /// A kernel failed to compile or a pipeline failed to build.
    #[error("kernel `{kernel}` failed to compile: {source}")]
    Shader {
        /// The kernel's file stem.
        kernel: &'static str,
        /// The device's report.
        #[source]
        source: wgpu::Error,
    },
}

impl GpuError {
    /// The variant's name (`"NoAdapter"`, …): a stable, machine-readable kind for
    /// bindings and logs, so callers need not parse `Debug` text.
    pub fn kind(&self) -> &'static str {
        match self {
            GpuError::NoAdapter(..) => "NoAdapter",
            GpuError::RequestDevice(..) => "RequestDevice",
            GpuError::Device { .. } => "Device",
            GpuError::Readback(..) => "Readback",
            GpuError::Poll(..) => "Poll",
            GpuError::MappedRange(..) => "MappedRange",
            GpuError::ReadbackCancelled => "ReadbackCancelled",
            GpuError::BadInput { .. } => "BadInput",
            // The input checks keep their own names ("LevelOutOfRange", …).
            GpuError::Input(e) => e.kind(),
            GpuError::Unsupported { .. } => "Unsupported",
            GpuError::LimitExceeded { .. } => "LimitExceeded",
            GpuError::Shader { .. } => "Shader",
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = GpuError> = std::result::Result<T, E>;
