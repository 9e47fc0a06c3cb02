//! # hvq-spec
//!
//! The contracts that the trainer (`hvq-train`, libtorch) and the runtime (`hvq-codec`)
//! must agree on, in one small dependency-light crate:
//!
//! - [`ModelConfig`]: the serializable model description with the presets `paper`, `small`, `tiny`;
//! - [`graph::ModelGraph`]: the architecture as data, the programs every backend runs;
//! - [`flops::ModelFlops`]: the FLOPs of those programs per image, forward and backward;
//! - [`schema::tensors`]: the weight-name schema (the graph's parameters), every tensor name and shape;
//! - [`fingerprint`]: the model fingerprint that `.hvq` files use to name their codebook;
//! - the weight-file metadata keys ([`meta`]);
//! - the parameters of the model's ops that every backend takes ([`op_params`]).
//!
//! ```
//! use hvq_spec::{ModelConfig, schema};
//! let cfg = ModelConfig::small();
//! cfg.validate().unwrap();
//! assert_eq!(cfg.level_stride(0), 4);     // 256×256 → 64×64 tokens
//! assert_eq!(cfg.coarsest_stride(), 16);  // … and 16×16 at the coarsest level
//! let names: Vec<_> = schema::tensors(&cfg).into_iter().map(|t| t.name).collect();
//! assert!(names.contains(&"quantizer.codebook".to_string()));
//! ```
#![deny(missing_docs)]

mod config;
pub mod flops;
pub mod graph;
mod input;
pub mod op_params;
pub mod schema;
mod tensor;
pub mod weights;

pub use config::{ModelConfig, PRESETS, Strategy};
pub use input::InputError;
pub use tensor::{FeatureMap, TokenGrid};
pub use weights::{StoreDtype, Tensor, WeightLimits, Weights, random_weights};

use sha2::{Digest, Sha256};

/// Metadata keys of a weight file (safetensors `__metadata__`), DESIGN.md §4.
pub mod meta {
    /// Weight-file format version; see [`super::WEIGHT_FORMAT_VERSION`].
    pub const FORMAT: &str = "hvq.format";
    /// The [`super::ModelConfig`] as JSON.
    pub const CONFIG: &str = "hvq.config";
    /// Optimizer steps the weights were trained for.
    pub const TRAINED_STEPS: &str = "hvq.trained_steps";
    /// Description of the training data.
    pub const DATA: &str = "hvq.data";
    /// Git commit of the code that trained the weights.
    pub const SOURCE_COMMIT: &str = "hvq.source_commit";
    /// The command line that trained the weights.
    pub const COMMAND: &str = "hvq.command";
    /// Machine and wall time of the training run.
    pub const MACHINE: &str = "hvq.machine";
    /// The model fingerprint as hex, for information (the loader recomputes it).
    pub const FINGERPRINT: &str = "hvq.fingerprint";
    /// Optional entropy-coding priors (JSON), written by export.
    pub const PRIORS: &str = "hvq.priors";
    /// Optional context model for coding 2 (`hvqc1:` string), written by `hvq-priors --context`.
    pub const CONTEXT: &str = "hvq.context";
}

/// The weight-file format version this crate describes.
pub const WEIGHT_FORMAT_VERSION: u32 = 1;

/// Errors of configuration and weight-file parsing and validation.
///
/// All are the input's fault (a bad config or weight file) except [`SpecError::TooLarge`],
/// which is a configured limit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The bytes are not a readable safetensors file (truncated, bad header, bad offsets).
    #[error("not a readable safetensors file: {0}")]
    Safetensors(#[source] safetensors::SafeTensorError),
    /// A required metadata key is absent (the file was not written by `hvq-train export`).
    #[error("weight file lacks metadata key `{key}`")]
    MissingMetadata {
        /// The key.
        key: &'static str,
    },
    /// The weight-file format version is not one this build reads.
    #[error(
        "weight file format version `{got}` is not supported (this build reads version {supported})"
    )]
    UnsupportedVersion {
        /// The version found.
        got: String,
        /// The version supported.
        supported: u32,
    },
    /// A tensor the schema requires is absent.
    #[error("weight file lacks tensor `{tensor}`")]
    MissingTensor {
        /// Schema name of the tensor.
        tensor: String,
    },
    /// A tensor outside the schema is present (the file is for another architecture).
    #[error("weight file has tensor `{tensor}`, which the model config does not define")]
    UnexpectedTensor {
        /// Name of the tensor.
        tensor: String,
    },
    /// A tensor has the wrong shape.
    #[error("tensor `{tensor}` has shape {got:?}, expected {expected:?}")]
    ShapeMismatch {
        /// Schema name of the tensor.
        tensor: String,
        /// Shape the schema requires.
        expected: Vec<usize>,
        /// Shape found.
        got: Vec<usize>,
    },
    /// A tensor is stored in a dtype other than f32 or f16.
    #[error("tensor `{tensor}` is stored as {got}; only F32 and F16 are accepted")]
    UnsupportedDtype {
        /// Schema name of the tensor.
        tensor: String,
        /// The dtype found.
        got: String,
    },
    /// A tensor holds NaN or infinity.
    #[error("tensor `{tensor}` holds a non-finite value at flat index {index}")]
    NonFinite {
        /// Schema name of the tensor.
        tensor: String,
        /// Flat index of the first bad value.
        index: usize,
    },
    /// A size is over its configured limit.
    #[error("weight file {what} {got} exceed the limit of {limit}")]
    TooLarge {
        /// What was measured.
        what: &'static str,
        /// The limit.
        limit: usize,
        /// The measured size.
        got: usize,
    },
    /// A configuration field is out of range or inconsistent with another.
    #[error("invalid model config: field `{field}`: {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The config JSON does not parse as a [`ModelConfig`].
    #[error("model config JSON does not parse: {0}")]
    ConfigJson(#[source] serde_json::Error),
    /// A name (preset, strategy) is not one of the known ones.
    #[error("unknown {what} `{got}`")]
    UnknownName {
        /// What kind of name.
        what: &'static str,
        /// The name given.
        got: String,
    },
}

impl SpecError {
    /// The variant's name (`"Safetensors"`, …): a stable, machine-readable kind for
    /// bindings and logs, so callers need not parse `Debug` text.
    pub fn kind(&self) -> &'static str {
        match self {
            SpecError::Safetensors(..) => "Safetensors",
            SpecError::MissingMetadata { .. } => "MissingMetadata",
            SpecError::UnsupportedVersion { .. } => "UnsupportedVersion",
            SpecError::MissingTensor { .. } => "MissingTensor",
            SpecError::UnexpectedTensor { .. } => "UnexpectedTensor",
            SpecError::ShapeMismatch { .. } => "ShapeMismatch",
            SpecError::UnsupportedDtype { .. } => "UnsupportedDtype",
            SpecError::NonFinite { .. } => "NonFinite",
            SpecError::TooLarge { .. } => "TooLarge",
            SpecError::InvalidConfig { .. } => "InvalidConfig",
            SpecError::ConfigJson(..) => "ConfigJson",
            SpecError::UnknownName { .. } => "UnknownName",
        }
    }
}

/// The 32-byte model fingerprint: SHA-256 over a domain tag, the canonical config JSON and
/// the codebook as little-endian f32 (after any f16 → f32 widening).
///
/// Two weight files that would map an image to different tokens because their configs or
/// codebooks differ have different fingerprints.
pub fn fingerprint(cfg: &ModelConfig, codebook: &[f32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"hvq-model-fingerprint-v1\0");
    let json = cfg.to_json();
    h.update((json.len() as u64).to_le_bytes());
    h.update(json.as_bytes());
    for v in codebook {
        h.update(v.to_le_bytes());
    }
    h.finalize().into()
}

/// Lower-case hex of a fingerprint.
pub fn fingerprint_hex(fp: &[u8; 32]) -> String {
    fp.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_round_trip_through_json() {
        for name in PRESETS {
            let cfg = ModelConfig::preset(name).unwrap();
            cfg.validate().unwrap();
            assert_eq!(ModelConfig::from_json(&cfg.to_json()).unwrap(), cfg);
        }
    }

    #[test]
    fn paper_preset_parameter_count_is_pinned() {
        // The paper reports about 97 M; this layout has 116.3 M because each coarser level's
        // decoder repeats a full 512-channel stage (ResBlock + up-sampling) per extra level.
        let n = schema::parameter_count(&ModelConfig::paper());
        assert_eq!(n, 116_302_473);
    }

    #[test]
    fn schema_names_are_unique() {
        for strategy in Strategy::ALL {
            for levels in 1..=3 {
                let cfg = ModelConfig {
                    strategy,
                    levels,
                    ..ModelConfig::tiny()
                };
                let t = schema::tensors(&cfg);
                let set: std::collections::HashSet<_> = t.iter().map(|t| &t.name).collect();
                assert_eq!(set.len(), t.len());
            }
        }
    }

    #[test]
    fn only_learned_strategies_own_downconvs() {
        for strategy in Strategy::ALL {
            let cfg = ModelConfig {
                strategy,
                ..ModelConfig::tiny()
            };
            let n = schema::tensors(&cfg)
                .iter()
                .filter(|t| t.name.starts_with("levels."))
                .count();
            assert_eq!(n > 0, strategy.has_downconv(), "{strategy:?}");
        }
    }

    #[test]
    fn coarser_decoders_have_one_more_stage_per_level() {
        let cfg = ModelConfig::small();
        for level in 0..cfg.levels {
            assert_eq!(
                cfg.decoder_stage_mults(level).len(),
                cfg.channel_mult.len() + level
            );
        }
    }

    #[test]
    fn bad_configs_name_their_field() {
        let cases: Vec<(ModelConfig, &str)> = vec![
            (
                ModelConfig {
                    levels: 0,
                    ..ModelConfig::tiny()
                },
                "levels",
            ),
            (
                ModelConfig {
                    norm_groups: 3,
                    ..ModelConfig::tiny()
                },
                "norm_groups",
            ),
            (
                ModelConfig {
                    codebook_size: 0,
                    ..ModelConfig::tiny()
                },
                "codebook_size",
            ),
            (
                ModelConfig {
                    std: [0.5, 0.0, 0.5],
                    ..ModelConfig::tiny()
                },
                "std",
            ),
            (
                ModelConfig {
                    channel_mult: vec![],
                    ..ModelConfig::tiny()
                },
                "channel_mult",
            ),
        ];
        for (cfg, field) in cases {
            match cfg.validate() {
                Err(SpecError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected InvalidConfig({field}), got {other:?}"),
            }
        }
        assert!(matches!(
            ModelConfig::from_json("{}"),
            Err(SpecError::ConfigJson(_))
        ));
        assert!(matches!(
            ModelConfig::preset("huge"),
            Err(SpecError::UnknownName { .. })
        ));
    }

    #[test]
    fn fingerprint_depends_on_config_and_codebook() {
        let cfg = ModelConfig::tiny();
        let cb = vec![0.25f32; cfg.codebook_size * cfg.codebook_dim];
        let a = fingerprint(&cfg, &cb);
        let mut cb2 = cb.clone();
        cb2[7] = 0.5;
        assert_ne!(a, fingerprint(&cfg, &cb2));
        let cfg2 = ModelConfig {
            strategy: Strategy::Sampling,
            ..cfg.clone()
        };
        assert_ne!(a, fingerprint(&cfg2, &cb));
        assert_eq!(fingerprint_hex(&a).len(), 64);
    }
}
