//! Rate–distortion encoding swept over its weight: for each λ, encodes every image with
//! `CodecBuilder::rate_distortion(λ)` on the CPU backend, and prints per level the mean prefix bits
//! per pixel (what a reader pays for that level) and the mean PSNR of that level decoded alone.
//!
//! ```text
//! cargo run --release -p hvq-codec --example rd_sweep -- [--model M] 0,0.03,0.1,0.3,1 ../shared/data/kodak/*.png
//! ```
//! `--model` names a weight file (default: the embedded model).
use std::error::Error;

use hvq_codec::{Backend, Codec, LevelSelection, Limits, RgbImage, inspect};

fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    let (x, y) = (a.as_bytes(), b.as_bytes());
    let se: f64 = x
        .iter()
        .zip(y)
        .map(|(&p, &q)| (f64::from(p) - f64::from(q)).powi(2))
        .sum();
    10.0 * (255.0f64.powi(2) * x.len() as f64 / se.max(1e-9)).log10()
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let model = match args.first().map(String::as_str) {
        Some("--model") if args.len() > 1 => {
            Some(std::fs::read(args.drain(..2).nth(1).unwrap_or_default())?)
        }
        _ => None,
    };
    let (Some(lambdas), files) = (args.first(), args.get(1..).unwrap_or_default()) else {
        return Err("usage: rd_sweep [--model M] L1[,L2...] IMAGE...".into());
    };
    let lambdas: Vec<f64> = lambdas
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    if files.is_empty() {
        return Err("no images given".into());
    }
    let images: Vec<RgbImage> = files
        .iter()
        .map(|f| RgbImage::decode(&std::fs::read(f)?, &Limits::default()).map_err(Into::into))
        .collect::<Result<_, Box<dyn Error>>>()?;
    let n = images.len() as f64;
    println!("| λ | level | prefix bpp | PSNR dB |\n|---|---|---|---|");
    for &lambda in &lambdas {
        let builder = match &model {
            Some(bytes) => Codec::from_weight_bytes(bytes)?,
            None => Codec::default_model()?,
        };
        let codec = builder
            .backend(Backend::Cpu)
            .rate_distortion(lambda)
            .build()?;
        let levels = codec.config().levels;
        let (mut bpp, mut db) = (vec![0f64; levels], vec![0f64; levels]);
        for img in &images {
            let bytes = codec.encode_to_hvq(img, LevelSelection::All)?;
            for l in inspect(&bytes)?.levels {
                bpp[l.level] += l.prefix_bits_per_pixel / n;
                let out = codec.decode_hvq(&bytes, Some(l.level))?.image;
                db[l.level] += psnr(img, &out) / n;
            }
        }
        for l in (0..levels).rev() {
            println!("| {lambda} | {l} | {:.4} | {:.2} |", bpp[l], db[l]);
        }
    }
    Ok(())
}
