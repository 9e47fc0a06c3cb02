//! The `.hvq` scalable token file format.
//!
//! A `.hvq` file holds the token grids of one image, one chunk per level of a hierarchical VQ-VAE,
//! **coarsest first**. Every chunk is length-prefixed and CRC32-checksummed and its tokens are entropy-coded
//! with an ANS coder ([`constriction`]) under per-level [`Priors`]. Any prefix of a file that ends on a
//! chunk boundary is itself a valid file holding the coarser levels: a thumbnail from the first bytes,
//! the full image from all of them. The byte layout is specified in `docs/format.md`.
//!
//! This crate knows nothing about neural networks: it maps [`TokenGrid`]s and a [`Header`] to bytes and back.
//! It is pure Rust and builds for `wasm32-unknown-unknown`.
//!
//! # Writing and reading a file
//!
//! ```
//! use hvq_format::{Header, Limits, Priors, Reader, read_file, write_file, check_fingerprint};
//! use hvq_spec::TokenGrid;
//!
//! # fn main() -> Result<(), hvq_format::FormatError> {
//! // Priors come from token counts over training data (here: level 1 favours token 3).
//! let mut counts = vec![vec![1u64; 16]; 2];
//! counts[1][3] = 1000;
//! let priors = Priors::from_counts(counts)?;
//! // They travel in the weight file's metadata as a short string.
//! let priors = Priors::from_metadata_string(&priors.to_metadata_string())?;
//!
//! // A 2-level model with strides 8 (level 0) and 16 (level 1), an image of 40 × 30 pixels:
//! // padded to 48 × 32, it has a 2 × 3 grid at level 1 and a 4 × 6 grid at level 0.
//! let header = Header {
//!     width: 40,
//!     height: 30,
//!     fingerprint: [7; 32],
//!     model_levels: 2,
//!     coarsest_stride: 16,
//!     priors_hash: priors.hash(),
//! };
//! assert_eq!(header.grid_dims(1), Some((2, 3)));
//! let coarse = TokenGrid { level: 1, height: 2, width: 3, tokens: vec![3, 3, 3, 3, 1, 3] };
//! let fine = TokenGrid { level: 0, height: 4, width: 6, tokens: (0..24).map(|i| i % 16).collect() };
//! let bytes = write_file(&header, &[coarse.clone(), fine.clone()], &priors)?;
//!
//! // Reading checks every checksum, size and limit; the caller checks the model.
//! let file = read_file(&bytes, &priors, &Limits::default())?;
//! check_fingerprint(&file.header, &[7; 32])?;
//! assert_eq!(file.grids, vec![coarse.clone(), fine]);
//!
//! // Progressive loading: push bytes as they arrive; the coarse level decodes before the fine one.
//! let mut reader = Reader::new(&priors, Limits::default());
//! let (head, last_byte) = bytes.split_at(bytes.len() - 1); // the fine chunk is still incomplete
//! let progress = reader.push(head)?;
//! assert_eq!(progress.complete_levels, vec![1]);
//! assert!(progress.need_more);
//! assert_eq!(reader.grids()[0], coarse);
//! let progress = reader.push(last_byte)?;
//! assert_eq!(progress.complete_levels, vec![1, 0]);
//! assert!(!progress.need_more);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod chunk;
mod coding;
mod context;
mod error;
mod header;
mod limits;
mod priors;
mod rate;
mod reader;
mod writer;

pub use chunk::{CHUNK_HEADER_LEN, CHUNK_TRAILER_LEN, ChunkInfo, chunk_header_intact};
pub use context::{
    CONTEXT_KINDS, CONTEXT_TAG, ContextFitter, ContextModel, MAX_FIT_TOKENS, MAX_NEIGHBOURS,
};
pub use error::{FormatError, LimitKind, PayloadFault, PriorsFault};
pub use header::{
    HEADER_LEN, Header, MAGIC, MAX_STRIDE, VERSION, check_fingerprint, read_header,
    read_header_with,
};
pub use hvq_spec::TokenGrid;
pub use limits::Limits;
pub use priors::{MAX_CODEBOOK_SIZE, MAX_LEVELS, MAX_METADATA_LEN, PRECISION, PRIORS_TAG, Priors};
pub use rate::{Candidates, LevelCandidates, choose_levels, choose_tokens};
pub use reader::{HvqFile, Progress, Reader, read_file, read_file_strict};
pub use writer::write_file;
