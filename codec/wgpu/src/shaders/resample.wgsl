// Spatial re-sampling of a CHW map, one output element per invocation:
//   MODE 0: 2x2 average pool, stride 2 (PyTorch AvgPool2d(2): odd trailing rows/columns dropped);
//   MODE 1: subset sampling x[:, :, 0::2, 0::2];
//   MODE 2: nearest-neighbour x2 up-sampling.
// The caller sizes the output (h_out, w_out) to match the mode.

override MODE: u32 = 0u;

struct Params {
    channels: u32,
    h_in: u32,
    w_in: u32,
    h_out: u32,
    w_out: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<act>;
@group(0) @binding(2) var<storage, read_write> out: array<act>;

// Batches: workgroup z is the image; images are consecutive blocks of every buffer.
@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    let plane_out = P.h_out * P.w_out;
    if i >= P.channels * plane_out {
        return;
    }
    let c = i / plane_out;
    let oy = (i % plane_out) / P.w_out;
    let ox = i % P.w_out;
    let base = (wg.z * P.channels + c) * P.h_in * P.w_in;
    var v = 0.0;
    if MODE == 0u {
        let r0 = base + 2u * oy * P.w_in + 2u * ox;
        let r1 = r0 + P.w_in;
        v = ((f32(x[r0]) + f32(x[r0 + 1u])) + (f32(x[r1]) + f32(x[r1 + 1u]))) * 0.25;
    } else if MODE == 1u {
        v = f32(x[base + 2u * oy * P.w_in + 2u * ox]);
    } else {
        v = f32(x[base + (oy / 2u) * P.w_in + ox / 2u]);
    }
    out[wg.z * P.channels * plane_out + i] = act(v);
}
