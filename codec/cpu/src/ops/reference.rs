//! Naive, obviously-correct versions of the fast ops, for tests only.

use hvq_spec::{FeatureMap, Tensor};

use super::{AttnWeights, Conv2dParams, GroupNormParams, Padding};

/// Direct six-loop convolution in f64.
pub(crate) fn conv2d(x: &FeatureMap, w: &Tensor, b: &Tensor, p: Conv2dParams) -> FeatureMap {
    assert!(
        !p.upsample,
        "the reference takes the up-sampled input itself"
    );
    let (cout, cin, k) = (w.shape[0], w.shape[1], w.shape[2]);
    let (lo, hi) = match p.padding {
        Padding::Same => (k / 2, k / 2),
        Padding::DownsampleRightBottom => (0, 1),
    };
    let hout = (x.height + lo + hi - k) / p.stride + 1;
    let wout = (x.width + lo + hi - k) / p.stride + 1;
    let mut out = FeatureMap::zeros(cout, hout, wout);
    for co in 0..cout {
        for oy in 0..hout {
            for ox in 0..wout {
                let mut acc = b.data[co] as f64;
                for ci in 0..cin {
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * p.stride + ky) as isize - lo as isize;
                            let ix = (ox * p.stride + kx) as isize - lo as isize;
                            if iy < 0 || ix < 0 || iy >= x.height as isize || ix >= x.width as isize
                            {
                                continue;
                            }
                            let wv = w.data[((co * cin + ci) * k + ky) * k + kx] as f64;
                            acc += wv * x.at(ci, iy as usize, ix as usize) as f64;
                        }
                    }
                }
                out.data[(co * hout + oy) * wout + ox] = acc as f32;
            }
        }
    }
    out
}

/// GroupNorm (+ swish) straight from the definition, in f64.
pub(crate) fn group_norm(x: &FeatureMap, p: GroupNormParams<'_>) -> FeatureMap {
    let cg = x.channels / p.groups;
    let mut out = x.clone();
    for g in 0..p.groups {
        let vals: Vec<f64> = (g * cg..(g + 1) * cg)
            .flat_map(|c| {
                x.data[c * x.plane()..(c + 1) * x.plane()]
                    .iter()
                    .map(|&v| v as f64)
            })
            .collect();
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        let var = vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / vals.len() as f64;
        for c in g * cg..(g + 1) * cg {
            for i in 0..x.plane() {
                let v = (x.data[c * x.plane() + i] as f64 - mean) / (var + p.eps as f64).sqrt();
                let v = v * p.gamma.data[c] as f64 + p.beta.data[c] as f64;
                let v = if p.swish { v / (1.0 + (-v).exp()) } else { v };
                out.data[c * x.plane() + i] = v as f32;
            }
        }
    }
    out
}

/// Attention with the full positions² weight matrix, in f64.
pub(crate) fn attention(x: &FeatureMap, w: AttnWeights<'_>) -> FeatureMap {
    let h = group_norm(x, w.norm_params());
    let same = Conv2dParams::SAME;
    let q = conv2d(&h, w.q.weight, w.q.bias, same);
    let k = conv2d(&h, w.k.weight, w.k.bias, same);
    let v = conv2d(&h, w.v.weight, w.v.bias, same);
    let (c, n) = (x.channels, x.plane());
    let mut mixed = FeatureMap::zeros(c, x.height, x.width);
    for i in 0..n {
        let logits: Vec<f64> = (0..n)
            .map(|j| {
                (0..c)
                    .map(|ch| q.data[ch * n + i] as f64 * k.data[ch * n + j] as f64)
                    .sum::<f64>()
                    / (c as f64).sqrt()
            })
            .collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        for ch in 0..c {
            mixed.data[ch * n + i] = ((0..n)
                .map(|j| e[j] * v.data[ch * n + j] as f64)
                .sum::<f64>()
                / sum) as f32;
        }
    }
    let mut out = conv2d(&mixed, w.proj_out.weight, w.proj_out.bias, same);
    out.data
        .iter_mut()
        .zip(&x.data)
        .for_each(|(o, xv)| *o += xv);
    out
}

/// Nearest code by the true squared distance, lowest index on ties, in f64.
pub(crate) fn nearest_codes(p: &FeatureMap, codebook: &Tensor) -> Vec<u32> {
    let d = p.channels;
    (0..p.plane())
        .map(|pos| {
            let dist = |e: &[f32]| {
                (0..d)
                    .map(|c| (p.data[c * p.plane() + pos] as f64 - e[c] as f64).powi(2))
                    .sum::<f64>()
            };
            let mut best = (f64::INFINITY, 0u32);
            for (i, e) in codebook.data.chunks_exact(d).enumerate() {
                let dd = dist(e);
                if dd < best.0 {
                    best = (dd, i as u32);
                }
            }
            best.1
        })
        .collect()
}
