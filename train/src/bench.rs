//! Benchmarks (DESIGN.md §8: measured, never asserted): one training step of a preset,
//! and libtorch encode/decode of given weights — the baseline the codec backends are
//! compared against.
//!
//! A training step's speed is also given as achieved TFLOP/s: its FLOPs per image (the
//! model's from [`hvq_spec::flops`], LPIPS-VGG's from [`vgg_flops`], combined by
//! [`step_flops`]) over its time, and as a fraction of the card's dense peak ([`card_peaks`])
//! and of dense products measured on the same device ([`measure_peaks`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use hvq_spec::flops::ModelFlops;
use hvq_spec::graph::ModelGraph;
use hvq_spec::{ModelConfig, Weights};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::TrainError;
use crate::config::{PerfOptions, Precision, TrainConfig};
use crate::eval::load_model;
use crate::lpips::Net;
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

/// Waits for the device's queued work (a no-op on the CPU).
pub(crate) fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Forward FLOPs (2 per multiply-add) of LPIPS-VGG's backbone on one `width`×`height` image
/// ([`Net::forward_flops`], from the same layer list LPIPS runs).
pub fn vgg_flops(width: u64, height: u64) -> u64 {
    Net::Vgg.forward_flops(width, height)
}

/// How many images' worth of LPIPS-VGG a training step runs per training image.
///
/// LPIPS's weights are frozen, so its backward computes input gradients only: about one forward
/// per layer, for the images whose gradient is wanted (the reconstructions), none for the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LpipsPasses {
    /// Images through the backbone forward.
    pub forward_images: u64,
    /// Images through the backbone backward (input gradients only).
    pub backward_images: u64,
}

impl LpipsPasses {
    /// The target's features once without gradient and the `levels` reconstructions in one
    /// batch: `levels + 1` forward, `levels` backward.
    pub fn batched(levels: usize) -> Self {
        LpipsPasses {
            forward_images: levels as u64 + 1,
            backward_images: levels as u64,
        }
    }

    /// One LPIPS call per level, each recomputing the target's features: `2·levels` forward,
    /// `levels` backward (the target branch needs no gradient).
    pub fn per_level(levels: usize) -> Self {
        LpipsPasses {
            forward_images: 2 * levels as u64,
            backward_images: levels as u64,
        }
    }
}

/// The FLOPs of one training step per training image (optimizer, norms and element-wise ops
/// left out; see [`hvq_spec::flops`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StepFlops {
    /// The model forward: the encoder with every level, and every level's decoder.
    pub model_forward: u64,
    /// The model backward.
    pub model_backward: u64,
    /// LPIPS-VGG forward.
    pub lpips_forward: u64,
    /// LPIPS-VGG backward (input gradients).
    pub lpips_backward: u64,
}

impl StepFlops {
    /// Everything.
    pub fn total(&self) -> u64 {
        self.model_forward + self.model_backward + self.lpips_forward + self.lpips_backward
    }
}

/// The FLOPs per image of a training step of `cfg` on `size`×`size` crops, with LPIPS-VGG run
/// as `lpips` says (or not at all).
pub fn step_flops(cfg: &ModelConfig, size: u64, lpips: Option<LpipsPasses>) -> StepFlops {
    let model = ModelFlops::new(&ModelGraph::new(cfg), size as usize, size as usize).total();
    let vgg = vgg_flops(size, size);
    let p = lpips.unwrap_or(LpipsPasses {
        forward_images: 0,
        backward_images: 0,
    });
    StepFlops {
        model_forward: model.forward,
        model_backward: model.backward,
        lpips_forward: p.forward_images * vgg,
        lpips_backward: p.backward_images * vgg,
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
    /// The speed options the step ran with (precision, cuDNN benchmark, fused attention).
    pub perf: PerfOptions,
    /// The LPIPS passes the FLOP count assumes, when LPIPS was part of the step.
    pub lpips_passes: Option<LpipsPasses>,
    /// Median milliseconds per step (forward + backward + Adam).
    pub ms: f64,
    /// Training images per second.
    pub images_per_s: f64,
    /// FLOPs per training image.
    pub flops: StepFlops,
    /// Model forward GFLOP per image (all levels).
    pub model_forward_gflop: f64,
    /// The whole step's GFLOP per image.
    pub step_gflop: f64,
    /// Achieved TFLOP/s: the step's FLOPs over its time.
    pub tflops: f64,
    /// `tflops` as a fraction of each peak (by [`Peak::name`]); filled by [`StepTiming::rate_against`].
    pub of_peak: BTreeMap<String, f64>,
}

impl StepTiming {
    /// Fills [`StepTiming::of_peak`].
    pub fn rate_against(&mut self, peaks: &[Peak]) {
        self.of_peak = peaks
            .iter()
            .map(|p| (p.name.clone(), self.tflops / p.tflops))
            .collect();
    }
}

/// A rate the step is compared against.
#[derive(Debug, Clone, Serialize)]
pub struct Peak {
    /// What it is, e.g. `card TF32 dense` or `matmul f32 4096`.
    pub name: String,
    /// Whether it was measured here (else it is the card's datasheet figure).
    pub measured: bool,
    /// TFLOP/s.
    pub tflops: f64,
}

/// Dense datasheet peaks of a card, TFLOP/s.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CardPeaks {
    /// The table entry that matched.
    pub model: &'static str,
    /// FP32 without tensor cores.
    pub fp32: f64,
    /// TF32 tensor cores, dense (cuDNN convolutions of f32 use them by default).
    pub tf32: f64,
    /// BF16 tensor cores, dense.
    pub bf16: f64,
}

impl CardPeaks {
    /// As [`Peak`]s.
    pub fn peaks(&self) -> Vec<Peak> {
        [
            ("FP32", self.fp32),
            ("TF32 dense", self.tf32),
            ("BF16 dense", self.bf16),
        ]
        .map(|(what, tflops)| Peak {
            name: format!("card {what}"),
            measured: false,
            tflops,
        })
        .into()
    }
}

/// The datasheet peaks of a card named as `nvidia-smi` names it, for the cards known here
/// (NVIDIA's H100/H200 and A100 datasheets; sparse figures halved).
pub fn card_peaks(name: &str) -> Option<CardPeaks> {
    let n = name.to_ascii_uppercase();
    let card = |model, fp32, tf32, bf16| {
        Some(CardPeaks {
            model,
            fp32,
            tf32,
            bf16,
        })
    };
    if n.contains("NVL") {
        // H100 NVL and H200 NVL have their own, lower figures: not in the table.
        None
    } else if n.contains("H200") {
        card("H200 SXM", 67.0, 494.7, 989.4)
    } else if n.contains("H100") && n.contains("PCIE") {
        card("H100 PCIe", 51.0, 378.0, 756.0)
    } else if n.contains("H100") {
        card("H100 SXM", 67.0, 494.7, 989.4)
    } else if n.contains("A100") {
        card("A100", 19.5, 156.0, 312.0)
    } else {
        None
    }
}

/// The device's name: `card` when given, else `nvidia-smi`'s name of the CUDA device or the
/// CPU's model name from `/proc/cpuinfo`, else `unknown`.
pub fn device_name(device: Device, card: Option<&str>) -> String {
    if let Some(c) = card {
        return c.to_string();
    }
    let found = match device {
        Device::Cuda(i) => std::process::Command::new("nvidia-smi")
            .args([
                "-i",
                &i.to_string(),
                "--query-gpu=name",
                "--format=csv,noheader",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string()),
        _ => std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        }),
    };
    found
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The version of the libtorch this process runs, from the `version.py` beside the loaded
/// `libtorch_cpu.so` (a pip torch; Linux only), when it can be found.
pub fn torch_version() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let lib = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))?;
    let root = Path::new(lib).parent()?.parent()?;
    let py = std::fs::read_to_string(root.join("version.py")).ok()?;
    let line = py.lines().find(|l| l.starts_with("__version__"))?;
    Some(
        line.split_once('=')?
            .1
            .trim()
            .trim_matches(['\'', '"'])
            .to_string(),
    )
}

/// Measured dense rates on `device`, median of `reps`: an f32 matrix product (4096² on CUDA,
/// 2048² on the CPU), a bf16 one on CUDA, and an f32 3×3 convolution like the model's.
pub fn measure_peaks(device: Device, reps: usize) -> Result<Vec<Peak>, TrainError> {
    let cuda = device.is_cuda();
    let n: i64 = if cuda { 4096 } else { 2048 };
    let mut kinds = vec![(Kind::Float, "f32")];
    if cuda {
        kinds.push((Kind::BFloat16, "bf16"));
    }
    let mut peaks = Vec::new();
    for (kind, label) in kinds {
        let a = Tensor::randn([n, n], (kind, device));
        let b = Tensor::randn([n, n], (kind, device));
        let ms = median_ms(reps, || {
            let _ = a.matmul(&b);
            sync(device);
            Ok(())
        })?;
        peaks.push(Peak {
            name: format!("matmul {label} {n}"),
            measured: true,
            tflops: 2.0 * (n as f64).powi(3) / (ms * 1e9),
        });
    }
    // [batch, C, side, side] → C channels, 3×3, pad 1.
    let (batch, c, side): (i64, i64, i64) = if cuda { (16, 256, 64) } else { (2, 128, 32) };
    let x = Tensor::randn([batch, c, side, side], (Kind::Float, device));
    let w = Tensor::randn([c, c, 3, 3], (Kind::Float, device));
    let ms = median_ms(reps, || {
        let _ = x.conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
        sync(device);
        Ok(())
    })?;
    let flops = 2.0 * (c * c * 9 * side * side * batch) as f64;
    peaks.push(Peak {
        name: format!("conv3x3 f32 {c}ch {side}x{side} b{batch}"),
        measured: true,
        tflops: flops / (ms * 1e9),
    });
    Ok(peaks)
}

/// The training step [`time_train_step`] times.
#[derive(Debug, Clone, Copy)]
pub struct StepBench<'a> {
    /// Preset name.
    pub preset: &'a str,
    /// Batch size.
    pub batch: i64,
    /// Crop side.
    pub size: i64,
    /// LPIPS-VGG weights, when the perceptual loss is part of the step.
    pub lpips: Option<&'a Path>,
    /// Compute precision.
    pub precision: Precision,
}

/// Times one training step of `step.preset` at `batch`×3×`size`² (median of `reps`).
pub fn time_train_step(
    step: &StepBench,
    reps: usize,
    device: Device,
) -> Result<StepTiming, TrainError> {
    let StepBench {
        preset,
        batch,
        size,
        lpips,
        precision,
    } = *step;
    let toml = format!(
        "preset = \"{preset}\"\ndata_dir = \".\"\nout_dir = \".\"\n[data]\nimage_size = {size}\n[schedule]\nbatch = {batch}\nwarmup_steps = 0\n[loss]\nperceptual = {}\n",
        if lpips.is_some() { 1.0 } else { 0.0 },
    );
    let mut cfg = TrainConfig::parse(&toml, Path::new("<bench>"))?;
    if let Some(p) = lpips {
        cfg.lpips_path = p.to_path_buf();
    }
    cfg.perf.precision = precision;
    let model = cfg.model_config()?;
    // The step's useful work, LPIPS as `Trainer::train_step` runs it since issue 10 (the target
    // once, the levels in one batch). A step that recomputes the target per level is credited
    // with the same FLOPs, so rates before and after that change compare like for like.
    let lpips_passes = lpips.map(|_| LpipsPasses::batched(model.levels));
    let flops = step_flops(&model, size as u64, lpips_passes);
    let mut trainer = Trainer::new(&cfg, device)?;
    let x = Tensor::rand([batch, 3, size, size], (Kind::Float, device));
    // `advance`, as the training loop runs it: statistics stay on the device.
    let ms = median_ms(reps, || {
        trainer.advance(&x)?;
        sync(device);
        Ok(())
    })?;
    let images_per_s = batch as f64 / (ms / 1e3);
    Ok(StepTiming {
        preset: preset.into(),
        batch,
        size,
        lpips: lpips.is_some(),
        perf: cfg.perf.clone(),
        lpips_passes,
        ms,
        images_per_s,
        flops,
        model_forward_gflop: flops.model_forward as f64 / 1e9,
        step_gflop: flops.total() as f64 / 1e9,
        tflops: flops.total() as f64 * images_per_s / 1e12,
        of_peak: BTreeMap::new(),
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
        let tokens: Vec<Tensor> = tch::no_grad(|| model.encode_tokens(&x));
        let encode_ms = median_ms(reps, || {
            let _ = tch::no_grad(|| model.encode_tokens(&x));
            sync(device);
            Ok(())
        })?;
        let mut decode_ms = Vec::new();
        for (l, t) in tokens.iter().enumerate() {
            decode_ms.push(median_ms(reps, || {
                let _ = tch::no_grad(|| model.decode_tokens(l, t));
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

/// Everything `hvq-train bench` measured, as its `--json` writes it.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The libtorch device, e.g. `Cuda(0)`.
    pub device: String,
    /// The device's name ([`device_name`]).
    pub card: String,
    /// The matched datasheet entry, when the card is known.
    pub card_peaks: Option<CardPeaks>,
    /// The libtorch version ([`torch_version`]), when found.
    pub torch: Option<String>,
    /// libtorch's intra-op threads.
    pub threads: i32,
    /// Datasheet and measured peaks.
    pub peaks: Vec<Peak>,
    /// Training steps, one per preset.
    pub steps: Vec<StepTiming>,
    /// What the codec timings ran.
    pub codec_weights: String,
    /// libtorch encode/decode timings.
    pub codec: Vec<CodecTiming>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vgg_counts_match_a_hand_count() {
        // At 32×32: conv1 at 32², conv2 at 16², conv3 at 8², conv4 at 4², conv5 at 2².
        let f = |cin: u64, cout: u64, side: u64| 2 * cin * cout * 9 * side * side;
        let hand = f(3, 64, 32)
            + f(64, 64, 32)
            + f(64, 128, 16)
            + f(128, 128, 16)
            + f(128, 256, 8)
            + 2 * f(256, 256, 8)
            + f(256, 512, 4)
            + 2 * f(512, 512, 4)
            + 3 * f(512, 512, 2);
        assert_eq!(vgg_flops(32, 32), hand);
        // The textbook figure: VGG16's convolutions are 15.35 G multiply-adds at 224².
        let gmacs = vgg_flops(224, 224) as f64 / 2e9;
        assert!((gmacs - 15.35).abs() < 0.01, "{gmacs}");
    }

    #[test]
    fn step_flops_add_lpips_passes_to_the_model() {
        let cfg = ModelConfig::tiny();
        let bare = step_flops(&cfg, 64, None);
        assert_eq!(bare.lpips_forward + bare.lpips_backward, 0);
        let model = ModelFlops::new(&ModelGraph::new(&cfg), 64, 64).total();
        assert_eq!(bare.total(), model.train());
        let l = cfg.levels as u64;
        let with = step_flops(&cfg, 64, Some(LpipsPasses::batched(cfg.levels)));
        assert_eq!(with.lpips_forward, (l + 1) * vgg_flops(64, 64));
        assert_eq!(with.lpips_backward, l * vgg_flops(64, 64));
        let old = step_flops(&cfg, 64, Some(LpipsPasses::per_level(cfg.levels)));
        assert_eq!(old.lpips_forward, 2 * l * vgg_flops(64, 64));
    }

    #[test]
    fn known_cards_have_peaks() {
        let sxm = card_peaks("NVIDIA H100 80GB HBM3").unwrap();
        assert_eq!((sxm.model, sxm.tf32, sxm.bf16), ("H100 SXM", 494.7, 989.4));
        assert_eq!(card_peaks("NVIDIA H200").unwrap().bf16, 989.4);
        assert_eq!(card_peaks("NVIDIA H100 PCIe").unwrap().tf32, 378.0);
        assert_eq!(card_peaks("NVIDIA H100 NVL"), None);
        assert_eq!(card_peaks("unknown"), None);
    }
}
