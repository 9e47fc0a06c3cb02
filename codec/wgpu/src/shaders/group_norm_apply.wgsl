// GroupNorm application from precomputed statistics (group_norm_stats), with optional swish.
// The model fuses this into the following convolution; this kernel serves callers that need
// the normalized map itself.

override SWISH: bool = false;

struct Params {
    channels: u32,
    plane: u32,
    groups: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
// gamma[channels] then beta[channels].
@group(0) @binding(3) var<storage, read> affine: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    // Two-dimensional grid: one dimension alone caps at 65535 workgroups.
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    if i >= P.channels * P.plane {
        return;
    }
    let c = i / P.plane;
    let g = c / (P.channels / P.groups);
    var v = (x[i] - stats[2u * g]) * stats[2u * g + 1u] * affine[c] + affine[P.channels + c];
    if SWISH {
        v = v / (1.0 + exp(-v));
    }
    out[i] = v;
}
