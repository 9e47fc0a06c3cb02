//! GroupNorm (optionally fused with swish) and the swish activation.

use hvq_spec::{FeatureMap, Tensor};

use crate::CpuError;
use crate::par;

/// `exp(x)` accurate to about 2 ulp over the f32 range, written branch-free so loops over
/// slices vectorise (libm's `expf` does not, and swish runs on every activation).
#[inline(always)]
pub(crate) fn exp_approx(x: f32) -> f32 {
    // Cody–Waite range reduction x = n·ln2 + r, |r| <= ln2/2, then a degree-6 polynomial
    // (the Cephes `expf` coefficients) and the 2^n scale built in the exponent bits.
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E).round();
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = 1.987_569_1e-4f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5.000_000_1e-1;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `x · sigmoid(x)`.
#[inline(always)]
pub(crate) fn swish(x: f32) -> f32 {
    x / (1.0 + exp_approx(-x))
}

/// Applies swish `x · sigmoid(x)` to every value.
pub fn swish_inplace(x: &mut FeatureMap) {
    let chunk = x.plane().max(1);
    par::chunks_mut(&mut x.data, chunk, |_, c| c.iter_mut().for_each(|v| *v = swish(*v)));
}

/// Parameters of a [`group_norm`].
#[derive(Debug, Clone, Copy)]
pub struct GroupNormParams<'a> {
    /// Per-channel scale.
    pub gamma: &'a Tensor,
    /// Per-channel shift.
    pub beta: &'a Tensor,
    /// Number of groups; must divide the channel count.
    pub groups: usize,
    /// Added to the variance (the model uses 1e-6).
    pub eps: f32,
    /// Whether to apply swish to the result (the fused `GN → swish` of every ResBlock).
    pub swish: bool,
}

/// PyTorch's `GroupNorm` (biased variance over each group's channels and positions), then
/// swish when `params.swish`.
pub fn group_norm(x: &FeatureMap, params: GroupNormParams<'_>) -> Result<FeatureMap, CpuError> {
    let c = x.channels;
    let op = "group_norm";
    if params.groups == 0 || c % params.groups != 0 {
        return Err(CpuError::Unsupported { op, param: "groups", got: params.groups, reason: "must divide the channel count" });
    }
    for (operand, t) in [("gamma", params.gamma), ("beta", params.beta)] {
        if t.shape != [c] {
            return Err(CpuError::ShapeMismatch { op, operand, expected: vec![c], got: t.shape.clone() });
        }
    }
    let mut out = x.clone();
    let group_len = (c / params.groups) * x.plane();
    if group_len == 0 {
        return Ok(out);
    }
    let plane = x.plane();
    par::chunks_mut(&mut out.data, group_len, |gi, data| {
        let (mean, rstd) = moments(data, params.eps);
        let c0 = gi * (c / params.groups);
        for (ci, ch) in data.chunks_exact_mut(plane).enumerate() {
            // Fold normalisation and affine into one multiply-add per value.
            let scale = rstd * params.gamma.data[c0 + ci];
            let shift = params.beta.data[c0 + ci] - mean * scale;
            if params.swish {
                ch.iter_mut().for_each(|v| *v = swish(*v * scale + shift));
            } else {
                ch.iter_mut().for_each(|v| *v = *v * scale + shift);
            }
        }
    });
    Ok(out)
}

/// Mean and `1 / sqrt(var + eps)` of `data`, two-pass in f64 so large groups lose no precision.
fn moments(data: &[f32], eps: f32) -> (f32, f32) {
    let n = data.len() as f64;
    let mean = data.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = data.iter().map(|&v| (v as f64 - mean) * (v as f64 - mean)).sum::<f64>() / n;
    (mean as f32, (1.0 / (var + eps as f64).sqrt()) as f32)
}
