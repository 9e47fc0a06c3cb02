//! The whole model on the CPU: image → latents → tokens, and tokens → image per level.

use std::sync::Arc;

use hvq_spec::{FeatureMap, ModelConfig, Strategy, Tensor, TokenGrid, Weights};

use crate::CpuError;
use crate::ops::{self, Affine, AttnWeights, Conv2dParams, GroupNormParams};

/// GroupNorm epsilon of every norm in the model (DESIGN.md §2).
const NORM_EPS: f32 = 1e-6;

/// A model ready to run on the CPU: validated weights plus the code that walks them.
///
/// ```
/// use hvq_cpu::CpuModel;
/// use hvq_spec::{FeatureMap, ModelConfig, random_weights};
///
/// let model = CpuModel::new(random_weights(&ModelConfig::tiny(), 1).unwrap());
/// let image = FeatureMap { channels: 3, height: 16, width: 16, data: vec![0.5; 3 * 16 * 16] };
/// let grids = model.encode(&image, &[0, 2]).unwrap();
/// assert_eq!((grids[1].level, grids[1].height), (2, 2)); // tiny: stride 2 · 2² = 8
/// let rgb = model.decode(&grids[1]).unwrap();
/// assert_eq!((rgb.channels, rgb.height, rgb.width), (3, 16, 16));
/// ```
#[derive(Debug, Clone)]
pub struct CpuModel {
    weights: Arc<Weights>,
}

impl CpuModel {
    /// Wraps validated weights (every schema tensor is known to be present).
    pub fn new(weights: impl Into<Arc<Weights>>) -> Self {
        CpuModel {
            weights: weights.into(),
        }
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        self.weights.config()
    }

    /// The weights this model runs.
    pub fn weights(&self) -> &Arc<Weights> {
        &self.weights
    }

    /// The projected latents `p_l` (codebook dimension `D` channels) of every level, finest first.
    ///
    /// `image` is RGB in `[0, 1]`, its size a positive multiple of
    /// [`ModelConfig::coarsest_stride`] (see [`ops::pad_edge`]).
    pub fn encode_latents(&self, image: &FeatureMap) -> Result<Vec<FeatureMap>, CpuError> {
        self.latents_upto(image, self.config().levels)
    }

    /// Tokens of every latent map given (level `i` for `latents[i]`).
    pub fn tokens(&self, latents: &[FeatureMap]) -> Result<Vec<TokenGrid>, CpuError> {
        let cfg = self.config();
        if latents.len() > cfg.levels || latents.iter().any(|p| p.channels != cfg.codebook_dim) {
            return Err(CpuError::BadLatents {
                expected: cfg.levels,
                channels: cfg.codebook_dim,
                got: latents.len(),
            });
        }
        let codebook = self.t("quantizer.codebook");
        latents
            .iter()
            .enumerate()
            .map(|(level, p)| {
                let tokens = ops::nearest_codes(p, codebook)?;
                Ok(TokenGrid {
                    level,
                    height: p.height,
                    width: p.width,
                    tokens,
                })
            })
            .collect()
    }

    /// The token grids of the requested `levels` (in the order given), running the encoder
    /// and the level chain only as far as the coarsest requested level needs.
    pub fn encode(&self, image: &FeatureMap, levels: &[usize]) -> Result<Vec<TokenGrid>, CpuError> {
        let n = self.config().levels;
        if let Some(&level) = levels.iter().find(|&&l| l >= n) {
            return Err(CpuError::LevelOutOfRange { level, levels: n });
        }
        let Some(&deepest) = levels.iter().max() else {
            self.check_image(image)?;
            return Ok(Vec::new());
        };
        let latents = self.latents_upto(image, deepest + 1)?;
        let codebook = self.t("quantizer.codebook");
        levels
            .iter()
            .map(|&level| {
                let p = &latents[level];
                let tokens = ops::nearest_codes(p, codebook)?;
                Ok(TokenGrid {
                    level,
                    height: p.height,
                    width: p.width,
                    tokens,
                })
            })
            .collect()
    }

    /// The RGB image in `[0, 1]` that level `grid.level`'s decoder rebuilds from `grid`,
    /// of size `grid × level_stride(level)`.
    pub fn decode(&self, grid: &TokenGrid) -> Result<FeatureMap, CpuError> {
        let levels = self.config().levels;
        if grid.level >= levels {
            return Err(CpuError::LevelOutOfRange {
                level: grid.level,
                levels,
            });
        }
        let quantized = ops::gather_codes(grid, self.t("quantizer.codebook"))?;
        self.decode_quantized(grid.level, &quantized)
    }

    /// Runs level `level`'s decoder on codebook vectors (`D` channels), e.g. a token grid
    /// gathered with [`ops::gather_codes`]; returns RGB in `[0, 1]`.
    pub fn decode_quantized(
        &self,
        level: usize,
        quantized: &FeatureMap,
    ) -> Result<FeatureMap, CpuError> {
        let cfg = self.config();
        if level >= cfg.levels {
            return Err(CpuError::LevelOutOfRange {
                level,
                levels: cfg.levels,
            });
        }
        let p = format!("decoders.{level}");
        let mut h = self.conv(quantized, &format!("{p}.conv_in"), Conv2dParams::SAME)?;
        h = self.mid(&h, &format!("{p}.mid"))?;
        let stages = cfg.decoder_stage_mults(level).len();
        for s in 0..stages {
            for j in 0..cfg.decoder_res_blocks {
                h = self.res_block(&h, &format!("{p}.up.{s}.block.{j}"))?;
            }
            if s + 1 != stages {
                let conv = format!("{p}.up.{s}.upsample.conv");
                h = ops::upsample_conv2d(
                    &h,
                    self.t(&format!("{conv}.weight")),
                    self.t(&format!("{conv}.bias")),
                )?;
            }
        }
        h = self.norm(&h, &format!("{p}.norm_out"), true)?;
        let mut rgb = self.conv(&h, &format!("{p}.conv_out"), Conv2dParams::SAME)?;
        denormalize(&mut rgb, cfg);
        Ok(rgb)
    }

    fn check_image(&self, image: &FeatureMap) -> Result<(), CpuError> {
        let cfg = self.config();
        if image.channels != cfg.in_channels {
            return Err(CpuError::WrongChannels {
                expected: cfg.in_channels,
                got: image.channels,
            });
        }
        let m = cfg.coarsest_stride();
        let bad = |n: usize| n == 0 || !n.is_multiple_of(m);
        if bad(image.height)
            || bad(image.width)
            || image.data.len() != image.channels * image.plane()
        {
            return Err(CpuError::BadImageSize {
                height: image.height,
                width: image.width,
                multiple: m,
            });
        }
        Ok(())
    }

    /// Projected latents of levels `0..count`.
    fn latents_upto(&self, image: &FeatureMap, count: usize) -> Result<Vec<FeatureMap>, CpuError> {
        self.check_image(image)?;
        let mut z = self.encoder(image)?;
        let mut out = Vec::with_capacity(count);
        for level in 0..count {
            if level > 0 {
                z = self.derive_level(&z, level)?;
            }
            out.push(ops::project(
                &z,
                self.t("quantizer.proj.weight"),
                self.t("quantizer.proj.bias"),
            )?);
        }
        Ok(out)
    }

    /// The encoder: normalized image → `z_0` (`z_channels` at the finest stride).
    fn encoder(&self, image: &FeatureMap) -> Result<FeatureMap, CpuError> {
        let cfg = self.config();
        let x = normalize(image, cfg);
        let mut h = self.conv(&x, "encoder.conv_in", Conv2dParams::SAME)?;
        let last = cfg.channel_mult.len() - 1;
        for i in 0..=last {
            for j in 0..cfg.num_res_blocks {
                h = self.res_block(&h, &format!("encoder.down.{i}.block.{j}"))?;
            }
            if i != last {
                h = self.conv(
                    &h,
                    &format!("encoder.down.{i}.downsample.conv"),
                    Conv2dParams::DOWNSAMPLE,
                )?;
            }
        }
        h = self.mid(&h, "encoder.mid")?;
        h = self.norm(&h, "encoder.norm_out", true)?;
        self.conv(&h, "encoder.conv_out", Conv2dParams::SAME)
    }

    /// `z_level` from `z_{level-1}` by the configured strategy.
    fn derive_level(&self, z: &FeatureMap, level: usize) -> Result<FeatureMap, CpuError> {
        let down = format!("levels.{level}.down.conv");
        match self.config().strategy {
            Strategy::Sampling => Ok(ops::subsample2(z)),
            Strategy::Avgpool => Ok(ops::avg_pool2(z)),
            Strategy::Convpool => self.conv(z, &down, Conv2dParams::DOWNSAMPLE),
            Strategy::Pooling => {
                let mut out = ops::avg_pool2(z);
                let (w, b) = (
                    self.t(&format!("{down}.weight")),
                    self.t(&format!("{down}.bias")),
                );
                ops::conv2d_accumulate(z, w, b, Conv2dParams::DOWNSAMPLE, &mut out)?;
                Ok(out)
            }
        }
    }

    /// Middle section: ResBlock, optional attention, ResBlock.
    fn mid(&self, x: &FeatureMap, prefix: &str) -> Result<FeatureMap, CpuError> {
        let mut h = self.res_block(x, &format!("{prefix}.block_1"))?;
        if self.config().mid_attention {
            h = self.attention(&h, &format!("{prefix}.attn_1"))?;
        }
        self.res_block(&h, &format!("{prefix}.block_2"))
    }

    /// `skip(x) + conv2(swish(norm2(conv1(swish(norm1(x))))))`, the add fused into conv2.
    fn res_block(&self, x: &FeatureMap, prefix: &str) -> Result<FeatureMap, CpuError> {
        let h = self.norm(x, &format!("{prefix}.norm1"), true)?;
        let h = self.conv(&h, &format!("{prefix}.conv1"), Conv2dParams::SAME)?;
        let h = self.norm(&h, &format!("{prefix}.norm2"), true)?;
        let shortcut = format!("{prefix}.nin_shortcut");
        let mut out = if self.weights.get(&format!("{shortcut}.weight")).is_some() {
            self.conv(x, &shortcut, Conv2dParams::SAME)?
        } else {
            x.clone()
        };
        let conv2 = self.affine(&format!("{prefix}.conv2"));
        ops::conv2d_accumulate(&h, conv2.weight, conv2.bias, Conv2dParams::SAME, &mut out)?;
        Ok(out)
    }

    fn attention(&self, x: &FeatureMap, prefix: &str) -> Result<FeatureMap, CpuError> {
        let w = AttnWeights {
            norm: self.affine(&format!("{prefix}.norm")),
            q: self.affine(&format!("{prefix}.q")),
            k: self.affine(&format!("{prefix}.k")),
            v: self.affine(&format!("{prefix}.v")),
            proj_out: self.affine(&format!("{prefix}.proj_out")),
            groups: self.config().norm_groups,
            eps: NORM_EPS,
        };
        ops::attention(x, w)
    }

    fn norm(&self, x: &FeatureMap, prefix: &str, swish: bool) -> Result<FeatureMap, CpuError> {
        let a = self.affine(prefix);
        let params = GroupNormParams {
            gamma: a.weight,
            beta: a.bias,
            groups: self.config().norm_groups,
            eps: NORM_EPS,
            swish,
        };
        ops::group_norm(x, params)
    }

    fn conv(
        &self,
        x: &FeatureMap,
        prefix: &str,
        params: Conv2dParams,
    ) -> Result<FeatureMap, CpuError> {
        let a = self.affine(prefix);
        ops::conv2d(x, a.weight, a.bias, params)
    }

    fn affine(&self, prefix: &str) -> Affine<'_> {
        Affine {
            weight: self.t(&format!("{prefix}.weight")),
            bias: self.t(&format!("{prefix}.bias")),
        }
    }

    /// A schema tensor; `Weights` guarantees every schema name is present.
    fn t(&self, name: &str) -> &Tensor {
        self.weights.tensor(name)
    }
}

/// `(x − mean) / std` per channel.
fn normalize(image: &FeatureMap, cfg: &ModelConfig) -> FeatureMap {
    let mut x = image.clone();
    let plane = x.plane();
    for (c, ch) in x.data.chunks_exact_mut(plane.max(1)).enumerate() {
        let (m, inv) = (cfg.mean[c], 1.0 / cfg.std[c]);
        ch.iter_mut().for_each(|v| *v = (*v - m) * inv);
    }
    x
}

/// `clamp(x · std + mean, 0, 1)` per channel.
fn denormalize(rgb: &mut FeatureMap, cfg: &ModelConfig) {
    let plane = rgb.plane();
    for (c, ch) in rgb.data.chunks_exact_mut(plane.max(1)).enumerate() {
        let (m, s) = (cfg.mean[c], cfg.std[c]);
        ch.iter_mut()
            .for_each(|v| *v = (*v * s + m).clamp(0.0, 1.0));
    }
}
