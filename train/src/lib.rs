//! # hvq-train
//!
//! Trains the hierarchical shared-codebook VQ-VAE of DESIGN.md §2–3 with libtorch (tch):
//! model, data pipeline, losses, schedule, checkpoints, evaluation, export.
#![deny(missing_docs)]

pub mod bench;
pub mod checkpoint;
pub mod codebook;
pub mod codec_bench;
pub mod config;
pub mod data;
pub mod device;
pub mod distributed;
pub mod error;
pub mod eval;
pub mod export;
pub mod lpips;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod plot;
pub mod report;
pub mod shards;
pub mod sharing;
pub mod train;
pub mod vectors;

pub use error::TrainError;
