//! One-kernel entry points: each uploads its operands, runs one small graph and reads the
//! result back. For tests against the CPU reference and for benchmarks; the model itself
//! runs whole graphs (see [`crate::GpuModel`]).

use hvq_spec::{FeatureMap, Tensor, TokenGrid};

use crate::context::GpuContext;
use crate::error::{GpuError, Result};
use crate::graph::Elem;
use crate::graph::{self, ConvOptions, FusedNorm, Graph, Pad, Resample};
use crate::model::{conv_weights, storage};
use crate::shaders::Precision;

pub use hvq_spec::op_params::{Affine, AttnWeights, Conv2dParams, GroupNormParams, Padding};

fn bad(op: &'static str, reason: impl Into<String>) -> GpuError {
    GpuError::BadInput {
        op,
        reason: reason.into(),
    }
}

fn check_map(op: &'static str, x: &FeatureMap) -> Result<()> {
    if x.channels == 0 || x.height == 0 || x.width == 0 || x.data.len() != x.channels * x.plane() {
        return Err(bad(
            op,
            format!(
                "map {}x{}x{} with {} values",
                x.channels,
                x.height,
                x.width,
                x.data.len()
            ),
        ));
    }
    Ok(())
}

fn check_conv(op: &'static str, x: &FeatureMap, weight: &Tensor, bias: &Tensor) -> Result<()> {
    check_map(op, x)?;
    match weight.shape.as_slice() {
        [o, i, kh, kw]
            if *i == x.channels && kh == kw && kh % 2 == 1 && bias.shape == [*o] && *o > 0 =>
        {
            Ok(())
        }
        s => Err(bad(
            op,
            format!(
                "weight {s:?} / bias {:?} do not fit a {}-channel input",
                bias.shape, x.channels
            ),
        )),
    }
}

/// A graph with its uploads, waiting for steps.
struct OneShot<'a> {
    g: Graph,
    inputs: Vec<(graph::Tensor, &'a [u8])>,
}

impl<'a> OneShot<'a> {
    fn new(ctx: &GpuContext) -> Self {
        OneShot {
            g: Graph::new(ctx, 1, Precision::F32),
            inputs: Vec::new(),
        }
    }

    fn map(&mut self, x: &'a FeatureMap) -> Result<graph::Tensor> {
        let t = self.g.alloc(x.channels, x.height, x.width)?;
        self.inputs.push((t, bytemuck::cast_slice(&x.data)));
        Ok(t)
    }

    async fn read(mut self, out: graph::Tensor) -> Result<Vec<u8>> {
        let mut bytes = self.g.run(&self.inputs, &[out]).await?;
        bytes.pop().ok_or(GpuError::ReadbackCancelled)
    }

    async fn read_map(self, out: graph::Tensor) -> Result<FeatureMap> {
        let bytes = self.read(out).await?;
        Ok(FeatureMap {
            channels: out.channels,
            height: out.height,
            width: out.width,
            data: bytemuck::pod_collect_to_vec(&bytes),
        })
    }
}

/// Checks a graph-building result for device errors (a bug) before running it.
async fn built<T>(ctx: &GpuContext, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let scope = ctx.device().push_error_scope(wgpu::ErrorFilter::Validation);
    let out = f();
    if let Some(source) = scope.pop().await {
        return Err(GpuError::Device {
            during: "building kernels",
            source,
        });
    }
    out
}

/// A 2-D convolution (weights OIHW, odd square kernel), optionally adding `residual`
/// (the output's shape) to the result.
///
/// # Errors
/// [`GpuError::BadInput`] for mismatched shapes; limits; device errors.
pub async fn conv2d(
    ctx: &GpuContext,
    x: &FeatureMap,
    weight: &Tensor,
    bias: &Tensor,
    params: Conv2dParams,
    residual: Option<&FeatureMap>,
) -> Result<FeatureMap> {
    check_conv("conv2d", x, weight, bias)?;
    let mut s = OneShot::new(ctx);
    let out = built(ctx, || {
        let xt = s.map(x)?;
        let r = residual.map(|r| s.map(r)).transpose()?;
        let w = conv_weights(ctx, Precision::F32, &weight.data, &bias.data, &weight.shape)?;
        let pad = match params.padding {
            Padding::Same => Pad::Same,
            Padding::DownsampleRightBottom => Pad::RightBottom,
        };
        let o = ConvOptions {
            stride: params.stride,
            pad,
            upsample: params.upsample,
            norm: None,
            residual: r,
        };
        s.g.conv(xt, &w, o)
    })
    .await?;
    s.read_map(out).await
}

/// The quantizer's 1×1 projection (`weight` `[D, C, 1, 1]`).
///
/// # Errors
/// As [`conv2d`].
pub async fn project(
    ctx: &GpuContext,
    x: &FeatureMap,
    weight: &Tensor,
    bias: &Tensor,
) -> Result<FeatureMap> {
    conv2d(ctx, x, weight, bias, Conv2dParams::SAME, None).await
}

/// GroupNorm (two-pass statistics), then swish when `params.swish`.
///
/// # Errors
/// [`GpuError::BadInput`] when `groups` does not divide the channels or gamma/beta do not
/// match them; limits; device errors.
pub async fn group_norm(
    ctx: &GpuContext,
    x: &FeatureMap,
    params: GroupNormParams<'_>,
) -> Result<FeatureMap> {
    check_map("group_norm", x)?;
    if params.gamma.shape != [x.channels] || params.beta.shape != [x.channels] {
        return Err(bad(
            "group_norm",
            "gamma and beta need one value per channel",
        ));
    }
    let affine_data: Vec<f32> = params
        .gamma
        .data
        .iter()
        .chain(&params.beta.data)
        .copied()
        .collect();
    let affine = storage(ctx, "norm", &affine_data)?;
    let mut s = OneShot::new(ctx);
    let out = built(ctx, || {
        let xt = s.map(x)?;
        let coef =
            s.g.group_norm_stats(xt, &affine, params.groups, params.eps)?;
        s.g.group_norm_apply(
            xt,
            FusedNorm {
                coef,
                swish: params.swish,
            },
        )
    })
    .await?;
    s.read_map(out).await
}

/// Element-wise `a + b`.
///
/// # Errors
/// [`GpuError::BadInput`] for different shapes; limits; device errors.
pub async fn add(ctx: &GpuContext, a: &FeatureMap, b: &FeatureMap) -> Result<FeatureMap> {
    check_map("add", a)?;
    check_map("add", b)?;
    let mut s = OneShot::new(ctx);
    let out = built(ctx, || {
        let (at, bt) = (s.map(a)?, s.map(b)?);
        s.g.add(at, bt)
    })
    .await?;
    s.read_map(out).await
}

async fn resample(ctx: &GpuContext, x: &FeatureMap, mode: Resample) -> Result<FeatureMap> {
    check_map("resample", x)?;
    if mode == Resample::AvgPool2 && (x.height < 2 || x.width < 2) {
        return Err(bad("avg_pool2", "needs at least 2x2 input"));
    }
    let mut s = OneShot::new(ctx);
    let out = built(ctx, || {
        let xt = s.map(x)?;
        s.g.resample(xt, mode)
    })
    .await?;
    s.read_map(out).await
}

/// 2×2 average pool, stride 2 (an odd last row or column is dropped, as in PyTorch).
///
/// # Errors
/// [`GpuError::BadInput`] for an empty or smaller-than-2×2 map; limits; device errors.
pub async fn avg_pool2(ctx: &GpuContext, x: &FeatureMap) -> Result<FeatureMap> {
    resample(ctx, x, Resample::AvgPool2).await
}

/// Subset sampling `x[:, :, 0::2, 0::2]`.
///
/// # Errors
/// [`GpuError::BadInput`] for an empty map; limits; device errors.
pub async fn subsample2(ctx: &GpuContext, x: &FeatureMap) -> Result<FeatureMap> {
    resample(ctx, x, Resample::Subsample2).await
}

/// Nearest-neighbour ×2 up-sampling.
///
/// # Errors
/// [`GpuError::BadInput`] for an empty map; limits; device errors.
pub async fn upsample_nearest2(ctx: &GpuContext, x: &FeatureMap) -> Result<FeatureMap> {
    resample(ctx, x, Resample::UpsampleNearest2).await
}

/// The model's attention block: `x + proj_out(attend(norm(x)))`, single head, online softmax.
///
/// # Errors
/// [`GpuError::BadInput`] for weights that do not fit `x`; limits; device errors.
pub async fn attention(ctx: &GpuContext, x: &FeatureMap, w: AttnWeights<'_>) -> Result<FeatureMap> {
    let c = x.channels;
    for a in [w.q, w.k, w.v, w.proj_out] {
        check_conv("attention", x, a.weight, a.bias)?;
        if a.weight.shape != [c, c, 1, 1] {
            return Err(bad(
                "attention",
                format!(
                    "projection weight {:?}, expected [{c}, {c}, 1, 1]",
                    a.weight.shape
                ),
            ));
        }
    }
    if w.norm.weight.shape != [c] || w.norm.bias.shape != [c] {
        return Err(bad(
            "attention",
            "norm gamma and beta need one value per channel",
        ));
    }
    let qkv_w: Vec<f32> = [w.q, w.k, w.v]
        .iter()
        .flat_map(|a| a.weight.data.iter().copied())
        .collect();
    let qkv_b: Vec<f32> = [w.q, w.k, w.v]
        .iter()
        .flat_map(|a| a.bias.data.iter().copied())
        .collect();
    let qkv = conv_weights(ctx, Precision::F32, &qkv_w, &qkv_b, &[3 * c, c, 1, 1])?;
    let proj = conv_weights(
        ctx,
        Precision::F32,
        &w.proj_out.weight.data,
        &w.proj_out.bias.data,
        &w.proj_out.weight.shape,
    )?;
    let affine_data: Vec<f32> = w
        .norm
        .weight
        .data
        .iter()
        .chain(&w.norm.bias.data)
        .copied()
        .collect();
    let affine = storage(ctx, "norm", &affine_data)?;
    let mut s = OneShot::new(ctx);
    let out = built(ctx, || {
        let xt = s.map(x)?;
        let coef = s.g.group_norm_stats(xt, &affine, w.groups, w.eps)?;
        let norm = FusedNorm { coef, swish: false };
        let qkv_t = s.g.conv(
            xt,
            &qkv,
            ConvOptions {
                norm: Some(norm),
                ..ConvOptions::SAME
            },
        )?;
        let o = s.g.attention(qkv_t)?;
        s.g.conv(
            o,
            &proj,
            ConvOptions {
                residual: Some(xt),
                ..ConvOptions::SAME
            },
        )
    })
    .await?;
    s.read_map(out).await
}

/// The nearest codebook row (`[N, D]`) of every position of `p` (`D` channels), row-major;
/// ties go to the lowest index.
///
/// # Errors
/// [`GpuError::BadInput`] for a codebook whose width is not `p.channels`; limits; device errors.
pub async fn nearest_codes(
    ctx: &GpuContext,
    p: &FeatureMap,
    codebook: &Tensor,
) -> Result<Vec<u32>> {
    search(ctx, p, codebook, None).await
}

/// [`nearest_codes`] with the entries divided among `splits` workgroups per block of
/// positions (rounded to whole tiles of 16 entries), as the model does by itself for small
/// maps; the tokens must not depend on it.
///
/// # Errors
/// As [`nearest_codes`]; [`GpuError::BadInput`] for `splits == 0`.
pub async fn nearest_codes_in_splits(
    ctx: &GpuContext,
    p: &FeatureMap,
    codebook: &Tensor,
    splits: usize,
) -> Result<Vec<u32>> {
    if splits == 0 {
        return Err(bad("nearest_codes", "zero splits"));
    }
    search(ctx, p, codebook, Some(splits)).await
}

async fn search(
    ctx: &GpuContext,
    p: &FeatureMap,
    codebook: &Tensor,
    splits: Option<usize>,
) -> Result<Vec<u32>> {
    check_map("nearest_codes", p)?;
    let entries = match codebook.shape.as_slice() {
        [n, d] if *d == p.channels && *n > 0 && u32::try_from(*n).is_ok() => *n,
        s => {
            return Err(bad(
                "nearest_codes",
                format!("codebook {s:?} for {} channels", p.channels),
            ));
        }
    };
    let cb = storage(ctx, "codebook", &codebook.data)?;
    let mut s = OneShot::new(ctx);
    let out = built(ctx, || {
        let pt = s.map(p)?;
        s.g.codebook_search(pt, &cb, entries, splits)
    })
    .await?;
    Ok(bytemuck::pod_collect_to_vec(&s.read(out).await?))
}

/// The codebook rows (`[N, D]`) a token grid names, as a `D × height × width` map.
///
/// # Errors
/// [`GpuError::Input`] for a malformed grid or a token outside the codebook,
/// [`GpuError::BadInput`] for a malformed codebook;
/// limits; device errors.
pub async fn gather_codes(
    ctx: &GpuContext,
    grid: &TokenGrid,
    codebook: &Tensor,
) -> Result<FeatureMap> {
    let (entries, dim) = match codebook.shape.as_slice() {
        [n, d] if *n > 0 && *d > 0 && u32::try_from(*n).is_ok() => (*n, *d),
        s => return Err(bad("gather_codes", format!("codebook shape {s:?}"))),
    };
    grid.check(entries)?;
    let cb = storage(ctx, "codebook", &codebook.data)?;
    let mut s = OneShot::new(ctx);
    let out = built(ctx, || {
        let t = s.g.alloc_as(Elem::U32, 1, grid.height, grid.width)?;
        s.inputs.push((t, bytemuck::cast_slice(&grid.tokens)));
        s.g.codebook_gather(t, &cb, entries, dim)
    })
    .await?;
    s.read_map(out).await
}
