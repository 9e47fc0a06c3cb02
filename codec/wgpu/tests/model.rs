//! The whole model on wgpu against the CPU reference model (`tiny` preset, random weights,
//! every level-derivation strategy): latents, tokens (agreement rate; a disagreement must be a
//! near-tie) and decoded pixels.

mod common;

use common::{Rng, assert_close, context, dist};
use hvq_cpu::CpuModel;
use hvq_spec::{FeatureMap, InputError, ModelConfig, Strategy, TokenGrid, random_weights};
use hvq_wgpu::{GpuError, GpuModel, Precision};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}

#[test]
fn model_matches_cpu_reference_for_every_strategy() {
    let Some(ctx) = context() else { return };
    for strategy in Strategy::ALL {
        let cfg = ModelConfig {
            strategy,
            ..ModelConfig::tiny()
        };
        let weights = random_weights(&cfg, 11).unwrap();
        let cpu = CpuModel::new(weights.clone());
        let gpu = GpuModel::new(&ctx, &weights).unwrap();
        let image = Rng::new(12).image(24, 40);
        let levels: Vec<usize> = (0..cfg.levels).collect();

        let want_latents = cpu.encode_latents(&image).unwrap();
        let got_latents = block_on(gpu.encode_latents(&image)).unwrap();
        assert_eq!(got_latents.len(), want_latents.len());
        for (l, (g, w)) in got_latents.iter().zip(&want_latents).enumerate() {
            // About 20 layers of convolutions and norms, each a few ulps apart on the two
            // backends: differences compound to ~1e-5 relative; 1e-3 leaves margin.
            assert_close(&format!("{strategy:?} latents level {l}"), g, w, 1e-3, 1e-3);
        }

        let want = cpu.encode(&image, &levels).unwrap();
        let got = block_on(gpu.encode(&image, &levels)).unwrap();
        let codebook = &weights.tensor("quantizer.codebook").data;
        let (mut same, mut total) = (0usize, 0usize);
        for ((g, w), p) in got.iter().zip(&want).zip(&want_latents) {
            assert_eq!((g.level, g.height, g.width), (w.level, w.height, w.width));
            for (i, (&gt, &wt)) in g.tokens.iter().zip(&w.tokens).enumerate() {
                total += 1;
                if gt == wt {
                    same += 1;
                    continue;
                }
                // A flip is only acceptable between entries whose distances differ by less than
                // the latents' own backend difference can move them.
                let (dg, dw) = (dist(p, codebook, i, gt), dist(p, codebook, i, wt));
                assert!(
                    (dg - dw).abs() <= 1e-3 * (1.0 + dw),
                    "{strategy:?} level {} position {i}: gpu {gt} ({dg}) vs cpu {wt} ({dw})",
                    g.level
                );
            }
        }
        common::report(&format!(
            "wgpu vs hvq-cpu, {strategy:?}: token agreement {same}/{total} = {:.2}%",
            100.0 * same as f64 / total as f64
        ));

        for grid in &want {
            let want_rgb = cpu.decode(grid).unwrap();
            let got_rgb = block_on(gpu.decode(grid)).unwrap();
            // Pixels in [0, 1] after ~20 layers: 1e-4 absolute is ~1/40 of an 8-bit step.
            assert_close(
                &format!("{strategy:?} decode level {}", grid.level),
                &got_rgb,
                &want_rgb,
                1e-4,
                0.0,
            );
        }
    }
}

#[test]
fn repeated_calls_reuse_the_cached_graph_and_agree() {
    let Some(ctx) = context() else { return };
    let weights = random_weights(&ModelConfig::tiny(), 3).unwrap();
    let gpu = GpuModel::new(&ctx, &weights).unwrap();
    let mut rng = Rng::new(4);
    let (a, b) = (rng.image(16, 16), rng.image(16, 16));
    let first = block_on(gpu.encode(&a, &[0, 2])).unwrap();
    let other = block_on(gpu.encode(&b, &[0, 2])).unwrap();
    let again = block_on(gpu.encode(&a, &[0, 2])).unwrap();
    assert_eq!(first, again);
    assert_ne!(first, other);
    assert_eq!((first[1].level, first[1].height, first[1].width), (2, 2, 2));
}

#[test]
fn bad_inputs_are_typed_errors() {
    let Some(ctx) = context() else { return };
    let weights = random_weights(&ModelConfig::tiny(), 3).unwrap();
    let gpu = GpuModel::new(&ctx, &weights).unwrap();
    let img = |c, h, w| FeatureMap::zeros(c, h, w);
    assert!(matches!(
        block_on(gpu.encode(&img(3, 12, 16), &[0])),
        Err(GpuError::Input(InputError::BadImageSize {
            multiple: 8,
            ..
        }))
    ));
    assert!(matches!(
        block_on(gpu.encode(&img(1, 16, 16), &[0])),
        Err(GpuError::Input(InputError::WrongChannels { got: 1, .. }))
    ));
    assert!(matches!(
        block_on(gpu.encode(&img(3, 0, 16), &[0])),
        Err(GpuError::Input(InputError::BadImageSize { .. }))
    ));
    assert!(matches!(
        block_on(gpu.encode(&img(3, 16, 16), &[3])),
        Err(GpuError::Input(InputError::LevelOutOfRange {
            level: 3,
            ..
        }))
    ));
    let grid = TokenGrid {
        level: 0,
        height: 2,
        width: 2,
        tokens: vec![0, 1, 2, 32],
    };
    assert!(matches!(
        block_on(gpu.decode(&grid)),
        Err(GpuError::Input(InputError::TokenOutOfRange {
            position: 3,
            ..
        }))
    ));
    let short = TokenGrid {
        level: 0,
        height: 2,
        width: 2,
        tokens: vec![0; 3],
    };
    assert!(matches!(
        block_on(gpu.decode(&short)),
        Err(GpuError::Input(InputError::GridSize { got: 3, .. }))
    ));
    let deep = TokenGrid {
        level: 5,
        height: 1,
        width: 1,
        tokens: vec![0],
    };
    assert!(matches!(
        block_on(gpu.decode(&deep)),
        Err(GpuError::Input(InputError::LevelOutOfRange {
            level: 5,
            ..
        }))
    ));
    // A map far over the device's storage-binding limit is refused before any allocation.
    let huge = FeatureMap {
        channels: 3,
        height: 1 << 16,
        width: 1 << 16,
        data: Vec::new(),
    };
    assert!(matches!(
        block_on(gpu.encode(&huge, &[0])),
        Err(GpuError::Input(_) | GpuError::LimitExceeded { .. })
    ));
}

/// Every image of a batch gets exactly the tokens and pixels it gets alone, for every strategy
/// (so every kernel, attention included, keeps the images apart), with runs split by the
/// batch-memory cap as well as whole.
#[test]
fn batches_give_each_image_exactly_what_it_gets_alone() {
    let Some(ctx) = context() else { return };
    for strategy in [Strategy::Pooling, Strategy::Sampling] {
        let cfg = ModelConfig {
            strategy,
            ..ModelConfig::tiny()
        };
        let weights = random_weights(&cfg, 21).unwrap();
        let whole = GpuModel::new(&ctx, &weights).unwrap();
        // The documented rule: one image's widest activation is channels × height × width f32.
        let per_image = (cfg.channels * 16 * 24 * 4) as u64;
        // Runs of two images, then one: the split must not show in the results either.
        let split = GpuModel::new(&ctx, &weights)
            .unwrap()
            .with_batch_bytes(2 * per_image);
        assert_eq!(split.batch_capacity(16, 24), 2);
        let mut rng = Rng::new(22);
        let images: Vec<FeatureMap> = (0..3).map(|_| rng.image(16, 24)).collect();
        let levels: Vec<usize> = (0..cfg.levels).collect();
        let alone: Vec<Vec<TokenGrid>> = images
            .iter()
            .map(|im| block_on(whole.encode(im, &levels)).unwrap())
            .collect();
        assert_ne!(
            alone[0], alone[1],
            "distinct images should give distinct tokens"
        );
        assert_eq!(
            block_on(whole.encode_batch(&images, &levels)).unwrap(),
            alone
        );
        assert_eq!(
            block_on(split.encode_batch(&images, &levels)).unwrap(),
            alone
        );
        // One level only, coarsest first in the request: the order asked is kept per image.
        let coarse = block_on(whole.encode_batch(&images, &[2, 0])).unwrap();
        for (got, want) in coarse.iter().zip(&alone) {
            assert_eq!(got, &vec![want[2].clone(), want[0].clone()]);
        }
        for level in levels {
            let grids: Vec<TokenGrid> = alone.iter().map(|g| g[level].clone()).collect();
            let want: Vec<FeatureMap> = grids
                .iter()
                .map(|g| block_on(whole.decode(g)).unwrap())
                .collect();
            assert_eq!(block_on(whole.decode_batch(&grids)).unwrap(), want);
            assert_eq!(block_on(split.decode_batch(&grids)).unwrap(), want);
        }
    }
}

#[test]
fn batches_of_mixed_sizes_or_levels_are_refused() {
    let Some(ctx) = context() else { return };
    let weights = random_weights(&ModelConfig::tiny(), 3).unwrap();
    let gpu = GpuModel::new(&ctx, &weights).unwrap();
    let mut rng = Rng::new(5);
    let mixed = [rng.image(16, 16), rng.image(16, 24)];
    assert!(matches!(
        block_on(gpu.encode_batch(&mixed, &[0])),
        Err(GpuError::BadInput {
            op: "encode_batch",
            ..
        })
    ));
    // A bad image anywhere in the batch is reported as for a single image.
    let bad = [rng.image(16, 16), FeatureMap::zeros(1, 16, 16)];
    assert!(matches!(
        block_on(gpu.encode_batch(&bad, &[0])),
        Err(GpuError::Input(InputError::WrongChannels { got: 1, .. }))
    ));
    assert_eq!(
        block_on(gpu.encode_batch(&[], &[0])).unwrap(),
        Vec::<Vec<TokenGrid>>::new()
    );
    let grid = |level, side: usize| TokenGrid {
        level,
        height: side,
        width: side,
        tokens: vec![1; side * side],
    };
    assert!(matches!(
        block_on(gpu.decode_batch(&[grid(0, 2), grid(1, 2)])),
        Err(GpuError::BadInput {
            op: "decode_batch",
            ..
        })
    ));
    assert!(matches!(
        block_on(gpu.decode_batch(&[grid(0, 2), grid(0, 3)])),
        Err(GpuError::BadInput {
            op: "decode_batch",
            ..
        })
    ));
}

/// A smooth synthetic photo (gradients, a disc, stripes): latents of real weights on it look
/// like those of a photo, unlike noise.
fn smooth_image(height: usize, width: usize) -> FeatureMap {
    let mut data = Vec::with_capacity(3 * height * width);
    for c in 0..3 {
        for y in 0..height {
            for x in 0..width {
                let (u, v) = (x as f32 / width as f32, y as f32 / height as f32);
                let disc = ((u - 0.6).powi(2) + (v - 0.4).powi(2) < 0.06) as u8 as f32;
                let stripes =
                    (0.5 + 0.5 * (18.0 * u + 4.0 * v + c as f32).sin()) * (v > 0.7) as u8 as f32;
                let value =
                    0.2 + 0.5 * u * (1.0 - 0.3 * c as f32) + 0.3 * disc + 0.3 * stripes - 0.2 * v;
                data.push(value.clamp(0.0, 1.0));
            }
        }
    }
    FeatureMap {
        channels: 3,
        height,
        width,
        data,
    }
}

#[test]
fn f16_kernels_stay_close_to_f32_with_the_default_model() {
    let Some(ctx) = context() else { return };
    if !ctx.supports_f16() {
        let err = GpuModel::with_precision(
            &ctx,
            &random_weights(&ModelConfig::tiny(), 1).unwrap(),
            Precision::F16,
        )
        .unwrap_err();
        assert_eq!(err.kind(), "Unsupported", "{err}");
        common::skip("the adapter has no shader-f16: the f16 model is not tested");
        return;
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/default.safetensors");
    let bytes = std::fs::read(path).expect("the embedded default model");
    let weights = hvq_spec::Weights::from_safetensors(&bytes, &Default::default()).unwrap();
    let full = GpuModel::new(&ctx, &weights).unwrap();
    let half = GpuModel::with_precision(&ctx, &weights, Precision::F16).unwrap();
    assert_eq!(half.precision(), Precision::F16);
    // f16 halves the bytes per activation, so a run holds twice the images.
    assert_eq!(
        half.batch_capacity(256, 256),
        2 * full.batch_capacity(256, 256)
    );
    let image = smooth_image(48, 64);
    let levels = [0, 1, 2];
    let want = block_on(full.encode(&image, &levels)).unwrap();
    let got = block_on(half.encode(&image, &levels)).unwrap();
    let (mut same, mut total) = (0usize, 0usize);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((g.level, g.height, g.width), (w.level, w.height, w.width));
        total += g.tokens.len();
        same += g
            .tokens
            .iter()
            .zip(&w.tokens)
            .filter(|(a, b)| a == b)
            .count();
    }
    let agreement = same as f64 / total as f64;
    common::report(&format!(
        "wgpu f16 vs f32, default model, 48x64: token agreement {same}/{total} = {:.2}%",
        100.0 * agreement
    ));
    assert!(
        agreement >= 0.97,
        "f16 moved {} of {total} tokens",
        total - same
    );
    for grid in &want {
        let a = block_on(full.decode(grid)).unwrap();
        let b = block_on(half.decode(grid)).unwrap();
        let diffs: Vec<f32> = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| (x - y).abs())
            .collect();
        let max = diffs.iter().copied().fold(0.0, f32::max);
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        common::report(&format!(
            "wgpu f16 vs f32 decode level {}: mean |diff| {mean:.2e}, max {max:.2e}",
            grid.level
        ));
        // An 8-bit step is 3.9e-3: on average well under half a step apart.
        assert!(
            mean < 1e-3 && max < 0.02,
            "level {}: mean {mean}, max {max}",
            grid.level
        );
    }
}

#[test]
fn profiles_time_every_dispatch_and_count_the_model_flops() {
    use hvq_spec::flops::ModelFlops;
    use hvq_spec::graph::ModelGraph;
    let Some(ctx) = context() else { return };
    let cfg = ModelConfig::tiny();
    let weights = random_weights(&cfg, 5).unwrap();
    let gpu = GpuModel::new(&ctx, &weights).unwrap();
    let images = [Rng::new(1).image(32, 48), Rng::new(2).image(32, 48)];
    let levels: Vec<usize> = (0..cfg.levels).collect();
    if !ctx.supports_timestamps() {
        let err = block_on(gpu.profile_encode(&images, &levels)).unwrap_err();
        assert_eq!(err.kind(), "Unsupported", "{err}");
        common::skip("the adapter has no timestamp-query: profiles not tested");
        return;
    }
    let flops = ModelFlops::new(&ModelGraph::new(&cfg), 48, 32);
    let enc = block_on(gpu.profile_encode(&images, &levels)).unwrap();
    // The per-dispatch counts add up to the model's own count, for both images.
    assert_eq!(enc.total_flops(), 2 * flops.encoder.forward);
    assert!(enc.dispatches.iter().all(|d| d.ns >= 0.0 && d.bytes > 0));
    assert!(enc.total_ns() > 0.0, "no time measured: {enc:?}");
    let kernels: Vec<&str> = enc.by_kernel().iter().map(|k| k.kernel).collect();
    for k in ["conv2d", "group_norm_stats", "codebook_search"] {
        assert!(kernels.contains(&k), "{k} missing from {kernels:?}");
    }
    let table = enc.table(Some(1.0));
    assert!(table.contains("| conv2d |"), "{table}");
    common::report(&format!("tiny 48x32 batch 2 encode, lavapipe:\n{table}"));
    // Profiling changes nothing: the plan it used still gives the tokens it gave before.
    let grids = block_on(gpu.encode_batch(&images, &levels)).unwrap();
    assert_eq!(grids, block_on(gpu.encode_batch(&images, &levels)).unwrap());
    for level in levels {
        let run: Vec<TokenGrid> = grids.iter().map(|g| g[level].clone()).collect();
        let dec = block_on(gpu.profile_decode(&run)).unwrap();
        assert_eq!(
            dec.total_flops(),
            2 * flops.decoders[level].forward,
            "level {level}"
        );
    }
    // Asking for more than one run or for nothing is a typed error.
    let err = block_on(gpu.profile_encode(&[], &[0])).unwrap_err();
    assert_eq!(err.kind(), "BadInput", "{err}");
}
