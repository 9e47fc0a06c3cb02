//! Single-head self-attention over all positions, with memory bounded by query blocks.

use hvq_spec::FeatureMap;

use super::gemm::{Dims, View, ViewMut, gemm};
use super::norm::{exp_approx, group_norm};
use super::quant::project;
use crate::CpuError;
use crate::par::{self, SharedMut};

/// Query rows per block: the `QUERY_BLOCK × positions` score block is all that is ever held
/// (1 MiB per thread for a 64×64 grid), never the full positions² matrix.
const QUERY_BLOCK: usize = 64;

pub use hvq_spec::op_params::{Affine, AttnWeights};

/// `x + proj_out(softmax_j(q_i · k_j / sqrt(C)) v_j)` with `q, k, v` 1×1 projections of
/// `GroupNorm(x)`: the taming-style `AttnBlock`.
pub fn attention(x: &FeatureMap, w: AttnWeights<'_>) -> Result<FeatureMap, CpuError> {
    let h = group_norm(x, w.norm_params())?;
    let q = project(&h, w.q.weight, w.q.bias)?;
    let k = project(&h, w.k.weight, w.k.bias)?;
    let v = project(&h, w.v.weight, w.v.bias)?;
    let mixed = attend(&q, &k, &v);
    let mut out = project(&mixed, w.proj_out.weight, w.proj_out.bias)?;
    super::resample::add_assign(&mut out, x)?;
    Ok(out)
}

/// `Σ_j softmax_j(q_i · k_j / sqrt(C)) v_j` for every position `i`, block of queries by block.
fn attend(q: &FeatureMap, k: &FeatureMap, v: &FeatureMap) -> FeatureMap {
    let (c, n) = (q.channels, q.plane());
    let mut out = FeatureMap::zeros(v.channels, q.height, q.width);
    let dst = SharedMut::new(&mut out.data);
    let scale = 1.0 / (c as f32).sqrt();
    par::for_each_init(
        n.div_ceil(QUERY_BLOCK),
        || vec![0.0f32; QUERY_BLOCK * n],
        |scores, t| {
            let (i0, i1) = (t * QUERY_BLOCK, ((t + 1) * QUERY_BLOCK).min(n));
            let nq = i1 - i0;
            // scores[i, j] = q_i · k_j: q read transposed (positions as rows).
            let lhs = View {
                ptr: q.data[i0..].as_ptr(),
                rs: 1,
                cs: n as isize,
            };
            let rhs = View {
                ptr: k.data.as_ptr(),
                rs: n as isize,
                cs: 1,
            };
            let s = ViewMut {
                ptr: scores.as_mut_ptr(),
                rs: n as isize,
                cs: 1,
            };
            // SAFETY: q/k are c × n, scores holds nq × n.
            unsafe { gemm(Dims { m: nq, n, k: c }, s, lhs, rhs, false) };
            scores[..nq * n]
                .chunks_exact_mut(n)
                .for_each(|row| softmax(row, scale));
            // out[:, i0..i1] = v × scoresᵀ.
            let lhs = View {
                ptr: v.data.as_ptr(),
                rs: n as isize,
                cs: 1,
            };
            let rhs = View {
                ptr: scores.as_ptr(),
                rs: 1,
                cs: n as isize,
            };
            // SAFETY: this block owns columns i0..i1 of every output channel.
            let o = ViewMut {
                ptr: unsafe { dst.ptr().add(i0) },
                rs: n as isize,
                cs: 1,
            };
            unsafe {
                gemm(
                    Dims {
                        m: v.channels,
                        n: nq,
                        k: n,
                    },
                    o,
                    lhs,
                    rhs,
                    false,
                )
            };
        },
    );
    out
}

/// In-place `softmax(row · scale)`, shifted by the row maximum so no exponent overflows.
fn softmax(row: &mut [f32], scale: f32) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = exp_approx((*v - max) * scale);
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}
