//! The serializable description of one model (DESIGN.md §2).

use serde::{Deserialize, Serialize};

use crate::SpecError;

/// How a coarser level's latent grid is derived from the next finer one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// The paper's residual pooling: `avgpool2x2(x) + downconv(x)`.
    Pooling,
    /// Subset sampling: `x[:, :, 0::2, 0::2]`.
    Sampling,
    /// Ablation: the average-pool half of `pooling` alone.
    Avgpool,
    /// Ablation: the strided-convolution half of `pooling` alone.
    Convpool,
    /// Not in the paper: residual *sampling*, `subsample2(x) + downconv(x)` — `pooling` with the
    /// average pool replaced by taking every second row and column.
    Sampleconv,
}

impl Strategy {
    /// Whether the strategy owns a learned down-sampling convolution per derived level.
    pub fn has_downconv(self) -> bool {
        matches!(
            self,
            Strategy::Pooling | Strategy::Convpool | Strategy::Sampleconv
        )
    }

    /// Whether the strategy adds a 2×2 average pool.
    pub fn has_avgpool(self) -> bool {
        matches!(self, Strategy::Pooling | Strategy::Avgpool)
    }

    /// All strategies, for tests and CLIs.
    pub const ALL: [Strategy; 5] = [
        Strategy::Pooling,
        Strategy::Sampling,
        Strategy::Avgpool,
        Strategy::Convpool,
        Strategy::Sampleconv,
    ];
}

impl std::str::FromStr for Strategy {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s {
            "pooling" => Ok(Strategy::Pooling),
            "sampling" => Ok(Strategy::Sampling),
            "avgpool" => Ok(Strategy::Avgpool),
            "convpool" => Ok(Strategy::Convpool),
            "sampleconv" => Ok(Strategy::Sampleconv),
            other => Err(SpecError::UnknownName {
                what: "strategy",
                got: other.to_string(),
            }),
        }
    }
}

/// Everything needed to build a model and to check its weights.
///
/// Stored as JSON in every weight file's `hvq.config` metadata entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Image channels (3 for RGB).
    pub in_channels: usize,
    /// Base channel count of encoder and decoders.
    pub channels: usize,
    /// Channel multiplier per encoder resolution; `len - 1` down-samplings give the finest level's stride.
    pub channel_mult: Vec<usize>,
    /// ResBlocks per encoder resolution.
    pub num_res_blocks: usize,
    /// ResBlocks per decoder stage.
    pub decoder_res_blocks: usize,
    /// Whether the encoder's and decoders' middle sections hold a self-attention block.
    pub mid_attention: bool,
    /// Channels of the encoder output (the latent before projection).
    pub z_channels: usize,
    /// Number of codebook entries `N`.
    pub codebook_size: usize,
    /// Dimension `D` of a codebook entry.
    pub codebook_dim: usize,
    /// Number of token levels; `1` is the paper's single-level baseline.
    pub levels: usize,
    /// How coarser levels derive from finer ones (ignored when `levels == 1`).
    pub strategy: Strategy,
    /// GroupNorm group count.
    pub norm_groups: usize,
    /// Per-channel input mean; the model sees `(x - mean) / std` with `x` in `[0, 1]`.
    pub mean: [f32; 3],
    /// Per-channel input standard deviation.
    pub std: [f32; 3],
}

/// Names of the built-in presets, as the CLIs spell them.
pub const PRESETS: [&str; 3] = ["paper", "small", "tiny"];

impl ModelConfig {
    /// The seed paper's model: about 97 M parameters, GPU training only.
    pub fn paper() -> Self {
        ModelConfig {
            in_channels: 3,
            channels: 128,
            channel_mult: vec![1, 2, 4],
            num_res_blocks: 2,
            decoder_res_blocks: 1,
            mid_attention: true,
            z_channels: 256,
            codebook_size: 20000,
            codebook_dim: 256,
            levels: 3,
            strategy: Strategy::Pooling,
            norm_groups: 32,
            mean: [0.5; 3],
            std: [0.5; 3],
        }
    }

    /// The embedded default: trainable on a CPU in hours, interactive in a browser.
    ///
    /// No attention: its middle section runs at the finest grid (64×64 for a 256×256 image),
    /// where attention would cost 4096² per image.
    pub fn small() -> Self {
        ModelConfig {
            channels: 64,
            channel_mult: vec![1, 2, 2],
            num_res_blocks: 1,
            mid_attention: false,
            z_channels: 64,
            codebook_size: 8192,
            codebook_dim: 64,
            ..Self::paper()
        }
    }

    /// A few-thousand-parameter model for tests and conformance vectors.
    pub fn tiny() -> Self {
        ModelConfig {
            channels: 8,
            channel_mult: vec![1, 2],
            num_res_blocks: 1,
            mid_attention: true,
            z_channels: 8,
            codebook_size: 32,
            codebook_dim: 4,
            norm_groups: 4,
            ..Self::paper()
        }
    }

    /// A preset by name (`paper`, `small`, `tiny`).
    pub fn preset(name: &str) -> Result<Self, SpecError> {
        match name {
            "paper" => Ok(Self::paper()),
            "small" => Ok(Self::small()),
            "tiny" => Ok(Self::tiny()),
            other => Err(SpecError::UnknownName {
                what: "preset",
                got: other.to_string(),
            }),
        }
    }

    /// Checks every field and the relations between them.
    pub fn validate(&self) -> Result<(), SpecError> {
        let bad =
            |field: &'static str, reason: String| Err(SpecError::InvalidConfig { field, reason });
        if self.in_channels != 3 {
            return bad(
                "in_channels",
                format!("must be 3 (RGB), got {}", self.in_channels),
            );
        }
        if self.channel_mult.is_empty() || self.channel_mult.len() > 6 {
            return bad(
                "channel_mult",
                format!("needs 1 to 6 entries, got {}", self.channel_mult.len()),
            );
        }
        if !(1..=6).contains(&self.levels) {
            return bad("levels", format!("must be in 1..=6, got {}", self.levels));
        }
        if self.num_res_blocks == 0 || self.decoder_res_blocks == 0 {
            return bad(
                "num_res_blocks",
                "encoder and decoder need at least one ResBlock per stage".into(),
            );
        }
        if self.norm_groups == 0 {
            return bad("norm_groups", "must be positive".into());
        }
        for (field, value) in [
            ("channels", self.channels),
            ("z_channels", self.z_channels),
            ("codebook_size", self.codebook_size),
            ("codebook_dim", self.codebook_dim),
        ] {
            if value == 0 || value > 1 << 16 {
                return bad(field, format!("must be in 1..=65536, got {value}"));
            }
        }
        for &m in &self.channel_mult {
            if m == 0 || m > 16 {
                return bad(
                    "channel_mult",
                    format!("multipliers must be in 1..=16, got {m}"),
                );
            }
            if !(self.channels * m).is_multiple_of(self.norm_groups) {
                return bad(
                    "norm_groups",
                    format!(
                        "{} channels are not divisible into {} groups",
                        self.channels * m,
                        self.norm_groups
                    ),
                );
            }
        }
        if !self.channels.is_multiple_of(self.norm_groups) {
            return bad(
                "norm_groups",
                format!(
                    "{} channels not divisible by {}",
                    self.channels, self.norm_groups
                ),
            );
        }
        for (field, v) in [("mean", self.mean), ("std", self.std)] {
            if v.iter().any(|x| !x.is_finite()) {
                return bad(field, "must be finite".into());
            }
        }
        if self.std.iter().any(|&s| s <= 0.0) {
            return bad("std", "must be positive".into());
        }
        Ok(())
    }

    /// Parses and validates the JSON stored in a weight file.
    pub fn from_json(json: &str) -> Result<Self, SpecError> {
        let cfg: ModelConfig = serde_json::from_str(json).map_err(SpecError::ConfigJson)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Canonical JSON (field order fixed by the struct), as stored in weight files.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a ModelConfig always serializes")
    }

    /// Stride of the finest level: `2^(len(channel_mult) - 1)`.
    pub fn finest_stride(&self) -> usize {
        1 << (self.channel_mult.len() - 1)
    }

    /// Stride of level `level` (0 = finest): `f_0 · 2^level`.
    pub fn level_stride(&self, level: usize) -> usize {
        self.finest_stride() << level
    }

    /// Stride of the coarsest level; images are edge-padded to a multiple of it.
    pub fn coarsest_stride(&self) -> usize {
        self.level_stride(self.levels - 1)
    }

    /// Channel count after the encoder's last resolution (also the middle section's width).
    pub fn encoder_top_channels(&self) -> usize {
        self.channels * self.channel_mult.last().copied().unwrap_or(1)
    }

    /// Channel multiplier of each decoder stage of `level`, coarsest stage first.
    ///
    /// The encoder's multipliers reversed, with the largest repeated once per extra
    /// level, so a coarser level's decoder has one more up-sampling stage per level.
    pub fn decoder_stage_mults(&self, level: usize) -> Vec<usize> {
        let top = *self.channel_mult.last().unwrap_or(&1);
        std::iter::repeat_n(top, level)
            .chain(self.channel_mult.iter().rev().copied())
            .collect()
    }
}
