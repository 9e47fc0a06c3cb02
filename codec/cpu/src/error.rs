//! The crate's one error type.

/// Everything the CPU backend refuses, with the numbers that say why.
///
/// Shape errors from the [`ops`](crate::ops) functions are a caller's bug or a bad weight
/// file; the image and token errors come from [`CpuModel`](crate::CpuModel) and are the
/// input's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CpuError {
    /// An operand of an op has a shape that does not fit the others (any [`ops`](crate::ops) function).
    #[error("{op}: {operand} has shape {got:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The op that refused.
        op: &'static str,
        /// Which operand is wrong.
        operand: &'static str,
        /// The shape that would fit (`0` where any value fits).
        expected: Vec<usize>,
        /// The shape given.
        got: Vec<usize>,
    },
    /// An op parameter is outside what the op supports (even kernel, stride other than 1 or 2,
    /// zero groups, a map too small for its kernel).
    #[error("{op}: parameter `{param}` = {got} is not supported ({reason})")]
    Unsupported {
        /// The op that refused.
        op: &'static str,
        /// The parameter.
        param: &'static str,
        /// Its value.
        got: usize,
        /// What is accepted.
        reason: &'static str,
    },
    /// An image has the wrong number of channels ([`CpuModel::encode`](crate::CpuModel::encode),
    /// [`CpuModel::encode_latents`](crate::CpuModel::encode_latents)).
    #[error("image has {got} channels, expected {expected}")]
    WrongChannels {
        /// Channels the model takes.
        expected: usize,
        /// Channels given.
        got: usize,
    },
    /// An image is empty or its size is not a multiple of the model's coarsest stride
    /// (pad it with [`ops::pad_edge`](crate::ops::pad_edge) first).
    #[error(
        "image of {height}×{width} is not a positive multiple of {multiple} in both dimensions"
    )]
    BadImageSize {
        /// Rows given.
        height: usize,
        /// Columns given.
        width: usize,
        /// The required multiple.
        multiple: usize,
    },
    /// A level index is not one the model has ([`CpuModel::encode`](crate::CpuModel::encode),
    /// [`CpuModel::decode`](crate::CpuModel::decode)).
    #[error("level {level} does not exist; the model has {levels} levels")]
    LevelOutOfRange {
        /// The level asked for.
        level: usize,
        /// Levels of the model.
        levels: usize,
    },
    /// A token grid's `tokens` length is not `height * width`, or a dimension is zero
    /// ([`CpuModel::decode`](crate::CpuModel::decode), [`ops::gather_codes`](crate::ops::gather_codes)).
    #[error("token grid of {height}×{width} holds {got} tokens")]
    GridSize {
        /// Rows claimed.
        height: usize,
        /// Columns claimed.
        width: usize,
        /// Tokens present.
        got: usize,
    },
    /// A token is not an index into the codebook ([`CpuModel::decode`](crate::CpuModel::decode),
    /// [`ops::gather_codes`](crate::ops::gather_codes)).
    #[error(
        "token {token} at position {position} is out of range for a codebook of {codebook_size}"
    )]
    TokenOutOfRange {
        /// Row-major position in the grid.
        position: usize,
        /// The token value.
        token: u32,
        /// Entries in the codebook.
        codebook_size: usize,
    },
    /// The latents given to [`CpuModel::tokens`](crate::CpuModel::tokens) are not this model's
    /// (wrong count or wrong channel count).
    #[error("expected {expected} latent maps of {channels} channels, got {got} maps")]
    BadLatents {
        /// Maps expected at most.
        expected: usize,
        /// Channels each must have.
        channels: usize,
        /// Maps given.
        got: usize,
    },
}

/// The model-level input checks are [`hvq_spec`]'s, shared with every backend.
impl From<hvq_spec::InputError> for CpuError {
    fn from(e: hvq_spec::InputError) -> Self {
        use hvq_spec::InputError as I;
        match e {
            I::WrongChannels { expected, got } => CpuError::WrongChannels { expected, got },
            I::BadImageSize {
                height,
                width,
                multiple,
            } => CpuError::BadImageSize {
                height,
                width,
                multiple,
            },
            I::LevelOutOfRange { level, levels } => CpuError::LevelOutOfRange { level, levels },
            I::GridSize { height, width, got } => CpuError::GridSize { height, width, got },
            I::TokenOutOfRange {
                position,
                token,
                entries,
            } => CpuError::TokenOutOfRange {
                position,
                token,
                codebook_size: entries,
            },
        }
    }
}

impl CpuError {
    /// The variant's name (`"ShapeMismatch"`, …): a stable, machine-readable kind for
    /// bindings and logs, so callers need not parse `Debug` text.
    pub fn kind(&self) -> &'static str {
        match self {
            CpuError::ShapeMismatch { .. } => "ShapeMismatch",
            CpuError::Unsupported { .. } => "Unsupported",
            CpuError::WrongChannels { .. } => "WrongChannels",
            CpuError::BadImageSize { .. } => "BadImageSize",
            CpuError::LevelOutOfRange { .. } => "LevelOutOfRange",
            CpuError::GridSize { .. } => "GridSize",
            CpuError::TokenOutOfRange { .. } => "TokenOutOfRange",
            CpuError::BadLatents { .. } => "BadLatents",
        }
    }
}
