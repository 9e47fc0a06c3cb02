//! The fixed 68-byte file header (`docs/format.md` §2).

use crate::{FormatError, Limits, MAX_LEVELS, Priors};

/// The first 8 bytes of every `.hvq` file. Like PNG's signature: the high bit catches 7-bit transfers,
/// `\r\n` and `\x1a\n` catch line-ending conversion and DOS end-of-file handling.
pub const MAGIC: [u8; 8] = *b"\x89HVQ\r\n\x1a\n";

/// The format version this crate writes and reads.
pub const VERSION: u8 = 1;

/// Size of the header in bytes, including its CRC32.
pub const HEADER_LEN: usize = 68;

/// Largest coarsest-level stride a header may state.
pub const MAX_STRIDE: u32 = 1 << 16;

/// The file header: what the image was and which model and priors coded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Width of the original image in pixels (before padding to the stride).
    pub width: u32,
    /// Height of the original image in pixels.
    pub height: u32,
    /// Fingerprint of the model whose codebook the tokens index ([`hvq_spec::fingerprint`]).
    pub fingerprint: [u8; 32],
    /// Number of levels the model has (chunks may carry fewer).
    pub model_levels: u8,
    /// Stride in pixels of the coarsest level, a power of two ≥ `2^(model_levels-1)`; level `l` has stride `coarsest_stride >> (model_levels - 1 - l)`.
    pub coarsest_stride: u32,
    /// [`Priors::hash`] of the priors that entropy-coded the tokens.
    pub priors_hash: u64,
}

impl Header {
    /// A header for an image of `width × height` coded by the model `cfg` with `priors`.
    pub fn new(
        width: u32,
        height: u32,
        fingerprint: [u8; 32],
        cfg: &hvq_spec::ModelConfig,
        priors: &Priors,
    ) -> Self {
        Header {
            width,
            height,
            fingerprint,
            model_levels: u8::try_from(cfg.levels).unwrap_or(u8::MAX),
            coarsest_stride: u32::try_from(cfg.coarsest_stride()).unwrap_or(u32::MAX),
            priors_hash: priors.hash(),
        }
    }

    /// `(height, width)` of level `level`'s token grid: the image is edge-padded to a multiple of the
    /// coarsest stride, so the coarsest grid is `ceil(height / stride)` rows and each finer level doubles it.
    /// Returns `None` for a level the model does not have.
    pub fn grid_dims(&self, level: usize) -> Option<(u64, u64)> {
        let levels = usize::from(self.model_levels);
        if level >= levels || levels > MAX_LEVELS || self.coarsest_stride == 0 {
            return None;
        }
        let scale = 1u64 << (levels - 1 - level);
        let stride = u64::from(self.coarsest_stride);
        Some((
            u64::from(self.height).div_ceil(stride) * scale,
            u64::from(self.width).div_ceil(stride) * scale,
        ))
    }

    /// The 68 header bytes, checksum included.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8] = VERSION;
        b[9] = self.model_levels;
        // b[10..12]: reserved, zero.
        b[12..16].copy_from_slice(&self.width.to_le_bytes());
        b[16..20].copy_from_slice(&self.height.to_le_bytes());
        b[20..24].copy_from_slice(&self.coarsest_stride.to_le_bytes());
        b[24..56].copy_from_slice(&self.fingerprint);
        b[56..64].copy_from_slice(&self.priors_hash.to_le_bytes());
        let crc = crc32fast::hash(&b[..64]);
        b[64..68].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Checks the fields' own rules (sizes, levels, stride) and `limits.max_pixels`.
    pub(crate) fn validate(&self, limits: &Limits) -> Result<(), FormatError> {
        let invalid = |field, got: u64| Err(FormatError::InvalidHeader { field, got });
        if self.width == 0 {
            return invalid("width", 0);
        }
        if self.height == 0 {
            return invalid("height", 0);
        }
        if self.model_levels == 0 || usize::from(self.model_levels) > MAX_LEVELS {
            return invalid("model_levels", self.model_levels.into());
        }
        // Strides are f_0 · 2^l with f_0 a power of two (DESIGN.md §5), so the finest is at least 1 pixel.
        let step = 1u32 << (self.model_levels - 1);
        let s = self.coarsest_stride;
        if !s.is_power_of_two() || s < step || s > MAX_STRIDE {
            return invalid("coarsest_stride", s.into());
        }
        let pixels = u64::from(self.width) * u64::from(self.height);
        if pixels > limits.max_pixels {
            return Err(FormatError::OverLimit {
                what: crate::LimitKind::Pixels,
                limit: limits.max_pixels,
                got: pixels,
            });
        }
        Ok(())
    }
}

/// Parses and checks the header at the start of `bytes`; returns it and its length in bytes.
///
/// Short input gives [`FormatError::NeedMoreData`] — except that a wrong magic or version is reported as
/// soon as those bytes are present. Checks magic, version, CRC32, field rules and default [`Limits`]
/// ([`read_header_with`] takes others).
pub fn read_header(bytes: &[u8]) -> Result<(Header, usize), FormatError> {
    read_header_with(bytes, &Limits::default())
}

/// [`read_header`] with `limits` instead of the defaults (of them the header can break only
/// [`Limits::max_pixels`]): what [`Reader`](crate::Reader) and [`read_file`](crate::read_file)
/// check first.
pub fn read_header_with(bytes: &[u8], limits: &Limits) -> Result<(Header, usize), FormatError> {
    let have = bytes.len().min(MAGIC.len());
    if bytes[..have] != MAGIC[..have] {
        let mut got = [0u8; 8];
        got[..have].copy_from_slice(&bytes[..have]);
        return Err(FormatError::BadMagic { got });
    }
    if let Some(&version) = bytes.get(8)
        && version != VERSION
    {
        return Err(FormatError::UnsupportedVersion {
            got: version,
            supported: VERSION,
        });
    }
    let Some(b) = bytes.get(..HEADER_LEN) else {
        return Err(FormatError::NeedMoreData {
            needed_at_least: HEADER_LEN,
        });
    };
    let stored = le_u32(b, 64);
    let computed = crc32fast::hash(&b[..64]);
    if stored != computed && !cfg!(fuzzing) {
        return Err(FormatError::HeaderChecksum {
            expected: stored,
            got: computed,
        });
    }
    let reserved = u16::from_le_bytes([b[10], b[11]]);
    if reserved != 0 {
        return Err(FormatError::InvalidHeader {
            field: "reserved",
            got: reserved.into(),
        });
    }
    let mut fingerprint = [0u8; 32];
    fingerprint.copy_from_slice(&b[24..56]);
    let header = Header {
        width: le_u32(b, 12),
        height: le_u32(b, 16),
        fingerprint,
        model_levels: b[9],
        coarsest_stride: le_u32(b, 20),
        priors_hash: u64::from_le_bytes(b[56..64].try_into().unwrap_or_default()),
    };
    header.validate(limits)?;
    Ok((header, HEADER_LEN))
}

/// Refuses a file made by another model: compares the header's fingerprint with `expected`.
pub fn check_fingerprint(header: &Header, expected: &[u8; 32]) -> Result<(), FormatError> {
    if &header.fingerprint == expected {
        Ok(())
    } else {
        Err(FormatError::FingerprintMismatch {
            expected: *expected,
            got: header.fingerprint,
        })
    }
}

/// Little-endian u32 at `at`; callers have checked the length.
pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}
