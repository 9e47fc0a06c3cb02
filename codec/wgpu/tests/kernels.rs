//! Every wgpu kernel against the hvq-cpu reference on awkward shapes: 1×1 maps, odd sizes,
//! stride 2, channel counts that are not multiples of the 64-wide tiles.

mod common;

use common::{Rng, assert_close, context};
use hvq_cpu::ops as cpu;
use hvq_spec::op_params::{Affine, AttnWeights, GroupNormParams};
use hvq_spec::{Tensor, TokenGrid};
use hvq_wgpu::Precision;
use hvq_wgpu::kernels::{self as gpu, Conv2dParams, Padding};

/// Convolutions sum up to 9·C products in a different order than the CPU GEMM (tiles of 16
/// vs packed panels): float rounding differs by a few ulps of the partial sums, far below 1e-4
/// relative to values of order 1, plus an absolute floor for results that cancel to near 0.
const CONV_ATOL: f32 = 2e-5;
const CONV_RTOL: f32 = 1e-4;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}

/// (cin, cout, height, width, kernel size): 1×1 maps, odd sizes, channels off the tile grid.
const CONV_SHAPES: [(usize, usize, usize, usize, usize); 6] = [
    (1, 1, 1, 1, 3),
    (3, 5, 7, 5, 3),
    (8, 70, 9, 13, 3),
    (65, 3, 6, 4, 1),
    (4, 6, 11, 3, 5),
    (16, 16, 8, 8, 3),
];

#[test]
fn conv_matches_cpu_reference() {
    let Some(ctx) = context() else { return };
    let mut rng = Rng::new(1);
    for (cin, cout, h, w, k) in CONV_SHAPES {
        let x = rng.map(cin, h, w);
        let weight = rng.tensor(&[cout, cin, k, k], 1.0 / ((cin * k * k) as f32).sqrt());
        let bias = rng.tensor(&[cout], 0.1);
        let want = cpu::conv2d(&x, &weight, &bias, cpu::Conv2dParams::SAME).unwrap();
        let got = block_on(gpu::conv2d(
            &ctx,
            &x,
            &weight,
            &bias,
            Conv2dParams::SAME,
            None,
        ))
        .unwrap();
        assert_close(
            &format!("conv {cin}->{cout} {h}x{w} k{k}"),
            &got,
            &want,
            CONV_ATOL,
            CONV_RTOL,
        );
    }
}

#[test]
fn strided_downsample_conv_matches_cpu_reference() {
    let Some(ctx) = context() else { return };
    let mut rng = Rng::new(2);
    for (cin, cout, h, w) in [(3, 4, 2, 2), (5, 7, 8, 6), (8, 67, 16, 10), (2, 2, 7, 5)] {
        let x = rng.map(cin, h, w);
        let weight = rng.tensor(&[cout, cin, 3, 3], 0.3);
        let bias = rng.tensor(&[cout], 0.1);
        let want = cpu::conv2d(&x, &weight, &bias, cpu::Conv2dParams::DOWNSAMPLE).unwrap();
        let got = block_on(gpu::conv2d(
            &ctx,
            &x,
            &weight,
            &bias,
            Conv2dParams::DOWNSAMPLE,
            None,
        ))
        .unwrap();
        assert_close(
            &format!("down-conv {cin}->{cout} {h}x{w}"),
            &got,
            &want,
            CONV_ATOL,
            CONV_RTOL,
        );
    }
    // Stride 2 with "same" padding as well: the kernel takes any stride/padding pair.
    let x = rng.map(3, 7, 9);
    let weight = rng.tensor(&[4, 3, 3, 3], 0.3);
    let bias = rng.tensor(&[4], 0.1);
    let params = Conv2dParams {
        stride: 2,
        padding: Padding::Same,
        upsample: false,
    };
    let want = cpu::conv2d(&x, &weight, &bias, params).unwrap();
    let got = block_on(gpu::conv2d(&ctx, &x, &weight, &bias, params, None)).unwrap();
    assert_close("stride-2 same conv", &got, &want, CONV_ATOL, CONV_RTOL);
}

#[test]
fn fused_upsample_conv_matches_cpu_reference() {
    let Some(ctx) = context() else { return };
    let mut rng = Rng::new(3);
    for (cin, cout, h, w) in [(1, 1, 1, 1), (3, 5, 3, 4), (9, 66, 5, 7)] {
        let x = rng.map(cin, h, w);
        let weight = rng.tensor(&[cout, cin, 3, 3], 0.3);
        let bias = rng.tensor(&[cout], 0.1);
        let want = cpu::upsample_conv2d(&x, &weight, &bias).unwrap();
        let got = block_on(gpu::conv2d(
            &ctx,
            &x,
            &weight,
            &bias,
            Conv2dParams::UPSAMPLE,
            None,
        ))
        .unwrap();
        assert_close(
            &format!("upsample-conv {cin}->{cout} {h}x{w}"),
            &got,
            &want,
            CONV_ATOL,
            CONV_RTOL,
        );
    }
}

#[test]
fn fused_residual_conv_matches_conv_plus_add() {
    let Some(ctx) = context() else { return };
    let mut rng = Rng::new(4);
    let x = rng.map(6, 7, 5);
    let r = rng.map(10, 7, 5);
    let weight = rng.tensor(&[10, 6, 3, 3], 0.3);
    let bias = rng.tensor(&[10], 0.1);
    let conv = cpu::conv2d(&x, &weight, &bias, cpu::Conv2dParams::SAME).unwrap();
    let want = cpu::add(&conv, &r).unwrap();
    let got = block_on(gpu::conv2d(
        &ctx,
        &x,
        &weight,
        &bias,
        Conv2dParams::SAME,
        Some(&r),
    ))
    .unwrap();
    assert_close("conv + residual", &got, &want, CONV_ATOL, CONV_RTOL);
}

#[test]
fn projection_matches_cpu_reference() {
    let Some(ctx) = context() else { return };
    let mut rng = Rng::new(5);
    let x = rng.map(70, 3, 5);
    let weight = rng.tensor(&[7, 70, 1, 1], 0.1);
    let bias = rng.tensor(&[7], 0.1);
    let want = cpu::project(&x, &weight, &bias).unwrap();
    let got = block_on(gpu::project(&ctx, &x, &weight, &bias)).unwrap();
    assert_close("project", &got, &want, CONV_ATOL, CONV_RTOL);
}

#[test]
fn group_norm_matches_cpu_reference() {
    let Some(ctx) = context() else { return };
    let mut rng = Rng::new(6);
    // (channels, groups, height, width): a single value per group, odd sizes, large groups.
    for (c, groups, h, w) in [(4, 4, 1, 1), (6, 3, 7, 5), (64, 32, 9, 9), (8, 2, 33, 31)] {
        let mut x = rng.map(c, h, w);
        // An offset mean exercises the two-pass variance.
        x.data.iter_mut().for_each(|v| *v = 3.0 + 2.0 * *v);
        let gamma = rng.tensor(&[c], 1.0);
        let beta = rng.tensor(&[c], 0.5);
        for swish in [false, true] {
            let params = GroupNormParams {
                gamma: &gamma,
                beta: &beta,
                groups,
                eps: 1e-6,
                swish,
            };
            let want = cpu::group_norm(&x, params).unwrap();
            let got = block_on(gpu::group_norm(&ctx, &x, params)).unwrap();
            // Statistics are reduced in a different order (a 256-way tree vs. the CPU's
            // sequential sums), and the CPU swish uses a ~2-ulp polynomial exp: both give
            // errors of order 1e-6 relative on outputs of order 1.
            assert_close(
                &format!("group_norm c{c} g{groups} {h}x{w} swish {swish}"),
                &got,
                &want,
                2e-5,
                1e-4,
            );
        }
    }
}

#[test]
fn elementwise_ops_match_cpu_reference() {
    let Some(ctx) = context() else { return };
    let mut rng = Rng::new(7);
    for (c, h, w) in [(1, 1, 1), (3, 7, 5), (5, 8, 6), (2, 1, 9)] {
        let a = rng.map(c, h, w);
        let b = rng.map(c, h, w);
        // These ops move or add values without reordering sums: results are exact.
        assert_close(
            "add",
            &block_on(gpu::add(&ctx, &a, &b)).unwrap(),
            &cpu::add(&a, &b).unwrap(),
            0.0,
            0.0,
        );
        assert_close(
            "subsample2",
            &block_on(gpu::subsample2(&ctx, &a)).unwrap(),
            &cpu::subsample2(&a),
            0.0,
            0.0,
        );
        assert_close(
            "upsample2",
            &block_on(gpu::upsample_nearest2(&ctx, &a)).unwrap(),
            &cpu::upsample_nearest2(&a),
            0.0,
            0.0,
        );
        if h >= 2 && w >= 2 {
            // (a+b)+(c+d) vs a+b+c+d: one rounding apart.
            assert_close(
                "avg_pool2",
                &block_on(gpu::avg_pool2(&ctx, &a)).unwrap(),
                &cpu::avg_pool2(&a),
                1e-6,
                1e-6,
            );
        }
    }
}

#[test]
fn attention_matches_cpu_reference() {
    let Some(ctx) = context() else { return };
    let mut rng = Rng::new(8);
    // (channels, groups, height, width): fewer positions than a key block, odd counts, and
    // more channels than one 64-channel staging chunk.
    for (c, groups, h, w) in [(4, 2, 1, 1), (8, 4, 7, 5), (70, 2, 5, 9), (16, 4, 12, 12)] {
        let x = rng.map(c, h, w);
        let s = 1.0 / (c as f32).sqrt();
        let t = |rng: &mut Rng, shape: &[usize], scale: f32| rng.tensor(shape, scale);
        let (gamma, beta) = (t(&mut rng, &[c], 1.0), t(&mut rng, &[c], 0.3));
        let ws: Vec<(Tensor, Tensor)> = (0..4)
            .map(|_| (t(&mut rng, &[c, c, 1, 1], 2.0 * s), t(&mut rng, &[c], 0.1)))
            .collect();
        // One parameter value for both backends: the type is hvq-spec's.
        let weights = AttnWeights {
            norm: Affine {
                weight: &gamma,
                bias: &beta,
            },
            q: affine(&ws[0]),
            k: affine(&ws[1]),
            v: affine(&ws[2]),
            proj_out: affine(&ws[3]),
            groups,
            eps: 1e-6,
        };
        let want = cpu::attention(&x, weights).unwrap();
        let got = block_on(gpu::attention(&ctx, &x, weights)).unwrap();
        // Online softmax rescales partial sums as the maximum grows and the CPU uses a
        // polynomial exp: a few ulps per step over up to 144 keys, well under 1e-4.
        assert_close(&format!("attention c{c} {h}x{w}"), &got, &want, 5e-5, 2e-4);
    }
}

/// A projection's weights as the shared parameter type.
fn affine((weight, bias): &(Tensor, Tensor)) -> Affine<'_> {
    Affine { weight, bias }
}

#[test]
fn codebook_search_matches_cpu_reference_and_breaks_ties_low() {
    let Some(ctx) = context() else { return };
    let mut rng = Rng::new(9);
    for (d, n, h, w) in [(1, 1, 1, 1), (4, 33, 7, 5), (70, 100, 3, 3), (8, 17, 1, 9)] {
        let p = rng.map(d, h, w);
        let codebook = rng.tensor(&[n, d], 1.0);
        let want = cpu::nearest_codes(&p, &codebook).unwrap();
        let got = block_on(gpu::nearest_codes(&ctx, &p, &codebook)).unwrap();
        for (i, (g, c)) in got.iter().zip(&want).enumerate() {
            if g != c {
                // Different formulas (sum of squared differences vs ‖e‖² − 2p·e) may only flip
                // genuine near-ties.
                let dist = |k: u32| {
                    (0..d)
                        .map(|ch| {
                            (p.data[ch * h * w + i] - codebook.data[k as usize * d + ch]).powi(2)
                        })
                        .sum::<f32>()
                };
                assert!(
                    (dist(*g) - dist(*c)).abs() <= 1e-5 * (1.0 + dist(*c)),
                    "position {i}: gpu {g}, cpu {c}"
                );
            }
        }
    }
    // Exact duplicates: the lowest index must win.
    let p = rng.map(3, 2, 2);
    let row: Vec<f32> = vec![0.25, -0.5, 0.75];
    let codebook = Tensor {
        shape: vec![40, 3],
        data: (0..40).flat_map(|_| row.clone()).collect(),
    };
    assert_eq!(
        block_on(gpu::nearest_codes(&ctx, &p, &codebook)).unwrap(),
        vec![0; 4]
    );
}

#[test]
fn codebook_search_gives_the_same_tokens_in_any_number_of_splits() {
    let Some(ctx) = context() else { return };
    let mut rng = Rng::new(11);
    // 1000 entries: splits of 16 entries (63 of them, the last one short), of 32, of 336 and
    // 500; 37 positions leave most of the workgroup's invocations past the map's end.
    let (d, n, h, w) = (20, 1000, 1, 37);
    let p = rng.map(d, h, w);
    let mut codebook = rng.tensor(&[n, d], 1.0);
    // Entry 999 (last split) duplicates entry 3 (first split) and entry 520 duplicates 519
    // (same split): whichever is nearest, the lower index must win.
    for ch in 0..d {
        codebook.data[999 * d + ch] = codebook.data[3 * d + ch];
        codebook.data[520 * d + ch] = codebook.data[519 * d + ch];
    }
    // Position 0 sits exactly on entry 3, position 1 on entry 519.
    let mut p = p;
    for ch in 0..d {
        p.data[ch * w] = codebook.data[3 * d + ch];
        p.data[ch * w + 1] = codebook.data[519 * d + ch];
    }
    let whole = block_on(gpu::nearest_codes_in_splits(&ctx, &p, &codebook, 1)).unwrap();
    assert_eq!(&whole[..2], &[3, 519]);
    for splits in [2, 3, 7, 32, 63, 1000] {
        let got = block_on(gpu::nearest_codes_in_splits(&ctx, &p, &codebook, splits)).unwrap();
        assert_eq!(got, whole, "{splits} splits");
    }
    assert_eq!(
        block_on(gpu::nearest_codes(&ctx, &p, &codebook)).unwrap(),
        whole
    );
    assert!(matches!(
        block_on(gpu::nearest_codes_in_splits(&ctx, &p, &codebook, 0)),
        Err(hvq_wgpu::GpuError::BadInput { .. })
    ));
}

#[test]
fn codebook_gather_matches_cpu_reference_and_rejects_bad_tokens() {
    let Some(ctx) = context() else { return };
    let mut rng = Rng::new(10);
    let codebook = rng.tensor(&[37, 5], 1.0);
    let grid = TokenGrid {
        level: 0,
        height: 3,
        width: 7,
        tokens: (0..21).map(|i| (i * 7 % 37) as u32).collect(),
    };
    let want = cpu::gather_codes(&grid, &codebook).unwrap();
    let got = block_on(gpu::gather_codes(&ctx, &grid, &codebook)).unwrap();
    assert_close("gather", &got, &want, 0.0, 0.0);
    let bad = TokenGrid {
        tokens: vec![37; 21],
        ..grid
    };
    assert!(matches!(
        block_on(gpu::gather_codes(&ctx, &bad, &codebook)),
        Err(hvq_wgpu::GpuError::Input(
            hvq_spec::InputError::TokenOutOfRange { position: 0, .. }
        ))
    ));
}

#[test]
fn every_kernel_variant_compiles_on_the_device() {
    let Some(ctx) = context() else { return };
    block_on(ctx.compile_kernels(Precision::F32)).unwrap();
    if ctx.supports_f16() {
        block_on(ctx.compile_kernels(Precision::F16)).unwrap();
    } else {
        // Asking anyway is a typed refusal, not a shader error.
        let err = block_on(ctx.compile_kernels(Precision::F16)).unwrap_err();
        assert_eq!(err.kind(), "Unsupported", "{err}");
        common::skip("the adapter has no shader-f16: f16 kernels not compiled");
    }
}
