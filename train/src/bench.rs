//! Benchmarks (DESIGN.md §8: measured, never asserted): one training step of a preset,
//! and libtorch encode/decode of given weights — the baseline the codec backends are
//! compared against.

use std::path::Path;
use std::time::Instant;

use hvq_spec::{ModelConfig, Weights};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::TrainError;
use crate::config::TrainConfig;
use crate::eval::load_model;
use crate::train::Trainer;

/// Median wall time of `reps` runs of `f` after one warm-up run, in milliseconds.
pub fn median_ms(
    reps: usize,
    mut f: impl FnMut() -> Result<(), TrainError>,
) -> Result<f64, TrainError> {
    f()?;
    let mut times = Vec::with_capacity(reps.max(1));
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// One timed training-step measurement.
#[derive(Debug, Clone, Serialize)]
pub struct StepTiming {
    /// Preset name.
    pub preset: String,
    /// Batch size.
    pub batch: i64,
    /// Crop side.
    pub size: i64,
    /// Whether the LPIPS-VGG loss was part of the step.
    pub lpips: bool,
    /// Median milliseconds per step (forward + backward + Adam).
    pub ms: f64,
}

/// Times one training step of `preset` at `batch`×3×`size`².
pub fn time_train_step(
    preset: &str,
    batch: i64,
    size: i64,
    lpips: Option<&Path>,
    reps: usize,
    device: Device,
) -> Result<StepTiming, TrainError> {
    let toml = format!(
        "preset = \"{preset}\"\ndata_dir = \".\"\nout_dir = \".\"\n[data]\nimage_size = {size}\n[schedule]\nbatch = {batch}\nwarmup_steps = 0\n[loss]\nperceptual = {}\n",
        if lpips.is_some() { 1.0 } else { 0.0 },
    );
    let mut cfg = TrainConfig::parse(&toml, Path::new("<bench>"))?;
    if let Some(p) = lpips {
        cfg.lpips_path = p.to_path_buf();
    }
    let mut trainer = Trainer::new(&cfg, device)?;
    let x = Tensor::rand([batch, 3, size, size], (Kind::Float, device));
    let ms = median_ms(reps, || {
        trainer.train_step(&x)?;
        sync(device);
        Ok(())
    })?;
    Ok(StepTiming {
        preset: preset.into(),
        batch,
        size,
        lpips: lpips.is_some(),
        ms,
    })
}

/// Encode and decode timings of one image size.
#[derive(Debug, Clone, Serialize)]
pub struct CodecTiming {
    /// Image width.
    pub width: i64,
    /// Image height.
    pub height: i64,
    /// Median ms: encoder + level derivation + projection + nearest entry, all levels.
    pub encode_ms: f64,
    /// Median ms of decoding each level from its tokens, finest first.
    pub decode_ms: Vec<f64>,
}

/// Times libtorch encode and per-level decode of `weights` (batch 1).
pub fn time_codec(
    weights: &Weights,
    sizes: &[(i64, i64)],
    reps: usize,
    device: Device,
) -> Result<Vec<CodecTiming>, TrainError> {
    let (_vs, model) = load_model(weights, device)?;
    let mut out = Vec::new();
    for &(w, h) in sizes {
        let x = Tensor::rand([1, 3, h, w], (Kind::Float, device));
        let tokens: Vec<Tensor> = tch::no_grad(|| {
            let zs = model.level_latents(&model.normalize(&x));
            zs.iter()
                .map(|z| model.nearest(&model.project(z)))
                .collect()
        });
        let encode_ms = median_ms(reps, || {
            tch::no_grad(|| {
                for z in model.level_latents(&model.normalize(&x)) {
                    let _ = model.nearest(&model.project(&z));
                }
            });
            sync(device);
            Ok(())
        })?;
        let mut decode_ms = Vec::new();
        for (l, t) in tokens.iter().enumerate() {
            decode_ms.push(median_ms(reps, || {
                let _ = tch::no_grad(|| model.denormalize(&model.decode(l, &model.lookup(t))));
                sync(device);
                Ok(())
            })?);
        }
        out.push(CodecTiming {
            width: w,
            height: h,
            encode_ms,
            decode_ms,
        });
    }
    Ok(out)
}

/// Random weights of a preset, for timing when no trained weights are given.
pub fn random_preset_weights(preset: &str) -> Result<Weights, TrainError> {
    Ok(hvq_spec::random_weights(&ModelConfig::preset(preset)?, 1)?)
}
