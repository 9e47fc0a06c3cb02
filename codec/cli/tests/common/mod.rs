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

/// Reports a wgpu test that cannot run for want of an adapter. Where the test command has
/// installed one (`scripts/test.sh` sets `HVQ_REQUIRE_WGPU=1` after installing Mesa lavapipe), a
/// missing adapter is a failure, not a skip: the test must not pass without running.
pub fn skip_without_adapter(test: &str, why: &str) {
    assert!(
        std::env::var_os("HVQ_REQUIRE_WGPU").is_none(),
        "{test}: no wgpu adapter although HVQ_REQUIRE_WGPU is set: {why}"
    );
    eprintln!("SKIPPED {test}: {why}");
}
