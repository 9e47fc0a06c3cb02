//! How much the levels share the one codebook, from per-level token counts.
//!
//! The seed paper's Table 2 counts the entries used by every level (19905 of 20000 with residual
//! pooling, 1 with conv-only pooling). That count alone can mislead: levels that pick entries
//! independently at random also share some, and an entry touched once by a level says little.
//! So beside it this module reports what chance would give, a count with a minimum use per level,
//! and how many of each coarser level's *tokens* fall on entries the finest level uses.
//!
//! Everything here is a pure function of token counts, so it is tested without libtorch.

use serde::Serialize;

/// A level's use of the codebook.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LevelUsage {
    /// Level (0 = finest).
    pub level: usize,
    /// Tokens counted.
    pub tokens: u64,
    /// Distinct entries used at least once.
    pub used: usize,
    /// `2^H` of the level's token distribution (H in bits): the number of equally used entries
    /// that would carry the same information.
    pub perplexity: f64,
}

/// Sharing of one codebook by several levels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sharing {
    /// Codebook entries `N`.
    pub codebook_size: usize,
    /// Per level, finest first.
    pub levels: Vec<LevelUsage>,
    /// Entries used at least once by every level (the paper's Table 2).
    pub used_by_all: usize,
    /// What `used_by_all` would be if each level drew its `uᵢ` used entries independently and
    /// uniformly: `N·Πᵢ(uᵢ/N)`.
    pub used_by_all_chance: f64,
    /// Entries used at least [`MIN_USES`] times by every level.
    pub used_by_all_min_uses: usize,
    /// Share of the entries the coarsest level uses that every other level also uses (the
    /// shared-codebook target: 1 means the coarse vocabulary is a subset of every finer one).
    pub coarsest_entries_shared: f64,
    /// Per coarser level `l ≥ 1` (index `l − 1`): the share of its tokens that fall on entries
    /// the finest level uses.
    pub tokens_on_finest_entries: Vec<f64>,
}

/// The minimum number of uses per level for [`Sharing::used_by_all_min_uses`].
pub const MIN_USES: u64 = 5;

/// Perplexity `2^H` of a count vector (0 when it holds no count).
pub fn perplexity(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let t = total as f64;
    let h: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / t;
            -p * p.log2()
        })
        .sum();
    h.exp2()
}

/// Sharing statistics of `counts[level][entry]` (every level's vector of length `N`).
///
/// # Panics
/// If the levels' vectors differ in length: they come from one codebook by construction.
pub fn sharing(counts: &[Vec<u64>]) -> Sharing {
    let n = counts.first().map_or(0, Vec::len);
    assert!(
        counts.iter().all(|c| c.len() == n),
        "one codebook size for all levels"
    );
    let levels: Vec<LevelUsage> = counts
        .iter()
        .enumerate()
        .map(|(level, c)| LevelUsage {
            level,
            tokens: c.iter().sum(),
            used: c.iter().filter(|&&x| x > 0).count(),
            perplexity: perplexity(c),
        })
        .collect();
    let all_at_least = |min: u64| {
        (0..n)
            .filter(|&e| !counts.is_empty() && counts.iter().all(|c| c[e] >= min))
            .count()
    };
    let used_by_all_chance = if n == 0 || counts.is_empty() {
        0.0
    } else {
        levels
            .iter()
            .fold(n as f64, |acc, l| acc * l.used as f64 / n as f64)
    };
    let coarsest_entries_shared = match counts.last() {
        Some(coarse) if counts.len() > 1 => {
            let used: Vec<usize> = (0..n).filter(|&e| coarse[e] > 0).collect();
            let shared = used
                .iter()
                .filter(|&&e| counts.iter().all(|c| c[e] > 0))
                .count();
            ratio(shared as u64, used.len() as u64)
        }
        _ => 1.0,
    };
    let tokens_on_finest_entries = match counts.split_first() {
        Some((finest, coarser)) => coarser
            .iter()
            .map(|c| {
                let on: u64 = (0..n).filter(|&e| finest[e] > 0).map(|e| c[e]).sum();
                ratio(on, c.iter().sum())
            })
            .collect(),
        None => Vec::new(),
    };
    Sharing {
        codebook_size: n,
        levels,
        used_by_all: all_at_least(1),
        used_by_all_chance,
        used_by_all_min_uses: all_at_least(MIN_USES),
        coarsest_entries_shared,
        tokens_on_finest_entries,
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Per-level token counts accumulated over many batches (a window of training steps or a whole
/// evaluation set).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UsageCounter {
    counts: Vec<Vec<u64>>,
}

impl UsageCounter {
    /// An empty counter for `levels` levels of a codebook of `n` entries.
    pub fn new(levels: usize, n: usize) -> Self {
        UsageCounter {
            counts: vec![vec![0; n]; levels],
        }
    }

    /// Adds per-entry counts of `level` (a bincount of its tokens, length `N`).
    ///
    /// # Panics
    /// If `level` or the length is out of range: both come from the model's config.
    pub fn add(&mut self, level: usize, bincount: &[i64]) {
        let c = &mut self.counts[level];
        assert_eq!(c.len(), bincount.len(), "bincount of the codebook size");
        for (dst, &src) in c.iter_mut().zip(bincount) {
            *dst += src.max(0) as u64;
        }
    }

    /// The counts so far, `[level][entry]`.
    pub fn counts(&self) -> &[Vec<u64>] {
        &self.counts
    }

    /// Sharing statistics of the counts so far.
    pub fn sharing(&self) -> Sharing {
        sharing(&self.counts)
    }

    /// Forgets every count (start of a new window).
    pub fn clear(&mut self) {
        for c in &mut self.counts {
            c.iter_mut().for_each(|x| *x = 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perplexity_of_uniform_use_is_the_number_of_entries() {
        assert!((perplexity(&[3, 3, 3, 3, 0, 0]) - 4.0).abs() < 1e-12);
        assert!((perplexity(&[10, 0, 0]) - 1.0).abs() < 1e-12);
        assert_eq!(perplexity(&[0, 0]), 0.0);
        // Skewed use carries less than the count of used entries.
        assert!(perplexity(&[100, 1, 1, 1]) < 2.0);
    }

    #[test]
    fn identical_levels_share_everything() {
        let c = vec![vec![5, 0, 7, 9], vec![5, 0, 7, 9], vec![6, 0, 1, 9]];
        let s = sharing(&c);
        assert_eq!(s.used_by_all, 3);
        // Entries 0 (5, 5, 6) and 3 (9, 9, 9) reach five uses everywhere; entry 2 (7, 7, 1) does not.
        assert_eq!(s.used_by_all_min_uses, 2);
        assert!((s.coarsest_entries_shared - 1.0).abs() < 1e-12);
        assert_eq!(s.tokens_on_finest_entries, vec![1.0, 1.0]);
        // chance: 4 · (3/4)^3
        assert!((s.used_by_all_chance - 4.0 * 0.75f64.powi(3)).abs() < 1e-12);
        assert_eq!(s.levels[2].tokens, 16);
    }

    #[test]
    fn disjoint_levels_share_nothing() {
        let c = vec![vec![4, 4, 0, 0], vec![0, 0, 2, 2]];
        let s = sharing(&c);
        assert_eq!(s.used_by_all, 0);
        assert_eq!(s.coarsest_entries_shared, 0.0);
        assert_eq!(s.tokens_on_finest_entries, vec![0.0]);
        assert!((s.used_by_all_chance - 1.0).abs() < 1e-12); // 4 · ½ · ½
    }

    #[test]
    fn coarse_tokens_on_finest_entries_are_weighted_by_use() {
        // Level 1 uses entry 0 (shared) 3 times and entry 2 (its own) once.
        let c = vec![vec![1, 1, 0], vec![3, 0, 1]];
        let s = sharing(&c);
        assert!((s.tokens_on_finest_entries[0] - 0.75).abs() < 1e-12);
        assert!((s.coarsest_entries_shared - 0.5).abs() < 1e-12);
    }

    #[test]
    fn counter_accumulates_and_clears() {
        let mut u = UsageCounter::new(2, 3);
        u.add(0, &[1, 0, 2]);
        u.add(0, &[1, 1, 0]);
        u.add(1, &[0, 0, 5]);
        assert_eq!(u.counts(), &[vec![2, 1, 2], vec![0, 0, 5]]);
        assert_eq!(u.sharing().used_by_all, 1);
        u.clear();
        assert_eq!(u.sharing().levels[0].tokens, 0);
    }

    #[test]
    fn a_single_level_shares_with_itself() {
        let s = sharing(&[vec![1, 0, 2]]);
        assert_eq!(s.used_by_all, 2);
        assert!(s.tokens_on_finest_entries.is_empty());
        assert_eq!(s.coarsest_entries_shared, 1.0);
    }
}
