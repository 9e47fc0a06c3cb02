// Nearest codebook entry per position by squared L2 distance, ties to the LOWEST index.
// p is a [D, N] map (the projected latent), codebook is [K, D]. One invocation per position;
// entries are visited in tiles of 16, their components staged through workgroup memory 64 at a
// time, so the K x N distance matrix never exists. Distances are accumulated as sum (p - e)^2
// (not |p|^2 - 2 p.e + |e|^2, which cancels) and compared with a strict `<` in increasing index
// order, which is what makes ties go to the lowest index.

struct Params {
    dim: u32,
    positions: u32,
    entries: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> p: array<f32>;
@group(0) @binding(2) var<storage, read> codebook: array<f32>;
@group(0) @binding(3) var<storage, read_write> tokens: array<u32>;

const QB: u32 = 64u;
const EB: u32 = 16u;
const DB: u32 = 64u;

var<workgroup> tile: array<f32, 1024>; // [DB][EB]

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let n = P.positions;
    let i = (wg.y * nwg.x + wg.x) * QB + li;
    let valid = i < n;
    var best = 3.4e38;
    var best_index = 0u;
    for (var e0 = 0u; e0 < P.entries; e0 += EB) {
        var dist: array<f32, 16>;
        for (var d0 = 0u; d0 < P.dim; d0 += DB) {
            for (var r = 0u; r < (DB * EB) / QB; r++) {
                let e = li + r * QB;
                let dd = e % DB;
                let j = e / DB;
                var v = 0.0;
                if e0 + j < P.entries && d0 + dd < P.dim {
                    v = codebook[(e0 + j) * P.dim + d0 + dd];
                }
                tile[dd * EB + j] = v;
            }
            workgroupBarrier();
            if valid {
                for (var dd = 0u; dd < min(DB, P.dim - d0); dd++) {
                    let q = p[(d0 + dd) * n + i];
                    for (var j = 0u; j < EB; j++) {
                        let diff = q - tile[dd * EB + j];
                        dist[j] = fma(diff, diff, dist[j]);
                    }
                }
            }
            workgroupBarrier();
        }
        for (var j = 0u; j < EB; j++) {
            if e0 + j < P.entries && dist[j] < best {
                best = dist[j];
                best_index = e0 + j;
            }
        }
    }
    if valid {
        tokens[i] = best_index;
    }
}
