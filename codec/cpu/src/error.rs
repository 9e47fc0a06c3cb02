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
    /// An image, level or token grid the model cannot take ([`CpuModel`](crate::CpuModel)'s
    /// methods, [`ops::gather_codes`](crate::ops::gather_codes), [`ops::pad_edge`](crate::ops::pad_edge)):
    /// the checks every backend shares.
    #[error(transparent)]
    Input(#[from] hvq_spec::InputError),
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

impl CpuError {
    /// The variant's name (`"ShapeMismatch"`, …): a stable, machine-readable kind for
    /// bindings and logs, so callers need not parse `Debug` text.
    pub fn kind(&self) -> &'static str {
        match self {
            CpuError::ShapeMismatch { .. } => "ShapeMismatch",
            CpuError::Unsupported { .. } => "Unsupported",
            // The input checks keep their own names ("LevelOutOfRange", …), as before they moved.
            CpuError::Input(e) => e.kind(),
            CpuError::BadLatents { .. } => "BadLatents",
        }
    }
}
