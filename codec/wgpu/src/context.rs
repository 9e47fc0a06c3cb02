//! The device, its queue, compiled pipelines, and the asynchronous readback path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{GpuError, Result};
use crate::shaders::{Kernel, Overrides, Precision, Slot};

/// A compiled kernel: pipeline plus the bind group layout its bindings follow.
pub(crate) struct Pipeline {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
    pub(crate) kernel: Kernel,
}

/// An adapter, its device and queue, and a cache of compiled pipelines.
///
/// Create one per process (or per page) and share it: clones are cheap handles to the same
/// device, and pipelines compiled for one model are reused by the next.
#[derive(Clone)]
pub struct GpuContext {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    /// What the adapter offers (the device is opened with WebGPU's portable defaults).
    adapter_features: wgpu::Features,
    adapter_limits: wgpu::Limits,
    pipelines: Arc<Mutex<PipelineCache>>,
}

type PipelineCache = HashMap<(Kernel, Overrides, Precision), Arc<Pipeline>>;

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .finish()
    }
}

impl GpuContext {
    /// Picks the default adapter and opens a device.
    ///
    /// Only the backends the kernels are written for are asked for: Vulkan, Metal, DX12 and a
    /// browser's WebGPU (`WGPU_BACKEND` overrides this). Not OpenGL: probing it on Linux opens
    /// EGL, which logs driver errors on machines without a display, although no kernel would
    /// run there.
    ///
    /// On Linux, Mesa's implicit Vulkan layer `VK_LAYER_MESA_device_select` connects to the
    /// Wayland display while adapters are enumerated, and libwayland prints `error:
    /// XDG_RUNTIME_DIR is invalid or not set in the environment.` to stderr when that variable
    /// is unset. A library cannot safely change the environment of a running process; a program
    /// that never draws on a screen sets `NODEVICE_SELECT=1` before it starts threads (the
    /// layer's documented switch), as the `hvq` CLI does.
    ///
    /// The device is requested with WebGPU's portable default limits (≤ 256 invocations per
    /// workgroup, 16 KiB workgroup memory, 8 storage buffers per stage), so kernels that run
    /// here run in a browser too; only the buffer-size limits are raised to the adapter's.
    /// Two optional features are asked for where the adapter has them: `shader-f16`, so that
    /// a model may choose [`Precision::F16`] (f32 kernels never use it), and `timestamp-query`,
    /// for [`crate::GpuModel::profile_encode`]'s per-kernel device times.
    ///
    /// # Errors
    /// [`GpuError::NoAdapter`] when no adapter exists, [`GpuError::RequestDevice`] when the
    /// adapter refuses the device.
    pub async fn new() -> Result<Self> {
        let mut instance_desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        instance_desc.backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
        let instance = wgpu::Instance::new(instance_desc);
        let options = wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
            apply_limit_buckets: false,
        };
        let adapter = instance
            .request_adapter(&options)
            .await
            .map_err(GpuError::NoAdapter)?;
        let available = adapter.limits();
        let required_limits = wgpu::Limits {
            max_storage_buffer_binding_size: available.max_storage_buffer_binding_size,
            max_buffer_size: available.max_buffer_size,
            ..wgpu::Limits::default()
        };
        let descriptor = wgpu::DeviceDescriptor {
            label: Some("hvq"),
            required_features: adapter.features()
                & (wgpu::Features::SHADER_F16 | wgpu::Features::TIMESTAMP_QUERY),
            required_limits,
            ..Default::default()
        };
        let (device, queue) = adapter
            .request_device(&descriptor)
            .await
            .map_err(GpuError::RequestDevice)?;
        Ok(GpuContext {
            device,
            queue,
            info: adapter.get_info(),
            adapter_features: adapter.features(),
            adapter_limits: available,
            pipelines: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Blocking [`GpuContext::new`] for native callers.
    ///
    /// # Errors
    /// As [`GpuContext::new`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking() -> Result<Self> {
        pollster::block_on(Self::new())
    }

    /// The adapter's description (name, backend, device type), for logs and reports.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// The adapter's own features and limits, of which the device uses WebGPU's portable
    /// subset: what a kernel could gain on this hardware (`shader-f16`, subgroups, larger
    /// workgroups and workgroup memory).
    pub fn adapter_capabilities(&self) -> (wgpu::Features, &wgpu::Limits) {
        (self.adapter_features, &self.adapter_limits)
    }

    /// A few lines for logs and benchmark records: the adapter, its driver, the features that
    /// matter to the kernels (whether they are used or not) and the limits that shape them.
    pub fn adapter_report(&self) -> String {
        let i = &self.info;
        let l = &self.adapter_limits;
        let wanted = [
            ("shader-f16", wgpu::Features::SHADER_F16),
            ("subgroup", wgpu::Features::SUBGROUP),
            ("timestamp-query", wgpu::Features::TIMESTAMP_QUERY),
        ];
        let features: Vec<String> = wanted
            .iter()
            .map(|(name, f)| {
                format!(
                    "{name} {}",
                    if self.adapter_features.contains(*f) {
                        "yes"
                    } else {
                        "no"
                    }
                )
            })
            .collect();
        format!(
            "adapter: {} ({:?}, {:?}), vendor {:#06x} device {:#06x}\n\
             driver: {} {}\n\
             features: {}\n\
             limits: workgroup invocations {}, workgroup size {}×{}×{}, workgroup memory {} B, \
             storage buffers per stage {}, storage binding {} B, buffer {} B",
            i.name,
            i.backend,
            i.device_type,
            i.vendor,
            i.device,
            i.driver,
            i.driver_info,
            features.join(", "),
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroup_size_x,
            l.max_compute_workgroup_size_y,
            l.max_compute_workgroup_size_z,
            l.max_compute_workgroup_storage_size,
            l.max_storage_buffers_per_shader_stage,
            l.max_storage_buffer_binding_size,
            l.max_buffer_size,
        )
    }

    /// Whether the device can run [`Precision::F16`] kernels (the adapter has `shader-f16`).
    pub fn supports_f16(&self) -> bool {
        self.device.features().contains(wgpu::Features::SHADER_F16)
    }

    /// Whether the device can time kernels ([`crate::GpuModel::profile_encode`]).
    pub fn supports_timestamps(&self) -> bool {
        self.device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// The limits the device was created with.
    pub fn limits(&self) -> wgpu::Limits {
        self.device.limits()
    }

    pub(crate) fn device(&self) -> &wgpu::Device {
        &self.device
    }

    pub(crate) fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// The largest buffer that can be created and bound as storage, in bytes.
    pub(crate) fn buffer_limit(&self) -> u64 {
        let limits = self.device.limits();
        // Kernels index with u32: elements (4 bytes) stay below 2^32 with this cap too.
        limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size)
            .min(u64::from(u32::MAX))
    }

    /// Fails when a buffer of `bytes` bytes could not be created or bound as storage.
    pub(crate) fn check_buffer_size(&self, bytes: u64) -> Result<()> {
        let limit = self.buffer_limit();
        if bytes > limit {
            return Err(GpuError::LimitExceeded {
                what: "storage buffer bytes",
                got: bytes,
                limit,
            });
        }
        Ok(())
    }

    /// The pipeline of `kernel` specialised by `overrides`, compiled on first use.
    pub(crate) async fn pipeline(
        &self,
        kernel: Kernel,
        overrides: Overrides,
        precision: Precision,
    ) -> Result<Arc<Pipeline>> {
        let key = (kernel, overrides, precision);
        if let Some(p) = self.lock_pipelines().get(&key) {
            return Ok(p.clone());
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let built = self.build_pipeline(kernel, overrides, precision);
        if let Some(source) = scope.pop().await {
            return Err(GpuError::Shader {
                kernel: kernel.name(),
                source,
            });
        }
        let built = Arc::new(built);
        self.lock_pipelines().insert(key, built.clone());
        Ok(built)
    }

    fn lock_pipelines(&self) -> std::sync::MutexGuard<'_, PipelineCache> {
        // The map is only ever inserted into whole entries; a panic elsewhere cannot corrupt it.
        self.pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn build_pipeline(
        &self,
        kernel: Kernel,
        overrides: Overrides,
        precision: Precision,
    ) -> Pipeline {
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(kernel.name()),
                source: wgpu::ShaderSource::Wgsl(kernel.source(precision).into()),
            });
        let entries: Vec<wgpu::BindGroupLayoutEntry> = kernel
            .slots()
            .iter()
            .enumerate()
            .map(|(i, slot)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match slot {
                        Slot::Uniform => wgpu::BufferBindingType::Uniform,
                        Slot::Read => wgpu::BufferBindingType::Storage { read_only: true },
                        Slot::Write => wgpu::BufferBindingType::Storage { read_only: false },
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(kernel.name()),
                entries: &entries,
            });
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(kernel.name()),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let constants = overrides.constants(kernel);
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.name()),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        Pipeline {
            pipeline,
            layout,
            kernel,
        }
    }

    /// Submits `encoder` after appending copies of `sources` (each `(buffer, bytes)`) one after
    /// another into `staging`, then maps `staging` and returns the bytes of each source.
    /// Asynchronous so the same code runs on the web, where the browser resolves the mapping;
    /// natively the device is polled to completion.
    pub(crate) async fn submit_and_read(
        &self,
        mut encoder: wgpu::CommandEncoder,
        sources: &[(&wgpu::Buffer, u64)],
        staging: &wgpu::Buffer,
    ) -> Result<Vec<Vec<u8>>> {
        let mut offset = 0;
        for (src, bytes) in sources {
            encoder.copy_buffer_to_buffer(src, 0, staging, offset, *bytes);
            offset += bytes;
        }
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        self.queue.submit([encoder.finish()]);
        let slice = staging.slice(..offset);
        let (tx, rx) = futures_channel::oneshot::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            // The receiver is only gone if the caller's future was dropped: nobody to tell.
            let _ = tx.send(r);
        });
        if let Some(source) = validation.pop().await {
            return Err(GpuError::Device {
                during: "kernel submission",
                source,
            });
        }
        if let Some(source) = oom.pop().await {
            return Err(GpuError::Device {
                during: "kernel submission",
                source,
            });
        }
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(GpuError::Poll)?;
        rx.await
            .map_err(|_| GpuError::ReadbackCancelled)?
            .map_err(GpuError::Readback)?;
        let mut out = Vec::with_capacity(sources.len());
        {
            let view = slice.get_mapped_range().map_err(GpuError::MappedRange)?;
            let mut start = 0usize;
            for (_, bytes) in sources {
                out.push(view[start..start + *bytes as usize].to_vec());
                start += *bytes as usize;
            }
        }
        staging.unmap();
        Ok(out)
    }

    /// Compiles every kernel variant the model and [`crate::kernels`] use (24 convolutions
    /// and the rest) in `precision`, each under its own error scope, so a driver that rejects
    /// a kernel is reported by name up front rather than in the middle of an encode.
    ///
    /// # Errors
    /// [`GpuError::Unsupported`] for [`Precision::F16`] on a device without `shader-f16`;
    /// [`GpuError::Shader`] naming the first kernel that fails.
    pub async fn compile_kernels(&self, precision: Precision) -> Result<()> {
        self.check_precision(precision)?;
        for (kernel, overrides) in Overrides::all_variants() {
            self.pipeline(kernel, overrides, precision).await?;
        }
        Ok(())
    }

    /// Fails unless the device can run kernels in `precision`.
    pub(crate) fn check_precision(&self, precision: Precision) -> Result<()> {
        if precision == Precision::F16 && !self.supports_f16() {
            return Err(GpuError::Unsupported {
                what: "f16 kernels",
                needs: "shader-f16",
                adapter: self.info.name.clone(),
            });
        }
        Ok(())
    }

    /// The cached pipeline, or a new one compiled without an error scope (callers wrap graph
    /// building in one; [`GpuContext::compile_kernels`] checks each kernel with its own).
    pub(crate) fn pipeline_now(
        &self,
        kernel: Kernel,
        overrides: Overrides,
        precision: Precision,
    ) -> Arc<Pipeline> {
        let key = (kernel, overrides, precision);
        if let Some(p) = self.lock_pipelines().get(&key) {
            return p.clone();
        }
        let built = Arc::new(self.build_pipeline(kernel, overrides, precision));
        self.lock_pipelines().insert(key, built.clone());
        built
    }
}
