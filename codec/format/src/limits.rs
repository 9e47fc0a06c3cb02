//! Size limits of files and images: one type for the `.hvq` reader and for `hvq-codec`.

/// Size limits, checked before anything proportional to the input is allocated.
///
/// This one type governs both layers: the `.hvq` [`Reader`](crate::Reader) and
/// [`read_file`](crate::read_file) check a file against it, and `hvq-codec` re-exports it as
/// `hvq_codec::Limits`, checks every image it encodes, decodes or reads from an image file
/// against [`max_pixels`](Self::max_pixels), and passes the same value to this crate's reader,
/// so a limit set on a codec (`CodecBuilder::limits`) is the limit its `.hvq` reading uses too.
/// A file refused by one layer is refused by the other, with the same limit quoted.
///
/// The defaults fit each other: a 64 Mpx image at the finest level of a model with stride 2 has
/// `2^24` tokens, well within `max_tokens`, and even 20 bits a token for `2^26` tokens stays
/// within `max_file_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most `width × height` pixels of an image: the original size in a `.hvq` header; in
    /// `hvq-codec` also an image to encode or decode (its padded size included) and an image
    /// file, checked from its header before its pixels are decoded. Default `2^26` (64 Mpx,
    /// 8192 × 8192).
    pub max_pixels: u64,
    /// Most bytes of a `.hvq` file (for a [`Reader`](crate::Reader): bytes pushed into it).
    /// Default `2^28` (256 MiB).
    pub max_file_bytes: u64,
    /// Most tokens over all chunks of a `.hvq` file. Default `2^26`.
    pub max_tokens: u64,
}

impl Default for Limits {
    fn default() -> Self {
        // 64 Mpx is an 8K×8K photo; the CPU backend's largest activation for it is several GiB,
        // which is where a desktop machine stops being a sensible place to run it.
        Limits {
            max_pixels: 1 << 26,
            max_file_bytes: 1 << 28,
            max_tokens: 1 << 26,
        }
    }
}

impl Limits {
    /// No limit at all (every field `u64::MAX`): for data made by the caller itself, such as
    /// the header [`write_file`](crate::write_file) checks for its own field rules. Never for
    /// input from elsewhere.
    pub const fn unlimited() -> Self {
        Limits {
            max_pixels: u64::MAX,
            max_file_bytes: u64::MAX,
            max_tokens: u64::MAX,
        }
    }
}
