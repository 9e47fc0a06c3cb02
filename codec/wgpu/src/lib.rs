//! hvq-wgpu (in progress).
