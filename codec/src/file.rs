//! `.hvq` files: writing, reading, decoding and inspecting.

use hvq_format::{CHUNK_HEADER_LEN, CHUNK_TRAILER_LEN, Header, HvqFile};
use hvq_spec::fingerprint_hex;

use crate::{
    Codec, CodecError, DecodedImage, LevelSelection, Limits, Progress, Result, RgbImage, Tokens,
};

/// What a `.hvq` file holds, read from its header and chunk headers.
#[derive(Debug, Clone, PartialEq)]
pub struct FileInfo {
    /// Original image width in pixels.
    pub width: u32,
    /// Original image height in pixels.
    pub height: u32,
    /// Fingerprint of the model that made the file.
    pub fingerprint: [u8; 32],
    /// Levels of that model.
    pub model_levels: usize,
    /// Stride in pixels of the model's coarsest level.
    pub coarsest_stride: u32,
    /// The complete chunks, in file order (coarsest first).
    pub levels: Vec<LevelInfo>,
    /// Bytes after the last complete chunk (a partial chunk of a progressive prefix); 0 for a whole file.
    pub trailing_bytes: usize,
    /// Size of the file in bytes.
    pub total_bytes: usize,
}

/// One level's chunk in a `.hvq` file.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelInfo {
    /// Level (0 = finest).
    pub level: usize,
    /// Grid columns.
    pub grid_width: usize,
    /// Grid rows.
    pub grid_height: usize,
    /// Bytes of the chunk (header, entropy-coded tokens, checksum).
    pub bytes: usize,
    /// The chunk's bits per pixel of the original image.
    pub bits_per_pixel: f64,
    /// Bits per pixel of the smallest prefix that decodes this level (file header and every chunk
    /// up to and including this one): what a progressive reader must download.
    pub prefix_bits_per_pixel: f64,
    /// `Some(share)` when the chunk is coded conditioned on its parent level (docs/format.md §4):
    /// the share of tokens equal to their co-located parent token, as the chunk header stores it.
    /// `None` for plain coding (no parent, or plain was smaller).
    pub same_as_parent: Option<f64>,
    /// Whether the chunk is coded with the model's context model (coding 2: parent and neighbouring
    /// tokens through the codebook's geometry, docs/format.md §4.3).
    pub context_coded: bool,
}

impl FileInfo {
    /// The model fingerprint as lower-case hex.
    pub fn fingerprint_hex(&self) -> String {
        fingerprint_hex(&self.fingerprint)
    }
}

/// Reads the header and the chunk table of a `.hvq` file without a model, under
/// [`Limits::default`] (as a codec built with default limits reads it; [`inspect_with`] takes
/// others).
///
/// Checks the header fully (magic, version, checksum, field rules, the image size against
/// [`Limits::max_pixels`]) but reads chunk headers for their sizes only: it neither verifies the
/// chunk checksums nor decodes tokens (that needs the model's priors: use [`Codec::info`] or
/// [`Codec::read_hvq`]).
pub fn inspect(bytes: &[u8]) -> Result<FileInfo> {
    inspect_with(bytes, &Limits::default())
}

/// [`inspect`] under `limits`: the header's image size is checked against
/// [`Limits::max_pixels`] (a file's length is the caller's business, as it already holds the
/// bytes).
pub fn inspect_with(bytes: &[u8], limits: &Limits) -> Result<FileInfo> {
    let (header, mut offset) = read_header(bytes, limits)?;
    let pixels = (u64::from(header.width) * u64::from(header.height)) as f64;
    let bpp = |n: usize| n as f64 * 8.0 / pixels;
    let mut levels = Vec::new();
    while let Some(head) = bytes.get(offset..offset + CHUNK_HEADER_LEN) {
        // A header whose own checksum fails is a damaged chunk or data appended after the file;
        // either way no level there: stop, as the reader does (`Codec::info` tells which).
        let head: &[u8; CHUNK_HEADER_LEN] = head.try_into().expect("sliced to the length");
        if !hvq_format::chunk_header_intact(head) {
            break;
        }
        // Chunk header layout (docs/format.md §3): level u8, coding u8, param u16, height u32,
        // width u32, payload length u32, CRC32.
        let payload = le_u32(head, 12) as usize;
        let len = CHUNK_HEADER_LEN
            .saturating_add(payload)
            .saturating_add(CHUNK_TRAILER_LEN);
        if offset.saturating_add(len) > bytes.len() {
            break;
        }
        offset += len;
        levels.push(LevelInfo {
            level: usize::from(head[0]),
            grid_height: le_u32(head, 4) as usize,
            grid_width: le_u32(head, 8) as usize,
            bytes: len,
            bits_per_pixel: bpp(len),
            prefix_bits_per_pixel: bpp(offset),
            // Coding byte 1 is parent coding; its u16 parameter is the share of same tokens.
            same_as_parent: (head[1] == 1)
                .then(|| f64::from(u16::from_le_bytes([head[2], head[3]])) / 65536.0),
            context_coded: head[1] == 2,
        });
    }
    Ok(FileInfo {
        width: header.width,
        height: header.height,
        fingerprint: header.fingerprint,
        model_levels: header.model_levels.into(),
        coarsest_stride: header.coarsest_stride,
        levels,
        trailing_bytes: bytes.len() - offset,
        total_bytes: bytes.len(),
    })
}

/// The format's header reader, with a cut inside the header reported as a truncated file.
fn read_header(bytes: &[u8], limits: &Limits) -> Result<(Header, usize)> {
    hvq_format::read_header_with(bytes, limits).map_err(|e| match e {
        hvq_format::FormatError::NeedMoreData { .. } => {
            CodecError::NoCompleteLevel { got: bytes.len() }
        }
        e => CodecError::Format(e),
    })
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Whether `bytes` start like a `.hvq` file (its 8-byte magic).
pub fn is_hvq(bytes: &[u8]) -> bool {
    bytes.starts_with(&hvq_format::MAGIC)
}

impl Codec {
    /// Writes already-encoded tokens as a `.hvq` file (levels coarsest first, as the format wants).
    ///
    /// Errors: [`CodecError::Format`] when the grids do not fit the size or the model.
    pub fn tokens_to_hvq(&self, tokens: &Tokens) -> Result<Vec<u8>> {
        let header = Header::new(
            tokens.width,
            tokens.height,
            self.fingerprint(),
            self.config(),
            self.priors(),
        );
        let mut grids = tokens.grids.clone();
        grids.sort_by_key(|g| std::cmp::Reverse(g.level));
        hvq_format::write_file(&header, &grids, self.priors()).map_err(CodecError::Format)
    }

    /// Encodes `image` at `levels` straight to `.hvq` bytes.
    pub async fn encode_to_hvq_async(
        &self,
        image: &RgbImage,
        levels: impl Into<LevelSelection>,
    ) -> Result<Vec<u8>> {
        self.encode_to_hvq_with_progress_async(image, levels, |_| {})
            .await
    }

    /// [`encode_to_hvq_async`](Self::encode_to_hvq_async), calling `progress` after every tile.
    pub async fn encode_to_hvq_with_progress_async(
        &self,
        image: &RgbImage,
        levels: impl Into<LevelSelection>,
        progress: impl FnMut(Progress),
    ) -> Result<Vec<u8>> {
        let tokens = self
            .encode_with_progress_async(image, levels, progress)
            .await?;
        self.tokens_to_hvq(&tokens)
    }

    /// Reads the tokens of a `.hvq` file made by this model, without decoding pixels.
    ///
    /// A file that ends inside a chunk (a progressive prefix, or a cut download) gives the
    /// complete levels before the cut. Errors: [`CodecError::FingerprintMismatch`] (checked before
    /// any token is decoded), [`CodecError::NoCompleteLevel`], [`CodecError::FileTooLarge`], and
    /// [`CodecError::Format`] for a malformed, corrupt or unsupported file.
    pub fn read_hvq(&self, bytes: &[u8]) -> Result<(Tokens, bool)> {
        let file = self.read_file(bytes)?;
        let truncated = file.truncated_tail;
        let mut grids = file.grids;
        grids.reverse();
        Ok((
            Tokens {
                width: file.header.width,
                height: file.header.height,
                grids,
            },
            truncated,
        ))
    }

    fn read_file(&self, bytes: &[u8]) -> Result<HvqFile> {
        let limits = self.limits();
        if bytes.len() as u64 > limits.max_file_bytes {
            return Err(CodecError::FileTooLarge {
                got: bytes.len() as u64,
                limit: limits.max_file_bytes,
            });
        }
        // The fingerprint first: with another model's priors the chunks would fail with a
        // confusing decoding error instead of the real reason.
        let (header, _) = read_header(bytes, limits)?;
        if header.fingerprint != self.fingerprint() {
            return Err(CodecError::FingerprintMismatch {
                file: fingerprint_hex(&header.fingerprint),
                model: fingerprint_hex(&self.fingerprint()),
            });
        }
        let file =
            hvq_format::read_file(bytes, self.priors(), limits).map_err(CodecError::Format)?;
        if file.grids.is_empty() {
            return Err(CodecError::NoCompleteLevel { got: bytes.len() });
        }
        if file.truncated_tail {
            log::warn!(
                "the .hvq file ends inside a chunk; using the {} complete level(s) before it",
                file.grids.len()
            );
        }
        Ok(file)
    }

    /// Decodes a `.hvq` file to an image of its original size.
    ///
    /// `level: None` picks the finest level present, so a truncated file gives its best complete
    /// level. Errors: those of [`read_hvq`](Self::read_hvq), and [`CodecError::LevelOutOfRange`]
    /// when `level` is not in the file.
    pub async fn decode_hvq_async(
        &self,
        bytes: &[u8],
        level: Option<usize>,
    ) -> Result<DecodedImage> {
        self.decode_hvq_with_progress_async(bytes, level, |_| {})
            .await
    }

    /// [`decode_hvq_async`](Self::decode_hvq_async), calling `progress` after every tile.
    pub async fn decode_hvq_with_progress_async(
        &self,
        bytes: &[u8],
        level: Option<usize>,
        progress: impl FnMut(Progress),
    ) -> Result<DecodedImage> {
        let file = self.read_file(bytes)?;
        let grid = match level {
            None => file.finest(),
            Some(l) => file.level(l),
        }
        .ok_or_else(|| CodecError::LevelOutOfRange {
            level: level.unwrap_or(0),
            available: file.grids.iter().rev().map(|g| g.level).collect(),
        })?;
        let image = self
            .decode_with_progress_async(grid, file.header.width, file.header.height, progress)
            .await?;
        Ok(DecodedImage {
            image,
            level: grid.level,
            truncated: file.truncated_tail,
        })
    }

    /// [`inspect`] plus full validation: checks the fingerprint and decodes every chunk's tokens
    /// (checksums, entropy-coded payloads).
    pub fn info(&self, bytes: &[u8]) -> Result<FileInfo> {
        self.read_file(bytes)?;
        inspect_with(bytes, self.limits())
    }
}
