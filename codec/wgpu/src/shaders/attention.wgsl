// Single-head self-attention over all positions with an online softmax (Milakov & Gimelshein;
// the FlashAttention recurrence): memory stays O(channels x positions), never positions^2.
// qkv holds q, k and v as three consecutive [C, N] maps (one fused 1x1 convolution made them).
// One invocation per query position; keys are visited in blocks of 16 whose k (then v) values
// are staged through workgroup memory 64 channels at a time. The running output lives in `out`
// and is rescaled whenever the running maximum grows; it is divided by the softmax sum at the end.
// q, k, v and the output are `act` (f32 or f16); scores, the softmax and each block's update are
// computed in f32.

struct Params {
    channels: u32,
    positions: u32,
    // 1 / sqrt(channels).
    scale: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> qkv: array<act>;
@group(0) @binding(2) var<storage, read_write> out: array<act>;

const QB: u32 = 64u;
const KB: u32 = 16u;
const CB: u32 = 64u;

var<workgroup> tile: array<f32, 1024>; // [CB][KB]
// Where this workgroup's image starts in qkv and in out.
var<private> qb: u32;
var<private> ob: u32;

// Stages channels c0..c0+CB of keys kb..kb+KB of map `which` (1 = k, 2 = v), zero-filled past the ends.
fn stage(li: u32, which: u32, c0: u32, kb: u32) {
    let n = P.positions;
    for (var r = 0u; r < (CB * KB) / QB; r++) {
        let e = li + r * QB;
        let j = e % KB;
        let cc = e / KB;
        var v = 0.0;
        if c0 + cc < P.channels && kb + j < n {
            v = f32(qkv[qb + (which * P.channels + c0 + cc) * n + kb + j]);
        }
        tile[cc * KB + j] = v;
    }
}

// Batches: workgroup z is the image; images are consecutive blocks of every buffer.
@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let n = P.positions;
    let c = P.channels;
    let i = wg.x * QB + li;
    let valid = i < n;
    qb = wg.z * 3u * c * n;
    ob = wg.z * c * n;
    if valid {
        for (var ch = 0u; ch < c; ch++) {
            out[ob + ch * n + i] = act(0.0);
        }
    }
    var m = -3.0e38;
    var l = 0.0;
    for (var kb = 0u; kb < n; kb += KB) {
        var s: array<f32, 16>;
        for (var c0 = 0u; c0 < c; c0 += CB) {
            stage(li, 1u, c0, kb);
            workgroupBarrier();
            if valid {
                for (var cc = 0u; cc < min(CB, c - c0); cc++) {
                    let q = f32(qkv[qb + (c0 + cc) * n + i]);
                    for (var j = 0u; j < KB; j++) {
                        s[j] = fma(q, tile[cc * KB + j], s[j]);
                    }
                }
            }
            workgroupBarrier();
        }
        var block_max = m;
        for (var j = 0u; j < KB; j++) {
            s[j] *= P.scale;
            if kb + j < n {
                block_max = max(block_max, s[j]);
            }
        }
        let correction = exp(m - block_max);
        l *= correction;
        for (var j = 0u; j < KB; j++) {
            var p = 0.0;
            if kb + j < n {
                p = exp(s[j] - block_max);
            }
            s[j] = p;
            l += p;
        }
        m = block_max;
        for (var c0 = 0u; c0 < c; c0 += CB) {
            stage(li, 2u, c0, kb);
            workgroupBarrier();
            if valid {
                for (var cc = 0u; cc < min(CB, c - c0); cc++) {
                    var acc = f32(out[ob + (c0 + cc) * n + i]) * correction;
                    for (var j = 0u; j < KB; j++) {
                        acc = fma(s[j], tile[cc * KB + j], acc);
                    }
                    out[ob + (c0 + cc) * n + i] = act(acc);
                }
            }
            workgroupBarrier();
        }
    }
    if valid {
        for (var ch = 0u; ch < c; ch++) {
            out[ob + ch * n + i] = act(f32(out[ob + ch * n + i]) / l);
        }
    }
}
