//! Encode and decode times of the wgpu backend (`small` preset, random weights) at 256×256 and
//! 768×512 (Kodak's size), per batch size. Prints the median of several runs per case, in ms,
//! with images/s and the model's achieved GFLOP/s (forward FLOPs from `hvq_spec::flops`), after
//! one warm-up run that builds the pipelines and the graph for the shape.
//!
//! `cargo bench -p hvq-wgpu --bench wgpu` (on lavapipe when no GPU is present).
//! `HVQ_BENCH_RUNS=n` sets the runs per case (default 5), `HVQ_BENCH_SIZES=256x256,768x512` the
//! image sizes, `HVQ_BENCH_PRESETS=small,paper` the presets, `HVQ_BENCH_CONV=c,h,w` the
//! convolution case, `HVQ_BENCH_CONV_ONLY=1` skips the models, `HVQ_BENCH_BATCHES=1,32` the
//! batch sizes (default 1; one run encodes that many distinct images together),
//! `HVQ_BENCH_PRECISIONS=f32,f16` the kernels' precisions (default f32; f16 is skipped on an
//! adapter without `shader-f16`), `HVQ_BENCH_JSON=path` also writes every case as JSON, and
//! `HVQ_BENCH_PROFILE=path.md` writes, per case and op, the device time of every kernel (from
//! timestamp queries, where the adapter has them) with its GFLOP/s, GB/s and, given
//! `HVQ_BENCH_PEAK_TFLOPS`, its fraction of the card's FP32 peak.

use std::time::Instant;

use hvq_spec::flops::ModelFlops;
use hvq_spec::graph::ModelGraph;
use hvq_spec::{FeatureMap, ModelConfig, random_weights};
use hvq_wgpu::{GpuContext, GpuModel, Precision};

fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up: pipelines, graph and buffers for this shape
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let ctx = match pollster::block_on(GpuContext::new()) {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("SKIPPED: no wgpu adapter ({e})");
            return;
        }
    };
    println!("{}", ctx.adapter_report());
    let runs: usize = env_or("HVQ_BENCH_RUNS", 5).max(1);
    conv_case(&ctx, runs);
    // Set and not "0" or empty.
    if std::env::var("HVQ_BENCH_CONV_ONLY").is_ok_and(|v| !v.is_empty() && v != "0") {
        return;
    }
    let presets: Vec<String> = std::env::var("HVQ_BENCH_PRESETS")
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_else(|_| vec!["small".into()]);
    // HVQ_BENCH_SIZES=256x256,768x512 (width x height) picks the image sizes.
    let sizes: Vec<(usize, usize)> = std::env::var("HVQ_BENCH_SIZES")
        .unwrap_or_else(|_| "256x256,768x512".into())
        .split(',')
        .filter_map(|s| {
            s.split_once('x')
                .and_then(|(w, h)| Some((h.parse().ok()?, w.parse().ok()?)))
        })
        .collect();
    let batches: Vec<usize> = std::env::var("HVQ_BENCH_BATCHES")
        .unwrap_or_else(|_| "1".into())
        .split(',')
        .filter_map(|s| s.parse().ok())
        .filter(|&b| b > 0)
        .collect();
    let precisions: Vec<Precision> = std::env::var("HVQ_BENCH_PRECISIONS")
        .unwrap_or_else(|_| "f32".into())
        .split(',')
        .map(|s| s.parse().expect("HVQ_BENCH_PRECISIONS: f32 or f16"))
        .collect();
    let mut records = Vec::new();
    for preset in presets {
        let cfg = ModelConfig::preset(&preset).expect("known preset");
        let weights = random_weights(&cfg, 1).expect("valid preset");
        let graph = ModelGraph::new(&cfg);
        for &precision in &precisions {
            if precision == Precision::F16 && !ctx.supports_f16() {
                println!("{preset} f16: skipped, the adapter has no shader-f16");
                continue;
            }
            // The bench asks for whole batches: the cap is raised to what the device allows.
            let model = GpuModel::with_precision(&ctx, &weights, precision)
                .expect("weights fit the device")
                .with_batch_bytes(u64::MAX);
            for &(h, w) in &sizes {
                let flops = ModelFlops::new(&graph, w, h);
                for &batch in &batches {
                    let case = Case {
                        preset: &preset,
                        h,
                        w,
                        batch,
                        runs,
                        precision,
                    };
                    records.extend(model_case(&model, &cfg, &case, &flops));
                    // Written after every case, so a run cut short by a timeout keeps its cases.
                    write_json(&records);
                }
            }
        }
    }
    write_json(&records);
}

/// Writes `records` to `HVQ_BENCH_JSON`, when set.
fn write_json(records: &[String]) {
    if let Some(path) = std::env::var_os("HVQ_BENCH_JSON") {
        let json = format!("[\n{}\n]\n", records.join(",\n"));
        std::fs::write(&path, json).expect("the JSON file can be written");
    }
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// One model case: `batch` images of `h × w`, timed over `runs` runs.
struct Case<'a> {
    preset: &'a str,
    h: usize,
    w: usize,
    batch: usize,
    runs: usize,
    precision: Precision,
}

/// Encode (all levels) and decode (each level) of one case: one line each, and one JSON record
/// each.
fn model_case(model: &GpuModel, cfg: &ModelConfig, case: &Case, flops: &ModelFlops) -> Vec<String> {
    let Case {
        preset,
        h,
        w,
        batch,
        runs,
        ..
    } = *case;
    if model.batch_capacity(h, w) < batch {
        println!(
            "{preset} {w}x{h} batch {batch}: skipped, the device holds {} such images per run",
            model.batch_capacity(h, w)
        );
        return Vec::new();
    }
    // Distinct images, so a batch cannot be served by one image's work.
    let images: Vec<FeatureMap> = (0..batch)
        .map(|b| FeatureMap {
            channels: 3,
            height: h,
            width: w,
            data: (0..3 * h * w)
                .map(|i| ((i * 7 + b * 13) % 251) as f32 / 250.0)
                .collect(),
        })
        .collect();
    let levels: Vec<usize> = (0..cfg.levels).collect();
    let mut grids = Vec::new();
    let enc = median_ms(runs, || {
        grids = pollster::block_on(model.encode_batch(&images, &levels)).expect("encode")
    });
    let mut out = vec![record(case, None, enc, flops.encoder.forward)];
    profile(case, "encode (all levels)", || {
        pollster::block_on(model.profile_encode(&images, &levels))
    });
    for level in levels {
        let level_grids: Vec<_> = grids.iter().map(|g| g[level].clone()).collect();
        let dec = median_ms(runs, || {
            pollster::block_on(model.decode_batch(&level_grids)).expect("decode");
        });
        out.push(record(
            case,
            Some(level),
            dec,
            flops.decoders[level].forward,
        ));
        profile(case, &format!("decode level {level}"), || {
            pollster::block_on(model.profile_decode(&level_grids))
        });
    }
    out
}

/// With `HVQ_BENCH_PROFILE` set: appends the per-kernel table of one profiled run (`run`, on
/// the warm plan the timings used) to that file and prints it.
fn profile(
    case: &Case,
    what: &str,
    run: impl FnOnce() -> Result<hvq_wgpu::Profile, hvq_wgpu::GpuError>,
) {
    let Some(path) = std::env::var_os("HVQ_BENCH_PROFILE") else {
        return;
    };
    let peak = std::env::var("HVQ_BENCH_PEAK_TFLOPS")
        .ok()
        .and_then(|s| s.parse().ok());
    let Case {
        preset,
        h,
        w,
        batch,
        precision,
        ..
    } = *case;
    let section = match run() {
        Ok(p) => format!(
            "### {preset} {} {w}x{h} batch {batch}, {what}: {:.3} ms of device time in {} dispatches\n\n{}\n",
            precision.name(),
            p.total_ns() / 1e6,
            p.dispatches.len(),
            p.table(peak)
        ),
        Err(e) => format!("### {preset} {w}x{h} batch {batch}, {what}: no profile ({e})\n\n"),
    };
    print!("{section}");
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("the profile file can be written");
    f.write_all(section.as_bytes())
        .expect("the profile file can be written");
}

/// Prints one timing (the encoder when `level` is `None`, else that level's decoder) and
/// returns it as a JSON object.
fn record(case: &Case, level: Option<usize>, ms: f64, flops_per_image: u64) -> String {
    let Case {
        preset,
        h,
        w,
        batch,
        runs,
        precision,
    } = *case;
    let precision = precision.name();
    let op = if level.is_some() { "decode" } else { "encode" };
    let images_per_s = batch as f64 / (ms / 1e3);
    let gflops = flops_per_image as f64 * images_per_s / 1e9;
    let what = match level {
        Some(l) => format!("decode level {l}"),
        None => "encode (all levels)".into(),
    };
    println!(
        "{preset} {precision} {w}x{h} batch {batch} {what}: median {ms:.1} ms over {runs} runs, \
         {images_per_s:.1} images/s, {gflops:.1} GFLOP/s"
    );
    let level = level.map_or("null".into(), |l| l.to_string());
    format!(
        "  {{\"preset\": \"{preset}\", \"width\": {w}, \"height\": {h}, \"batch\": {batch}, \
         \"precision\": \"{precision}\", \"op\": \"{op}\", \"level\": {level}, \"median_ms\": {ms:.3}, \"runs\": {runs}, \
         \"images_per_s\": {images_per_s:.2}, \"gflop_per_image\": {:.3}, \"gflop_per_s\": {gflops:.1}}}",
        flops_per_image as f64 / 1e9
    )
}

/// One 3×3 convolution, 64 → 64 channels at 128×128 (upload and read-back included): the
/// kernel the models spend most of their time in.
fn conv_case(ctx: &GpuContext, runs: usize) {
    use hvq_spec::Tensor;
    use hvq_wgpu::kernels::{Conv2dParams, conv2d};
    let size: Vec<usize> = std::env::var("HVQ_BENCH_CONV")
        .map(|s| s.split(',').filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_else(|_| vec![64, 128, 128]);
    let (c, h, w) = (size[0], size[1], size[2]);
    let x = FeatureMap {
        channels: c,
        height: h,
        width: w,
        data: (0..c * h * w).map(|i| (i % 17) as f32 * 0.1).collect(),
    };
    let weight = Tensor {
        shape: vec![c, c, 3, 3],
        data: (0..c * c * 9).map(|i| (i % 13) as f32 * 0.01).collect(),
    };
    let bias = Tensor {
        shape: vec![c],
        data: vec![0.1; c],
    };
    let ms = median_ms(runs, || {
        pollster::block_on(conv2d(ctx, &x, &weight, &bias, Conv2dParams::SAME, None))
            .expect("conv");
    });
    let gflop = 2.0 * (c * c * 9 * h * w) as f64 / 1e9;
    println!(
        "conv3x3 {c}->{c} {w}x{h}: median {ms:.1} ms ({:.2} GFLOP/s incl. transfers)",
        gflop / (ms / 1e3)
    );
}
