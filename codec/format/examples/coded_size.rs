//! Prints coded size against raw `log2 N` bits on synthetic token grids (seeded), per level and coding.
//! `cargo run -p hvq-format --release --example coded_size`
//!
//! Real tokens behave differently; rerun the same measurement on a trained model's tokens (the `hvq info`
//! command reports bytes per level) before quoting numbers for images.

use hvq_format::{Header, Priors, TokenGrid, write_file};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn main() {
    let n = 8192usize;
    let levels = 3u8;
    for (name, p_copy, power) in [
        ("uniform", 0.0, 1),
        ("zipf-like u^4", 0.0, 4),
        ("zipf-like u^4 + 60% copy parent", 0.6, 4),
    ] {
        let make = |seed| grids(256, 256, levels, n, p_copy, power, seed);
        let mut counts = vec![vec![0u64; n]; levels as usize];
        for g in make(1) {
            for t in g.tokens {
                counts[g.level][t as usize] += 1;
            }
        }
        for (pname, priors) in [
            (
                "uniform priors",
                Priors::uniform(levels as usize, n).unwrap(),
            ),
            ("trained priors", Priors::from_counts(counts).unwrap()),
        ] {
            let hd = Header {
                width: 256,
                height: 256,
                fingerprint: [0; 32],
                model_levels: levels,
                coarsest_stride: 16,
                priors_hash: priors.hash(),
            };
            let gs = make(2);
            let bytes = write_file(&hd, &gs, &priors).unwrap();
            let tokens: usize = gs.iter().map(|g| g.tokens.len()).sum();
            let raw = tokens as f64 * (n as f64).log2() / 8.0;
            println!(
                "{name:34} {pname:15} tokens {tokens:6} raw {raw:8.0} B  file {:6} B  {:.3} bits/token ({:.1}% of raw)",
                bytes.len(),
                bytes.len() as f64 * 8.0 / tokens as f64,
                100.0 * bytes.len() as f64 / raw
            );
        }
    }
}

fn grids(
    w: usize,
    h: usize,
    levels: u8,
    n: usize,
    p_copy: f64,
    power: i32,
    seed: u64,
) -> Vec<TokenGrid> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out: Vec<TokenGrid> = Vec::new();
    for level in (0..levels as usize).rev() {
        let (gh, gw) = (h / (4 << level), w / (4 << level));
        let tokens = (0..gh * gw)
            .map(|i| match out.last() {
                Some(p) if rng.gen_bool(p_copy) => p.tokens[(i / gw / 2) * p.width + (i % gw) / 2],
                _ => ((rng.gen_range(0.0f64..1.0).powi(power) * n as f64) as u32).min(n as u32 - 1),
            })
            .collect();
        out.push(TokenGrid {
            level,
            height: gh,
            width: gw,
            tokens,
        });
    }
    out
}
