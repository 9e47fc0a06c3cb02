//! `hvq-compare`: full-reference image metrics for pairs of image files, one JSON line per pair.
//!
//! Used by `scripts/rd_kodak.py` to score hvq and JPEG/WebP/AVIF decodes with the same code
//! (PSNR, MS-SSIM and LPIPS-Alex from `hvq_train::{metrics, lpips}`):
//!
//! ```text
//! hvq-compare --pairs pairs.tsv            # lines: REFERENCE<TAB>TEST
//! hvq-compare --reference a.png --test b.png
//! ```
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;
use hvq_train::{data, lpips, metrics};
use tch::{Device, Tensor};

#[derive(Parser)]
#[command(about = "PSNR, MS-SSIM and LPIPS-Alex between pairs of images (JSON lines on stdout)")]
struct Args {
    /// A file of `REFERENCE<TAB>TEST` lines.
    #[arg(long, conflicts_with_all = ["reference", "test"])]
    pairs: Option<PathBuf>,
    /// The reference image (with --test).
    #[arg(long, requires = "test")]
    reference: Option<PathBuf>,
    /// The image to score (with --reference).
    #[arg(long, requires = "reference")]
    test: Option<PathBuf>,
    /// LPIPS AlexNet weights.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/lpips/alexnet.safetensors"))]
    lpips: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let pairs = match (&args.pairs, &args.reference, &args.test) {
        (Some(list), _, _) => read_pairs(list)?,
        (None, Some(r), Some(t)) => vec![(r.clone(), t.clone())],
        _ => bail!("give --pairs FILE or --reference A --test B"),
    };
    let _guard = tch::no_grad_guard();
    let alex = lpips::Lpips::load(&args.lpips, lpips::Net::Alex, Device::Cpu)?;
    for (reference, test) in pairs {
        let a = load(&reference)?;
        let b = load(&test)?;
        if a.size() != b.size() {
            bail!(
                "{} is {:?} but {} is {:?}",
                reference.display(),
                a.size(),
                test.display(),
                b.size()
            );
        }
        let lp = alex.f_forward(&a, &b)?.double_value(&[0]);
        let line = serde_json::json!({
            "reference": reference, "test": test,
            "psnr": metrics::psnr(&a, &b)?,
            "ms_ssim": metrics::ms_ssim(&a, &b).ok(),
            "lpips_alex": lp,
        });
        println!("{line}");
    }
    Ok(())
}

fn load(path: &Path) -> Result<Tensor> {
    Ok(data::load_image_f32(path)
        .with_context(|| format!("reading {}", path.display()))?
        .unsqueeze(0))
}

fn read_pairs(list: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let text =
        std::fs::read_to_string(list).with_context(|| format!("reading {}", list.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| match l.split_once('\t') {
            Some((a, b)) => Ok((PathBuf::from(a), PathBuf::from(b))),
            None => bail!(
                "{} line {}: expected REFERENCE<TAB>TEST",
                list.display(),
                i + 1
            ),
        })
        .collect()
}
