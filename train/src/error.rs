//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in training, evaluation and export.
///
/// Split by whose fault it is: bad input (data, config, weight files), the environment
/// (I/O, missing device), and the libraries underneath (libtorch, the spec crate).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// Reading or writing a file failed.
    #[error("I/O error on `{path}`: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An image file could not be decoded (returned by the data loader, which skips it with a warning).
    #[error("cannot decode image `{path}`: {source}")]
    ImageDecode {
        /// The image file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: image::ImageError,
    },
    /// A data folder does not exist or holds no usable image.
    #[error("data folder `{path}` {reason}")]
    EmptyData {
        /// The folder.
        path: PathBuf,
        /// What is wrong ("does not exist", "holds no JPEG or PNG image", ...).
        reason: String,
    },
    /// A training/evaluation configuration value is invalid.
    #[error("bad config: field `{field}`: {reason}")]
    BadConfig {
        /// The offending field (dotted TOML path).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A TOML config file does not parse.
    #[error("config file `{path}` does not parse: {source}")]
    ConfigParse {
        /// The config file.
        path: PathBuf,
        /// The TOML error, with line and column.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// The LPIPS weight file is absent.
    #[error("LPIPS weights not found at `{path}` (see shared/data/README.md, or set `lpips_path`)")]
    MissingLpips {
        /// The path looked at.
        path: PathBuf,
    },
    /// libtorch reported an error.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A model config or weight file failed validation.
    #[error(transparent)]
    Spec(#[from] hvq_spec::SpecError),
    /// CUDA was asked for but is not usable here.
    #[error("CUDA requested but not available: {reason}")]
    CudaUnavailable {
        /// Why (library not found, no device, ...).
        reason: String,
    },
    /// A checkpoint does not belong to this run (different model, optimizer or shapes).
    #[error("checkpoint `{path}` does not match this run: {reason}")]
    CheckpointMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
}

impl TrainError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io { path: path.into(), source }
    }

    /// A bad-config error.
    pub fn bad_config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        TrainError::BadConfig { field: field.into(), reason: reason.into() }
    }
}
