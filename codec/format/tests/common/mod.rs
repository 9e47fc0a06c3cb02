//! Seeded generators shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different part

use hvq_format::{CHUNK_HEADER_LEN, CHUNK_TRAILER_LEN, HEADER_LEN, Header, Priors, TokenGrid};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How tokens are drawn.
#[derive(Debug, Clone, Copy)]
pub enum Dist {
    /// Every token equally likely, levels independent.
    Uniform,
    /// Zipf-like marginals, and a finer token copies its parent 60% of the time.
    Skewed,
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn header(width: u32, height: u32, levels: u8, priors: &Priors) -> Header {
    Header {
        width,
        height,
        fingerprint: [0xA5; 32],
        model_levels: levels,
        // Like the `small` preset: finest stride 4, doubling per level.
        coarsest_stride: 4 << (levels - 1),
        priors_hash: priors.hash(),
    }
}

fn draw(rng: &mut ChaCha8Rng, n: usize, dist: Dist) -> u32 {
    match dist {
        Dist::Uniform => rng.gen_range(0..n as u32),
        Dist::Skewed => {
            let u: f64 = rng.r#gen();
            ((u.powi(4) * n as f64) as u32).min(n as u32 - 1)
        }
    }
}

/// Grids for every level of `header`, coarsest first.
pub fn grids(header: &Header, n: usize, dist: Dist, seed: u64) -> Vec<TokenGrid> {
    let mut rng = rng(seed);
    let mut out: Vec<TokenGrid> = Vec::new();
    for level in (0..header.model_levels as usize).rev() {
        let (h, w) = header.grid_dims(level).unwrap();
        let (h, w) = (h as usize, w as usize);
        let mut tokens = Vec::with_capacity(h * w);
        for i in 0..h * w {
            let parent = out
                .last()
                .map(|p| p.tokens[(i / w / 2) * p.width + (i % w) / 2]);
            let t = match (dist, parent) {
                (Dist::Skewed, Some(p)) if rng.gen_bool(0.6) => p,
                _ => draw(&mut rng, n, dist),
            };
            tokens.push(t);
        }
        out.push(TokenGrid {
            level,
            height: h,
            width: w,
            tokens,
        });
    }
    out
}

/// Priors "trained" on other grids from the same distribution.
pub fn trained_priors(levels: u8, n: usize, dist: Dist, seed: u64) -> Priors {
    let uniform = Priors::uniform(levels as usize, n).unwrap();
    let h = header(256, 256, levels, &uniform);
    let mut counts = vec![vec![0u64; n]; levels as usize];
    for g in grids(&h, n, dist, seed) {
        for t in g.tokens {
            counts[g.level][t as usize] += 1;
        }
    }
    Priors::from_counts(counts).unwrap()
}

/// File offsets where each chunk ends (the valid progressive prefix lengths), header end first.
pub fn chunk_boundaries(bytes: &[u8]) -> Vec<usize> {
    let mut at = hvq_format::HEADER_LEN;
    let mut out = vec![at];
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 12..at + 16].try_into().unwrap()) as usize;
        at += hvq_format::CHUNK_HEADER_LEN + len + hvq_format::CHUNK_TRAILER_LEN;
        out.push(at);
    }
    out
}

/// Grids with spatial structure on a 1-D "codebook" (entry `t` lies next to `t ± 1`): each token is a small
/// step from the mean of its left and up neighbours, and a finer token a small step from its parent.
/// Coarsest first, like [`grids`].
pub fn smooth_grids(header: &Header, n: usize, seed: u64) -> Vec<TokenGrid> {
    let mut rng = rng(seed);
    let mut out: Vec<TokenGrid> = Vec::new();
    for level in (0..header.model_levels as usize).rev() {
        let (h, w) = header.grid_dims(level).unwrap();
        let (h, w) = (h as usize, w as usize);
        let mut tokens: Vec<u32> = Vec::with_capacity(h * w);
        for i in 0..h * w {
            let (y, x) = (i / w, i % w);
            let parent = out.last().map(|p| {
                p.tokens[(y / 2).min(p.height - 1) * p.width + (x / 2).min(p.width - 1)] as i64
            });
            let left = (x > 0).then(|| tokens[i - 1] as i64);
            let up = (y > 0).then(|| tokens[i - w] as i64);
            let near: Vec<i64> = [parent, left, up].into_iter().flatten().collect();
            let base = if near.is_empty() {
                rng.gen_range(0..n as i64)
            } else {
                near.iter().sum::<i64>() / near.len() as i64
            };
            let t = (base + rng.gen_range(-2..=2)).clamp(0, n as i64 - 1);
            tokens.push(t as u32);
        }
        out.push(TokenGrid {
            level,
            height: h,
            width: w,
            tokens,
        });
    }
    out
}

/// The `m` nearest entries of every entry of a 1-D codebook of `n` entries, nearest first (ties: lower).
pub fn line_neighbours(n: usize, m: usize) -> Vec<u32> {
    let mut lists = Vec::with_capacity(n * m);
    for c in 0..n as i64 {
        let mut all: Vec<i64> = (0..n as i64).collect();
        all.sort_by_key(|&e| ((e - c).abs(), e));
        lists.extend(all[..m].iter().map(|&e| e as u32));
    }
    lists
}

/// Priors and a context model fitted on smooth grids of other images.
pub fn context_priors(levels: u8, n: usize, m: usize, seed: u64) -> Priors {
    let uniform = Priors::uniform(levels as usize, n).unwrap();
    let h = header(128, 96, levels, &uniform);
    let mut counts = vec![vec![0u64; n]; levels as usize];
    let mut fitter =
        hvq_format::ContextFitter::new(n, m, line_neighbours(n, m), levels as usize).unwrap();
    for s in 0..4 {
        let mut gs = smooth_grids(&h, n, seed + s);
        for g in &gs {
            for &t in &g.tokens {
                counts[g.level][t as usize] += 1;
            }
        }
        gs.reverse(); // the fitter takes the finest level first
        assert!(fitter.add_image(&gs));
    }
    let priors = Priors::from_counts(counts).unwrap();
    let context = fitter.finish(&priors).unwrap();
    priors.with_context(context).unwrap()
}

/// Stamps the priors hash and rewrites the header and chunk CRCs as far as the bytes go.
pub fn reseal(data: &mut [u8], priors: &Priors) {
    if data.len() < HEADER_LEN {
        return;
    }
    data[56..64].copy_from_slice(&priors.hash().to_le_bytes());
    let crc = crc32fast::hash(&data[..64]);
    data[64..68].copy_from_slice(&crc.to_le_bytes());
    let mut at = HEADER_LEN;
    while at + CHUNK_HEADER_LEN <= data.len() {
        let crc = crc32fast::hash(&data[at..at + 16]);
        data[at + 16..at + 20].copy_from_slice(&crc.to_le_bytes());
        let len = u32::from_le_bytes(data[at + 12..at + 16].try_into().unwrap()) as usize;
        let Some(end) = (at + CHUNK_HEADER_LEN)
            .checked_add(len)
            .filter(|&e| e + CHUNK_TRAILER_LEN <= data.len())
        else {
            break;
        };
        let crc = crc32fast::hash(&data[at..end]);
        data[end..end + 4].copy_from_slice(&crc.to_le_bytes());
        at = end + CHUNK_TRAILER_LEN;
    }
}
