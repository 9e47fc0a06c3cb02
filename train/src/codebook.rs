//! Codebook learning options that keep the quantizer contract (nearest entry, shared by
//! all levels): EMA updates, dead-code restart, k-means initialisation.
//!
//! All randomness comes from a caller-owned ChaCha RNG that checkpoints save, so a resumed
//! run restarts the same entries with the same latents.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use crate::config::{CodebookMode, CodebookOptions};

/// Mutable codebook-learning state beside the codebook variable.
#[derive(Debug)]
pub struct CodebookState {
    opts: CodebookOptions,
    /// EMA of per-entry assignment counts `[N]` (EMA mode).
    pub ema_count: Tensor,
    /// EMA of per-entry sums of assigned latents `[N, D]` (EMA mode).
    pub ema_sum: Tensor,
    /// Last step at which each entry was used by any level, i64 `[N]`.
    pub last_used: Tensor,
}

impl CodebookState {
    /// Fresh state for `codebook` `[N, D]`.
    pub fn new(codebook: &Tensor, opts: &CodebookOptions) -> Self {
        let n = codebook.size()[0];
        // Count 1 / sum = entry means an unused entry keeps its value under EMA.
        CodebookState {
            opts: opts.clone(),
            ema_count: Tensor::ones([n], (Kind::Float, codebook.device())),
            ema_sum: codebook.detach().copy(),
            last_used: Tensor::zeros([n], (Kind::Int64, codebook.device())),
        }
    }

    /// Named state tensors for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        vec![
            ("codebook.ema_count".into(), self.ema_count.shallow_clone()),
            ("codebook.ema_sum".into(), self.ema_sum.shallow_clone()),
            ("codebook.last_used".into(), self.last_used.shallow_clone()),
        ]
    }

    /// After one step: EMA update (in EMA mode) and usage bookkeeping.
    ///
    /// `latents` are the detached projected latents of all levels, flattened `[M, D]`, and
    /// `tokens` their assignments `[M]`.
    pub fn after_step(
        &mut self,
        codebook: &mut Tensor,
        latents: &Tensor,
        tokens: &Tensor,
        step: u64,
    ) {
        tch::no_grad(|| {
            let _ = self.last_used.index_fill_(0, tokens, step as i64);
            if self.opts.mode == CodebookMode::Ema {
                let d = self.opts.ema_decay;
                let n = codebook.size()[0];
                let counts = Tensor::zeros([n], (Kind::Float, codebook.device())).index_add(
                    0,
                    tokens,
                    &latents.ones_like().select(1, 0),
                );
                let sums = codebook.zeros_like().index_add(0, tokens, latents);
                self.ema_count = &self.ema_count * d + counts * (1.0 - d);
                self.ema_sum = &self.ema_sum * d + sums * (1.0 - d);
                let fresh = &self.ema_sum / self.ema_count.clamp_min(1e-5).unsqueeze(1);
                codebook.copy_(&fresh);
            }
        });
    }

    /// Replaces entries unused for `restart_every` steps by random rows of `latents`.
    /// Returns how many were restarted.
    pub fn restart_dead(
        &mut self,
        codebook: &mut Tensor,
        latents: &Tensor,
        step: u64,
        rng: &mut ChaCha8Rng,
    ) -> usize {
        let window = self.opts.restart_every as i64;
        let dead = self
            .last_used
            .lt(step as i64 - window + 1)
            .nonzero()
            .view([-1]);
        let count = dead.size()[0] as usize;
        let m = latents.size()[0];
        if count == 0 || m == 0 {
            return 0;
        }
        let picks: Vec<i64> = (0..count).map(|_| rng.random_range(0..m)).collect();
        let rows = latents.index_select(0, &Tensor::from_slice(&picks).to_device(latents.device()));
        tch::no_grad(|| {
            let _ = codebook.index_copy_(0, &dead, &rows);
            let _ = self.ema_sum.index_copy_(0, &dead, &rows);
            let _ = self.ema_count.index_fill_(0, &dead, 1.0);
            let _ = self.last_used.index_fill_(0, &dead, step as i64);
        });
        count
    }
}

/// Nearest-centre assignment of `x` `[M, D]` to `centres` `[N, D]` (lowest index on ties).
pub fn assign(x: &Tensor, centres: &Tensor) -> Tensor {
    let dist = x.square().sum_dim_intlist(1, true, Kind::Float) - x.matmul(&centres.tr()) * 2.0
        + centres
            .square()
            .sum_dim_intlist(1, false, Kind::Float)
            .unsqueeze(0);
    dist.argmin(1, false)
}

/// k-means (Lloyd) over `x` `[M, D]` into `n` centres, seeded from random rows; an empty
/// cluster keeps its previous centre.
pub fn kmeans(x: &Tensor, n: i64, iters: usize, rng: &mut ChaCha8Rng) -> Tensor {
    tch::no_grad(|| {
        let m = x.size()[0];
        let picks: Vec<i64> = (0..n).map(|_| rng.random_range(0..m)).collect();
        let mut centres = x.index_select(0, &Tensor::from_slice(&picks).to_device(x.device()));
        for _ in 0..iters {
            let a = assign(x, &centres);
            let sums = centres.zeros_like().index_add(0, &a, x);
            let counts = Tensor::zeros([n], (Kind::Float, x.device())).index_add(
                0,
                &a,
                &x.ones_like().select(1, 0),
            );
            let used = counts.gt(0.0).unsqueeze(1);
            let means = sums / counts.clamp_min(1.0).unsqueeze(1);
            centres = means.where_self(&used, &centres);
        }
        centres
    })
}
