//! Loading weights: from bytes, or the default model embedded at build time.

use hvq_format::Priors;
use hvq_spec::{WeightLimits, Weights, meta};

use crate::{CodecError, Result};

/// Parses and validates a safetensors weight file (as written by `hvq-train export`).
///
/// Errors: [`CodecError::Weights`] naming the first problem (missing tensor, wrong shape, version…).
pub fn load_weights(bytes: &[u8]) -> Result<Weights> {
    Weights::from_safetensors(bytes, &WeightLimits::default()).map_err(CodecError::Weights)
}

#[cfg(hvq_embedded_model)]
static DEFAULT_MODEL: Option<&[u8]> = Some(include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/default.safetensors"
)));
#[cfg(not(hvq_embedded_model))]
static DEFAULT_MODEL: Option<&[u8]> = None;

/// The bytes of the default model embedded in this build.
///
/// Errors: [`CodecError::NoDefaultModel`] when the crate was built without the `default-model`
/// feature or before `codec/models/default.safetensors` existed.
pub fn default_model_bytes() -> Result<&'static [u8]> {
    DEFAULT_MODEL.ok_or(CodecError::NoDefaultModel)
}

/// Whether this build embeds a default model.
pub fn has_default_model() -> bool {
    DEFAULT_MODEL.is_some()
}

/// The entropy-coding priors of a model: its `hvq.priors` metadata when present, else uniform.
pub(crate) fn priors_of(weights: &Weights) -> Result<Priors> {
    let cfg = weights.config();
    match weights.metadata().get(meta::PRIORS) {
        Some(s) => {
            let p = Priors::from_metadata_string(s).map_err(CodecError::Priors)?;
            // Priors exported for another model shape would make every file undecodable: refuse early.
            if p.levels() != cfg.levels || p.codebook_size() != cfg.codebook_size {
                return Err(CodecError::PriorsShape {
                    priors_levels: p.levels(),
                    priors_codebook: p.codebook_size(),
                    model_levels: cfg.levels,
                    model_codebook: cfg.codebook_size,
                });
            }
            match weights.metadata().get(meta::CONTEXT) {
                Some(c) => {
                    let context = hvq_format::ContextModel::from_metadata_string(c)
                        .map_err(CodecError::Priors)?;
                    p.with_context(context).map_err(CodecError::Priors)
                }
                None => Ok(p),
            }
        }
        None => Priors::uniform(cfg.levels, cfg.codebook_size).map_err(CodecError::Priors),
    }
}
