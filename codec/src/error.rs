//! The one error type of the crate.

use hvq_spec::SpecError;

/// Everything that can go wrong in `hvq-codec`.
///
/// Variants are grouped by whose fault it is: the input (image, file, weights), a limit, a
/// mismatch between a file and the loaded model, or the machine (backend). Errors of the
/// sub-crates are wrapped as sources, so `{:#}`-style chains print the full story.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The weight file is invalid (returned by [`crate::load_weights`] and the builder constructors).
    #[error("invalid weight file")]
    Weights(#[source] SpecError),
    /// The `hvq.priors` metadata of the weights does not parse (returned when building a [`crate::Codec`]).
    #[error("the weights' entropy-coding priors (`hvq.priors` metadata) are invalid")]
    Priors(#[source] hvq_format::FormatError),
    /// The `hvq.priors` metadata describes another number of levels or codebook size than the model.
    #[error(
        "the weights' priors are for {priors_levels} levels × {priors_codebook} codes, \
         but the model has {model_levels} levels × {model_codebook} codes"
    )]
    PriorsShape {
        /// Levels in the priors.
        priors_levels: usize,
        /// Codebook size in the priors.
        priors_codebook: usize,
        /// Levels of the model.
        model_levels: usize,
        /// Codebook size of the model.
        model_codebook: usize,
    },
    /// No default model was embedded in this build (returned by [`crate::Codec::default_model`]).
    #[error(
        "no default model is embedded in this build (feature `default-model` off, or \
         `codec/models/default.safetensors` absent at build time); pass a weight file instead"
    )]
    NoDefaultModel,
    /// The bytes are not an image any enabled `image` format reads (returned by [`crate::RgbImage::decode`]).
    #[error("not a readable image")]
    ImageDecode(#[source] image::ImageError),
    /// A JPEG file ends before its end-of-image marker: it was cut short, e.g. by an interrupted
    /// download or copy (returned by [`crate::RgbImage::decode`]). JPEG decoders fill the missing
    /// part with grey and report no error, so the file is refused instead of tokenized.
    #[error(
        "the JPEG file is cut short: its {len} bytes end {cut}, before the end-of-image marker"
    )]
    TruncatedJpeg {
        /// Length of the file.
        len: usize,
        /// Where it was cut.
        cut: crate::JpegCut,
    },
    /// Writing an image failed (returned by [`crate::RgbImage::encode_as`]).
    #[error("could not encode the image")]
    ImageEncode(#[source] image::ImageError),
    /// An image has zero width or height (returned by encode entry points and [`crate::RgbImage::new`]).
    #[error("image is empty ({width}×{height})")]
    EmptyImage {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// A pixel buffer's length does not match its size (returned by [`crate::RgbImage::new`] and
    /// [`crate::RgbImage::from_rgba8`]).
    #[error("pixel buffer holds {got} bytes, but {width}×{height}×{channels} needs {expected}")]
    BufferSize {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Bytes per pixel of the layout.
        channels: u32,
        /// Bytes needed.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// An image is larger than [`crate::Limits::max_pixels`] (checked before any allocation).
    #[error("image of {width}×{height} pixels exceeds the limit of {limit} pixels")]
    ImageTooLarge {
        /// Width in pixels.
        width: u64,
        /// Height in pixels.
        height: u64,
        /// The limit in pixels.
        limit: u64,
    },
    /// An image is within [`crate::Limits::max_pixels`] but not once padded to the model's
    /// coarsest stride (a 1-pixel-wide strip becomes 16 pixels wide): refused before any
    /// allocation, because the work and memory follow the padded size.
    #[error(
        "image of {width}×{height} pixels is {padded_width}×{padded_height} once padded to the \
         model's {stride}-pixel grid, which exceeds the limit of {limit} pixels"
    )]
    PaddedImageTooLarge {
        /// Width in pixels.
        width: u64,
        /// Height in pixels.
        height: u64,
        /// Padded width.
        padded_width: u64,
        /// Padded height.
        padded_height: u64,
        /// The model's coarsest stride in pixels.
        stride: u64,
        /// The limit in pixels.
        limit: u64,
    },
    /// A `.hvq` file is larger than [`crate::Limits::max_file_bytes`].
    #[error("file of {got} bytes exceeds the limit of {limit} bytes")]
    FileTooLarge {
        /// File size.
        got: u64,
        /// The limit.
        limit: u64,
    },
    /// A level was asked for that the model or the file does not have (returned by the encode
    /// entry points for a selected level, [`crate::Codec::decode`] for a grid's level and
    /// [`crate::Codec::decode_hvq`] for a level the file lacks). The same concept, and name, as
    /// `hvq_spec::InputError::LevelOutOfRange` (inside the backends' errors) and
    /// `hvq_format::FormatError::LevelOutOfRange`.
    #[error("level {level} is not available (available: {available:?})")]
    LevelOutOfRange {
        /// The level asked for.
        level: usize,
        /// The levels there are: the model's, or for a file the levels it holds.
        available: Vec<usize>,
    },
    /// An empty level list was given to an encode entry point.
    #[error("no levels selected")]
    NoLevelsSelected,
    /// A token grid does not fit the image size and the model (returned by [`crate::Codec::decode`]).
    #[error(
        "token grid of level {level} is {got_width}×{got_height} (with {tokens} tokens), but a \
         {image_width}×{image_height} image needs {expected_width}×{expected_height}"
    )]
    GridMismatch {
        /// Level of the grid.
        level: usize,
        /// Grid width given.
        got_width: usize,
        /// Grid height given.
        got_height: usize,
        /// Number of tokens given.
        tokens: usize,
        /// Grid width the image size implies.
        expected_width: usize,
        /// Grid height the image size implies.
        expected_height: usize,
        /// Image width.
        image_width: u32,
        /// Image height.
        image_height: u32,
    },
    /// A token is not a codebook index (returned by [`crate::Codec::decode`]).
    #[error(
        "token {token} at index {index} is out of range for a codebook of {codebook_size} entries"
    )]
    TokenOutOfRange {
        /// The token value.
        token: u32,
        /// Its position in the grid.
        index: usize,
        /// Codebook size.
        codebook_size: usize,
    },
    /// A `.hvq` file names another model than the loaded one (returned by [`crate::Codec::decode_hvq`]).
    #[error(
        "the file was encoded with model {file}, but the loaded model is {model}; \
         decode it with the weights it was made with"
    )]
    FingerprintMismatch {
        /// Fingerprint in the file, hex.
        file: String,
        /// Fingerprint of the loaded model, hex.
        model: String,
    },
    /// A `.hvq` file holds no complete level (e.g. cut inside its first chunk).
    #[error(
        "the file holds no complete level ({got} bytes): it is truncated before the first level ends"
    )]
    NoCompleteLevel {
        /// File size.
        got: usize,
    },
    /// The `.hvq` file is malformed, truncated, corrupt or of an unsupported version.
    #[error(transparent)]
    Format(hvq_format::FormatError),
    /// The CPU backend refused its input.
    #[error("CPU backend failed")]
    Cpu(#[source] hvq_cpu::CpuError),
    /// The wgpu backend failed (also: [`crate::Backend::Wgpu`] asked for and no adapter found).
    #[cfg(feature = "wgpu")]
    #[error("wgpu backend failed")]
    Gpu(#[source] hvq_wgpu::GpuError),
    /// [`crate::Backend::Auto`] found only a software wgpu adapter (e.g. lavapipe), which is slower
    /// than the CPU backend; only logged as the reason for falling back, never returned by a call.
    #[error(
        "the only wgpu adapter, `{adapter}`, is a software rasterizer (the CPU backend is faster)"
    )]
    SoftwareAdapter {
        /// The adapter's name.
        adapter: String,
    },
    /// [`crate::CodecBuilder::rate_distortion`] was given a weight that is negative or not finite.
    #[error("the rate-distortion weight must be finite and at least 0, not {lambda}")]
    RateWeight {
        /// The weight given.
        lambda: f64,
    },
    /// [`crate::Backend::Wgpu`] was asked for, but this build has no wgpu backend (feature `wgpu` off).
    #[error("the wgpu backend is not compiled into this build (feature `wgpu` is off)")]
    WgpuNotCompiled,
}

impl CodecError {
    /// The variant's name (`"Weights"`, …): a stable, machine-readable kind for
    /// bindings and logs, so callers need not parse `Debug` text.
    pub fn kind(&self) -> &'static str {
        match self {
            CodecError::Weights(..) => "Weights",
            CodecError::Priors(..) => "Priors",
            CodecError::PriorsShape { .. } => "PriorsShape",
            CodecError::NoDefaultModel => "NoDefaultModel",
            CodecError::ImageDecode(..) => "ImageDecode",
            CodecError::TruncatedJpeg { .. } => "TruncatedJpeg",
            CodecError::ImageEncode(..) => "ImageEncode",
            CodecError::EmptyImage { .. } => "EmptyImage",
            CodecError::BufferSize { .. } => "BufferSize",
            CodecError::ImageTooLarge { .. } => "ImageTooLarge",
            CodecError::PaddedImageTooLarge { .. } => "PaddedImageTooLarge",
            CodecError::FileTooLarge { .. } => "FileTooLarge",
            CodecError::LevelOutOfRange { .. } => "LevelOutOfRange",
            CodecError::NoLevelsSelected => "NoLevelsSelected",
            CodecError::GridMismatch { .. } => "GridMismatch",
            CodecError::TokenOutOfRange { .. } => "TokenOutOfRange",
            CodecError::FingerprintMismatch { .. } => "FingerprintMismatch",
            CodecError::NoCompleteLevel { .. } => "NoCompleteLevel",
            CodecError::Format(..) => "Format",
            CodecError::Cpu(..) => "Cpu",
            #[cfg(feature = "wgpu")]
            CodecError::Gpu(..) => "Gpu",
            CodecError::SoftwareAdapter { .. } => "SoftwareAdapter",
            CodecError::RateWeight { .. } => "RateWeight",
            CodecError::WgpuNotCompiled => "WgpuNotCompiled",
        }
    }

    /// For a variant that wraps another crate's error, that error's kind (`Format` around a
    /// checksum failure → `"ChunkChecksum"`); `None` otherwise. Bindings report
    /// `kind.cause_kind` (`"Format.ChunkChecksum"`).
    pub fn cause_kind(&self) -> Option<&'static str> {
        match self {
            CodecError::Weights(e) => Some(e.kind()),
            CodecError::Priors(e) | CodecError::Format(e) => Some(e.kind()),
            CodecError::Cpu(e) => Some(e.kind()),
            #[cfg(feature = "wgpu")]
            CodecError::Gpu(e) => Some(e.kind()),
            CodecError::ImageDecode(e) | CodecError::ImageEncode(e) => Some(match e {
                image::ImageError::Decoding(_) => "Decoding",
                image::ImageError::Encoding(_) => "Encoding",
                image::ImageError::Parameter(_) => "Parameter",
                image::ImageError::Limits(_) => "Limits",
                image::ImageError::Unsupported(_) => "Unsupported",
                image::ImageError::IoError(_) => "IoError",
            }),
            _ => None,
        }
    }

    /// [`kind`](Self::kind), then `.` and [`cause_kind`](Self::cause_kind) when there is one.
    pub fn kind_path(&self) -> String {
        match self.cause_kind() {
            Some(cause) => format!("{}.{cause}", self.kind()),
            None => self.kind().to_string(),
        }
    }
}

/// Result alias of the crate.
pub type Result<T, E = CodecError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The kinds are the variants' names, as the wasm bindings reported them before (parsed from
    /// `Debug`): nested errors give `Outer.Inner`.
    #[test]
    fn kinds_name_the_variant_and_the_wrapped_one() {
        let cases = [
            (CodecError::NoLevelsSelected, "NoLevelsSelected"),
            (
                CodecError::LevelOutOfRange {
                    level: 3,
                    available: vec![0, 1, 2],
                },
                "LevelOutOfRange",
            ),
            (
                CodecError::ImageTooLarge {
                    width: 1,
                    height: 2,
                    limit: 1,
                },
                "ImageTooLarge",
            ),
            (
                CodecError::Format(hvq_format::FormatError::BadMagic { got: [0; 8] }),
                "Format.BadMagic",
            ),
            (
                CodecError::Cpu(hvq_cpu::CpuError::Input(
                    hvq_spec::InputError::LevelOutOfRange {
                        level: 3,
                        levels: 3,
                    },
                )),
                "Cpu.LevelOutOfRange",
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(err.kind_path(), kind);
            let debug = format!("{err:?}");
            assert!(debug.starts_with(err.kind()), "{debug}");
            if let Some(cause) = err.cause_kind() {
                // A backend's input error sits one level deeper (`Cpu(Input(LevelOutOfRange …`)
                // and keeps its own name as the kind, as the bindings reported it before.
                let inner = debug[err.kind().len() + 1..].trim_start_matches("Input(");
                assert!(inner.starts_with(cause), "{debug}");
            }
        }
    }
}
