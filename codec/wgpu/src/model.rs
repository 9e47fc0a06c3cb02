//! The whole model on the device: weights uploaded once, the model's programs
//! ([`hvq_spec::graph`]) lowered to kernels, one cached graph per input shape.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::sync::{Mutex, PoisonError};

use hvq_spec::graph::{self, Data, ModelGraph, Node, Op, Output, ParamId, Program, Value};
use hvq_spec::op_params::Padding;
use hvq_spec::{FeatureMap, ModelConfig, TokenGrid, Weights};
use wgpu::util::DeviceExt;

use crate::context::GpuContext;
use crate::error::{GpuError, Result};
use crate::graph::{ConvOptions, ConvWeights, Elem, FusedNorm, Graph, Pad, Resample, Tensor};
use crate::profile::Profile;
use crate::shaders::Precision;

/// Weights as device buffers, by graph parameter.
struct DeviceWeights {
    /// Kernel and bias of each convolution, by the kernel's parameter.
    convs: HashMap<ParamId, ConvWeights>,
    /// An attention block's q, k and v projections as one 1×1 convolution, by q's kernel.
    qkv: HashMap<ParamId, ConvWeights>,
    /// gamma‖beta of each norm, by gamma.
    norms: HashMap<ParamId, wgpu::Buffer>,
    /// The shared codebook.
    codebook: wgpu::Buffer,
    /// 1/std ‖ −mean/std: the input normalization.
    normalize: wgpu::Buffer,
    /// std ‖ mean: the output de-normalization.
    denormalize: wgpu::Buffer,
}

/// Which graph a cached plan runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PlanKey {
    /// The encoder on `batch` padded `height × width` images, computing `wanted`.
    Encode {
        batch: usize,
        height: usize,
        width: usize,
        wanted: Vec<Value>,
    },
    /// Decoder of `level` for `batch` grids of `height × width`.
    Decode {
        batch: usize,
        level: usize,
        height: usize,
        width: usize,
    },
}

/// Plans kept for reuse, most recently used last. Each holds its activation buffers, so a
/// caller that feeds many image sizes (a folder of photos) must not keep one per size forever.
const MAX_CACHED_PLANS: usize = 6;

/// The default cap on one batch's widest activation (see [`GpuModel::with_batch_bytes`]).
pub const DEFAULT_BATCH_BYTES: u64 = 512 << 20;

/// A built graph with its input and output tensors.
struct Plan {
    graph: Graph,
    /// One per given value, in the order given.
    inputs: Vec<Tensor>,
    outputs: Vec<Tensor>,
}

/// A model whose weights live on a wgpu device.
///
/// Mirrors the CPU model: [`GpuModel::encode_latents`], [`GpuModel::encode`] and
/// [`GpuModel::decode`]; [`GpuModel::encode_batch`] and [`GpuModel::decode_batch`] run many
/// images of one size in the same dispatches, which is what keeps a large GPU busy. Graphs
/// (buffers, bind groups) are built on the first call for an input shape and batch size and
/// replayed on later calls of the same shape (the last few shapes are kept).
pub struct GpuModel {
    ctx: GpuContext,
    config: ModelConfig,
    /// The model's programs with this backend's fusions applied: residual adds into the
    /// convolution before them, GroupNorms into the convolution after them.
    graph: ModelGraph,
    weights: DeviceWeights,
    plans: Mutex<Vec<(PlanKey, Plan)>>,
    /// Most bytes one run's widest activation may take: bounds a batch's device memory.
    batch_bytes: u64,
    /// The element type of activations and convolution weights.
    precision: Precision,
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
    /// Uploads every tensor of `weights` to the device of `ctx`, for kernels in f32: the
    /// model whose tokens match the CPU backend and libtorch.
    ///
    /// # Errors
    /// [`GpuError::LimitExceeded`] when a tensor is larger than a device buffer may be.
    pub fn new(ctx: &GpuContext, weights: &Weights) -> Result<Self> {
        Self::with_precision(ctx, weights, Precision::F32)
    }

    /// [`GpuModel::new`] with activations and convolution weights in `precision`. With
    /// [`Precision::F16`] the quantizer still measures distances in f32, but the latents it
    /// reads have been rounded to f16 layer after layer, so a few tokens differ from the f32
    /// model's (those near a tie) and decoded pixels differ by f16 rounding.
    ///
    /// # Errors
    /// [`GpuError::Unsupported`] for f16 on a device without `shader-f16`; as
    /// [`GpuModel::new`].
    pub fn with_precision(
        ctx: &GpuContext,
        weights: &Weights,
        precision: Precision,
    ) -> Result<Self> {
        ctx.check_precision(precision)?;
        let config = weights.config().clone();
        let mut graph = ModelGraph::new(&config);
        for p in std::iter::once(&mut graph.encoder).chain(&mut graph.decoders) {
            p.fuse_residuals(&[]);
            p.fuse_norms(&[]);
        }
        let dev = DeviceWeights::upload(ctx, weights, &graph, precision)?;
        Ok(GpuModel {
            ctx: ctx.clone(),
            config,
            graph,
            weights: dev,
            plans: Mutex::new(Vec::new()),
            batch_bytes: DEFAULT_BATCH_BYTES,
            precision,
        })
    }

    /// The element type of this model's activations and convolution weights.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Caps the device memory of one batch: [`GpuModel::encode_batch`] and
    /// [`GpuModel::decode_batch`] split their images into runs whose widest activation (the
    /// first ResBlock's, `channels × height × width` activations per image, 4 bytes each in f32
    /// and 2 in f16) stays under `bytes`, and
    /// under the device's buffer limit. A run always holds at least one image.
    #[must_use]
    pub fn with_batch_bytes(mut self, bytes: u64) -> Self {
        self.batch_bytes = bytes;
        self
    }

    /// How many `height × width` images one run takes (see [`GpuModel::with_batch_bytes`]).
    pub fn batch_capacity(&self, height: usize, width: usize) -> usize {
        let per_image = self.widest_bytes(height, width).max(1);
        let limit = self.ctx.buffer_limit().min(self.batch_bytes);
        // At most 65535 images: one dispatch dimension.
        (limit / per_image).clamp(1, 65_535) as usize
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The projected latents `p_l` (codebook dimension `D` channels) of every level, finest
    /// first, of `image`: RGB in `[0, 1]` whose sides are positive multiples of
    /// [`ModelConfig::coarsest_stride`] (edge-pad first, e.g. with `hvq_cpu::ops::pad_edge`).
    ///
    /// # Errors
    /// [`GpuError::Input`] for an image that is not 3-channel or not of an accepted size;
    /// [`GpuError::LimitExceeded`] for one too large for the device; device errors.
    pub async fn encode_latents(&self, image: &FeatureMap) -> Result<Vec<FeatureMap>> {
        self.check_image(image)?;
        let wanted = self.encoder_outputs((0..self.config.levels).map(Output::Latent));
        let key = PlanKey::Encode {
            batch: 1,
            height: image.height,
            width: image.width,
            wanted,
        };
        let out = self
            .run_cached(key, bytemuck::cast_slice(&image.data))
            .await?;
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
    /// [`GpuError::Input`] for a level the model lacks; otherwise as
    /// [`GpuModel::encode_latents`].
    pub async fn encode(&self, image: &FeatureMap, levels: &[usize]) -> Result<Vec<TokenGrid>> {
        let mut out = self
            .encode_batch(std::slice::from_ref(image), levels)
            .await?;
        Ok(out.pop().unwrap_or_default())
    }

    /// [`GpuModel::encode`] of every image of `images`, which must all have the same size: one
    /// `Vec` of grids per image, in order. The images run together, as many per run as
    /// [`GpuModel::batch_capacity`] allows; each image's tokens are exactly the ones
    /// [`GpuModel::encode`] gives it alone (every kernel treats the images independently and
    /// in the same arithmetic order).
    ///
    /// # Errors
    /// [`GpuError::BadInput`] when the images differ in size; otherwise as
    /// [`GpuModel::encode`], for the first image that fails.
    pub async fn encode_batch(
        &self,
        images: &[FeatureMap],
        levels: &[usize],
    ) -> Result<Vec<Vec<TokenGrid>>> {
        self.config.check_levels(levels)?;
        for image in images {
            self.check_image(image)?;
        }
        let Some(first) = images.first() else {
            return Ok(Vec::new());
        };
        same_size("encode_batch", images.iter().map(|m| (m.height, m.width)))?;
        if levels.is_empty() {
            return Ok(vec![Vec::new(); images.len()]);
        }
        let wanted = self.encoder_outputs(levels.iter().map(|&l| Output::Tokens(l)));
        let capacity = self.batch_capacity(first.height, first.width);
        self.in_runs(images, capacity, |run| {
            let key = PlanKey::Encode {
                batch: run.len(),
                height: first.height,
                width: first.width,
                wanted: wanted.clone(),
            };
            let input: Vec<f32> = run.iter().flat_map(|m| m.data.iter().copied()).collect();
            async move {
                let out = self.run_cached(key, bytemuck::cast_slice(&input)).await?;
                Ok(split_images(run.len(), &out, |output, t, bytes| {
                    to_grid(levels[output], t, bytes)
                }))
            }
        })
        .await
    }

    /// The device time of every dispatch of one [`GpuModel::encode_batch`] run of `images`
    /// (all the same size, as many as one run holds) computing `levels`, with each dispatch's
    /// FLOPs and minimum traffic: where the time goes, kernel by kernel. Each dispatch runs in a
    /// pass of its own here (timestamps are taken at pass boundaries), so the total can exceed
    /// a plain run's device time by that overhead.
    ///
    /// # Errors
    /// [`GpuError::Unsupported`] on a device without `timestamp-query`;
    /// [`GpuError::BadInput`] for more images than one run holds or of mixed sizes; otherwise
    /// as [`GpuModel::encode_batch`].
    pub async fn profile_encode(&self, images: &[FeatureMap], levels: &[usize]) -> Result<Profile> {
        self.config.check_levels(levels)?;
        for image in images {
            self.check_image(image)?;
        }
        same_size("profile_encode", images.iter().map(|m| (m.height, m.width)))?;
        let first = one_run("profile_encode", images, |m| {
            self.batch_capacity(m.height, m.width)
        })?;
        let key = PlanKey::Encode {
            batch: images.len(),
            height: first.height,
            width: first.width,
            wanted: self.encoder_outputs(levels.iter().map(|&l| Output::Tokens(l))),
        };
        let input: Vec<f32> = images.iter().flat_map(|m| m.data.iter().copied()).collect();
        self.profile_cached(key, bytemuck::cast_slice(&input)).await
    }

    /// [`GpuModel::profile_encode`] for one [`GpuModel::decode_batch`] run of `grids`.
    ///
    /// # Errors
    /// As [`GpuModel::profile_encode`], and as [`GpuModel::decode_batch`].
    pub async fn profile_decode(&self, grids: &[TokenGrid]) -> Result<Profile> {
        for grid in grids {
            self.config.check_grid(grid)?;
        }
        same_size("profile_decode", grids.iter().map(|g| (g.height, g.width)))?;
        let first = one_run("profile_decode", grids, |g| {
            let stride = self.config.level_stride(g.level);
            self.batch_capacity(g.height * stride, g.width * stride)
        })?;
        if grids.iter().any(|g| g.level != first.level) {
            return Err(GpuError::BadInput {
                op: "profile_decode",
                reason: "grids of different levels".into(),
            });
        }
        let key = PlanKey::Decode {
            batch: grids.len(),
            level: first.level,
            height: first.height,
            width: first.width,
        };
        let input: Vec<u32> = grids
            .iter()
            .flat_map(|g| g.tokens.iter().copied())
            .collect();
        self.profile_cached(key, bytemuck::cast_slice(&input)).await
    }

    /// The image (RGB in `[0, 1]`, `stride(level)` times the grid size) that `grid`'s
    /// decoder rebuilds from its tokens alone.
    ///
    /// # Errors
    /// [`GpuError::Input`] for a level the model lacks, a grid whose token count is not
    /// `height × width` or is empty, or a token outside the codebook; limits, device errors.
    pub async fn decode(&self, grid: &TokenGrid) -> Result<FeatureMap> {
        let mut out = self.decode_batch(std::slice::from_ref(grid)).await?;
        out.pop().ok_or(GpuError::ReadbackCancelled)
    }

    /// [`GpuModel::decode`] of every grid of `grids`, which must share their level and size:
    /// one image per grid, in order, each exactly what [`GpuModel::decode`] gives it alone.
    /// Runs are sized as in [`GpuModel::encode_batch`].
    ///
    /// # Errors
    /// [`GpuError::BadInput`] when the grids differ in level or size; otherwise as
    /// [`GpuModel::decode`].
    pub async fn decode_batch(&self, grids: &[TokenGrid]) -> Result<Vec<FeatureMap>> {
        for grid in grids {
            self.config.check_grid(grid)?;
        }
        let Some(first) = grids.first() else {
            return Ok(Vec::new());
        };
        same_size("decode_batch", grids.iter().map(|g| (g.height, g.width)))?;
        if grids.iter().any(|g| g.level != first.level) {
            return Err(GpuError::BadInput {
                op: "decode_batch",
                reason: "grids of different levels".into(),
            });
        }
        let stride = self.config.level_stride(first.level);
        let capacity = self.batch_capacity(first.height * stride, first.width * stride);
        self.in_runs(grids, capacity, |run| {
            let key = PlanKey::Decode {
                batch: run.len(),
                level: first.level,
                height: first.height,
                width: first.width,
            };
            let input: Vec<u32> = run.iter().flat_map(|g| g.tokens.iter().copied()).collect();
            async move {
                let out = self.run_cached(key, bytemuck::cast_slice(&input)).await?;
                split_images(run.len(), &out, |_, t, bytes| to_map(t, bytes))
                    .into_iter()
                    .map(|mut maps| maps.pop().ok_or(GpuError::ReadbackCancelled))
                    .collect()
            }
        })
        .await
    }

    /// Runs `items` in runs of at most `capacity`, one after another, concatenating the
    /// results of `run_one` in order.
    async fn in_runs<'a, T, R, F, Fut>(
        &'a self,
        items: &'a [T],
        capacity: usize,
        mut run_one: F,
    ) -> Result<Vec<R>>
    where
        F: FnMut(&'a [T]) -> Fut,
        Fut: Future<Output = Result<Vec<R>>> + 'a,
    {
        let mut out = Vec::with_capacity(items.len());
        for run in items.chunks(capacity.max(1)) {
            out.extend(run_one(run).await?);
        }
        Ok(out)
    }

    /// Runs any program of this model's graph (e.g. one without the backend's fusions, from
    /// [`ModelGraph::new`]) from the `given` values to the `wanted` ones. Not cached: for tests
    /// that compare backends value by value (give a node its inputs, want its output).
    ///
    /// # Errors
    /// [`GpuError::BadInput`] for a program that reads a value it neither computes nor is
    /// given; limits and device errors.
    pub async fn run(
        &self,
        program: &Program,
        given: &[(Value, Data)],
        wanted: &[Value],
    ) -> Result<Vec<Data>> {
        let shapes: Vec<(Value, (usize, usize, usize))> =
            given.iter().map(|(v, d)| (*v, data_shape(d))).collect();
        let mut plan = self.lower_checked(program, 1, &shapes, wanted).await?;
        let uploads: Vec<(Tensor, &[u8])> = plan
            .inputs
            .iter()
            .zip(given)
            .map(|(&t, (_, d))| {
                let bytes: &[u8] = match d {
                    Data::Map(m) => bytemuck::cast_slice(&m.data),
                    Data::Tokens(g) => bytemuck::cast_slice(&g.tokens),
                };
                (t, bytes)
            })
            .collect();
        let out = plan.graph.run(&uploads, &plan.outputs).await?;
        Ok(wanted
            .iter()
            .zip(plan.outputs.iter().zip(out))
            .map(|(&v, (&t, bytes))| match program.node(v).kind {
                graph::ValueKind::Tokens => Data::Tokens(to_grid(0, t, &bytes)),
                graph::ValueKind::Features => Data::Map(to_map(t, &bytes)),
            })
            .collect())
    }

    fn encoder_outputs(&self, which: impl Iterator<Item = Output>) -> Vec<Value> {
        which
            .map(|o| {
                self.graph
                    .encoder
                    .output(o)
                    .expect("the encoder names every level's outputs")
            })
            .collect()
    }

    /// The shared input checks, plus this device's buffer limit.
    fn check_image(&self, image: &FeatureMap) -> Result<()> {
        self.config.check_image(image)?;
        self.ctx
            .check_buffer_size(self.widest_bytes(image.height, image.width))
    }

    /// Bytes of one image's widest activation: the first ResBlock's, at full resolution.
    fn widest_bytes(&self, height: usize, width: usize) -> u64 {
        (self.config.channels * height * width * self.precision.bytes()) as u64
    }

    /// Runs the plan for `key` (building it on first use) with `input` (the whole batch)
    /// uploaded; each output's bytes hold the whole batch.
    async fn run_cached(&self, key: PlanKey, input: &[u8]) -> Result<Vec<(Tensor, Vec<u8>)>> {
        let mut plan = self.take_plan(&key).await?;
        let result = plan
            .graph
            .run(&[(plan.inputs[0], input)], &plan.outputs)
            .await;
        let outputs = plan.outputs.clone();
        self.put_plan(key, plan);
        Ok(outputs.into_iter().zip(result?).collect())
    }

    /// The cached plan for `key`, taken out of the cache (or built). Taking it out while it
    /// runs keeps two concurrent calls of the same shape from sharing buffers: the second
    /// builds its own.
    async fn take_plan(&self, key: &PlanKey) -> Result<Plan> {
        let taken = {
            let mut plans = self.lock_plans();
            let at = plans.iter().position(|(k, _)| k == key);
            at.map(|i| plans.remove(i).1)
        };
        match taken {
            Some(plan) => Ok(plan),
            None => self.build(key).await,
        }
    }

    /// Returns a plan to the cache as the most recently used, dropping the oldest beyond
    /// [`MAX_CACHED_PLANS`].
    fn put_plan(&self, key: PlanKey, plan: Plan) {
        let mut plans = self.lock_plans();
        plans.push((key, plan));
        if plans.len() > MAX_CACHED_PLANS {
            plans.remove(0);
        }
    }

    /// Runs the plan for `key` once with timestamps around every dispatch.
    async fn profile_cached(&self, key: PlanKey, input: &[u8]) -> Result<Profile> {
        if !self.ctx.supports_timestamps() {
            return Err(GpuError::Unsupported {
                what: "kernel timings",
                needs: "timestamp-query",
                adapter: self.ctx.adapter_info().name.clone(),
            });
        }
        let mut plan = self.take_plan(&key).await?;
        let result = plan.graph.profile(&[(plan.inputs[0], input)]).await;
        self.put_plan(key, plan);
        Ok(Profile {
            dispatches: result?,
        })
    }

    fn lock_plans(&self) -> std::sync::MutexGuard<'_, Vec<(PlanKey, Plan)>> {
        // Entries are inserted and removed whole; a panic elsewhere cannot leave one half-made.
        self.plans.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn build(&self, key: &PlanKey) -> Result<Plan> {
        match key {
            PlanKey::Encode {
                batch,
                height,
                width,
                wanted,
            } => {
                let e = &self.graph.encoder;
                let image = (self.config.in_channels, *height, *width);
                self.lower_checked(e, *batch, &[(e.input, image)], wanted)
                    .await
            }
            PlanKey::Decode {
                batch,
                level,
                height,
                width,
            } => {
                let d = &self.graph.decoders[*level];
                let image = d.output(Output::Image).expect("decoders name their image");
                let grid = (1, *height, *width);
                self.lower_checked(d, *batch, &[(d.input, grid)], &[image])
                    .await
            }
        }
    }

    /// [`GpuModel::lower`] inside a validation error scope, so that a kernel the device
    /// refuses is an error here rather than a failure at the first run.
    async fn lower_checked(
        &self,
        program: &Program,
        batch: usize,
        given: &[(Value, (usize, usize, usize))],
        wanted: &[Value],
    ) -> Result<Plan> {
        let scope = self
            .ctx
            .device()
            .push_error_scope(wgpu::ErrorFilter::Validation);
        let built = self.lower(program, batch, given, wanted);
        if let Some(source) = scope.pop().await {
            return Err(GpuError::Device {
                during: "building kernels",
                source,
            });
        }
        built
    }

    /// Lowers the nodes of `program` that `wanted` needs to kernels for batches of `batch`
    /// images, one node after another, returning each buffer to the free list after the
    /// value's last reader.
    fn lower(
        &self,
        program: &Program,
        batch: usize,
        given: &[(Value, (usize, usize, usize))],
        wanted: &[Value],
    ) -> Result<Plan> {
        let mut g = Graph::new(&self.ctx, batch, self.precision);
        let mut values: Vec<Option<Tensor>> = vec![None; program.nodes.len()];
        let mut inputs = Vec::with_capacity(given.len());
        for &(v, (c, h, w)) in given {
            let elem = match program.node(v).kind {
                graph::ValueKind::Tokens => Elem::U32,
                graph::ValueKind::Features => Elem::Act,
            };
            let t = g.alloc_as(elem, c, h, w)?;
            values[v.0] = Some(t);
            inputs.push(t);
        }
        let ids: Vec<Value> = given.iter().map(|(v, _)| *v).collect();
        let plan = program.schedule(wanted, &ids);
        for (&i, frees) in plan.order.iter().zip(&plan.frees) {
            let out = self.lower_node(&mut g, program, &program.nodes[i], &values)?;
            for v in frees {
                if let Some(t) = values[v.0].take() {
                    g.release(t);
                }
            }
            values[i] = Some(out);
        }
        let outputs = wanted
            .iter()
            .map(|v| values[v.0].ok_or_else(|| missing(program, *v)))
            .collect::<Result<_>>()?;
        Ok(Plan {
            graph: g,
            inputs,
            outputs,
        })
    }

    fn lower_node(
        &self,
        g: &mut Graph,
        program: &Program,
        node: &Node,
        values: &[Option<Tensor>],
    ) -> Result<Tensor> {
        let arg = |k: usize| {
            let v = node.inputs[k];
            values[v.0].ok_or_else(|| missing(program, v))
        };
        let w = &self.weights;
        match &node.op {
            Op::Input => Err(missing(program, program.input)),
            Op::Normalize => g.channel_affine(arg(0)?, &w.normalize, false),
            Op::Denormalize => g.channel_affine(arg(0)?, &w.denormalize, true),
            Op::Conv {
                affine,
                params,
                norm,
            } => {
                let residual = match node.inputs.get(1) {
                    Some(_) => Some(arg(1)?),
                    None => None,
                };
                let o = ConvOptions {
                    stride: params.stride,
                    pad: match params.padding {
                        Padding::Same => Pad::Same,
                        Padding::DownsampleRightBottom => Pad::RightBottom,
                    },
                    upsample: params.upsample,
                    norm: None,
                    residual,
                };
                self.conv(g, arg(0)?, &w.convs[&affine.weight], *norm, o)
            }
            Op::GroupNorm(n) => {
                let x = arg(0)?;
                let coef = self.norm_stats(g, x, n)?;
                let out = g.group_norm_apply(
                    x,
                    FusedNorm {
                        coef,
                        swish: n.swish,
                    },
                );
                g.release(coef);
                out
            }
            Op::Add => g.add(arg(0)?, arg(1)?),
            Op::AvgPool2 => g.resample(arg(0)?, Resample::AvgPool2),
            Op::Subsample2 => g.resample(arg(0)?, Resample::Subsample2),
            Op::Attention(a) => {
                let x = arg(0)?;
                let qkv = &w.qkv[&a.q.weight];
                let qkv = self.conv(g, x, qkv, Some(a.norm), ConvOptions::SAME)?;
                let mixed = g.attention(qkv)?;
                g.release(qkv);
                let o = ConvOptions {
                    residual: Some(x),
                    ..ConvOptions::SAME
                };
                let out = self.conv(g, mixed, &w.convs[&a.proj_out.weight], None, o);
                g.release(mixed);
                out
            }
            Op::NearestCode { .. } => {
                g.codebook_search(arg(0)?, &w.codebook, self.config.codebook_size, None)
            }
            Op::GatherCode { .. } => g.codebook_gather(
                arg(0)?,
                &w.codebook,
                self.config.codebook_size,
                self.config.codebook_dim,
            ),
        }
    }

    /// A convolution, with a GroupNorm (and swish) fused into its input when `norm` is given.
    fn conv(
        &self,
        g: &mut Graph,
        x: Tensor,
        weights: &ConvWeights,
        norm: Option<graph::Norm>,
        o: ConvOptions,
    ) -> Result<Tensor> {
        let Some(n) = norm else {
            return g.conv(x, weights, o);
        };
        let coef = self.norm_stats(g, x, &n)?;
        let fused = FusedNorm {
            coef,
            swish: n.swish,
        };
        let out = g.conv(
            x,
            weights,
            ConvOptions {
                norm: Some(fused),
                ..o
            },
        );
        g.release(coef);
        out
    }

    fn norm_stats(&self, g: &mut Graph, x: Tensor, n: &graph::Norm) -> Result<Tensor> {
        g.group_norm_stats(x, &self.weights.norms[&n.gamma], n.groups, graph::NORM_EPS)
    }
}

/// A program reads a value that is neither computed nor given: a caller's bug, as an error.
fn missing(program: &Program, v: Value) -> GpuError {
    GpuError::BadInput {
        op: "program",
        reason: format!(
            "value {} ({:?}) is read but neither given nor computed",
            v.0,
            program.node(v).op
        ),
    }
}

/// The first of `items`, which must be at least one and at most what one run holds
/// (`capacity` of the first item).
fn one_run<'a, T>(
    op: &'static str,
    items: &'a [T],
    capacity: impl Fn(&T) -> usize,
) -> Result<&'a T> {
    let Some(first) = items.first() else {
        return Err(GpuError::BadInput {
            op,
            reason: "nothing to profile".into(),
        });
    };
    let most = capacity(first);
    if items.len() > most {
        return Err(GpuError::BadInput {
            op,
            reason: format!("{} items, one run holds {most}", items.len()),
        });
    }
    Ok(first)
}

/// Fails unless every item has the same `(height, width)`.
fn same_size(op: &'static str, mut sizes: impl Iterator<Item = (usize, usize)>) -> Result<()> {
    let first = sizes.next();
    match sizes.find(|s| Some(*s) != first) {
        Some(_) => Err(GpuError::BadInput {
            op,
            reason: "items of different sizes (run each size on its own)".into(),
        }),
        None => Ok(()),
    }
}

/// Splits each output (a whole batch of `batch` images) into its images: per image, one
/// `make(output index, tensor, that image's bytes)` per output, in output order.
fn split_images<R>(
    batch: usize,
    outputs: &[(Tensor, Vec<u8>)],
    mut make: impl FnMut(usize, Tensor, &[u8]) -> R,
) -> Vec<Vec<R>> {
    let mut per_image: Vec<Vec<R>> = (0..batch).map(|_| Vec::new()).collect();
    for (output, (t, bytes)) in outputs.iter().enumerate() {
        let each = (t.len() * 4).max(1);
        for (image, chunk) in bytes.chunks_exact(each).take(batch).enumerate() {
            per_image[image].push(make(output, *t, chunk));
        }
    }
    per_image
}

fn data_shape(input: &Data) -> (usize, usize, usize) {
    match input {
        Data::Map(m) => (m.channels, m.height, m.width),
        Data::Tokens(g) => (1, g.height, g.width),
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

fn to_grid(level: usize, t: Tensor, bytes: &[u8]) -> TokenGrid {
    TokenGrid {
        level,
        height: t.height,
        width: t.width,
        tokens: bytemuck::pod_collect_to_vec(bytes),
    }
}

impl DeviceWeights {
    /// Uploads what the programs of `graph` read: every convolution, every norm, each attention
    /// block's q/k/v concatenated into one kernel, the codebook and the normalization constants.
    fn upload(
        ctx: &GpuContext,
        weights: &Weights,
        graph: &ModelGraph,
        precision: Precision,
    ) -> Result<Self> {
        let cfg = weights.config();
        let t = |id: ParamId| weights.tensor(&graph.param(id).name);
        let mut dev = DeviceWeights {
            convs: HashMap::new(),
            qkv: HashMap::new(),
            norms: HashMap::new(),
            codebook: storage(ctx, "codebook", &weights.tensor("quantizer.codebook").data)?,
            normalize: storage(ctx, "normalize", &normalization(cfg))?,
            denormalize: storage(ctx, "denormalize", &[cfg.std, cfg.mean].concat())?,
        };
        let add_conv = |dev: &mut Self, a: &graph::Affine| -> Result<()> {
            if let Entry::Vacant(slot) = dev.convs.entry(a.weight) {
                let (w, b) = (t(a.weight), t(a.bias));
                slot.insert(conv_weights(ctx, precision, &w.data, &b.data, &w.shape)?);
            }
            Ok(())
        };
        let add_norm = |dev: &mut Self, n: &graph::Norm| -> Result<()> {
            if let Entry::Vacant(slot) = dev.norms.entry(n.gamma) {
                let affine = [t(n.gamma).data.as_slice(), &t(n.beta).data].concat();
                slot.insert(storage(ctx, "norm", &affine)?);
            }
            Ok(())
        };
        let programs = std::iter::once(&graph.encoder).chain(&graph.decoders);
        for node in programs.flat_map(|p| &p.nodes) {
            match &node.op {
                Op::Conv { affine, norm, .. } => {
                    add_conv(&mut dev, affine)?;
                    if let Some(n) = norm {
                        add_norm(&mut dev, n)?;
                    }
                }
                Op::GroupNorm(n) => add_norm(&mut dev, n)?,
                Op::Attention(a) => {
                    add_norm(&mut dev, &a.norm)?;
                    add_conv(&mut dev, &a.proj_out)?;
                    let parts = [a.q, a.k, a.v];
                    let w: Vec<f32> = parts
                        .iter()
                        .flat_map(|p| t(p.weight).data.clone())
                        .collect();
                    let b: Vec<f32> = parts.iter().flat_map(|p| t(p.bias).data.clone()).collect();
                    let c = t(a.q.weight).shape[1];
                    let fused = conv_weights(ctx, precision, &w, &b, &[3 * c, c, 1, 1])?;
                    dev.qkv.insert(a.q.weight, fused);
                }
                _ => {}
            }
        }
        Ok(dev)
    }
}

/// 1/std ‖ −mean/std per channel.
fn normalization(cfg: &ModelConfig) -> Vec<f32> {
    let inv = cfg.std.map(|s| 1.0 / s);
    let shift: Vec<f32> = cfg.mean.iter().zip(&cfg.std).map(|(m, s)| -m / s).collect();
    [inv.as_slice(), &shift].concat()
}

/// An f32 storage buffer holding `data`.
pub(crate) fn storage(ctx: &GpuContext, label: &str, data: &[f32]) -> Result<wgpu::Buffer> {
    // Empty bindings are invalid; a lone zero stands in.
    let contents: &[f32] = if data.is_empty() { &[0.0] } else { data };
    storage_bytes(ctx, label, bytemuck::cast_slice(contents))
}

/// A storage buffer of `act` values (`precision`) holding `data`.
pub(crate) fn storage_act(
    ctx: &GpuContext,
    precision: Precision,
    label: &str,
    data: &[f32],
) -> Result<wgpu::Buffer> {
    match precision {
        Precision::F32 => storage(ctx, label, data),
        Precision::F16 => {
            let mut half: Vec<u16> = data
                .iter()
                .map(|&v| half::f16::from_f32(v).to_bits())
                .collect();
            // Buffers are whole 4-byte words (and never empty).
            if half.len() % 2 == 1 || half.is_empty() {
                half.push(0);
            }
            storage_bytes(ctx, label, bytemuck::cast_slice(&half))
        }
    }
}

fn storage_bytes(ctx: &GpuContext, label: &str, contents: &[u8]) -> Result<wgpu::Buffer> {
    ctx.check_buffer_size(contents.len() as u64)?;
    Ok(ctx
        .device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        }))
}

/// A convolution's weights: the kernel in `precision`, the bias in f32.
pub(crate) fn conv_weights(
    ctx: &GpuContext,
    precision: Precision,
    w: &[f32],
    b: &[f32],
    shape: &[usize],
) -> Result<ConvWeights> {
    Ok(ConvWeights {
        weight: storage_act(ctx, precision, "conv weight", w)?,
        bias: storage(ctx, "conv bias", b)?,
        cout: shape[0],
        cin: shape[1],
        ks: shape[2],
    })
}
