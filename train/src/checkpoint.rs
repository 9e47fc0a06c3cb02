//! Training checkpoints: model variables, Adam moments, codebook state, step and RNG
//! state in one safetensors file, written atomically (temp file + rename).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use tch::{Kind, Tensor};

use crate::TrainError;
use crate::export::{to_vec_f32, write_atomic};

/// Scalar state saved beside the tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointMeta {
    /// Completed optimizer steps.
    pub step: u64,
    /// The model config JSON (a resumed run must have the same).
    pub model_json: String,
    /// Seed of the run's ChaCha RNG.
    pub rng_seed: [u8; 32],
    /// Word position of that RNG.
    pub rng_word_pos: u128,
    /// The learning-rate schedule's horizon (total steps) the run was trained towards; `None`
    /// in checkpoints written before it was recorded.
    pub horizon: Option<u64>,
    /// Steps the run's starting weights (`init.from`) had been trained for before it; 0 for a
    /// run from random weights and in checkpoints written before it was recorded.
    pub prior_steps: u64,
}

const STEP: &str = "hvq.ckpt.step";
const MODEL: &str = "hvq.config";
const RNG_SEED: &str = "hvq.ckpt.rng_seed";
const RNG_POS: &str = "hvq.ckpt.rng_word_pos";
const HORIZON: &str = "hvq.ckpt.horizon";
const PRIOR_STEPS: &str = "hvq.ckpt.prior_steps";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Writes a checkpoint atomically. Tensors must be f32 or i64.
pub fn save(
    path: &Path,
    tensors: &[(String, Tensor)],
    meta: &CheckpointMeta,
) -> Result<(), TrainError> {
    let mut buffers = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let (dtype, bytes): (Dtype, Vec<u8>) = if t.kind() == Kind::Int64 {
            let v = Vec::<i64>::try_from(&t.to_device(tch::Device::Cpu).contiguous().view([-1]))?;
            (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect())
        } else {
            (
                Dtype::F32,
                to_vec_f32(t)?
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            )
        };
        buffers.push((name.clone(), dtype, shape, bytes));
    }
    let views: Vec<(String, TensorView<'_>)> = buffers
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                TensorView::new(*d, s.clone(), b).expect("sizes match by construction"),
            )
        })
        .collect();
    let mut md = BTreeMap::from([
        (STEP.to_string(), meta.step.to_string()),
        (MODEL.to_string(), meta.model_json.clone()),
        (RNG_SEED.to_string(), hex(&meta.rng_seed)),
        (RNG_POS.to_string(), meta.rng_word_pos.to_string()),
    ]);
    if let Some(h) = meta.horizon {
        md.insert(HORIZON.to_string(), h.to_string());
    }
    if meta.prior_steps > 0 {
        md.insert(PRIOR_STEPS.to_string(), meta.prior_steps.to_string());
    }
    let md: HashMap<String, String> = md.into_iter().collect();
    let bytes =
        safetensors::serialize(views, Some(md)).map_err(|e| mismatch(path, e.to_string()))?;
    write_keeping_previous(path, &bytes)
}

/// The file the previous checkpoint is kept under: `checkpoint.safetensors` →
/// `checkpoint.prev.safetensors`.
pub fn previous_path(path: &Path) -> std::path::PathBuf {
    let stem = path
        .file_stem()
        .map_or_else(Default::default, |s| s.to_os_string());
    let mut name = stem;
    name.push(".prev");
    if let Some(ext) = path.extension() {
        name.push(".");
        name.push(ext);
    }
    path.with_file_name(name)
}

/// Writes `bytes` to `path` with [`write_atomic`], first keeping the file it replaces as
/// [`previous_path`]. The old file is hard-linked aside, not moved, so `path` exists at every
/// moment and a crash or a full disk at any point leaves a loadable checkpoint.
fn write_keeping_previous(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    if path.is_file() {
        let prev = previous_path(path);
        let _ = std::fs::remove_file(&prev);
        std::fs::hard_link(path, &prev)
            .or_else(|_| std::fs::copy(path, &prev).map(|_| ()))
            .map_err(|e| TrainError::io(&prev, e))?;
    }
    write_atomic(path, bytes)
}

fn mismatch(path: &Path, reason: String) -> TrainError {
    TrainError::CheckpointMismatch {
        path: path.to_path_buf(),
        reason,
    }
}

/// Reads a checkpoint: its tensors (CPU) by name and its scalar state.
pub fn load(path: &Path) -> Result<(HashMap<String, Tensor>, CheckpointMeta), TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| mismatch(path, e.to_string()))?;
    let md = header.metadata().clone().unwrap_or_default();
    let get = |k: &str| {
        md.get(k)
            .cloned()
            .ok_or_else(|| mismatch(path, format!("metadata `{k}` missing")))
    };
    let meta = CheckpointMeta {
        step: get(STEP)?
            .parse()
            .map_err(|_| mismatch(path, "bad step".into()))?,
        model_json: get(MODEL)?,
        rng_seed: unhex(&get(RNG_SEED)?).ok_or_else(|| mismatch(path, "bad RNG seed".into()))?,
        rng_word_pos: get(RNG_POS)?
            .parse()
            .map_err(|_| mismatch(path, "bad RNG position".into()))?,
        horizon: match md.get(HORIZON) {
            Some(h) => Some(
                h.parse()
                    .map_err(|_| mismatch(path, format!("bad horizon `{h}`")))?,
            ),
            None => None,
        },
        prior_steps: match md.get(PRIOR_STEPS) {
            Some(n) => n
                .parse()
                .map_err(|_| mismatch(path, format!("bad prior steps `{n}`")))?,
            None => 0,
        },
    };
    let st = SafeTensors::deserialize(&bytes).map_err(|e| mismatch(path, e.to_string()))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let raw = view.data();
        let t = match view.dtype() {
            Dtype::F32 => {
                let v: Vec<f32> = raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Tensor::from_slice(&v)
            }
            Dtype::I64 => {
                let v: Vec<i64> = raw
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect();
                Tensor::from_slice(&v)
            }
            other => {
                return Err(mismatch(
                    path,
                    format!("tensor `{name}` has dtype {other:?}"),
                ));
            }
        };
        out.insert(name, t.view(shape.as_slice()));
    }
    Ok((out, meta))
}
