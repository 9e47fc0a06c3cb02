//! Conformance vectors: libtorch's outputs for small fixed-seed models on generated
//! images, which every codec backend must reproduce (DESIGN.md §6).
//!
//! Weights come from [`hvq_spec::random_weights`] (a platform-independent RNG), so no
//! libtorch random state is involved and the files are a pure function of this code.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use hvq_spec::{ModelConfig, StoreDtype, Strategy, Weights};
use safetensors::{Dtype, tensor::TensorView};
use serde_json::json;
use tch::{Device, Kind, Tensor, nn};

use crate::TrainError;
use crate::export::{Provenance, load_into_varstore, to_vec_f32, write_atomic, write_weights};
use crate::model::Hvq;

/// Seed of every vector model's weights.
pub const WEIGHT_SEED: u64 = 20261126;

/// One model of the vector set.
#[derive(Debug, Clone)]
pub struct VectorModel {
    /// File stem, e.g. `tiny` or `tiny-sampling`.
    pub name: String,
    /// Its configuration.
    pub config: ModelConfig,
    /// Names of the generated images to run through it.
    pub images: Vec<GeneratedImage>,
    /// Storage dtype of its weight file; f16 files hold f16-representable weights, so the
    /// outputs are exact for them too (and the codec's f16 loading path is exercised).
    pub dtype: StoreDtype,
}

/// A generated test image.
#[derive(Debug, Clone, Copy)]
pub struct GeneratedImage {
    /// Name used in file names.
    pub name: &'static str,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

const GRADIENT: GeneratedImage = GeneratedImage {
    name: "gradient32x32",
    width: 32,
    height: 32,
};
// 37×29 is not a multiple of any coarsest stride: it exercises edge padding and cropping.
const PATTERN: GeneratedImage = GeneratedImage {
    name: "pattern37x29",
    width: 37,
    height: 29,
};
const WIDE: GeneratedImage = GeneratedImage {
    name: "rings48x24",
    width: 48,
    height: 24,
};

/// The vector set: `tiny` on three images, one image per other strategy, and a
/// single-level model.
pub fn vector_models() -> Vec<VectorModel> {
    let tiny = ModelConfig::tiny();
    let mut models = vec![VectorModel {
        name: "tiny".into(),
        config: tiny.clone(),
        images: vec![GRADIENT, PATTERN, WIDE],
        dtype: StoreDtype::F32,
    }];
    for s in [Strategy::Sampling, Strategy::Avgpool, Strategy::Convpool] {
        let name = format!(
            "tiny-{}",
            serde_json::to_value(s)
                .expect("strategy serializes")
                .as_str()
                .unwrap_or("x")
        );
        models.push(VectorModel {
            name,
            config: ModelConfig {
                strategy: s,
                ..tiny.clone()
            },
            images: vec![PATTERN],
            dtype: StoreDtype::F16,
        });
    }
    models.push(VectorModel {
        name: "tiny-single".into(),
        config: ModelConfig { levels: 1, ..tiny },
        images: vec![PATTERN],
        dtype: StoreDtype::F16,
    });
    models
}

/// Pixels of a generated image, u8 RGB planar `[3, H, W]`.
///
/// Smooth gradients plus sharp patterns, so both flat regions and edges are covered.
pub fn generate_image(img: GeneratedImage) -> Vec<u8> {
    let (w, h) = (img.width, img.height);
    let mut out = vec![0u8; 3 * w * h];
    for y in 0..h {
        for x in 0..w {
            let fx = x as f64 / (w - 1) as f64;
            let fy = y as f64 / (h - 1) as f64;
            let (r, g, b) = match img.name {
                "gradient32x32" => (fx, fy, 1.0 - 0.5 * (fx + fy)),
                "pattern37x29" => {
                    let checker = if (x / 4 + y / 4) % 2 == 0 { 0.8 } else { 0.2 };
                    let wave = 0.5 + 0.5 * (fx * 9.0).sin() * (fy * 7.0).cos();
                    (checker, wave, fx * fy)
                }
                _ => {
                    let d = ((fx - 0.5).powi(2) * 4.0 + (fy - 0.5).powi(2)).sqrt();
                    (0.5 + 0.5 * (d * 25.0).cos(), d.min(1.0), 1.0 - fx)
                }
            };
            for (c, v) in [r, g, b].into_iter().enumerate() {
                out[(c * h + y) * w + x] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
    }
    out
}

/// Per-level results of running one image through a model.
#[derive(Debug)]
pub struct ImageOutputs {
    /// Projected latent per level, `[D, h, w]` (on the padded image's grid).
    pub latents: Vec<Tensor>,
    /// Tokens per level, i64 `[h, w]`.
    pub tokens: Vec<Tensor>,
    /// Decoded image per level, `[3, H, W]` in `[0, 1]`, cropped to the original size.
    pub decoded: Vec<Tensor>,
}

/// Runs the inference path of the codec on one `[3, H, W]` u8 image: edge-pad to a
/// multiple of the coarsest stride, normalize, encode, quantize, decode, de-normalize,
/// clamp, crop.
pub fn run_image(model: &Hvq, pixels: &[u8], width: usize, height: usize) -> ImageOutputs {
    tch::no_grad(|| {
        let cfg = model.config();
        let s = cfg.coarsest_stride();
        let (pw, ph) = (
            width.div_ceil(s) * s - width,
            height.div_ceil(s) * s - height,
        );
        let x = Tensor::from_slice(pixels).to_kind(Kind::Float).view([
            1,
            3,
            height as i64,
            width as i64,
        ]) / 255.0;
        let x = x.replication_pad2d([0, pw as i64, 0, ph as i64]);
        let zs = model.level_latents(&model.normalize(&x));
        let mut out = ImageOutputs {
            latents: vec![],
            tokens: vec![],
            decoded: vec![],
        };
        for (l, z) in zs.iter().enumerate() {
            let p = model.project(z);
            let tokens = model.nearest(&p);
            let rgb = model.denormalize(&model.decode(l, &model.lookup(&tokens)));
            let rgb = rgb.narrow(2, 0, height as i64).narrow(3, 0, width as i64);
            out.latents.push(p.squeeze_dim(0));
            out.tokens.push(tokens.squeeze_dim(0));
            out.decoded.push(rgb.squeeze_dim(0));
        }
        out
    })
}

/// Builds a CPU model holding `weights`.
pub fn model_from_weights(weights: &Weights) -> Result<(nn::VarStore, Hvq), TrainError> {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Hvq::new(&vs.root(), weights.config());
    load_into_varstore(&vs, weights)?;
    Ok((vs, model))
}

/// Writes the whole vector set (weights, per-image outputs, manifest) into `dir`.
pub fn export_vectors(dir: &Path, command: &str) -> Result<(), TrainError> {
    let mut manifest = Vec::new();
    for vm in vector_models() {
        let weights = vector_weights(&vm, command)?;
        let weight_file = format!("{}.safetensors", vm.name);
        write_weights(&dir.join(&weight_file), &weights, vm.dtype)?;
        let (_vs, model) = model_from_weights(&weights)?;
        for img in &vm.images {
            let pixels = generate_image(*img);
            let out = run_image(&model, &pixels, img.width, img.height);
            let case_file = format!("{}.{}.safetensors", vm.name, img.name);
            write_case(&dir.join(&case_file), &pixels, img, &out)?;
            let grids: Vec<[i64; 2]> = out
                .tokens
                .iter()
                .map(|t| [t.size()[0], t.size()[1]])
                .collect();
            manifest.push(json!({
                "model": vm.name, "weights": weight_file, "weights_dtype": format!("{:?}", vm.dtype).to_lowercase(), "case": case_file, "image": img.name,
                "width": img.width, "height": img.height, "levels": vm.config.levels,
                "strategy": vm.config.strategy, "token_grids_hw": grids,
                "fingerprint": hvq_spec::fingerprint_hex(&weights.fingerprint()),
            }));
        }
    }
    let doc = json!({ "weight_seed": WEIGHT_SEED, "generator": command, "cases": manifest });
    let text = serde_json::to_string_pretty(&doc).expect("JSON values serialize");
    write_atomic(&dir.join("manifest.json"), text.as_bytes())
}

/// The fixed-seed weights of a vector model, rounded through f16 when stored as f16.
pub fn vector_weights(vm: &VectorModel, command: &str) -> Result<Weights, TrainError> {
    let random = hvq_spec::random_weights(&vm.config, WEIGHT_SEED)?;
    let prov = Provenance {
        trained_steps: 0,
        data: format!("random_weights(seed {WEIGHT_SEED})"),
        command: command.into(),
    };
    let tensors = random
        .iter()
        .map(|(k, v)| {
            let mut v = v.clone();
            if vm.dtype == StoreDtype::F16 {
                v.data
                    .iter_mut()
                    .for_each(|x| *x = half::f16::from_f32(*x).to_f32());
            }
            (k.clone(), v)
        })
        .collect();
    Ok(Weights::from_tensors(
        vm.config.clone(),
        tensors,
        prov.metadata(),
    )?)
}

fn write_case(
    path: &Path,
    pixels: &[u8],
    img: &GeneratedImage,
    out: &ImageOutputs,
) -> Result<(), TrainError> {
    let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = vec![(
        "input".into(),
        Dtype::U8,
        vec![3, img.height, img.width],
        pixels.to_vec(),
    )];
    for l in 0..out.tokens.len() {
        buffers.push(f32_buffer(format!("latent.{l}"), &out.latents[l])?);
        let toks = out.tokens[l].to_kind(Kind::Int);
        let vals = Vec::<i32>::try_from(&toks.contiguous().view([-1]))?;
        let shape = toks.size().iter().map(|&d| d as usize).collect();
        buffers.push((
            format!("tokens.{l}"),
            Dtype::I32,
            shape,
            vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
        buffers.push(f32_buffer(format!("decoded.{l}"), &out.decoded[l])?);
    }
    let views: Vec<(String, TensorView<'_>)> = buffers
        .iter()
        .map(|(n, dt, shape, b)| {
            (
                n.clone(),
                TensorView::new(*dt, shape.clone(), b).expect("sizes match by construction"),
            )
        })
        .collect();
    let meta: HashMap<String, String> =
        BTreeMap::from([("hvq.vector.image".to_string(), img.name.to_string())])
            .into_iter()
            .collect();
    let bytes =
        safetensors::serialize(views, Some(meta)).expect("in-memory serialization cannot fail");
    write_atomic(path, &bytes)
}

fn f32_buffer(
    name: String,
    t: &Tensor,
) -> Result<(String, Dtype, Vec<usize>, Vec<u8>), TrainError> {
    let shape = t.size().iter().map(|&d| d as usize).collect();
    let bytes = to_vec_f32(t)?
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    Ok((name, Dtype::F32, shape, bytes))
}
