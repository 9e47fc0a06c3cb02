//! # hvq-train
//!
//! Trains the hierarchical shared-codebook VQ-VAE of DESIGN.md §2–3 with libtorch (tch):
//! model, data pipeline, losses, schedule, checkpoints, evaluation, export.
#![deny(missing_docs)]

pub mod data;
pub mod error;
pub mod lpips;
pub mod metrics;
pub mod plot;

pub use error::TrainError;
