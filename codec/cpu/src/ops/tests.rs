//! Every fast op against its naive reference or a hand-computed case.

use hvq_spec::{FeatureMap, InputError, Tensor, TokenGrid};

use super::*;
use crate::CpuError;

/// SplitMix64 in [-1, 1): deterministic inputs without a dev-dependency.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub(crate) fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub(crate) fn map(&mut self, c: usize, h: usize, w: usize) -> FeatureMap {
        FeatureMap {
            channels: c,
            height: h,
            width: w,
            data: (0..c * h * w).map(|_| self.next()).collect(),
        }
    }
    pub(crate) fn tensor(&mut self, shape: &[usize]) -> Tensor {
        Tensor {
            shape: shape.to_vec(),
            data: (0..shape.iter().product()).map(|_| self.next()).collect(),
        }
    }
}

/// Largest absolute difference, after checking shapes agree.
pub(crate) fn max_diff(a: &FeatureMap, b: &FeatureMap) -> f32 {
    assert_eq!(
        (a.channels, a.height, a.width),
        (b.channels, b.height, b.width)
    );
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

// f32 sums of up to a few hundred O(1) products: rounding stays far below 1e-4, while any
// indexing mistake moves values by O(0.1).
const F32_SUM_TOL: f32 = 1e-4;

#[test]
fn conv_matches_naive_reference_on_awkward_shapes() {
    let s2_same = Conv2dParams {
        stride: 2,
        padding: Padding::Same,
        upsample: false,
    };
    let cases = [
        // (cin, cout, h, w, k, params)
        (1, 1, 1, 1, 1, Conv2dParams::SAME),
        (1, 1, 1, 1, 3, Conv2dParams::SAME),
        (3, 5, 7, 5, 3, Conv2dParams::SAME),
        (5, 3, 7, 5, 3, Conv2dParams::DOWNSAMPLE),
        (6, 7, 8, 6, 3, Conv2dParams::DOWNSAMPLE),
        (3, 4, 9, 9, 5, Conv2dParams::SAME),
        (7, 9, 5, 7, 1, Conv2dParams::SAME),
        (4, 6, 7, 5, 3, s2_same),
        (3, 4, 3, 3, 7, Conv2dParams::SAME),
        // Several row tiles and a ragged last tile.
        (3, 10, 45, 37, 3, Conv2dParams::SAME),
        (5, 3, 46, 34, 3, Conv2dParams::DOWNSAMPLE),
        // Enough channels for the Winograd path: odd sizes cut tiles at the edges.
        (16, 16, 7, 5, 3, Conv2dParams::SAME),
        (16, 17, 1, 1, 3, Conv2dParams::SAME),
        (20, 16, 9, 13, 3, Conv2dParams::SAME),
        (16, 24, 45, 37, 3, Conv2dParams::SAME),
        (17, 16, 2, 2, 3, Conv2dParams::SAME),
    ];
    let mut rng = Rng::new(1);
    for (cin, cout, h, w, k, p) in cases {
        let x = rng.map(cin, h, w);
        let wt = rng.tensor(&[cout, cin, k, k]);
        let b = rng.tensor(&[cout]);
        let fast = conv2d(&x, &wt, &b, p).unwrap();
        let slow = reference::conv2d(&x, &wt, &b, p);
        let d = max_diff(&fast, &slow);
        assert!(
            d < F32_SUM_TOL,
            "{cin}->{cout} {h}x{w} k{k} {p:?}: max diff {d}"
        );
    }
}

#[test]
fn winograd_path_matches_im2col_path() {
    let mut rng = Rng::new(8);
    for (cin, cout, h, w) in [
        (16, 16, 3, 3),
        (32, 16, 16, 16),
        (16, 32, 33, 9),
        (24, 20, 64, 3),
    ] {
        let x = rng.map(cin, h, w);
        let (wt, b) = (rng.tensor(&[cout, cin, 3, 3]), rng.tensor(&[cout]));
        let fast = conv2d(&x, &wt, &b, Conv2dParams::SAME).unwrap();
        let direct = conv::conv2d_im2col(&x, &wt, &b, Conv2dParams::SAME);
        let d = max_diff(&fast, &direct);
        assert!(d < F32_SUM_TOL, "{cin}->{cout} {h}x{w}: {d}");
    }
}

#[test]
fn conv_accumulate_adds_the_convolution_to_the_output() {
    let mut rng = Rng::new(2);
    let x = rng.map(4, 9, 7);
    let (wt, b) = (rng.tensor(&[5, 4, 3, 3]), rng.tensor(&[5]));
    let base = rng.map(5, 9, 7);
    let mut acc = base.clone();
    conv2d_accumulate(&x, &wt, &b, Conv2dParams::SAME, &mut acc).unwrap();
    let expect = add(&base, &reference::conv2d(&x, &wt, &b, Conv2dParams::SAME)).unwrap();
    assert!(max_diff(&acc, &expect) < F32_SUM_TOL);
    let mut wrong = FeatureMap::zeros(5, 8, 7);
    assert!(matches!(
        conv2d_accumulate(&x, &wt, &b, Conv2dParams::SAME, &mut wrong),
        Err(CpuError::ShapeMismatch { .. })
    ));
}

#[test]
fn upsample_conv_matches_upsample_then_conv() {
    let mut rng = Rng::new(3);
    for (cin, cout, h, w) in [(1, 1, 1, 1), (3, 5, 3, 5), (6, 4, 7, 4), (3, 3, 40, 9)] {
        let x = rng.map(cin, h, w);
        let (wt, b) = (rng.tensor(&[cout, cin, 3, 3]), rng.tensor(&[cout]));
        let fast = upsample_conv2d(&x, &wt, &b).unwrap();
        let slow = reference::conv2d(&upsample_nearest2(&x), &wt, &b, Conv2dParams::SAME);
        let d = max_diff(&fast, &slow);
        assert!(d < F32_SUM_TOL, "{cin}->{cout} {h}x{w}: max diff {d}");
    }
}

#[test]
fn conv_with_upsample_param_convolves_the_upsampled_input() {
    let mut rng = Rng::new(33);
    let x = rng.map(3, 5, 4);
    let up = upsample_nearest2(&x);
    let stride2 = Conv2dParams {
        stride: 2,
        ..Conv2dParams::UPSAMPLE
    };
    // 3×3 same (the fused sub-pixel path), 1×1 and stride 2 (the materialized path).
    for (k, params) in [
        (3, Conv2dParams::UPSAMPLE),
        (1, Conv2dParams::UPSAMPLE),
        (3, stride2),
    ] {
        let (wt, b) = (rng.tensor(&[4, 3, k, k]), rng.tensor(&[4]));
        let plain = Conv2dParams {
            upsample: false,
            ..params
        };
        let want = reference::conv2d(&up, &wt, &b, plain);
        let got = conv2d(&x, &wt, &b, params).unwrap();
        assert!(max_diff(&got, &want) < F32_SUM_TOL, "k{k} {params:?}");
        let mut acc = rng.map(want.channels, want.height, want.width);
        let mut expect = acc.clone();
        add_assign(&mut expect, &want).unwrap();
        conv2d_accumulate(&x, &wt, &b, params, &mut acc).unwrap();
        assert!(max_diff(&acc, &expect) < F32_SUM_TOL, "accumulate k{k}");
    }
}

#[test]
fn conv_rejects_bad_shapes_and_params() {
    let mut rng = Rng::new(4);
    let x = rng.map(3, 4, 4);
    let b = rng.tensor(&[2]);
    let bad_cin = rng.tensor(&[2, 4, 3, 3]);
    assert!(matches!(
        conv2d(&x, &bad_cin, &b, Conv2dParams::SAME),
        Err(CpuError::ShapeMismatch { .. })
    ));
    let even = rng.tensor(&[2, 3, 2, 2]);
    assert!(matches!(
        conv2d(&x, &even, &b, Conv2dParams::SAME),
        Err(CpuError::Unsupported { .. })
    ));
    let w = rng.tensor(&[2, 3, 3, 3]);
    let s3 = Conv2dParams {
        stride: 3,
        padding: Padding::Same,
        upsample: false,
    };
    assert!(matches!(
        conv2d(&x, &w, &b, s3),
        Err(CpuError::Unsupported { .. })
    ));
    assert!(matches!(
        conv2d(&x, &w, &rng.tensor(&[3]), Conv2dParams::SAME),
        Err(CpuError::ShapeMismatch { .. })
    ));
    let tiny = rng.map(3, 1, 1);
    assert!(matches!(
        conv2d(&tiny, &w, &b, Conv2dParams::DOWNSAMPLE),
        Err(CpuError::Unsupported { .. })
    ));
}

#[test]
fn group_norm_matches_hand_computed_case() {
    // One group over two channels [0, 2 | 4, 6]: mean 3, biased variance (9+1+1+9)/4 = 5.
    let x = FeatureMap {
        channels: 2,
        height: 1,
        width: 2,
        data: vec![0.0, 2.0, 4.0, 6.0],
    };
    let gamma = Tensor {
        shape: vec![2],
        data: vec![1.0, 2.0],
    };
    let beta = Tensor {
        shape: vec![2],
        data: vec![0.0, 1.0],
    };
    let p = GroupNormParams {
        gamma: &gamma,
        beta: &beta,
        groups: 1,
        eps: 0.0,
        swish: false,
    };
    let y = group_norm(&x, p).unwrap();
    let s = 5f32.sqrt();
    let expect = [-3.0 / s, -1.0 / s, 2.0 / s + 1.0, 6.0 / s + 1.0];
    for (a, e) in y.data.iter().zip(expect) {
        // Values are O(1); f32 rounding of a handful of operations.
        assert!((a - e).abs() < 1e-6, "{a} vs {e}");
    }
}

#[test]
fn group_norm_with_swish_matches_reference() {
    let mut rng = Rng::new(5);
    for (c, groups, h, w) in [(6, 3, 7, 5), (4, 2, 1, 1), (8, 2, 9, 11)] {
        let x = rng.map(c, h, w);
        let (gamma, beta) = (rng.tensor(&[c]), rng.tensor(&[c]));
        for swish in [false, true] {
            let p = GroupNormParams {
                gamma: &gamma,
                beta: &beta,
                groups,
                eps: 1e-6,
                swish,
            };
            let d = max_diff(&group_norm(&x, p).unwrap(), &reference::group_norm(&x, p));
            // Normalised values are O(1); the folded `x·scale + shift` form (PyTorch's too)
            // rounds at about 1e-6 of the input's scale over the group's spread.
            assert!(d < 1e-5, "c{c} g{groups} swish {swish}: {d}");
        }
    }
    let bad = GroupNormParams {
        gamma: &rng.tensor(&[6]),
        beta: &rng.tensor(&[6]),
        groups: 4,
        eps: 1e-6,
        swish: true,
    };
    assert!(matches!(
        group_norm(&rng.map(6, 2, 2), bad),
        Err(CpuError::Unsupported { .. })
    ));
}

#[test]
fn fast_exp_is_accurate_over_the_float_range() {
    let mut worst = 0.0f64;
    for i in -8700..=8800 {
        let x = i as f32 * 0.01;
        let rel = ((norm::exp_approx(x) as f64) / (x as f64).exp() - 1.0).abs();
        worst = worst.max(rel);
    }
    // A few ulp (f32 epsilon is 1.2e-7): as accurate as libm for swish and softmax.
    assert!(worst < 5e-7, "worst relative error {worst}");
}

#[test]
fn attention_blockwise_matches_naive() {
    let mut rng = Rng::new(6);
    // 10×9 = 90 positions: one full query block and a ragged one.
    for (c, h, w) in [(6, 10, 9), (4, 1, 1), (8, 3, 5)] {
        let x = rng.map(c, h, w);
        let t: Vec<Tensor> = (0..10)
            .map(|i| {
                if i % 2 == 0 {
                    rng.tensor(&[c, c, 1, 1])
                } else {
                    rng.tensor(&[c])
                }
            })
            .collect();
        let (g, gb) = (rng.tensor(&[c]), rng.tensor(&[c]));
        let aw = AttnWeights {
            norm: Affine {
                weight: &g,
                bias: &gb,
            },
            q: Affine {
                weight: &t[0],
                bias: &t[1],
            },
            k: Affine {
                weight: &t[2],
                bias: &t[3],
            },
            v: Affine {
                weight: &t[4],
                bias: &t[5],
            },
            proj_out: Affine {
                weight: &t[6],
                bias: &t[7],
            },
            groups: 2,
            eps: 1e-6,
        };
        let d = max_diff(&attention(&x, aw).unwrap(), &reference::attention(&x, aw));
        assert!(d < F32_SUM_TOL, "c{c} {h}x{w}: {d}");
    }
}

#[test]
fn nearest_codes_matches_reference_across_blocks() {
    let mut rng = Rng::new(7);
    // 600 codes and 13×12 = 156 positions span several code and position blocks.
    let cb = rng.tensor(&[600, 5]);
    let p = rng.map(5, 13, 12);
    let fast = nearest_codes(&p, &cb).unwrap();
    let slow = reference::nearest_codes(&p, &cb);
    // Random f32 data has no near-ties at this size, so the two formulas agree exactly.
    assert_eq!(fast, slow);
}

/// Rows 0 and 1 are equidistant from (0, -1); rows 2 and 4 are identical and hold (0.5, 0.5).
fn tie_codebook() -> Tensor {
    Tensor {
        shape: vec![5, 2],
        data: vec![1.0, 0.0, -1.0, 0.0, 0.5, 0.5, 3.0, 3.0, 0.5, 0.5],
    }
}

#[test]
fn nearest_codes_tie_goes_to_lowest_index() {
    let cb = tie_codebook();
    let p = FeatureMap {
        channels: 2,
        height: 1,
        width: 2,
        data: vec![0.0, 0.5, -1.0, 0.5],
    };
    assert_eq!(nearest_codes(&p, &cb).unwrap(), vec![0, 2]);
}

#[test]
fn nearest_k_codes_are_the_k_nearest_in_order_with_their_distances() {
    let mut rng = Rng::new(11);
    // 600 codes and 156 positions span several code and position blocks, as above.
    let cb = rng.tensor(&[600, 5]);
    let p = rng.map(5, 13, 12);
    let k = 7;
    let (codes, dists) = nearest_k_codes(&p, &cb, k).unwrap();
    assert_eq!((codes.len(), dists.len()), (156 * k, 156 * k));
    let nearest = nearest_codes(&p, &cb).unwrap();
    for pos in 0..156 {
        // Every distance in f64, sorted (ties to the lower index): the first k must be ours.
        let mut all: Vec<(f64, u32)> = cb
            .data
            .chunks_exact(5)
            .enumerate()
            .map(|(i, e)| {
                let d = (0..5)
                    .map(|c| f64::from(p.data[c * 156 + pos] - e[c]).powi(2))
                    .sum::<f64>();
                (d, i as u32)
            })
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let want: Vec<u32> = all[..k].iter().map(|x| x.1).collect();
        assert_eq!(
            &codes[pos * k..(pos + 1) * k],
            want.as_slice(),
            "position {pos}"
        );
        assert_eq!(
            codes[pos * k],
            nearest[pos],
            "the first is nearest_codes' token"
        );
        for r in 0..k {
            let err = (f64::from(dists[pos * k + r]) - all[r].0).abs();
            assert!(
                err < 1e-4 * (1.0 + all[r].0),
                "position {pos} rank {r}: {err}"
            );
        }
    }
}

#[test]
fn nearest_k_codes_keep_ties_in_index_order_and_clamp_k() {
    let cb = tie_codebook();
    let p = FeatureMap {
        channels: 2,
        height: 1,
        width: 1,
        data: vec![0.5, 0.5],
    };
    let (codes, dists) = nearest_k_codes(&p, &cb, 2).unwrap();
    assert_eq!(codes, vec![2, 4]);
    assert_eq!(dists, vec![0.0, 0.0]);
    // k above the codebook size gives every row, nearest first.
    let (codes, _) = nearest_k_codes(&p, &cb, 99).unwrap();
    assert_eq!(codes, vec![2, 4, 0, 1, 3]);
    let bad = Tensor {
        shape: vec![5, 3],
        data: vec![0.0; 15],
    };
    assert!(nearest_k_codes(&p, &bad, 2).is_err());
}

#[test]
fn gather_codes_reads_rows_and_rejects_bad_tokens() {
    let cb = Tensor {
        shape: vec![3, 2],
        data: vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
    };
    let grid = TokenGrid {
        level: 0,
        height: 1,
        width: 2,
        tokens: vec![2, 0],
    };
    let m = gather_codes(&grid, &cb).unwrap();
    assert_eq!(m.data, vec![4.0, 0.0, 5.0, 1.0]);
    let bad = TokenGrid {
        tokens: vec![2, 3],
        ..grid.clone()
    };
    assert_eq!(
        gather_codes(&bad, &cb),
        Err(CpuError::Input(InputError::TokenOutOfRange {
            position: 1,
            token: 3,
            entries: 3
        }))
    );
    let short = TokenGrid {
        tokens: vec![1],
        ..grid
    };
    assert!(matches!(
        gather_codes(&short, &cb),
        Err(CpuError::Input(InputError::GridSize { .. }))
    ));
}

#[test]
fn resampling_ops_match_hand_computed_cases() {
    let x = FeatureMap {
        channels: 1,
        height: 2,
        width: 3,
        data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    };
    assert_eq!(avg_pool2(&x).data, vec![3.0]);
    assert_eq!(subsample2(&x).data, vec![1.0, 3.0]);
    let up = upsample_nearest2(&FeatureMap {
        channels: 1,
        height: 1,
        width: 2,
        data: vec![1.0, 2.0],
    });
    assert_eq!(up.data, vec![1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]);
    let padded = pad_edge(&x, 4).unwrap();
    assert_eq!((padded.height, padded.width), (4, 4));
    assert_eq!(padded.data[..8], [1.0, 2.0, 3.0, 3.0, 4.0, 5.0, 6.0, 6.0]);
    assert_eq!(padded.data[12..], [4.0, 5.0, 6.0, 6.0]);
    assert_eq!(crop(&padded, 2, 3).unwrap(), x);
    assert!(crop(&x, 3, 3).is_err());
    assert!(pad_edge(&x, 0).is_err());
    assert_eq!(add(&x, &x).unwrap().data[5], 12.0);
    assert!(add(&x, &padded).is_err());
}
