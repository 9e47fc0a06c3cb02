//! The memory budget: images are started in file order while the estimated memory of those in
//! flight fits `--memory-budget`; one whose estimate exceeds the budget runs alone.

use std::sync::{Condvar, Mutex, MutexGuard};

use hvq_codec::Tiling;
use hvq_spec::ModelConfig;

/// A size such as `2G`, `512M`, `64k` or `1048576` (bytes; suffixes are powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let shift = match unit.to_ascii_lowercase().trim_end_matches(['b', 'i']) {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => {
            return Err(format!(
                "`{s}`: expected a size such as 2G, 512M or 1048576"
            ));
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}`: expected a size such as 2G, 512M or 1048576"))?;
    match n.checked_mul(1 << shift) {
        Some(0) => Err("the memory budget must be more than 0".into()),
        Some(v) => Ok(v),
        None => Err(format!("`{s}` is too large")),
    }
}

/// Estimated peak bytes of reading, decoding and encoding one image of `pixels` pixels: the
/// file, the decoder's buffer (`source_bpp` bytes a pixel), the RGB copy the codec takes and the
/// token grids (a byte a pixel covers them), and the encoder's working memory.
///
/// The working memory is that of the largest piece the encoder runs at once: the whole image up
/// to [`Tiling::whole_max_pixels`], a tile with its halo beyond. Per pixel of that piece it is
/// taken as eight f32 activations of the encoder's first (full-resolution) width: with the
/// default model (64 channels) that is 2 KB, and the codec measures about 2 GB per megapixel run
/// whole and 0.6 GB for a 576×576 tile input (1.8 KB a pixel).
pub fn image_cost(
    cfg: &ModelConfig,
    tiling: &Tiling,
    file_bytes: u64,
    pixels: u64,
    source_bpp: u64,
) -> u64 {
    let width = cfg.channels * cfg.channel_mult.first().copied().unwrap_or(1);
    let per_pixel = 8 * 4 * width as u64;
    let tile = u64::from(tiling.tile) + 2 * u64::from(tiling.overlap);
    let piece = pixels.min(tiling.whole_max_pixels.max(tile * tile));
    file_bytes
        .saturating_add(pixels.saturating_mul(source_bpp + 3 + 1))
        .saturating_add(piece.saturating_mul(per_pixel))
}

/// A counting semaphore over bytes that grants in ticket order (tickets are the images' places
/// in the work queue), so a large image waiting for the budget is not overtaken forever by
/// small ones.
pub struct Budget {
    limit: u64,
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    in_use: u64,
    next_ticket: usize,
    stopped: bool,
}

/// Budget held by one image; given back when dropped.
pub struct Grant<'a> {
    budget: &'a Budget,
    bytes: u64,
}

impl Budget {
    pub fn new(limit: u64) -> Self {
        Budget {
            limit,
            state: Mutex::new(State {
                in_use: 0,
                next_ticket: 0,
                stopped: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A worker that panicked held no invariant half-changed: the counters are plain numbers.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until it is `ticket`'s turn and `bytes` (at most the whole budget) fit; `None` when
    /// the run was stopped meanwhile. Every ticket must be passed through here exactly once.
    pub fn acquire(&self, ticket: usize, bytes: u64) -> Option<Grant<'_>> {
        let bytes = bytes.min(self.limit);
        let mut s = self.lock();
        while !s.stopped && (s.next_ticket != ticket || s.in_use + bytes > self.limit) {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if s.stopped {
            return None;
        }
        s.next_ticket += 1;
        s.in_use += bytes;
        drop(s);
        self.changed.notify_all();
        Some(Grant {
            budget: self,
            bytes,
        })
    }

    /// Wakes every waiter with `None`: the run is ending on an error.
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.changed.notify_all();
    }
}

impl Drop for Grant<'_> {
    fn drop(&mut self) {
        self.budget.lock().in_use -= self.bytes;
        self.budget.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        for bad in ["", "G", "2X", "-1", "0", "99999999999T", "1.5G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn large_images_cost_a_tile_tiled_and_their_size_whole() {
        let cfg = ModelConfig::small();
        let tiled = Tiling::default();
        let whole = Tiling {
            whole_max_pixels: u64::MAX,
            ..tiled
        };
        let gb = |b: u64| b as f64 / 1e9;
        // A 48-megapixel photo: its pixels (6 B each) and one tile's working memory.
        let photo = image_cost(&cfg, &tiled, 20 << 20, 48_000_000, 3);
        assert!((0.9..1.2).contains(&gb(photo)), "{}", gb(photo));
        assert!(image_cost(&cfg, &whole, 20 << 20, 48_000_000, 3) > 90_000_000_000);
        // A training crop: a small fraction of the default budget, so `-j` of them run at once.
        let crop = image_cost(&cfg, &tiled, 100 << 10, 256 * 256, 3);
        assert!(crop < (2 << 30) / 12, "{crop}");
        assert_eq!(crop, image_cost(&cfg, &whole, 100 << 10, 256 * 256, 3));
    }

    /// Four threads take tickets 0..40 in order; jobs of 3 units under a budget of 10 mean at
    /// most 3 at once, and one of 100 units (clamped to the budget) runs alone.
    #[test]
    fn grants_never_exceed_the_budget_and_oversized_ones_run_alone() {
        let budget = Budget::new(10);
        let next = AtomicU64::new(0);
        let peak = AtomicU64::new(0);
        let current = AtomicU64::new(0);
        let alone_ok = std::sync::atomic::AtomicBool::new(true);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    loop {
                        let t = next.fetch_add(1, Ordering::SeqCst) as usize;
                        if t >= 40 {
                            break;
                        }
                        let cost = if t == 17 { 100 } else { 3 };
                        let g = budget.acquire(t, cost).unwrap();
                        let now = current.fetch_add(g.bytes, Ordering::SeqCst) + g.bytes;
                        peak.fetch_max(now, Ordering::SeqCst);
                        if t == 17 && now != 10 {
                            alone_ok.store(false, Ordering::SeqCst);
                        }
                        std::thread::sleep(std::time::Duration::from_millis(1));
                        current.fetch_sub(g.bytes, Ordering::SeqCst);
                    }
                });
            }
        });
        assert!(peak.load(Ordering::SeqCst) <= 10);
        assert!(alone_ok.load(Ordering::SeqCst));
    }

    #[test]
    fn stop_wakes_waiters() {
        let budget = Budget::new(10);
        let held = budget.acquire(0, 10).unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| budget.acquire(1, 5).is_none());
            std::thread::sleep(std::time::Duration::from_millis(20));
            budget.stop();
            assert!(waiter.join().unwrap());
        });
        drop(held);
    }
}
