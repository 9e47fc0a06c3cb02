//! Rate–distortion token choice: an encoder may code, at a position, a codebook entry a little farther
//! from the latent than the nearest one when it costs fewer bits. The decoder is unchanged (it decodes
//! whatever tokens the file holds), so this is an encoder option, like a JPEG encoder's trellis
//! quantization, and files stay readable by every reader.
//!
//! Why it pays: the quantizer's nearest entry is often one of several almost equally near entries, and
//! the context model (`docs/format.md` §4.3) gives those very different probabilities. Choosing
//! `argmin distance + λ · bits` trades a small move in latent space for bits.
//!
//! The choice is greedy in the coder's order (row-major, coarser levels first, so every position sees
//! the already-chosen tokens that will be its contexts), then refined by one pass that also weighs
//! what each token costs the later positions that use it as a context ([`refine`]). [`choose_levels`]
//! then sweeps every level once more, coarsest first, and there a coarse token also weighs what it costs
//! the finer level's tokens that take it as their parent context. The bits are the
//! ideal code lengths `-log2 p` of the context model (coding 2), or of the level's unconditional
//! priors when the priors carry no context model. Measured with the embedded model on four Kodak
//! images at λ = 0.1 and 0.3, the refinement pass takes another 2.6 % off the level-0 prefix at
//! the same PSNR (a second pass: 0.4 % more; not taken), `docs/results/rate-distortion.md`.

use hvq_spec::TokenGrid;

use crate::coding::ParentGrid;
use crate::context::contexts_at;
use crate::{FormatError, PRECISION, Priors};

/// Every position's `k` candidate entries, nearest first, with their distances to the latent (any
/// non-negative measure of how much storing the entry costs in quality: the codec gives the energy
/// of the move in the outputs of the level decoder's first convolution).
#[derive(Clone, Copy, Debug)]
pub struct Candidates<'a> {
    /// Grid height and width.
    pub height: usize,
    /// Grid width.
    pub width: usize,
    /// Candidates per position (at least 1).
    pub k: usize,
    /// `codes[i·k..(i+1)·k]`: position `i`'s candidates, nearest first (row-major positions).
    pub codes: &'a [u32],
    /// The matching distances.
    pub distances: &'a [f32],
}

/// Chooses level `level`'s tokens among `candidates` by `distance + lambda · bits`, greedily in coding
/// order and then refined by one pass (see the module docs); `parent` is the coarser level's grid as
/// it will be written (its chosen tokens), if the file holds it. `lambda = 0` returns every
/// position's first candidate (the nearest entry). [`choose_levels`] chooses several levels jointly.
///
/// Errors: [`FormatError::RateChoice`] when the shapes disagree, a candidate is outside the codebook,
/// a distance is not finite, `lambda` is negative or not finite, or `level` is not one of the priors'.
pub fn choose_tokens(
    priors: &Priors,
    level: usize,
    candidates: Candidates<'_>,
    parent: Option<&TokenGrid>,
    lambda: f64,
) -> Result<Vec<u32>, FormatError> {
    check(priors, level, &candidates, lambda)?;
    if parent.is_some_and(|p| p.height.checked_mul(p.width) != Some(p.tokens.len())) {
        return Err(FormatError::RateChoice);
    }
    let parent = parent.map(|p| ParentGrid {
        height: p.height,
        width: p.width,
        tokens: &p.tokens,
    });
    Ok(choose_one(
        priors,
        level,
        &candidates,
        parent.as_ref(),
        lambda,
    ))
}

/// One level's candidates for [`choose_levels`].
#[derive(Clone, Copy, Debug)]
pub struct LevelCandidates<'a> {
    /// The level (0 = finest).
    pub level: usize,
    /// Its positions' candidates.
    pub candidates: Candidates<'a>,
}

/// Chooses the tokens of every level a file will hold, jointly: first each level as
/// [`choose_tokens`] does, coarsest first (a level's parent is the chosen grid of the level right
/// above it, when `levels` holds that level), then one more refinement sweep over every level,
/// coarsest first, in which a token also weighs the bits of the finer level's tokens that use it as
/// their parent context. Every step of that sweep lowers or keeps the total over all levels of
/// `distance + lambda · bits`, so coarse tokens drift towards what their children can predict, at a
/// small cost in the coarse level's own distance. Returns the tokens in the order of `levels`.
///
/// Measured with the embedded model on all of Kodak at λ = 0.1 and 0.3 (plain squared distances,
/// `docs/results/rate-distortion.md`): the level-0 prefix 0.9 % and 1.0 % smaller at the same PSNR
/// than level by level (ratios of the table rows), the level-1 prefix 0.3–0.6 % larger and 0.01–0.02
/// dB lower.
///
/// Errors: [`FormatError::RateChoice`] as for [`choose_tokens`], or when a level appears twice.
pub fn choose_levels(
    priors: &Priors,
    levels: &[LevelCandidates<'_>],
    lambda: f64,
) -> Result<Vec<Vec<u32>>, FormatError> {
    for l in levels {
        check(priors, l.level, &l.candidates, lambda)?;
    }
    // Coarsest first; the writer's parent of a level is the level right above it, when present.
    let mut order: Vec<usize> = (0..levels.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(levels[i].level));
    if order
        .windows(2)
        .any(|w| levels[w[0]].level == levels[w[1]].level)
    {
        return Err(FormatError::RateChoice);
    }
    // `chosen[o]`: the tokens of level `order[o]`; its parent is `chosen[o - 1]` and its child
    // `chosen[o + 1]` when those levels are adjacent to it.
    let adjacent = |o: usize| o > 0 && levels[order[o - 1]].level == levels[order[o]].level + 1;
    let shape = |o: usize| {
        let c = &levels[order[o]].candidates;
        (levels[order[o]].level, c.height, c.width)
    };
    let mut chosen: Vec<Vec<u32>> = Vec::with_capacity(order.len());
    for (o, &i) in order.iter().enumerate() {
        let parent = adjacent(o).then(|| parent_grid(shape(o - 1), &chosen[o - 1]));
        let l = &levels[i];
        let tokens = choose_one(priors, l.level, &l.candidates, parent.as_ref(), lambda);
        chosen.push(tokens);
    }
    if lambda > 0.0 && priors.context().is_some() {
        for (o, &i) in order.iter().enumerate() {
            let (before, rest) = chosen.split_at_mut(o);
            let (mine, after) = rest.split_first_mut().expect("o < chosen.len()");
            let parent = adjacent(o).then(|| parent_grid(shape(o - 1), &before[o - 1]));
            let child = (o + 1 < order.len() && adjacent(o + 1)).then(|| {
                let (level, height, width) = shape(o + 1);
                ChildGrid {
                    level,
                    height,
                    width,
                    tokens: &after[0],
                }
            });
            let l = &levels[i];
            refine(
                priors,
                l.level,
                &l.candidates,
                parent.as_ref(),
                child.as_ref(),
                lambda,
                mine,
            );
        }
    }
    // Back to the caller's order.
    let mut out = vec![Vec::new(); levels.len()];
    for (tokens, &i) in chosen.into_iter().zip(&order) {
        out[i] = tokens;
    }
    Ok(out)
}

fn parent_grid((_, height, width): (usize, usize, usize), tokens: &[u32]) -> ParentGrid<'_> {
    ParentGrid {
        height,
        width,
        tokens,
    }
}

/// The checks every choice makes before it starts (see [`choose_tokens`]'s errors).
fn check(
    priors: &Priors,
    level: usize,
    candidates: &Candidates<'_>,
    lambda: f64,
) -> Result<(), FormatError> {
    let Candidates {
        height,
        width,
        k,
        codes,
        distances,
    } = *candidates;
    let n = priors.codebook_size();
    let ok = k >= 1
        && level < priors.levels()
        && height
            .checked_mul(width)
            .and_then(|p| p.checked_mul(k))
            .is_some_and(|len| len == codes.len())
        && distances.len() == codes.len()
        && codes.iter().all(|&c| (c as usize) < n)
        && distances.iter().all(|d| d.is_finite())
        && lambda.is_finite()
        && lambda >= 0.0;
    ok.then_some(()).ok_or(FormatError::RateChoice)
}

/// One level's greedy choice and refinement, on checked candidates.
fn choose_one(
    priors: &Priors,
    level: usize,
    candidates: &Candidates<'_>,
    parent: Option<&ParentGrid<'_>>,
    lambda: f64,
) -> Vec<u32> {
    let Candidates {
        height,
        width,
        k,
        codes,
        ..
    } = *candidates;
    if lambda == 0.0 || k == 1 {
        return (0..height * width).map(|i| codes[i * k]).collect();
    }
    let mut tokens = greedy(priors, level, candidates, parent, lambda);
    refine(priors, level, candidates, parent, None, lambda, &mut tokens);
    tokens
}

/// The finer level's grid, whose tokens take a refined level's tokens as their parent context.
struct ChildGrid<'a> {
    level: usize,
    height: usize,
    width: usize,
    tokens: &'a [u32],
}

impl ChildGrid<'_> {
    /// The child rows (or columns) whose parent is row `p` of a grid of `parent` rows: the inverse
    /// of [`ParentGrid::at`], which clamps, so the last parent row also owns any rows past `2·parent`.
    fn span(p: usize, parent: usize, child: usize) -> std::ops::Range<usize> {
        let end = if p + 1 == parent {
            child
        } else {
            (2 * p + 2).min(child)
        };
        (2 * p).min(child)..end
    }
}

/// The greedy pass: each position, in coding order, takes the candidate with the least
/// `distance + lambda · bits` given the tokens chosen before it.
fn greedy(
    priors: &Priors,
    level: usize,
    candidates: &Candidates<'_>,
    parent: Option<&ParentGrid<'_>>,
    lambda: f64,
) -> Vec<u32> {
    let Candidates {
        height,
        width,
        k,
        codes,
        distances,
    } = *candidates;
    let positions = height * width;
    let first = |i: usize| codes[i * k];
    let unconditional = |t: u32| priors.cost_bits(level, t).unwrap_or(f64::from(PRECISION));
    let bits_of = |f: u32| f64::from(PRECISION) - f64::from(f).log2();
    let mut tokens = Vec::with_capacity(positions);
    let mut stamp = vec![u32::MAX; priors.codebook_size()];
    let (mut cands, mut freqs) = (Vec::new(), Vec::new());
    let mut costs = vec![0f64; k];
    for i in 0..positions {
        let cs = &codes[i * k..(i + 1) * k];
        // Bits of each candidate: its slot in the position's context alphabet, or the escape symbol
        // and then the level's priors (also the whole cost without a context model).
        let built = priors.context().and_then(|context| {
            let ctx = contexts_at(&tokens, width, i, parent);
            context.alphabet_stamped(level, &ctx, &mut stamp, &mut cands, &mut freqs)
        });
        let escape = freqs.last().map_or(0.0, |&f| bits_of(f));
        for (c, &t) in costs.iter_mut().zip(cs) {
            let slot = stamp[t as usize] as usize;
            *c = match (built, freqs.get(slot)) {
                (Some(()), Some(&f)) if slot < cands.len() => bits_of(f),
                (Some(()), _) => escape + unconditional(t),
                (None, _) => unconditional(t),
            };
        }
        for &t in &cands {
            stamp[t as usize] = u32::MAX;
        }
        cands.clear();
        // Strictly smaller wins: on equal cost the nearer candidate stays.
        let mut best = (f64::INFINITY, first(i));
        for ((&t, &d), &bits) in cs.iter().zip(&distances[i * k..(i + 1) * k]).zip(&costs) {
            let c = f64::from(d) + lambda * bits;
            if c < best.0 {
                best = (c, t);
            }
        }
        tokens.push(best.1);
    }
    tokens
}

/// One pass of iterated conditional modes over a greedy choice: each position, in coding order, takes
/// the candidate that minimises its distance plus `lambda` times the bits of itself **and** of the
/// later positions that use it as a context (its right, lower-left, lower and lower-right
/// neighbours), and, given a `child` grid, of the finer level's tokens that take it as their parent
/// context; all other tokens stay as they are. The greedy pass could not weigh those, since they were
/// not chosen yet. Each step can only lower the total `distance + lambda · bits`. Without a context
/// model there is nothing to weigh beyond the greedy pass, and the tokens stay.
fn refine(
    priors: &Priors,
    level: usize,
    candidates: &Candidates<'_>,
    parent: Option<&ParentGrid<'_>>,
    child: Option<&ChildGrid<'_>>,
    lambda: f64,
    tokens: &mut [u32],
) {
    let Some(context) = priors.context() else {
        return;
    };
    let Candidates {
        height,
        width,
        k,
        codes,
        distances,
    } = *candidates;
    // (dy, dx, kind): the later neighbour at (y + dy, x + dx) sees this position as context `kind`.
    const DEPENDENTS: [(usize, isize, usize); 4] = [(0, 1, 1), (1, 0, 2), (1, 1, 3), (1, -1, 4)];
    const PARENT: usize = 0;
    let bits = |level: usize, ctx: &[Option<u32>; 5], t: u32| {
        let unconditional = priors.cost_bits(level, t).unwrap_or(f64::from(PRECISION));
        context
            .token_bits(level, ctx, t, unconditional)
            .unwrap_or(f64::INFINITY)
    };
    // Every later token whose bits depend on position i's token: (level, token, its contexts, the
    // kind in which it sees position i).
    let mut deps: Vec<(usize, u32, [Option<u32>; 5], usize)> = Vec::new();
    for i in 0..height * width {
        let (y, x) = (i / width, i % width);
        deps.clear();
        for &(dy, dx, kind) in &DEPENDENTS {
            let (yy, Some(xx)) = (y + dy, x.checked_add_signed(dx)) else {
                continue;
            };
            if yy < height && xx < width {
                let j = yy * width + xx;
                deps.push((
                    level,
                    tokens[j],
                    contexts_at(tokens, width, j, parent),
                    kind,
                ));
            }
        }
        if let Some(c) = child {
            for cy in ChildGrid::span(y, height, c.height) {
                for cx in ChildGrid::span(x, width, c.width) {
                    let j = cy * c.width + cx;
                    let ctx = contexts_at(c.tokens, c.width, j, None);
                    deps.push((c.level, c.tokens[j], ctx, PARENT));
                }
            }
        }
        let own = contexts_at(tokens, width, i, parent);
        let mut best = (f64::INFINITY, tokens[i]);
        for (&c, &d) in codes[i * k..(i + 1) * k]
            .iter()
            .zip(&distances[i * k..(i + 1) * k])
        {
            let mut b = bits(level, &own, c);
            for &(l, t, mut ctx, kind) in &deps {
                ctx[kind] = Some(c);
                b += bits(l, &ctx, t);
            }
            let cost = f64::from(d) + lambda * b;
            if cost < best.0 {
                best = (cost, c);
            }
        }
        tokens[i] = best.1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ContextFitter, ContextModel};

    /// SplitMix64: deterministic numbers without a dev-dependency in unit tests.
    fn next(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A one-level grid of a random walk over `n` entries along rows, so neighbours predict tokens.
    fn walk(h: usize, w: usize, n: u32, seed: u64) -> TokenGrid {
        let mut s = seed;
        let mut tokens = Vec::with_capacity(h * w);
        for i in 0..h * w {
            let base = if i % w > 0 {
                tokens[i - 1]
            } else if i >= w {
                tokens[i - w]
            } else {
                0
            };
            let step = (next(&mut s) % 5) as i64 - 2;
            tokens.push((i64::from(base) + step).clamp(0, i64::from(n) - 1) as u32);
        }
        TokenGrid {
            level: 0,
            height: h,
            width: w,
            tokens,
        }
    }

    /// Every entry's `m` nearest entries on a line codebook, nearest first.
    fn line_lists(n: usize, m: usize) -> Vec<u32> {
        (0..n as i64)
            .flat_map(|c| {
                let mut all: Vec<i64> = (0..n as i64).collect();
                all.sort_by_key(|&e| ((e - c).abs(), e));
                all.into_iter().take(m).map(|e| e as u32)
            })
            .collect()
    }

    /// Priors and a context model (line lists of `m`) fitted on `images` (each finest level first).
    fn fitted_priors(n: usize, m: usize, levels: usize, images: Vec<Vec<TokenGrid>>) -> Priors {
        let mut fitter = ContextFitter::new(n, m, line_lists(n, m), levels).unwrap();
        let mut counts = vec![vec![1u64; n]; levels];
        for grids in images {
            for g in &grids {
                g.tokens
                    .iter()
                    .for_each(|&t| counts[g.level][t as usize] += 1);
            }
            assert!(fitter.add_image(&grids));
        }
        let priors = Priors::from_counts(counts).unwrap();
        let context: ContextModel = fitter.finish(&priors).unwrap();
        priors.with_context(context).unwrap()
    }

    /// Priors and a context model fitted on one-level random walks.
    fn walk_priors(n: usize, m: usize) -> Priors {
        let images = (0..4).map(|seed| vec![walk(40, 40, n as u32, seed)]);
        fitted_priors(n, m, 1, images.collect())
    }

    /// The level's `Σ distance + lambda · bits` with the ideal bits the refinement weighs.
    fn objective(priors: &Priors, c: &Candidates<'_>, tokens: &[u32], lambda: f64) -> f64 {
        let context = priors.context().unwrap();
        (0..tokens.len())
            .map(|i| {
                let t = tokens[i];
                let r = c.codes[i * c.k..(i + 1) * c.k]
                    .iter()
                    .position(|&x| x == t)
                    .unwrap();
                let ctx = contexts_at(tokens, c.width, i, None);
                let u = priors.cost_bits(0, t).unwrap();
                f64::from(c.distances[i * c.k + r])
                    + lambda * context.token_bits(0, &ctx, t, u).unwrap()
            })
            .sum()
    }

    #[test]
    fn refinement_never_raises_the_objective_and_usually_lowers_it() {
        let n = 64;
        let priors = walk_priors(n, 8);
        // Latents: a fresh walk plus noise; candidates: the 6 nearest entries on the line.
        let truth = walk(24, 32, n as u32, 99);
        let k = 6;
        let (codes, distances) = line_candidates(&truth, n, k, 7);
        let c = Candidates {
            height: 24,
            width: 32,
            k,
            codes: &codes,
            distances: &distances,
        };
        let mut lowered = 0;
        for lambda in [0.05, 0.2, 1.0, 4.0] {
            let mut tokens = greedy(&priors, 0, &c, None, lambda);
            let before = objective(&priors, &c, &tokens, lambda);
            refine(&priors, 0, &c, None, None, lambda, &mut tokens);
            let after = objective(&priors, &c, &tokens, lambda);
            assert!(
                after <= before + 1e-9,
                "lambda {lambda}: {after} > {before}"
            );
            lowered += usize::from(after < before - 1e-6);
            assert_eq!(choose_tokens(&priors, 0, c, None, lambda).unwrap(), tokens);
        }
        assert!(
            lowered >= 3,
            "the refinement changed little: {lowered} of 4"
        );
    }

    #[test]
    fn child_spans_invert_the_clamped_parent_map() {
        for (child, parent) in [(8, 4), (9, 4), (7, 4), (1, 1), (5, 2), (3, 3)] {
            let grid = ParentGrid {
                height: parent,
                width: 1,
                tokens: &(0..parent as u32).collect::<Vec<_>>(),
            };
            for p in 0..parent {
                let want: Vec<usize> = (0..child).filter(|&y| grid.at(y, 0) == p as u32).collect();
                let got: Vec<usize> = ChildGrid::span(p, parent, child).collect();
                assert_eq!(got, want, "child {child}, parent {parent}, row {p}");
            }
        }
    }

    /// A two-level walk: the coarse grid a walk, the fine grid its parent plus small steps.
    fn two_levels(h: usize, w: usize, n: u32, seed: u64) -> [TokenGrid; 2] {
        let coarse = TokenGrid {
            level: 1,
            ..walk(h, w, n, seed)
        };
        let mut s = seed ^ 0x55;
        let tokens = (0..4 * h * w)
            .map(|i| {
                let (y, x) = (i / (2 * w), i % (2 * w));
                let step = (next(&mut s) % 3) as i64 - 1;
                (i64::from(coarse.tokens[(y / 2) * w + x / 2]) + step).clamp(0, i64::from(n) - 1)
                    as u32
            })
            .collect();
        let fine = TokenGrid {
            level: 0,
            height: 2 * h,
            width: 2 * w,
            tokens,
        };
        [fine, coarse]
    }

    /// The `k` entries of a line codebook nearest to each token plus noise, nearest first.
    fn line_candidates(grid: &TokenGrid, n: usize, k: usize, seed: u64) -> (Vec<u32>, Vec<f32>) {
        let mut s = seed;
        let (mut codes, mut distances) = (Vec::new(), Vec::new());
        for &t in &grid.tokens {
            let z = f64::from(t) + (next(&mut s) % 1000) as f64 / 1000.0 * 3.0 - 1.5;
            let mut all: Vec<(f64, u32)> = (0..n as u32)
                .map(|e| ((f64::from(e) - z).powi(2), e))
                .collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            codes.extend(all[..k].iter().map(|x| x.1));
            distances.extend(all[..k].iter().map(|x| x.0 as f32));
        }
        (codes, distances)
    }

    #[test]
    fn the_joint_sweep_lowers_the_total_over_levels_and_weighs_children() {
        let (n, k) = (64, 6);
        let images = (0..4).map(|seed| two_levels(12, 16, n as u32, seed).to_vec());
        let priors = fitted_priors(n, 8, 2, images.collect());
        let truth = two_levels(12, 16, n as u32, 99);
        let data: Vec<(Vec<u32>, Vec<f32>)> = truth
            .iter()
            .map(|g| line_candidates(g, n, k, 7 + g.level as u64))
            .collect();
        let levels: Vec<LevelCandidates<'_>> = truth
            .iter()
            .zip(&data)
            .map(|(g, (codes, distances))| LevelCandidates {
                level: g.level,
                candidates: Candidates {
                    height: g.height,
                    width: g.width,
                    k,
                    codes,
                    distances,
                },
            })
            .collect();
        // Σ over both levels of distance + λ · ideal bits, the fine level seeing the coarse as parent.
        let total = |fine: &[u32], coarse: &[u32], lambda: f64| {
            let c = &levels[1].candidates;
            let parent = ParentGrid {
                height: c.height,
                width: c.width,
                tokens: coarse,
            };
            let level_total = |l: &LevelCandidates<'_>, tokens: &[u32], parent| {
                let c = &l.candidates;
                (0..tokens.len())
                    .map(|i| {
                        let t = tokens[i];
                        let r = c.codes[i * c.k..(i + 1) * c.k]
                            .iter()
                            .position(|&x| x == t)
                            .unwrap();
                        let ctx = contexts_at(tokens, c.width, i, parent);
                        let u = priors.cost_bits(l.level, t).unwrap();
                        let bits = priors.context().unwrap();
                        f64::from(c.distances[i * c.k + r])
                            + lambda * bits.token_bits(l.level, &ctx, t, u).unwrap()
                    })
                    .sum::<f64>()
            };
            level_total(&levels[0], fine, Some(&parent)) + level_total(&levels[1], coarse, None)
        };
        let mut coarse_moved = 0;
        for lambda in [0.05, 0.3, 2.0] {
            // Level by level, as `choose_tokens` chooses them.
            let coarse = choose_tokens(&priors, 1, levels[1].candidates, None, lambda).unwrap();
            let parent = TokenGrid {
                tokens: coarse.clone(),
                ..truth[1].clone()
            };
            let fine =
                choose_tokens(&priors, 0, levels[0].candidates, Some(&parent), lambda).unwrap();
            let joint = choose_levels(&priors, &levels, lambda).unwrap();
            let (before, after) = (
                total(&fine, &coarse, lambda),
                total(&joint[0], &joint[1], lambda),
            );
            assert!(
                after <= before + 1e-9,
                "lambda {lambda}: {after} > {before}"
            );
            coarse_moved += joint[1].iter().zip(&coarse).filter(|(a, b)| a != b).count();
            // The order of `levels` is the order of the answer.
            let reversed: Vec<_> = levels.iter().rev().copied().collect();
            let back = choose_levels(&priors, &reversed, lambda).unwrap();
            assert_eq!((&back[1], &back[0]), (&joint[0], &joint[1]));
        }
        assert!(
            coarse_moved > 0,
            "the children's bits never moved a coarse token"
        );
        // λ = 0: the nearest entries; a level twice: refused.
        let nearest = choose_levels(&priors, &levels, 0.0).unwrap();
        for (l, tokens) in levels.iter().zip(&nearest) {
            let c = &l.candidates;
            assert!(tokens.iter().enumerate().all(|(i, &t)| t == c.codes[i * k]));
        }
        let twice = [levels[0], levels[0]];
        assert_eq!(
            choose_levels(&priors, &twice, 0.1),
            Err(FormatError::RateChoice)
        );
    }
}
