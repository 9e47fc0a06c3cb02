//! Evaluation of a weight file on an image folder (DESIGN.md §3): per level L1 in pixel
//! and normalized units, PSNR, MS-SSIM, LPIPS-Alex; codebook usage per level and the
//! entries used by all levels (the seed paper's Table 2).

use std::path::{Path, PathBuf};

use hvq_spec::Weights;
use serde::Serialize;
use tch::{Device, Kind, Tensor, nn};

use crate::TrainError;
use crate::data::{DataConfig, Dataset, load_image_f32};
use crate::export::load_into_varstore;
use crate::lpips::Lpips;
use crate::metrics;
use crate::model::Hvq;

/// Mean metrics of one level over the evaluated images.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LevelMetrics {
    /// Level (0 = finest).
    pub level: usize,
    /// Token grid stride.
    pub stride: usize,
    /// Mean absolute error in `[0, 1]` pixel units.
    pub l1: f64,
    /// Mean absolute error in the model's normalized units (the paper's L1).
    pub l1_normalized: f64,
    /// PSNR in dB (peak 1).
    pub psnr: f64,
    /// MS-SSIM (None when an image is smaller than MS-SSIM needs).
    pub ms_ssim: Option<f64>,
    /// LPIPS-Alex (None when no LPIPS model was given).
    pub lpips_alex: Option<f64>,
    /// Distinct codebook entries this level used over all images.
    pub codebook_usage: usize,
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// The weight file.
    pub weights: PathBuf,
    /// The image folder.
    pub data: PathBuf,
    /// Number of images.
    pub images: usize,
    /// Codebook size.
    pub codebook_size: usize,
    /// Per level, finest first.
    pub levels: Vec<LevelMetrics>,
    /// Entries used by every level.
    pub used_by_all_levels: usize,
}

/// Builds a model holding `weights` on `device`.
pub fn load_model(weights: &Weights, device: Device) -> Result<(nn::VarStore, Hvq), TrainError> {
    let vs = nn::VarStore::new(device);
    let model = Hvq::new(&vs.root(), weights.config());
    load_into_varstore(&vs, weights)?;
    Ok((vs, model))
}

/// Encodes `x01` `[1, 3, H, W]` (edge-padded to the coarsest stride) and decodes every level;
/// returns per level the tokens and the cropped, clamped reconstruction in `[0, 1]`.
pub fn reconstruct(model: &Hvq, x01: &Tensor) -> Vec<(Tensor, Tensor)> {
    tch::no_grad(|| {
        let (_, _, h, w) = x01.size4().expect("[1, 3, H, W]");
        let s = model.config().coarsest_stride() as i64;
        let (ph, pw) = ((h + s - 1) / s * s - h, (w + s - 1) / s * s - w);
        let xp = x01.replication_pad2d([0, pw, 0, ph]);
        let zs = model.level_latents(&model.normalize(&xp));
        zs.iter()
            .enumerate()
            .map(|(l, z)| {
                let tokens = model.nearest(&model.project(z));
                let y = model.denormalize(&model.decode(l, &model.lookup(&tokens)));
                (tokens, y.narrow(2, 0, h).narrow(3, 0, w))
            })
            .collect()
    })
}

/// Evaluates `weights` on every image of `data_dir`.
pub fn evaluate(
    weights_path: &Path,
    data_dir: &Path,
    lpips: Option<&Lpips>,
    device: Device,
) -> Result<EvalReport, TrainError> {
    let weights = crate::export::read_weights(weights_path)?;
    let cfg = weights.config().clone();
    let (_vs, model) = load_model(&weights, device)?;
    let ds = Dataset::open(
        data_dir,
        &DataConfig {
            val_count: 0,
            ..DataConfig::default()
        },
    )?;
    let n = cfg.codebook_size as i64;
    let std = Tensor::from_slice(&cfg.std)
        .view([1, 3, 1, 1])
        .to_device(device);
    let mut sums = vec![LevelMetrics::default(); cfg.levels];
    let mut used: Vec<Tensor> = (0..cfg.levels)
        .map(|_| Tensor::zeros([n], (Kind::Bool, device)))
        .collect();
    let mut ms_ok = true;
    for path in ds.train() {
        let x = load_image_f32(path)?.unsqueeze(0).to_device(device);
        check_attention_size(&cfg, &x)?;
        for (l, (tokens, y)) in reconstruct(&model, &x).into_iter().enumerate() {
            let m = &mut sums[l];
            m.l1 += metrics::l1(&y, &x)?;
            m.l1_normalized += ((&y - &x).abs() / &std)
                .mean(Kind::Double)
                .double_value(&[]);
            m.psnr += metrics::psnr(&y, &x)?;
            match metrics::ms_ssim(&y, &x) {
                Ok(v) => *m.ms_ssim.get_or_insert(0.0) += v,
                Err(TrainError::ImageTooSmall { .. }) => ms_ok = false,
                Err(e) => return Err(e),
            }
            if let Some(lp) = lpips {
                let d = tch::no_grad(|| lp.f_forward(&y, &x))?
                    .mean(Kind::Double)
                    .double_value(&[]);
                *m.lpips_alex.get_or_insert(0.0) += d;
            }
            used[l] = used[l].logical_or(&tokens.reshape([-1]).bincount(None::<Tensor>, n).gt(0));
        }
    }
    let count = ds.train().len() as f64;
    let mut all = Tensor::ones([n], (Kind::Bool, device));
    for (l, m) in sums.iter_mut().enumerate() {
        m.level = l;
        m.stride = cfg.level_stride(l);
        m.l1 /= count;
        m.l1_normalized /= count;
        m.psnr /= count;
        m.ms_ssim = m.ms_ssim.filter(|_| ms_ok).map(|v| v / count);
        m.lpips_alex = m.lpips_alex.map(|v| v / count);
        m.codebook_usage = used[l].sum(Kind::Int64).int64_value(&[]) as usize;
        all = all.logical_and(&used[l]);
    }
    Ok(EvalReport {
        weights: weights_path.to_path_buf(),
        data: data_dir.to_path_buf(),
        images: ds.train().len(),
        codebook_size: cfg.codebook_size,
        levels: sums,
        used_by_all_levels: all.sum(Kind::Int64).int64_value(&[]) as usize,
    })
}

/// Largest attention matrix (bytes, f32) evaluation will allocate.
const MAX_ATTENTION_BYTES: u64 = 4 << 30;

/// Refuses images whose full attention at the finest grid would not fit in memory
/// (a model with mid attention at a fine stride on a large image).
fn check_attention_size(cfg: &hvq_spec::ModelConfig, x: &Tensor) -> Result<(), TrainError> {
    if !cfg.mid_attention {
        return Ok(());
    }
    let (_, _, h, w) = x.size4()?;
    let f = cfg.finest_stride() as u64;
    let positions = (h as u64).div_ceil(f) * (w as u64).div_ceil(f);
    let bytes = positions * positions * 4;
    if bytes > MAX_ATTENTION_BYTES {
        return Err(TrainError::TooLarge {
            what: format!("attention matrix (bytes) for a {w}x{h} image"),
            limit: MAX_ATTENTION_BYTES,
            got: bytes,
        });
    }
    Ok(())
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_string(), |x| format!("{x:.digits$}"))
}

/// The report as a Markdown table.
pub fn markdown(r: &EvalReport) -> String {
    let mut s = format!(
        "Evaluation of `{}` on `{}` ({} images)\n\n| level | stride | L1 [0,1] | L1 (normalized) | PSNR dB | MS-SSIM | LPIPS-Alex | codebook usage |\n|---|---|---|---|---|---|---|---|\n",
        r.weights.display(),
        r.data.display(),
        r.images
    );
    for m in &r.levels {
        s += &format!(
            "| {} | {} | {:.4} | {:.4} | {:.2} | {} | {} | {} / {} |\n",
            m.level,
            m.stride,
            m.l1,
            m.l1_normalized,
            m.psnr,
            opt(m.ms_ssim, 4),
            opt(m.lpips_alex, 4),
            m.codebook_usage,
            r.codebook_size
        );
    }
    s += &format!(
        "\nEntries used by all levels: {} / {}\n",
        r.used_by_all_levels, r.codebook_size
    );
    s
}
