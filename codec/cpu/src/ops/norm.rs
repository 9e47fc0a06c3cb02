//! GroupNorm (optionally fused with swish) and the swish activation.

use hvq_spec::FeatureMap;

use crate::CpuError;
use crate::par;

/// `exp(x)` accurate to about 2 ulp over the f32 range, written branch-free and without
/// `round()` (a libm call on baseline x86-64) so loops over slices vectorise; libm's `expf`
/// does not, and swish runs on every activation.
#[inline(always)]
pub(crate) fn exp_approx(x: f32) -> f32 {
    // 1.5·2^23: adding it rounds to the nearest integer, which then sits in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    // Cody–Waite range reduction x = n·ln2 + r, |r| <= ln2/2, then a degree-6 polynomial
    // (the Cephes `expf` coefficients) and the 2^n scale built in the exponent bits.
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let n_bits = t.to_bits().wrapping_sub(MAGIC.to_bits());
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = 1.987_569_1e-4f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5e-1;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

/// `x · sigmoid(x)`.
#[inline(always)]
pub(crate) fn swish(x: f32) -> f32 {
    x / (1.0 + exp_approx(-x))
}

/// Applies swish `x · sigmoid(x)` to every value.
pub fn swish_inplace(x: &mut FeatureMap) {
    let chunk = x.plane().max(1);
    par::chunks_mut(&mut x.data, chunk, |_, c| {
        let src = c.to_vec();
        affine_map(c, &src, (1.0, 0.0), true);
    });
}

/// `dst = f(src · scale + shift)` with `f` swish or the identity.
///
/// Dispatches at run time to an AVX2+FMA build of the same loop where the CPU has it (twice
/// the lanes of the baseline SSE2 build); the arithmetic, and so the result, is the same.
fn affine_map(dst: &mut [f32], src: &[f32], affine: (f32, f32), swish: bool) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { affine_map_avx2(dst, src, affine, swish) };
        return;
    }
    affine_map_generic(dst, src, affine, swish);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn affine_map_avx2(dst: &mut [f32], src: &[f32], affine: (f32, f32), swish: bool) {
    affine_map_generic(dst, src, affine, swish);
}

#[inline(always)]
fn affine_map_generic(dst: &mut [f32], src: &[f32], (scale, shift): (f32, f32), swish: bool) {
    if swish {
        dst.iter_mut()
            .zip(src)
            .for_each(|(d, &v)| *d = self::swish(v * scale + shift));
    } else {
        dst.iter_mut()
            .zip(src)
            .for_each(|(d, &v)| *d = v * scale + shift);
    }
}

pub use hvq_spec::op_params::GroupNormParams;

/// PyTorch's `GroupNorm` (biased variance over each group's channels and positions), then
/// swish when `params.swish`.
pub fn group_norm(x: &FeatureMap, params: GroupNormParams<'_>) -> Result<FeatureMap, CpuError> {
    let c = x.channels;
    let op = "group_norm";
    if params.groups == 0 || !c.is_multiple_of(params.groups) {
        return Err(CpuError::Unsupported {
            op,
            param: "groups",
            got: params.groups,
            reason: "must divide the channel count",
        });
    }
    for (operand, t) in [("gamma", params.gamma), ("beta", params.beta)] {
        if t.shape != [c] {
            return Err(CpuError::ShapeMismatch {
                op,
                operand,
                expected: vec![c],
                got: t.shape.clone(),
            });
        }
    }
    let mut out = FeatureMap::zeros(c, x.height, x.width);
    let group_len = (c / params.groups) * x.plane();
    if group_len == 0 {
        return Ok(out);
    }
    let plane = x.plane();
    par::chunks_mut(&mut out.data, group_len, |gi, dst| {
        // One group (a few hundred KiB at most sizes) is read three times while it is in cache.
        let src = &x.data[gi * group_len..(gi + 1) * group_len];
        let (mean, rstd) = moments(src, params.eps);
        let c0 = gi * (c / params.groups);
        for (ci, (d, s)) in dst
            .chunks_exact_mut(plane)
            .zip(src.chunks_exact(plane))
            .enumerate()
        {
            // Fold normalisation and affine into one multiply-add per value (as PyTorch does).
            let scale = rstd * params.gamma.data[c0 + ci];
            let shift = params.beta.data[c0 + ci] - mean * scale;
            affine_map(d, s, (scale, shift), params.swish);
        }
    });
    Ok(out)
}

/// Mean and `1 / sqrt(var + eps)` of `data`, two-pass; f32 partial sums over short runs
/// (vectorised) are combined in f64, so large groups lose no precision.
fn moments(data: &[f32], eps: f32) -> (f32, f32) {
    let n = data.len() as f64;
    let mean = (sum_runs(data, f32::NAN) / n) as f32;
    // Second pass about the mean: no cancellation between E[x²] and E[x]².
    let var = sum_runs(data, mean) / n;
    (mean, (1.0 / (var + eps as f64).sqrt()) as f32)
}

/// `Σ v` when `center` is NaN, else `Σ (v − center)²`.
fn sum_runs(data: &[f32], center: f32) -> f64 {
    const RUN: usize = 256;
    let mut total = 0.0f64;
    for run in data.chunks(RUN) {
        // Eight independent lanes so the compiler can keep them in one vector register.
        let mut acc = [0.0f32; 8];
        let mut chunks = run.chunks_exact(8);
        for c in &mut chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += if center.is_nan() {
                    v
                } else {
                    (v - center) * (v - center)
                };
            }
        }
        let tail: f32 = chunks
            .remainder()
            .iter()
            .map(|&v| {
                if center.is_nan() {
                    v
                } else {
                    (v - center) * (v - center)
                }
            })
            .sum();
        total += (acc.iter().sum::<f32>() + tail) as f64;
    }
    total
}
