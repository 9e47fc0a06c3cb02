//! One training step (losses per level, Adam, codebook options) and the training loop
//! (data, schedule, progress, JSON-lines log, checkpoints, Ctrl-C, resume).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use hvq_spec::{ModelConfig, StoreDtype};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tch::{Device, Kind, Tensor, nn};

use crate::TrainError;
use crate::checkpoint::{self, CheckpointMeta};
use crate::codebook::{CodebookState, balanced_rows, kmeans};
use crate::config::{CodebookMode, InitOptions, InitScheme, Precision, Schedule, TrainConfig};
use crate::data::{Dataset, Loader, LoaderOptions, LoaderSlice};
use crate::distributed::{Collective, shard};
use crate::export::{Provenance, weights_from_varstore, write_weights};
use crate::lpips::{Lpips, Net};
use crate::model::{Compute, Hvq, torch_default_init, zero_level_downconvs};
use crate::optim::{Adam, AdamParams};
use crate::sharing::{Sharing, UsageCounter};

/// The codebook's variable name (weight schema).
const CODEBOOK: &str = "quantizer.codebook";

/// Losses and codebook usage of one level at one step.
#[derive(Debug, Clone, Serialize)]
pub struct LevelStats {
    /// L1 in normalized units.
    pub l1: f64,
    /// LPIPS-VGG (0 when disabled).
    pub perceptual: f64,
    /// Codebook term.
    pub codebook: f64,
    /// Commitment term (before β).
    pub commit: f64,
    /// Weighted sum of this level's terms.
    pub total: f64,
    /// Distinct codebook entries this level used in the batch (with a group: in this rank's
    /// part of it).
    pub usage: i64,
}

/// Everything logged about one step.
#[derive(Debug, Clone, Serialize)]
pub struct StepStats {
    /// The step just completed (1-based count of updates).
    pub step: u64,
    /// Learning rate used.
    pub lr: f64,
    /// Sum over levels of the weighted losses (with a group: the mean over ranks, which is
    /// the global batch's).
    pub loss: f64,
    /// Per-level details, finest first (losses averaged over ranks like `loss`).
    pub levels: Vec<LevelStats>,
    /// Entries used by every level in the batch (with a group: in this rank's part of it).
    pub usage_all_levels: i64,
    /// Codebook entries restarted this step.
    pub restarted: usize,
    /// Whether this was a warm-up step with unquantized latents (`codebook.kmeans_step`).
    pub warmup: bool,
}

/// Codebook use over a window of training steps (the training log's `window` record).
#[derive(Debug, Clone, Serialize)]
pub struct WindowUsage {
    /// Steps counted.
    pub steps: u64,
    /// Sharing statistics of all tokens of those steps.
    #[serde(flatten)]
    pub sharing: Sharing,
}

/// Model, optimizer and codebook state of a run, independent of where batches come from.
pub struct Trainer {
    cfg: TrainConfig,
    model_cfg: ModelConfig,
    device: Device,
    vs: nn::VarStore,
    model: Hvq,
    adam: Adam,
    cb: CodebookState,
    rng: ChaCha8Rng,
    lpips: Option<Lpips>,
    step: u64,
    /// Steps the weights of `init.from` had been trained for (0 from random weights); exports
    /// count them in their `hvq.trained_steps`.
    prior_steps: u64,
    /// Total steps of the learning-rate schedule (from the config, or the checkpoint's).
    horizon: u64,
    /// Per-level token counts `[L, N]` since the last [`Trainer::take_window_usage`], on the
    /// device (read back only when logged).
    window: Tensor,
    window_steps: u64,
    /// The model's per-channel mean and std `[1, 3, 1, 1]` on the device (for LPIPS inputs).
    mean_std: (Tensor, Tensor),
    /// The last step's statistics, still on the device.
    pending: Option<PendingStats>,
    /// The data-parallel group this trainer is one rank of, if any.
    group: Option<Arc<dyn Collective>>,
}

/// A step's statistics before they are read back ([`Trainer::last_stats`]).
struct PendingStats {
    step: u64,
    lr: f64,
    loss: f64,
    /// f64 `[L, 5]`: L1, perceptual, codebook, commitment, total per level.
    values: Tensor,
    /// i64 `[L + 1]`: entries each level used, then entries used by every level.
    usage: Tensor,
    restarted: usize,
    warmup: bool,
}

impl Trainer {
    /// Builds a freshly initialised model (seeded by `cfg.seed`) on `device`.
    ///
    /// Errors: bad config, or a missing/unreadable LPIPS file when the perceptual loss is on.
    pub fn new(cfg: &TrainConfig, device: Device) -> Result<Self, TrainError> {
        Trainer::with_group(cfg, device, None)
    }

    /// As [`Trainer::new`], as one rank of data-parallel training when `group` is given.
    ///
    /// Every rank is handed either the same global batches (`schedule.batch` images) or only
    /// its slice of each (what a [`Loader`] with a [`crate::data::LoaderSlice`] makes), and
    /// trains on its slice ([`shard`]); the ranks start from rank 0's weights, average their
    /// gradients before every update and keep identical codebook state, so after every step
    /// all ranks hold the same model, which is (up to rounding) the one a single process
    /// trains on the whole global batch.
    ///
    /// Errors: as [`Trainer::new`]; a `schedule.batch` not divisible by the group's size
    /// ([`TrainError::BadConfig`]); the group's errors.
    pub fn with_group(
        cfg: &TrainConfig,
        device: Device,
        group: Option<Arc<dyn Collective>>,
    ) -> Result<Self, TrainError> {
        cfg.validate()?;
        if let Some(g) = &group
            && !cfg.schedule.batch.is_multiple_of(g.world_size())
        {
            return Err(TrainError::bad_config(
                "schedule.batch",
                format!(
                    "the global batch of {} images must be divisible by the {} processes",
                    cfg.schedule.batch,
                    g.world_size()
                ),
            ));
        }
        cfg.check_lpips()?;
        let model_cfg = cfg.model_config()?;
        let (vs, mut model, prior_steps) = seeded_model(&model_cfg, cfg.seed, device, &cfg.init)?;
        if let Some(g) = &group {
            // The seed gives every rank the same weights already; the broadcast makes sure of it
            // whatever the devices' random number generators do.
            let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            for (_, mut var) in vars {
                g.broadcast(&mut var, 0)?;
            }
        }
        let compute_kind = match cfg.perf.precision {
            Precision::F32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
        };
        model.set_compute(Compute {
            kind: compute_kind,
            fused_attention: cfg.perf.fused_attention,
        });
        if device.is_cuda() {
            tch::Cuda::cudnn_set_benchmark(cfg.perf.cudnn_benchmark);
        }
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        // Frozen variables get no gradient at all: with the encoder frozen, autograd records
        // nothing before the decoders, so the step skips the encoder's backward pass.
        vars.retain(|(name, var)| {
            let trained = cfg.trainable.trains(name);
            if !trained {
                let _ = var.shallow_clone().set_requires_grad(false);
            }
            trained
        });
        if cfg.codebook.mode == CodebookMode::Ema {
            // EMA owns the codebook: no gradient, no Adam state.
            vars.retain(|(n, _)| n != CODEBOOK);
            let _ = model.codebook().shallow_clone().set_requires_grad(false);
        }
        let s = &cfg.schedule;
        let mut adam = Adam::new(
            vars,
            AdamParams {
                beta1: s.beta1,
                beta2: s.beta2,
                eps: s.eps,
            },
        );
        if cfg.codebook.mode == CodebookMode::Loss {
            adam.set_lr_scale(CODEBOOK, cfg.codebook.lr_scale);
        }
        let cb = CodebookState::new(model.codebook(), &cfg.codebook);
        let window = Tensor::zeros(
            [model_cfg.levels as i64, model_cfg.codebook_size as i64],
            (Kind::Int64, device),
        );
        let lpips = if cfg.loss.perceptual > 0.0 {
            let mut lpips = Lpips::load(&cfg.lpips_path, Net::Vgg, device)?;
            lpips.set_conv_kind(compute_kind);
            Some(lpips)
        } else {
            None
        };
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5EED_C0DE);
        let per_channel = |v: [f32; 3]| Tensor::from_slice(&v).view([1, 3, 1, 1]).to_device(device);
        let mean_std = (per_channel(model_cfg.mean), per_channel(model_cfg.std));
        Ok(Trainer {
            cfg: cfg.clone(),
            model_cfg,
            device,
            vs,
            model,
            adam,
            cb,
            rng,
            lpips,
            step: 0,
            prior_steps,
            horizon: cfg.schedule.steps,
            window,
            window_steps: 0,
            mean_std,
            pending: None,
            group,
        })
    }

    /// Total steps of the learning-rate schedule.
    pub fn horizon(&self) -> u64 {
        self.horizon
    }

    /// Changes the learning-rate schedule's horizon (a deliberate new decay, e.g. to train a
    /// finished model further).
    pub fn set_horizon(&mut self, steps: u64) {
        self.horizon = steps;
    }

    /// The schedule with this run's horizon.
    fn schedule(&self) -> Schedule {
        Schedule {
            steps: self.horizon,
            ..self.cfg.schedule.clone()
        }
    }

    /// Learning rate of step `step` (0-based) under this run's horizon.
    pub fn lr_at(&self, step: u64) -> f64 {
        self.schedule().lr_at(step)
    }

    /// Codebook use since the last call (or the start), then starts a new window; `None` when
    /// no step was counted. With a group it counts every rank's tokens, and every rank must
    /// call it at the same steps.
    pub fn take_window_usage(&mut self) -> Result<Option<WindowUsage>, TrainError> {
        if self.window_steps == 0 {
            return Ok(None);
        }
        let mut window = self.window.shallow_clone();
        if let Some(g) = &self.group {
            // Every rank's tokens (each rank must call this at the same steps).
            window = self.window.copy();
            g.all_reduce_sum(&mut window)?;
        }
        let mut counter = UsageCounter::new(self.model_cfg.levels, self.model_cfg.codebook_size);
        for l in 0..self.model_cfg.levels {
            let row = Vec::<i64>::try_from(&window.get(l as i64).to_device(Device::Cpu))?;
            counter.add(l, &row);
        }
        let _ = self.window.zero_();
        let steps = std::mem::take(&mut self.window_steps);
        Ok(Some(WindowUsage {
            steps,
            sharing: counter.sharing(),
        }))
    }

    /// Completed steps.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The model.
    pub fn model(&self) -> &Hvq {
        &self.model
    }

    /// The variables (named as in the weight schema).
    pub fn varstore(&self) -> &nn::VarStore {
        &self.vs
    }

    /// The device the model lives on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Initialises the codebook by k-means over the projected latents of `images01` (all levels).
    ///
    /// With `codebook.level_quotas` the k-means sees as many latents of every level (all of the
    /// coarsest level's, and as many drawn from each finer one), instead of every position,
    /// which gives the finest level about three quarters of the sample.
    ///
    /// A trainer with a group panics if a collective fails; [`Trainer::init_codebook`] returns
    /// the error instead.
    pub fn kmeans_init(&mut self, images01: &Tensor) {
        self.init_codebook(images01)
            .expect("the k-means initialisation's collectives failed");
    }

    /// [`Trainer::kmeans_init`], returning the group's errors. With a group, `images01` is the
    /// global batch or this rank's slice of it (then the slices are gathered first, see
    /// [`Collective::all_gather`]): rank 0 runs the k-means over the whole global batch, as a
    /// single process would, and hands the centres and its random generator's position to the
    /// other ranks.
    ///
    /// Errors: the group's; [`TrainError::BadConfig`] for a batch of another size.
    pub fn init_codebook(&mut self, images01: &Tensor) -> Result<(), TrainError> {
        if let Some(x01) = self.whole_batch(images01)? {
            let (latents, sizes) = tch::no_grad(|| self.flat_latents(&x01));
            let latents = if self.cfg.codebook.level_quotas {
                let rows = balanced_rows(&sizes, &mut self.rng);
                latents.index_select(0, &Tensor::from_slice(&rows).to_device(self.device))
            } else {
                latents
            };
            let n = self.model_cfg.codebook_size as i64;
            let centres = kmeans(&latents, n, self.cfg.codebook.kmeans_iters, &mut self.rng);
            tch::no_grad(|| self.model.codebook().shallow_clone().copy_(&centres));
        }
        if let Some(g) = &self.group {
            g.broadcast(&mut self.model.codebook().shallow_clone(), 0)?;
            let pos = self.rng.get_word_pos();
            let mut words = Tensor::from_slice(&[(pos >> 64) as u64 as i64, pos as u64 as i64])
                .to_device(self.device);
            g.broadcast(&mut words, 0)?;
            let words = Vec::<i64>::try_from(&words.to_device(Device::Cpu))?;
            self.rng
                .set_word_pos(((words[0] as u64 as u128) << 64) | words[1] as u64 as u128);
        }
        self.cb = CodebookState::new(self.model.codebook(), &self.cfg.codebook);
        self.cb.mark_all_used(self.step);
        Ok(())
    }

    /// Whether `images` is this rank's slice of the global batch rather than all of it; always
    /// `false` without a group.
    ///
    /// Errors: [`TrainError::BadConfig`] when it is neither `schedule.batch` images nor a
    /// rank's share of them.
    fn is_slice(&self, images: &Tensor) -> Result<bool, TrainError> {
        let Some(g) = &self.group else {
            return Ok(false);
        };
        let rows = images.size().first().copied().unwrap_or(0);
        let (global, world) = (self.cfg.schedule.batch as i64, g.world_size() as i64);
        if rows == global {
            Ok(false)
        } else if rows * world == global {
            Ok(true)
        } else {
            Err(TrainError::bad_config(
                "schedule.batch",
                format!(
                    "rank {} was given {rows} images: a step takes the global batch of {global} or the rank's slice of {}",
                    g.rank(),
                    global / world
                ),
            ))
        }
    }

    /// This rank's images of `images`, the global batch or already this rank's slice of it.
    fn local_part(&self, images: &Tensor) -> Result<Tensor, TrainError> {
        match &self.group {
            Some(g) if !self.is_slice(images)? => Ok(shard(images, g.rank(), g.world_size())),
            _ => Ok(images.shallow_clone()),
        }
    }

    /// The whole global batch on the device in `[0, 1]` on rank 0 (the only rank that runs the
    /// k-means), `None` on the others. When `images01` is this rank's slice the slices are
    /// gathered, so every rank must call this at the same point. The gathered f32 batch holds
    /// the same bits as the whole batch uploaded: the conversion is element-wise.
    fn whole_batch(&self, images01: &Tensor) -> Result<Option<Tensor>, TrainError> {
        let lead = self.group.as_ref().is_none_or(|g| g.rank() == 0);
        match &self.group {
            Some(g) if self.is_slice(images01)? => {
                let all = g.all_gather(&self.upload(images01))?;
                Ok(lead.then_some(all))
            }
            _ => Ok(lead.then(|| self.upload(images01))),
        }
    }

    /// Projected latents of all levels, flattened `[M, D]` level after level, and each level's
    /// row count.
    fn flat_latents(&self, x01: &Tensor) -> (Tensor, Vec<i64>) {
        let d = self.model_cfg.codebook_dim as i64;
        let zs = self.model.level_latents(&self.model.normalize(x01));
        let flats: Vec<Tensor> = zs
            .iter()
            .map(|z| self.model.project(z).permute([0, 2, 3, 1]).reshape([-1, d]))
            .collect();
        let sizes = flats.iter().map(|f| f.size()[0]).collect();
        (Tensor::cat(&flats, 0), sizes)
    }

    /// Whether the next step is a warm-up step (unquantized latents before a delayed k-means).
    fn in_warmup(&self) -> bool {
        let c = &self.cfg.codebook;
        c.kmeans_init && self.step < c.kmeans_step
    }

    /// One optimizer step on a batch `[B, 3, S, S]` in `[0, 1]`, and its statistics.
    ///
    /// [`Trainer::advance`] followed by [`Trainer::last_stats`]: the statistics cost a
    /// device-to-host copy, so the training loop reads them only on the steps it logs.
    ///
    /// Errors: as [`Trainer::advance`].
    pub fn train_step(&mut self, images01: &Tensor) -> Result<StepStats, TrainError> {
        self.advance(images01)?;
        self.last_stats()
    }

    /// One optimizer step on a batch `[B, 3, S, S]` in `[0, 1]` (f32, or u8 in `0..=255`).
    ///
    /// With a group the batch is the global one, of which this rank trains on its [`shard`], or
    /// this rank's slice of it already (`schedule.batch / world_size` images, what a sliced
    /// [`Loader`] makes); the gradients, loss and per-level losses are averaged over the ranks in
    /// one all-reduce.
    ///
    /// During a k-means warm-up (`codebook.kmeans_step`) the decoders see unquantized latents;
    /// the step that ends it runs the k-means on this batch. The step's statistics stay on the
    /// device until [`Trainer::last_stats`] asks for them: the only value read back is the loss,
    /// once the backward pass is queued, to refuse a non-finite step before Adam applies it.
    ///
    /// Errors: [`TrainError::NonFiniteLoss`] (nothing of the step is applied),
    /// [`TrainError::BadConfig`] for a batch that is neither the global one nor this rank's
    /// slice, the group's and libtorch errors.
    pub fn advance(&mut self, images01: &Tensor) -> Result<(), TrainError> {
        let local = self.local_part(images01)?;
        let x01 = self.upload(&local);
        let xn = self.model.normalize(&x01);
        let warmup = self.in_warmup();
        let outs = self.model.forward_with(&xn, !warmup);
        let w = &self.cfg.loss;
        let ema = self.cfg.codebook.mode == CodebookMode::Ema;
        let levels = outs.len() as i64;
        let recons: Vec<Tensor> = outs.iter().map(|o| o.recon.to_kind(Kind::Float)).collect();
        let l1: Vec<Tensor> = recons
            .iter()
            .map(|r| (r - &xn).abs().mean(Kind::Float))
            .collect();
        // LPIPS sees [0, 1] pixels, unclamped so its gradient never vanishes; the target's
        // features are computed once, and all levels' reconstructions go through in one batch.
        let perceptual = match &self.lpips {
            Some(lp) => {
                let target = lp.target(&x01);
                let all = self.unnormalize(&Tensor::cat(&recons, 0));
                let b = x01.size()[0];
                lp.distance_to(&all, &target).view([levels, b]).mean_dim(
                    &[1i64][..],
                    false,
                    Kind::Float,
                )
            }
            None => Tensor::zeros([levels], (Kind::Float, self.device)),
        };
        let cb_w = if ema { 0.0 } else { w.codebook };
        let mut totals = Vec::with_capacity(outs.len());
        let mut per_level = Vec::with_capacity(outs.len());
        for (l, o) in outs.iter().enumerate() {
            let p = perceptual.get(l as i64);
            let total = &l1[l] * w.l1
                + &p * w.perceptual
                + &o.codebook_loss * cb_w
                + &o.commitment_loss * w.beta;
            per_level.push(Tensor::stack(
                &[&l1[l], &p, &o.codebook_loss, &o.commitment_loss, &total],
                0,
            ));
            totals.push(total);
        }
        let total = Tensor::stack(&totals, 0).sum(Kind::Float);
        self.adam.zero_grad();
        total.backward();
        let per_level = Tensor::stack(&per_level, 0);
        let (loss, values, grads) = match &self.group {
            None => (
                total.double_value(&[]),
                per_level.to_kind(Kind::Double),
                None,
            ),
            Some(g) => {
                // The loss and the per-level values ride behind the gradients: one all-reduce,
                // and every rank agrees on whether the step is finite. The mean of the ranks'
                // means is the global batch's mean (the slices are equally large).
                let tail = Tensor::cat(&[total.detach().reshape([1]), per_level.reshape([-1])], 0);
                let mut grads = self.adam.flat_grads(&tail);
                g.all_reduce_sum(&mut grads.buffer)?;
                grads.buffer /= g.world_size() as f64;
                let tail = grads.tail();
                let values = tail.narrow(0, 1, levels * 5).view([levels, 5]);
                (
                    tail.double_value(&[0]),
                    values.to_kind(Kind::Double),
                    Some(grads),
                )
            }
        };
        if !loss.is_finite() {
            let levels = Vec::<f64>::try_from(values.select(1, 4).to_device(Device::Cpu))?;
            return Err(TrainError::NonFiniteLoss {
                step: self.step + 1,
                loss,
                levels,
            });
        }
        let lr = self.lr_at(self.step);
        match &grads {
            None => self.adam.step(lr),
            Some(g) => self.adam.step_with(lr, g),
        }
        self.step += 1;
        let (usage, restarted) = self.codebook_bookkeeping(&outs, warmup)?;
        if warmup && !self.in_warmup() {
            self.init_codebook(images01)?;
        }
        self.pending = Some(PendingStats {
            step: self.step,
            lr,
            loss,
            values,
            usage,
            restarted,
            warmup,
        });
        Ok(())
    }

    /// The statistics of the last step (one device-to-host copy).
    ///
    /// Errors: [`TrainError::NoStep`] before the first step, libtorch errors.
    pub fn last_stats(&self) -> Result<StepStats, TrainError> {
        let p = self.pending.as_ref().ok_or(TrainError::NoStep)?;
        let values = Vec::<f64>::try_from(p.values.to_device(Device::Cpu).reshape([-1]))?;
        let usage = Vec::<i64>::try_from(p.usage.to_device(Device::Cpu))?;
        let (per_level, all) = usage.split_at(usage.len() - 1);
        let levels = values
            .chunks(5)
            .zip(per_level)
            .map(|(v, &usage)| LevelStats {
                l1: v[0],
                perceptual: v[1],
                codebook: v[2],
                commit: v[3],
                total: v[4],
                usage,
            })
            .collect();
        Ok(StepStats {
            step: p.step,
            lr: p.lr,
            loss: p.loss,
            levels,
            usage_all_levels: all[0],
            restarted: p.restarted,
            warmup: p.warmup,
        })
    }

    /// The batch on the model's device in f32 `[0, 1]`: a CUDA upload goes through pinned memory
    /// without blocking the host; a u8 batch is converted on the device (a quarter of the bytes).
    fn upload(&self, images: &Tensor) -> Tensor {
        let on_device = match self.device {
            Device::Cuda(_) if images.device() == Device::Cpu => images
                .pin_memory(self.device)
                .to_device_(self.device, images.kind(), true, false),
            _ => images.to_device(self.device),
        };
        match on_device.kind() {
            Kind::Uint8 => on_device.to_kind(Kind::Float) / 255.0,
            Kind::Float => on_device,
            _ => on_device.to_kind(Kind::Float),
        }
    }

    /// Mean per-level L1 (normalized units) and LPIPS-VGG (0 when the loss has none) of
    /// `images01` `[B, 3, S, S]`, without gradients: the validation score.
    pub fn score(&self, images01: &Tensor) -> Vec<(f64, f64)> {
        tch::no_grad(|| {
            let x01 = self.upload(images01);
            let xn = self.model.normalize(&x01);
            self.model
                .forward_with(&xn, !self.in_warmup())
                .iter()
                .map(|o| {
                    let recon = o.recon.to_kind(Kind::Float);
                    let l1 = (&recon - &xn).abs().mean(Kind::Double).double_value(&[]);
                    let p = self.lpips.as_ref().map_or(0.0, |lp| {
                        lp.forward(&self.unnormalize(&recon), &x01)
                            .mean(Kind::Double)
                            .double_value(&[])
                    });
                    (l1, p)
                })
                .collect()
        })
    }

    /// Normalized units back to `[0, 1]` pixels, unclamped (for LPIPS).
    fn unnormalize(&self, y: &Tensor) -> Tensor {
        let (mean, std) = &self.mean_std;
        y * std + mean
    }

    /// Usage statistics, EMA update and dead-code restart after a step (no codebook update
    /// during a warm-up: its tokens refer to a codebook the k-means is about to replace).
    fn codebook_bookkeeping(
        &mut self,
        outs: &[crate::model::LevelOutput],
        warmup: bool,
    ) -> Result<(Tensor, usize), TrainError> {
        let n = self.model_cfg.codebook_size as i64;
        let d = self.model_cfg.codebook_dim as i64;
        let mut all = Tensor::ones([n], (Kind::Bool, self.device));
        let mut usage = Vec::with_capacity(outs.len() + 1);
        let mut lat = Vec::new();
        let mut tok = Vec::new();
        for (l, o) in outs.iter().enumerate() {
            let t = o.tokens.reshape([-1]);
            // index_add, not bincount: CUDA's bincount reads its input's maximum back to the host.
            let counts =
                Tensor::zeros([n], (Kind::Int64, self.device)).index_add(0, &t, &t.ones_like());
            let used = counts.gt(0);
            usage.push(used.sum(Kind::Int64));
            all = all.logical_and(&used);
            if !warmup {
                let mut row = self.window.get(l as i64);
                row += &counts;
            }
            lat.push(o.latent.detach().permute([0, 2, 3, 1]).reshape([-1, d]));
            tok.push(t);
        }
        usage.push(all.sum(Kind::Int64));
        let usage = Tensor::stack(&usage, 0);
        if warmup {
            return Ok((usage, 0));
        }
        self.window_steps += 1;
        let sizes: Vec<i64> = lat.iter().map(|t| t.size()[0]).collect();
        let (lat, tok) = (Tensor::cat(&lat, 0), Tensor::cat(&tok, 0));
        let mut codebook = self.model.codebook().shallow_clone();
        let group = self.group.clone();
        let group = group.as_deref();
        self.cb
            .after_step(&mut codebook, &lat, &tok, &sizes, self.step, group)?;
        let opts = &self.cfg.codebook;
        let restarted = if opts.restart_dead && self.step.is_multiple_of(opts.restart_every) {
            let dead = self.cb.restart_dead(
                &mut codebook,
                &lat,
                &sizes,
                self.step,
                &mut self.rng,
                group,
            )?;
            if opts.restart_resets_optimizer && dead.size()[0] > 0 {
                self.adam.reset_rows(CODEBOOK, &dead);
            }
            dead.size()[0] as usize
        } else {
            0
        };
        Ok((usage, restarted))
    }

    /// Every tensor a checkpoint holds: `model.*`, Adam moments, codebook state.
    fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .map(|(n, t)| (format!("model.{n}"), t))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.extend(self.adam.state());
        v.extend(self.cb.state());
        v
    }

    /// Writes a checkpoint atomically.
    pub fn save_checkpoint(&self, path: &Path) -> Result<(), TrainError> {
        let meta = CheckpointMeta {
            step: self.step,
            model_json: self.model_cfg.to_json(),
            rng_seed: self.rng.get_seed(),
            rng_word_pos: self.rng.get_word_pos(),
            horizon: Some(self.horizon),
            prior_steps: self.prior_steps,
        };
        checkpoint::save(path, &self.state_tensors(), &meta)
    }

    /// Restores everything a checkpoint holds; it must be of the same model config.
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<(), TrainError> {
        let (tensors, meta) = checkpoint::load(path)?;
        let bad = |reason: String| TrainError::CheckpointMismatch {
            path: path.to_path_buf(),
            reason,
        };
        if meta.model_json != self.model_cfg.to_json() {
            return Err(bad(format!(
                "its model config is {}, this run's is {}",
                meta.model_json,
                self.model_cfg.to_json()
            )));
        }
        let get = |name: &str| tensors.get(name).map(|t| t.to_device(self.device));
        tch::no_grad(|| -> Result<(), TrainError> {
            for (name, mut var) in self.vs.variables() {
                let src = get(&format!("model.{name}"))
                    .ok_or_else(|| bad(format!("lacks model.{name}")))?;
                if src.size() != var.size() {
                    return Err(bad(format!(
                        "model.{name} has shape {:?}, expected {:?}",
                        src.size(),
                        var.size()
                    )));
                }
                var.copy_(&src);
            }
            for (name, mut t) in self.cb.state() {
                let src = get(&name).ok_or_else(|| bad(format!("lacks {name}")))?;
                t.copy_(&src);
            }
            Ok(())
        })?;
        self.adam
            .load_state(meta.step, get)
            .map_err(|e| bad(format!("optimizer state: {e}")))?;
        self.rng = ChaCha8Rng::from_seed(meta.rng_seed);
        self.rng.set_word_pos(meta.rng_word_pos);
        self.step = meta.step;
        if let Some(h) = meta.horizon {
            self.horizon = h;
        }
        Ok(())
    }

    /// Inference weights with provenance.
    pub fn export(&self, data: &str, command: &str) -> Result<hvq_spec::Weights, TrainError> {
        let prov = Provenance {
            trained_steps: self.prior_steps + self.step,
            data: data.to_string(),
            command: command.to_string(),
        };
        weights_from_varstore(&self.vs, &self.model_cfg, prov.metadata())
    }
}

/// Builds a model initialised from libtorch's RNG seeded with `seed`, or from the weight
/// file `init.from`.
///
/// libtorch's RNG is process-global: the lock keeps two trainers built at once in one
/// process (tests, benchmarks) from interleaving their draws, so each init is a pure
/// function of its seed.
///
/// Errors: `init.from` unreadable or invalid ([`TrainError::Io`], [`TrainError::Spec`]), or
/// made for another model ([`TrainError::BadConfig`]).
fn seeded_model(
    cfg: &ModelConfig,
    seed: u64,
    device: Device,
    init: &InitOptions,
) -> Result<(nn::VarStore, Hvq, u64), TrainError> {
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INIT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    tch::manual_seed(seed as i64);
    let vs = nn::VarStore::new(device);
    let model = Hvq::new(&vs.root(), cfg);
    let mut prior_steps = 0;
    if let Some(path) = &init.from {
        let weights = crate::export::read_weights(path)?;
        check_warm_start(cfg, weights.config(), path)?;
        crate::export::load_into_varstore(&vs, &weights)?;
        prior_steps = weights
            .metadata()
            .get(hvq_spec::meta::TRAINED_STEPS)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
    } else if init.scheme == InitScheme::Torch {
        torch_default_init(&vs);
    }
    if init.zero_downconv {
        zero_level_downconvs(&vs);
    }
    Ok((vs, model, prior_steps))
}

/// Whether weights made for `theirs` can start a model of `ours`: the same model, except for
/// a change of level strategy that keeps the same tensors (the names and shapes are checked
/// again when they are copied).
fn check_warm_start(
    ours: &ModelConfig,
    theirs: &ModelConfig,
    path: &Path,
) -> Result<(), TrainError> {
    let same_tensors =
        ours.levels == 1 || ours.strategy.has_downconv() == theirs.strategy.has_downconv();
    let mut theirs_restrategied = theirs.clone();
    theirs_restrategied.strategy = ours.strategy;
    if theirs_restrategied == *ours && same_tensors {
        return Ok(());
    }
    Err(TrainError::bad_config(
        "init.from",
        format!(
            "{} holds weights of another model ({}) than this config's ({})",
            path.display(),
            serde_json::to_string(theirs).unwrap_or_default(),
            serde_json::to_string(ours).unwrap_or_default()
        ),
    ))
}

/// Options of [`run`] that come from the command line rather than the config.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from `out_dir/checkpoint.safetensors` when it exists.
    pub resume: bool,
    /// Show a progress bar.
    pub progress: bool,
    /// The command line, recorded in exported weights.
    pub command: String,
    /// Stop (with a checkpoint and exported weights) after this many steps in total, without
    /// changing the learning-rate schedule; `None` runs to the schedule's horizon.
    pub stop_after: Option<u64>,
    /// On resume, replace the checkpoint's learning-rate horizon by the config's
    /// `schedule.steps` (a deliberate new decay); without it a differing horizon is refused.
    pub change_horizon: bool,
}

/// Where a run writes: checkpoint, log, weights.
#[derive(Debug, Clone)]
pub struct RunPaths {
    /// `checkpoint.safetensors`.
    pub checkpoint: PathBuf,
    /// `log.jsonl`.
    pub log: PathBuf,
    /// `weights.safetensors` (exported at the end).
    pub weights: PathBuf,
}

impl RunPaths {
    /// The files of a run folder.
    pub fn new(out_dir: &Path) -> Self {
        RunPaths {
            checkpoint: out_dir.join("checkpoint.safetensors"),
            log: out_dir.join("log.jsonl"),
            weights: out_dir.join("weights.safetensors"),
        }
    }
}

fn stop_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let f = Arc::new(AtomicBool::new(false));
        let g = Arc::clone(&f);
        // A second handler cannot be installed; the first one keeps working, so ignore that.
        let _ = ctrlc::set_handler(move || g.store(true, Ordering::SeqCst));
        f
    })
    .clone()
}

/// Runs (or resumes) the training described by `cfg` on `device`; returns the last step's stats.
///
/// The learning-rate schedule's horizon is the config's `schedule.steps` for a new run and the
/// checkpoint's for a resumed one: a resumed run whose config asks for another horizon is
/// refused unless [`RunOptions::change_horizon`] says so (changing it silently made the default
/// run's learning rate jump from 2.0e-5 to 9.75e-5). [`RunOptions::stop_after`] stops early
/// without touching the schedule.
pub fn run(
    cfg: &TrainConfig,
    device: Device,
    opts: &RunOptions,
) -> Result<Option<StepStats>, TrainError> {
    run_with_group(cfg, device, opts, None)
}

/// [`run`] as one rank of data-parallel training when `group` is given
/// ([`Trainer::with_group`]): every rank steps, only rank 0 writes the log, checkpoints,
/// validation records and exported weights. The run folder must be the same for every rank
/// (one machine, or a shared folder), so that all of them resume from the same checkpoint.
pub fn run_with_group(
    cfg: &TrainConfig,
    device: Device,
    opts: &RunOptions,
    group: Option<Arc<dyn Collective>>,
) -> Result<Option<StepStats>, TrainError> {
    let lead = group.as_ref().is_none_or(|g| g.rank() == 0);
    let paths = RunPaths::new(&cfg.out_dir);
    std::fs::create_dir_all(&cfg.out_dir).map_err(|e| TrainError::io(&cfg.out_dir, e))?;
    let mut trainer = Trainer::with_group(cfg, device, group.clone())?;
    let dataset = Dataset::open(&cfg.data_dir, &cfg.data)?;
    let resumed = opts.resume && paths.checkpoint.is_file();
    if resumed {
        trainer.load_checkpoint(&paths.checkpoint)?;
        reconcile_horizon(&mut trainer, cfg.schedule.steps, opts.change_horizon)?;
    }
    if lead {
        warn_about_repetition(cfg, dataset.train().len(), trainer.horizon());
    }
    let s = &cfg.schedule;
    let d = &cfg.data;
    // With a group every rank decodes only its slice of each global batch; sample i of batch
    // k is the same image and crop as in one process, so resume stays exact. The k-means
    // gathers the slices (`Trainer::init_codebook`).
    let slice = group.as_ref().map_or(LoaderSlice::WHOLE, |g| LoaderSlice {
        rank: g.rank(),
        world: g.world_size(),
    });
    let load = LoaderOptions {
        start_step: trainer.step(),
        workers: d.workers,
        prefetch: d.prefetch,
        slice,
        ..LoaderOptions::new(s.batch, d.image_size, cfg.seed)
    };
    let mut loader = Loader::start(dataset.train().to_vec(), &load)?;
    if !resumed && cfg.codebook.kmeans_init && cfg.codebook.kmeans_step == 0 {
        let first_opts = LoaderOptions {
            slice,
            ..LoaderOptions::new(s.batch, d.image_size, cfg.seed)
        };
        let first = Loader::start(dataset.train().to_vec(), &first_opts)?
            .next()
            .ok_or_else(|| TrainError::bad_config("data_dir", "no batch"))??;
        trainer.init_codebook(&first.images)?;
    }
    let val = if lead && cfg.val_every > 0 {
        Some(validation_images(cfg, &dataset)?)
    } else {
        None
    };
    let mut log = if lead {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&paths.log)
            .map_err(|e| TrainError::io(&paths.log, e))?;
        Some(file)
    } else {
        None
    };
    let stop_at = opts.stop_after.unwrap_or(trainer.horizon());
    let bar = progress_bar(opts.progress && lead, stop_at, trainer.step());
    let stop = stop_flag();
    let mut last = None;
    let (mut logged_at, mut t0) = (trainer.step(), Instant::now());
    while trainer.step() < stop_at {
        let batch = loader.next().ok_or_else(|| TrainError::LoaderStopped {
            step: trainer.step(),
        })??;
        trainer.advance(&batch.images)?;
        let step = trainer.step();
        let end = step == stop_at;
        let interrupted = agreed_stop(stop.load(Ordering::SeqCst), group.as_deref(), device)?;
        // Statistics are read back from the device only on logged steps (and the last one).
        if step % cfg.log_every == 0 || end || interrupted {
            let stats = trainer.last_stats()?;
            let steps = step - logged_at;
            let ips = (steps * s.batch as u64) as f64 / t0.elapsed().as_secs_f64();
            let window = trainer.take_window_usage()?;
            if let Some(log) = &mut log {
                write_log(log, &paths.log, &stats, ips, window.as_ref())?;
            }
            update_bar(&bar, &stats, ips);
            last = Some(stats);
            (logged_at, t0) = (step, Instant::now());
        } else {
            bar.set_position(step);
        }
        if let Some(v) = &val
            && let Some(log) = &mut log
            && (step % cfg.val_every == 0 || end)
        {
            write_validation(log, &paths.log, &trainer, v, s.batch)?;
        }
        if lead && (step % cfg.checkpoint_every == 0 || end || interrupted) {
            trainer.save_checkpoint(&paths.checkpoint)?;
        }
        if interrupted {
            bar.abandon_with_message("interrupted: checkpoint written");
            return Ok(last);
        }
    }
    bar.finish();
    if lead {
        let weights = trainer.export(&cfg.data_dir.display().to_string(), &opts.command)?;
        write_weights(&paths.weights, &weights, StoreDtype::F32)?;
    }
    Ok(last)
}

/// Whether any rank was interrupted (Ctrl-C), so that all stop at the same step.
fn agreed_stop(
    stop: bool,
    group: Option<&dyn Collective>,
    device: Device,
) -> Result<bool, TrainError> {
    let Some(g) = group else {
        return Ok(stop);
    };
    let mut flag = Tensor::from_slice(&[i64::from(stop)]).to_device(device);
    g.all_reduce_max(&mut flag)?;
    Ok(flag.int64_value(&[0]) != 0)
}

/// Applies the horizon rule of [`run`] after a checkpoint was loaded.
fn reconcile_horizon(trainer: &mut Trainer, wanted: u64, change: bool) -> Result<(), TrainError> {
    let stored = trainer.horizon();
    if stored == wanted {
        return Ok(());
    }
    let step = trainer.step();
    let before = trainer.lr_at(step);
    if !change {
        return Err(TrainError::bad_config(
            "schedule.steps",
            format!(
                "the checkpoint was trained towards a learning-rate horizon of {stored} steps, this run asks for {wanted}; \
                 resume with the same horizon (use --stop-after N to stop early), or pass --change-horizon to start a new decay on purpose"
            ),
        ));
    }
    trainer.set_horizon(wanted);
    eprintln!(
        "note: learning-rate horizon changed from {stored} to {wanted} steps: the rate at step {step} goes from {before:.3e} to {:.3e}",
        trainer.lr_at(step)
    );
    Ok(())
}

/// Passes over each training image beyond which a run is almost surely memorising its folder.
const MANY_EPOCHS: f64 = 1000.0;

/// Warns when a run will see each training image more than [`MANY_EPOCHS`] times.
fn warn_about_repetition(cfg: &TrainConfig, images: usize, horizon: u64) {
    let epochs = horizon as f64 * cfg.schedule.batch as f64 / images.max(1) as f64;
    if epochs > MANY_EPOCHS {
        eprintln!(
            "warning: {horizon} steps of batch {} over {images} training images is {epochs:.0} passes over each image; \
             a larger folder or fewer steps would serve better",
            cfg.schedule.batch
        );
    }
}

/// The held-out images a validation scores: centre crops of `data.image_size`.
fn validation_images(cfg: &TrainConfig, ds: &Dataset) -> Result<Tensor, TrainError> {
    let take = if cfg.val_images == 0 {
        ds.val().len()
    } else {
        cfg.val_images.min(ds.val().len())
    };
    if take == 0 {
        return Err(TrainError::bad_config(
            "val_every",
            "validation needs held-out images (data.val_count > 0)",
        ));
    }
    let crops = ds.val()[..take]
        .iter()
        .map(|p| p.load_center_crop(cfg.data.image_size))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Tensor::stack(&crops, 0))
}

/// Scores the held-out images and appends a `"split": "val"` record whose per-level
/// components are `val_l1` and `val_perceptual` (so `hvq-train plot --metric val_l1` draws them).
fn write_validation(
    log: &mut std::fs::File,
    path: &Path,
    trainer: &Trainer,
    images: &Tensor,
    batch: usize,
) -> Result<(), TrainError> {
    let n = images.size()[0];
    let mut sums: Vec<(f64, f64)> = Vec::new();
    for start in (0..n).step_by(batch.max(1)) {
        let len = (batch as i64).min(n - start);
        let part = trainer.score(&images.narrow(0, start, len));
        sums.resize(part.len(), (0.0, 0.0));
        for (acc, (l1, p)) in sums.iter_mut().zip(part) {
            acc.0 += l1 * len as f64;
            acc.1 += p * len as f64;
        }
    }
    let levels: Vec<serde_json::Value> = sums
        .iter()
        .map(|(l1, p)| serde_json::json!({"val_l1": l1 / n as f64, "val_perceptual": p / n as f64}))
        .collect();
    let record = serde_json::json!({
        "step": trainer.step(),
        "split": "val",
        "images": n,
        "levels": levels,
    });
    writeln!(log, "{record}").map_err(|e| TrainError::io(path, e))
}

fn write_log(
    log: &mut std::fs::File,
    path: &Path,
    stats: &StepStats,
    ips: f64,
    window: Option<&WindowUsage>,
) -> Result<(), TrainError> {
    let mut v = serde_json::to_value(stats).expect("stats serialize");
    v["images_per_s"] = serde_json::json!(ips);
    if let Some(w) = window {
        v["window"] = serde_json::to_value(w).expect("usage serializes");
    }
    writeln!(log, "{v}").map_err(|e| TrainError::io(path, e))
}

fn progress_bar(show: bool, steps: u64, start: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(steps);
    bar.set_position(start);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("valid template"),
    );
    bar
}

fn update_bar(bar: &indicatif::ProgressBar, s: &StepStats, ips: f64) {
    let per_level: Vec<String> = s.levels.iter().map(|l| format!("{:.3}", l.total)).collect();
    let usage: Vec<String> = s.levels.iter().map(|l| l.usage.to_string()).collect();
    bar.set_position(s.step);
    bar.set_message(format!(
        "loss {:.3} [{}] lr {:.2e} usage [{}] {:.1} img/s",
        s.loss,
        per_level.join(" "),
        s.lr,
        usage.join(" "),
        ips
    ));
}
