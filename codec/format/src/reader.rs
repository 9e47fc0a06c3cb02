//! Streaming and whole-file reading.

use hvq_spec::TokenGrid;

use crate::chunk::{self, CHUNK_HEADER_LEN, ChunkContext, ChunkInfo};
use crate::header::{le_u32, read_header_with};
use crate::{FormatError, HEADER_LEN, Header, LimitKind, Limits, Priors};

/// What a [`Reader`] has so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The header, once its 68 bytes have arrived and checked.
    pub header: Option<Header>,
    /// Levels decoded so far, in file order (coarsest first).
    pub complete_levels: Vec<usize>,
    /// True while more bytes could add something: the header is incomplete, a chunk is partly buffered,
    /// or level 0 (the finest) has not arrived yet.
    pub need_more: bool,
}

/// A decoded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HvqFile {
    /// The header.
    pub header: Header,
    /// The grids of the complete chunks, coarsest first.
    pub grids: Vec<TokenGrid>,
    /// Where each of those chunks was in the file and how it was coded (same order as `grids`).
    pub chunks: Vec<ChunkInfo>,
    /// True when bytes after the last complete chunk were ignored: the input ended inside a chunk
    /// (a progressive prefix), or what follows is not a chunk at all (see `appended_data_at`).
    pub truncated_tail: bool,
    /// Where the bytes start that do not form a chunk header (data appended to a file, e.g. by a
    /// careless concatenation), if the reader met such bytes; `docs/format.md` §1 tells them
    /// apart from a damaged chunk header, which is an error.
    pub appended_data_at: Option<u64>,
}

impl HvqFile {
    /// The finest level present (the best image this file can give), if any chunk is present.
    pub fn finest(&self) -> Option<&TokenGrid> {
        self.grids.last()
    }

    /// The grid of `level`, if present.
    pub fn level(&self, level: usize) -> Option<&TokenGrid> {
        self.grids.iter().find(|g| g.level == level)
    }
}

/// A push-style decoder for progressive loading: feed bytes as they arrive, decode each level as soon as
/// its chunk is complete. After an error the reader returns that error again on every call.
#[derive(Debug)]
pub struct Reader<'p> {
    priors: &'p Priors,
    limits: Limits,
    /// Bytes received but not yet consumed by a complete header or chunk.
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    offset: u64,
    header: Option<Header>,
    grids: Vec<TokenGrid>,
    chunks: Vec<ChunkInfo>,
    tokens: u64,
    /// Total length of the chunk being buffered, once its chunk header was read.
    pending_len: Option<usize>,
    /// Offset of bytes that are not a chunk: once set, no further chunk is read.
    appended_data_at: Option<u64>,
    failed: Option<FormatError>,
}

impl<'p> Reader<'p> {
    /// A reader that decodes with `priors` and enforces `limits`.
    pub fn new(priors: &'p Priors, limits: Limits) -> Self {
        Reader {
            priors,
            limits,
            buf: Vec::new(),
            offset: 0,
            header: None,
            grids: Vec::new(),
            chunks: Vec::new(),
            tokens: 0,
            pending_len: None,
            appended_data_at: None,
            failed: None,
        }
    }

    /// Appends `bytes` and decodes whatever became complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Progress, FormatError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.push_inner(bytes) {
            Ok(()) => Ok(self.progress()),
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// The current state, without pushing.
    pub fn progress(&self) -> Progress {
        let finest_done = self.grids.last().is_some_and(|g| g.level == 0);
        let stopped = self.appended_data_at.is_some();
        Progress {
            header: self.header.clone(),
            complete_levels: self.grids.iter().map(|g| g.level).collect(),
            need_more: !stopped && (self.header.is_none() || !self.buf.is_empty() || !finest_done),
        }
    }

    /// The header, once read.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// The grids decoded so far, coarsest first.
    pub fn grids(&self) -> &[TokenGrid] {
        &self.grids
    }

    /// Where the chunks decoded so far were and how they were coded.
    pub fn chunks(&self) -> &[ChunkInfo] {
        &self.chunks
    }

    /// Ends the input. A partial trailing chunk, or data after the last chunk that is not a chunk, is
    /// reported as `truncated_tail`; an incomplete header is [`FormatError::NeedMoreData`].
    pub fn finish(self) -> Result<HvqFile, FormatError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let header = self.header.ok_or(FormatError::NeedMoreData {
            needed_at_least: HEADER_LEN,
        })?;
        Ok(HvqFile {
            header,
            grids: self.grids,
            chunks: self.chunks,
            truncated_tail: !self.buf.is_empty(),
            appended_data_at: self.appended_data_at,
        })
    }

    /// Like [`finish`](Self::finish), but a partial trailing chunk is [`FormatError::Truncated`]
    /// and data after the last chunk that is not a chunk is [`FormatError::TrailingData`].
    pub fn finish_strict(self) -> Result<HvqFile, FormatError> {
        if let (None, Some(offset)) = (&self.failed, self.appended_data_at) {
            return Err(FormatError::TrailingData {
                offset,
                len: self.buf.len() as u64,
            });
        }
        if self.failed.is_none() && self.header.is_some() && !self.buf.is_empty() {
            let needed = self
                .pending_len
                .unwrap_or(chunk::CHUNK_HEADER_LEN + 4 + chunk::CHUNK_TRAILER_LEN);
            return Err(FormatError::Truncated {
                offset: self.offset,
                needed_at_least: self.offset + needed as u64,
            });
        }
        self.finish()
    }

    fn push_inner(&mut self, bytes: &[u8]) -> Result<(), FormatError> {
        let total = self.offset + (self.buf.len() + bytes.len()) as u64;
        if total > self.limits.max_file_bytes {
            return Err(FormatError::OverLimit {
                what: LimitKind::FileBytes,
                limit: self.limits.max_file_bytes,
                got: total,
            });
        }
        self.buf.extend_from_slice(bytes);
        if self.header.is_none() && !self.read_header()? {
            return Ok(());
        }
        while self.appended_data_at.is_none() && self.read_chunk()? {}
        Ok(())
    }

    /// Tries to read the header; `Ok(false)` if more bytes are needed.
    fn read_header(&mut self) -> Result<bool, FormatError> {
        let (header, len) = match read_header_with(&self.buf, &self.limits) {
            Ok(h) => h,
            Err(FormatError::NeedMoreData { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        if header.priors_hash != self.priors.hash() {
            return Err(FormatError::PriorsMismatch {
                expected: self.priors.hash(),
                got: header.priors_hash,
            });
        }
        if usize::from(header.model_levels) != self.priors.levels() {
            return Err(FormatError::PriorsLevels {
                priors_levels: self.priors.levels(),
                model_levels: header.model_levels.into(),
            });
        }
        self.consume(len);
        self.header = Some(header);
        Ok(true)
    }

    /// Tries to read one chunk; `Ok(false)` if more bytes are needed.
    fn read_chunk(&mut self) -> Result<bool, FormatError> {
        let Some(header) = &self.header else {
            return Ok(false);
        };
        let cx = ChunkContext {
            header,
            priors: self.priors,
            limits: &self.limits,
            previous: self.grids.last(),
            index: self.grids.len(),
            offset: self.offset,
            tokens_so_far: self.tokens,
        };
        let read = match chunk::read_chunk(&self.buf, &cx) {
            Err(FormatError::ChunkHeaderChecksum { .. })
                if !is_damaged_chunk_header(&self.buf[..CHUNK_HEADER_LEN], &cx) =>
            {
                // Not a chunk at all: data appended after the file's last chunk. Keep the levels
                // read so far, as for a truncated tail, and stop reading.
                self.appended_data_at = Some(self.offset);
                return Ok(false);
            }
            read => read?,
        };
        match read {
            Ok((grid, info)) => {
                self.tokens += grid.tokens.len() as u64;
                self.grids.push(grid);
                self.chunks.push(info);
                self.consume(info.len);
                self.pending_len = None;
                Ok(true)
            }
            Err(pending) => {
                self.pending_len = pending;
                Ok(false)
            }
        }
    }

    fn consume(&mut self, len: usize) {
        self.buf.drain(..len);
        self.offset += len as u64;
    }
}

/// Whether 20 bytes at a chunk's place, whose chunk header checksum fails, are a damaged chunk
/// header (an error) rather than bytes that are no chunk at all (data appended to the file).
///
/// Damaged: the checksum is within two bit errors of matching (CRC32 has a Hamming distance of 6
/// over 160 bits, so this is unambiguous; 20 random bytes land this close with probability
/// 12881 / 2^32, about 3·10^-6), or the level and grid fields are exactly those of a chunk that
/// may come next (random bytes: about 2^-64). Every single-bit flip of a file thus stays an error.
fn is_damaged_chunk_header(head: &[u8], cx: &ChunkContext<'_>) -> bool {
    let level = usize::from(head[0]);
    let next_level_ok = cx.previous.is_none_or(|p| level < p.level);
    let grid = (u64::from(le_u32(head, 4)), u64::from(le_u32(head, 8)));
    if next_level_ok && cx.header.grid_dims(level) == Some(grid) {
        return true;
    }
    let syndrome = le_u32(head, 16) ^ crc32fast::hash(&head[..16]);
    // CRC32 is affine: flipping data bit i changes the CRC by crc(e_i) ^ crc(0); flipping a bit of
    // the stored CRC changes the syndrome by that bit.
    let zero = crc32fast::hash(&[0u8; 16]);
    let mut single: Vec<u32> = (0..128)
        .map(|bit| {
            let mut e = [0u8; 16];
            e[bit / 8] = 1 << (bit % 8);
            crc32fast::hash(&e) ^ zero
        })
        .chain((0..32).map(|bit| 1u32 << bit))
        .collect();
    single.sort_unstable();
    let is_single = |s: u32| single.binary_search(&s).is_ok();
    is_single(syndrome) || single.iter().any(|&a| is_single(syndrome ^ a))
}

/// Decodes a whole (possibly progressive-prefix) file: the header and every complete chunk.
/// A partial trailing chunk sets [`HvqFile::truncated_tail`]; input shorter than the header is
/// [`FormatError::NeedMoreData`].
pub fn read_file(bytes: &[u8], priors: &Priors, limits: &Limits) -> Result<HvqFile, FormatError> {
    let mut reader = Reader::new(priors, *limits);
    reader.push(bytes)?;
    reader.finish()
}

/// Like [`read_file`], but a file that ends inside a chunk is [`FormatError::Truncated`].
pub fn read_file_strict(
    bytes: &[u8],
    priors: &Priors,
    limits: &Limits,
) -> Result<HvqFile, FormatError> {
    let mut reader = Reader::new(priors, *limits);
    reader.push(bytes)?;
    reader.finish_strict()
}
