// GroupNorm statistics: one workgroup per group. In CHW layout a group's channels are one
// contiguous range, so the workgroup strides over it. Two passes (mean, then the mean of squared
// deviations) rather than E[x^2] - E[x]^2, which cancels badly for groups with a large mean.
// Writes per-channel coefficients so consumers need no group arithmetic:
//   norm[c] = group mean, norm[C + c] = gamma[c] / sqrt(var + eps), norm[2C + c] = beta[c],
// and the normalized value is (x - norm[c]) * norm[C + c] + norm[2C + c].
// The input is `act` (f32 or f16); sums and coefficients are f32 in either precision.

struct Params {
    // Elements per group: channels_per_group * height * width.
    count: u32,
    eps: f32,
    channels: u32,
    channels_per_group: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<act>;
// gamma[channels] then beta[channels].
@group(0) @binding(2) var<storage, read> affine: array<f32>;
@group(0) @binding(3) var<storage, read_write> norm: array<f32>;

const WG: u32 = 256u;
var<workgroup> partial: array<f32, 256>;

fn reduce_sum(li: u32, value: f32) -> f32 {
    partial[li] = value;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if li < s {
            partial[li] += partial[li + s];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

// Batches: workgroup x is the group, z the image; images are consecutive blocks of x and norm.
@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let base = (wg.z * P.channels / P.channels_per_group + wg.x) * P.count;
    var s = 0.0;
    for (var i = li; i < P.count; i += WG) {
        s += f32(x[base + i]);
    }
    let mean = reduce_sum(li, s) / f32(P.count);
    var q = 0.0;
    for (var i = li; i < P.count; i += WG) {
        let d = f32(x[base + i]) - mean;
        q = fma(d, d, q);
    }
    let rstd = 1.0 / sqrt(reduce_sum(li, q) / f32(P.count) + P.eps);
    for (var j = li; j < P.channels_per_group; j += WG) {
        let c = wg.x * P.channels_per_group + j;
        let nb = wg.z * 3u * P.channels;
        norm[nb + c] = mean;
        norm[nb + P.channels + c] = affine[c] * rstd;
        norm[nb + 2u * P.channels + c] = affine[P.channels + c];
    }
}
