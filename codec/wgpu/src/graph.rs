//! Records a sequence of kernel dispatches over device buffers: the executable form of a model
//! (or of one kernel) for one input shape, built once and replayed.

use std::sync::Arc;

use wgpu::util::DeviceExt;

use crate::context::{GpuContext, Pipeline};
use crate::error::{GpuError, Result};
use crate::profile::Timing;
use crate::shaders::{Overrides, Precision};
use crate::uniforms::{
    AddParams, AttentionParams, ChannelAffineParams, CodebookArgminParams, CodebookGatherParams,
    CodebookSearchParams, Conv2dParams, GroupNormApplyParams, GroupNormStatsParams, ResampleParams,
    Uniform,
};

/// Invocations per workgroup of the one-element-per-invocation kernels.
const ELEMENTWISE_WG: u32 = 256;

/// Positions per codebook-search workgroup (64 invocations of 4).
const SEARCH_POSITIONS: usize = 256;
/// Workgroups a codebook search should offer the device at least: enough to fill a large GPU
/// (an H100 has 132 multiprocessors, each running several workgroups at once).
const SEARCH_TARGET_WORKGROUPS: usize = 1024;
/// Fewest entries a split searches, so that the split's winners stay few next to the work.
const SEARCH_MIN_SPAN: usize = 256;

/// How many ways a codebook search over `entries` splits them when its positions make
/// `workgroups` workgroups (all images of the batch together): none when the positions alone
/// fill the device, else enough to reach [`SEARCH_TARGET_WORKGROUPS`], each split keeping at
/// least [`SEARCH_MIN_SPAN`] entries. The level-2 map of a 256×256 image is one workgroup of
/// positions; without splits it would walk all 8192 entries of the `small` codebook on one core.
pub(crate) fn search_splits(workgroups: usize, entries: usize) -> usize {
    let most = entries.div_ceil(SEARCH_MIN_SPAN).max(1);
    SEARCH_TARGET_WORKGROUPS
        .div_ceil(workgroups.max(1))
        .clamp(1, most)
}

/// What a graph buffer holds, element by element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Elem {
    /// Activations: the kernels' `act`, f32 or f16 by the graph's [`Precision`].
    Act,
    /// f32 whatever the precision (GroupNorm coefficients).
    F32,
    /// u32 token indices.
    U32,
}

/// A feature map living in a graph buffer (CHW, or tokens with `channels == 1`): the shape of
/// one image; the buffer holds the graph's whole batch, image after image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tensor {
    pub(crate) id: usize,
    pub(crate) channels: usize,
    pub(crate) height: usize,
    pub(crate) width: usize,
    pub(crate) elem: Elem,
}

impl Tensor {
    /// Elements of one image.
    pub(crate) fn len(&self) -> usize {
        self.channels * self.height * self.width
    }
    pub(crate) fn plane(&self) -> usize {
        self.height * self.width
    }
}

/// A convolution's weights on the device.
#[derive(Debug, Clone)]
pub(crate) struct ConvWeights {
    pub(crate) weight: wgpu::Buffer,
    pub(crate) bias: wgpu::Buffer,
    pub(crate) cin: usize,
    pub(crate) cout: usize,
    pub(crate) ks: usize,
}

/// Where a convolution's implicit zeros go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pad {
    /// `ks / 2` on every side.
    Same,
    /// One row at the bottom and one column at the right (the encoder's down-sampler).
    RightBottom,
}

/// A GroupNorm fused into a convolution's input: the per-channel coefficients that
/// [`Graph::group_norm_stats`] made, and whether swish follows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FusedNorm {
    pub(crate) coef: Tensor,
    pub(crate) swish: bool,
}

/// Everything about one convolution except its input and weights.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvOptions {
    pub(crate) stride: usize,
    pub(crate) pad: Pad,
    pub(crate) upsample: bool,
    pub(crate) norm: Option<FusedNorm>,
    pub(crate) residual: Option<Tensor>,
}

impl ConvOptions {
    pub(crate) const SAME: ConvOptions = ConvOptions {
        stride: 1,
        pad: Pad::Same,
        upsample: false,
        norm: None,
        residual: None,
    };
}

/// The three spatial re-samplings of `resample.wgsl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resample {
    AvgPool2 = 0,
    Subsample2 = 1,
    UpsampleNearest2 = 2,
}

/// What one dispatch does, for profiles: FLOPs as `hvq_spec::flops` counts them (matrix
/// products only), the bytes it must at least read and write, and its shape in words.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cost {
    pub(crate) flops: u64,
    pub(crate) bytes: u64,
    pub(crate) shape: String,
}

struct Step {
    pipeline: Arc<Pipeline>,
    bind_group: wgpu::BindGroup,
    /// Workgroups in x, y and z (z: the images of the batch, for most kernels).
    groups: (u32, u32, u32),
    cost: Cost,
}

/// Buffers and dispatches of one graph. Buffers are recycled through a free list as the
/// builder releases tensors, so a deep model needs only a few activation-sized buffers.
///
/// A graph runs a batch of `batch` images of one shape: every tensor holds `batch` images one
/// after another and every kernel runs them all in one dispatch (workgroup z is the image), so
/// a batch costs as many dispatches as one image and fills a large GPU.
pub(crate) struct Graph {
    ctx: GpuContext,
    batch: usize,
    precision: Precision,
    buffers: Vec<wgpu::Buffer>,
    free: Vec<usize>,
    steps: Vec<Step>,
    dummy: wgpu::Buffer,
    staging: Option<wgpu::Buffer>,
}

impl Graph {
    /// An empty graph for batches of `batch` images (at least 1) with activations in
    /// `precision` (which the caller has checked the device supports).
    pub(crate) fn new(ctx: &GpuContext, batch: usize, precision: Precision) -> Self {
        let dummy = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("unused binding"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        Graph {
            ctx: ctx.clone(),
            batch: batch.max(1),
            precision,
            buffers: Vec::new(),
            free: Vec::new(),
            steps: Vec::new(),
            dummy,
            staging: None,
        }
    }

    /// Bytes of one element of `elem` on the device.
    fn elem_bytes(&self, elem: Elem) -> usize {
        match elem {
            Elem::Act => self.precision.bytes(),
            Elem::F32 | Elem::U32 => 4,
        }
    }

    /// Bytes of a tensor's whole batch as the host sends and receives it: 4 per element (f32
    /// or u32), whatever the device stores.
    pub(crate) fn host_bytes(&self, t: Tensor) -> u64 {
        (t.len() * self.batch) as u64 * 4
    }

    /// Bytes of a tensor's whole batch on the device, rounded up to the 4 bytes that copies
    /// move at a time.
    fn device_bytes(&self, t: Tensor) -> u64 {
        ((t.len() * self.batch * self.elem_bytes(t.elem)) as u64).next_multiple_of(4)
    }

    /// A fresh activation tensor (see [`Graph::alloc_as`]).
    pub(crate) fn alloc(&mut self, channels: usize, height: usize, width: usize) -> Result<Tensor> {
        self.alloc_as(Elem::Act, channels, height, width)
    }

    /// A fresh tensor of `elem`, reusing a released buffer that is large enough (smallest fit
    /// first).
    pub(crate) fn alloc_as(
        &mut self,
        elem: Elem,
        channels: usize,
        height: usize,
        width: usize,
    ) -> Result<Tensor> {
        let n = (channels * height * width * self.batch).max(1);
        let bytes = (n * self.elem_bytes(elem)) as u64;
        self.ctx.check_buffer_size(bytes)?;
        let fit = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, id)| self.buffers[**id].size() >= bytes)
            .min_by_key(|(_, id)| self.buffers[**id].size())
            .map(|(slot, _)| slot);
        let id = match fit {
            Some(slot) => self.free.swap_remove(slot),
            None => {
                self.buffers
                    .push(self.ctx.device().create_buffer(&wgpu::BufferDescriptor {
                        label: Some("activation"),
                        size: bytes.next_multiple_of(16),
                        usage: wgpu::BufferUsages::STORAGE
                            | wgpu::BufferUsages::COPY_SRC
                            | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    }));
                self.buffers.len() - 1
            }
        };
        Ok(Tensor {
            id,
            channels,
            height,
            width,
            elem,
        })
    }

    /// Returns a tensor's buffer to the free list; later steps may overwrite it.
    pub(crate) fn release(&mut self, t: Tensor) {
        debug_assert!(!self.free.contains(&t.id), "tensor released twice");
        self.free.push(t.id);
    }

    /// Records one dispatch of the kernel that `params` belongs to: `params` at binding 0, then
    /// `bindings` in order.
    fn push<U: Uniform>(
        &mut self,
        overrides: Overrides,
        params: &U,
        bindings: &[&wgpu::Buffer],
        groups: (u32, u32, u32),
        cost: Cost,
    ) -> Result<()> {
        let kernel = U::KERNEL;
        let limit = self.ctx.limits().max_compute_workgroups_per_dimension;
        let most = groups.0.max(groups.1).max(groups.2);
        if most > limit {
            return Err(GpuError::LimitExceeded {
                what: "workgroups per dispatch dimension",
                got: u64::from(most),
                limit: u64::from(limit),
            });
        }
        let pipeline = self.ctx.pipeline_now(kernel, overrides, self.precision);
        let params = self
            .ctx
            .device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: bytemuck::bytes_of(params),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: params.as_entire_binding(),
        }];
        for (i, b) in bindings.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: b.as_entire_binding(),
            });
        }
        let bind_group = self
            .ctx
            .device()
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(kernel.name()),
                layout: &pipeline.layout,
                entries: &entries,
            });
        self.steps.push(Step {
            pipeline,
            bind_group,
            groups,
            cost,
        });
        Ok(())
    }

    /// A grid covering `n` invocations of `per_group` for every image: x and y span one
    /// image's invocations (one dimension alone caps at 65535), z the images.
    fn grid(&self, n: usize, per_group: u32) -> (u32, u32, u32) {
        let groups = n.div_ceil(per_group as usize).max(1);
        let max_x = self.ctx.limits().max_compute_workgroups_per_dimension as usize;
        let x = groups.min(max_x);
        (x as u32, groups.div_ceil(x) as u32, self.batch as u32)
    }

    /// A convolution; output size follows PyTorch's formula for the padding and stride.
    pub(crate) fn conv(&mut self, x: Tensor, w: &ConvWeights, o: ConvOptions) -> Result<Tensor> {
        let bad = |reason: String| {
            Err(GpuError::BadInput {
                op: "conv2d",
                reason,
            })
        };
        if x.channels != w.cin {
            return bad(format!(
                "input has {} channels, weights expect {}",
                x.channels, w.cin
            ));
        }
        if w.ks.is_multiple_of(2) || !(1..=2).contains(&o.stride) {
            return bad(format!(
                "kernel size {} / stride {} unsupported (odd sizes, stride 1 or 2)",
                w.ks, o.stride
            ));
        }
        let scale = if o.upsample { 2 } else { 1 };
        let (h, wd) = (x.height * scale, x.width * scale);
        let (top, left, extra) = match o.pad {
            Pad::Same => (w.ks / 2, w.ks / 2, 2 * (w.ks / 2)),
            Pad::RightBottom => (0, 0, 1),
        };
        if h + extra < w.ks || wd + extra < w.ks {
            return bad(format!(
                "input {h}x{wd} is smaller than the {0}x{0} kernel",
                w.ks
            ));
        }
        let h_out = (h + extra - w.ks) / o.stride + 1;
        let w_out = (wd + extra - w.ks) / o.stride + 1;
        if let Some(r) = o.residual
            && (r.channels, r.height, r.width) != (w.cout, h_out, w_out)
        {
            return bad("residual shape differs from the output".into());
        }
        let norm_mode = match o.norm {
            Some(n) if n.coef.len() != 3 * x.channels => {
                return bad("norm coefficients do not match the input".into());
            }
            Some(n) => {
                if n.swish {
                    2
                } else {
                    1
                }
            }
            None => 0,
        };
        let out = self.alloc(w.cout, h_out, w_out)?;
        let params = Conv2dParams {
            cin: x.channels as u32,
            h_in: x.height as u32,
            w_in: x.width as u32,
            cout: w.cout as u32,
            h_out: h_out as u32,
            w_out: w_out as u32,
            stride: o.stride as u32,
            pad_top: top as u32,
            pad_left: left as u32,
            _pad0: 0,
            _pad1: 0,
            _pad2: 0,
        };
        let overrides = Overrides {
            ks: w.ks as u32,
            norm: norm_mode,
            upsample: o.upsample,
            residual: o.residual.is_some(),
            ..Default::default()
        };
        let residual = o.residual.map_or(&self.dummy, |r| &self.buffers[r.id]);
        let norm = o.norm.map_or(&self.dummy, |n| &self.buffers[n.coef.id]);
        let bindings = [
            &self.buffers[x.id],
            &w.weight,
            &w.bias,
            residual,
            norm,
            &self.buffers[out.id],
        ]
        .map(Clone::clone);
        let groups = (
            (h_out * w_out).div_ceil(64) as u32,
            w.cout.div_ceil(64) as u32,
            self.batch as u32,
        );
        let mut bytes = self.traffic(&[x, out]) + w.weight.size() + w.bias.size();
        bytes += o.residual.map_or(0, |r| self.traffic(&[r]));
        bytes += o.norm.map_or(0, |n| self.traffic(&[n.coef]));
        let cost = Cost {
            flops: 2 * (w.cout * w.cin * w.ks * w.ks * h_out * w_out * self.batch) as u64,
            bytes,
            shape: format!(
                "{k}x{k} {} -> {} at {h_out}x{w_out}{}{}{}{}",
                w.cin,
                w.cout,
                if o.stride == 2 { ", stride 2" } else { "" },
                match norm_mode {
                    1 => ", norm",
                    2 => ", norm+swish",
                    _ => "",
                },
                if o.upsample { ", up x2" } else { "" },
                if o.residual.is_some() {
                    ", +residual"
                } else {
                    ""
                },
                k = w.ks,
            ),
        };
        self.push(
            overrides,
            &params,
            &bindings.iter().collect::<Vec<_>>(),
            groups,
            cost,
        )?;
        Ok(out)
    }

    /// GroupNorm statistics as per-channel coefficients (mean, gamma/std, beta: a `3C` tensor).
    pub(crate) fn group_norm_stats(
        &mut self,
        x: Tensor,
        affine: &wgpu::Buffer,
        groups: usize,
        eps: f32,
    ) -> Result<Tensor> {
        if groups == 0 || !x.channels.is_multiple_of(groups) {
            return Err(GpuError::BadInput {
                op: "group_norm",
                reason: format!("{groups} groups do not divide {} channels", x.channels),
            });
        }
        let coef = self.alloc_as(Elem::F32, 3, 1, x.channels)?;
        let per_group = x.channels / groups;
        let params = GroupNormStatsParams {
            count: (per_group * x.plane()) as u32,
            eps,
            channels: x.channels as u32,
            channels_per_group: per_group as u32,
        };
        let b = [
            self.buffers[x.id].clone(),
            affine.clone(),
            self.buffers[coef.id].clone(),
        ];
        // Two passes over the input: the mean, then the squared deviations.
        let cost = Cost {
            flops: 0,
            bytes: 2 * self.traffic(&[x]) + self.traffic(&[coef]),
            shape: format!("{groups} groups of {}x{}x{}", x.channels, x.height, x.width),
        };
        self.push(
            Overrides::default(),
            &params,
            &[&b[0], &b[1], &b[2]],
            (groups as u32, 1, self.batch as u32),
            cost,
        )?;
        Ok(coef)
    }

    /// GroupNorm applied from per-channel coefficients, optionally followed by swish.
    pub(crate) fn group_norm_apply(&mut self, x: Tensor, norm: FusedNorm) -> Result<Tensor> {
        let out = self.alloc(x.channels, x.height, x.width)?;
        let params = GroupNormApplyParams {
            channels: x.channels as u32,
            plane: x.plane() as u32,
            _pad0: 0,
            _pad1: 0,
        };
        let b = [
            self.buffers[x.id].clone(),
            self.buffers[norm.coef.id].clone(),
            self.buffers[out.id].clone(),
        ];
        let grid = self.grid(x.len(), ELEMENTWISE_WG);
        self.push(
            Overrides {
                swish: norm.swish,
                ..Default::default()
            },
            &params,
            &[&b[0], &b[1], &b[2]],
            grid,
            self.elementwise(&[x, norm.coef, out]),
        )?;
        Ok(out)
    }

    /// Element-wise `a + b`.
    pub(crate) fn add(&mut self, a: Tensor, b: Tensor) -> Result<Tensor> {
        if (a.channels, a.height, a.width) != (b.channels, b.height, b.width) {
            return Err(GpuError::BadInput {
                op: "add",
                reason: "operands differ in shape".into(),
            });
        }
        let out = self.alloc(a.channels, a.height, a.width)?;
        let bufs = [
            self.buffers[a.id].clone(),
            self.buffers[b.id].clone(),
            self.buffers[out.id].clone(),
        ];
        // The kernel is flat: one array of every image's elements.
        let len = a.len() * self.batch;
        let (x, y, _) = self.grid(len, ELEMENTWISE_WG);
        self.push(
            Overrides::default(),
            &AddParams {
                len: len as u32,
                _pad0: 0,
                _pad1: 0,
                _pad2: 0,
            },
            &[&bufs[0], &bufs[1], &bufs[2]],
            (x, y, 1),
            self.elementwise(&[a, b, out]),
        )?;
        Ok(out)
    }

    /// Average pool, subsample or nearest up-sample by 2.
    pub(crate) fn resample(&mut self, x: Tensor, mode: Resample) -> Result<Tensor> {
        let (h, w) = match mode {
            Resample::AvgPool2 => (x.height / 2, x.width / 2),
            Resample::Subsample2 => (x.height.div_ceil(2), x.width.div_ceil(2)),
            Resample::UpsampleNearest2 => (x.height * 2, x.width * 2),
        };
        let out = self.alloc(x.channels, h, w)?;
        let params = ResampleParams {
            channels: x.channels as u32,
            h_in: x.height as u32,
            w_in: x.width as u32,
            h_out: h as u32,
            w_out: w as u32,
            _pad0: 0,
            _pad1: 0,
            _pad2: 0,
        };
        let bufs = [self.buffers[x.id].clone(), self.buffers[out.id].clone()];
        let grid = self.grid(out.len(), ELEMENTWISE_WG);
        self.push(
            Overrides {
                mode: mode as u32,
                ..Default::default()
            },
            &params,
            &[&bufs[0], &bufs[1]],
            grid,
            self.elementwise(&[x, out]),
        )?;
        Ok(out)
    }

    /// `x * coef[c] + coef[C + c]` per channel, optionally clamped to [0, 1].
    pub(crate) fn channel_affine(
        &mut self,
        x: Tensor,
        coef: &wgpu::Buffer,
        clamp: bool,
    ) -> Result<Tensor> {
        let out = self.alloc(x.channels, x.height, x.width)?;
        let params = ChannelAffineParams {
            channels: x.channels as u32,
            plane: x.plane() as u32,
            _pad0: 0,
            _pad1: 0,
        };
        let bufs = [
            self.buffers[x.id].clone(),
            coef.clone(),
            self.buffers[out.id].clone(),
        ];
        let grid = self.grid(x.len(), ELEMENTWISE_WG);
        self.push(
            Overrides {
                clamp,
                ..Default::default()
            },
            &params,
            &[&bufs[0], &bufs[1], &bufs[2]],
            grid,
            self.elementwise(&[x, out]),
        )?;
        Ok(out)
    }

    /// Single-head attention from a `[3C, H, W]` map holding q, k and v.
    pub(crate) fn attention(&mut self, qkv: Tensor) -> Result<Tensor> {
        if !qkv.channels.is_multiple_of(3) || qkv.channels == 0 {
            return Err(GpuError::BadInput {
                op: "attention",
                reason: "q/k/v map needs 3·C channels".into(),
            });
        }
        let c = qkv.channels / 3;
        let out = self.alloc(c, qkv.height, qkv.width)?;
        let scale = 1.0 / (c as f32).sqrt();
        let params = AttentionParams {
            channels: c as u32,
            positions: qkv.plane() as u32,
            scale,
            _pad0: 0,
        };
        let bufs = [self.buffers[qkv.id].clone(), self.buffers[out.id].clone()];
        let groups = (qkv.plane().div_ceil(64) as u32, 1, self.batch as u32);
        let n = qkv.plane();
        let cost = Cost {
            // qᵀk and attn·v.
            flops: 2 * 2 * (n * n * c * self.batch) as u64,
            bytes: self.traffic(&[qkv, out]),
            shape: format!("{c} channels, {n} positions"),
        };
        self.push(
            Overrides::default(),
            &params,
            &[&bufs[0], &bufs[1]],
            groups,
            cost,
        )?;
        Ok(out)
    }

    /// Nearest codebook entry per position of `p` (`[D, H, W]`): a `[1, H, W]` u32 tensor.
    /// `splits` divides the entries among that many workgroups per block of positions (then
    /// one more dispatch picks among their winners); `None` picks it from the map's size (see
    /// [`search_splits`]). The tokens are the same bits for any number of splits.
    pub(crate) fn codebook_search(
        &mut self,
        p: Tensor,
        codebook: &wgpu::Buffer,
        entries: usize,
        splits: Option<usize>,
    ) -> Result<Tensor> {
        let blocks = p.plane().div_ceil(SEARCH_POSITIONS);
        let wanted = splits.unwrap_or_else(|| search_splits(blocks * self.batch, entries));
        // Whole tiles per split, and no split left empty.
        let span = entries
            .div_ceil(wanted.clamp(1, entries))
            .next_multiple_of(16);
        let splits = entries.div_ceil(span);
        let out = self.alloc_as(Elem::U32, 1, p.height, p.width)?;
        let (winners, dists) = if splits > 1 {
            (
                Some(self.alloc_as(Elem::U32, splits, p.height, p.width)?),
                Some(self.alloc_as(Elem::F32, splits, p.height, p.width)?),
            )
        } else {
            (None, None)
        };
        let params = CodebookSearchParams {
            dim: p.channels as u32,
            positions: p.plane() as u32,
            entries: entries as u32,
            span: span as u32,
        };
        let args_buf = self.buffers[winners.unwrap_or(out).id].clone();
        let dists_buf = dists.map_or_else(|| self.dummy.clone(), |t| self.buffers[t.id].clone());
        let p_buf = self.buffers[p.id].clone();
        let cost = Cost {
            flops: 2 * (p.plane() * entries * p.channels * self.batch) as u64,
            bytes: self.traffic(&[p, out]) + codebook.size(),
            shape: format!(
                "{} positions x {entries} entries x {} in {splits} split{}",
                p.plane(),
                p.channels,
                if splits == 1 { "" } else { "s" }
            ),
        };
        self.push(
            Overrides::default(),
            &params,
            &[&p_buf, codebook, &args_buf, &dists_buf],
            (blocks as u32, splits as u32, self.batch as u32),
            cost,
        )?;
        if let (Some(winners), Some(dists)) = (winners, dists) {
            let params = CodebookArgminParams {
                positions: p.plane() as u32,
                splits: splits as u32,
                _pad0: 0,
                _pad1: 0,
            };
            let bufs = [
                self.buffers[winners.id].clone(),
                self.buffers[dists.id].clone(),
                self.buffers[out.id].clone(),
            ];
            let grid = self.grid(p.plane(), 256);
            let cost = Cost {
                flops: 0,
                bytes: self.traffic(&[winners, dists, out]),
                shape: format!("{} positions x {splits} splits", p.plane()),
            };
            self.push(
                Overrides::default(),
                &params,
                &[&bufs[0], &bufs[1], &bufs[2]],
                grid,
                cost,
            )?;
            self.release(winners);
            self.release(dists);
        }
        Ok(out)
    }

    /// Codebook rows named by a `[1, H, W]` token tensor: a `[D, H, W]` map.
    pub(crate) fn codebook_gather(
        &mut self,
        tokens: Tensor,
        codebook: &wgpu::Buffer,
        entries: usize,
        dim: usize,
    ) -> Result<Tensor> {
        let out = self.alloc(dim, tokens.height, tokens.width)?;
        let params = CodebookGatherParams {
            dim: dim as u32,
            positions: tokens.plane() as u32,
            entries: entries as u32,
            _pad0: 0,
        };
        let bufs = [
            self.buffers[tokens.id].clone(),
            codebook.clone(),
            self.buffers[out.id].clone(),
        ];
        let grid = self.grid(out.len(), ELEMENTWISE_WG);
        self.push(
            Overrides::default(),
            &params,
            &[&bufs[0], &bufs[1], &bufs[2]],
            grid,
            self.elementwise(&[tokens, out]),
        )?;
        Ok(out)
    }

    /// Bytes of the whole batch of each of `tensors` on the device.
    fn traffic(&self, tensors: &[Tensor]) -> u64 {
        tensors.iter().map(|&t| self.device_bytes(t)).sum()
    }

    /// The cost of a kernel that reads and writes each of `tensors` once and computes no
    /// matrix product.
    fn elementwise(&self, tensors: &[Tensor]) -> Cost {
        let t = tensors.last().copied();
        Cost {
            flops: 0,
            bytes: self.traffic(tensors),
            shape: t.map_or(String::new(), |t| {
                format!("{}x{}x{}", t.channels, t.height, t.width)
            }),
        }
    }

    /// Records every step into one command encoder, in one compute pass: each dispatch is its
    /// own synchronisation scope there, so the device orders dependent dispatches itself,
    /// without the cost of a pass per dispatch.
    pub(crate) fn record(&self, encoder: &mut wgpu::CommandEncoder) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("hvq graph"),
            timestamp_writes: None,
        });
        for step in &self.steps {
            pass.set_pipeline(&step.pipeline.pipeline);
            pass.set_bind_group(0, &step.bind_group, &[]);
            let (x, y, z) = step.groups;
            pass.dispatch_workgroups(x, y, z);
        }
    }

    /// Records every step in a compute pass of its own that writes a timestamp at its start
    /// and end into `queries` (two per step, in order).
    fn record_timed(&self, encoder: &mut wgpu::CommandEncoder, queries: &wgpu::QuerySet) {
        for (i, step) in self.steps.iter().enumerate() {
            let at = 2 * i as u32;
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(step.pipeline.kernel.name()),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: queries,
                    beginning_of_pass_write_index: Some(at),
                    end_of_pass_write_index: Some(at + 1),
                }),
            });
            pass.set_pipeline(&step.pipeline.pipeline);
            pass.set_bind_group(0, &step.bind_group, &[]);
            let (x, y, z) = step.groups;
            pass.dispatch_workgroups(x, y, z);
        }
    }
}

impl Graph {
    /// Uploads `inputs` (each a whole batch of f32 or u32 values, as bytes), runs every step,
    /// and reads `outputs` back (each a whole batch, f32 or u32 as bytes). f16 activations are
    /// converted on the host on the way in and out.
    pub(crate) async fn run(
        &mut self,
        inputs: &[(Tensor, &[u8])],
        outputs: &[Tensor],
    ) -> Result<Vec<Vec<u8>>> {
        self.upload(inputs)?;
        let total: u64 = outputs.iter().map(|&t| self.device_bytes(t)).sum();
        if self.staging.as_ref().is_none_or(|s| s.size() < total) {
            self.ctx.check_buffer_size(total)?;
            self.staging = Some(self.ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: total.max(4),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let mut encoder = self
            .ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("hvq") });
        self.record(&mut encoder);
        let sources: Vec<(&wgpu::Buffer, u64)> = outputs
            .iter()
            .map(|&t| (&self.buffers[t.id], self.device_bytes(t)))
            .collect();
        let staging = self.staging.as_ref().expect("staging buffer created above");
        let read = self.ctx.submit_and_read(encoder, &sources, staging).await?;
        Ok(outputs
            .iter()
            .zip(read)
            .map(|(&t, bytes)| self.to_host(t, bytes))
            .collect())
    }

    /// Writes host values (4 bytes each) into their tensors' buffers.
    fn upload(&mut self, inputs: &[(Tensor, &[u8])]) -> Result<()> {
        for (t, bytes) in inputs {
            if bytes.len() as u64 != self.host_bytes(*t) {
                return Err(GpuError::BadInput {
                    op: "graph input",
                    reason: format!(
                        "{} bytes for a tensor of {} ({} images)",
                        bytes.len(),
                        self.host_bytes(*t),
                        self.batch
                    ),
                });
            }
            let device = self.to_device(*t, bytes);
            self.ctx
                .queue()
                .write_buffer(&self.buffers[t.id], 0, &device);
        }
        Ok(())
    }

    /// Uploads `inputs`, runs every step with a timestamp before and after it, and returns
    /// each step's device time with its cost, in order.
    ///
    /// Each step runs in a pass of its own here (timestamps are written at pass boundaries),
    /// so the sum can exceed a plain run's time by the passes' overhead.
    pub(crate) async fn profile(&mut self, inputs: &[(Tensor, &[u8])]) -> Result<Vec<Timing>> {
        self.upload(inputs)?;
        let count = 2 * self.steps.len();
        if count as u32 > wgpu::QUERY_SET_MAX_QUERIES {
            return Err(GpuError::LimitExceeded {
                what: "timestamp queries per profile",
                got: count as u64,
                limit: u64::from(wgpu::QUERY_SET_MAX_QUERIES),
            });
        }
        let device = self.ctx.device();
        let queries = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("kernel timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: count.max(2) as u32,
        });
        let bytes = (count.max(2) * 8) as u64;
        let resolved = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("resolved timestamps"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamp readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("hvq profile"),
        });
        self.record_timed(&mut encoder, &queries);
        encoder.resolve_query_set(&queries, 0..count as u32, &resolved, 0);
        let read = self
            .ctx
            .submit_and_read(encoder, &[(&resolved, bytes)], &staging)
            .await?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&read[0]);
        let period = f64::from(self.ctx.queue().get_timestamp_period());
        Ok(self
            .steps
            .iter()
            .zip(ticks.chunks_exact(2))
            .map(|(step, t)| Timing {
                kernel: step.pipeline.kernel.name(),
                shape: step.cost.shape.clone(),
                ns: t[1].saturating_sub(t[0]) as f64 * period,
                flops: step.cost.flops,
                bytes: step.cost.bytes,
            })
            .collect())
    }

    /// Whether `t` is stored as f16 on the device.
    fn is_half(&self, t: Tensor) -> bool {
        t.elem == Elem::Act && self.precision == Precision::F16
    }

    /// The device bytes of host values (4 bytes each): f16 for half tensors (padded to 4
    /// bytes), the same bytes otherwise.
    fn to_device<'a>(&self, t: Tensor, host: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        if !self.is_half(t) {
            return host.into();
        }
        let mut half: Vec<u16> = host
            .chunks_exact(4)
            .map(|b| half::f16::from_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]])).to_bits())
            .collect();
        if half.len() % 2 == 1 {
            half.push(0);
        }
        bytemuck::cast_slice(&half).to_vec().into()
    }

    /// Host bytes (4 per element) of what was read back for `t`.
    fn to_host(&self, t: Tensor, device: Vec<u8>) -> Vec<u8> {
        let n = t.len() * self.batch;
        if !self.is_half(t) {
            let mut device = device;
            device.truncate(n * 4);
            return device;
        }
        device
            .chunks_exact(2)
            .take(n)
            .flat_map(|b| {
                half::f16::from_bits(u16::from_le_bytes([b[0], b[1]]))
                    .to_f32()
                    .to_le_bytes()
            })
            .collect()
    }
}
