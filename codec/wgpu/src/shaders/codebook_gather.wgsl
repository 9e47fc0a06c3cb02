// Codebook look-up: out[d, i] = codebook[tokens[i], d], a [D, N] map for the decoder.
// Token indices are checked against the codebook size on the host before upload; the min()
// only keeps a bad index from reading outside the buffer.

struct Params {
    dim: u32,
    positions: u32,
    entries: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;
@group(0) @binding(2) var<storage, read> codebook: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<act>;

// Batches: workgroup z is the image; images are consecutive blocks of every buffer.
@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    if i >= P.dim * P.positions {
        return;
    }
    let d = i / P.positions;
    let pos = i % P.positions;
    let t = min(tokens[wg.z * P.positions + pos], P.entries - 1u);
    out[wg.z * P.dim * P.positions + i] = act(codebook[t * P.dim + d]);
}
