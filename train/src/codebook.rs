//! Codebook learning options that keep the quantizer contract (nearest entry, shared by
//! all levels): EMA updates, dead-code restart, k-means initialisation.
//!
//! All randomness comes from a caller-owned ChaCha RNG that checkpoints save, so a resumed
//! run restarts the same entries with the same latents.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use crate::TrainError;
use crate::config::{CodebookMode, CodebookOptions};
use crate::distributed::Collective;

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
    /// `latents` are the detached projected latents of all levels, flattened `[M, D]` level
    /// after level, `tokens` their assignments `[M]`, and `sizes` the rows of each level. As one
    /// rank of a `group` these are the rank's part of the global batch: an entry's last use is
    /// the latest over the ranks, and EMA counts and sums are summed over them, so every rank
    /// ends the step with the state one process on the global batch would have.
    ///
    /// Errors: the group's.
    pub fn after_step(
        &mut self,
        codebook: &mut Tensor,
        latents: &Tensor,
        tokens: &Tensor,
        sizes: &[i64],
        step: u64,
        group: Option<&dyn Collective>,
    ) -> Result<(), TrainError> {
        tch::no_grad(|| {
            let _ = self.last_used.index_fill_(0, tokens, step as i64);
            if let Some(g) = group {
                g.all_reduce_max(&mut self.last_used)?;
            }
            if self.opts.mode == CodebookMode::Ema {
                let d = self.opts.ema_decay;
                let (n, dim) = (codebook.size()[0], codebook.size()[1]);
                let weights = if self.opts.ema_level_weights {
                    level_weights(sizes, latents.device())
                } else {
                    latents.ones_like().select(1, 0)
                };
                let counts = Tensor::zeros([n], (Kind::Float, codebook.device()))
                    .index_add(0, tokens, &weights);
                let sums =
                    codebook
                        .zeros_like()
                        .index_add(0, tokens, &(latents * weights.unsqueeze(1)));
                let (counts, sums) = match group {
                    // One collective for both.
                    Some(g) => {
                        let mut both = Tensor::cat(&[counts.unsqueeze(1), sums], 1);
                        g.all_reduce_sum(&mut both)?;
                        (both.select(1, 0), both.narrow(1, 1, dim))
                    }
                    None => (counts, sums),
                };
                self.ema_count = &self.ema_count * d + counts * (1.0 - d);
                self.ema_sum = &self.ema_sum * d + sums * (1.0 - d);
                let fresh = &self.ema_sum / self.ema_count.clamp_min(1e-5).unsqueeze(1);
                codebook.copy_(&fresh);
            }
            Ok(())
        })
    }

    /// Marks every entry as used at `step` (after a k-means re-initialisation, so that the
    /// restart window counts from there).
    pub fn mark_all_used(&mut self, step: u64) {
        let _ = self.last_used.fill_(step as i64);
    }

    /// Replaces entries unused for `restart_every` steps by random rows of `latents` (laid
    /// out level after level, `sizes` rows each; with `level_quotas` every level supplies the
    /// same number of them). Returns the restarted entries, i64 `[K]` (possibly empty).
    ///
    /// As one rank of a `group` (whose ranks hold equal slices of the global batch and the same
    /// `last_used` and RNG state), every rank finds the same dead entries and draws the same rows
    /// of the global batch; each row is supplied by the rank that holds it and summed over the
    /// ranks (the others add zeros, so the sum is exact). A group of one draws what no group does.
    ///
    /// Errors: the group's.
    pub fn restart_dead(
        &mut self,
        codebook: &mut Tensor,
        latents: &Tensor,
        sizes: &[i64],
        step: u64,
        rng: &mut ChaCha8Rng,
        group: Option<&dyn Collective>,
    ) -> Result<Tensor, TrainError> {
        let window = self.opts.restart_every as i64;
        let dead = self
            .last_used
            .lt(step as i64 - window + 1)
            .nonzero()
            .view([-1]);
        let count = dead.size()[0] as usize;
        if count == 0 || latents.size()[0] == 0 {
            return Ok(dead.narrow(0, 0, 0));
        }
        let (ranks, rank) = group.map_or((1, 0), |g| (g.world_size() as i64, g.rank() as i64));
        let global: Vec<i64> = sizes.iter().map(|s| s * ranks).collect();
        let picks = sample_rows(&global, count, self.opts.level_quotas, rng);
        let rows = match group {
            None => {
                latents.index_select(0, &Tensor::from_slice(&picks).to_device(latents.device()))
            }
            Some(g) => {
                let mut rows = rows_held(latents, sizes, &picks, ranks, rank);
                g.all_reduce_sum(&mut rows)?;
                rows
            }
        };
        tch::no_grad(|| {
            let _ = codebook.index_copy_(0, &dead, &rows);
            let _ = self.ema_sum.index_copy_(0, &dead, &rows);
            let _ = self.ema_count.index_fill_(0, &dead, 1.0);
            let _ = self.last_used.index_fill_(0, &dead, step as i64);
        });
        Ok(dead)
    }
}

/// The rows `picks` of the global batch's latents that this rank holds, zeros elsewhere,
/// `[picks, D]`. Latents are image-major within a level and rank `r` of `ranks` holds the r-th
/// slice of the images, so of level l's global rows it holds the block `[r·s_l, (r+1)·s_l)`.
fn rows_held(latents: &Tensor, sizes: &[i64], picks: &[i64], ranks: i64, rank: i64) -> Tensor {
    let (mut dst, mut src) = (Vec::new(), Vec::new());
    for (k, &p) in picks.iter().enumerate() {
        let (mut global_start, mut local_start) = (0, 0);
        for &s in sizes {
            if p < global_start + s * ranks {
                let offset = p - global_start;
                if offset / s == rank {
                    dst.push(k as i64);
                    src.push(local_start + offset % s);
                }
                break;
            }
            global_start += s * ranks;
            local_start += s;
        }
    }
    let rows = Tensor::zeros(
        [picks.len() as i64, latents.size()[1]],
        (latents.kind(), latents.device()),
    );
    if !dst.is_empty() {
        let index = |v: &[i64]| Tensor::from_slice(v).to_device(latents.device());
        let _ = rows.shallow_clone().index_copy_(
            0,
            &index(&dst),
            &latents.index_select(0, &index(&src)),
        );
    }
    rows
}

/// Per-row weights `[M]` giving every level the same total weight `M / L`.
fn level_weights(sizes: &[i64], device: tch::Device) -> Tensor {
    let total: i64 = sizes.iter().sum();
    let levels = sizes.iter().filter(|&&s| s > 0).count().max(1) as f64;
    let parts: Vec<Tensor> = sizes
        .iter()
        .map(|&s| {
            let w = if s > 0 {
                total as f64 / levels / s as f64
            } else {
                0.0
            };
            Tensor::full([s], w, (Kind::Float, device))
        })
        .collect();
    Tensor::cat(&parts, 0)
}

/// `count` random row indices into latents laid out level after level (`sizes[l]` rows for
/// level `l`): uniform over all rows, or with `quotas` the same number from every non-empty
/// level (the remainder going to the first levels).
pub fn sample_rows(sizes: &[i64], count: usize, quotas: bool, rng: &mut ChaCha8Rng) -> Vec<i64> {
    let total: i64 = sizes.iter().sum();
    if total == 0 {
        return Vec::new();
    }
    if !quotas {
        return (0..count).map(|_| rng.random_range(0..total)).collect();
    }
    let levels: Vec<(i64, i64)> = sizes
        .iter()
        .scan(0i64, |offset, &s| {
            let start = *offset;
            *offset += s;
            Some((start, s))
        })
        .filter(|&(_, s)| s > 0)
        .collect();
    (0..count)
        .map(|k| {
            let (start, s) = levels[k % levels.len()];
            start + rng.random_range(0..s)
        })
        .collect()
}

/// A k-means sample with the same number of rows from every level: each level's rows
/// (laid out level after level, `sizes[l]` each) are drawn, with replacement, as many times as
/// the smallest level has rows; the smallest level contributes all of its rows.
pub fn balanced_rows(sizes: &[i64], rng: &mut ChaCha8Rng) -> Vec<i64> {
    let Some(&q) = sizes.iter().filter(|&&s| s > 0).min() else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(q as usize * sizes.len());
    let mut start = 0i64;
    for &s in sizes {
        if s == q {
            out.extend(start..start + s);
        } else if s > 0 {
            out.extend((0..q).map(|_| start + rng.random_range(0..s)));
        }
        start += s;
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn level_of(row: i64, sizes: &[i64]) -> usize {
        let mut start = 0;
        for (l, &s) in sizes.iter().enumerate() {
            if row < start + s {
                return l;
            }
            start += s;
        }
        panic!("row {row} out of range")
    }

    #[test]
    fn quotas_draw_equally_from_every_level() {
        let sizes = [4096, 1024, 256];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let rows = sample_rows(&sizes, 300, true, &mut rng);
        let mut per_level = [0; 3];
        for &r in &rows {
            per_level[level_of(r, &sizes)] += 1;
        }
        assert_eq!(per_level, [100, 100, 100]);
        // Without quotas the finest level supplies about 76 % (4096 of 5376 rows).
        let rows = sample_rows(&sizes, 3000, false, &mut rng);
        let fine = rows.iter().filter(|&&r| level_of(r, &sizes) == 0).count();
        assert!((2100..2450).contains(&fine), "{fine}");
    }

    #[test]
    fn quotas_skip_empty_levels_and_empty_inputs() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let rows = sample_rows(&[0, 5, 0, 5], 10, true, &mut rng);
        assert!(rows.iter().all(|&r| (0..10).contains(&r)));
        assert!(sample_rows(&[0, 0], 3, true, &mut rng).is_empty());
    }

    #[test]
    fn balanced_sample_takes_the_smallest_level_whole() {
        let sizes = [64, 16, 4];
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let rows = balanced_rows(&sizes, &mut rng);
        assert_eq!(rows.len(), 12);
        let coarse: Vec<i64> = rows.iter().copied().filter(|&r| r >= 80).collect();
        assert_eq!(coarse, vec![80, 81, 82, 83]);
        for l in 0..3 {
            assert_eq!(
                rows.iter().filter(|&&r| level_of(r, &sizes) == l).count(),
                4
            );
        }
    }
}
