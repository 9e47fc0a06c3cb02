//! Evaluation of a weight file on an image folder (DESIGN.md §3): per level L1 in pixel
//! and normalized units, PSNR, MS-SSIM, LPIPS-Alex and LPIPS-VGG; codebook usage and
//! perplexity per level, and how the levels share the codebook ([`crate::sharing`]: the seed
//! paper's Table 2 count, the value chance would give, and token-weighted shares).
//!
//! Images are evaluated whole (edge-padded to the coarsest stride) or, as the paper did, as
//! centre crops ([`EvalOptions::center_crop`]).

use std::path::{Path, PathBuf};

use hvq_spec::Weights;
use serde::Serialize;
use tch::{Device, Kind, Tensor, nn};

use crate::TrainError;
use crate::data::{DataConfig, Dataset, ImageRef};
use crate::export::load_into_varstore;
use crate::lpips::Lpips;
use crate::metrics;
use crate::model::Hvq;
use crate::sharing::{Sharing, UsageCounter};

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
    /// LPIPS-VGG (None when no VGG LPIPS model was given).
    pub lpips_vgg: Option<f64>,
    /// Distinct codebook entries this level used over all images.
    pub codebook_usage: usize,
    /// Perplexity (2^entropy) of this level's tokens.
    pub perplexity: f64,
    /// Tokens this level produced over all images.
    pub tokens: u64,
}

/// Which images an evaluation reads and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvalOptions {
    /// Evaluate the central `S`×`S` square after resizing the shorter side to `S`
    /// ([`crate::data::load_center_crop`]) instead of the whole image.
    pub center_crop: Option<u32>,
    /// Evaluate at most this many images (the first in path order).
    pub limit: Option<usize>,
    /// Evaluate only the fixed held-out split of the folder (the 50 photos training never
    /// sees, [`Dataset::open`] with the default `val_count`) instead of every image.
    pub held_out: bool,
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
    /// Centre-crop side, when images were cropped.
    pub center_crop: Option<u32>,
    /// Whether only the held-out split was read.
    pub held_out: bool,
    /// Codebook size.
    pub codebook_size: usize,
    /// Per level, finest first.
    pub levels: Vec<LevelMetrics>,
    /// Entries used by every level.
    pub used_by_all_levels: usize,
    /// How the levels share the codebook.
    pub sharing: Sharing,
}

/// The LPIPS models an evaluation scores with (either may be absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct Perceptual<'a> {
    /// LPIPS with AlexNet features (the usual evaluation metric).
    pub alex: Option<&'a Lpips>,
    /// LPIPS with VGG16 features (the training loss; the paper's Table 1 reports both).
    pub vgg: Option<&'a Lpips>,
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
        model
            .encode_tokens(&xp)
            .into_iter()
            .enumerate()
            .map(|(l, tokens)| {
                let y = model.decode_tokens(l, &tokens);
                (tokens, y.narrow(2, 0, h).narrow(3, 0, w))
            })
            .collect()
    })
}

/// Evaluates `weights` on the images of `data_dir` that `opts` selects.
///
/// Errors: unreadable weights or images, an empty selection, libtorch errors, and images too
/// large for the model's attention ([`TrainError::TooLarge`]).
pub fn evaluate(
    weights_path: &Path,
    data_dir: &Path,
    lpips: Perceptual<'_>,
    opts: &EvalOptions,
    device: Device,
) -> Result<EvalReport, TrainError> {
    let weights = crate::export::read_weights(weights_path)?;
    let cfg = weights.config().clone();
    let (_vs, model) = load_model(&weights, device)?;
    let files = select_images(data_dir, opts)?;
    let n = cfg.codebook_size as i64;
    let std = Tensor::from_slice(&cfg.std)
        .view([1, 3, 1, 1])
        .to_device(device);
    let mut sums = vec![LevelMetrics::default(); cfg.levels];
    let mut usage = UsageCounter::new(cfg.levels, cfg.codebook_size);
    let mut ms_ok = true;
    for image in &files {
        let x = match opts.center_crop {
            Some(side) => image.load_center_crop(side)?,
            None => image.load_f32()?,
        }
        .unsqueeze(0)
        .to_device(device);
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
            for (lp, acc) in [
                (lpips.alex, &mut m.lpips_alex),
                (lpips.vgg, &mut m.lpips_vgg),
            ] {
                if let Some(lp) = lp {
                    let d = tch::no_grad(|| lp.f_forward(&y, &x))?
                        .mean(Kind::Double)
                        .double_value(&[]);
                    *acc.get_or_insert(0.0) += d;
                }
            }
            let counts = tokens.reshape([-1]).bincount(None::<Tensor>, n);
            usage.add(l, &Vec::<i64>::try_from(&counts.to_device(Device::Cpu))?);
        }
    }
    let count = files.len() as f64;
    let sharing = usage.sharing();
    for (l, m) in sums.iter_mut().enumerate() {
        m.level = l;
        m.stride = cfg.level_stride(l);
        m.l1 /= count;
        m.l1_normalized /= count;
        m.psnr /= count;
        m.ms_ssim = m.ms_ssim.filter(|_| ms_ok).map(|v| v / count);
        m.lpips_alex = m.lpips_alex.map(|v| v / count);
        m.lpips_vgg = m.lpips_vgg.map(|v| v / count);
        let u = &sharing.levels[l];
        m.codebook_usage = u.used;
        m.perplexity = u.perplexity;
        m.tokens = u.tokens;
    }
    Ok(EvalReport {
        weights: weights_path.to_path_buf(),
        data: data_dir.to_path_buf(),
        images: files.len(),
        center_crop: opts.center_crop,
        held_out: opts.held_out,
        codebook_size: cfg.codebook_size,
        levels: sums,
        used_by_all_levels: sharing.used_by_all,
        sharing,
    })
}

/// The images `opts` selects from `data_dir` (a folder or a shard folder), in path order.
fn select_images(data_dir: &Path, opts: &EvalOptions) -> Result<Vec<ImageRef>, TrainError> {
    let split = DataConfig {
        val_count: if opts.held_out {
            DataConfig::default().val_count
        } else {
            0
        },
        ..DataConfig::default()
    };
    let ds = Dataset::open(data_dir, &split)?;
    let mut files = if opts.held_out {
        ds.val().to_vec()
    } else {
        ds.train().to_vec()
    };
    if let Some(limit) = opts.limit {
        files.truncate(limit);
    }
    if files.is_empty() {
        return Err(TrainError::bad_config("--limit", "selects no image"));
    }
    Ok(files)
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

/// The report as Markdown: the per-level table, then the sharing statistics.
pub fn markdown(r: &EvalReport) -> String {
    let crop = r.center_crop.map_or_else(
        || "whole images".to_string(),
        |s| format!("{s}×{s} centre crops"),
    );
    let split = if r.held_out { ", held-out split" } else { "" };
    let mut s = format!(
        "Evaluation of `{}` on `{}` ({} images, {crop}{split})\n\n| level | stride | L1 [0,1] | L1 (normalized) | PSNR dB | MS-SSIM | LPIPS-Alex | LPIPS-VGG | codebook usage | perplexity | tokens |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
        r.weights.display(),
        r.data.display(),
        r.images
    );
    for m in &r.levels {
        s += &format!(
            "| {} | {} | {:.4} | {:.4} | {:.2} | {} | {} | {} | {} / {} | {:.0} | {} |\n",
            m.level,
            m.stride,
            m.l1,
            m.l1_normalized,
            m.psnr,
            opt(m.ms_ssim, 4),
            opt(m.lpips_alex, 4),
            opt(m.lpips_vgg, 4),
            m.codebook_usage,
            r.codebook_size,
            m.perplexity,
            m.tokens
        );
    }
    let sh = &r.sharing;
    s += &format!(
        "\nEntries used by all levels: {} / {} (independent choice would give {:.0}); used at least {} times by every level: {}\n",
        sh.used_by_all,
        r.codebook_size,
        sh.used_by_all_chance,
        crate::sharing::MIN_USES,
        sh.used_by_all_min_uses
    );
    if r.levels.len() > 1 {
        let shares: Vec<String> = sh
            .tokens_on_finest_entries
            .iter()
            .enumerate()
            .map(|(i, v)| format!("level {}: {:.1} %", i + 1, 100.0 * v))
            .collect();
        s += &format!(
            "\nEntries of the coarsest level also used by every other level: {:.1} %\n\nTokens on entries the finest level uses: {}\n",
            100.0 * sh.coarsest_entries_shared,
            shares.join(", ")
        );
    }
    s
}
