//! 3×3 stride-1 convolution by Winograd's F(2×2, 3×3): 16 multiplies per 2×2 output tile
//! instead of 36, done as 16 GEMMs over blocks of tiles.
//!
//! The transforms only add, subtract and halve, so results match the direct convolution to
//! within a few float roundings (tested against the naive reference).

use hvq_spec::{FeatureMap, Tensor};

use super::gemm::{Dims, View, ViewMut, gemm};
use crate::par::{self, SharedMut};

/// 2×2 output tiles per GEMM block: enough columns to keep the GEMMs efficient, few enough
/// that the transformed block (`16 × channels × TILE_BLOCK` values) stays near cache.
const TILE_BLOCK: usize = 128;

/// Whether Winograd pays off: tiny channel counts (the RGB `conv_in`/`conv_out`) leave the
/// 16 GEMMs too thin to amortise the transforms.
pub(crate) fn worthwhile(cin: usize, cout: usize) -> bool {
    cin >= 16 && cout >= 16
}

/// Kernel transform `U = G g Gᵀ` for every (out, in) pair, laid out `[16][cout][cin]`.
fn kernel_transform(weight: &Tensor) -> Vec<f32> {
    let (cout, cin) = (weight.shape[0], weight.shape[1]);
    let mut u = vec![0.0f32; 16 * cout * cin];
    for (pair, g) in weight.data.chunks_exact(9).enumerate() {
        // G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]] applied to rows, then columns.
        let mut gg = [[0.0f32; 3]; 4];
        for c in 0..3 {
            let (a, b, d) = (g[c], g[3 + c], g[6 + c]);
            gg[0][c] = a;
            gg[1][c] = 0.5 * (a + b + d);
            gg[2][c] = 0.5 * (a - b + d);
            gg[3][c] = d;
        }
        for (r, row) in gg.iter().enumerate() {
            let (a, b, d) = (row[0], row[1], row[2]);
            let vals = [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
            for (c, v) in vals.into_iter().enumerate() {
                u[(r * 4 + c) * cout * cin + pair] = v;
            }
        }
    }
    u
}

/// Sizes shared by the transforms of one call.
#[derive(Clone, Copy)]
struct Geom {
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    /// Tiles per row (`ceil(w / 2)`).
    tw: usize,
}

/// `out += conv3x3(x, weight)` with `Same` padding (bias is the caller's: `out` arrives
/// seeded with it). `weight` is `[cout, cin, 3, 3]`, `out` is `cout × h × w`.
pub(crate) fn conv3x3_accumulate(x: &FeatureMap, weight: &Tensor, out: &mut FeatureMap) {
    let g = Geom {
        cin: x.channels,
        cout: weight.shape[0],
        h: x.height,
        w: x.width,
        tw: x.width.div_ceil(2),
    };
    let th = g.h.div_ceil(2);
    let u = kernel_transform(weight);
    let rows = TILE_BLOCK
        .div_ceil(g.tw)
        .clamp(1, th.div_ceil(2 * par::threads()).max(1));
    let dst = SharedMut::new(&mut out.data);
    let block = rows * g.tw;
    par::for_each_init(
        th.div_ceil(rows),
        || {
            (
                vec![0.0f32; 16 * g.cin * block],
                vec![0.0f32; 16 * g.cout * block],
                vec![0.0f32; 4 * (2 * g.tw + 2)],
            )
        },
        |(v, m, bufs), b| {
            let (ty0, ty1) = (b * rows, ((b + 1) * rows).min(th));
            let n = (ty1 - ty0) * g.tw;
            input_transform(x, g, (ty0, ty1), &mut v[..16 * g.cin * n], bufs);
            for xi in 0..16 {
                let lhs = View {
                    ptr: u[xi * g.cout * g.cin..].as_ptr(),
                    rs: g.cin as isize,
                    cs: 1,
                };
                let rhs = View {
                    ptr: v[xi * g.cin * n..].as_ptr(),
                    rs: n as isize,
                    cs: 1,
                };
                let d = ViewMut {
                    ptr: m[xi * g.cout * n..].as_mut_ptr(),
                    rs: n as isize,
                    cs: 1,
                };
                // SAFETY: U[ξ] is cout × cin, V[ξ] cin × n and M[ξ] cout × n, inside their buffers.
                unsafe {
                    gemm(
                        Dims {
                            m: g.cout,
                            n,
                            k: g.cin,
                        },
                        d,
                        lhs,
                        rhs,
                        false,
                    )
                };
            }
            output_transform(&m[..16 * g.cout * n], g, (ty0, ty1), dst);
        },
    );
}

/// `V = Bᵀ d B` for every 4×4 input patch of tile rows `ty0..ty1`, laid out `[16][cin][n]`.
fn input_transform(
    x: &FeatureMap,
    g: Geom,
    (ty0, ty1): (usize, usize),
    v: &mut [f32],
    bufs: &mut [f32],
) {
    let n = (ty1 - ty0) * g.tw;
    let pw = 2 * g.tw + 2;
    let plane = g.h * g.w;
    for ci in 0..g.cin {
        let src = &x.data[ci * plane..(ci + 1) * plane];
        for ty in ty0..ty1 {
            // Patch rows 2ty−1 .. 2ty+2, each zero-padded by one column left and enough right.
            let mut r = [[].as_slice(); 4];
            for (i, chunk) in bufs.chunks_exact_mut(pw).enumerate() {
                let iy = (2 * ty + i) as isize - 1;
                chunk.fill(0.0);
                if iy >= 0 && (iy as usize) < g.h {
                    chunk[1..=g.w]
                        .copy_from_slice(&src[iy as usize * g.w..(iy as usize + 1) * g.w]);
                }
            }
            for (i, chunk) in bufs.chunks_exact(pw).enumerate() {
                r[i] = chunk;
            }
            let col0 = (ty - ty0) * g.tw;
            // Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]] on rows …
            for k in 0..4 {
                let row = |j: usize| match k {
                    0 => r[0][j] - r[2][j],
                    1 => r[1][j] + r[2][j],
                    2 => r[2][j] - r[1][j],
                    _ => r[1][j] - r[3][j],
                };
                // … then on columns, tile by tile.
                for tx in 0..g.tw {
                    let (a, b, c, d) = (
                        row(2 * tx),
                        row(2 * tx + 1),
                        row(2 * tx + 2),
                        row(2 * tx + 3),
                    );
                    let t = col0 + tx;
                    let base = (k * 4 * g.cin + ci) * n + t;
                    let step = g.cin * n;
                    v[base] = a - c;
                    v[base + step] = b + c;
                    v[base + 2 * step] = c - b;
                    v[base + 3 * step] = b - d;
                }
            }
        }
    }
}

/// `out += Aᵀ M A` for every tile of rows `ty0..ty1`, dropping outputs past the map's edge.
// `l` indexes two rows of `q` and four taps of `m` at once: the index reads like the matrix product.
#[allow(clippy::needless_range_loop)]
fn output_transform(m: &[f32], g: Geom, (ty0, ty1): (usize, usize), dst: SharedMut) {
    let n = (ty1 - ty0) * g.tw;
    let plane = g.h * g.w;
    let mut q = vec![[0.0f32; 4]; 2 * g.tw];
    for co in 0..g.cout {
        for ty in ty0..ty1 {
            let col0 = (ty - ty0) * g.tw;
            let at = |xi: usize, tx: usize| m[(xi * g.cout + co) * n + col0 + tx];
            // Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]] on rows …
            for tx in 0..g.tw {
                for l in 0..4 {
                    let (a, b, c, d) = (at(l, tx), at(4 + l, tx), at(8 + l, tx), at(12 + l, tx));
                    q[2 * tx][l] = a + b + c;
                    q[2 * tx + 1][l] = b - c - d;
                }
            }
            // … then on columns, written straight to the output rows 2ty and 2ty+1.
            for i in 0..2 {
                let oy = 2 * ty + i;
                if oy >= g.h {
                    break;
                }
                // SAFETY: output rows 2·ty0 .. 2·ty1 belong to this block alone.
                let row = unsafe {
                    std::slice::from_raw_parts_mut(dst.ptr().add(co * plane + oy * g.w), g.w)
                };
                for tx in 0..g.tw {
                    let p = q[2 * tx + i];
                    row[2 * tx] += p[0] + p[1] + p[2];
                    if 2 * tx + 1 < g.w {
                        row[2 * tx + 1] += p[1] - p[2] - p[3];
                    }
                }
            }
        }
    }
}
