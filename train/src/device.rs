//! Choosing the compute device, and making CUDA visible to a binary linked only
//! against `libtorch_cpu` (ENVIRONMENT.md: `--as-needed` drops `libtorch_cuda`).

use std::ffi::CString;
use std::path::PathBuf;

use tch::Device;

use crate::TrainError;

/// What the user asked for with `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceRequest {
    /// CPU only.
    Cpu,
    /// The first CUDA device; an error where there is none.
    Cuda,
    /// CUDA when usable, else CPU.
    Auto,
}

impl std::str::FromStr for DeviceRequest {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self, TrainError> {
        match s {
            "cpu" => Ok(DeviceRequest::Cpu),
            "cuda" => Ok(DeviceRequest::Cuda),
            "auto" => Ok(DeviceRequest::Auto),
            other => Err(TrainError::bad_config(
                "device",
                format!("`{other}` is not one of cpu, cuda, auto"),
            )),
        }
    }
}

/// Folders where libtorch's libraries (`libtorch_cuda.so`) may live: `LD_LIBRARY_PATH` entries
/// and `$LIBTORCH/lib`.
pub(crate) fn library_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var("LD_LIBRARY_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect();
    if let Ok(lt) = std::env::var("LIBTORCH") {
        dirs.push(PathBuf::from(lt).join("lib"));
    }
    dirs
}

/// Loads `libtorch_cuda.so` with `RTLD_NOW | RTLD_GLOBAL` so libtorch registers its CUDA
/// backend. Must run before the first tch call that touches a device.
pub fn load_cuda_library() -> Result<PathBuf, String> {
    let mut tried = Vec::new();
    for dir in library_dirs() {
        let path = dir.join("libtorch_cuda.so");
        if !path.exists() {
            continue;
        }
        let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: dlopen with a valid NUL-terminated path; the handle is intentionally leaked
        // so the library stays loaded for the life of the process.
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if !handle.is_null() {
            return Ok(path);
        }
        // SAFETY: dlerror returns a thread-local C string or null.
        let err = unsafe { libc::dlerror() };
        let msg = if err.is_null() {
            "unknown dlopen error".to_string()
        } else {
            // SAFETY: non-null dlerror result is a valid C string.
            unsafe { std::ffi::CStr::from_ptr(err) }
                .to_string_lossy()
                .into_owned()
        };
        tried.push(format!("{}: {msg}", path.display()));
    }
    if tried.is_empty() {
        Err(
            "libtorch_cuda.so not found in LD_LIBRARY_PATH or $LIBTORCH/lib (CPU-only torch?)"
                .into(),
        )
    } else {
        Err(tried.join("; "))
    }
}

/// Resolves a device request; asking for CUDA where it is unusable is an error.
pub fn select_device(req: DeviceRequest) -> Result<Device, TrainError> {
    if req == DeviceRequest::Cpu {
        return Ok(Device::Cpu);
    }
    let loaded = load_cuda_library();
    let available = loaded.is_ok() && tch::Cuda::is_available();
    match (req, available) {
        (_, true) => Ok(Device::Cuda(0)),
        (DeviceRequest::Auto, false) => Ok(Device::Cpu),
        _ => Err(TrainError::CudaUnavailable {
            reason: match loaded {
                Err(e) => e,
                Ok(p) => format!("loaded {} but libtorch sees no CUDA device", p.display()),
            },
        }),
    }
}
