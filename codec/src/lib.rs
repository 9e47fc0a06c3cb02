//! # hvq-codec
//!
//! The facade of hvq: load a hierarchical VQ-VAE whose levels share one codebook, encode images
//! into token grids (one per level, finest to coarsest) or into scalable `.hvq` files, and decode
//! any level back to a full-size image — on the CPU or on a GPU through wgpu.
//!
//! The `hvq` command-line tool is built on this API in its own crate, `hvq-cli` (`codec/cli/`).
//!
//! ## A walk-through
//!
//! ```
//! use hvq_codec::{Backend, Codec, LevelSelection, RgbImage};
//! use hvq_spec::{ModelConfig, random_weights};
//!
//! # fn main() -> Result<(), hvq_codec::CodecError> {
//! // A model: here tiny random weights; in practice `Codec::from_weight_bytes(&std::fs::read(path)?)`
//! // or `Codec::default_model()`.
//! let weights = random_weights(&ModelConfig::tiny(), 1).expect("tiny config is valid");
//! let codec = Codec::builder(weights).backend(Backend::Cpu).build()?;
//!
//! // Any size works: the image is edge-padded to the coarsest stride and cropped back on decode.
//! let pixels: Vec<u8> = (0..37 * 29 * 3).map(|i| (i * 7 % 256) as u8).collect();
//! let image = RgbImage::new(37, 29, pixels)?;
//!
//! // Tokens of every level (0 = finest). The tiny model has strides 2, 4, 8.
//! let tokens = codec.encode(&image, LevelSelection::All)?;
//! assert_eq!(tokens.levels(), vec![0, 1, 2]);
//! assert_eq!(tokens.level(2).unwrap().width, 5); // 37 pixels → padded to 40 → 40 / 8
//!
//! // Any level decodes alone to the original size: the coarse grid is a cheap thumbnail.
//! let thumb = codec.decode(tokens.level(2).unwrap(), tokens.width, tokens.height)?;
//! assert_eq!((thumb.width(), thumb.height()), (37, 29));
//!
//! // A scalable file: coarsest level first, so any prefix on a chunk boundary decodes.
//! let file = codec.encode_to_hvq(&image, &[0, 2])?;
//! let best = codec.decode_hvq(&file, None)?; // the finest level present
//! assert_eq!(best.level, 0);
//! let info = hvq_codec::inspect(&file)?;
//! let coarse_prefix = &file[..file.len() - info.levels[1].bytes];
//! assert_eq!(codec.decode_hvq(coarse_prefix, None)?.level, 2);
//! # Ok(())
//! # }
//! ```
//!
//! In async code (a browser, or anywhere the wgpu backend is driven by an executor) use the
//! `*_async` methods and [`CodecBuilder::build_async`]; the blocking ones above exist on native
//! targets only and wrap them with `pollster`.
//!
//! ## Backends
//!
//! [`Backend::Auto`] (the default) asks wgpu for an adapter and falls back to the CPU backend when
//! there is none, logging why through the `log` crate; [`Codec::backend`] says which one runs.
//! [`Backend::Wgpu`] fails instead of falling back.
//!
//! ## Smaller files: rate–distortion encoding
//!
//! [`CodecBuilder::rate_distortion`] with a weight `λ > 0` makes every encode of that codec choose,
//! at each position, among the [`RD_CANDIDATES`] codebook entries nearest its latent the one with
//! the least `distance + λ · bits` under the model's priors and context model
//! ([`hvq_format::choose_levels`]), instead of the nearest one. The distance is the energy of the
//! move in the outputs of the level decoder's first convolution, so among entries equally near in
//! latent space the one the decoder sees least wins. Files get smaller for a little
//! quality and any reader decodes them; the tokens are no longer the quantizer's, so leave it at 0
//! (the default) for tokenizing. The latents come from the backend, the candidate search runs on the
//! CPU.
//!
//! ## Limits
//!
//! [`Limits`] bound image sizes, `.hvq` file sizes and token counts; they are checked before
//! anything of that size is allocated (including before an image file's pixels are decoded by
//! [`RgbImage::decode`]). It is `hvq_format::Limits`, re-exported: the value set with
//! [`CodecBuilder::limits`] is the one the codec's `.hvq` reader checks too, so a file and the
//! image it holds are refused by the same limit.
//!
//! ## Cargo features
//!
//! - `wgpu` (default): the wgpu backend. Without it the crate is CPU-only and [`Backend::Wgpu`]
//!   returns [`CodecError::WgpuNotCompiled`].
//! - `parallel` (default): multi-threaded CPU backend and batch encoding (rayon). Off for wasm32.
//! - `default-model` (default): embed `codec/models/default.safetensors` for
//!   [`Codec::default_model`]. The build script embeds the file only when it exists at build
//!   time, so the workspace builds before a model is trained; such a build (or one without the
//!   feature) returns [`CodecError::NoDefaultModel`]. Check with [`has_default_model`].
//!
//! ## Errors
//!
//! Every fallible call returns [`CodecError`]; its variants say which calls return them.
#![deny(missing_docs)]

mod backend;
mod codec;
mod error;
mod file;
mod model;
mod options;
mod rate;
mod rgb;
mod tiling;

pub use codec::{Codec, CodecBuilder, DecodedImage, Tokens};
pub use error::{CodecError, Result};
pub use file::{FileInfo, LevelInfo, inspect, inspect_with, is_hvq};
pub use hvq_format::Limits;
pub use model::{default_model_bytes, has_default_model, load_weights};
pub use options::{Backend, BackendKind, LevelSelection, UnknownBackend};
pub use rate::RD_CANDIDATES;
pub use rgb::{DecodeOptions, JpegCut, RgbImage};
pub use tiling::{Progress, Tiling};

pub use hvq_format::{FormatError, Priors};
pub use hvq_spec::{ModelConfig, SpecError, TokenGrid, Weights};
