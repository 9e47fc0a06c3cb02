// 2-D convolution (PyTorch semantics, weights OIHW) as an implicit matrix product:
//   out[co, p] = bias[co] + sum_k w[co, k] * col[k, p],  k = (ci, ky, kx), p = (oy, ox).
// A workgroup of 8 x 8 invocations computes a 64 (output channels) x 64 (output pixels) tile;
// the reduction runs in steps of 32 through workgroup memory (2 x 8 KiB, the portable maximum).
// Each invocation owns 8 channels x 8 adjacent pixels in sixteen vec4 accumulators, so every
// four workgroup-memory reads feed 64 multiply-adds (register blocking: reads of workgroup
// memory are what CPU drivers such as lavapipe pay most for). No dynamically indexed private
// arrays and no divisions by run-time values inside the reduction loop.
// Fusions, chosen per pipeline with override constants:
//   NORM      1: GroupNorm applied while loading the input, from per-channel coefficients made by
//             group_norm_stats; 2: GroupNorm then swish. Zero padding pads the *normalized*
//             activation, as PyTorch does;
//   UPSAMPLE  nearest x2 up-sampling of the input (the conv reads the input at half coordinates);
//   RESIDUAL  adds `residual[co, p]` to the result (ResBlock skip, attention residual).
// Padding is given per side (top/left) so "same" padding and the encoder's asymmetric
// right/bottom down-sampling pad are the same kernel: anything outside the input reads as zero.
// Batches: workgroup z is the image; every image's input, output, residual and GroupNorm
// coefficients are consecutive blocks of their buffers, so a batch of one is the plain case.
// Precision: activations, weights and the two tiles are `act` (f32, or f16 where the device has
// shader-f16: half the bytes through memory and workgroup memory); bias, GroupNorm coefficients
// and the accumulators stay f32, so a product of f16 inputs is summed in f32, as tensor cores do.

override KS: u32 = 3u;
override NORM: u32 = 0u;
override UPSAMPLE: bool = false;
override RESIDUAL: bool = false;

struct Params {
    cin: u32,
    h_in: u32,
    w_in: u32,
    cout: u32,
    h_out: u32,
    w_out: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<act>;
@group(0) @binding(2) var<storage, read> w: array<act>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<act>;
// Per input channel: group mean[cin], then gamma * rstd[cin], then beta[cin].
@group(0) @binding(5) var<storage, read> norm: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<act>;

const TK: u32 = 32u;

var<workgroup> a_tile: array<vec4<act>, 512>; // [TK][16] groups of 4 output channels
var<workgroup> b_tile: array<vec4<act>, 512>; // [TK][16] groups of 4 output pixels

// `xb`, `nb`: where this image's input and norm coefficients start.
fn load_input(xb: u32, nb: u32, ci: u32, iy: i32, ix: i32, h: i32, wd: i32) -> f32 {
    if iy < 0 || ix < 0 || iy >= h || ix >= wd {
        return 0.0;
    }
    var y = u32(iy);
    var xx = u32(ix);
    if UPSAMPLE {
        y = y / 2u;
        xx = xx / 2u;
    }
    var v = f32(x[xb + (ci * P.h_in + y) * P.w_in + xx]);
    if NORM > 0u {
        v = fma(v - norm[nb + ci], norm[nb + P.cin + ci], norm[nb + 2u * P.cin + ci]);
        if NORM == 2u {
            v = v / (1.0 + exp(-v));
        }
    }
    return v;
}

@compute @workgroup_size(8, 8, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let n_pix = P.h_out * P.w_out;
    let taps = KS * KS;
    let kdim = P.cin * taps;
    let m0 = wg.y * 64u;
    let n0 = wg.x * 64u;
    let xb = wg.z * P.cin * P.h_in * P.w_in;
    let nb = wg.z * 3u * P.cin;
    let ob = wg.z * P.cout * n_pix;
    var h = i32(P.h_in);
    var wd = i32(P.w_in);
    if UPSAMPLE {
        h = 2 * h;
        wd = 2 * wd;
    }

    // Loader roles, fixed for the whole reduction.
    // B: invocation li fills rows kk_b + 4r of the column tile for 4 adjacent pixels q_b*4 .. +3.
    let kk_b = li / 16u;
    let q_b = li % 16u;
    var oy: array<i32, 4>;
    var ox: array<i32, 4>;
    var p_ok: vec4<bool>;
    for (var j = 0u; j < 4u; j++) {
        let p = n0 + 4u * q_b + j;
        p_ok[j] = p < n_pix;
        oy[j] = i32((p / P.w_out) * P.stride) - i32(P.pad_top);
        ox[j] = i32((p % P.w_out) * P.stride) - i32(P.pad_left);
    }
    let oy4 = vec4<i32>(oy[0], oy[1], oy[2], oy[3]);
    let ox4 = vec4<i32>(ox[0], ox[1], ox[2], ox[3]);
    // A: invocation li fills column kk_a of the weight tile for channel groups g_a + 2r.
    let kk_a = li % 32u;
    let g_a = li / 32u;

    var c0p0 = vec4<f32>(0.0); var c0p1 = vec4<f32>(0.0);
    var c1p0 = vec4<f32>(0.0); var c1p1 = vec4<f32>(0.0);
    var c2p0 = vec4<f32>(0.0); var c2p1 = vec4<f32>(0.0);
    var c3p0 = vec4<f32>(0.0); var c3p1 = vec4<f32>(0.0);
    var c4p0 = vec4<f32>(0.0); var c4p1 = vec4<f32>(0.0);
    var c5p0 = vec4<f32>(0.0); var c5p1 = vec4<f32>(0.0);
    var c6p0 = vec4<f32>(0.0); var c6p1 = vec4<f32>(0.0);
    var c7p0 = vec4<f32>(0.0); var c7p1 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < kdim; k0 += TK) {
        for (var r = 0u; r < 8u; r++) {
            let k = k0 + kk_a;
            let g = g_a + 2u * r;
            let co = m0 + 4u * g;
            var a = vec4<f32>(0.0);
            if k < kdim {
                if co < P.cout { a.x = f32(w[co * kdim + k]); }
                if co + 1u < P.cout { a.y = f32(w[(co + 1u) * kdim + k]); }
                if co + 2u < P.cout { a.z = f32(w[(co + 2u) * kdim + k]); }
                if co + 3u < P.cout { a.w = f32(w[(co + 3u) * kdim + k]); }
            }
            a_tile[kk_a * 16u + g] = vec4<act>(a);
        }
        for (var r = 0u; r < 8u; r++) {
            let kk = kk_b + 4u * r;
            let k = k0 + kk;
            var b = vec4<f32>(0.0);
            if k < kdim {
                // Divisions by override constants compile to multiplies.
                let ci = k / taps;
                let tap = k % taps;
                let iy = oy4 + vec4<i32>(i32(tap / KS));
                let ix = ox4 + vec4<i32>(i32(tap % KS));
                if p_ok.x { b.x = load_input(xb, nb, ci, iy.x, ix.x, h, wd); }
                if p_ok.y { b.y = load_input(xb, nb, ci, iy.y, ix.y, h, wd); }
                if p_ok.z { b.z = load_input(xb, nb, ci, iy.z, ix.z, h, wd); }
                if p_ok.w { b.w = load_input(xb, nb, ci, iy.w, ix.w, h, wd); }
            }
            b_tile[kk * 16u + q_b] = vec4<act>(b);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let a0 = vec4<f32>(a_tile[kk * 16u + 2u * lid.y]);
            let a1 = vec4<f32>(a_tile[kk * 16u + 2u * lid.y + 1u]);
            let b0 = vec4<f32>(b_tile[kk * 16u + 2u * lid.x]);
            let b1 = vec4<f32>(b_tile[kk * 16u + 2u * lid.x + 1u]);
            c0p0 = fma(vec4<f32>(a0.x), b0, c0p0); c0p1 = fma(vec4<f32>(a0.x), b1, c0p1);
            c1p0 = fma(vec4<f32>(a0.y), b0, c1p0); c1p1 = fma(vec4<f32>(a0.y), b1, c1p1);
            c2p0 = fma(vec4<f32>(a0.z), b0, c2p0); c2p1 = fma(vec4<f32>(a0.z), b1, c2p1);
            c3p0 = fma(vec4<f32>(a0.w), b0, c3p0); c3p1 = fma(vec4<f32>(a0.w), b1, c3p1);
            c4p0 = fma(vec4<f32>(a1.x), b0, c4p0); c4p1 = fma(vec4<f32>(a1.x), b1, c4p1);
            c5p0 = fma(vec4<f32>(a1.y), b0, c5p0); c5p1 = fma(vec4<f32>(a1.y), b1, c5p1);
            c6p0 = fma(vec4<f32>(a1.z), b0, c6p0); c6p1 = fma(vec4<f32>(a1.z), b1, c6p1);
            c7p0 = fma(vec4<f32>(a1.w), b0, c7p0); c7p1 = fma(vec4<f32>(a1.w), b1, c7p1);
        }
        workgroupBarrier();
    }
    let p0 = n0 + 8u * lid.x;
    let co0 = m0 + 8u * lid.y;
    store(co0, p0, c0p0, c0p1, n_pix, ob);
    store(co0 + 1u, p0, c1p0, c1p1, n_pix, ob);
    store(co0 + 2u, p0, c2p0, c2p1, n_pix, ob);
    store(co0 + 3u, p0, c3p0, c3p1, n_pix, ob);
    store(co0 + 4u, p0, c4p0, c4p1, n_pix, ob);
    store(co0 + 5u, p0, c5p0, c5p1, n_pix, ob);
    store(co0 + 6u, p0, c6p0, c6p1, n_pix, ob);
    store(co0 + 7u, p0, c7p0, c7p1, n_pix, ob);
}

// Writes output channel `co` at pixels p0 .. p0 + 7 (bias, optional residual) of the image
// whose output starts at `ob`.
fn store(co: u32, p0: u32, lo: vec4<f32>, hi: vec4<f32>, n_pix: u32, ob: u32) {
    if co >= P.cout {
        return;
    }
    let b = bias[co];
    for (var j = 0u; j < 8u; j++) {
        let p = p0 + j;
        if p < n_pix {
            var v = b;
            if j < 4u {
                v += lo[j];
            } else {
                v += hi[j - 4u];
            }
            if RESIDUAL {
                v += f32(residual[ob + co * n_pix + p]);
            }
            out[ob + co * n_pix + p] = act(v);
        }
    }
}
