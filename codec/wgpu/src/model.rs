//! The whole model on the device: weights uploaded once, one cached graph per input shape.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use hvq_spec::{FeatureMap, ModelConfig, Strategy, TokenGrid, Weights, schema};
use wgpu::util::DeviceExt;

use crate::context::GpuContext;
use crate::error::{GpuError, Result};
use crate::graph::{ConvOptions, ConvWeights, FusedNorm, Graph, Pad, Resample, Tensor};

/// GroupNorm epsilon of every norm in the model (DESIGN.md §2).
const NORM_EPS: f32 = 1e-6;

/// Weights as device buffers, by schema prefix.
struct DeviceWeights {
    convs: HashMap<String, ConvWeights>,
    /// gamma‖beta of each norm.
    norms: HashMap<String, wgpu::Buffer>,
    codebook: wgpu::Buffer,
    /// 1/std ‖ −mean/std: the input normalization.
    normalize: wgpu::Buffer,
    /// std ‖ mean: the output de-normalization.
    denormalize: wgpu::Buffer,
}

/// Which graph a cached plan runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PlanKey {
    /// Latents of levels `0..=top` of a padded `height × width` image, and tokens of `quantize`.
    Encode {
        height: usize,
        width: usize,
        top: usize,
        quantize: Vec<usize>,
        latents: bool,
    },
    /// Decoder of `level` for a `height × width` grid.
    Decode {
        level: usize,
        height: usize,
        width: usize,
    },
}

/// A built graph with its input and output tensors.
struct Plan {
    graph: Graph,
    input: Tensor,
    outputs: Vec<Tensor>,
}

/// A model whose weights live on a wgpu device.
///
/// Mirrors the CPU model: [`GpuModel::encode_latents`], [`GpuModel::encode`] and
/// [`GpuModel::decode`]. Graphs (buffers, bind groups) are built on the first call for an
/// input shape and replayed on later calls of the same shape.
pub struct GpuModel {
    ctx: GpuContext,
    config: ModelConfig,
    weights: DeviceWeights,
    plans: Mutex<HashMap<PlanKey, Plan>>,
}

impl std::fmt::Debug for GpuModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuModel")
            .field("ctx", &self.ctx)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl GpuModel {
    /// Uploads every tensor of `weights` to the device of `ctx`.
    ///
    /// # Errors
    /// [`GpuError::LimitExceeded`] when a tensor is larger than a device buffer may be.
    pub fn new(ctx: &GpuContext, weights: &Weights) -> Result<Self> {
        let config = weights.config().clone();
        let dev = DeviceWeights::upload(ctx, weights)?;
        Ok(GpuModel {
            ctx: ctx.clone(),
            config,
            weights: dev,
            plans: Mutex::new(HashMap::new()),
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The projected latents `p_l` (codebook dimension `D` channels) of every level, finest
    /// first, of `image`: RGB in `[0, 1]` whose sides are positive multiples of
    /// [`ModelConfig::coarsest_stride`] (edge-pad with [`pad_edge`] first).
    ///
    /// # Errors
    /// [`GpuError::BadInput`] for an image that is not 3-channel or not of an accepted size;
    /// [`GpuError::LimitExceeded`] for one too large for the device; device errors.
    pub async fn encode_latents(&self, image: &FeatureMap) -> Result<Vec<FeatureMap>> {
        self.check_image(image)?;
        let key = PlanKey::Encode {
            height: image.height,
            width: image.width,
            top: self.config.levels - 1,
            quantize: Vec::new(),
            latents: true,
        };
        let out = self.run(key, bytemuck::cast_slice(&image.data)).await?;
        Ok(out
            .into_iter()
            .map(|(t, bytes)| to_map(t, &bytes))
            .collect())
    }

    /// Tokens of the requested `levels` (0 = finest) of `image`, in the order asked, running
    /// the level chain only as far as the coarsest requested level; `image` as for
    /// [`GpuModel::encode_latents`].
    ///
    /// # Errors
    /// [`GpuError::NoSuchLevel`] for a level the model lacks; otherwise as
    /// [`GpuModel::encode_latents`].
    pub async fn encode(&self, image: &FeatureMap, levels: &[usize]) -> Result<Vec<TokenGrid>> {
        if let Some(&level) = levels.iter().find(|&&l| l >= self.config.levels) {
            return Err(GpuError::NoSuchLevel {
                level,
                levels: self.config.levels,
            });
        }
        self.check_image(image)?;
        if levels.is_empty() {
            return Ok(Vec::new());
        }
        let top = levels.iter().copied().max().unwrap_or(0);
        let key = PlanKey::Encode {
            height: image.height,
            width: image.width,
            top,
            quantize: levels.to_vec(),
            latents: false,
        };
        let out = self.run(key, bytemuck::cast_slice(&image.data)).await?;
        Ok(levels
            .iter()
            .zip(out)
            .map(|(&level, (t, bytes))| TokenGrid {
                level,
                height: t.height,
                width: t.width,
                tokens: bytemuck::pod_collect_to_vec(&bytes),
            })
            .collect())
    }

    /// The image (RGB in `[0, 1]`, `stride(level)` times the grid size) that `grid`'s
    /// decoder rebuilds from its tokens alone.
    ///
    /// # Errors
    /// [`GpuError::NoSuchLevel`], [`GpuError::BadInput`] for a grid whose token count is not
    /// `height × width` or is empty, [`GpuError::TokenOutOfRange`], limits, device errors.
    pub async fn decode(&self, grid: &TokenGrid) -> Result<FeatureMap> {
        let cfg = &self.config;
        if grid.level >= cfg.levels {
            return Err(GpuError::NoSuchLevel {
                level: grid.level,
                levels: cfg.levels,
            });
        }
        check_grid(grid, cfg.codebook_size)?;
        let key = PlanKey::Decode {
            level: grid.level,
            height: grid.height,
            width: grid.width,
        };
        let mut out = self.run(key, bytemuck::cast_slice(&grid.tokens)).await?;
        let (t, bytes) = out.pop().ok_or(GpuError::ReadbackCancelled)?;
        Ok(to_map(t, &bytes))
    }

    /// Accepts RGB of a positive size that is a multiple of the coarsest stride, as the CPU
    /// model does (callers edge-pad first, see [`pad_edge`]).
    fn check_image(&self, image: &FeatureMap) -> Result<()> {
        let cfg = &self.config;
        let m = cfg.coarsest_stride();
        let bad = |n: usize| n == 0 || !n.is_multiple_of(m);
        if image.channels != cfg.in_channels || bad(image.height) || bad(image.width) {
            return Err(GpuError::BadInput {
                op: "encode",
                reason: format!(
                    "image is {}x{}x{}; expected {} channels and sides that are positive multiples of {m}",
                    image.channels, image.height, image.width, cfg.in_channels
                ),
            });
        }
        if image.data.len() != image.channels * image.plane() {
            return Err(GpuError::BadInput {
                op: "encode",
                reason: "data length differs from channels × height × width".into(),
            });
        }
        // The widest activation is the first ResBlock's at full resolution.
        self.ctx
            .check_buffer_size((cfg.channels * image.plane()) as u64 * 4)
    }

    /// Runs the plan for `key` (building it on first use) with `input` uploaded.
    async fn run(&self, key: PlanKey, input: &[u8]) -> Result<Vec<(Tensor, Vec<u8>)>> {
        // Taking the plan out of the cache while it runs keeps two concurrent calls of the
        // same shape from sharing buffers: the second builds its own.
        let taken = self.lock_plans().remove(&key);
        let mut plan = match taken {
            Some(plan) => plan,
            None => self.build(&key).await?,
        };
        let result = plan.graph.run(&[(plan.input, input)], &plan.outputs).await;
        let outputs = plan.outputs.clone();
        self.lock_plans().insert(key, plan);
        Ok(outputs.into_iter().zip(result?).collect())
    }

    fn lock_plans(&self) -> std::sync::MutexGuard<'_, HashMap<PlanKey, Plan>> {
        // Entries are inserted and removed whole; a panic elsewhere cannot leave one half-made.
        self.plans.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn build(&self, key: &PlanKey) -> Result<Plan> {
        let scope = self
            .ctx
            .device()
            .push_error_scope(wgpu::ErrorFilter::Validation);
        let built = self.build_now(key);
        if let Some(source) = scope.pop().await {
            return Err(GpuError::Device {
                during: "building kernels",
                source,
            });
        }
        built
    }

    fn build_now(&self, key: &PlanKey) -> Result<Plan> {
        let mut b = Builder {
            g: Graph::new(&self.ctx),
            w: &self.weights,
            cfg: &self.config,
        };
        match key {
            PlanKey::Encode {
                height,
                width,
                top,
                quantize,
                latents,
            } => {
                let input = b.g.alloc(self.config.in_channels, *height, *width)?;
                let outputs = b.encoder(input, *top, quantize, *latents)?;
                Ok(Plan {
                    graph: b.g,
                    input,
                    outputs,
                })
            }
            PlanKey::Decode {
                level,
                height,
                width,
            } => {
                let input = b.g.alloc(1, *height, *width)?;
                let output = b.decoder(input, *level)?;
                Ok(Plan {
                    graph: b.g,
                    input,
                    outputs: vec![output],
                })
            }
        }
    }
}

fn to_map(t: Tensor, bytes: &[u8]) -> FeatureMap {
    FeatureMap {
        channels: t.channels,
        height: t.height,
        width: t.width,
        data: bytemuck::pod_collect_to_vec(bytes),
    }
}

/// Checks a token grid's size and every index before anything touches the device.
pub(crate) fn check_grid(grid: &TokenGrid, entries: usize) -> Result<()> {
    if grid.height == 0 || grid.width == 0 || grid.tokens.len() != grid.height * grid.width {
        return Err(GpuError::BadInput {
            op: "decode",
            reason: format!(
                "{} tokens for a {}x{} grid",
                grid.tokens.len(),
                grid.height,
                grid.width
            ),
        });
    }
    if let Some((position, &token)) = grid
        .tokens
        .iter()
        .enumerate()
        .find(|(_, t)| **t as usize >= entries)
    {
        return Err(GpuError::TokenOutOfRange {
            position,
            token,
            entries,
        });
    }
    Ok(())
}

/// Pads `x` right and bottom to `height × width` (at least its own size) by repeating the
/// last column and row: how callers make an image's sides multiples of the coarsest stride.
///
/// # Errors
/// [`GpuError::BadInput`] when `x` is empty, malformed, or larger than the target.
pub fn pad_edge(x: &FeatureMap, height: usize, width: usize) -> Result<FeatureMap> {
    if x.height == 0
        || x.width == 0
        || x.height > height
        || x.width > width
        || x.data.len() != x.channels * x.plane()
    {
        return Err(GpuError::BadInput {
            op: "pad_edge",
            reason: format!("cannot pad {}x{} to {height}x{width}", x.height, x.width),
        });
    }
    let mut out = FeatureMap::zeros(x.channels, height, width);
    for c in 0..x.channels {
        for y in 0..height {
            let src = &x.data[(c * x.height + y.min(x.height - 1)) * x.width..][..x.width];
            let dst = &mut out.data[(c * height + y) * width..][..width];
            dst[..x.width].copy_from_slice(src);
            dst[x.width..].fill(src[x.width - 1]);
        }
    }
    Ok(out)
}

impl DeviceWeights {
    fn upload(ctx: &GpuContext, weights: &Weights) -> Result<Self> {
        let cfg = weights.config();
        let mut convs = HashMap::new();
        let mut norms = HashMap::new();
        for spec in schema::tensors(cfg) {
            let Some(prefix) = spec.name.strip_suffix(".weight") else {
                continue;
            };
            let w = weights.tensor(&spec.name);
            let bias = weights.tensor(&format!("{prefix}.bias"));
            if w.shape.len() == 4 {
                convs.insert(
                    prefix.to_string(),
                    conv_weights(ctx, &w.data, &bias.data, &w.shape)?,
                );
            } else if w.shape.len() == 1 {
                let affine: Vec<f32> = w.data.iter().chain(&bias.data).copied().collect();
                norms.insert(prefix.to_string(), storage(ctx, "norm", &affine)?);
            }
        }
        for spec in schema::tensors(cfg) {
            // Fuse each attention block's q, k, v projections into one 1x1 convolution.
            if let Some(prefix) = spec.name.strip_suffix(".q.weight") {
                let parts = ["q", "k", "v"].map(|p| {
                    (
                        weights.tensor(&format!("{prefix}.{p}.weight")),
                        weights.tensor(&format!("{prefix}.{p}.bias")),
                    )
                });
                let w: Vec<f32> = parts
                    .iter()
                    .flat_map(|(w, _)| w.data.iter().copied())
                    .collect();
                let b: Vec<f32> = parts
                    .iter()
                    .flat_map(|(_, b)| b.data.iter().copied())
                    .collect();
                let c = parts[0].0.shape[1];
                convs.insert(
                    format!("{prefix}.qkv"),
                    conv_weights(ctx, &w, &b, &[3 * c, c, 1, 1])?,
                );
            }
        }
        let codebook = storage(ctx, "codebook", &weights.tensor("quantizer.codebook").data)?;
        let normalize: Vec<f32> = cfg
            .std
            .iter()
            .map(|s| 1.0 / s)
            .chain(cfg.mean.iter().zip(&cfg.std).map(|(m, s)| -m / s))
            .collect();
        let denormalize: Vec<f32> = cfg.std.iter().chain(&cfg.mean).copied().collect();
        Ok(DeviceWeights {
            convs,
            norms,
            codebook,
            normalize: storage(ctx, "normalize", &normalize)?,
            denormalize: storage(ctx, "denormalize", &denormalize)?,
        })
    }
}

pub(crate) fn storage(ctx: &GpuContext, label: &str, data: &[f32]) -> Result<wgpu::Buffer> {
    ctx.check_buffer_size(data.len() as u64 * 4)?;
    // Empty bindings are invalid; a lone zero stands in.
    let contents: &[f32] = if data.is_empty() { &[0.0] } else { data };
    Ok(ctx
        .device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::cast_slice(contents),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        }))
}

pub(crate) fn conv_weights(
    ctx: &GpuContext,
    w: &[f32],
    b: &[f32],
    shape: &[usize],
) -> Result<ConvWeights> {
    Ok(ConvWeights {
        weight: storage(ctx, "conv weight", w)?,
        bias: storage(ctx, "conv bias", b)?,
        cout: shape[0],
        cin: shape[1],
        ks: shape[2],
    })
}

/// Builds the model's graphs, following the schema's structure and names.
struct Builder<'a> {
    g: Graph,
    w: &'a DeviceWeights,
    cfg: &'a ModelConfig,
}

impl Builder<'_> {
    /// `conv(act(norm(x)))` with the norm fused into the convolution's input.
    fn norm_conv(
        &mut self,
        x: Tensor,
        norm: &str,
        conv: &str,
        swish: bool,
        o: ConvOptions,
    ) -> Result<Tensor> {
        let w = self.w;
        let affine = w
            .norms
            .get(norm)
            .unwrap_or_else(|| panic!("no norm `{norm}` in the schema"));
        let coef = self
            .g
            .group_norm_stats(x, affine, self.cfg.norm_groups, NORM_EPS)?;
        let conv_w = w
            .convs
            .get(conv)
            .unwrap_or_else(|| panic!("no convolution `{conv}` in the schema"));
        let out = self.g.conv(
            x,
            conv_w,
            ConvOptions {
                norm: Some(FusedNorm { coef, swish }),
                ..o
            },
        );
        self.g.release(coef);
        out
    }

    fn conv(&mut self, x: Tensor, name: &str, o: ConvOptions) -> Result<Tensor> {
        let w = self.w;
        let conv_w = w
            .convs
            .get(name)
            .unwrap_or_else(|| panic!("no convolution `{name}` in the schema"));
        self.g.conv(x, conv_w, o)
    }

    /// A ResBlock; consumes `x`.
    fn res_block(&mut self, x: Tensor, p: &str) -> Result<Tensor> {
        let h = self.norm_conv(
            x,
            &format!("{p}.norm1"),
            &format!("{p}.conv1"),
            true,
            ConvOptions::SAME,
        )?;
        let shortcut = format!("{p}.nin_shortcut");
        let skip = if self.w.convs.contains_key(&shortcut) {
            self.conv(x, &shortcut, ConvOptions::SAME)?
        } else {
            x
        };
        let out = self.norm_conv(
            h,
            &format!("{p}.norm2"),
            &format!("{p}.conv2"),
            true,
            ConvOptions {
                residual: Some(skip),
                ..ConvOptions::SAME
            },
        )?;
        self.g.release(h);
        self.g.release(skip);
        if skip != x {
            self.g.release(x);
        }
        Ok(out)
    }

    /// Self-attention with residual; consumes `x`.
    fn attention(&mut self, x: Tensor, p: &str) -> Result<Tensor> {
        let qkv = self.norm_conv(
            x,
            &format!("{p}.norm"),
            &format!("{p}.qkv"),
            false,
            ConvOptions::SAME,
        )?;
        let o = self.g.attention(qkv)?;
        self.g.release(qkv);
        let out = self.conv(
            o,
            &format!("{p}.proj_out"),
            ConvOptions {
                residual: Some(x),
                ..ConvOptions::SAME
            },
        )?;
        self.g.release(o);
        self.g.release(x);
        Ok(out)
    }

    fn mid(&mut self, x: Tensor, p: &str) -> Result<Tensor> {
        let mut h = self.res_block(x, &format!("{p}.block_1"))?;
        if self.cfg.mid_attention {
            h = self.attention(h, &format!("{p}.attn_1"))?;
        }
        self.res_block(h, &format!("{p}.block_2"))
    }

    /// Encoder, level chain and quantizer projection. Outputs the projected latents `p_0..=p_top`
    /// when `latents`, then the tokens of each level of `quantize`.
    fn encoder(
        &mut self,
        image: Tensor,
        top: usize,
        quantize: &[usize],
        latents: bool,
    ) -> Result<Vec<Tensor>> {
        let cfg = self.cfg;
        let w = self.w;
        let x = self.g.channel_affine(image, &w.normalize, false)?;
        let mut h = self.conv(x, "encoder.conv_in", ConvOptions::SAME)?;
        self.g.release(x);
        let last = cfg.channel_mult.len() - 1;
        for i in 0..=last {
            for j in 0..cfg.num_res_blocks {
                h = self.res_block(h, &format!("encoder.down.{i}.block.{j}"))?;
            }
            if i != last {
                let down = ConvOptions {
                    stride: 2,
                    pad: Pad::RightBottom,
                    ..ConvOptions::SAME
                };
                let next = self.conv(h, &format!("encoder.down.{i}.downsample.conv"), down)?;
                self.g.release(h);
                h = next;
            }
        }
        h = self.mid(h, "encoder.mid")?;
        let z0 = self.norm_conv(
            h,
            "encoder.norm_out",
            "encoder.conv_out",
            true,
            ConvOptions::SAME,
        )?;
        self.g.release(h);
        let mut zs = vec![z0];
        for level in 1..=top {
            let z = self.derive_level(zs[level - 1], level)?;
            zs.push(z);
        }
        let mut projected = Vec::with_capacity(zs.len());
        for z in zs {
            projected.push(self.conv(z, "quantizer.proj", ConvOptions::SAME)?);
            self.g.release(z);
        }
        let mut outputs = if latents {
            projected.clone()
        } else {
            Vec::new()
        };
        for &level in quantize {
            outputs.push(self.g.codebook_search(
                projected[level],
                &w.codebook,
                cfg.codebook_size,
            )?);
        }
        // Nothing is released after this point: outputs must not be overwritten by later steps.
        Ok(outputs)
    }

    /// `z_level` from `z_{level-1}` by the configured strategy.
    fn derive_level(&mut self, z: Tensor, level: usize) -> Result<Tensor> {
        let down = ConvOptions {
            stride: 2,
            pad: Pad::RightBottom,
            ..ConvOptions::SAME
        };
        let conv = format!("levels.{level}.down.conv");
        match self.cfg.strategy {
            Strategy::Pooling => {
                let pooled = self.g.resample(z, Resample::AvgPool2)?;
                let out = self.conv(
                    z,
                    &conv,
                    ConvOptions {
                        residual: Some(pooled),
                        ..down
                    },
                )?;
                self.g.release(pooled);
                Ok(out)
            }
            Strategy::Sampling => self.g.resample(z, Resample::Subsample2),
            Strategy::Avgpool => self.g.resample(z, Resample::AvgPool2),
            Strategy::Convpool => self.conv(z, &conv, down),
        }
    }

    /// Decoder of `level` from a `[1, H, W]` token tensor to de-normalized, clamped RGB.
    fn decoder(&mut self, tokens: Tensor, level: usize) -> Result<Tensor> {
        let cfg = self.cfg;
        let w = self.w;
        let p = format!("decoders.{level}");
        let e = self
            .g
            .codebook_gather(tokens, &w.codebook, cfg.codebook_size, cfg.codebook_dim)?;
        let mut h = self.conv(e, &format!("{p}.conv_in"), ConvOptions::SAME)?;
        self.g.release(e);
        h = self.mid(h, &format!("{p}.mid"))?;
        let stages = cfg.decoder_stage_mults(level).len();
        for s in 0..stages {
            for j in 0..cfg.decoder_res_blocks {
                h = self.res_block(h, &format!("{p}.up.{s}.block.{j}"))?;
            }
            if s + 1 != stages {
                let up = ConvOptions {
                    upsample: true,
                    ..ConvOptions::SAME
                };
                let next = self.conv(h, &format!("{p}.up.{s}.upsample.conv"), up)?;
                self.g.release(h);
                h = next;
            }
        }
        let out = self.norm_conv(
            h,
            &format!("{p}.norm_out"),
            &format!("{p}.conv_out"),
            true,
            ConvOptions::SAME,
        )?;
        self.g.release(h);
        let rgb = self.g.channel_affine(out, &w.denormalize, true)?;
        self.g.release(out);
        Ok(rgb)
    }
}
