//! Options of a [`crate::Codec`]: which backend, which limits, which levels.

use crate::Limits;

/// Which compute backend runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// A hardware wgpu adapter when one is found (and the `wgpu` feature is on), else the CPU;
    /// the reason for falling back is logged at `info` level through the `log` crate. On native
    /// targets a software adapter (lavapipe) counts as none: the CPU backend is faster than a GPU
    /// emulated on the same cores. In browsers any WebGPU adapter is used.
    #[default]
    Auto,
    /// The pure-Rust CPU reference backend.
    Cpu,
    /// The wgpu/WGSL backend on any adapter, software ones included; building fails when no
    /// adapter is found.
    Wgpu,
}

impl std::str::FromStr for Backend {
    type Err = UnknownBackend;
    fn from_str(s: &str) -> Result<Self, UnknownBackend> {
        match s {
            "auto" => Ok(Backend::Auto),
            "cpu" => Ok(Backend::Cpu),
            "wgpu" | "gpu" => Ok(Backend::Wgpu),
            other => Err(UnknownBackend(other.to_string())),
        }
    }
}

/// A backend name that is not `auto`, `cpu` or `wgpu`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown backend `{0}` (expected auto, cpu or wgpu)")]
pub struct UnknownBackend(pub String);

/// The backend a built [`crate::Codec`] actually runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// The CPU reference backend.
    Cpu,
    /// The wgpu backend.
    Wgpu,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Wgpu => "wgpu",
        })
    }
}

/// Checks a `width × height` image against [`Limits::max_pixels`]; zero sizes are refused too.
pub(crate) fn check_image(limits: &Limits, width: u64, height: u64) -> crate::Result<()> {
    if width == 0 || height == 0 {
        return Err(crate::CodecError::EmptyImage {
            width: width.min(u32::MAX as u64) as u32,
            height: height.min(u32::MAX as u64) as u32,
        });
    }
    if width.saturating_mul(height) > limits.max_pixels {
        return Err(crate::CodecError::ImageTooLarge {
            width,
            height,
            limit: limits.max_pixels,
        });
    }
    Ok(())
}

/// Which levels to encode.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LevelSelection {
    /// Every level of the model.
    #[default]
    All,
    /// These levels (0 = finest); duplicates are ignored.
    Only(Vec<usize>),
}

impl LevelSelection {
    /// The selected levels, ascending and unique, each checked against `model_levels`.
    pub(crate) fn resolve(&self, model_levels: usize) -> crate::Result<Vec<usize>> {
        let mut levels = match self {
            LevelSelection::All => (0..model_levels).collect(),
            LevelSelection::Only(l) => l.clone(),
        };
        levels.sort_unstable();
        levels.dedup();
        if levels.is_empty() {
            return Err(crate::CodecError::NoLevelsSelected);
        }
        if let Some(&bad) = levels.iter().find(|&&l| l >= model_levels) {
            return Err(crate::CodecError::LevelOutOfRange {
                level: bad,
                available: (0..model_levels).collect(),
            });
        }
        Ok(levels)
    }
}

impl From<&[usize]> for LevelSelection {
    fn from(levels: &[usize]) -> Self {
        LevelSelection::Only(levels.to_vec())
    }
}

impl<const N: usize> From<&[usize; N]> for LevelSelection {
    fn from(levels: &[usize; N]) -> Self {
        LevelSelection::Only(levels.to_vec())
    }
}

impl From<Vec<usize>> for LevelSelection {
    fn from(levels: Vec<usize>) -> Self {
        LevelSelection::Only(levels)
    }
}
