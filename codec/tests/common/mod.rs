//! Shared helpers: tiny random models and deterministic test images.
#![allow(dead_code)] // each test binary uses a different subset

use hvq_codec::{Backend, Codec};

mod fixtures;
pub use fixtures::{pattern, tiny_weights};

/// A codec on the CPU backend for `tiny_weights(seed)`.
pub fn tiny_codec(seed: u64) -> Codec {
    Codec::builder(tiny_weights(seed))
        .backend(Backend::Cpu)
        .build()
        .expect("tiny codec builds")
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
