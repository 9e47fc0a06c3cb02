//! Encode and decode times of the wgpu backend (`small` preset, random weights) at 256×256 and
//! 768×512 (Kodak's size). Prints the median of several runs per case, in ms, after one warm-up
//! run that builds the pipelines and the graph for the shape.
//!
//! `cargo bench -p hvq-wgpu --bench wgpu` (on lavapipe when no GPU is present).
//! `HVQ_BENCH_RUNS=n` sets the runs per case (default 5), `HVQ_BENCH_SIZES=256x256,768x512` the
//! image sizes, `HVQ_BENCH_PRESETS=small,paper` the presets, `HVQ_BENCH_CONV=c,h,w` the
//! convolution case, `HVQ_BENCH_CONV_ONLY=1` skips the models.

use std::time::Instant;

use hvq_spec::{FeatureMap, ModelConfig, random_weights};
use hvq_wgpu::{GpuContext, GpuModel};

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
    let runs: usize = std::env::var("HVQ_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .max(1);
    conv_case(&ctx, runs);
    if std::env::var_os("HVQ_BENCH_CONV_ONLY").is_some() {
        return;
    }
    let presets: Vec<String> = std::env::var("HVQ_BENCH_PRESETS")
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_else(|_| vec!["small".into()]);
    for preset in presets {
        let cfg = ModelConfig::preset(&preset).expect("known preset");
        let weights = random_weights(&cfg, 1).expect("valid preset");
        let model = GpuModel::new(&ctx, &weights).expect("weights fit the device");
        // HVQ_BENCH_SIZES=256x256,768x512 (width x height) picks the image sizes.
        let sizes: Vec<(usize, usize)> = std::env::var("HVQ_BENCH_SIZES")
            .unwrap_or_else(|_| "256x256,768x512".into())
            .split(',')
            .filter_map(|s| {
                s.split_once('x')
                    .and_then(|(w, h)| Some((h.parse().ok()?, w.parse().ok()?)))
            })
            .collect();
        for (h, w) in sizes {
            let image = FeatureMap {
                channels: 3,
                height: h,
                width: w,
                data: vec![0.5; 3 * h * w],
            };
            let levels: Vec<usize> = (0..cfg.levels).collect();
            let mut grids = Vec::new();
            let enc = median_ms(runs, || {
                grids = pollster::block_on(model.encode(&image, &levels)).expect("encode")
            });
            println!(
                "{preset} {w}x{h} encode (all {} levels): median {enc:.1} ms over {runs} runs",
                cfg.levels
            );
            for grid in &grids {
                let dec = median_ms(runs, || {
                    pollster::block_on(model.decode(grid)).expect("decode");
                });
                println!(
                    "{preset} {w}x{h} decode level {} ({}x{} tokens): median {dec:.1} ms",
                    grid.level, grid.width, grid.height
                );
            }
        }
    }
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
