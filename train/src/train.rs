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
use crate::codebook::{CodebookState, kmeans};
use crate::config::{CodebookMode, TrainConfig};
use crate::data::{Dataset, Loader};
use crate::export::{Provenance, weights_from_varstore, write_weights};
use crate::lpips::{Lpips, Net};
use crate::model::Hvq;
use crate::optim::{Adam, AdamParams};

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
    /// Distinct codebook entries this level used in the batch.
    pub usage: i64,
}

/// Everything logged about one step.
#[derive(Debug, Clone, Serialize)]
pub struct StepStats {
    /// The step just completed (1-based count of updates).
    pub step: u64,
    /// Learning rate used.
    pub lr: f64,
    /// Sum over levels of the weighted losses.
    pub loss: f64,
    /// Per-level details, finest first.
    pub levels: Vec<LevelStats>,
    /// Entries used by every level in the batch.
    pub usage_all_levels: i64,
    /// Codebook entries restarted this step.
    pub restarted: usize,
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
}

impl Trainer {
    /// Builds a freshly initialised model (seeded by `cfg.seed`) on `device`.
    ///
    /// Errors: bad config, or a missing/unreadable LPIPS file when the perceptual loss is on.
    pub fn new(cfg: &TrainConfig, device: Device) -> Result<Self, TrainError> {
        cfg.validate()?;
        cfg.check_lpips()?;
        let model_cfg = cfg.model_config()?;
        let (vs, model) = seeded_model(&model_cfg, cfg.seed, device);
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        if cfg.codebook.mode == CodebookMode::Ema {
            // EMA owns the codebook: no gradient, no Adam state.
            vars.retain(|(n, _)| n != "quantizer.codebook");
            let _ = model.codebook().shallow_clone().set_requires_grad(false);
        }
        let s = &cfg.schedule;
        let adam = Adam::new(
            vars,
            AdamParams {
                beta1: s.beta1,
                beta2: s.beta2,
                eps: s.eps,
            },
        );
        let cb = CodebookState::new(model.codebook(), &cfg.codebook);
        let lpips = if cfg.loss.perceptual > 0.0 {
            Some(Lpips::load(&cfg.lpips_path, Net::Vgg, device)?)
        } else {
            None
        };
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5EED_C0DE);
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
        })
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
    pub fn kmeans_init(&mut self, images01: &Tensor) {
        let latents = tch::no_grad(|| self.flat_latents(&images01.to_device(self.device)));
        let n = self.model_cfg.codebook_size as i64;
        let centres = kmeans(&latents, n, self.cfg.codebook.kmeans_iters, &mut self.rng);
        tch::no_grad(|| self.model.codebook().shallow_clone().copy_(&centres));
        self.cb = CodebookState::new(self.model.codebook(), &self.cfg.codebook);
    }

    fn flat_latents(&self, x01: &Tensor) -> Tensor {
        let d = self.model_cfg.codebook_dim as i64;
        let zs = self.model.level_latents(&self.model.normalize(x01));
        let flats: Vec<Tensor> = zs
            .iter()
            .map(|z| self.model.project(z).permute([0, 2, 3, 1]).reshape([-1, d]))
            .collect();
        Tensor::cat(&flats, 0)
    }

    /// One optimizer step on a batch `[B, 3, S, S]` in `[0, 1]`.
    pub fn train_step(&mut self, images01: &Tensor) -> Result<StepStats, TrainError> {
        let x01 = images01.to_device(self.device).to_kind(Kind::Float);
        let xn = self.model.normalize(&x01);
        let outs = self.model.forward(&xn);
        let w = &self.cfg.loss;
        let ema = self.cfg.codebook.mode == CodebookMode::Ema;
        let mut total = Tensor::zeros([], (Kind::Float, self.device));
        let mut levels = Vec::with_capacity(outs.len());
        for o in &outs {
            let l1 = (&o.recon - &xn).abs().mean(Kind::Float);
            let perceptual = match &self.lpips {
                // LPIPS sees [0, 1] pixels; unclamped so its gradient never vanishes.
                Some(lp) => lp
                    .forward(&self.unnormalize(&o.recon), &x01)
                    .mean(Kind::Float),
                None => Tensor::zeros([], (Kind::Float, self.device)),
            };
            let cb_w = if ema { 0.0 } else { w.codebook };
            let level_total = &l1 * w.l1
                + &perceptual * w.perceptual
                + &o.codebook_loss * cb_w
                + &o.commitment_loss * w.beta;
            levels.push(LevelStats {
                l1: l1.double_value(&[]),
                perceptual: perceptual.double_value(&[]),
                codebook: o.codebook_loss.double_value(&[]),
                commit: o.commitment_loss.double_value(&[]),
                total: level_total.double_value(&[]),
                usage: 0,
            });
            total += level_total;
        }
        let loss = total.double_value(&[]);
        if !loss.is_finite() {
            return Err(TrainError::bad_config(
                "schedule.lr",
                format!("loss became {loss} at step {}", self.step + 1),
            ));
        }
        let lr = self.cfg.schedule.lr_at(self.step);
        self.adam.zero_grad();
        total.backward();
        self.adam.step(lr);
        self.step += 1;
        let (usage_all, restarted) = self.codebook_bookkeeping(&outs, &mut levels);
        Ok(StepStats {
            step: self.step,
            lr,
            loss,
            levels,
            usage_all_levels: usage_all,
            restarted,
        })
    }

    fn unnormalize(&self, y: &Tensor) -> Tensor {
        let t = |v: [f32; 3]| {
            Tensor::from_slice(&v)
                .view([1, 3, 1, 1])
                .to_device(self.device)
        };
        y * t(self.model_cfg.std) + t(self.model_cfg.mean)
    }

    /// Usage statistics, EMA update and dead-code restart after a step.
    fn codebook_bookkeeping(
        &mut self,
        outs: &[crate::model::LevelOutput],
        levels: &mut [LevelStats],
    ) -> (i64, usize) {
        let n = self.model_cfg.codebook_size as i64;
        let d = self.model_cfg.codebook_dim as i64;
        let mut all = Tensor::ones([n], (Kind::Bool, self.device));
        let mut lat = Vec::new();
        let mut tok = Vec::new();
        for (o, s) in outs.iter().zip(levels.iter_mut()) {
            let t = o.tokens.reshape([-1]);
            let used = t.bincount(None::<Tensor>, n).gt(0);
            s.usage = used.sum(Kind::Int64).int64_value(&[]);
            all = all.logical_and(&used);
            lat.push(o.latent.detach().permute([0, 2, 3, 1]).reshape([-1, d]));
            tok.push(t);
        }
        let (lat, tok) = (Tensor::cat(&lat, 0), Tensor::cat(&tok, 0));
        let mut codebook = self.model.codebook().shallow_clone();
        self.cb.after_step(&mut codebook, &lat, &tok, self.step);
        let opts = &self.cfg.codebook;
        let restarted = if opts.restart_dead && self.step.is_multiple_of(opts.restart_every) {
            self.cb
                .restart_dead(&mut codebook, &lat, self.step, &mut self.rng)
        } else {
            0
        };
        (all.sum(Kind::Int64).int64_value(&[]), restarted)
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
        Ok(())
    }

    /// Inference weights with provenance.
    pub fn export(&self, data: &str, command: &str) -> Result<hvq_spec::Weights, TrainError> {
        let prov = Provenance {
            trained_steps: self.step,
            data: data.to_string(),
            command: command.to_string(),
        };
        weights_from_varstore(&self.vs, &self.model_cfg, prov.metadata())
    }
}

/// Builds a model initialised from libtorch's RNG seeded with `seed`.
///
/// libtorch's RNG is process-global: the lock keeps two trainers built at once in one
/// process (tests, benchmarks) from interleaving their draws, so each init is a pure
/// function of its seed.
fn seeded_model(cfg: &ModelConfig, seed: u64, device: Device) -> (nn::VarStore, Hvq) {
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INIT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    tch::manual_seed(seed as i64);
    let vs = nn::VarStore::new(device);
    let model = Hvq::new(&vs.root(), cfg);
    (vs, model)
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
pub fn run(
    cfg: &TrainConfig,
    device: Device,
    opts: &RunOptions,
) -> Result<Option<StepStats>, TrainError> {
    let paths = RunPaths::new(&cfg.out_dir);
    std::fs::create_dir_all(&cfg.out_dir).map_err(|e| TrainError::io(&cfg.out_dir, e))?;
    let mut trainer = Trainer::new(cfg, device)?;
    let dataset = Dataset::open(&cfg.data_dir, &cfg.data)?;
    let resumed = opts.resume && paths.checkpoint.is_file();
    if resumed {
        trainer.load_checkpoint(&paths.checkpoint)?;
    }
    let s = &cfg.schedule;
    let d = &cfg.data;
    let mut loader = Loader::new(
        dataset.train().to_vec(),
        s.batch,
        d.image_size,
        cfg.seed,
        trainer.step(),
        d.workers,
        d.prefetch,
    )?;
    if !resumed && cfg.codebook.kmeans_init {
        let first = Loader::new(
            dataset.train().to_vec(),
            s.batch,
            d.image_size,
            cfg.seed,
            0,
            1,
            1,
        )?
        .next()
        .ok_or_else(|| TrainError::bad_config("data_dir", "no batch"))??;
        trainer.kmeans_init(&first.images);
    }
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&paths.log)
        .map_err(|e| TrainError::io(&paths.log, e))?;
    let bar = progress_bar(opts.progress, s.steps, trainer.step());
    let stop = stop_flag();
    let mut last = None;
    let mut t0 = Instant::now();
    while trainer.step() < s.steps {
        let batch = loader.next().ok_or_else(|| TrainError::LoaderStopped {
            step: trainer.step(),
        })??;
        let stats = trainer.train_step(&batch.images)?;
        let ips = s.batch as f64 / t0.elapsed().as_secs_f64();
        t0 = Instant::now();
        if stats.step % cfg.log_every == 0 || stats.step == s.steps {
            write_log(&mut log, &paths.log, &stats, ips)?;
        }
        update_bar(&bar, &stats, ips);
        let interrupted = stop.load(Ordering::SeqCst);
        if stats.step % cfg.checkpoint_every == 0 || stats.step == s.steps || interrupted {
            trainer.save_checkpoint(&paths.checkpoint)?;
        }
        last = Some(stats);
        if interrupted {
            bar.abandon_with_message("interrupted: checkpoint written");
            return Ok(last);
        }
    }
    bar.finish();
    let weights = trainer.export(&cfg.data_dir.display().to_string(), &opts.command)?;
    write_weights(&paths.weights, &weights, StoreDtype::F32)?;
    Ok(last)
}

fn write_log(
    log: &mut std::fs::File,
    path: &Path,
    stats: &StepStats,
    ips: f64,
) -> Result<(), TrainError> {
    let mut v = serde_json::to_value(stats).expect("stats serialize");
    v["images_per_s"] = serde_json::json!(ips);
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
