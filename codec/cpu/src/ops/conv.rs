//! 2-D convolution as tiled im2col + GEMM, and the fused nearest-×2-up-sampling convolution.

use hvq_spec::{FeatureMap, Tensor};

use super::gemm::{Dims, View, ViewMut, gemm};
use crate::CpuError;
use crate::par::{self, SharedMut};

pub use hvq_spec::op_params::{Conv2dParams, Padding};

/// The im2col path alone (tests compare it with the Winograd path on the same shapes).
#[cfg(test)]
pub(crate) fn conv2d_im2col(
    x: &FeatureMap,
    weight: &Tensor,
    bias: &Tensor,
    params: Conv2dParams,
) -> FeatureMap {
    let g = ConvGeom::new(x, weight, bias, params).expect("test shapes are valid");
    let mut out = FeatureMap::zeros(g.cout, g.hout, g.wout);
    run_im2col(x, weight, bias, &g, &mut out, false);
    out
}

/// Output positions one GEMM tile aims for: big enough to amortise packing the weights,
/// small enough that the im2col tile stays near the core's L2 cache.
const TILE_POSITIONS: usize = 256;

/// Geometry of one convolution, checked once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvGeom {
    cin: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pad_t: usize,
    pad_l: usize,
    cout: usize,
    hout: usize,
    wout: usize,
}

impl ConvGeom {
    fn new(
        x: &FeatureMap,
        weight: &Tensor,
        bias: &Tensor,
        params: Conv2dParams,
    ) -> Result<Self, CpuError> {
        let op = "conv2d";
        let s = &weight.shape;
        if s.len() != 4 || s[1] != x.channels || s[2] != s[3] {
            return Err(CpuError::ShapeMismatch {
                op,
                operand: "weight",
                expected: vec![
                    0,
                    x.channels,
                    s.get(2).copied().unwrap_or(0),
                    s.get(2).copied().unwrap_or(0),
                ],
                got: s.clone(),
            });
        }
        let (cout, k) = (s[0], s[2]);
        if bias.shape != [cout] {
            return Err(CpuError::ShapeMismatch {
                op,
                operand: "bias",
                expected: vec![cout],
                got: bias.shape.clone(),
            });
        }
        if k % 2 == 0 {
            return Err(CpuError::Unsupported {
                op,
                param: "kernel",
                got: k,
                reason: "kernel sizes must be odd",
            });
        }
        if !(1..=2).contains(&params.stride) {
            return Err(CpuError::Unsupported {
                op,
                param: "stride",
                got: params.stride,
                reason: "stride must be 1 or 2",
            });
        }
        let (pad_lo, pad_hi) = match params.padding {
            Padding::Same => (k / 2, k / 2),
            Padding::DownsampleRightBottom => (0, 1),
        };
        let out_len = |n: usize| {
            (n + pad_lo + pad_hi)
                .checked_sub(k)
                .map(|span| span / params.stride + 1)
        };
        let (hout, wout) = match (out_len(x.height), out_len(x.width)) {
            (Some(h), Some(w)) if x.height > 0 && x.width > 0 => (h, w),
            _ => {
                return Err(CpuError::Unsupported {
                    op,
                    param: "input size",
                    got: x.height.min(x.width),
                    reason: "the padded input must be at least as large as the kernel",
                });
            }
        };
        let geom = ConvGeom {
            cin: x.channels,
            h: x.height,
            w: x.width,
            k,
            stride: params.stride,
            pad_t: pad_lo,
            pad_l: pad_lo,
            cout,
            hout,
            wout,
        };
        Ok(geom)
    }

    fn taps(&self) -> usize {
        self.cin * self.k * self.k
    }

    /// Output rows per tile, leaving at least two tiles per thread when the map allows.
    fn rows_per_tile(&self) -> usize {
        let want = TILE_POSITIONS.div_ceil(self.wout).max(1);
        let balanced = self.hout.div_ceil(2 * par::threads()).max(1);
        want.min(balanced)
    }

    /// Whether the input itself is the im2col matrix (1×1, stride 1).
    fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1
    }
}

/// Fills `col` (`taps × n`, `n = (y1 - y0) * wout`) with the input patches of output rows `y0..y1`.
fn im2col_rows(x: &[f32], g: &ConvGeom, y0: usize, y1: usize, col: &mut [f32]) {
    let n = (y1 - y0) * g.wout;
    let mut r = 0;
    for ci in 0..g.cin {
        let plane = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ky in 0..g.k {
            for kx in 0..g.k {
                let row = &mut col[r * n..(r + 1) * n];
                r += 1;
                for (oy, seg) in (y0..y1).zip(row.chunks_exact_mut(g.wout)) {
                    let iy = (oy * g.stride + ky) as isize - g.pad_t as isize;
                    if iy < 0 || iy >= g.h as isize {
                        seg.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    fill_row(seg, src, kx as isize - g.pad_l as isize, g.stride);
                }
            }
        }
    }
}

/// `seg[x] = src[x * stride + offset]`, zero where that index falls outside `src`.
fn fill_row(seg: &mut [f32], src: &[f32], offset: isize, stride: usize) {
    let w = src.len() as isize;
    if stride == 1 {
        // Valid outputs are those with 0 <= x + offset < w: one contiguous copy.
        let lo = (-offset).clamp(0, seg.len() as isize) as usize;
        let hi = (w - offset).clamp(lo as isize, seg.len() as isize) as usize;
        seg[..lo].fill(0.0);
        seg[hi..].fill(0.0);
        let start = (lo as isize + offset) as usize;
        seg[lo..hi].copy_from_slice(&src[start..start + hi - lo]);
        return;
    }
    for (x, v) in seg.iter_mut().enumerate() {
        let ix = (x * stride) as isize + offset;
        *v = if ix >= 0 && ix < w {
            src[ix as usize]
        } else {
            0.0
        };
    }
}

/// Sets (or, when `accumulate`, adds) the bias on rows `y0..y1` of every output channel.
fn seed_bias(out: SharedMut, g: &ConvGeom, bias: &[f32], rows: (usize, usize), accumulate: bool) {
    let plane = g.hout * g.wout;
    let len = (rows.1 - rows.0) * g.wout;
    for (c, &b) in bias.iter().enumerate() {
        // SAFETY: rows y0..y1 of every channel belong to this tile alone (see `conv2d_into`).
        let seg = unsafe {
            std::slice::from_raw_parts_mut(out.ptr().add(c * plane + rows.0 * g.wout), len)
        };
        if accumulate {
            seg.iter_mut().for_each(|v| *v += b);
        } else {
            seg.fill(b);
        }
    }
}

/// 2-D convolution of `x` with an OIHW `weight` (any odd square kernel) and `bias`.
///
/// Matches PyTorch's `conv2d` (cross-correlation); with [`Padding::DownsampleRightBottom`]
/// it matches `conv2d(F.pad(x, (0, 1, 0, 1)), w, b, stride)`.
pub fn conv2d(
    x: &FeatureMap,
    weight: &Tensor,
    bias: &Tensor,
    params: Conv2dParams,
) -> Result<FeatureMap, CpuError> {
    if params.upsample {
        return upsampled_conv2d(x, weight, bias, params);
    }
    let g = ConvGeom::new(x, weight, bias, params)?;
    let mut out = FeatureMap::zeros(g.cout, g.hout, g.wout);
    run_conv(x, weight, bias, &g, &mut out, false);
    Ok(out)
}

/// A convolution of the nearest-×2 up-sampled input: the fused sub-pixel path for the
/// decoder's 3×3 `Same` case, otherwise the up-sampled input materialized first.
fn upsampled_conv2d(
    x: &FeatureMap,
    weight: &Tensor,
    bias: &Tensor,
    params: Conv2dParams,
) -> Result<FeatureMap, CpuError> {
    let plain = Conv2dParams {
        upsample: false,
        ..params
    };
    if plain == Conv2dParams::SAME && weight.shape.get(2) == Some(&3) {
        upsample_conv2d(x, weight, bias)
    } else {
        conv2d(&super::upsample_nearest2(x), weight, bias, plain)
    }
}

/// `out += conv2d(x, weight, bias, params)`: the residual add fused into the convolution.
///
/// `out` must have the convolution's output shape.
pub fn conv2d_accumulate(
    x: &FeatureMap,
    weight: &Tensor,
    bias: &Tensor,
    params: Conv2dParams,
    out: &mut FeatureMap,
) -> Result<(), CpuError> {
    if params.upsample {
        let y = upsampled_conv2d(x, weight, bias, params)?;
        return super::add_assign(out, &y);
    }
    let g = ConvGeom::new(x, weight, bias, params)?;
    if (out.channels, out.height, out.width) != (g.cout, g.hout, g.wout) {
        return Err(CpuError::ShapeMismatch {
            op: "conv2d_accumulate",
            operand: "out",
            expected: vec![g.cout, g.hout, g.wout],
            got: vec![out.channels, out.height, out.width],
        });
    }
    run_conv(x, weight, bias, &g, out, true);
    Ok(())
}

/// Picks the algorithm: Winograd F(2×2, 3×3) for 3×3 stride-1 `Same` convolutions with
/// enough channels, tiled im2col + GEMM for everything else.
fn run_conv(
    x: &FeatureMap,
    weight: &Tensor,
    bias: &Tensor,
    g: &ConvGeom,
    out: &mut FeatureMap,
    accumulate: bool,
) {
    let winograd_shape = g.k == 3 && g.stride == 1 && g.pad_t == 1;
    if winograd_shape && super::winograd::worthwhile(g.cin, g.cout) {
        seed_all(out, &bias.data, accumulate);
        super::winograd::conv3x3_accumulate(x, weight, out);
    } else {
        run_im2col(x, weight, bias, g, out, accumulate);
    }
}

/// Sets (or adds) each channel's bias over the whole map.
fn seed_all(out: &mut FeatureMap, bias: &[f32], accumulate: bool) {
    let plane = out.plane();
    par::chunks_mut(&mut out.data, plane, |c, ch| {
        if accumulate {
            ch.iter_mut().for_each(|v| *v += bias[c]);
        } else {
            ch.fill(bias[c]);
        }
    });
}

/// The tiled im2col convolution; shapes are already checked.
fn run_im2col(
    x: &FeatureMap,
    weight: &Tensor,
    bias: &Tensor,
    g: &ConvGeom,
    out: &mut FeatureMap,
    accumulate: bool,
) {
    let rows = g.rows_per_tile();
    let tiles = g.hout.div_ceil(rows);
    let dst = SharedMut::new(&mut out.data);
    let taps = g.taps();
    let scratch_len = if g.is_pointwise() {
        0
    } else {
        taps * rows * g.wout
    };
    par::for_each_init(
        tiles,
        || vec![0.0f32; scratch_len],
        |col, t| {
            let (y0, y1) = (t * rows, ((t + 1) * rows).min(g.hout));
            let n = (y1 - y0) * g.wout;
            seed_bias(dst, g, &bias.data, (y0, y1), accumulate);
            let rhs = if g.is_pointwise() {
                // The input rows are already the patch matrix: rows = channels, columns = positions.
                View {
                    ptr: x.data[y0 * g.w..].as_ptr(),
                    rs: (g.h * g.w) as isize,
                    cs: 1,
                }
            } else {
                im2col_rows(&x.data, g, y0, y1, col);
                View {
                    ptr: col.as_ptr(),
                    rs: n as isize,
                    cs: 1,
                }
            };
            let lhs = View {
                ptr: weight.data.as_ptr(),
                rs: taps as isize,
                cs: 1,
            };
            // SAFETY: this tile owns output rows y0..y1 of every channel; `rhs` spans taps × n
            // valid values (a checked slice of `x` or of `col`), `lhs` is the cout × taps weight.
            let out_view = ViewMut {
                ptr: unsafe { dst.ptr().add(y0 * g.wout) },
                rs: (g.hout * g.wout) as isize,
                cs: 1,
            };
            unsafe {
                gemm(
                    Dims {
                        m: g.cout,
                        n,
                        k: taps,
                    },
                    out_view,
                    lhs,
                    rhs,
                    true,
                )
            };
        },
    );
}

/// Sub-pixel phase `(a, b)` of a 3×3 kernel applied after nearest ×2 up-sampling: the 2×2
/// kernel on the low-resolution input whose taps sum the 3×3 taps that read the same source
/// pixel. Output pixel `(2i + a, 2j + b)` reads input rows `i + a - 1 + dy`, columns `j + b - 1 + dx`.
fn phase_weights(weight: &Tensor, a: usize, b: usize) -> Vec<f32> {
    // For phase 0 the up-sampled rows 2i-1, 2i, 2i+1 come from input rows i-1, i, i;
    // for phase 1 rows 2i, 2i+1, 2i+2 come from i, i, i+1.
    const TAPS: [[&[usize]; 2]; 2] = [[&[0], &[1, 2]], [&[0, 1], &[2]]];
    let (cout, cin) = (weight.shape[0], weight.shape[1]);
    let mut out = vec![0.0f32; cout * cin * 4];
    // One 3×3 kernel per (out, in) pair, in OIHW order; each becomes four 2×2 taps.
    for (dst, src) in out.chunks_exact_mut(4).zip(weight.data.chunks_exact(9)) {
        for dy in 0..2 {
            for dx in 0..2 {
                dst[dy * 2 + dx] = TAPS[a][dy]
                    .iter()
                    .flat_map(|&ky| TAPS[b][dx].iter().map(move |&kx| src[ky * 3 + kx]))
                    .sum();
            }
        }
    }
    out
}

/// Fills `col` (`cin·4 × n`) with the 2×2 patches that phase `(a, b)` reads for input rows `i0..i1`.
fn im2col_phase(x: &FeatureMap, phase: (usize, usize), rows: (usize, usize), col: &mut [f32]) {
    let (h, w) = (x.height, x.width);
    let n = (rows.1 - rows.0) * w;
    let mut r = 0;
    for plane in x.data.chunks_exact(h * w) {
        for dy in 0..2 {
            for dx in 0..2 {
                let row = &mut col[r * n..(r + 1) * n];
                r += 1;
                for (i, seg) in (rows.0..rows.1).zip(row.chunks_exact_mut(w)) {
                    let iy = (i + phase.0 + dy) as isize - 1;
                    if iy < 0 || iy >= h as isize {
                        seg.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                    fill_row(seg, src, (phase.1 + dx) as isize - 1, 1);
                }
            }
        }
    }
}

/// `conv2d(upsample_nearest2(x), weight, bias, Conv2dParams::SAME)` for a 3×3 kernel, without
/// building the up-sampled map: each of the four output phases is a 2×2 convolution of `x`,
/// 4/9 of the multiply-adds. Results equal the two-step form up to float summation order.
pub fn upsample_conv2d(
    x: &FeatureMap,
    weight: &Tensor,
    bias: &Tensor,
) -> Result<FeatureMap, CpuError> {
    let g = ConvGeom::new(x, weight, bias, Conv2dParams::SAME)?;
    if g.k != 3 {
        return Err(CpuError::Unsupported {
            op: "upsample_conv2d",
            param: "kernel",
            got: g.k,
            reason: "only 3×3",
        });
    }
    let phases: Vec<Vec<f32>> = (0..4)
        .map(|p| phase_weights(weight, p / 2, p % 2))
        .collect();
    let (h, w, cout) = (x.height, x.width, g.cout);
    let mut out = FeatureMap::zeros(cout, 2 * h, 2 * w);
    let rows = g.rows_per_tile();
    let dst = SharedMut::new(&mut out.data);
    let taps = x.channels * 4;
    par::for_each_init(
        h.div_ceil(rows),
        || (vec![0.0f32; taps * rows * w], vec![0.0f32; cout * rows * w]),
        |(col, buf), t| {
            let (i0, i1) = (t * rows, ((t + 1) * rows).min(h));
            let n = (i1 - i0) * w;
            for (p, pw) in phases.iter().enumerate() {
                let phase = (p / 2, p % 2);
                im2col_phase(x, phase, (i0, i1), col);
                let lhs = View {
                    ptr: pw.as_ptr(),
                    rs: taps as isize,
                    cs: 1,
                };
                let rhs = View {
                    ptr: col.as_ptr(),
                    rs: n as isize,
                    cs: 1,
                };
                let tile = ViewMut {
                    ptr: buf.as_mut_ptr(),
                    rs: n as isize,
                    cs: 1,
                };
                // SAFETY: `buf` holds cout × n, `col` taps × n, `pw` cout × taps values.
                unsafe {
                    gemm(
                        Dims {
                            m: cout,
                            n,
                            k: taps,
                        },
                        tile,
                        lhs,
                        rhs,
                        false,
                    )
                };
                scatter_phase(
                    dst,
                    &buf[..cout * n],
                    &bias.data,
                    PhaseTile {
                        phase,
                        i0,
                        i1,
                        h,
                        w,
                    },
                );
            }
        },
    );
    Ok(out)
}

/// Which input rows a phase tile covers, and the input map's size.
#[derive(Clone, Copy)]
struct PhaseTile {
    phase: (usize, usize),
    i0: usize,
    i1: usize,
    h: usize,
    w: usize,
}

/// Writes a phase tile (`cout × rows·w`) plus bias to output pixels `(2i + a, 2j + b)`.
fn scatter_phase(dst: SharedMut, buf: &[f32], bias: &[f32], t: PhaseTile) {
    let n = (t.i1 - t.i0) * t.w;
    let (plane_out, wo) = (4 * t.h * t.w, 2 * t.w);
    for ((c, src), &b) in buf.chunks_exact(n).enumerate().zip(bias) {
        for (i, src_row) in (t.i0..t.i1).zip(src.chunks_exact(t.w)) {
            let start = c * plane_out + (2 * i + t.phase.0) * wo + t.phase.1;
            // SAFETY: output rows 2·i0..2·i1 belong to this tile alone; the row spans 2w values.
            let row =
                unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(start), wo - t.phase.1) };
            for (d, &v) in row.iter_mut().step_by(2).zip(src_row) {
                *d = v + b;
            }
        }
    }
}
