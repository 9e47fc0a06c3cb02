//! Per-level token frequency tables: the entropy coder's model, stored with the weights.

use base64::Engine as _;
use constriction::stream::model::DefaultContiguousCategoricalEntropyModel;
use sha2::Digest as _;

use crate::{FormatError, PriorsFault};

/// Fixed-point precision of the entropy models: every level's frequencies sum to `2^PRECISION`.
pub const PRECISION: u32 = 24;

/// Largest codebook the priors support (leaves every token at least one of the `2^24` slots with room).
pub const MAX_CODEBOOK_SIZE: usize = 1 << 20;

/// Most levels a model (and so a file or a priors table) may have.
pub const MAX_LEVELS: usize = 16;

/// Prefix of [`Priors::to_metadata_string`]; names the serialization version.
pub const PRIORS_TAG: &str = "hvqp1:";

/// Longest metadata string [`Priors::from_metadata_string`] accepts (a 20 000-token, 16-level table
/// needs about 1 MB; this bound leaves room and keeps hostile strings from costing memory).
pub const MAX_METADATA_LEN: usize = 64 << 20;

type Model = DefaultContiguousCategoricalEntropyModel;

/// Token probabilities per level, quantized to integers summing to `2^24`, every token ≥ 1 so that any
/// token stays codable (an unseen token costs at most 24 bits).
///
/// The quantized integers *are* the model: they are what [`to_metadata_string`](Self::to_metadata_string)
/// stores and what [`hash`](Self::hash) covers, so writer and reader build bit-identical coders on every platform.
#[derive(Clone)]
pub struct Priors {
    codebook_size: usize,
    freqs: Vec<Vec<u32>>,
    models: Vec<Model>,
    /// The optional context model (coding 2); shared, since it can be megabytes.
    context: Option<std::sync::Arc<crate::ContextModel>>,
    hash: u64,
}

impl Priors {
    /// Priors from token counts per level (`levels[l][token]`, e.g. counted over the training set).
    ///
    /// Counts get add-one smoothing, then are quantized to `2^24` with every token at least 1.
    /// All levels must have the same codebook size, `2..=MAX_CODEBOOK_SIZE`, and there are `1..=MAX_LEVELS` levels.
    pub fn from_counts(levels: Vec<Vec<u64>>) -> Result<Priors, FormatError> {
        let n = check_shape(levels.len(), levels.first().map_or(0, Vec::len))?;
        if levels.iter().any(|l| l.len() != n) {
            return Err(FormatError::InvalidPriors {
                fault: PriorsFault::CodebookSize,
            });
        }
        Self::from_freqs(levels.iter().map(|c| quantize(c)).collect())
    }

    /// Equal probabilities for every token: `levels` levels over a codebook of `codebook_size` entries.
    /// For models without trained priors; each token then costs about `log2(codebook_size)` bits.
    pub fn uniform(levels: usize, codebook_size: usize) -> Result<Priors, FormatError> {
        check_shape(levels, codebook_size)?;
        Self::from_counts(vec![vec![1; codebook_size]; levels])
    }

    /// Number of levels.
    pub fn levels(&self) -> usize {
        self.freqs.len()
    }

    /// Number of codebook entries (tokens are `0..codebook_size`).
    pub fn codebook_size(&self) -> usize {
        self.codebook_size
    }

    /// The quantized frequencies of `level` (sum `2^24`), or `None` past the last level.
    pub fn frequencies(&self, level: usize) -> Option<&[u32]> {
        self.freqs.get(level).map(Vec::as_slice)
    }

    /// Identifies these priors: the first 8 bytes (little-endian) of SHA-256 over the serialized table.
    /// Stored in every file header so a file coded with other priors is refused instead of mis-decoded.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// Ideal cost in bits of coding `token` at `level` with these priors (`-log2 p`); `None` if out of range.
    pub fn cost_bits(&self, level: usize, token: u32) -> Option<f64> {
        let f = *self.freqs.get(level)?.get(usize::try_from(token).ok()?)?;
        Some(f64::from(PRECISION) - f64::from(f).log2())
    }

    /// The table as a compact ASCII string for the weight file's metadata:
    /// `hvqp1:` + base64url (no padding) of varints `levels, codebook_size, (freq - 1) × codebook_size × levels`.
    pub fn to_metadata_string(&self) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.table_bytes());
        format!("{PRIORS_TAG}{b64}")
    }

    /// Parses [`to_metadata_string`](Self::to_metadata_string)'s output; checks the tag, every varint,
    /// the shape and that each level sums to `2^24` with no zero, before allocating anything large.
    pub fn from_metadata_string(s: &str) -> Result<Priors, FormatError> {
        let bad = |fault| FormatError::InvalidPriors { fault };
        let body = s.strip_prefix(PRIORS_TAG).ok_or(bad(PriorsFault::Tag))?;
        if body.len() > MAX_METADATA_LEN {
            return Err(bad(PriorsFault::Base64));
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| bad(PriorsFault::Base64))?;
        let mut r = VarintReader {
            bytes: &bytes,
            at: 0,
        };
        let levels = usize::try_from(r.next()?).map_err(|_| bad(PriorsFault::LevelCount))?;
        let n = usize::try_from(r.next()?).map_err(|_| bad(PriorsFault::CodebookSize))?;
        check_shape(levels, n)?;
        // Each varint is at least one byte: refuse before allocating if the string cannot hold the table.
        if levels.saturating_mul(n) > bytes.len() {
            return Err(bad(PriorsFault::Varint));
        }
        let mut freqs = Vec::with_capacity(levels);
        for _ in 0..levels {
            let level = (0..n)
                .map(|_| r.next_freq())
                .collect::<Result<Vec<u32>, _>>()?;
            freqs.push(level);
        }
        if r.at != bytes.len() {
            return Err(bad(PriorsFault::TrailingBytes));
        }
        Self::from_freqs(freqs)
    }

    /// These priors with a context model added, which enables coding 2 (`docs/format.md` §4.3). The hash
    /// then covers both tables, so a file coded with the context model is refused by readers without it.
    /// The context model must have the same levels and codebook size.
    pub fn with_context(mut self, context: crate::ContextModel) -> Result<Priors, FormatError> {
        if context.levels() != self.levels() || context.codebook_size() != self.codebook_size {
            return Err(FormatError::InvalidPriors {
                fault: PriorsFault::ContextShape,
            });
        }
        self.context = Some(std::sync::Arc::new(context));
        self.hash = self.compute_hash();
        Ok(self)
    }

    /// The context model, if these priors have one.
    pub fn context(&self) -> Option<&crate::ContextModel> {
        self.context.as_deref()
    }

    fn compute_hash(&self) -> u64 {
        let mut h = sha2::Sha256::new();
        h.update(self.table_bytes());
        if let Some(c) = &self.context {
            h.update(c.to_bytes());
        }
        let digest = h.finalize();
        u64::from_le_bytes(digest[..8].try_into().unwrap_or_default())
    }

    /// The entropy model of `level`; the caller has checked the level.
    pub(crate) fn model(&self, level: usize) -> Option<&Model> {
        self.models.get(level)
    }

    fn from_freqs(freqs: Vec<Vec<u32>>) -> Result<Priors, FormatError> {
        let bad = FormatError::InvalidPriors {
            fault: PriorsFault::Frequencies,
        };
        let n = check_shape(freqs.len(), freqs.first().map_or(0, Vec::len))?;
        let mut models = Vec::with_capacity(freqs.len());
        for level in &freqs {
            let sum: u64 = level.iter().map(|&f| u64::from(f)).sum();
            if level.len() != n || level.contains(&0) || sum != 1 << PRECISION {
                return Err(bad);
            }
            models.push(
                Model::from_nonzero_fixed_point_probabilities(level, false)
                    .map_err(|()| bad.clone())?,
            );
        }
        let mut priors = Priors {
            codebook_size: n,
            freqs,
            models,
            context: None,
            hash: 0,
        };
        priors.hash = priors.compute_hash();
        Ok(priors)
    }

    fn table_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.levels() * self.codebook_size * 2);
        put_varint(&mut out, self.levels() as u64);
        put_varint(&mut out, self.codebook_size as u64);
        for f in self.freqs.iter().flatten() {
            put_varint(&mut out, u64::from(f - 1));
        }
        out
    }
}

// Tables have up to millions of entries: print their shape and identity, not their contents.
impl std::fmt::Debug for Priors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Priors")
            .field("levels", &self.levels())
            .field("codebook_size", &self.codebook_size)
            .field("context", &self.context)
            .field("hash", &format_args!("{:016x}", self.hash))
            .finish_non_exhaustive()
    }
}

/// Checks a table shape; returns the codebook size.
fn check_shape(levels: usize, n: usize) -> Result<usize, FormatError> {
    if levels == 0 || levels > MAX_LEVELS {
        return Err(FormatError::InvalidPriors {
            fault: PriorsFault::LevelCount,
        });
    }
    if !(2..=MAX_CODEBOOK_SIZE).contains(&n) {
        return Err(FormatError::InvalidPriors {
            fault: PriorsFault::CodebookSize,
        });
    }
    Ok(n)
}

/// Add-one smoothed counts → integers ≥ 1 summing to `2^PRECISION`. Largest-remainder rounding (ties to
/// the lower token) keeps the result deterministic and uniform counts truly uniform.
fn quantize(counts: &[u64]) -> Vec<u32> {
    let n = counts.len() as u128;
    let total: u128 = counts.iter().map(|&c| u128::from(c) + 1).sum();
    // Every token gets one slot up front; the rest is shared in proportion to the smoothed counts.
    let budget = (1u128 << PRECISION) - n;
    let shares: Vec<(u128, u128)> = counts
        .iter()
        .map(|&c| {
            (
                (budget * (u128::from(c) + 1)) / total,
                (budget * (u128::from(c) + 1)) % total,
            )
        })
        .collect();
    let mut freqs: Vec<u32> = shares.iter().map(|&(q, _)| 1 + q as u32).collect();
    let used: u64 = freqs.iter().map(|&f| u64::from(f)).sum();
    // Each floor loses less than one slot, so fewer than `n` slots are left to hand out.
    let left = ((1u64 << PRECISION) - used) as usize;
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.sort_by(|&a, &b| shares[b].1.cmp(&shares[a].1).then(a.cmp(&b)));
    for &i in &order[..left.min(order.len())] {
        freqs[i] += 1;
    }
    freqs
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) struct VarintReader<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) at: usize,
}

impl VarintReader<'_> {
    /// LEB128, at most 10 bytes.
    pub(crate) fn next(&mut self) -> Result<u64, FormatError> {
        let bad = FormatError::InvalidPriors {
            fault: PriorsFault::Varint,
        };
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let &b = self.bytes.get(self.at).ok_or(bad.clone())?;
            self.at += 1;
            v |= u64::from(b & 0x7f).checked_shl(shift).ok_or(bad.clone())?;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad)
    }

    /// A stored `freq - 1`, back to a frequency ≤ 2^PRECISION.
    fn next_freq(&mut self) -> Result<u32, FormatError> {
        let v = self.next()?;
        if v >= 1 << PRECISION {
            return Err(FormatError::InvalidPriors {
                fault: PriorsFault::Frequencies,
            });
        }
        Ok(v as u32 + 1)
    }
}
