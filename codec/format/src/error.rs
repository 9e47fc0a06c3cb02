//! The one error type of this crate.

/// Which limit of [`Limits`](crate::Limits) a file exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitKind {
    /// `width × height` of the original image ([`Limits::max_pixels`](crate::Limits::max_pixels)).
    Pixels,
    /// Bytes pushed into a reader ([`Limits::max_file_bytes`](crate::Limits::max_file_bytes)).
    FileBytes,
    /// Tokens over all decoded chunks ([`Limits::max_tokens`](crate::Limits::max_tokens)).
    Tokens,
}

impl std::fmt::Display for LimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitKind::Pixels => "pixels",
            LimitKind::FileBytes => "bytes",
            LimitKind::Tokens => "tokens",
        })
    }
}

/// What is wrong with a chunk's entropy-coded payload (its checksum was right, its content is not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PayloadFault {
    /// The payload length is not a multiple of 4 (payloads are whole 32-bit ANS words).
    Length,
    /// The last ANS word is zero, which no encoder produces.
    TrailingZeroWord,
    /// Compressed data is left over after the grid's last token was decoded.
    TrailingData,
}

impl std::fmt::Display for PayloadFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PayloadFault::Length => "its length is not a whole number of 4-byte words",
            PayloadFault::TrailingZeroWord => "it ends with a zero word, which no encoder writes",
            PayloadFault::TrailingData => "coded data is left over after the last token",
        })
    }
}

/// What is wrong with a priors table or its metadata string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PriorsFault {
    /// No levels, or more than [`MAX_LEVELS`](crate::MAX_LEVELS).
    LevelCount,
    /// A codebook size outside `2..=`[`MAX_CODEBOOK_SIZE`](crate::MAX_CODEBOOK_SIZE), or levels of different sizes.
    CodebookSize,
    /// The metadata string does not start with [`PRIORS_TAG`](crate::PRIORS_TAG).
    Tag,
    /// The metadata string is not base64url (no padding), or is longer than the bound.
    Base64,
    /// A varint is cut short or overflows.
    Varint,
    /// A level's frequencies are zero somewhere or do not sum to `2^24`.
    Frequencies,
    /// Bytes are left after the last frequency.
    TrailingBytes,
    /// A context-model string does not start with [`CONTEXT_TAG`](crate::CONTEXT_TAG).
    ContextTag,
    /// A context model's codebook size, list length or level count is out of range or does not match.
    ContextShape,
    /// A context model's list names an entry outside the codebook, or its weights or rank tables do
    /// not sum to `2^16`.
    ContextTable,
}

impl std::fmt::Display for PriorsFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PriorsFault::LevelCount => "no levels, or more than the format allows",
            PriorsFault::CodebookSize => {
                "a codebook size out of range, or levels of different sizes"
            }
            PriorsFault::Tag => "the metadata string lacks its `hvqp1:` tag",
            PriorsFault::Base64 => "the metadata string is not unpadded base64url, or too long",
            PriorsFault::Varint => "a number is cut short or overflows",
            PriorsFault::Frequencies => "a level's frequencies are zero or do not sum to 2^24",
            PriorsFault::TrailingBytes => "bytes are left after the last frequency",
            PriorsFault::ContextTag => "the context-model string lacks its `hvqc1:` tag",
            PriorsFault::ContextShape => {
                "the context model's shape is out of range or does not match the priors"
            }
            PriorsFault::ContextTable => {
                "the context model names an entry outside the codebook, or a table does not sum to 2^16"
            }
        })
    }
}

/// Every way reading or writing a `.hvq` file or a priors table can fail.
///
/// Offsets are byte offsets from the start of the file. Errors from bad input never panic:
/// each length, size, level and token is checked before it is used or allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The input ends before the header is complete. Returned by [`read_header`](crate::read_header),
    /// [`read_file`](crate::read_file) and [`Reader::finish`](crate::Reader::finish); a streaming
    /// caller pushes more bytes and tries again.
    #[error("need more data: at least {needed_at_least} bytes")]
    NeedMoreData {
        /// The smallest total input length that could get further.
        needed_at_least: usize,
    },
    /// The first 8 bytes are not the `.hvq` magic (not an hvq file, or damaged by a text-mode transfer).
    #[error("not an .hvq file: it does not start with the .hvq signature")]
    BadMagic {
        /// The bytes found (as many as were available, zero-filled).
        got: [u8; 8],
    },
    /// The format version is not one this crate reads.
    #[error("unsupported .hvq version {got} (this reader supports {supported})")]
    UnsupportedVersion {
        /// The version byte found.
        got: u8,
        /// The version this crate reads and writes.
        supported: u8,
    },
    /// The header checksum does not match: the header is damaged.
    #[error(
        "the file header is damaged (checksum mismatch: stored {expected:08x}, computed {got:08x})"
    )]
    HeaderChecksum {
        /// CRC32 stored in the file.
        expected: u32,
        /// CRC32 of the bytes read.
        got: u32,
    },
    /// A header field holds a value the format does not allow (zero size, bad stride, non-zero reserved bits…).
    #[error("invalid header field `{field}`: {got}")]
    InvalidHeader {
        /// The field's name as in `docs/format.md`.
        field: &'static str,
        /// The value found.
        got: u64,
    },
    /// The file was made by another model (returned by [`check_fingerprint`](crate::check_fingerprint)).
    #[error("model fingerprint mismatch: file was made by another model")]
    FingerprintMismatch {
        /// The fingerprint of the model the caller holds.
        expected: [u8; 32],
        /// The fingerprint stored in the file.
        got: [u8; 32],
    },
    /// The file was entropy-coded with other priors than the ones given, so it cannot be decoded with them.
    #[error("priors mismatch: file needs priors {got:016x}, given {expected:016x}")]
    PriorsMismatch {
        /// [`Priors::hash`](crate::Priors::hash) of the priors given.
        expected: u64,
        /// The priors hash stored in the header.
        got: u64,
    },
    /// The priors have another number of levels than the header's `model_levels`.
    #[error("priors have {priors_levels} levels, the file's model has {model_levels}")]
    PriorsLevels {
        /// Levels in the priors.
        priors_levels: usize,
        /// Levels in the header.
        model_levels: usize,
    },
    /// A priors table or metadata string is malformed.
    #[error("invalid priors: {fault}")]
    InvalidPriors {
        /// What is wrong.
        fault: PriorsFault,
    },
    /// A chunk's header checksum does not match.
    #[error("chunk {chunk} at offset {offset}: its header is damaged (checksum mismatch)")]
    ChunkHeaderChecksum {
        /// Index of the chunk in the file (0 = first after the header).
        chunk: usize,
        /// Offset of the chunk.
        offset: u64,
        /// CRC32 stored in the file.
        expected: u32,
        /// CRC32 computed.
        got: u32,
    },
    /// A chunk's payload checksum does not match.
    #[error(
        "chunk {chunk} (level {level}) at offset {offset}: its data is damaged (checksum mismatch)"
    )]
    ChunkChecksum {
        /// Index of the chunk in the file.
        chunk: usize,
        /// The chunk's level.
        level: usize,
        /// Offset of the chunk.
        offset: u64,
        /// CRC32 stored in the file.
        expected: u32,
        /// CRC32 computed.
        got: u32,
    },
    /// A chunk names a level the model does not have.
    #[error("chunk at offset {offset}: level {level} but the model has {model_levels} levels")]
    LevelOutOfRange {
        /// Offset of the chunk (0 when writing).
        offset: u64,
        /// The level found.
        level: usize,
        /// `model_levels` from the header.
        model_levels: usize,
    },
    /// Chunks are not strictly coarsest first (each level must be smaller than the one before).
    #[error(
        "chunk at offset {offset}: level {level} after level {previous}; chunks go coarsest first"
    )]
    LevelOrder {
        /// Offset of the chunk (0 when writing).
        offset: u64,
        /// The level of the chunk before.
        previous: usize,
        /// The level found.
        level: usize,
    },
    /// A grid's size is not the one the header's width, height and stride imply.
    #[error(
        "level {level}: a grid of {}×{} tokens, but the header implies {}×{}",
        got.1, got.0, expected.1, expected.0
    )]
    GridSize {
        /// The level.
        level: usize,
        /// `(height, width)` from the header.
        expected: (u64, u64),
        /// `(height, width)` found.
        got: (u64, u64),
    },
    /// A grid given to the writer has `tokens.len() != height * width`.
    #[error("level {level}: {got} tokens for a grid of {expected}")]
    TokenCount {
        /// The level.
        level: usize,
        /// `height * width`.
        expected: u64,
        /// `tokens.len()`.
        got: u64,
    },
    /// A token is not a codebook index.
    #[error("level {level}, token {index}: value {token} ≥ codebook size {codebook_size}")]
    TokenOutOfRange {
        /// The level.
        level: usize,
        /// Row-major index in the grid.
        index: usize,
        /// The value found.
        token: u32,
        /// The codebook size of the priors.
        codebook_size: usize,
    },
    /// A chunk's coding byte or its parameter is unknown, or parent coding is used without the parent level
    /// directly before.
    #[error(
        "chunk at offset {offset} (level {level}): invalid coding {coding} (parameter {param})"
    )]
    InvalidCoding {
        /// Offset of the chunk.
        offset: u64,
        /// The chunk's level.
        level: usize,
        /// The coding byte.
        coding: u8,
        /// The coding parameter.
        param: u16,
    },
    /// A chunk's payload passed its checksum but is not valid entropy-coded data.
    #[error("chunk at offset {offset} (level {level}): corrupt coded tokens: {fault}")]
    CorruptPayload {
        /// Offset of the chunk.
        offset: u64,
        /// The chunk's level.
        level: usize,
        /// What is wrong.
        fault: PayloadFault,
    },
    /// A size exceeds a limit of [`Limits`](crate::Limits) or of the format (checked before allocating).
    #[error("too many {what}: {got}, the limit is {limit}")]
    OverLimit {
        /// Which limit.
        what: LimitKind,
        /// The limit.
        limit: u64,
        /// The size the file asks for.
        got: u64,
    },
    /// Bytes after the last chunk are not a chunk (data appended to the file); only
    /// [`read_file_strict`](crate::read_file_strict) and [`Reader::finish_strict`](crate::Reader::finish_strict)
    /// return this (the progressive readers report `truncated_tail` and `appended_data_at` instead).
    #[error(
        "{len} bytes at offset {offset}, after the last chunk, are not a chunk (data appended to the file?)"
    )]
    TrailingData {
        /// Offset of the first byte that is not a chunk.
        offset: u64,
        /// How many bytes follow from there.
        len: u64,
    },
    /// The file ends inside a chunk; only [`read_file_strict`](crate::read_file_strict) returns this
    /// (the progressive readers report `truncated_tail` instead).
    #[error(
        "file truncated inside the chunk at offset {offset}: need at least {needed_at_least} bytes"
    )]
    Truncated {
        /// Offset of the incomplete chunk.
        offset: u64,
        /// The smallest file length that would complete it (as far as it is known).
        needed_at_least: u64,
    },
    /// [`choose_tokens`](crate::choose_tokens) or [`choose_levels`](crate::choose_levels) was given
    /// candidates whose shapes disagree, a level twice, a candidate
    /// outside the codebook, a distance that is not finite, a negative or non-finite `lambda`, or a
    /// level the priors lack.
    #[error("rate-distortion choice: inconsistent candidates, distances, lambda or level")]
    RateChoice,
}

impl FormatError {
    /// The variant's name (`"NeedMoreData"`, …): a stable, machine-readable kind for
    /// bindings and logs, so callers need not parse `Debug` text.
    pub fn kind(&self) -> &'static str {
        match self {
            FormatError::NeedMoreData { .. } => "NeedMoreData",
            FormatError::BadMagic { .. } => "BadMagic",
            FormatError::UnsupportedVersion { .. } => "UnsupportedVersion",
            FormatError::HeaderChecksum { .. } => "HeaderChecksum",
            FormatError::InvalidHeader { .. } => "InvalidHeader",
            FormatError::FingerprintMismatch { .. } => "FingerprintMismatch",
            FormatError::PriorsMismatch { .. } => "PriorsMismatch",
            FormatError::PriorsLevels { .. } => "PriorsLevels",
            FormatError::InvalidPriors { .. } => "InvalidPriors",
            FormatError::ChunkHeaderChecksum { .. } => "ChunkHeaderChecksum",
            FormatError::ChunkChecksum { .. } => "ChunkChecksum",
            FormatError::LevelOutOfRange { .. } => "LevelOutOfRange",
            FormatError::LevelOrder { .. } => "LevelOrder",
            FormatError::GridSize { .. } => "GridSize",
            FormatError::TokenCount { .. } => "TokenCount",
            FormatError::TokenOutOfRange { .. } => "TokenOutOfRange",
            FormatError::InvalidCoding { .. } => "InvalidCoding",
            FormatError::CorruptPayload { .. } => "CorruptPayload",
            FormatError::OverLimit { .. } => "OverLimit",
            FormatError::TrailingData { .. } => "TrailingData",
            FormatError::Truncated { .. } => "Truncated",
            FormatError::RateChoice => "RateChoice",
        }
    }
}
