//! One level's chunk: a 20-byte checksummed chunk header, the ANS payload, a CRC32 (`docs/format.md` §3).

use hvq_spec::TokenGrid;

use crate::coding::{
    self, CODING_CONTEXT, CODING_PARENT, CODING_PLAIN, Coding, DecodeFault, ParentGrid,
};
use crate::header::le_u32;
use crate::{FormatError, Header, LimitKind, Limits, PayloadFault, Priors};

/// Bytes before the payload: level, coding, param, height, width, payload length, chunk-header CRC32.
pub const CHUNK_HEADER_LEN: usize = 20;
/// Bytes after the payload: CRC32 of the whole chunk before it.
pub const CHUNK_TRAILER_LEN: usize = 4;

/// Encodes one grid as a complete chunk, choosing the cheapest of plain, parent and (when the priors
/// have a context model) context coding.
/// The grid was validated by the writer.
pub(crate) fn write_chunk(
    out: &mut Vec<u8>,
    grid: &TokenGrid,
    parent: Option<&TokenGrid>,
    priors: &Priors,
) -> Result<(), FormatError> {
    let fail = || FormatError::InvalidCoding {
        offset: out.len() as u64,
        level: grid.level,
        coding: CODING_PLAIN,
        param: 0,
    };
    let model = priors.model(grid.level).ok_or_else(fail)?;
    let mut best = (
        CODING_PLAIN,
        0u16,
        coding::encode(&grid.tokens, grid.width, model, Coding::Plain).ok_or_else(fail)?,
    );
    let parent = parent.map(|p| ParentGrid {
        height: p.height,
        width: p.width,
        tokens: &p.tokens,
    });
    if let Some(context) = priors.context() {
        let coding = Coding::Context {
            context,
            level: grid.level,
            parent: parent.as_ref(),
        };
        let words = coding::encode(&grid.tokens, grid.width, model, coding).ok_or_else(fail)?;
        if words.len() < best.2.len() {
            best = (CODING_CONTEXT, 0, words);
        }
    }
    if let Some(parent) = parent {
        let p_same = coding::p_same_of(&grid.tokens, grid.width, &parent);
        let words = coding::encode(
            &grid.tokens,
            grid.width,
            model,
            Coding::Parent {
                parent: &parent,
                p_same,
            },
        )
        .ok_or_else(fail)?;
        if words.len() < best.2.len() {
            best = (CODING_PARENT, p_same, words);
        }
    }
    let (coding, param, words) = best;
    let payload_len = u32::try_from(words.len() * 4).map_err(|_| FormatError::OverLimit {
        what: LimitKind::FileBytes,
        limit: u32::MAX.into(),
        got: words.len() as u64 * 4,
    })?;
    let start = out.len();
    out.push(grid.level as u8);
    out.push(coding);
    out.extend_from_slice(&param.to_le_bytes());
    out.extend_from_slice(&(grid.height as u32).to_le_bytes());
    out.extend_from_slice(&(grid.width as u32).to_le_bytes());
    out.extend_from_slice(&payload_len.to_le_bytes());
    let header_crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Whether a chunk header's own CRC32 (its last 4 bytes) matches its first 16: what tells a chunk
/// from bytes appended after the file, for tools that walk chunk headers without decoding them.
pub fn chunk_header_intact(head: &[u8; CHUNK_HEADER_LEN]) -> bool {
    crc32fast::hash(&head[..16]) == le_u32(head, 16)
}

/// Where a decoded chunk was and how it was coded (for size reports such as bits per pixel per level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkInfo {
    /// The chunk's level.
    pub level: usize,
    /// File offset of the chunk.
    pub offset: u64,
    /// Length of the whole chunk in bytes (chunk header, payload and CRC).
    pub len: usize,
    /// Whether the tokens were coded conditioned on the parent level (coding 1) rather than plain.
    pub parent_coded: bool,
    /// Whether the tokens were coded with the priors' context model (coding 2).
    pub context_coded: bool,
}

/// What a chunk parser needs to know about the file so far.
pub(crate) struct ChunkContext<'a> {
    pub header: &'a Header,
    pub priors: &'a Priors,
    pub limits: &'a Limits,
    /// The last decoded grid (the previous chunk), if any.
    pub previous: Option<&'a TokenGrid>,
    /// Index of this chunk in the file.
    pub index: usize,
    /// File offset of this chunk.
    pub offset: u64,
    /// Tokens decoded before this chunk.
    pub tokens_so_far: u64,
}

/// The fixed fields of a chunk header.
struct ChunkFields {
    level: usize,
    coding: u8,
    param: u16,
    height: u64,
    width: u64,
    payload_len: u64,
}

/// Parses the chunk at the start of `bytes`. `Ok(None)`: the chunk is not complete yet, with the total
/// chunk length if the chunk header was already readable. Every field is checked before the payload is
/// awaited, so a bad chunk fails as soon as its 20 header bytes arrive.
pub(crate) fn read_chunk(
    bytes: &[u8],
    cx: &ChunkContext<'_>,
) -> Result<Result<(TokenGrid, ChunkInfo), Option<usize>>, FormatError> {
    let Some(head) = bytes.get(..CHUNK_HEADER_LEN) else {
        return Ok(Err(None));
    };
    let stored = le_u32(head, 16);
    let computed = crc32fast::hash(&head[..16]);
    if stored != computed && !cfg!(fuzzing) {
        return Err(FormatError::ChunkHeaderChecksum {
            chunk: cx.index,
            offset: cx.offset,
            expected: stored,
            got: computed,
        });
    }
    let f = ChunkFields {
        level: usize::from(head[0]),
        coding: head[1],
        param: u16::from_le_bytes([head[2], head[3]]),
        height: le_u32(head, 4).into(),
        width: le_u32(head, 8).into(),
        payload_len: le_u32(head, 12).into(),
    };
    let total = check_fields(&f, cx)?;
    let Some(chunk) = bytes.get(..total) else {
        return Ok(Err(Some(total)));
    };
    let stored = le_u32(chunk, total - CHUNK_TRAILER_LEN);
    let computed = crc32fast::hash(&chunk[..total - CHUNK_TRAILER_LEN]);
    if stored != computed && !cfg!(fuzzing) {
        return Err(FormatError::ChunkChecksum {
            chunk: cx.index,
            level: f.level,
            offset: cx.offset,
            expected: stored,
            got: computed,
        });
    }
    let grid = decode_payload(&chunk[CHUNK_HEADER_LEN..total - CHUNK_TRAILER_LEN], &f, cx)?;
    let info = ChunkInfo {
        level: f.level,
        offset: cx.offset,
        len: total,
        parent_coded: f.coding == CODING_PARENT,
        context_coded: f.coding == CODING_CONTEXT,
    };
    Ok(Ok((grid, info)))
}

/// Level range and order, grid size, coding, payload length and limits — all before allocation.
/// Returns the chunk's total length.
fn check_fields(f: &ChunkFields, cx: &ChunkContext<'_>) -> Result<usize, FormatError> {
    let model_levels = usize::from(cx.header.model_levels);
    let expected = cx
        .header
        .grid_dims(f.level)
        .ok_or(FormatError::LevelOutOfRange {
            offset: cx.offset,
            level: f.level,
            model_levels,
        })?;
    if let Some(prev) = cx.previous
        && f.level >= prev.level
    {
        return Err(FormatError::LevelOrder {
            offset: cx.offset,
            previous: prev.level,
            level: f.level,
        });
    }
    if (f.height, f.width) != expected {
        return Err(FormatError::GridSize {
            level: f.level,
            expected,
            got: (f.height, f.width),
        });
    }
    let parent_ok = cx.previous.is_some_and(|p| p.level == f.level + 1);
    let coding_ok = match f.coding {
        CODING_PLAIN => f.param == 0,
        CODING_PARENT => parent_ok && f.param != 0,
        CODING_CONTEXT => cx.priors.context().is_some() && f.param == 0,
        _ => false,
    };
    if !coding_ok {
        return Err(FormatError::InvalidCoding {
            offset: cx.offset,
            level: f.level,
            coding: f.coding,
            param: f.param,
        });
    }
    // An empty payload is valid: ANS codes a run of the most-likely-at-cdf-0 symbol in zero words.
    if !f.payload_len.is_multiple_of(4) {
        return Err(FormatError::CorruptPayload {
            offset: cx.offset,
            level: f.level,
            fault: PayloadFault::Length,
        });
    }
    // u64 arithmetic, then a checked conversion: on wasm32 `usize` is 32 bits.
    let total = (CHUNK_HEADER_LEN + CHUNK_TRAILER_LEN) as u64 + f.payload_len;
    let end = cx.offset + total;
    let total = usize::try_from(total)
        .ok()
        .filter(|_| end <= cx.limits.max_file_bytes);
    let Some(total) = total else {
        return Err(FormatError::OverLimit {
            what: LimitKind::FileBytes,
            limit: cx.limits.max_file_bytes,
            got: end,
        });
    };
    let tokens = cx.tokens_so_far + f.height * f.width;
    if tokens > cx.limits.max_tokens || usize::try_from(f.height * f.width).is_err() {
        return Err(FormatError::OverLimit {
            what: LimitKind::Tokens,
            limit: cx.limits.max_tokens,
            got: tokens,
        });
    }
    Ok(total)
}

fn decode_payload(
    payload: &[u8],
    f: &ChunkFields,
    cx: &ChunkContext<'_>,
) -> Result<TokenGrid, FormatError> {
    let corrupt = |fault| FormatError::CorruptPayload {
        offset: cx.offset,
        level: f.level,
        fault,
    };
    let words: Vec<u32> = payload.chunks_exact(4).map(|w| le_u32(w, 0)).collect();
    let (height, width) = (f.height as usize, f.width as usize);
    let model = cx.priors.model(f.level).ok_or(FormatError::PriorsLevels {
        priors_levels: cx.priors.levels(),
        model_levels: cx.header.model_levels.into(),
    })?;
    // The parent is the previous chunk's grid when it is the next coarser level (as the writer decides).
    let parent = cx
        .previous
        .filter(|p| p.level == f.level + 1)
        .map(|p| ParentGrid {
            height: p.height,
            width: p.width,
            tokens: &p.tokens,
        });
    let coding = match (f.coding, parent.as_ref(), cx.priors.context()) {
        (CODING_PARENT, Some(parent), _) => Coding::Parent {
            parent,
            p_same: f.param,
        },
        (CODING_CONTEXT, parent, Some(context)) => Coding::Context {
            context,
            level: f.level,
            parent,
        },
        _ => Coding::Plain,
    };
    let tokens =
        coding::decode(words, height * width, width, model, coding).map_err(|e| match e {
            DecodeFault::TrailingZeroWord => corrupt(PayloadFault::TrailingZeroWord),
            DecodeFault::TrailingData => corrupt(PayloadFault::TrailingData),
            DecodeFault::BadParameter => FormatError::InvalidCoding {
                offset: cx.offset,
                level: f.level,
                coding: f.coding,
                param: f.param,
            },
        })?;
    // The models only emit symbols below the codebook size; this keeps the promise even if that changed.
    let n = cx.priors.codebook_size();
    if let Some((index, &token)) = tokens.iter().enumerate().find(|&(_, &t)| t as usize >= n) {
        return Err(FormatError::TokenOutOfRange {
            level: f.level,
            index,
            token,
            codebook_size: n,
        });
    }
    Ok(TokenGrid {
        level: f.level,
        height,
        width,
        tokens,
    })
}
