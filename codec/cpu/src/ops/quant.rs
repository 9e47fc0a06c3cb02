//! The shared quantizer: 1×1 projection, nearest-codebook search, codebook gather.

use hvq_spec::{FeatureMap, Tensor, TokenGrid};

use super::conv::{Conv2dParams, conv2d};
use super::gemm::{Dims, View, ViewMut, gemm};
use crate::CpuError;
use crate::par::{self, SharedMut};

/// Positions per search tile, and codebook rows per block: the `CODE_BLOCK × POS_BLOCK`
/// score tile (128 KiB) stays in L2, where a full `N × positions` distance matrix would be
/// memory-bound (2.5× slower, measured by a peer).
const POS_BLOCK: usize = 128;
const CODE_BLOCK: usize = 256;

/// A 1×1 convolution (`weight` `[out, in, 1, 1]` or `[out, in]`): the quantizer's projection.
pub fn project(x: &FeatureMap, weight: &Tensor, bias: &Tensor) -> Result<FeatureMap, CpuError> {
    let s = &weight.shape;
    let ok = (s.len() == 4 && s[2] == 1 && s[3] == 1) || s.len() == 2;
    if !ok {
        return Err(CpuError::ShapeMismatch {
            op: "project",
            operand: "weight",
            expected: vec![0, x.channels, 1, 1],
            got: s.clone(),
        });
    }
    if s.len() == 2 {
        let w4 = Tensor {
            shape: vec![s[0], s[1], 1, 1],
            data: weight.data.clone(),
        };
        return conv2d(x, &w4, bias, Conv2dParams::SAME);
    }
    conv2d(x, weight, bias, Conv2dParams::SAME)
}

fn check_codebook(op: &'static str, dim: usize, codebook: &Tensor) -> Result<usize, CpuError> {
    match codebook.shape.as_slice() {
        [n, d] if *d == dim && *n > 0 && *n <= u32::MAX as usize => Ok(*n),
        _ => Err(CpuError::ShapeMismatch {
            op,
            operand: "codebook",
            expected: vec![0, dim],
            got: codebook.shape.clone(),
        }),
    }
}

/// The index of the nearest codebook row (squared L2) for every position of `p`
/// (`D` channels), row-major; ties go to the lowest index.
///
/// Scores are `‖e‖² − 2 p·e` (the `‖p‖²` term is the same for every candidate), computed
/// by GEMM over blocks of positions × codes.
pub fn nearest_codes(p: &FeatureMap, codebook: &Tensor) -> Result<Vec<u32>, CpuError> {
    let d = p.channels;
    let n_codes = check_codebook("nearest_codes", d, codebook)?;
    let norms = row_norms(codebook, d);
    let positions = p.plane();
    let mut tokens = vec![0u32; positions];
    let out = SharedMut::new_u32(&mut tokens);
    par::for_each_init(
        positions.div_ceil(POS_BLOCK),
        || {
            (
                vec![0.0f32; CODE_BLOCK * POS_BLOCK],
                vec![0.0f32; POS_BLOCK],
                vec![0u32; POS_BLOCK],
            )
        },
        |(scores, best, arg), t| {
            let (p0, p1) = (t * POS_BLOCK, ((t + 1) * POS_BLOCK).min(positions));
            let np = p1 - p0;
            best[..np].fill(f32::INFINITY);
            arg[..np].fill(0);
            for c0 in (0..n_codes).step_by(CODE_BLOCK) {
                let nc = CODE_BLOCK.min(n_codes - c0);
                dot_tile(scores, p, codebook, (c0, nc), (p0, np));
                for (i, row) in scores[..nc * np].chunks_exact(np).enumerate() {
                    let (norm, code) = (norms[c0 + i], (c0 + i) as u32);
                    // Codes arrive in increasing order and only a strictly smaller score
                    // replaces the best, so exact ties keep the lowest index.
                    for ((b, a), &s) in best[..np].iter_mut().zip(arg[..np].iter_mut()).zip(row) {
                        let score = norm - 2.0 * s;
                        if score < *b {
                            *b = score;
                            *a = code;
                        }
                    }
                }
            }
            // SAFETY: positions p0..p1 belong to this tile alone.
            unsafe { std::ptr::copy_nonoverlapping(arg.as_ptr(), out.ptr_u32().add(p0), np) };
        },
    );
    Ok(tokens)
}

/// `scores[i·np + j] = e_{c0+i} · p_{p0+j}` for `nc` codes from `c0` and `np` positions from `p0`.
fn dot_tile(
    scores: &mut [f32],
    p: &FeatureMap,
    codebook: &Tensor,
    (c0, nc): (usize, usize),
    (p0, np): (usize, usize),
) {
    let d = p.channels;
    assert!(
        scores.len() >= nc * np && codebook.data.len() >= (c0 + nc) * d && p0 + np <= p.plane()
    );
    let lhs = View {
        ptr: codebook.data[c0 * d..].as_ptr(),
        rs: d as isize,
        cs: 1,
    };
    let rhs = View {
        ptr: p.data[p0..].as_ptr(),
        rs: p.plane() as isize,
        cs: 1,
    };
    let dst = ViewMut {
        ptr: scores.as_mut_ptr(),
        rs: np as isize,
        cs: 1,
    };
    // SAFETY: codes c0..c0+nc of D values, positions p0..p1 of each of D planes, and an
    // nc × np score tile inside `scores` (all checked above).
    unsafe { gemm(Dims { m: nc, n: np, k: d }, dst, lhs, rhs, false) };
}

/// The `k` nearest codebook rows (squared L2) of every position of `p`, nearest first, with their
/// squared distances: position `i`'s are `codes[i·k..(i+1)·k]` and `distances[i·k..(i+1)·k]`.
/// Equal distances keep the lower index first, so `codes[i·k]` is [`nearest_codes`]'s token
/// wherever the scores are computed alike (the same tiles and GEMM), which the tests check.
/// `k` is clamped to the codebook size. The rate–distortion encoder chooses among these.
pub fn nearest_k_codes(
    p: &FeatureMap,
    codebook: &Tensor,
    k: usize,
) -> Result<(Vec<u32>, Vec<f32>), CpuError> {
    let d = p.channels;
    let n_codes = check_codebook("nearest_k_codes", d, codebook)?;
    let k = k.clamp(1, n_codes);
    let norms = row_norms(codebook, d);
    let positions = p.plane();
    let mut codes = vec![0u32; positions * k];
    let mut distances = vec![0f32; positions * k];
    let (out_c, out_d) = (
        SharedMut::new_u32(&mut codes),
        SharedMut::new(&mut distances),
    );
    par::for_each_init(
        positions.div_ceil(POS_BLOCK),
        || {
            (
                vec![0.0f32; CODE_BLOCK * POS_BLOCK],
                vec![0.0f32; POS_BLOCK * k],
                vec![0u32; POS_BLOCK * k],
            )
        },
        |(scores, best, arg), t| {
            let (p0, p1) = (t * POS_BLOCK, ((t + 1) * POS_BLOCK).min(positions));
            let np = p1 - p0;
            best[..np * k].fill(f32::INFINITY);
            arg[..np * k].fill(0);
            for c0 in (0..n_codes).step_by(CODE_BLOCK) {
                let nc = CODE_BLOCK.min(n_codes - c0);
                dot_tile(scores, p, codebook, (c0, nc), (p0, np));
                for (i, row) in scores[..nc * np].chunks_exact(np).enumerate() {
                    let (norm, code) = (norms[c0 + i], (c0 + i) as u32);
                    for (j, &s) in row.iter().enumerate() {
                        let score = norm - 2.0 * s;
                        let (b, a) = (&mut best[j * k..][..k], &mut arg[j * k..][..k]);
                        // Strictly smaller only: codes arrive in increasing order, so ties keep the
                        // lower index first.
                        if score < b[k - 1] {
                            let at = b.partition_point(|&x| x <= score);
                            b.copy_within(at..k - 1, at + 1);
                            a.copy_within(at..k - 1, at + 1);
                            b[at] = score;
                            a[at] = code;
                        }
                    }
                }
            }
            for j in 0..np {
                let pos = p0 + j;
                let p2: f32 = (0..d).map(|c| p.data[c * positions + pos].powi(2)).sum();
                for r in 0..k {
                    // SAFETY: positions p0..p1 (k slots each) belong to this tile alone.
                    unsafe {
                        *out_c.ptr_u32().add(pos * k + r) = arg[j * k + r];
                        *out_d.ptr().add(pos * k + r) = (best[j * k + r] + p2).max(0.0);
                    }
                }
            }
        },
    );
    Ok((codes, distances))
}

fn row_norms(codebook: &Tensor, d: usize) -> Vec<f32> {
    codebook
        .data
        .chunks_exact(d.max(1))
        .map(|e| e.iter().map(|v| v * v).sum())
        .collect()
}

/// The codebook rows a token grid names, as a `D × height × width` map.
pub fn gather_codes(tokens: &TokenGrid, codebook: &Tensor) -> Result<FeatureMap, CpuError> {
    let d = codebook.shape.get(1).copied().unwrap_or(0);
    let n_codes = check_codebook("gather_codes", d, codebook)?;
    tokens.check(n_codes)?;
    let positions = tokens.height * tokens.width;
    let mut out = FeatureMap::zeros(d, tokens.height, tokens.width);
    for (pos, &t) in tokens.tokens.iter().enumerate() {
        let e = &codebook.data[t as usize * d..(t as usize + 1) * d];
        for (c, &v) in e.iter().enumerate() {
            out.data[c * positions + pos] = v;
        }
    }
    Ok(out)
}
