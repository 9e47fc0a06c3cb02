// 2-D convolution (PyTorch semantics, weights OIHW) as an implicit matrix product:
//   out[co, p] = bias[co] + sum_k w[co, k] * col[k, p],  k = (ci, ky, kx), p = (oy, ox).
// A workgroup computes a 64 (output channels) x 64 (output pixels) tile; the reduction runs in
// steps of 16 through workgroup memory (2 x 4 KiB), each invocation owning a 4 x 4 block.
// Fusions, chosen per pipeline with override constants:
//   NORM      1: GroupNorm (statistics precomputed by group_norm_stats) applied while loading the
//             input, 2: GroupNorm then swish; zero padding pads the *normalized* activation, as
//             PyTorch does;
//   UPSAMPLE  nearest x2 up-sampling of the input (the conv reads the input at half coordinates);
//   RESIDUAL  adds `residual[co, p]` to the result (ResBlock skip, attention residual).
// Padding is given per side (top/left) so "same" padding and the encoder's asymmetric
// right/bottom down-sampling pad are the same kernel: anything outside the input reads as zero.

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
    groups: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;
// mean and 1/std per group, interleaved.
@group(0) @binding(5) var<storage, read> stats: array<f32>;
// gamma[cin] then beta[cin].
@group(0) @binding(6) var<storage, read> affine: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> a_tile: array<f32, 1024>; // [TK][TM] weights
var<workgroup> b_tile: array<f32, 1024>; // [TK][TN] input columns

fn load_input(ci: u32, iy: i32, ix: i32) -> f32 {
    var h = P.h_in;
    var wd = P.w_in;
    if UPSAMPLE {
        h = h * 2u;
        wd = wd * 2u;
    }
    if iy < 0 || ix < 0 || iy >= i32(h) || ix >= i32(wd) {
        return 0.0;
    }
    var y = u32(iy);
    var xx = u32(ix);
    if UPSAMPLE {
        y = y / 2u;
        xx = xx / 2u;
    }
    var v = x[(ci * P.h_in + y) * P.w_in + xx];
    if NORM > 0u {
        let g = ci / (P.cin / P.groups);
        v = (v - stats[2u * g]) * stats[2u * g + 1u] * affine[ci] + affine[P.cin + ci];
        if NORM == 2u {
            v = v / (1.0 + exp(-v));
        }
    }
    return v;
}

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let n_pix = P.h_out * P.w_out;
    let taps = KS * KS;
    let kdim = P.cin * taps;
    let m0 = wg.y * TM;
    let n0 = wg.x * TN;
    var acc: array<f32, 16>;
    for (var k0 = 0u; k0 < kdim; k0 += TK) {
        for (var r = 0u; r < 4u; r++) {
            // Consecutive invocations read consecutive k of one weight row.
            let e = li + r * 256u;
            let kk = e % TK;
            let mm = e / TK;
            let co = m0 + mm;
            let k = k0 + kk;
            var v = 0.0;
            if co < P.cout && k < kdim {
                v = w[co * kdim + k];
            }
            a_tile[kk * TM + mm] = v;
        }
        for (var r = 0u; r < 4u; r++) {
            // Consecutive invocations read consecutive output pixels of one tap.
            let e = li + r * 256u;
            let nn = e % TN;
            let kk = e / TN;
            let p = n0 + nn;
            let k = k0 + kk;
            var v = 0.0;
            if p < n_pix && k < kdim {
                let ci = k / taps;
                let tap = k % taps;
                let oy = p / P.w_out;
                let ox = p % P.w_out;
                let iy = i32(oy * P.stride + tap / KS) - i32(P.pad_top);
                let ix = i32(ox * P.stride + tap % KS) - i32(P.pad_left);
                v = load_input(ci, iy, ix);
            }
            b_tile[kk * TN + nn] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = a_tile[kk * TM + lid.y + 16u * i];
                b[i] = b_tile[kk * TN + lid.x + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(a[i], b[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let co = m0 + lid.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let p = n0 + lid.x + 16u * j;
            if co < P.cout && p < n_pix {
                var v = acc[i * 4u + j] + bias[co];
                if RESIDUAL {
                    v += residual[co * n_pix + p];
                }
                out[co * n_pix + p] = v;
            }
        }
    }
}
