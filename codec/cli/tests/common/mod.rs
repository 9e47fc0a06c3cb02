//! Shared helpers of the CLI tests: a tiny model file, test images, and checks on a run's outcome.
#![allow(dead_code)] // each test binary uses a different subset

#[path = "../../../tests/common/fixtures.rs"]
mod fixtures;
pub use fixtures::{pattern, tiny_weights};

/// Writes `tiny_weights(1)` as `DIR/model.safetensors`, the model the CLI tests pass to `hvq`.
pub fn write_tiny_model(dir: &std::path::Path) {
    std::fs::write(
        dir.join("model.safetensors"),
        tiny_weights(1).to_safetensors(hvq_spec::StoreDtype::F32),
    )
    .unwrap();
}

/// Writes `pattern(w, h)` as a PNG file.
pub fn save_png(path: &std::path::Path, w: u32, h: u32) {
    std::fs::write(
        path,
        pattern(w, h).encode_as(image::ImageFormat::Png).unwrap(),
    )
    .unwrap();
}

/// A run's standard error as text.
pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success without a panic; returns standard error.
#[track_caller]
pub fn ok(out: &std::process::Output) -> String {
    let err = stderr(out);
    assert!(out.status.success(), "hvq failed: {err}");
    assert!(!err.contains("panicked"), "hvq panicked: {err}");
    err
}

/// Asserts a clean failure: non-zero exit, the expected words on stderr, no panic; returns stderr.
#[track_caller]
pub fn fails_with(out: &std::process::Output, expected: &str) -> String {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "hvq succeeded, expected an error containing {expected:?}"
    );
    assert!(err.contains(expected), "stderr lacks {expected:?}: {err}");
    assert!(!err.contains("panicked"), "hvq panicked: {err}");
    err
}
