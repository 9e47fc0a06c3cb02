//! Conformance with libtorch: the vectors `hvq-train export-vectors` wrote to `tests/vectors/`
//! (weights, a u8 input image, and libtorch's projected latents, tokens and decoded pixels per
//! level) reproduced on the wgpu backend. Skips loudly when the vectors or the adapter are absent.

mod common;

use std::path::PathBuf;

use common::context;
use hvq_spec::{FeatureMap, TokenGrid, WeightLimits, Weights};
use hvq_wgpu::{GpuModel, pad_edge};
use safetensors::SafeTensors;

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors")
}

fn f32s(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
    let v = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("vector lacks {name}: {e}"));
    assert_eq!(v.dtype(), safetensors::Dtype::F32, "{name}");
    (
        v.shape().to_vec(),
        v.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

fn i32s(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<i32>) {
    let v = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("vector lacks {name}: {e}"));
    assert_eq!(v.dtype(), safetensors::Dtype::I32, "{name}");
    (
        v.shape().to_vec(),
        v.data()
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

/// Squared distance from position `i` of a `[D, N]` latent to codebook row `k`.
fn dist(p: &[f32], n: usize, codebook: &[f32], d: usize, i: usize, k: usize) -> f32 {
    (0..d)
        .map(|c| (p[c * n + i] - codebook[k * d + c]).powi(2))
        .sum()
}

fn crop(x: &FeatureMap, height: usize, width: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.channels * height * width);
    for c in 0..x.channels {
        for y in 0..height {
            out.extend_from_slice(&x.data[(c * x.height + y) * x.width..][..width]);
        }
    }
    out
}

#[test]
fn wgpu_reproduces_libtorch_conformance_vectors() {
    let dir = vectors_dir();
    let Ok(manifest) = std::fs::read_to_string(dir.join("manifest.json")) else {
        common::skip(&format!(
            "no conformance vectors in {} (run `hvq-train export-vectors`)",
            dir.display()
        ));
        return;
    };
    let Some(ctx) = context() else { return };
    let manifest: serde_json::Value = serde_json::from_str(&manifest).expect("manifest parses");
    let cases = manifest["cases"].as_array().expect("manifest has cases");
    assert!(!cases.is_empty(), "manifest lists no cases");
    let (mut same, mut total, mut worst_pixel) = (0usize, 0usize, 0.0f32);
    for case in cases {
        let name = case["case"].as_str().expect("case name");
        let weight_bytes = std::fs::read(dir.join(case["weights"].as_str().expect("weights file")))
            .expect("weights readable");
        let weights = Weights::from_safetensors(&weight_bytes, &WeightLimits::default())
            .expect("weights load");
        let cfg = weights.config().clone();
        let model = GpuModel::new(&ctx, &weights).expect("model uploads");
        let bytes = std::fs::read(dir.join(name)).expect("vector readable");
        let st = SafeTensors::deserialize(&bytes).expect("vector parses");
        let input = st.tensor("input").expect("input image");
        let (h, w) = (input.shape()[1], input.shape()[2]);
        let image = FeatureMap {
            channels: 3,
            height: h,
            width: w,
            data: input.data().iter().map(|&b| f32::from(b) / 255.0).collect(),
        };
        let s = cfg.coarsest_stride();
        let padded = pad_edge(&image, h.next_multiple_of(s), w.next_multiple_of(s)).expect("pads");
        let levels: Vec<usize> = (0..cfg.levels).collect();
        let latents = pollster::block_on(model.encode_latents(&padded)).expect("latents");
        let grids = pollster::block_on(model.encode(&padded, &levels)).expect("encode");
        let codebook = &weights.tensor("quantizer.codebook").data;
        let d = cfg.codebook_dim;
        for level in levels {
            let (_, want_p) = f32s(&st, &format!("latent.{level}"));
            let got_p = &latents[level];
            let max_diff = got_p
                .data
                .iter()
                .zip(&want_p)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            // libtorch (oneDNN, other summation orders and exp) vs WGSL f32: ~1e-6 per layer
            // over ~20 layers; 1e-3 on latents of order 1 leaves a wide margin.
            assert!(
                max_diff <= 1e-3,
                "{name} level {level}: latent max |diff| {max_diff}"
            );
            let (shape, want_t) = i32s(&st, &format!("tokens.{level}"));
            let grid = &grids[level];
            assert_eq!(
                (grid.height, grid.width),
                (shape[0], shape[1]),
                "{name} level {level} grid size"
            );
            let n = grid.height * grid.width;
            for (i, (&g, &t)) in grid.tokens.iter().zip(&want_t).enumerate() {
                total += 1;
                if g as i32 == t {
                    same += 1;
                    continue;
                }
                // A flip is a near-tie: on libtorch's own latent the two entries' distances
                // differ by less than the backends' latent difference can move them.
                let (dg, dt) = (
                    dist(&want_p, n, codebook, d, i, g as usize),
                    dist(&want_p, n, codebook, d, i, t as usize),
                );
                assert!(
                    (dg - dt).abs() <= 1e-3 * (1.0 + dt),
                    "{name} level {level} pos {i}: wgpu {g} ({dg}) vs libtorch {t} ({dt})"
                );
            }
            // Pixels are compared on libtorch's tokens, so a near-tie flip cannot move them.
            let torch_grid = TokenGrid {
                level,
                height: shape[0],
                width: shape[1],
                tokens: want_t.iter().map(|&t| t as u32).collect(),
            };
            let rgb = pollster::block_on(model.decode(&torch_grid)).expect("decode");
            let (_, want_rgb) = f32s(&st, &format!("decoded.{level}"));
            let got_rgb = crop(&rgb, h, w);
            let diff = got_rgb
                .iter()
                .zip(&want_rgb)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
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
        cases.len(),
        100.0 * same as f64 / total as f64
    ));
}
