//! The one weight-name schema (DESIGN.md §4): every tensor a model of a given
//! [`ModelConfig`] owns, with its hierarchical name and shape, in a fixed order.
//!
//! The trainer creates its variables from this list and the codec loader asks for exactly
//! these names, so both agree by construction.

use crate::ModelConfig;
use crate::graph::ModelGraph;

/// One expected tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Dotted path, e.g. `encoder.down.0.block.1.conv1.weight`.
    pub name: String,
    /// Expected shape (convolutions OIHW).
    pub shape: Vec<usize>,
}

/// Every tensor of a model with configuration `cfg`, in canonical order: the parameters of
/// its [`ModelGraph`], which declares them as it walks the architecture.
pub fn tensors(cfg: &ModelConfig) -> Vec<TensorSpec> {
    ModelGraph::new(cfg).params
}

/// Total parameter count of a model with configuration `cfg`.
pub fn parameter_count(cfg: &ModelConfig) -> usize {
    tensors(cfg)
        .iter()
        .map(|t| t.shape.iter().product::<usize>())
        .sum()
}
