//! Moving weights between a tch [`nn::VarStore`] and the schema-checked [`Weights`] of
//! `hvq-spec`, and writing inference weight files with provenance (DESIGN.md §4).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use hvq_spec::{ModelConfig, StoreDtype, Weights, meta};
use tch::{Device, Kind, Tensor, nn};

use crate::TrainError;

/// Where a weight file came from; stored in its metadata.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// Optimizer steps the weights were trained for (0 for random weights).
    pub trained_steps: u64,
    /// Training data description (usually the data folder).
    pub data: String,
    /// The command line that produced the file.
    pub command: String,
}

impl Provenance {
    /// Metadata entries (`hvq.trained_steps`, `hvq.data`, `hvq.source_commit`, `hvq.command`).
    pub fn metadata(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                meta::TRAINED_STEPS.to_string(),
                self.trained_steps.to_string(),
            ),
            (meta::DATA.to_string(), self.data.clone()),
            (meta::SOURCE_COMMIT.to_string(), source_commit()),
            (meta::COMMAND.to_string(), self.command.clone()),
        ])
    }
}

/// `git rev-parse HEAD` of the working directory, or `unknown` outside a git checkout.
pub fn source_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

/// A tensor's values as row-major f32 on the CPU.
pub fn to_vec_f32(t: &Tensor) -> Result<Vec<f32>, TrainError> {
    let flat = t
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous()
        .view([-1]);
    Ok(Vec::<f32>::try_from(&flat)?)
}

/// Collects every variable of `vs` into schema-checked [`Weights`].
pub fn weights_from_varstore(
    vs: &nn::VarStore,
    cfg: &ModelConfig,
    metadata: BTreeMap<String, String>,
) -> Result<Weights, TrainError> {
    let mut tensors = HashMap::new();
    for (name, t) in vs.variables() {
        let shape = t.size().iter().map(|&d| d as usize).collect();
        tensors.insert(
            name,
            hvq_spec::Tensor {
                shape,
                data: to_vec_f32(&t)?,
            },
        );
    }
    Ok(Weights::from_tensors(cfg.clone(), tensors, metadata)?)
}

/// Copies `weights` into the variables of `vs` (built for the same config).
pub fn load_into_varstore(vs: &nn::VarStore, weights: &Weights) -> Result<(), TrainError> {
    let vars = vs.variables();
    if vars.len() != weights.iter().count() {
        return Err(TrainError::Spec(hvq_spec::SpecError::InvalidConfig {
            field: "levels",
            reason: format!(
                "model has {} variables, weights {}",
                vars.len(),
                weights.iter().count()
            ),
        }));
    }
    tch::no_grad(|| -> Result<(), TrainError> {
        for (name, mut var) in vars {
            let src = weights.get(&name).ok_or_else(|| {
                TrainError::Spec(hvq_spec::SpecError::MissingTensor {
                    tensor: name.clone(),
                })
            })?;
            let shape: Vec<i64> = src.shape.iter().map(|&d| d as i64).collect();
            if var.size() != shape {
                return Err(TrainError::Spec(hvq_spec::SpecError::ShapeMismatch {
                    tensor: name,
                    expected: var.size().iter().map(|&d| d as usize).collect(),
                    got: src.shape.clone(),
                }));
            }
            let t = Tensor::from_slice(&src.data)
                .view(shape.as_slice())
                .to_device(var.device());
            var.copy_(&t);
        }
        Ok(())
    })
}

/// Reads and validates a weight file.
pub fn read_weights(path: &Path) -> Result<Weights, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    Ok(Weights::from_safetensors(&bytes, &Default::default())?)
}

/// Writes a weight file atomically (temp file + rename).
pub fn write_weights(path: &Path, weights: &Weights, dtype: StoreDtype) -> Result<(), TrainError> {
    write_atomic(path, &weights.to_safetensors(dtype))
}

/// Writes `bytes` to a sibling temp file, fsyncs it, renames it over `path` and fsyncs the
/// folder, so a reader (or a run killed or a machine lost mid-write) never sees a half-written
/// file. A failed write removes the temp file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    use std::io::Write;
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// [`write_atomic`] of what `write` streams into the (buffered) temp file, for files too large
/// to hold in memory; returns what `write` returns.
///
/// Errors: [`TrainError::Io`] naming the temp file when `write` or the flush fails, `path` when
/// the rename fails.
pub fn write_atomic_with<T>(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<T>,
) -> Result<T, TrainError> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let written = (|| -> std::io::Result<T> {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        let out = write(&mut w)?;
        w.flush()?;
        w.get_ref().sync_all()?;
        Ok(out)
    })();
    let out = match written {
        Ok(out) => out,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(TrainError::io(&tmp, e));
        }
    };
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))?;
    // The rename itself is durable only once the folder is.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(out)
}

/// Keys a `KEY=VALUE` provenance entry may not set: the loader and the codec own them.
const RESERVED_KEYS: [&str; 4] = [meta::FORMAT, meta::CONFIG, meta::FINGERPRINT, meta::PRIORS];

/// `weights` with extra provenance entries `hvq.KEY=VALUE` added (or replacing the exporter's,
/// e.g. `hvq.command` to record the training command rather than the export command).
///
/// # Errors
/// [`TrainError::BadConfig`] for an entry without `=`, a key outside `hvq.`, or a reserved key.
pub fn with_extra_metadata(weights: Weights, entries: &[String]) -> Result<Weights, TrainError> {
    if entries.is_empty() {
        return Ok(weights);
    }
    let mut metadata = weights.metadata().clone();
    for entry in entries {
        let bad = |why: &str| TrainError::bad_config("--meta", format!("`{entry}`: {why}"));
        let (key, value) = entry
            .split_once('=')
            .ok_or_else(|| bad("expected KEY=VALUE"))?;
        if !key.starts_with("hvq.") || key.len() <= 4 {
            return Err(bad("keys start with `hvq.`"));
        }
        if RESERVED_KEYS.contains(&key) {
            return Err(bad("this key is written by the exporter itself"));
        }
        metadata.insert(key.to_string(), value.to_string());
    }
    let cfg = weights.config().clone();
    let tensors = weights
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Weights::from_tensors(cfg, tensors, metadata)?)
}

/// Inference weights from a training checkpoint (its `model.*` tensors and config).
pub fn checkpoint_to_weights(path: &Path, command: &str) -> Result<Weights, TrainError> {
    let (tensors, meta) = crate::checkpoint::load(path)?;
    let cfg = ModelConfig::from_json(&meta.model_json)?;
    let mut out = HashMap::new();
    for (name, t) in &tensors {
        if let Some(n) = name.strip_prefix("model.") {
            let shape = t.size().iter().map(|&d| d as usize).collect();
            out.insert(
                n.to_string(),
                hvq_spec::Tensor {
                    shape,
                    data: to_vec_f32(t)?,
                },
            );
        }
    }
    let prov = Provenance {
        trained_steps: meta.prior_steps + meta.step,
        data: path.display().to_string(),
        command: command.to_string(),
    };
    Ok(Weights::from_tensors(cfg, out, prov.metadata())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_metadata_is_added_and_bad_entries_are_refused() {
        let w = hvq_spec::random_weights(&ModelConfig::tiny(), 1).unwrap();
        let fp = w.fingerprint();
        let entries = [
            "hvq.machine=2-core EPYC, 2 h".to_string(),
            "hvq.command=a=b".into(),
        ];
        let out = with_extra_metadata(w.clone(), &entries).unwrap();
        assert_eq!(out.metadata()["hvq.machine"], "2-core EPYC, 2 h");
        assert_eq!(out.metadata()["hvq.command"], "a=b");
        assert_eq!(out.fingerprint(), fp);
        for bad in [
            "no-equals",
            "machine=x",
            "hvq.=x",
            "hvq.config={}",
            "hvq.priors=x",
        ] {
            let err = with_extra_metadata(w.clone(), &[bad.to_string()]).unwrap_err();
            assert!(matches!(err, TrainError::BadConfig { .. }), "{bad}: {err}");
        }
    }
}
