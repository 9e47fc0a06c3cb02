//! [`Codec`]: a model on a backend, with encode and decode entry points.

use std::sync::Arc;

use hvq_format::Priors;
use hvq_spec::{ModelConfig, TokenGrid, Weights};

use crate::backend::{Engine, SharedContext};
use crate::model::priors_of;
use crate::tiling::{self, Assembler, Plan, Span};
use crate::{
    Backend, BackendKind, CodecError, LevelSelection, Limits, Progress, Result, RgbImage, Tiling,
};

/// The tokens of one image: its original size and one grid per encoded level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// Width of the original image in pixels (before edge padding).
    pub width: u32,
    /// Height of the original image in pixels.
    pub height: u32,
    /// One grid per level, finest first (ascending level).
    pub grids: Vec<TokenGrid>,
}

impl Tokens {
    /// The grid of `level`, if it was encoded.
    pub fn level(&self, level: usize) -> Option<&TokenGrid> {
        self.grids.iter().find(|g| g.level == level)
    }

    /// The finest level present (the best image these tokens give).
    pub fn finest(&self) -> Option<&TokenGrid> {
        self.grids.iter().min_by_key(|g| g.level)
    }

    /// The levels present, ascending.
    pub fn levels(&self) -> Vec<usize> {
        let mut l: Vec<usize> = self.grids.iter().map(|g| g.level).collect();
        l.sort_unstable();
        l
    }
}

/// An image decoded from a `.hvq` file, with the level it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedImage {
    /// The image, at the file's original size.
    pub image: RgbImage,
    /// The level that was decoded (0 = finest).
    pub level: usize,
    /// Whether the file ended inside a chunk (a progressive prefix); the partial chunk was ignored.
    pub truncated: bool,
}

/// Options for a [`Codec`]; made by [`Codec::builder`], [`Codec::from_weight_bytes`] or
/// [`Codec::default_model`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` or `build_async` is called"]
pub struct CodecBuilder {
    weights: Arc<Weights>,
    backend: Backend,
    limits: Limits,
    tiling: Tiling,
    gpu: SharedContext,
    gpu_f16: bool,
    rd_lambda: f64,
}

impl CodecBuilder {
    /// Chooses the backend (default [`Backend::Auto`]).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Runs the wgpu backend on this device instead of opening a new one, so several codecs
    /// (models) share one device and its compiled kernels. Implies nothing about the backend
    /// choice: with [`Backend::Cpu`] the context is unused.
    #[cfg(feature = "wgpu")]
    pub fn gpu_context(mut self, ctx: hvq_wgpu::GpuContext) -> Self {
        self.gpu = Some(ctx);
        self
    }

    /// Runs the wgpu kernels with f16 activations and convolution weights (default off: f32).
    /// Half the device memory per image and half the memory traffic; the quantizer still
    /// measures distances in f32, but a few tokens near a tie differ from the f32 kernels'
    /// (99.6 % agree on the test image of `f16_kernels_stay_close_to_f32_with_the_default_model`).
    /// With [`Backend::Wgpu`] an adapter without `shader-f16` is a [`CodecError::Gpu`];
    /// [`Backend::Auto`] then falls back to the CPU, which always runs f32 (the choice is logged).
    pub fn gpu_f16(mut self, on: bool) -> Self {
        self.gpu_f16 = on;
        self
    }

    /// Sets the size limits (default [`Limits::default`]): of the images the codec encodes and
    /// decodes, and of the `.hvq` files it reads, whose reader gets this same value.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets how large images are split into tiles (default [`Tiling::default`]); the tile size
    /// sets peak memory. See [`Tiling`] for what tiling changes.
    pub fn tiling(mut self, tiling: Tiling) -> Self {
        self.tiling = tiling;
        self
    }

    /// Makes every encode choose each token among the [`RD_CANDIDATES`](crate::RD_CANDIDATES) codebook
    /// entries nearest to its latent by `distance + lambda · bits` under the priors and context
    /// model, instead of taking the nearest entry; the distance is measured as the level's decoder
    /// sees the move (its first layer's output energy), and coarse tokens also weigh their
    /// children's bits (see [`hvq_format::choose_levels`]). Files get smaller for a small loss of
    /// quality, and every reader decodes them; but the tokens are no longer the quantizer's (the
    /// training tokens), so keep the default, 0, for tokenizing. With the embedded model on Kodak,
    /// `0.1` makes the full file 18.6 % smaller for 0.07 dB PSNR at level 0
    /// (`docs/results/rate-distortion.md`). An encode keeps every position's candidates until the
    /// choice: 128 bytes per token (10.5 bytes per pixel with the embedded model), on top of what
    /// tiling bounds. Checked by `build`: [`CodecError::RateWeight`] unless finite and at least 0.
    pub fn rate_distortion(mut self, lambda: f64) -> Self {
        self.rd_lambda = lambda;
        self
    }

    /// Instantiates the model on the backend. Async because a wgpu adapter and device are
    /// requested asynchronously (the only way in a browser).
    ///
    /// Errors: [`CodecError::Priors`] / [`CodecError::PriorsShape`] for bad `hvq.priors` metadata;
    /// [`CodecError::Gpu`] or [`CodecError::WgpuNotCompiled`] when [`Backend::Wgpu`] is unavailable;
    /// [`CodecError::Cpu`] when the CPU backend refuses the weights.
    pub async fn build_async(self) -> Result<Codec> {
        let priors = priors_of(&self.weights)?;
        if !(self.rd_lambda.is_finite() && self.rd_lambda >= 0.0) {
            return Err(CodecError::RateWeight {
                lambda: self.rd_lambda,
            });
        }
        let rate_distortion = (self.rd_lambda > 0.0)
            .then(|| crate::rate::RateDistortion::new(&self.weights, self.rd_lambda))
            .transpose()?;
        let engine = Engine::new(&self.weights, self.backend, self.gpu, self.gpu_f16).await?;
        log::debug!("codec ready on the {} backend", engine.kind());
        Ok(Codec {
            config: self.weights.config().clone(),
            fingerprint: self.weights.fingerprint(),
            priors,
            engine,
            limits: self.limits,
            tiling: self.tiling,
            rate_distortion,
        })
    }

    /// Blocking [`build_async`](Self::build_async).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn build(self) -> Result<Codec> {
        pollster::block_on(self.build_async())
    }
}

/// A model ready to encode images to tokens and `.hvq` files and to decode them back.
///
/// See the [crate documentation](crate) for a walk-through.
#[derive(Debug)]
pub struct Codec {
    config: ModelConfig,
    fingerprint: [u8; 32],
    priors: Priors,
    pub(crate) engine: Engine,
    limits: Limits,
    tiling: Tiling,
    /// `Some` when encodes choose tokens by rate and distortion ([`CodecBuilder::rate_distortion`]).
    pub(crate) rate_distortion: Option<crate::rate::RateDistortion>,
}

impl Codec {
    /// A builder for validated weights (owned, or shared with other codecs through an `Arc`).
    pub fn builder(weights: impl Into<Arc<Weights>>) -> CodecBuilder {
        CodecBuilder {
            weights: weights.into(),
            backend: Backend::Auto,
            limits: Limits::default(),
            tiling: Tiling::default(),
            gpu: None,
            gpu_f16: false,
            rd_lambda: 0.0,
        }
    }

    /// A builder for a safetensors weight file's bytes.
    ///
    /// Errors: [`CodecError::Weights`] naming the first problem with the file.
    pub fn from_weight_bytes(bytes: &[u8]) -> Result<CodecBuilder> {
        crate::load_weights(bytes).map(Self::builder)
    }

    /// A builder for the default model embedded at build time.
    ///
    /// Errors: [`CodecError::NoDefaultModel`] when this build embeds none (see the crate docs).
    pub fn default_model() -> Result<CodecBuilder> {
        Self::from_weight_bytes(crate::default_model_bytes()?)
    }

    /// The rate–distortion weight its encodes use ([`CodecBuilder::rate_distortion`]; 0: the
    /// quantizer's own tokens).
    pub fn rd_lambda(&self) -> f64 {
        self.rate_distortion.as_ref().map_or(0.0, |rd| rd.lambda())
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The model fingerprint that `.hvq` files made by this codec carry.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// The backend in use (what [`Backend::Auto`] resolved to).
    pub fn backend(&self) -> BackendKind {
        self.engine.kind()
    }

    /// Whether the model runs with f16 activations ([`CodecBuilder::gpu_f16`] on a wgpu
    /// adapter that has `shader-f16`); otherwise everything is f32.
    pub fn runs_f16(&self) -> bool {
        self.engine.f16()
    }

    /// The size limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// How large images are split into tiles.
    pub fn tiling(&self) -> &Tiling {
        &self.tiling
    }

    /// How many tiles an image of `width × height` runs in (1 when it runs whole): the `total`
    /// that progress callbacks will report.
    pub fn tiles_for(&self, width: u32, height: u32) -> usize {
        let s = self.config.coarsest_stride();
        let (w, h) = (
            (width as usize).div_ceil(s) * s,
            (height as usize).div_ceil(s) * s,
        );
        Plan::new(&self.tiling, w, h, s).tiles()
    }

    /// The entropy-coding priors used for `.hvq` files.
    pub fn priors(&self) -> &Priors {
        &self.priors
    }

    /// Encodes `image` into the token grids of `levels` (any size; edge-padded to the coarsest
    /// stride internally, the original size is kept in [`Tokens`]).
    ///
    /// Errors: [`CodecError::EmptyImage`], [`CodecError::ImageTooLarge`] (checked before the
    /// padded copy is allocated), [`CodecError::LevelOutOfRange`], [`CodecError::NoLevelsSelected`],
    /// and backend errors.
    pub async fn encode_async(
        &self,
        image: &RgbImage,
        levels: impl Into<LevelSelection>,
    ) -> Result<Tokens> {
        self.encode_with_progress_async(image, levels, |_| {}).await
    }

    /// [`encode_async`](Self::encode_async), calling `progress` after every tile (an image larger
    /// than [`Tiling::whole_max_pixels`] runs in tiles; see [`Tiling`]).
    pub async fn encode_with_progress_async(
        &self,
        image: &RgbImage,
        levels: impl Into<LevelSelection>,
        mut progress: impl FnMut(Progress),
    ) -> Result<Tokens> {
        let levels = levels.into().resolve(self.config.levels)?;
        self.encode_levels(image, &levels, &mut progress).await
    }

    async fn encode_levels(
        &self,
        image: &RgbImage,
        levels: &[usize],
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Tokens> {
        if let Some(rd) = &self.rate_distortion {
            return self.encode_levels_rd(rd, image, levels, progress).await;
        }
        let (w, h) = self.padded_size(image.width(), image.height())?;
        let plan = self.plan_for(w, h);
        let mut grids = self.empty_grids(levels, w, h);
        let total = plan.tiles();
        for (j, ys) in plan.ys.iter().enumerate() {
            for (i, xs) in plan.xs.iter().enumerate() {
                let map = tiling::input_map(image, xs.input, ys.input);
                let tile = self.engine.encode(&map, levels).await?;
                drop(map);
                self.paste_tile(&mut grids, &tile, (xs, ys));
                progress(Progress {
                    done: j * plan.xs.len() + i + 1,
                    total,
                });
            }
        }
        Ok(Tokens {
            width: image.width(),
            height: image.height(),
            grids,
        })
    }

    /// Zeroed grids of `levels` for a padded `w × h` image.
    pub(crate) fn empty_grids(&self, levels: &[usize], w: usize, h: usize) -> Vec<TokenGrid> {
        levels
            .iter()
            .map(|&level| {
                let f = self.config.level_stride(level);
                TokenGrid {
                    level,
                    height: h / f,
                    width: w / f,
                    tokens: vec![0; (h / f) * (w / f)],
                }
            })
            .collect()
    }

    /// Copies the core of one tile's grids into the whole image's.
    fn paste_tile(&self, grids: &mut [TokenGrid], tile: &[TokenGrid], spans: (&Span, &Span)) {
        for part in tile {
            let f = self.config.level_stride(part.level);
            let grid = grids
                .iter_mut()
                .find(|g| g.level == part.level)
                .expect("the backend returns the levels asked for");
            paste_core(grid, part, spans, f);
        }
    }

    /// Checks a `width × height` image against the limits, before and after padding, and returns
    /// its size padded to the coarsest stride.
    pub(crate) fn padded_size(&self, width: u32, height: u32) -> Result<(usize, usize)> {
        crate::options::check_image(&self.limits, width.into(), height.into())?;
        let s = self.config.coarsest_stride();
        let (w, h) = (
            (width as usize).div_ceil(s) * s,
            (height as usize).div_ceil(s) * s,
        );
        if (w as u64).saturating_mul(h as u64) > self.limits.max_pixels {
            return Err(CodecError::PaddedImageTooLarge {
                width: width.into(),
                height: height.into(),
                padded_width: w as u64,
                padded_height: h as u64,
                stride: s as u64,
                limit: self.limits.max_pixels,
            });
        }
        Ok((w, h))
    }

    /// Encodes many images; one result per image, so one bad image does not fail the others.
    ///
    /// On the CPU backend (with the `parallel` feature) images run concurrently on rayon's pool.
    /// On wgpu, images that run whole (not tiled) and share a padded size go through the device
    /// together, many per dispatch ([`hvq_wgpu::GpuModel::encode_batch`]); tiled images run one
    /// after another. Either way every image gets the tokens [`Codec::encode_async`] gives it.
    pub async fn encode_batch_async(
        &self,
        images: &[RgbImage],
        levels: impl Into<LevelSelection>,
    ) -> Vec<Result<Tokens>> {
        let levels = match levels.into().resolve(self.config.levels) {
            Ok(l) => l,
            Err(e) => return images.iter().map(|_| Err(clone_level_error(&e))).collect(),
        };
        #[cfg(all(feature = "parallel", not(target_arch = "wasm32")))]
        if matches!(self.engine, Engine::Cpu(_)) {
            use rayon::prelude::*;
            return images
                .par_iter()
                .map(|img| pollster::block_on(self.encode_levels(img, &levels, &mut |_| {})))
                .collect();
        }
        // Device batches give tokens, not latents: rate–distortion encodes run one image at a time.
        #[cfg(feature = "wgpu")]
        if let (Engine::Wgpu(model), None) = (&self.engine, &self.rate_distortion) {
            return self.encode_batched_on_device(model, images, &levels).await;
        }
        let mut out = Vec::with_capacity(images.len());
        for img in images {
            out.push(self.encode_levels(img, &levels, &mut |_| {}).await);
        }
        out
    }

    /// [`Codec::encode_batch_async`] on wgpu: groups the images that run whole by padded size
    /// and runs each group in device batches.
    #[cfg(feature = "wgpu")]
    async fn encode_batched_on_device(
        &self,
        model: &hvq_wgpu::GpuModel,
        images: &[RgbImage],
        levels: &[usize],
    ) -> Vec<Result<Tokens>> {
        let mut out: Vec<Option<Result<Tokens>>> = images.iter().map(|_| None).collect();
        // BTreeMap: groups run in a fixed order, whatever the hasher.
        let mut groups: std::collections::BTreeMap<(usize, usize), Vec<usize>> =
            std::collections::BTreeMap::new();
        for (i, img) in images.iter().enumerate() {
            let whole = self
                .padded_size(img.width(), img.height())
                .map(|(w, h)| (w, h, self.plan_for(w, h).tiles() == 1));
            match whole {
                Ok((w, h, true)) => groups.entry((w, h)).or_default().push(i),
                Ok(_) | Err(_) => out[i] = Some(self.encode_levels(img, levels, &mut |_| {}).await),
            }
        }
        for ((w, h), members) in groups {
            // Whole runs at a time, so the input maps of a long list are never all in memory.
            for run in members.chunks(model.batch_capacity(h, w)) {
                let results = self
                    .encode_run(run.iter().map(|&i| &images[i]), levels, w, h)
                    .await;
                match results {
                    Ok(tokens) => {
                        for (&i, t) in run.iter().zip(tokens) {
                            out[i] = Some(Ok(t));
                        }
                    }
                    // A device error on the run: each image again alone, for its own result.
                    Err(_) => {
                        for &i in run {
                            out[i] =
                                Some(self.encode_levels(&images[i], levels, &mut |_| {}).await);
                        }
                    }
                }
            }
        }
        out.into_iter()
            .map(|r| r.expect("every image got a result"))
            .collect()
    }

    /// Encodes images of one padded size `w × h` that each run as one tile, in one engine batch.
    #[cfg(feature = "wgpu")]
    async fn encode_run(
        &self,
        images: impl Iterator<Item = &RgbImage> + Clone,
        levels: &[usize],
        w: usize,
        h: usize,
    ) -> Result<Vec<Tokens>> {
        let plan = self.plan_for(w, h);
        let (xs, ys) = (&plan.xs[0], &plan.ys[0]);
        let maps: Vec<_> = images
            .clone()
            .map(|img| tiling::input_map(img, xs.input, ys.input))
            .collect();
        let tiles = self.engine.encode_batch(&maps, levels).await?;
        drop(maps);
        Ok(images
            .zip(tiles)
            .map(|(img, tile)| {
                let mut grids = self.empty_grids(levels, w, h);
                self.paste_tile(&mut grids, &tile, (xs, ys));
                Tokens {
                    width: img.width(),
                    height: img.height(),
                    grids,
                }
            })
            .collect())
    }

    pub(crate) fn plan_for(&self, w: usize, h: usize) -> Plan {
        Plan::new(&self.tiling, w, h, self.config.coarsest_stride())
    }

    /// Decodes one level's tokens to an image of the original `width × height`.
    ///
    /// Needs no encoder run: a thumbnail can be decoded from the coarse grid alone.
    /// Errors: [`CodecError::LevelOutOfRange`], [`CodecError::GridMismatch`] (the grid does not fit
    /// the size), [`CodecError::TokenOutOfRange`], limit and backend errors.
    pub async fn decode_async(
        &self,
        grid: &TokenGrid,
        width: u32,
        height: u32,
    ) -> Result<RgbImage> {
        self.decode_with_progress_async(grid, width, height, |_| {})
            .await
    }

    /// [`decode_async`](Self::decode_async), calling `progress` after every tile (see [`Tiling`]).
    pub async fn decode_with_progress_async(
        &self,
        grid: &TokenGrid,
        width: u32,
        height: u32,
        mut progress: impl FnMut(Progress),
    ) -> Result<RgbImage> {
        let (w, h) = self.check_grid(grid, width, height)?;
        let f = self.config.level_stride(grid.level);
        let plan = Plan::new(&self.tiling, w, h, self.config.coarsest_stride());
        let total = plan.tiles();
        let mut image = Assembler::new(plan, w, width as usize, height as usize);
        for j in 0..image.plan().ys.len() {
            for i in 0..image.plan().xs.len() {
                let (xs, ys) = (image.plan().xs[i], image.plan().ys[j]);
                let part = cut_tokens(grid, (&xs, &ys), f);
                let map = self.engine.decode(&part).await?;
                assert!(
                    (map.channels, map.width, map.height) == (3, part.width * f, part.height * f),
                    "backend returned a {}×{}×{} map for a {}×{} grid at stride {f}",
                    map.channels,
                    map.width,
                    map.height,
                    part.width,
                    part.height
                );
                image.add(i, j, &map);
                progress(Progress {
                    done: j * image.plan().xs.len() + i + 1,
                    total,
                });
            }
            image.end_stripe();
        }
        Ok(image.into_image())
    }

    /// Checks a grid against the model, the image size and the limits, before any decoding;
    /// returns the padded image size.
    fn check_grid(&self, grid: &TokenGrid, width: u32, height: u32) -> Result<(usize, usize)> {
        let padded = self.padded_size(width, height)?;
        if grid.level >= self.config.levels {
            return Err(CodecError::LevelOutOfRange {
                level: grid.level,
                available: (0..self.config.levels).collect(),
            });
        }
        let (ew, eh) = self.grid_size(grid.level, width, height);
        if (grid.width, grid.height) != (ew, eh) || grid.tokens.len() != ew * eh {
            return Err(CodecError::GridMismatch {
                level: grid.level,
                got_width: grid.width,
                got_height: grid.height,
                tokens: grid.tokens.len(),
                expected_width: ew,
                expected_height: eh,
                image_width: width,
                image_height: height,
            });
        }
        let n = self.config.codebook_size;
        if let Some((index, &token)) = grid
            .tokens
            .iter()
            .enumerate()
            .find(|&(_, &t)| t as usize >= n)
        {
            return Err(CodecError::TokenOutOfRange {
                token,
                index,
                codebook_size: n,
            });
        }
        Ok(padded)
    }

    /// `(width, height)` of level `level`'s grid for an image of `width × height`.
    pub fn grid_size(&self, level: usize, width: u32, height: u32) -> (usize, usize) {
        let coarse = self.config.coarsest_stride();
        let scale = coarse / self.config.level_stride(level);
        (
            (width as usize).div_ceil(coarse) * scale,
            (height as usize).div_ceil(coarse) * scale,
        )
    }
}

/// Copies the core of one tile's grid (`part`, over the tile's input extent) into `grid`.
fn paste_core(grid: &mut TokenGrid, part: &TokenGrid, spans: (&Span, &Span), f: usize) {
    paste_rows(
        &mut grid.tokens,
        grid.width,
        &part.tokens,
        part.width,
        spans,
        (f, 1),
    );
}

/// Copies the core of one tile's grid (`src`, `src_width` positions wide) into the whole image's
/// (`dst`, `dst_width` wide) at stride `f`, `k` values per position.
pub(crate) fn paste_rows<T: Copy>(
    dst: &mut [T],
    dst_width: usize,
    src: &[T],
    src_width: usize,
    (xs, ys): (&Span, &Span),
    (f, k): (usize, usize),
) {
    let (x0, x1) = (xs.core.0 / f, xs.core.1 / f);
    let (dx, dy) = ((xs.core.0 - xs.input.0) / f, (ys.core.0 - ys.input.0) / f);
    for y in ys.core.0 / f..ys.core.1 / f {
        let from = ((y - ys.core.0 / f + dy) * src_width + dx) * k;
        let to = (y * dst_width + x0) * k;
        dst[to..to + (x1 - x0) * k].copy_from_slice(&src[from..from + (x1 - x0) * k]);
    }
}

/// The tokens of one tile's input extent (core and halo) at stride `f`.
fn cut_tokens(grid: &TokenGrid, (xs, ys): (&Span, &Span), f: usize) -> TokenGrid {
    let (x0, x1) = (xs.input.0 / f, xs.input.1 / f);
    let (y0, y1) = (ys.input.0 / f, ys.input.1 / f);
    if (x0, y0, x1, y1) == (0, 0, grid.width, grid.height) {
        return grid.clone();
    }
    let mut tokens = Vec::with_capacity((x1 - x0) * (y1 - y0));
    for y in y0..y1 {
        tokens.extend_from_slice(&grid.tokens[y * grid.width + x0..y * grid.width + x1]);
    }
    TokenGrid {
        level: grid.level,
        height: y1 - y0,
        width: x1 - x0,
        tokens,
    }
}

/// Batch entry points return one error per image; level errors are re-made for each.
fn clone_level_error(e: &CodecError) -> CodecError {
    match e {
        CodecError::LevelOutOfRange { level, available } => CodecError::LevelOutOfRange {
            level: *level,
            available: available.clone(),
        },
        _ => CodecError::NoLevelsSelected,
    }
}

/// Blocking wrappers of the async entry points, for native callers.
#[cfg(not(target_arch = "wasm32"))]
impl Codec {
    /// Blocking [`encode_async`](Self::encode_async).
    pub fn encode(&self, image: &RgbImage, levels: impl Into<LevelSelection>) -> Result<Tokens> {
        pollster::block_on(self.encode_async(image, levels))
    }

    /// Blocking [`encode_batch_async`](Self::encode_batch_async).
    pub fn encode_batch(
        &self,
        images: &[RgbImage],
        levels: impl Into<LevelSelection>,
    ) -> Vec<Result<Tokens>> {
        pollster::block_on(self.encode_batch_async(images, levels))
    }

    /// Blocking [`decode_async`](Self::decode_async).
    pub fn decode(&self, grid: &TokenGrid, width: u32, height: u32) -> Result<RgbImage> {
        pollster::block_on(self.decode_async(grid, width, height))
    }

    /// Blocking [`encode_with_progress_async`](Self::encode_with_progress_async).
    pub fn encode_with_progress(
        &self,
        image: &RgbImage,
        levels: impl Into<LevelSelection>,
        progress: impl FnMut(Progress),
    ) -> Result<Tokens> {
        pollster::block_on(self.encode_with_progress_async(image, levels, progress))
    }

    /// Blocking [`decode_with_progress_async`](Self::decode_with_progress_async).
    pub fn decode_with_progress(
        &self,
        grid: &TokenGrid,
        width: u32,
        height: u32,
        progress: impl FnMut(Progress),
    ) -> Result<RgbImage> {
        pollster::block_on(self.decode_with_progress_async(grid, width, height, progress))
    }

    /// Blocking [`encode_to_hvq_async`](Self::encode_to_hvq_async).
    pub fn encode_to_hvq(
        &self,
        image: &RgbImage,
        levels: impl Into<LevelSelection>,
    ) -> Result<Vec<u8>> {
        pollster::block_on(self.encode_to_hvq_async(image, levels))
    }

    /// Blocking [`decode_hvq_async`](Self::decode_hvq_async).
    pub fn decode_hvq(&self, bytes: &[u8], level: Option<usize>) -> Result<DecodedImage> {
        pollster::block_on(self.decode_hvq_async(bytes, level))
    }

    /// Blocking [`encode_to_hvq_with_progress_async`](Self::encode_to_hvq_with_progress_async).
    pub fn encode_to_hvq_with_progress(
        &self,
        image: &RgbImage,
        levels: impl Into<LevelSelection>,
        progress: impl FnMut(Progress),
    ) -> Result<Vec<u8>> {
        pollster::block_on(self.encode_to_hvq_with_progress_async(image, levels, progress))
    }

    /// Blocking [`decode_hvq_with_progress_async`](Self::decode_hvq_with_progress_async).
    pub fn decode_hvq_with_progress(
        &self,
        bytes: &[u8],
        level: Option<usize>,
        progress: impl FnMut(Progress),
    ) -> Result<DecodedImage> {
        pollster::block_on(self.decode_hvq_with_progress_async(bytes, level, progress))
    }
}
