// The nearest entry per position from the per-split winners of codebook_search.wgsl: args and
// dists are [image][split][position]; the smallest distance wins, and on a tie the earlier
// split, whose entries all have lower indices, so ties still go to the lowest index.

struct Params {
    positions: u32,
    splits: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> args: array<u32>;
@group(0) @binding(2) var<storage, read> dists: array<f32>;
@group(0) @binding(3) var<storage, read_write> tokens: array<u32>;

// Batches: workgroup z is the image.
@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let n = P.positions;
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    if i >= n {
        return;
    }
    let sb = wg.z * P.splits * n;
    var best = dists[sb + i];
    var arg = args[sb + i];
    for (var s = 1u; s < P.splits; s++) {
        let d = dists[sb + s * n + i];
        if d < best {
            best = d;
            arg = args[sb + s * n + i];
        }
    }
    tokens[wg.z * n + i] = arg;
}
