// Per-channel affine map out = x * scale[c] + shift[c]: the input normalization (x - mean) / std
// and the output de-normalization x * std + mean, the latter clamped to [0, 1] (CLAMP).

override CLAMP: bool = false;

struct Params {
    channels: u32,
    plane: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<act>;
// scale[channels] then shift[channels].
@group(0) @binding(2) var<storage, read> coef: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<act>;

// Batches: workgroup z is the image; images are consecutive blocks of every buffer.
@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    if i >= P.channels * P.plane {
        return;
    }
    let c = i / P.plane;
    let at = wg.z * P.channels * P.plane + i;
    var v = fma(f32(x[at]), coef[c], coef[P.channels + c]);
    if CLAMP {
        v = clamp(v, 0.0, 1.0);
    }
    out[at] = act(v);
}
