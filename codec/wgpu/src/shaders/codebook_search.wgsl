// Nearest codebook entry per position by squared L2 distance, ties to the LOWEST index.
// p is a [D, N] map (the projected latent), codebook is [K, D]. Each invocation owns 4 adjacent
// positions (one vec4 lane each) and compares them with tiles of 16 entries whose components are
// staged through workgroup memory 64 dimensions at a time, so the K x N distance matrix never
// exists. Sixteen vec4 accumulators (one per entry of the tile) rather than an indexed private
// array, which CPU drivers such as lavapipe spill to memory. Distances are accumulated as
// sum (p - e)^2 in dimension order (not |p|^2 - 2 p.e + |e|^2, which cancels) and compared with a
// strict `<` in increasing index order, which is what makes ties go to the lowest index.
// The latent is `act` (f32 or f16); the codebook, the distances and the argmin are f32 in either.
//
// Workgroup y splits the entries: split s searches entries [s * span, (s + 1) * span) only, so a
// small map (a coarse level, a single image) still fills a large GPU instead of one workgroup
// walking all K entries. With one split the winner goes straight to `tokens`; with several, each
// split's (index, distance) goes to `tokens` and `dists` at [image][split][position] and
// codebook_argmin.wgsl picks among them. A distance does not depend on the split that computes
// it, so the tokens are the same bits for any number of splits.

struct Params {
    dim: u32,
    positions: u32,
    entries: u32,
    /// Entries per split, a multiple of 16 (the tile).
    span: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> p: array<act>;
@group(0) @binding(2) var<storage, read> codebook: array<f32>;
@group(0) @binding(3) var<storage, read_write> tokens: array<u32>;
@group(0) @binding(4) var<storage, read_write> dists: array<f32>;

const WG: u32 = 64u;
const DB: u32 = 64u;

// tile[dd * 4 + q] holds dimension d0 + dd of entries e0 + 4q .. e0 + 4q + 3.
var<workgroup> tile: array<vec4<f32>, 256>;

// `end`: one past this split's last entry.
fn entry(e: u32, end: u32, d: u32) -> f32 {
    if e < end && d < P.dim {
        return codebook[e * P.dim + d];
    }
    return 0.0;
}

// `pb`: where this image's map starts.
fn load_p(pb: u32, i: vec4<u32>, d: u32) -> vec4<f32> {
    let n = P.positions;
    var v = vec4<f32>(0.0);
    if i.x < n { v.x = f32(p[pb + d * n + i.x]); }
    if i.y < n { v.y = f32(p[pb + d * n + i.y]); }
    if i.z < n { v.z = f32(p[pb + d * n + i.z]); }
    if i.w < n { v.w = f32(p[pb + d * n + i.w]); }
    return v;
}

// Strict `<` keeps the earlier (lower) index on ties; entries past the end never win.
fn pick(best: ptr<function, vec4<f32>>, arg: ptr<function, vec4<u32>>, d: vec4<f32>, e: u32,
        end: u32) {
    if e < end {
        let lt = d < *best;
        *best = select(*best, d, lt);
        *arg = select(*arg, vec4<u32>(e), lt);
    }
}

fn sq(v: vec4<f32>) -> vec4<f32> {
    return v * v;
}

// Batches: workgroup z is the image; images are consecutive blocks of every buffer.
@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let base = (wg.x * WG + li) * 4u;
    let pos = vec4<u32>(base, base + 1u, base + 2u, base + 3u);
    let pb = wg.z * P.dim * P.positions;
    let first = wg.y * P.span;
    let end = min(P.entries, first + P.span);
    // Invocations past the map's end still stage tiles and meet the barriers, but skip the sums.
    let live = base < P.positions;
    var best = vec4<f32>(3.4e38);
    var arg = vec4<u32>(first);
    for (var e0 = first; e0 < end; e0 += 16u) {
        var d0v = vec4<f32>(0.0); var d1v = vec4<f32>(0.0); var d2v = vec4<f32>(0.0); var d3v = vec4<f32>(0.0);
        var d4v = vec4<f32>(0.0); var d5v = vec4<f32>(0.0); var d6v = vec4<f32>(0.0); var d7v = vec4<f32>(0.0);
        var d8v = vec4<f32>(0.0); var d9v = vec4<f32>(0.0); var dav = vec4<f32>(0.0); var dbv = vec4<f32>(0.0);
        var dcv = vec4<f32>(0.0); var ddv = vec4<f32>(0.0); var dev = vec4<f32>(0.0); var dfv = vec4<f32>(0.0);
        for (var c0 = 0u; c0 < P.dim; c0 += DB) {
            for (var r = 0u; r < 4u; r++) {
                let idx = li + WG * r;
                let dd = idx % DB;
                let q = idx / DB;
                let e = e0 + 4u * q;
                let d = c0 + dd;
                tile[dd * 4u + q] = vec4<f32>(entry(e, end, d), entry(e + 1u, end, d), entry(e + 2u, end, d),
                                             entry(e + 3u, end, d));
            }
            workgroupBarrier();
            for (var dd = 0u; live && dd < min(DB, P.dim - c0); dd++) {
                let x = load_p(pb, pos, c0 + dd);
                let t0 = tile[dd * 4u];
                let t1 = tile[dd * 4u + 1u];
                let t2 = tile[dd * 4u + 2u];
                let t3 = tile[dd * 4u + 3u];
                d0v += sq(x - t0.x); d1v += sq(x - t0.y); d2v += sq(x - t0.z); d3v += sq(x - t0.w);
                d4v += sq(x - t1.x); d5v += sq(x - t1.y); d6v += sq(x - t1.z); d7v += sq(x - t1.w);
                d8v += sq(x - t2.x); d9v += sq(x - t2.y); dav += sq(x - t2.z); dbv += sq(x - t2.w);
                dcv += sq(x - t3.x); ddv += sq(x - t3.y); dev += sq(x - t3.z); dfv += sq(x - t3.w);
            }
            workgroupBarrier();
        }
        pick(&best, &arg, d0v, e0, end); pick(&best, &arg, d1v, e0 + 1u, end);
        pick(&best, &arg, d2v, e0 + 2u, end); pick(&best, &arg, d3v, e0 + 3u, end);
        pick(&best, &arg, d4v, e0 + 4u, end); pick(&best, &arg, d5v, e0 + 5u, end);
        pick(&best, &arg, d6v, e0 + 6u, end); pick(&best, &arg, d7v, e0 + 7u, end);
        pick(&best, &arg, d8v, e0 + 8u, end); pick(&best, &arg, d9v, e0 + 9u, end);
        pick(&best, &arg, dav, e0 + 10u, end); pick(&best, &arg, dbv, e0 + 11u, end);
        pick(&best, &arg, dcv, e0 + 12u, end); pick(&best, &arg, ddv, e0 + 13u, end);
        pick(&best, &arg, dev, e0 + 14u, end); pick(&best, &arg, dfv, e0 + 15u, end);
    }
    let n = P.positions;
    let tb = (wg.z * nwg.y + wg.y) * n;
    if pos.x < n { tokens[tb + pos.x] = arg.x; }
    if pos.y < n { tokens[tb + pos.y] = arg.y; }
    if pos.z < n { tokens[tb + pos.z] = arg.z; }
    if pos.w < n { tokens[tb + pos.w] = arg.w; }
    if nwg.y > 1u {
        if pos.x < n { dists[tb + pos.x] = best.x; }
        if pos.y < n { dists[tb + pos.y] = best.y; }
        if pos.z < n { dists[tb + pos.z] = best.z; }
        if pos.w < n { dists[tb + pos.w] = best.w; }
    }
}
