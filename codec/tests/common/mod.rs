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
