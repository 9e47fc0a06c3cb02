//! Conformance with libtorch: the vectors `hvq-train export-vectors` wrote to `tests/vectors/`
//! (weights, a u8 input image, and libtorch's projected latents, tokens and decoded pixels per
//! level, read by `hvq_tests::Vectors`) reproduced on the wgpu backend. Missing vectors fail;
//! skips loudly when the adapter is absent.

mod common;

use common::context;
use hvq_tests::{Vectors, max_abs_diff};
use hvq_wgpu::GpuModel;

/// Squared distance from position `i` of a `[D, N]` latent to codebook row `k`.
fn dist(p: &[f32], n: usize, codebook: &[f32], d: usize, i: usize, k: usize) -> f32 {
    (0..d)
        .map(|c| (p[c * n + i] - codebook[k * d + c]).powi(2))
        .sum()
}

#[test]
fn wgpu_reproduces_libtorch_conformance_vectors() {
    let vectors = Vectors::load();
    let Some(ctx) = context() else { return };
    let (mut same, mut total, mut worst_pixel) = (0usize, 0usize, 0.0f32);
    for case in vectors.cases() {
        let name = &case.case;
        let weights = case.weights();
        let cfg = weights.config().clone();
        let model = GpuModel::new(&ctx, &weights).expect("model uploads");
        let (h, w) = (case.height, case.width);
        let s = cfg.coarsest_stride();
        let image = case.input_map();
        let padded = hvq_cpu::ops::pad_edge(&image, s).expect("pads");
        let levels: Vec<usize> = (0..cfg.levels).collect();
        let latents = pollster::block_on(model.encode_latents(&padded)).expect("latents");
        let grids = pollster::block_on(model.encode(&padded, &levels)).expect("encode");
        let codebook = &weights.tensor("quantizer.codebook").data;
        let d = cfg.codebook_dim;
        for level in levels {
            let want_p = &case.latent(level).data;
            let max_diff = max_abs_diff(&latents[level].data, want_p);
            // libtorch (oneDNN, other summation orders and exp) vs WGSL f32: ~1e-6 per layer
            // over ~20 layers; 1e-3 on latents of order 1 leaves a wide margin.
            assert!(
                max_diff <= 1e-3,
                "{name} level {level}: latent max |diff| {max_diff}"
            );
            let torch_grid = case.tokens(level);
            let grid = &grids[level];
            assert_eq!(
                (grid.height, grid.width),
                (torch_grid.height, torch_grid.width),
                "{name} level {level} grid size"
            );
            let n = grid.height * grid.width;
            for (i, (&g, &t)) in grid.tokens.iter().zip(&torch_grid.tokens).enumerate() {
                total += 1;
                if g == t {
                    same += 1;
                    continue;
                }
                // A flip is a near-tie: on libtorch's own latent the two entries' distances
                // differ by less than the backends' latent difference can move them.
                let (dg, dt) = (
                    dist(want_p, n, codebook, d, i, g as usize),
                    dist(want_p, n, codebook, d, i, t as usize),
                );
                assert!(
                    (dg - dt).abs() <= 1e-3 * (1.0 + dt),
                    "{name} level {level} pos {i}: wgpu {g} ({dg}) vs libtorch {t} ({dt})"
                );
            }
            // Pixels are compared on libtorch's tokens, so a near-tie flip cannot move them.
            let rgb = pollster::block_on(model.decode(torch_grid)).expect("decode");
            let got_rgb = hvq_cpu::ops::crop(&rgb, h, w).expect("crops");
            let diff = max_abs_diff(&got_rgb.data, &case.decoded(level).data);
            // Pixels in [0, 1]: 1e-4 is 1/40 of an 8-bit step, far above f32 order effects.
            assert!(
                diff <= 1e-4,
                "{name} level {level}: decoded max |diff| {diff}"
            );
            worst_pixel = worst_pixel.max(diff);
        }
    }
    common::report(&format!(
        "wgpu vs libtorch: {} cases, token agreement {same}/{total} = {:.3}%, worst decoded pixel |diff| {worst_pixel:e}",
        vectors.cases().len(),
        100.0 * same as f64 / total as f64
    ));
}

/// The adapter, its driver, features and limits, printed for the record (the GPU script keeps
/// this test's output); the report states what the device was offered, not what it uses.
#[test]
fn the_adapter_report_names_the_adapter_its_features_and_limits() {
    let Some(ctx) = common::context() else { return };
    let report = ctx.adapter_report();
    eprintln!("{report}");
    assert!(report.contains(&ctx.adapter_info().name));
    let (_, limits) = ctx.adapter_capabilities();
    // The device runs WebGPU's portable limits; the adapter offers at least those.
    assert!(
        limits.max_compute_invocations_per_workgroup
            >= ctx.limits().max_compute_invocations_per_workgroup
    );
    for part in ["shader-f16 ", "subgroup ", "workgroup memory"] {
        assert!(report.contains(part), "{part} missing from {report}");
    }
}
