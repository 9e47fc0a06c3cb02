//! `hvq-train codec-bench`: libtorch's side of the codec benchmark (issue 12). Encode (all
//! levels) and decode (each level) of a preset's random weights ([`hvq_spec::random_weights`]
//! with seed 1) on batches of the same distinct images as the wgpu backend's benchmark
//! (`codec/wgpu/benches/wgpu.rs`), printed in the same lines and written as the same JSON
//! records (plus `backend` and `precision`), so the two files join on
//! `(preset, width, height, batch, op, level)`.
//!
//! Each run uploads the input from the host, computes, reads the outputs back to the host and
//! synchronizes the device, as the wgpu benchmark's runs do; the time is the median of `runs`
//! runs after one warm-up run (which also lets cuDNN pick its algorithms for the shape).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use hvq_spec::flops::ModelFlops;
use hvq_spec::{ModelConfig, TokenGrid};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::TrainError;
use crate::bench::{median_ms, sync};
use crate::config::Precision;
use crate::device::DeviceRequest;
use crate::eval::load_model;
use crate::model::{Compute, Hvq};

/// Seed of the benchmarked weights: the wgpu benchmark's (`random_weights(&cfg, 1)`).
pub const WEIGHT_SEED: u64 = 1;

/// The `codec-bench` subcommand's arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct CodecBenchArgs {
    /// cpu, cuda or auto.
    #[arg(long, default_value = "auto")]
    pub device: DeviceRequest,
    /// Presets to time (random weights, seed 1, as the wgpu benchmark).
    #[arg(long, value_delimiter = ',', default_value = "small,paper")]
    pub presets: Vec<String>,
    /// Image sizes, WIDTHxHEIGHT.
    #[arg(long, value_delimiter = ',', default_value = "256x256,768x512", value_parser = parse_size)]
    pub sizes: Vec<(usize, usize)>,
    /// Batch sizes (images per run, each distinct).
    #[arg(long, value_delimiter = ',', default_value = "1,32", value_parser = parse_batch)]
    pub batches: Vec<usize>,
    /// Timed runs per case (after one warm-up run); the median is reported.
    #[arg(long, default_value_t = 5, value_parser = parse_runs)]
    pub runs: usize,
    /// Compute precision of the encoder's and decoders' convolutions and attention: f32 or
    /// bf16 (the projection, distances and nearest entry stay f32).
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16"])]
    pub precision: String,
    /// Attention through libtorch's fused scaled-dot-product kernel (rounding differs slightly
    /// from the two matrix products the codec computes).
    #[arg(long)]
    pub fused_attention: bool,
    /// libtorch intra-op threads (default: libtorch's choice, all cores).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Also write every case as a JSON array of records to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

/// Parses `WIDTHxHEIGHT` (both positive) into `(width, height)`.
pub fn parse_size(s: &str) -> Result<(usize, usize), TrainError> {
    let bad = |why: &str| TrainError::bad_config("sizes", format!("`{s}`: {why}"));
    let (w, h) = s
        .trim()
        .split_once(['x', 'X'])
        .ok_or_else(|| bad("not WIDTHxHEIGHT, e.g. 256x256"))?;
    let side = |v: &str| match v.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(bad("width and height must be positive integers")),
    };
    Ok((side(w)?, side(h)?))
}

/// Parses a positive batch size.
pub fn parse_batch(s: &str) -> Result<usize, TrainError> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(TrainError::bad_config(
            "batches",
            format!("`{s}` is not a positive integer"),
        )),
    }
}

fn parse_runs(s: &str) -> Result<usize, TrainError> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(TrainError::bad_config(
            "runs",
            format!("`{s}` is not a positive integer"),
        )),
    }
}

/// `batch` distinct planar RGB images `[3, height, width]` in `[0, 1]`, one after the other:
/// the wgpu benchmark's, `data[i] = ((i * 7 + b * 13) % 251) / 250` for image `b`.
pub fn bench_images(batch: usize, height: usize, width: usize) -> Vec<f32> {
    (0..batch)
        .flat_map(|b| (0..3 * height * width).map(move |i| ((i * 7 + b * 13) % 251) as f32 / 250.0))
        .collect()
}

/// One level's tokens of a batch, read back to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelTokens {
    /// Level index, 0 = finest.
    pub level: usize,
    /// Images in the batch.
    pub batch: usize,
    /// Rows of each grid.
    pub height: usize,
    /// Columns of each grid.
    pub width: usize,
    /// `batch * height * width` codebook indices, image-major then row-major.
    pub tokens: Vec<i32>,
}

impl LevelTokens {
    /// Image `b`'s grid.
    pub fn grid(&self, b: usize) -> TokenGrid {
        let n = self.height * self.width;
        TokenGrid {
            level: self.level,
            height: self.height,
            width: self.width,
            tokens: self.tokens[b * n..(b + 1) * n]
                .iter()
                .map(|&t| t as u32)
                .collect(),
        }
    }
}

/// A libtorch model on a device, with the codec's host-to-host encode and decode.
pub struct TorchCodec {
    _vs: tch::nn::VarStore,
    model: Hvq,
    device: Device,
}

impl TorchCodec {
    /// Loads `weights` onto `device` (the evaluation's loading path), computing as `compute`.
    pub fn new(
        weights: &hvq_spec::Weights,
        device: Device,
        compute: Compute,
    ) -> Result<Self, TrainError> {
        let (vs, mut model) = load_model(weights, device)?;
        model.set_compute(compute);
        Ok(TorchCodec {
            _vs: vs,
            model,
            device,
        })
    }

    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }

    /// Encodes `batch` planar `[3, height, width]` images in `[0, 1]` (`images` holds them one
    /// after the other) to the tokens of every level: upload, edge padding to the coarsest
    /// stride where needed, [`Hvq::encode_tokens`], read-back. Ends with the device idle.
    pub fn encode(
        &self,
        images: &[f32],
        batch: usize,
        height: usize,
        width: usize,
    ) -> Result<Vec<LevelTokens>, TrainError> {
        let shape = [batch as i64, 3, height as i64, width as i64];
        let x = Tensor::f_from_slice(images)?
            .f_view(shape)?
            .f_to_device(self.device)?;
        let s = self.config().coarsest_stride();
        let (ph, pw) = (
            height.div_ceil(s) * s - height,
            width.div_ceil(s) * s - width,
        );
        let x = if ph + pw > 0 {
            x.f_replication_pad2d([0, pw as i64, 0, ph as i64])?
        } else {
            x
        };
        let tokens = tch::no_grad(|| self.model.encode_tokens(&x));
        let out = tokens
            .iter()
            .enumerate()
            .map(|(level, t)| {
                let (b, h, w) = t.size3()?;
                Ok(LevelTokens {
                    level,
                    batch: b as usize,
                    height: h as usize,
                    width: w as usize,
                    tokens: Vec::<i32>::try_from(t.f_to_kind(Kind::Int)?.f_reshape([-1])?)?,
                })
            })
            .collect::<Result<Vec<_>, TrainError>>()?;
        sync(self.device);
        Ok(out)
    }

    /// Decodes one level's tokens to planar `[3, H, W]` pixels in `[0, 1]` per image, one
    /// after the other: upload, [`Hvq::decode_tokens`], read-back. Ends with the device idle.
    pub fn decode(&self, tokens: &LevelTokens) -> Result<Vec<f32>, TrainError> {
        let shape = [
            tokens.batch as i64,
            tokens.height as i64,
            tokens.width as i64,
        ];
        let t = Tensor::f_from_slice(&tokens.tokens)?
            .f_view(shape)?
            .f_to_device(self.device)?
            .f_to_kind(Kind::Int64)?;
        let y = tch::no_grad(|| self.model.decode_tokens(tokens.level, &t));
        let pixels = Vec::<f32>::try_from(y.f_reshape([-1])?)?;
        sync(self.device);
        Ok(pixels)
    }
}

/// One timed operation of one case, as the wgpu benchmark's JSON records it (plus `backend`
/// and `precision`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CodecRecord {
    /// `libtorch-cuda` or `libtorch-cpu`.
    pub backend: String,
    /// The preset.
    pub preset: String,
    /// Image width.
    pub width: usize,
    /// Image height.
    pub height: usize,
    /// Images per run.
    pub batch: usize,
    /// `encode` (all levels) or `decode` (one level).
    pub op: String,
    /// The decoded level; `null` for encode.
    pub level: Option<usize>,
    /// Median wall time of one run, ms.
    pub median_ms: f64,
    /// Timed runs.
    pub runs: usize,
    /// `batch` over the median time.
    pub images_per_s: f64,
    /// Forward GFLOP per image ([`ModelFlops`]: the encoder's, or that level's decoder's).
    pub gflop_per_image: f64,
    /// Achieved GFLOP/s.
    pub gflop_per_s: f64,
    /// `f32` or `bf16` (the encoder's and decoders' convolutions and attention).
    pub precision: String,
}

/// What a case shares: where and how it runs.
#[derive(Debug, Clone)]
pub struct CaseSetup {
    /// `libtorch-cuda` or `libtorch-cpu`.
    pub backend: String,
    /// `f32` or `bf16`.
    pub precision: String,
    /// Timed runs per operation.
    pub runs: usize,
}

/// Whether a libtorch error message is an out-of-memory error (CUDA's or the CPU allocator's).
pub fn is_out_of_memory(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("out of memory") || m.contains("can't allocate memory") || m.contains("bad_alloc")
}

/// Runs `f`, turning a libtorch panic (the model's ops panic on errors) into an error message;
/// `Ok(Err(msg))` for an out-of-memory error, `Err` for any other error.
fn guarded<T>(f: impl FnOnce() -> Result<T, TrainError>) -> Result<Result<T, String>, TrainError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(Ok(v)),
        Ok(Err(e)) => {
            let msg = e.to_string();
            if is_out_of_memory(&msg) {
                Ok(Err(msg))
            } else {
                Err(e)
            }
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            if is_out_of_memory(&msg) {
                Ok(Err(msg))
            } else {
                std::panic::resume_unwind(panic)
            }
        }
    }
}

/// The first line of an error message, shortened for a "skipped" line.
fn short(msg: &str) -> String {
    let line = msg.lines().next().unwrap_or("").trim();
    let mut s: String = line.chars().take(120).collect();
    if line.chars().count() > 120 {
        s.push('…');
    }
    s
}

/// Encode (all levels) and decode (each level) of `batch` images of `width`×`height`: one
/// printed line and one record per operation; a case (or one level's decode) that runs out of
/// memory prints a "skipped" line instead. Errors other than running out of memory are returned.
pub fn run_case(
    codec: &TorchCodec,
    setup: &CaseSetup,
    preset: &str,
    (width, height): (usize, usize),
    batch: usize,
) -> Result<Vec<CodecRecord>, TrainError> {
    let cfg = codec.config();
    let flops = ModelFlops::new(&hvq_spec::graph::ModelGraph::new(cfg), width, height);
    let images = bench_images(batch, height, width);
    let record = |level: Option<usize>, ms: f64, flops_per_image: u64| {
        let r = make_record(
            setup,
            preset,
            (width, height),
            batch,
            level,
            ms,
            flops_per_image,
        );
        println!("{}", line(&r));
        r
    };
    let skipped = |what: &str, msg: &str| {
        println!(
            "{preset} {width}x{height} batch {batch} {what}: skipped, out of memory ({})",
            short(msg)
        );
    };
    let mut grids = Vec::new();
    let enc = guarded(|| {
        median_ms(setup.runs, || {
            grids = codec.encode(&images, batch, height, width)?;
            Ok(())
        })
    })?;
    let enc = match enc {
        Ok(ms) => ms,
        Err(msg) => {
            skipped("encode (all levels)", &msg);
            return Ok(Vec::new());
        }
    };
    let mut out = vec![record(None, enc, flops.encoder.forward)];
    for tokens in &grids {
        let level = tokens.level;
        let dec = guarded(|| {
            median_ms(setup.runs, || {
                codec.decode(tokens)?;
                Ok(())
            })
        })?;
        match dec {
            Ok(ms) => out.push(record(Some(level), ms, flops.decoders[level].forward)),
            Err(msg) => skipped(&format!("decode level {level}"), &msg),
        }
    }
    Ok(out)
}

fn make_record(
    setup: &CaseSetup,
    preset: &str,
    (width, height): (usize, usize),
    batch: usize,
    level: Option<usize>,
    ms: f64,
    flops_per_image: u64,
) -> CodecRecord {
    let images_per_s = batch as f64 / (ms / 1e3);
    let gflop_per_image = flops_per_image as f64 / 1e9;
    CodecRecord {
        backend: setup.backend.clone(),
        preset: preset.to_string(),
        width,
        height,
        batch,
        op: if level.is_some() { "decode" } else { "encode" }.into(),
        level,
        median_ms: ms,
        runs: setup.runs,
        images_per_s,
        gflop_per_image,
        gflop_per_s: gflop_per_image * images_per_s,
        precision: setup.precision.clone(),
    }
}

/// A record as the wgpu benchmark prints its cases.
pub fn line(r: &CodecRecord) -> String {
    let what = match r.level {
        Some(l) => format!("decode level {l}"),
        None => "encode (all levels)".into(),
    };
    format!(
        "{} {}x{} batch {} {what}: median {:.1} ms over {} runs, {:.1} images/s, {:.1} GFLOP/s",
        r.preset, r.width, r.height, r.batch, r.median_ms, r.runs, r.images_per_s, r.gflop_per_s
    )
}

/// Runs the whole benchmark `args` describes: a header line, then every preset × size × batch
/// case; rewrites the JSON file (when asked for) after every case, so an interrupted run keeps
/// what it measured.
pub fn run(args: &CodecBenchArgs) -> Result<Vec<CodecRecord>, TrainError> {
    let device = crate::device::select_device(args.device)?;
    if let Some(n) = args.threads {
        tch::set_num_threads(n.max(1));
    }
    let (precision, kind) = match args.precision.as_str() {
        "bf16" => (Precision::Bf16, Kind::BFloat16),
        _ => (Precision::F32, Kind::Float),
    };
    let compute = Compute {
        kind,
        fused_attention: args.fused_attention,
    };
    if device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    let backend = if device.is_cuda() {
        "libtorch-cuda"
    } else {
        "libtorch-cpu"
    };
    let setup = CaseSetup {
        backend: backend.into(),
        precision: format!("{precision:?}").to_lowercase(),
        runs: args.runs,
    };
    println!(
        "{backend}: torch {} on {} ({device:?}), {} intra-op threads, {} compute{}{}",
        crate::bench::torch_version().as_deref().unwrap_or("?"),
        crate::bench::device_name(device, None),
        tch::get_num_threads(),
        setup.precision,
        if args.fused_attention {
            ", fused attention"
        } else {
            ""
        },
        if device.is_cuda() {
            ", cuDNN benchmark"
        } else {
            ""
        },
    );
    // The model's ops panic on libtorch errors; out-of-memory panics are caught per case
    // and reported as skipped, so their panic messages are not printed.
    let previous = std::sync::Arc::new(std::panic::take_hook());
    let hook = previous.clone();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if !is_out_of_memory(msg) {
            (*hook)(info);
        }
    }));
    let result = run_cases(args, device, compute, &setup);
    // Restore the previous hook (the closure holds the other reference to it).
    let _ = std::panic::take_hook();
    if let Ok(previous) = std::sync::Arc::try_unwrap(previous) {
        std::panic::set_hook(previous);
    }
    result
}

fn run_cases(
    args: &CodecBenchArgs,
    device: Device,
    compute: Compute,
    setup: &CaseSetup,
) -> Result<Vec<CodecRecord>, TrainError> {
    let mut records = Vec::new();
    for preset in &args.presets {
        let cfg = ModelConfig::preset(preset)?;
        let weights = hvq_spec::random_weights(&cfg, WEIGHT_SEED)?;
        let codec = TorchCodec::new(&weights, device, compute)?;
        for &size in &args.sizes {
            for &batch in &args.batches {
                records.extend(run_case(&codec, setup, preset, size, batch)?);
                if let Some(path) = &args.json {
                    write_json(path, &records)?;
                }
            }
        }
    }
    Ok(records)
}

/// Writes `records` as a JSON array.
pub fn write_json(path: &std::path::Path, records: &[CodecRecord]) -> Result<(), TrainError> {
    let json = serde_json::to_string_pretty(records).expect("records serialize");
    std::fs::write(path, json + "\n").map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_is_a_skip_and_other_failures_are_not() {
        let oom = guarded(|| -> Result<(), TrainError> {
            panic!(
                "called `Result::unwrap()` on an `Err` value: Torch(\"CUDA out of memory. Tried to allocate 2.00 GiB\")"
            )
        });
        assert!(matches!(oom, Ok(Err(m)) if m.contains("out of memory")));
        let oom = guarded(|| -> Result<(), TrainError> {
            Err(tch::TchError::Torch("DefaultCPUAllocator: can't allocate memory".into()).into())
        });
        assert!(matches!(oom, Ok(Err(_))));
        let other = guarded(|| -> Result<(), TrainError> { Err(TrainError::bad_config("x", "y")) });
        assert!(matches!(other, Err(TrainError::BadConfig { .. })));
        let bug =
            catch_unwind(|| guarded(|| -> Result<(), TrainError> { panic!("index out of range") }));
        assert!(bug.is_err(), "a panic other than out-of-memory propagates");
        assert_eq!(guarded(|| Ok(3)).unwrap(), Ok(3));
    }
}
