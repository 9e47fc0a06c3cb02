//! # hvq-cpu
//!
//! The pure-Rust CPU backend of hvq: the reference every other backend is tested against,
//! and the fallback runtime where no GPU adapter exists. No C dependencies; multi-threaded
//! through rayon with the default `parallel` feature, sequential without it (wasm32).
#![deny(missing_docs)]

mod error;
mod model;
pub mod ops;
mod par;

pub use error::CpuError;
pub use model::CpuModel;
