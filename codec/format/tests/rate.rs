//! Rate–distortion token choice (`choose_tokens`, `choose_levels`): near-equal entries are traded for bits, and the
//! result is an ordinary file.

mod common;

use common::{context_priors, header, rng, smooth_grids};
use hvq_format::{
    Candidates, FormatError, LevelCandidates, Limits, Priors, TokenGrid, choose_levels,
    choose_tokens, read_file, write_file,
};
use rand::Rng;

/// A quantizer on a line codebook (entry `c` sits at `c`): every latent is a smooth token plus noise,
/// and its candidates are the `k` entries nearest to it, nearest first, with squared distances.
struct Noisy {
    k: usize,
    codes: Vec<u32>,
    distances: Vec<f32>,
}

fn noisy(grid: &TokenGrid, n: usize, k: usize, seed: u64) -> Noisy {
    let mut r = rng(seed);
    let (mut codes, mut distances) = (Vec::new(), Vec::new());
    for &t in &grid.tokens {
        let z = f64::from(t) + r.gen_range(-1.4..1.4);
        let mut all: Vec<(f64, u32)> = (0..n as u32)
            .map(|c| ((f64::from(c) - z).powi(2), c))
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for &(d, c) in &all[..k] {
            codes.push(c);
            distances.push(d as f32);
        }
    }
    Noisy {
        k,
        codes,
        distances,
    }
}

fn candidates<'a>(grid: &TokenGrid, q: &'a Noisy) -> Candidates<'a> {
    Candidates {
        height: grid.height,
        width: grid.width,
        k: q.k,
        codes: &q.codes,
        distances: &q.distances,
    }
}

/// Every level chosen coarsest first, each with the chosen coarser grid as its parent.
fn choose_all(
    priors: &Priors,
    smooth: &[TokenGrid],
    noise: &[Noisy],
    lambda: f64,
) -> Vec<TokenGrid> {
    let mut out: Vec<TokenGrid> = Vec::new();
    for (g, q) in smooth.iter().zip(noise) {
        let tokens = choose_tokens(priors, g.level, candidates(g, q), out.last(), lambda).unwrap();
        out.push(TokenGrid {
            tokens,
            ..g.clone()
        });
    }
    out
}

/// Three levels of smooth tokens (coarsest first) with noisy latents' candidates (8 per position),
/// and priors with a context model fitted on other smooth grids.
fn smooth_fixture() -> (Priors, hvq_format::Header, Vec<TokenGrid>, Vec<Noisy>) {
    let n = 256;
    let priors = context_priors(3, n, 16, 100);
    let hd = header(128, 96, 3, &priors);
    let smooth = smooth_grids(&hd, n, 5);
    let noise: Vec<Noisy> = smooth
        .iter()
        .enumerate()
        .map(|(i, g)| noisy(g, n, 8, 40 + i as u64))
        .collect();
    (priors, hd, smooth, noise)
}

fn total_distance(grids: &[TokenGrid], noise: &[Noisy]) -> f64 {
    let mut sum = 0.0;
    for (g, q) in grids.iter().zip(noise) {
        for (i, &t) in g.tokens.iter().enumerate() {
            let r = q.codes[i * q.k..(i + 1) * q.k]
                .iter()
                .position(|&c| c == t)
                .unwrap();
            sum += f64::from(q.distances[i * q.k + r]);
        }
    }
    sum
}

#[test]
fn a_positive_weight_trades_a_little_distance_for_a_smaller_file_that_reads_back() {
    // Coarsest first, like the file and the choice.
    let (priors, hd, smooth, noise) = smooth_fixture();
    let nearest = choose_all(&priors, &smooth, &noise, 0.0);
    for (g, q) in nearest.iter().zip(&noise) {
        let first: Vec<u32> = q.codes.iter().step_by(q.k).copied().collect();
        assert_eq!(g.tokens, first, "lambda 0 keeps the nearest entries");
    }
    let base = write_file(&hd, &nearest, &priors).unwrap().len();
    let mut last = (base, total_distance(&nearest, &noise));
    for lambda in [1.0, 3.0, 10.0] {
        let chosen = choose_all(&priors, &smooth, &noise, lambda);
        let bytes = write_file(&hd, &chosen, &priors).unwrap();
        let file = read_file(&bytes, &priors, &Limits::default()).unwrap();
        assert_eq!(file.grids, chosen, "lambda {lambda}: an ordinary file");
        let now = (bytes.len(), total_distance(&chosen, &noise));
        // A larger weight buys fewer bytes with more distance.
        assert!(
            now.0 < last.0 && now.1 > last.1,
            "lambda {lambda}: {now:?} after {last:?}"
        );
        last = now;
    }
    // Measured: 536 bytes at 0, 472 at 10 (these toy tokens are cheap already; Kodak gains more).
    assert!(
        last.0 * 10 < base * 9,
        "lambda 10: {} of {base} bytes",
        last.0
    );
}

#[test]
fn without_a_context_model_frequent_entries_win_by_the_priors() {
    // Entry 0 is 99 times as frequent as entry 1: coding 1 costs log2(99) ≈ 6.6 bits more.
    let priors = Priors::from_counts(vec![vec![990, 10, 0, 0]]).unwrap();
    let extra = priors.cost_bits(0, 1).unwrap() - priors.cost_bits(0, 0).unwrap();
    // Entry 1 is nearer by 0.5.
    let q = Noisy {
        k: 2,
        codes: vec![1, 0],
        distances: vec![0.0, 0.5],
    };
    let grid = TokenGrid {
        level: 0,
        height: 1,
        width: 1,
        tokens: vec![0],
    };
    let at = |lambda: f64| choose_tokens(&priors, 0, candidates(&grid, &q), None, lambda).unwrap();
    // The switch happens where 0.5 = lambda · extra.
    assert_eq!(at(0.99 * 0.5 / extra), vec![1]);
    assert_eq!(at(1.01 * 0.5 / extra), vec![0]);
}

#[test]
fn inconsistent_candidates_or_weights_are_typed_errors() {
    let priors = context_priors(2, 64, 8, 3);
    let grid = TokenGrid {
        level: 0,
        height: 2,
        width: 3,
        tokens: vec![0; 6],
    };
    let codes: Vec<u32> = (0..12).collect();
    let distances = vec![0.5f32; 12];
    let ok = Candidates {
        height: 2,
        width: 3,
        k: 2,
        codes: &codes,
        distances: &distances,
    };
    assert!(choose_tokens(&priors, 0, ok, None, 0.1).is_ok());
    let short = &codes[..11];
    let far: Vec<u32> = (0..12).map(|i| i + 60).collect();
    let nan = {
        let mut d = distances.clone();
        d[3] = f32::NAN;
        d
    };
    let bad_parent = TokenGrid {
        tokens: vec![0; 5],
        ..grid.clone()
    };
    let cases: Vec<(&str, Candidates<'_>, usize, Option<&TokenGrid>, f64)> = vec![
        (
            "short codes",
            Candidates { codes: short, ..ok },
            0,
            None,
            0.1,
        ),
        (
            "outside the codebook",
            Candidates { codes: &far, ..ok },
            0,
            None,
            0.1,
        ),
        (
            "NaN distance",
            Candidates {
                distances: &nan,
                ..ok
            },
            0,
            None,
            0.1,
        ),
        ("k = 0", Candidates { k: 0, ..ok }, 0, None, 0.1),
        ("no such level", ok, 2, None, 0.1),
        ("negative weight", ok, 0, None, -1.0),
        ("infinite weight", ok, 0, None, f64::INFINITY),
        ("parent of the wrong size", ok, 0, Some(&bad_parent), 0.1),
    ];
    for (what, c, level, parent, lambda) in cases {
        assert_eq!(
            choose_tokens(&priors, level, c, parent, lambda),
            Err(FormatError::RateChoice),
            "{what}"
        );
        if parent.is_none() {
            let levels = [LevelCandidates {
                level,
                candidates: c,
            }];
            assert_eq!(
                choose_levels(&priors, &levels, lambda),
                Err(FormatError::RateChoice),
                "choose_levels: {what}"
            );
        }
    }
}

fn level_candidates<'a>(smooth: &[TokenGrid], noise: &'a [Noisy]) -> Vec<LevelCandidates<'a>> {
    smooth
        .iter()
        .zip(noise)
        .map(|(g, q)| LevelCandidates {
            level: g.level,
            candidates: candidates(g, q),
        })
        .collect()
}

#[test]
fn joint_choice_is_an_ordinary_file_and_level_by_level_without_a_context_model() {
    let n = 256;
    let (with_context, hd, smooth, noise) = smooth_fixture();
    let levels = level_candidates(&smooth, &noise);
    for lambda in [0.0, 1.0, 10.0] {
        let grids: Vec<TokenGrid> = choose_levels(&with_context, &levels, lambda)
            .unwrap()
            .into_iter()
            .zip(&smooth)
            .map(|(tokens, g)| TokenGrid {
                tokens,
                ..g.clone()
            })
            .collect();
        let bytes = write_file(&hd, &grids, &with_context).unwrap();
        let file = read_file(&bytes, &with_context, &Limits::default()).unwrap();
        assert_eq!(file.grids, grids, "lambda {lambda}");
        if lambda == 0.0 {
            assert_eq!(grids, choose_all(&with_context, &smooth, &noise, 0.0));
        }
    }
    // Only a context model makes a token's bits depend on its neighbours and children, so without
    // one the joint choice is the level-by-level one.
    let counts: Vec<Vec<u64>> = (0..3)
        .map(|l| (0..n as u64).map(|t| 1 + (t * 7 + l) % 50).collect())
        .collect();
    let plain = Priors::from_counts(counts).unwrap();
    for lambda in [0.3, 3.0] {
        let joint = choose_levels(&plain, &levels, lambda).unwrap();
        let single: Vec<Vec<u32>> = choose_all(&plain, &smooth, &noise, lambda)
            .into_iter()
            .map(|g| g.tokens)
            .collect();
        assert_eq!(joint, single, "lambda {lambda}");
    }
}
