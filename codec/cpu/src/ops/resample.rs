//! Element-wise and resampling ops: residual add, 2×2 average pool, subset sampling,
//! nearest up-sampling, edge padding and cropping.

use hvq_spec::FeatureMap;

use crate::CpuError;
use crate::par;

fn same_shape(op: &'static str, a: &FeatureMap, b: &FeatureMap) -> Result<(), CpuError> {
    if (a.channels, a.height, a.width) == (b.channels, b.height, b.width) {
        return Ok(());
    }
    Err(CpuError::ShapeMismatch {
        op,
        operand: "b",
        expected: vec![a.channels, a.height, a.width],
        got: vec![b.channels, b.height, b.width],
    })
}

/// `a + b`, element-wise.
pub fn add(a: &FeatureMap, b: &FeatureMap) -> Result<FeatureMap, CpuError> {
    let mut out = a.clone();
    add_assign(&mut out, b)?;
    Ok(out)
}

/// `a += b`, element-wise.
pub fn add_assign(a: &mut FeatureMap, b: &FeatureMap) -> Result<(), CpuError> {
    same_shape("add", a, b)?;
    a.data.iter_mut().zip(&b.data).for_each(|(x, y)| *x += y);
    Ok(())
}

/// Maps every output plane from the matching input plane, in parallel over channels.
fn per_plane(
    x: &FeatureMap,
    h: usize,
    w: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync + Send,
) -> FeatureMap {
    let mut out = FeatureMap::zeros(x.channels, h, w);
    if h * w == 0 {
        return out;
    }
    par::chunks_mut(&mut out.data, h * w, |c, dst| {
        f(&x.data[c * x.plane()..(c + 1) * x.plane()], dst)
    });
    out
}

/// 2×2 average pool, stride 2 (PyTorch `avg_pool2d(x, 2)`: an odd last row or column is dropped).
pub fn avg_pool2(x: &FeatureMap) -> FeatureMap {
    let (h, w, iw) = (x.height / 2, x.width / 2, x.width);
    per_plane(x, h, w, |src, dst| {
        for (y, row) in dst.chunks_exact_mut(w).enumerate() {
            let (r0, r1) = (&src[2 * y * iw..], &src[(2 * y + 1) * iw..]);
            for (xo, v) in row.iter_mut().enumerate() {
                *v = 0.25 * (r0[2 * xo] + r0[2 * xo + 1] + r1[2 * xo] + r1[2 * xo + 1]);
            }
        }
    })
}

/// Subset sampling `x[:, :, 0::2, 0::2]` (an odd size keeps its last row/column).
pub fn subsample2(x: &FeatureMap) -> FeatureMap {
    let (h, w, iw) = (x.height.div_ceil(2), x.width.div_ceil(2), x.width);
    per_plane(x, h, w, |src, dst| {
        for (y, row) in dst.chunks_exact_mut(w).enumerate() {
            let r = &src[2 * y * iw..];
            row.iter_mut()
                .enumerate()
                .for_each(|(xo, v)| *v = r[2 * xo]);
        }
    })
}

/// Nearest-neighbour ×2 up-sampling.
pub fn upsample_nearest2(x: &FeatureMap) -> FeatureMap {
    let (h, w, iw) = (2 * x.height, 2 * x.width, x.width);
    per_plane(x, h, w, |src, dst| {
        for (y, row) in dst.chunks_exact_mut(w).enumerate() {
            let r = &src[(y / 2) * iw..];
            row.iter_mut()
                .enumerate()
                .for_each(|(xo, v)| *v = r[xo / 2]);
        }
    })
}

/// Pads right and bottom by repeating the last column and row, up to the next multiple of
/// `multiple` in both dimensions (a no-op copy when already aligned).
pub fn pad_edge(x: &FeatureMap, multiple: usize) -> Result<FeatureMap, CpuError> {
    if multiple == 0 || x.height == 0 || x.width == 0 {
        return Err(hvq_spec::InputError::BadImageSize {
            height: x.height,
            width: x.width,
            multiple,
        }
        .into());
    }
    let (h, w, iw, ih) = (
        x.height.next_multiple_of(multiple),
        x.width.next_multiple_of(multiple),
        x.width,
        x.height,
    );
    Ok(per_plane(x, h, w, |src, dst| {
        for (y, row) in dst.chunks_exact_mut(w).enumerate() {
            let r = &src[y.min(ih - 1) * iw..][..iw];
            row[..iw].copy_from_slice(r);
            row[iw..].fill(r[iw - 1]);
        }
    }))
}

/// The top-left `height × width` window of `x`.
pub fn crop(x: &FeatureMap, height: usize, width: usize) -> Result<FeatureMap, CpuError> {
    if height > x.height || width > x.width {
        return Err(CpuError::ShapeMismatch {
            op: "crop",
            operand: "window",
            expected: vec![x.height, x.width],
            got: vec![height, width],
        });
    }
    let iw = x.width;
    Ok(per_plane(x, height, width, |src, dst| {
        for (y, row) in dst.chunks_exact_mut(width).enumerate() {
            row.copy_from_slice(&src[y * iw..y * iw + width]);
        }
    }))
}
