//! The context model (coding 2, `docs/format.md` §4.3): each token is predicted from tokens the decoder
//! already has — its parent on the coarser level and its left, up, up-left and up-right neighbours on its
//! own level — through the codebook's geometry.
//!
//! Why geometry: the levels share one codebook and neighbouring latents are close, so a token is very often
//! one of the few entries nearest to a context token's entry. The model stores, for every entry, a list of
//! `M` entries (its nearest, itself first, optionally re-ordered by which entries really follow it on
//! training tokens: [`ContextFitter::learn_lists`]), and for every level and context kind how often the
//! coded token sits at each rank of that list. A token's probability mixes those per-kind predictions
//! with fixed weights; the mass left over (tokens in no list, missing contexts at borders) is an escape
//! symbol, after which the token is coded with the level's unconditional priors. Everything is integer
//! arithmetic on stored integers, so writer and reader build bit-identical models on every platform
//! (wasm included).

use base64::Engine as _;

use crate::priors::{VarintReader, put_varint};
use crate::{FormatError, PRECISION, PriorsFault};

/// Prefix of [`ContextModel::to_metadata_string`]; names the serialization version.
pub const CONTEXT_TAG: &str = "hvqc1:";

/// The context kinds, in the order their weights and rank tables are stored.
pub const CONTEXT_KINDS: [&str; 5] = ["parent", "left", "up", "up-left", "up-right"];

/// Most neighbours a list may hold (bounds a token's alphabet to `5·M + 1` symbols).
pub const MAX_NEIGHBOURS: usize = 1024;

/// Most list entries in all (`codebook_size × M`; 64 MiB of `u32`), checked before allocating.
const MAX_LIST_ENTRIES: usize = 1 << 24;

/// Weights and rank tables are fixed-point fractions of `2^16`.
const UNIT_BITS: u32 = 16;
const UNIT: u64 = 1 << UNIT_BITS;

const KINDS: usize = CONTEXT_KINDS.len();

/// One level's mixture: `weights[0]` is the unconditional share, `weights[1 + k]` the share of context
/// kind `k`; `ranks[k][r]` the probability that the token is at rank `r` of kind `k`'s list, `ranks[k][M]`
/// that it is in no list position (escape). Both sum to `2^16`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LevelMixture {
    weights: [u32; KINDS + 1],
    ranks: [Vec<u32>; KINDS],
}

/// A codebook-geometry context model for every level of one model (see the module docs).
#[derive(Clone, PartialEq, Eq)]
pub struct ContextModel {
    codebook_size: usize,
    neighbours: usize,
    /// Row `c` (length `neighbours`): codebook entries nearest to entry `c`, nearest first.
    lists: Vec<u32>,
    levels: Vec<LevelMixture>,
}

// Lists have millions of entries: print the shape, not the contents.
impl std::fmt::Debug for ContextModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextModel")
            .field("codebook_size", &self.codebook_size)
            .field("neighbours", &self.neighbours)
            .field("levels", &self.levels.len())
            .finish_non_exhaustive()
    }
}

fn bad(fault: PriorsFault) -> FormatError {
    FormatError::InvalidPriors { fault }
}

impl ContextModel {
    /// Number of codebook entries.
    pub fn codebook_size(&self) -> usize {
        self.codebook_size
    }

    /// Number of levels.
    pub fn levels(&self) -> usize {
        self.levels.len()
    }

    /// Length `M` of every entry's neighbour list.
    pub fn neighbours(&self) -> usize {
        self.neighbours
    }

    /// The mixture weights of `level` as fractions (unconditional first, then [`CONTEXT_KINDS`]).
    pub fn weights(&self, level: usize) -> Option<Vec<f64>> {
        let l = self.levels.get(level)?;
        Some(l.weights.iter().map(|&w| w as f64 / UNIT as f64).collect())
    }

    /// Serializes to `hvqc1:` + base64url (no padding) of varints: `codebook_size, M, levels`, the lists
    /// (`codebook_size × M` entries), then per level 6 weights and 5 rank tables of `M + 1` entries.
    pub fn to_metadata_string(&self) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.to_bytes());
        format!("{CONTEXT_TAG}{b64}")
    }

    /// The serialized table (what the priors hash covers).
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.lists.len() * 2 + 64);
        for v in [self.codebook_size, self.neighbours, self.levels.len()] {
            put_varint(&mut out, v as u64);
        }
        for &t in &self.lists {
            put_varint(&mut out, u64::from(t));
        }
        for l in &self.levels {
            for &w in &l.weights {
                put_varint(&mut out, u64::from(w));
            }
            for &r in l.ranks.iter().flatten() {
                put_varint(&mut out, u64::from(r));
            }
        }
        out
    }

    /// Parses [`to_metadata_string`](Self::to_metadata_string)'s output, checking the tag, every number,
    /// the shape and every sum before allocating anything large.
    pub fn from_metadata_string(s: &str) -> Result<ContextModel, FormatError> {
        let body = s
            .strip_prefix(CONTEXT_TAG)
            .ok_or(bad(PriorsFault::ContextTag))?;
        if body.len() > crate::MAX_METADATA_LEN {
            return Err(bad(PriorsFault::Base64));
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| bad(PriorsFault::Base64))?;
        let mut r = VarintReader {
            bytes: &bytes,
            at: 0,
        };
        let n = r.usize()?;
        let m = r.usize()?;
        let levels = r.usize()?;
        if !(2..=crate::MAX_CODEBOOK_SIZE).contains(&n)
            || !(1..=MAX_NEIGHBOURS.min(n)).contains(&m)
            || !(1..=crate::MAX_LEVELS).contains(&levels)
            || n * m > MAX_LIST_ENTRIES
        {
            return Err(bad(PriorsFault::ContextShape));
        }
        // Each varint is at least one byte: refuse before allocating if the string cannot hold the table.
        if n * m + levels * (KINDS + 1 + KINDS * (m + 1)) > bytes.len() {
            return Err(bad(PriorsFault::Varint));
        }
        let mut lists = Vec::with_capacity(n * m);
        for _ in 0..n * m {
            let t = r.next()?;
            if t >= n as u64 {
                return Err(bad(PriorsFault::ContextTable));
            }
            lists.push(t as u32);
        }
        let mut mixtures = Vec::with_capacity(levels);
        for _ in 0..levels {
            let mut weights = [0u32; KINDS + 1];
            for w in &mut weights {
                *w = r.unit()?;
            }
            let ranks: [Vec<u32>; KINDS] = std::array::from_fn(|_| Vec::new());
            let mut ranks = ranks;
            for table in &mut ranks {
                *table = (0..=m).map(|_| r.unit()).collect::<Result<_, _>>()?;
            }
            mixtures.push(LevelMixture { weights, ranks });
        }
        if r.at != bytes.len() {
            return Err(bad(PriorsFault::TrailingBytes));
        }
        Self::new_checked(n, m, lists, mixtures)
    }

    fn new_checked(
        n: usize,
        m: usize,
        lists: Vec<u32>,
        levels: Vec<LevelMixture>,
    ) -> Result<ContextModel, FormatError> {
        let sums_to_unit = |v: &[u32]| v.iter().map(|&x| u64::from(x)).sum::<u64>() == UNIT;
        let ok = lists.len() == n * m
            && lists.iter().all(|&t| (t as usize) < n)
            && levels.iter().all(|l| {
                sums_to_unit(&l.weights)
                    && l.ranks.iter().all(|t| t.len() == m + 1 && sums_to_unit(t))
            });
        if !ok {
            return Err(bad(PriorsFault::ContextTable));
        }
        Ok(ContextModel {
            codebook_size: n,
            neighbours: m,
            lists,
            levels,
        })
    }

    fn list(&self, entry: u32) -> &[u32] {
        let at = entry as usize * self.neighbours;
        self.lists.get(at..at + self.neighbours).unwrap_or(&[])
    }

    /// The ideal cost in bits of `token` at a position with these `contexts` (the mixture's mass of
    /// `token`, or the escape symbol's plus `unconditional` bits when no list holds it), without the
    /// coder's rounding to `2^PRECISION` slots: what the rate–distortion choice weighs. `None` for a
    /// level the model lacks.
    pub(crate) fn token_bits(
        &self,
        level: usize,
        contexts: &[Option<u32>; KINDS],
        token: u32,
        unconditional: f64,
    ) -> Option<f64> {
        let mix = self.levels.get(level)?;
        let (mut mass, mut escape) = (0u64, u64::from(mix.weights[0]) * UNIT);
        for (k, ctx) in contexts.iter().enumerate() {
            let w = u64::from(mix.weights[k + 1]);
            match ctx.filter(|&c| (c as usize) < self.codebook_size) {
                None => escape += w * UNIT,
                Some(c) => {
                    let ranks = &mix.ranks[k];
                    escape += w * u64::from(ranks[self.neighbours]);
                    if let Some(r) = self.list(c).iter().position(|&t| t == token) {
                        mass += w * u64::from(ranks[r]);
                    }
                }
            }
        }
        let total = (UNIT * UNIT) as f64;
        Some(if mass > 0 {
            (total / mass as f64).log2()
        } else {
            (total / escape.max(1) as f64).log2() + unconditional
        })
    }

    /// The stage-1 alphabet of one position: `cands` gets the candidate tokens, `freqs` their fixed-point
    /// probabilities (sum `2^PRECISION`, every one ≥ 1) with the escape symbol last. `stamp` (one slot per
    /// codebook entry, all `u32::MAX` on entry and on return) deduplicates candidates in O(candidates).
    pub(crate) fn alphabet(
        &self,
        level: usize,
        contexts: &[Option<u32>; KINDS],
        stamp: &mut [u32],
        cands: &mut Vec<u32>,
        freqs: &mut Vec<u32>,
    ) -> Option<()> {
        let built = self.alphabet_stamped(level, contexts, stamp, cands, freqs);
        for &t in cands.iter() {
            stamp[t as usize] = u32::MAX;
        }
        built
    }

    /// [`alphabet`](Self::alphabet), leaving `stamp[t]` at `t`'s slot for every candidate `t`, so that a
    /// caller can look candidates up in O(1); it must reset them to `u32::MAX` itself.
    pub(crate) fn alphabet_stamped(
        &self,
        level: usize,
        contexts: &[Option<u32>; KINDS],
        stamp: &mut [u32],
        cands: &mut Vec<u32>,
        freqs: &mut Vec<u32>,
    ) -> Option<()> {
        let mix = self.levels.get(level)?;
        cands.clear();
        let mut mass: Vec<u64> = Vec::with_capacity(KINDS * self.neighbours);
        let mut escape = u64::from(mix.weights[0]) * UNIT;
        for (k, ctx) in contexts.iter().enumerate() {
            let w = u64::from(mix.weights[k + 1]);
            let Some(c) = ctx.filter(|&c| (c as usize) < self.codebook_size) else {
                escape += w * UNIT;
                continue;
            };
            let ranks = &mix.ranks[k];
            escape += w * u64::from(ranks[self.neighbours]);
            for (r, &t) in self.list(c).iter().enumerate() {
                let slot = stamp.get_mut(t as usize)?;
                if *slot == u32::MAX {
                    *slot = cands.len() as u32;
                    cands.push(t);
                    mass.push(0);
                }
                mass[*slot as usize] += w * u64::from(ranks[r]);
            }
        }
        mass.push(escape);
        // Masses sum to exactly 2^32; every symbol gets one slot, the rest is shared in proportion and the
        // rounding remainder goes to the escape symbol.
        let total = UNIT * UNIT;
        let budget = (1u64 << PRECISION) - mass.len() as u64;
        freqs.clear();
        freqs.extend(mass.iter().map(|&x| 1 + ((x * budget) / total) as u32));
        let used: u64 = freqs.iter().map(|&f| u64::from(f)).sum();
        *freqs.last_mut()? += u32::try_from((1u64 << PRECISION).checked_sub(used)?).ok()?;
        Some(())
    }
}

/// The five context tokens of `(y, x)` in a grid `width` wide whose first `y·width + x` tokens are known,
/// with the parent grid (the next coarser level) when there is one.
pub(crate) fn contexts_at(
    tokens: &[u32],
    width: usize,
    i: usize,
    parent: Option<&crate::coding::ParentGrid<'_>>,
) -> [Option<u32>; KINDS] {
    let (y, x) = (i / width, i % width);
    let at = |yy: usize, xx: usize| tokens.get(yy * width + xx).copied();
    [
        parent.map(|p| p.at(y, x)),
        (x > 0).then(|| at(y, x - 1)).flatten(),
        (y > 0).then(|| at(y - 1, x)).flatten(),
        (y > 0 && x > 0).then(|| at(y - 1, x - 1)).flatten(),
        (y > 0 && x + 1 < width).then(|| at(y - 1, x + 1)).flatten(),
    ]
}

/// Builds a [`ContextModel`] from neighbour lists and the token grids of training images: the lists are
/// optionally re-ordered by what the tokens show ([`ContextFitter::learn_lists`]), rank tables are counted,
/// then the mixture weights are fitted by expectation–maximisation on the same tokens.
pub struct ContextFitter {
    codebook_size: usize,
    neighbours: usize,
    lists: Vec<u32>,
    levels: usize,
    /// The training images' grids, finest first, in the order they were added.
    images: Vec<Vec<hvq_spec::TokenGrid>>,
    /// Tokens in `images`, at most [`MAX_FIT_TOKENS`].
    tokens_kept: usize,
    /// `Some(prior)`: re-order the lists by co-occurrence before fitting
    /// ([`ContextFitter::learn_lists`]).
    learn_prior: Option<f64>,
}

/// Most tokens per level sampled for counting the rank tables and fitting the weights.
const MAX_FIT_SAMPLES: usize = 2_000_000;

/// Most tokens (all levels) the fitter keeps, 64 MiB of them: the learned lists' co-occurrence pairs
/// (8 bytes each, at most five per token) then take at most 640 MiB. The 950 full-size training photos
/// of `../shared/data/imagenet-sample` give 16.3 M tokens with the `small` preset (`hvq-priors --images 0`).
pub const MAX_FIT_TOKENS: usize = 1 << 24;

impl ContextFitter {
    /// `lists`: row `c` holds the `neighbours` entries nearest to entry `c`, nearest first (itself first).
    pub fn new(
        codebook_size: usize,
        neighbours: usize,
        lists: Vec<u32>,
        levels: usize,
    ) -> Result<ContextFitter, FormatError> {
        if !(2..=crate::MAX_CODEBOOK_SIZE).contains(&codebook_size)
            || !(1..=MAX_NEIGHBOURS.min(codebook_size)).contains(&neighbours)
            || !(1..=crate::MAX_LEVELS).contains(&levels)
            || lists.len() != codebook_size * neighbours
        {
            return Err(bad(PriorsFault::ContextShape));
        }
        if lists.iter().any(|&t| t as usize >= codebook_size) {
            return Err(bad(PriorsFault::ContextTable));
        }
        Ok(ContextFitter {
            codebook_size,
            neighbours,
            lists,
            levels,
            images: Vec::new(),
            tokens_kept: 0,
            learn_prior: None,
        })
    }

    /// Re-orders every entry's list by the training tokens before fitting: row `c` becomes the `M` entries
    /// that most often sit where `c` is a context token (any kind, any level), each count topped up by
    /// `prior` pseudo-counts spread over the given list's ranks in proportion to how often tokens land at
    /// each rank of it. Entries seen rarely as a context keep roughly the given (nearest-first) order; an
    /// entry seen often gets the entries that really follow it, which the codebook's geometry alone
    /// misses (measured on Kodak with the default model: 6.5 % fewer level-0 bits at `M = 128`).
    /// `prior` must be finite and positive.
    pub fn learn_lists(mut self, prior: f64) -> Result<ContextFitter, FormatError> {
        if !(prior.is_finite() && prior > 0.0) {
            return Err(bad(PriorsFault::ContextTable));
        }
        self.learn_prior = Some(prior);
        Ok(self)
    }

    /// Adds one image's grids (finest first, `grids[l].level == l`, every level present). Returns
    /// `false`, keeping nothing, when the image would take the fitter past [`MAX_FIT_TOKENS`], so memory
    /// stays bounded however many images a caller offers.
    pub fn add_image(&mut self, grids: &[hvq_spec::TokenGrid]) -> bool {
        let grids = &grids[..grids.len().min(self.levels)];
        let tokens: usize = grids.iter().map(|g| g.tokens.len()).sum();
        if self.tokens_kept + tokens > MAX_FIT_TOKENS {
            return false;
        }
        self.tokens_kept += tokens;
        self.images.push(grids.to_vec());
        true
    }

    /// Every (context token, token) pair of the training images: one per available context of every
    /// token, as `context << 32 | token`, sorted.
    fn context_pairs(&self) -> Vec<u64> {
        let mut pairs = Vec::new();
        self.for_each_position(|_, ctx, t| {
            for c in ctx.iter().flatten() {
                pairs.push(u64::from(*c) << 32 | u64::from(t));
            }
        });
        pairs.sort_unstable();
        pairs
    }

    /// Calls `f(level, contexts, token)` for every in-range token of every image, in the order added.
    fn for_each_position(&self, mut f: impl FnMut(usize, &[Option<u32>; KINDS], u32)) {
        for grids in &self.images {
            for (l, g) in grids.iter().enumerate() {
                let parent = grids.get(l + 1).map(|p| crate::coding::ParentGrid {
                    height: p.height,
                    width: p.width,
                    tokens: &p.tokens,
                });
                for (i, &t) in g.tokens.iter().enumerate() {
                    if (t as usize) < self.codebook_size {
                        f(l, &contexts_at(&g.tokens, g.width, i, parent.as_ref()), t);
                    }
                }
            }
        }
    }

    /// The lists re-ordered by co-occurrence (see [`ContextFitter::learn_lists`]).
    fn learned_lists(&self, prior: f64) -> Vec<u32> {
        let (n, m) = (self.codebook_size, self.neighbours);
        let pairs = self.context_pairs();
        let groups: Vec<&[u64]> = pairs.chunk_by(|a, b| a >> 32 == b >> 32).collect();
        let token = |p: u64| (p & 0xffff_ffff) as usize;
        // rank[t]: t's rank in the list being looked at (M: in none); reset after each list.
        let mut rank = vec![m as u32; n];
        // How often a token lands at each rank of its context's given list (M: in no position).
        let mut share = vec![0f64; m + 1];
        for g in &groups {
            let row = &self.lists[(g[0] >> 32) as usize * m..][..m];
            row.iter()
                .enumerate()
                .for_each(|(r, &t)| rank[t as usize] = r as u32);
            g.iter()
                .for_each(|&p| share[rank[token(p)] as usize] += 1.0);
            row.iter().for_each(|&t| rank[t as usize] = m as u32);
        }
        let total = share.iter().sum::<f64>().max(1.0);
        let mut out = self.lists.clone();
        let mut score = vec![0f64; n];
        for g in &groups {
            let c = (g[0] >> 32) as usize;
            let row = &self.lists[c * m..][..m];
            let mut cands = row.to_vec();
            for (r, &t) in row.iter().enumerate() {
                rank[t as usize] = r as u32;
                score[t as usize] = prior * share[r] / total;
            }
            for &p in g.iter() {
                let t = token(p);
                if rank[t] == m as u32 && score[t] == 0.0 {
                    cands.push(t as u32);
                }
                score[t] += 1.0;
            }
            // Highest score first; ties keep the given order, then the lower entry.
            cands.sort_by(|&a, &b| {
                let (a, b) = (a as usize, b as usize);
                score[b]
                    .total_cmp(&score[a])
                    .then(rank[a].cmp(&rank[b]))
                    .then(a.cmp(&b))
            });
            out[c * m..][..m].copy_from_slice(&cands[..m]);
            for &t in &cands {
                score[t as usize] = 0.0;
                rank[t as usize] = m as u32;
            }
        }
        out
    }

    /// Per level: for each sampled token, its token and its rank under each kind (`M` = in no list
    /// position, `M + 1` = context missing), at most [`MAX_FIT_SAMPLES`] per level.
    fn samples(&self) -> Vec<Vec<([u16; KINDS], u32)>> {
        let m = self.neighbours;
        let mut samples = vec![Vec::new(); self.levels];
        self.for_each_position(|l, ctx, t| {
            let ranks = ctx.map(|c| match c {
                None => (m + 1) as u16,
                Some(c) => {
                    let row = &self.lists[c as usize * m..(c as usize + 1) * m];
                    row.iter().position(|&e| e == t).unwrap_or(m) as u16
                }
            });
            let s: &mut Vec<_> = &mut samples[l];
            if s.len() < MAX_FIT_SAMPLES {
                s.push((ranks, t));
            }
        });
        samples
    }

    /// Counts the rank tables (add-½ smoothing), then fits each level's weights by 50 EM iterations of the
    /// mixture "unconditional, or one of the kinds", with `priors` as the unconditional model.
    pub fn finish(mut self, priors: &crate::Priors) -> Result<ContextModel, FormatError> {
        let m = self.neighbours;
        if let Some(prior) = self.learn_prior {
            self.lists = self.learned_lists(prior);
        }
        let all_samples = self.samples();
        let mut levels = Vec::with_capacity(all_samples.len());
        for (l, samples) in all_samples.iter().enumerate() {
            let freqs = priors
                .frequencies(l)
                .filter(|f| f.len() == self.codebook_size)
                .ok_or(bad(PriorsFault::ContextShape))?;
            let pu = |t: u32| f64::from(freqs[t as usize]) / f64::from(1u32 << PRECISION);
            let mut hist = vec![vec![0.5f64; m + 1]; KINDS];
            for (ranks, _) in samples {
                for (k, &r) in ranks.iter().enumerate() {
                    if (r as usize) <= m {
                        hist[k][r as usize] += 1.0;
                    }
                }
            }
            for h in &mut hist {
                let s: f64 = h.iter().sum();
                h.iter_mut().for_each(|x| *x /= s);
            }
            let ranks: [Vec<u32>; KINDS] = std::array::from_fn(|k| to_unit(&hist[k]));
            // EM on the quantized tables, so the weights fit what the coder will use.
            let q: Vec<Vec<f64>> = ranks
                .iter()
                .map(|t| t.iter().map(|&x| x as f64 / UNIT as f64).collect())
                .collect();
            let mut w = [1.0 / (KINDS + 1) as f64; KINDS + 1];
            let mut like = [0f64; KINDS + 1];
            for _ in 0..50 {
                let mut acc = [0f64; KINDS + 1];
                for (ranks, t) in samples {
                    let p = pu(*t);
                    like[0] = p;
                    for k in 0..KINDS {
                        let r = ranks[k] as usize;
                        like[k + 1] = match r {
                            r if r < m => q[k][r],
                            r if r == m => q[k][m] * p,
                            _ => p,
                        };
                    }
                    let total: f64 = (0..=KINDS).map(|j| w[j] * like[j]).sum();
                    if total > 0.0 {
                        for j in 0..=KINDS {
                            acc[j] += w[j] * like[j] / total;
                        }
                    }
                }
                let s: f64 = acc.iter().sum();
                if s <= 0.0 {
                    break;
                }
                for j in 0..=KINDS {
                    w[j] = acc[j] / s;
                }
            }
            let wq = to_unit(&w);
            levels.push(LevelMixture {
                weights: wq.try_into().map_err(|_| bad(PriorsFault::ContextTable))?,
                ranks,
            });
        }
        ContextModel::new_checked(self.codebook_size, self.neighbours, self.lists, levels)
    }
}

/// Probabilities → non-negative integers summing to exactly `2^16` (largest remainder, ties to the lower index).
fn to_unit(p: &[f64]) -> Vec<u32> {
    let s: f64 = p.iter().sum();
    let scaled: Vec<f64> = p
        .iter()
        .map(|&x| if s > 0.0 { x / s * UNIT as f64 } else { 0.0 })
        .collect();
    let mut out: Vec<u32> = scaled.iter().map(|&x| x.floor() as u32).collect();
    let used: u64 = out.iter().map(|&x| u64::from(x)).sum();
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| {
        let fa = scaled[a] - scaled[a].floor();
        let fb = scaled[b] - scaled[b].floor();
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    for &i in order
        .iter()
        .cycle()
        .take(UNIT.saturating_sub(used) as usize)
    {
        out[i] += 1;
    }
    out
}

/// The context model's reads on top of the priors' LEB128 reader.
impl VarintReader<'_> {
    fn usize(&mut self) -> Result<usize, FormatError> {
        usize::try_from(self.next()?).map_err(|_| bad(PriorsFault::ContextShape))
    }

    /// A fixed-point fraction ≤ `2^16`.
    fn unit(&mut self) -> Result<u32, FormatError> {
        let v = self.next()?;
        if v > UNIT {
            return Err(bad(PriorsFault::ContextTable));
        }
        Ok(v as u32)
    }
}
