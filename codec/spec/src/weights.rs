//! The weight file (DESIGN.md §4): safetensors with hvq metadata, every tensor checked
//! against the [`schema`](crate::schema) by name, shape and dtype before it is used.

use std::collections::{BTreeMap, HashMap};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::{ModelConfig, SpecError, WEIGHT_FORMAT_VERSION, fingerprint, meta, schema};

/// One dense f32 tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Shape (convolutions OIHW).
    pub shape: Vec<usize>,
    /// Values, `shape.iter().product()` of them.
    pub data: Vec<f32>,
}

/// Storage precision of a written weight file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreDtype {
    /// 32-bit floats.
    F32,
    /// 16-bit IEEE floats (half the size; tokens may differ slightly from f32).
    F16,
}

/// Limits checked before any tensor is allocated.
#[derive(Debug, Clone, Copy)]
pub struct WeightLimits {
    /// Largest accepted file, in bytes.
    pub max_file_bytes: usize,
    /// Largest accepted parameter count.
    pub max_parameters: usize,
}

impl Default for WeightLimits {
    fn default() -> Self {
        // The paper preset is 116 M parameters (465 MB in f32); leave headroom for bigger configs.
        WeightLimits {
            max_file_bytes: 2 << 30,
            max_parameters: 400_000_000,
        }
    }
}

/// A complete, validated set of model weights.
///
/// Holding a `Weights` proves every schema tensor is present with the right shape:
/// [`Weights::tensor`] cannot fail for a name of [`schema::tensors`].
#[derive(Debug, Clone)]
pub struct Weights {
    config: ModelConfig,
    tensors: HashMap<String, Tensor>,
    metadata: BTreeMap<String, String>,
    fingerprint: [u8; 32],
}

impl Weights {
    /// Builds weights from named tensors, checking them against the schema of `config`.
    ///
    /// `metadata` is extra provenance (keys of [`meta`]); format and config keys are
    /// (re)written on save.
    pub fn from_tensors(
        config: ModelConfig,
        mut tensors: HashMap<String, Tensor>,
        metadata: BTreeMap<String, String>,
    ) -> Result<Self, SpecError> {
        config.validate()?;
        let expected = schema::tensors(&config);
        for spec in &expected {
            let t = tensors
                .get(&spec.name)
                .ok_or_else(|| SpecError::MissingTensor {
                    tensor: spec.name.clone(),
                })?;
            if t.shape != spec.shape {
                return Err(SpecError::ShapeMismatch {
                    tensor: spec.name.clone(),
                    expected: spec.shape.clone(),
                    got: t.shape.clone(),
                });
            }
            if t.data.len() != spec.shape.iter().product::<usize>() {
                return Err(SpecError::ShapeMismatch {
                    tensor: spec.name.clone(),
                    expected: spec.shape.clone(),
                    got: vec![t.data.len()],
                });
            }
            if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
                return Err(SpecError::NonFinite {
                    tensor: spec.name.clone(),
                    index: i,
                });
            }
        }
        if tensors.len() != expected.len() {
            let known: std::collections::HashSet<&str> =
                expected.iter().map(|s| s.name.as_str()).collect();
            let mut extra: Vec<&String> = tensors
                .keys()
                .filter(|k| !known.contains(k.as_str()))
                .collect();
            extra.sort();
            return Err(SpecError::UnexpectedTensor {
                tensor: extra[0].clone(),
            });
        }
        tensors.shrink_to_fit();
        let fp = fingerprint(&config, &tensors["quantizer.codebook"].data);
        Ok(Weights {
            config,
            tensors,
            metadata,
            fingerprint: fp,
        })
    }

    /// Parses and validates a safetensors weight file.
    pub fn from_safetensors(bytes: &[u8], limits: &WeightLimits) -> Result<Self, SpecError> {
        if bytes.len() > limits.max_file_bytes {
            return Err(SpecError::TooLarge {
                what: "file bytes",
                limit: limits.max_file_bytes,
                got: bytes.len(),
            });
        }
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(SpecError::Safetensors)?;
        let metadata: BTreeMap<String, String> = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let version = metadata
            .get(meta::FORMAT)
            .ok_or(SpecError::MissingMetadata { key: meta::FORMAT })?;
        if version.parse::<u32>().ok() != Some(WEIGHT_FORMAT_VERSION) {
            return Err(SpecError::UnsupportedVersion {
                got: version.clone(),
                supported: WEIGHT_FORMAT_VERSION,
            });
        }
        let json = metadata
            .get(meta::CONFIG)
            .ok_or(SpecError::MissingMetadata { key: meta::CONFIG })?;
        let config = ModelConfig::from_json(json)?;
        let params = schema::parameter_count(&config);
        if params > limits.max_parameters {
            return Err(SpecError::TooLarge {
                what: "parameters",
                limit: limits.max_parameters,
                got: params,
            });
        }
        let st = SafeTensors::deserialize(bytes).map_err(SpecError::Safetensors)?;
        let mut tensors = HashMap::new();
        // Walk the schema (not the file) so the first problem reported is in canonical order.
        for spec in schema::tensors(&config) {
            let view = st
                .tensor(&spec.name)
                .map_err(|_| SpecError::MissingTensor {
                    tensor: spec.name.clone(),
                })?;
            if view.shape() != spec.shape.as_slice() {
                return Err(SpecError::ShapeMismatch {
                    tensor: spec.name.clone(),
                    expected: spec.shape.clone(),
                    got: view.shape().to_vec(),
                });
            }
            let data = decode_view(&spec.name, &view)?;
            tensors.insert(
                spec.name,
                Tensor {
                    shape: view.shape().to_vec(),
                    data,
                },
            );
        }
        if st.len() != tensors.len() {
            let mut extra: Vec<String> = st
                .names()
                .into_iter()
                .filter(|n| !tensors.contains_key(*n))
                .map(str::to_string)
                .collect();
            extra.sort();
            return Err(SpecError::UnexpectedTensor {
                tensor: extra.remove(0),
            });
        }
        Self::from_tensors(config, tensors, metadata)
    }

    /// Serializes to safetensors with the DESIGN.md §4 metadata.
    pub fn to_safetensors(&self, dtype: StoreDtype) -> Vec<u8> {
        let mut metadata: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        metadata.insert(meta::FORMAT.into(), WEIGHT_FORMAT_VERSION.to_string());
        metadata.insert(meta::CONFIG.into(), self.config.to_json());
        // The fingerprint hint must describe the stored values, which f16 storage rounds.
        let stored_fingerprint = match dtype {
            StoreDtype::F32 => self.fingerprint,
            StoreDtype::F16 => {
                let codebook: Vec<f32> = self.tensors["quantizer.codebook"]
                    .data
                    .iter()
                    .map(|v| half::f16::from_f32(*v).to_f32())
                    .collect();
                fingerprint(&self.config, &codebook)
            }
        };
        metadata.insert(
            meta::FINGERPRINT.into(),
            crate::fingerprint_hex(&stored_fingerprint),
        );
        let specs = schema::tensors(&self.config);
        let buffers: Vec<(String, Vec<usize>, Vec<u8>)> = specs
            .into_iter()
            .map(|s| {
                let t = &self.tensors[&s.name];
                let bytes: Vec<u8> = match dtype {
                    StoreDtype::F32 => t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    StoreDtype::F16 => t
                        .data
                        .iter()
                        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                        .collect(),
                };
                (s.name, t.shape.clone(), bytes)
            })
            .collect();
        let st_dtype = match dtype {
            StoreDtype::F32 => Dtype::F32,
            StoreDtype::F16 => Dtype::F16,
        };
        let views: Vec<(String, TensorView<'_>)> = buffers
            .iter()
            .map(|(n, shape, b)| {
                (
                    n.clone(),
                    TensorView::new(st_dtype, shape.clone(), b)
                        .expect("sizes match by construction"),
                )
            })
            .collect();
        safetensors::serialize(views, Some(metadata)).expect("in-memory serialization cannot fail")
    }

    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The model fingerprint (see [`crate::fingerprint`]).
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// Provenance and other metadata as stored in the file.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// A tensor by schema name, or `None` for a name outside the schema.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// A tensor by schema name.
    ///
    /// # Panics
    /// When `name` is not in the schema of this model's config: that is a bug in the
    /// caller (model code asking for a tensor the schema does not define), not bad input.
    pub fn tensor(&self, name: &str) -> &Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("tensor `{name}` is not in the schema of this model"))
    }

    /// Iterates over all tensors (no fixed order).
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.tensors.iter()
    }
}

fn decode_view(name: &str, view: &TensorView<'_>) -> Result<Vec<f32>, SpecError> {
    let raw = view.data();
    match view.dtype() {
        Dtype::F32 => Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()),
        Dtype::F16 => Ok(raw
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()),
        other => Err(SpecError::UnsupportedDtype {
            tensor: name.to_string(),
            got: format!("{other:?}"),
        }),
    }
}

/// Deterministic pseudo-random weights for a config (tests, benchmarks, conformance).
///
/// Convolution weights are scaled by `1/sqrt(fan_in)` so activations stay O(1) through
/// deep stacks; norms start at weight 1, bias 0; the codebook is uniform in ±1.
pub fn random_weights(config: &ModelConfig, seed: u64) -> Result<Weights, SpecError> {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // SplitMix64: tiny, well-distributed, and reproducible across platforms.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let mut tensors = HashMap::new();
    for spec in schema::tensors(config) {
        let n: usize = spec.shape.iter().product();
        let is_norm = spec.name.contains("norm");
        let data: Vec<f32> = if is_norm && spec.name.ends_with(".weight") {
            (0..n).map(|_| 1.0 + 0.1 * next()).collect()
        } else if spec.name.ends_with(".bias") {
            (0..n).map(|_| 0.05 * next()).collect()
        } else if spec.name == "quantizer.codebook" {
            (0..n).map(|_| next()).collect()
        } else {
            let fan_in: usize = spec.shape[1..].iter().product();
            let scale = (3.0 / fan_in as f32).sqrt();
            (0..n).map(|_| scale * next()).collect()
        };
        tensors.insert(
            spec.name,
            Tensor {
                shape: spec.shape,
                data,
            },
        );
    }
    Weights::from_tensors(config.clone(), tensors, BTreeMap::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Weights {
        random_weights(&ModelConfig::tiny(), 7).unwrap()
    }

    #[test]
    fn f32_round_trip_is_exact() {
        let w = tiny();
        let back =
            Weights::from_safetensors(&w.to_safetensors(StoreDtype::F32), &WeightLimits::default())
                .unwrap();
        assert_eq!(back.fingerprint(), w.fingerprint());
        for (name, t) in w.iter() {
            assert_eq!(back.tensor(name), t);
        }
    }

    #[test]
    fn f16_round_trip_is_close() {
        let w = tiny();
        let back =
            Weights::from_safetensors(&w.to_safetensors(StoreDtype::F16), &WeightLimits::default())
                .unwrap();
        for (name, t) in w.iter() {
            for (a, b) in t.data.iter().zip(&back.tensor(name).data) {
                // f16 keeps 11 significant bits: relative error ≤ 2^-11.
                assert!(
                    (a - b).abs() <= a.abs() * 4.9e-4 + 1e-7,
                    "{name}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn stored_fingerprint_hint_matches_the_stored_values() {
        let w = tiny();
        for dtype in [StoreDtype::F32, StoreDtype::F16] {
            let back =
                Weights::from_safetensors(&w.to_safetensors(dtype), &WeightLimits::default())
                    .unwrap();
            assert_eq!(
                back.metadata().get(meta::FINGERPRINT),
                Some(&crate::fingerprint_hex(&back.fingerprint())),
                "{dtype:?}"
            );
        }
    }

    #[test]
    fn truncated_files_are_refused_at_every_length() {
        let bytes = tiny().to_safetensors(StoreDtype::F32);
        for cut in (0..bytes.len()).step_by(97) {
            assert!(
                Weights::from_safetensors(&bytes[..cut], &WeightLimits::default()).is_err(),
                "cut {cut}"
            );
        }
    }

    fn rewrite(
        w: &Weights,
        edit: impl FnOnce(&mut HashMap<String, Tensor>, &mut BTreeMap<String, String>),
    ) -> Vec<u8> {
        let mut t: HashMap<String, Tensor> =
            w.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut m = BTreeMap::new();
        m.insert(meta::FORMAT.to_string(), "1".to_string());
        m.insert(meta::CONFIG.to_string(), w.config().to_json());
        edit(&mut t, &mut m);
        let bufs: Vec<(String, Vec<usize>, Vec<u8>)> = t
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    v.shape,
                    v.data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = bufs
            .iter()
            .map(|(k, s, b)| {
                (
                    k.clone(),
                    TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
                )
            })
            .collect();
        safetensors::serialize(views, Some(m.into_iter().collect())).unwrap()
    }

    #[test]
    fn bad_files_name_the_problem() {
        let w = tiny();
        let lim = WeightLimits::default();
        let missing = rewrite(&w, |t, _| {
            t.remove("quantizer.proj.bias");
        });
        assert!(matches!(Weights::from_safetensors(&missing, &lim),
            Err(SpecError::MissingTensor { tensor }) if tensor == "quantizer.proj.bias"));
        let shape = rewrite(&w, |t, _| {
            t.insert(
                "quantizer.codebook".into(),
                Tensor {
                    shape: vec![2, 2],
                    data: vec![0.0; 4],
                },
            );
        });
        assert!(matches!(Weights::from_safetensors(&shape, &lim),
            Err(SpecError::ShapeMismatch { tensor, .. }) if tensor == "quantizer.codebook"));
        let extra = rewrite(&w, |t, _| {
            t.insert(
                "zzz.extra".into(),
                Tensor {
                    shape: vec![1],
                    data: vec![0.0],
                },
            );
        });
        assert!(matches!(Weights::from_safetensors(&extra, &lim),
            Err(SpecError::UnexpectedTensor { tensor }) if tensor == "zzz.extra"));
        let version = rewrite(&w, |_, m| {
            m.insert(meta::FORMAT.into(), "99".into());
        });
        assert!(matches!(
            Weights::from_safetensors(&version, &lim),
            Err(SpecError::UnsupportedVersion { .. })
        ));
        let nan = rewrite(&w, |t, _| {
            t.get_mut("encoder.conv_in.bias").unwrap().data[1] = f32::NAN;
        });
        assert!(matches!(
            Weights::from_safetensors(&nan, &lim),
            Err(SpecError::NonFinite { index: 1, .. })
        ));
        let small = WeightLimits {
            max_file_bytes: 100,
            ..lim
        };
        assert!(matches!(
            Weights::from_safetensors(&missing, &small),
            Err(SpecError::TooLarge { .. })
        ));
        assert!(matches!(
            Weights::from_safetensors(b"garbage", &lim),
            Err(SpecError::Safetensors(_))
        ));
    }
}
