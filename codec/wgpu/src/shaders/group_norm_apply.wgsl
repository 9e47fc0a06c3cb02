// GroupNorm application from the per-channel coefficients of group_norm_stats, with optional
// swish. The model fuses this into the following convolution; this kernel serves callers that
// need the normalized map itself.

override SWISH: bool = false;

struct Params {
    channels: u32,
    plane: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<act>;
// mean[channels], scale[channels], shift[channels].
@group(0) @binding(2) var<storage, read> norm: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<act>;

// Batches: workgroup z is the image; images are consecutive blocks of every buffer.
@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    // Two-dimensional grid: one dimension alone caps at 65535 workgroups.
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    if i >= P.channels * P.plane {
        return;
    }
    let at = wg.z * P.channels * P.plane + i;
    let c = wg.z * 3u * P.channels + i / P.plane;
    var v = fma(f32(x[at]) - norm[c], norm[P.channels + c], norm[2u * P.channels + c]);
    if SWISH {
        v = v / (1.0 + exp(-v));
    }
    out[at] = act(v);
}
