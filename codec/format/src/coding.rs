//! Entropy coding of one grid's tokens with constriction's ANS coder (`docs/format.md` §4).

use constriction::stream::model::DefaultContiguousCategoricalEntropyModel;
use constriction::stream::stack::DefaultAnsCoder;
use constriction::stream::{Decode as _, Encode as _};

use crate::PRECISION;
use crate::context::{ContextModel, contexts_at};

type Model = DefaultContiguousCategoricalEntropyModel;

/// Coding byte 0: every token coded independently with its level's categorical model.
pub(crate) const CODING_PLAIN: u8 = 0;
/// Coding byte 1: a "same as the co-located parent token" flag first, then the token if it differs.
pub(crate) const CODING_PARENT: u8 = 1;
/// Coding byte 2: the priors' context model (parent and causal neighbours), escape to the level's model.
pub(crate) const CODING_CONTEXT: u8 = 2;

/// How a chunk's tokens are coded.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Coding<'a> {
    Plain,
    /// `p_same` is the probability of the "same" flag in units of 2^-16 (1..=65535).
    Parent {
        parent: &'a ParentGrid<'a>,
        p_same: u16,
    },
    /// `parent` is `None` for a level coded without its coarser level before it.
    Context {
        context: &'a ContextModel,
        level: usize,
        parent: Option<&'a ParentGrid<'a>>,
    },
}

/// The co-located coarser grid (level + 1) used by [`Coding::Parent`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ParentGrid<'a> {
    pub height: usize,
    pub width: usize,
    pub tokens: &'a [u32],
}

impl ParentGrid<'_> {
    /// The parent of `(y, x)`: `(y/2, x/2)`, clamped so that odd sizes can never index out of range.
    pub(crate) fn at(&self, y: usize, x: usize) -> u32 {
        let py = (y / 2).min(self.height.saturating_sub(1));
        let px = (x / 2).min(self.width.saturating_sub(1));
        self.tokens
            .get(py * self.width + px)
            .copied()
            .unwrap_or(u32::MAX)
    }
}

/// The flag model: symbol 0 = same as parent, 1 = different.
fn flag_model(p_same: u16) -> Option<Model> {
    let same = u32::from(p_same) << (PRECISION - 16);
    Model::from_nonzero_fixed_point_probabilities([same, (1 << PRECISION) - same], false).ok()
}

/// The `p_same` parameter a writer stores: the grid's own share of same-as-parent tokens, kept in 1..=65535.
pub(crate) fn p_same_of(tokens: &[u32], width: usize, parent: &ParentGrid<'_>) -> u16 {
    let same = tokens
        .iter()
        .enumerate()
        .filter(|&(i, &t)| t == parent.at(i / width, i % width))
        .count() as u64;
    let p = (same * 65536 + tokens.len() as u64 / 2) / (tokens.len().max(1) as u64);
    p.clamp(1, 65535) as u16
}

/// Encodes `tokens` (already checked `< codebook size`) into ANS words. `None` only if a model cannot be
/// built, which valid priors and parameters rule out.
pub(crate) fn encode(
    tokens: &[u32],
    width: usize,
    model: &Model,
    coding: Coding<'_>,
) -> Option<Vec<u32>> {
    let mut ans = DefaultAnsCoder::new();
    match coding {
        Coding::Plain => {
            ans.encode_iid_symbols_reverse(tokens.iter().map(|&t| t as usize), model)
                .ok()?;
        }
        Coding::Parent { parent, p_same } => {
            let flags = flag_model(p_same)?;
            // ANS is a stack: push in reverse so the decoder pops position 0's flag first.
            for (i, &t) in tokens.iter().enumerate().rev() {
                let same = t == parent.at(i / width, i % width);
                if !same {
                    ans.encode_symbol(t as usize, model).ok()?;
                }
                ans.encode_symbol(usize::from(!same), &flags).ok()?;
            }
        }
        Coding::Context {
            context,
            level,
            parent,
        } => {
            let mut a = Alphabet::new(context);
            for (i, &t) in tokens.iter().enumerate().rev() {
                let ctx = contexts_at(tokens, width, i, parent);
                let (stage1, slot) = a.build(context, level, &ctx, t)?;
                match slot {
                    Some(s) => ans.encode_symbol(s, &stage1).ok()?,
                    None => {
                        ans.encode_symbol(t as usize, model).ok()?;
                        ans.encode_symbol(a.cands.len(), &stage1).ok()?;
                    }
                }
            }
        }
    }
    ans.into_compressed().ok()
}

/// Why [`decode`] failed.
pub(crate) enum DecodeFault {
    TrailingZeroWord,
    TrailingData,
    BadParameter,
}

/// Decodes `count` tokens of a grid `width` wide from ANS words.
pub(crate) fn decode(
    words: Vec<u32>,
    count: usize,
    width: usize,
    model: &Model,
    coding: Coding<'_>,
) -> Result<Vec<u32>, DecodeFault> {
    let mut ans =
        DefaultAnsCoder::from_compressed(words).map_err(|_| DecodeFault::TrailingZeroWord)?;
    let mut tokens = Vec::with_capacity(count);
    match coding {
        Coding::Plain => {
            for s in ans.decode_iid_symbols(count, model) {
                // Vec-backed ANS decoding cannot fail (its error type is uninhabited), but stay total.
                tokens.push(s.map_err(|_| DecodeFault::TrailingData)? as u32);
            }
        }
        Coding::Parent { parent, p_same } => {
            let flags = flag_model(p_same).ok_or(DecodeFault::BadParameter)?;
            for i in 0..count {
                let same = ans
                    .decode_symbol(&flags)
                    .map_err(|_| DecodeFault::TrailingData)?
                    == 0;
                let t = if same {
                    parent.at(i / width, i % width)
                } else {
                    ans.decode_symbol(model)
                        .map_err(|_| DecodeFault::TrailingData)? as u32
                };
                tokens.push(t);
            }
        }
        Coding::Context {
            context,
            level,
            parent,
        } => {
            let mut a = Alphabet::new(context);
            for i in 0..count {
                let ctx = contexts_at(&tokens, width, i, parent);
                let (stage1, _) = a
                    .build(context, level, &ctx, u32::MAX)
                    .ok_or(DecodeFault::BadParameter)?;
                let s = ans
                    .decode_symbol(&stage1)
                    .map_err(|_| DecodeFault::TrailingData)?;
                let t = match a.cands.get(s) {
                    Some(&t) => t,
                    None => ans
                        .decode_symbol(model)
                        .map_err(|_| DecodeFault::TrailingData)? as u32,
                };
                tokens.push(t);
            }
        }
    }
    // A well-formed payload is used up exactly: this makes the encoding canonical and catches junk.
    if !ans.is_empty() {
        return Err(DecodeFault::TrailingData);
    }
    Ok(tokens)
}

/// Scratch space for [`ContextModel::alphabet`], reused across a grid's positions.
struct Alphabet {
    stamp: Vec<u32>,
    cands: Vec<u32>,
    freqs: Vec<u32>,
}

impl Alphabet {
    fn new(context: &ContextModel) -> Alphabet {
        Alphabet {
            stamp: vec![u32::MAX; context.codebook_size()],
            cands: Vec::new(),
            freqs: Vec::new(),
        }
    }

    /// The stage-1 model of one position and the slot of `token` among its candidates (`None`: escape).
    fn build(
        &mut self,
        context: &ContextModel,
        level: usize,
        ctx: &[Option<u32>; 5],
        token: u32,
    ) -> Option<(Model, Option<usize>)> {
        context.alphabet(
            level,
            ctx,
            &mut self.stamp,
            &mut self.cands,
            &mut self.freqs,
        )?;
        let model = Model::from_nonzero_fixed_point_probabilities(&self.freqs, false).ok()?;
        Some((model, self.cands.iter().position(|&c| c == token)))
    }
}
