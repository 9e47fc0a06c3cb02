//! The TOML description of a training run: model preset plus overrides, data, schedule,
//! losses, codebook options. A run is reproducible from its config and seed.
//!
//! ```toml
//! preset = "small"
//! seed = 0
//! out_dir = "runs/small-cpu"
//! data_dir = "../shared/data/imagenet-sample"
//! [model]          # any ModelConfig field overrides the preset
//! levels = 3
//! [schedule]
//! steps = 300
//! ```

use std::path::{Path, PathBuf};

use hvq_spec::{ModelConfig, Strategy};
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::data::DataConfig;
use crate::device::DeviceRequest;

/// Optional overrides of the preset's [`ModelConfig`] fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)] // each field overrides the ModelConfig field of the same name
pub struct ModelOverrides {
    pub channels: Option<usize>,
    pub channel_mult: Option<Vec<usize>>,
    pub num_res_blocks: Option<usize>,
    pub decoder_res_blocks: Option<usize>,
    pub mid_attention: Option<bool>,
    pub z_channels: Option<usize>,
    pub codebook_size: Option<usize>,
    pub codebook_dim: Option<usize>,
    pub levels: Option<usize>,
    pub strategy: Option<Strategy>,
    pub norm_groups: Option<usize>,
    pub mean: Option<[f32; 3]>,
    pub std: Option<[f32; 3]>,
}

/// Learning-rate schedule after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    /// Cosine from `lr` to `lr · min_lr_ratio` (AnnealingLR's default style).
    Cosine,
    /// Linear from `lr` to `lr · min_lr_ratio`.
    Linear,
    /// Keep `lr` after warm-up.
    Constant,
}

/// Optimizer and schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Schedule {
    /// Total optimizer steps.
    pub steps: u64,
    /// Images per step.
    pub batch: usize,
    /// Peak learning rate (the paper: 1e-4 at batch 40).
    pub lr: f64,
    /// Linear warm-up steps from 0 to `lr`.
    pub warmup_steps: u64,
    /// Decay after warm-up.
    pub decay: Decay,
    /// Final learning rate as a fraction of `lr`.
    pub min_lr_ratio: f64,
    /// Adam β₁.
    pub beta1: f64,
    /// Adam β₂.
    pub beta2: f64,
    /// Adam ε.
    pub eps: f64,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            steps: 1000,
            batch: 8,
            lr: 1e-4,
            warmup_steps: 100,
            decay: Decay::Cosine,
            min_lr_ratio: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

impl Schedule {
    /// Learning rate of step `step` (0-based): linear warm-up, then the decay.
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let t = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let floor = self.lr * self.min_lr_ratio;
        match self.decay {
            Decay::Constant => self.lr,
            Decay::Linear => floor + (self.lr - floor) * (1.0 - t),
            Decay::Cosine => {
                floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

/// Weights of the loss terms (paper: all 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossWeights {
    /// L1 reconstruction (normalized units).
    pub l1: f64,
    /// LPIPS-VGG; 0 disables it (and the LPIPS file is then not needed).
    pub perceptual: f64,
    /// Codebook term `‖sg(p) − e‖²` (unused with EMA codebooks).
    pub codebook: f64,
    /// Commitment β in `β‖p − sg(e)‖²`.
    pub beta: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        LossWeights {
            l1: 1.0,
            perceptual: 1.0,
            codebook: 1.0,
            beta: 1.0,
        }
    }
}

/// How the codebook is learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodebookMode {
    /// The paper's loss-based update through the codebook term.
    Loss,
    /// Exponential moving averages of assigned latents (no codebook gradient).
    Ema,
}

/// Codebook options; all keep the quantizer contract of DESIGN.md §2.
///
/// The defaults reproduce the runs made before these switches existed; the shared-codebook
/// experiments (docs/results.md) turn them on one by one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CodebookOptions {
    /// Loss-based (default) or EMA updates.
    pub mode: CodebookMode,
    /// EMA decay.
    pub ema_decay: f64,
    /// In EMA mode, weight each level's assignments so that every level contributes the same
    /// total weight per step (the finest level otherwise holds ¾ or more of the latents and
    /// pulls the shared entries towards its own distribution).
    pub ema_level_weights: bool,
    /// Re-initialise entries unused for `restart_every` steps to random current latents.
    pub restart_dead: bool,
    /// Window (steps) over which an entry must stay unused to be restarted.
    pub restart_every: u64,
    /// Initialise the codebook by k-means over a batch's projected latents.
    pub kmeans_init: bool,
    /// Lloyd iterations of that k-means.
    pub kmeans_iters: usize,
    /// Steps of warm-up before the k-means: during them the decoders see the unquantized
    /// projected latents (no codebook or commitment term), so the k-means clusters latents
    /// of a trained encoder instead of a random one. 0 runs it before the first step.
    pub kmeans_step: u64,
    /// k-means and dead-code restarts draw the same number of latents from every level,
    /// instead of sampling all positions uniformly (which gives the finest level about ¾).
    pub level_quotas: bool,
    /// Dead-code restarts also reset the restarted rows' Adam moments, so a new entry does
    /// not move by the stale momentum of the dead one.
    pub restart_resets_optimizer: bool,
    /// Learning-rate multiplier of the codebook (loss mode): with Adam, a codebook entry moves
    /// about `lr · lr_scale` per step whatever its gradient's size.
    pub lr_scale: f64,
}

impl Default for CodebookOptions {
    fn default() -> Self {
        CodebookOptions {
            mode: CodebookMode::Loss,
            ema_decay: 0.99,
            ema_level_weights: false,
            restart_dead: false,
            restart_every: 200,
            kmeans_init: false,
            kmeans_iters: 10,
            kmeans_step: 0,
            level_quotas: false,
            restart_resets_optimizer: false,
            lr_scale: 1.0,
        }
    }
}

/// How the model's variables are initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitScheme {
    /// tch's defaults: convolution weights Kaiming-uniform with the ReLU gain (bound
    /// `√(6 / fan_in)`), biases zero. About 6× the weight variance of PyTorch's default.
    Tch,
    /// PyTorch's (and so taming's) defaults: convolution weights and biases uniform in
    /// `±1/√fan_in`.
    Torch,
}

/// Initialisation options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InitOptions {
    /// Convolution initialisation.
    pub scheme: InitScheme,
    /// Start the level down-convolutions (`levels.*.down.conv`) at zero, so that with
    /// `pooling` a coarser level starts as the average pool of the finer one. With `from`,
    /// applied to the loaded weights: the trained model keeps everything but its conv branch.
    pub zero_downconv: bool,
    /// Start from these inference weights (an exported `.safetensors`, f32 or f16) instead of
    /// random ones: a trained model goes on training under this config's schedule, with fresh
    /// optimizer state from step 0. Its model must be this config's, except that `strategy`
    /// may change between strategies with the same tensors (`convpool` → `pooling`).
    /// `scheme` is then moot; `codebook.kmeans_init` still replaces the loaded codebook.
    pub from: Option<PathBuf>,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            scheme: InitScheme::Tch,
            zero_downconv: false,
            from: None,
        }
    }
}

/// Which of the model's variables a run trains; the others keep the values they start with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trainable {
    /// Every variable (the codebook too, unless EMA owns it).
    #[default]
    All,
    /// The per-level decoders only. The encoder, the level derivation, the projection and the
    /// codebook stay as `init.from` holds them, so every image keeps exactly its tokens: a
    /// dataset tokenized with that model, its `.hvq` files, and the priors and context model
    /// fitted to its tokens all stay valid while the reconstructions improve. It is also the
    /// cheaper step (no encoder backward pass). Needs `init.from`, and no codebook option that
    /// moves entries (restarts, k-means, EMA) or `init.zero_downconv`.
    Decoders,
}

impl Trainable {
    /// Whether the variable called `name` (a weight-schema path) is trained.
    pub fn trains(self, name: &str) -> bool {
        match self {
            Trainable::All => true,
            Trainable::Decoders => name.starts_with("decoders."),
        }
    }
}

/// Compute precision of a training step's encoder, decoders and LPIPS network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    F32,
    /// Convolutions and attention in bfloat16 (tensor cores on a GPU), with f32 master
    /// weights, GroupNorm, losses and the whole quantizer.
    Bf16,
}

/// How a training step uses the device: speed options that leave the model and its
/// contract unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PerfOptions {
    /// Compute precision (see [`Precision`]).
    pub precision: Precision,
    /// Let cuDNN time its convolution algorithms on the first step of each shape and keep the
    /// fastest (CUDA only; results stay deterministic within a run, not across runs).
    pub cudnn_benchmark: bool,
    /// Attention through libtorch's fused scaled-dot-product kernel.
    pub fused_attention: bool,
}

impl Default for PerfOptions {
    fn default() -> Self {
        PerfOptions {
            precision: Precision::F32,
            cudnn_benchmark: true,
            fused_attention: true,
        }
    }
}

/// A whole training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Model preset (`paper`, `small`, `tiny`).
    pub preset: String,
    /// Overrides of preset fields.
    #[serde(default)]
    pub model: ModelOverrides,
    /// Image folder (recursive JPEG/PNG).
    pub data_dir: PathBuf,
    /// Data pipeline options.
    #[serde(default)]
    pub data: DataConfig,
    /// Run folder: checkpoint, log, exported weights.
    pub out_dir: PathBuf,
    /// Seed of model init, data order and codebook restarts.
    #[serde(default)]
    pub seed: u64,
    /// Optimizer and schedule.
    #[serde(default)]
    pub schedule: Schedule,
    /// Loss weights.
    #[serde(default)]
    pub loss: LossWeights,
    /// Codebook options.
    #[serde(default)]
    pub codebook: CodebookOptions,
    /// Initialisation options.
    #[serde(default)]
    pub init: InitOptions,
    /// Speed options.
    #[serde(default)]
    pub perf: PerfOptions,
    /// Which variables are trained (`all`, or `decoders` to keep every token as it is).
    #[serde(default)]
    pub trainable: Trainable,
    /// Evaluate the held-out images every this many steps (0: never); see `train::validate`.
    #[serde(default)]
    pub val_every: u64,
    /// Held-out images scored by each validation (the first of the fixed split; 0: all).
    #[serde(default = "default_val_images")]
    pub val_images: usize,
    /// Checkpoint every this many steps (also at the end and on Ctrl-C).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Write a log line every this many steps.
    #[serde(default = "one")]
    pub log_every: u64,
    /// LPIPS-VGG weight file (needed when `loss.perceptual > 0`).
    #[serde(default = "default_lpips")]
    pub lpips_path: PathBuf,
    /// Device (`cpu`, `cuda`, `auto`).
    #[serde(default = "default_device")]
    pub device: DeviceRequest,
}

fn default_checkpoint_every() -> u64 {
    100
}
fn one() -> u64 {
    1
}
fn default_val_images() -> usize {
    50
}
fn default_lpips() -> PathBuf {
    PathBuf::from("../shared/data/lpips/vgg16.safetensors")
}
fn default_device() -> DeviceRequest {
    DeviceRequest::Auto
}

impl TrainConfig {
    /// Reads, parses and validates a TOML run config. Relative paths in it are taken
    /// relative to the current directory.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses and validates TOML text (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, TrainError> {
        let cfg: TrainConfig = toml::from_str(text).map_err(|e| TrainError::ConfigParse {
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The model configuration: the preset with the overrides applied.
    pub fn model_config(&self) -> Result<ModelConfig, TrainError> {
        let mut m = ModelConfig::preset(&self.preset)?;
        let o = &self.model;
        macro_rules! apply {
            ($($f:ident),*) => { $( if let Some(v) = &o.$f { m.$f = v.clone(); } )* };
        }
        apply!(
            channels,
            channel_mult,
            num_res_blocks,
            decoder_res_blocks,
            mid_attention,
            z_channels
        );
        apply!(
            codebook_size,
            codebook_dim,
            levels,
            strategy,
            norm_groups,
            mean,
            std
        );
        m.validate()?;
        Ok(m)
    }

    /// Checks every field; returns the first problem.
    pub fn validate(&self) -> Result<(), TrainError> {
        let m = self.model_config()?;
        let s = &self.schedule;
        let bad = |f: &str, r: String| Err(TrainError::bad_config(f, r));
        if s.steps == 0 {
            return bad("schedule.steps", "must be at least 1".into());
        }
        if s.batch == 0 {
            return bad("schedule.batch", "must be at least 1".into());
        }
        if !(s.lr.is_finite() && s.lr > 0.0) {
            return bad(
                "schedule.lr",
                format!("must be a positive number, got {}", s.lr),
            );
        }
        if !(0.0..=1.0).contains(&s.min_lr_ratio) {
            return bad(
                "schedule.min_lr_ratio",
                format!("must be in [0, 1], got {}", s.min_lr_ratio),
            );
        }
        for (f, b) in [("schedule.beta1", s.beta1), ("schedule.beta2", s.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return bad(f, format!("must be in [0, 1), got {b}"));
            }
        }
        if !(s.eps.is_finite() && s.eps > 0.0) {
            return bad("schedule.eps", format!("must be positive, got {}", s.eps));
        }
        let stride = m.coarsest_stride() as u32;
        if self.data.image_size == 0 || !self.data.image_size.is_multiple_of(stride) {
            return bad(
                "data.image_size",
                format!(
                    "must be a positive multiple of the coarsest stride {stride}, got {}",
                    self.data.image_size
                ),
            );
        }
        let l = &self.loss;
        for (f, w) in [
            ("loss.l1", l.l1),
            ("loss.perceptual", l.perceptual),
            ("loss.codebook", l.codebook),
            ("loss.beta", l.beta),
        ] {
            if !(w.is_finite() && w >= 0.0) {
                return bad(f, format!("must be a non-negative number, got {w}"));
            }
        }
        let c = &self.codebook;
        if !(c.ema_decay > 0.0 && c.ema_decay < 1.0) {
            return bad(
                "codebook.ema_decay",
                format!("must be in (0, 1), got {}", c.ema_decay),
            );
        }
        if !(c.lr_scale.is_finite() && c.lr_scale >= 0.0) {
            return bad(
                "codebook.lr_scale",
                format!("must be a non-negative number, got {}", c.lr_scale),
            );
        }
        if c.kmeans_step > 0 && !c.kmeans_init {
            return bad(
                "codebook.kmeans_step",
                "a k-means warm-up needs kmeans_init = true".into(),
            );
        }
        if c.kmeans_step >= s.steps && c.kmeans_init {
            return bad(
                "codebook.kmeans_step",
                format!(
                    "must be below schedule.steps ({}), got {}",
                    s.steps, c.kmeans_step
                ),
            );
        }
        if c.restart_dead && c.restart_every == 0 {
            return bad(
                "codebook.restart_every",
                "must be at least 1 when restart_dead is on".into(),
            );
        }
        if self.trainable == Trainable::Decoders {
            self.validate_frozen_tokens()?;
        }
        if self.checkpoint_every == 0 || self.log_every == 0 {
            return bad(
                "checkpoint_every",
                "checkpoint_every and log_every must be at least 1".into(),
            );
        }
        Ok(())
    }

    /// With `trainable = "decoders"`, refuses every option that would change a token.
    fn validate_frozen_tokens(&self) -> Result<(), TrainError> {
        let c = &self.codebook;
        let conflicts = [
            (
                self.init.from.is_none(),
                "init.from",
                "a weight file to start from (the encoder and codebook it keeps)",
            ),
            (
                self.init.zero_downconv,
                "init.zero_downconv",
                "false (zeroing the level convolutions changes the coarse tokens)",
            ),
            (
                c.mode == CodebookMode::Ema,
                "codebook.mode",
                "\"loss\" (EMA moves the codebook)",
            ),
            (
                c.restart_dead,
                "codebook.restart_dead",
                "false (restarts move codebook entries)",
            ),
            (
                c.kmeans_init,
                "codebook.kmeans_init",
                "false (k-means replaces the codebook)",
            ),
        ];
        match conflicts.iter().find(|(bad, ..)| *bad) {
            Some((_, field, needs)) => Err(TrainError::bad_config(
                *field,
                format!("trainable = \"decoders\" keeps every token, so this must be {needs}"),
            )),
            None => Ok(()),
        }
    }

    /// Checks that the LPIPS file exists when the perceptual loss is on.
    pub fn check_lpips(&self) -> Result<(), TrainError> {
        if self.loss.perceptual > 0.0 && !self.lpips_path.is_file() {
            return Err(TrainError::MissingLpips {
                path: self.lpips_path.clone(),
            });
        }
        Ok(())
    }
}
