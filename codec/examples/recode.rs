//! Measures entropy-coding priors alone: re-codes the tokens of existing `.hvq` files with the priors
//! and context model of other weight files of the same model (same fingerprint), and prints each one's
//! mean prefix bits per pixel per level. No image is encoded or decoded, so comparing `hvq-priors`
//! fits takes seconds.
//!
//! ```text
//! cargo run --release -p hvq-codec --example recode -- --model M.safetensors A.safetensors,B.safetensors FILE.hvq...
//! ```
//! `--model` names the weights the files were written with (default: the embedded model).
use std::error::Error;

use hvq_codec::{Codec, inspect};

fn codec(path: Option<&str>) -> Result<Codec, Box<dyn Error>> {
    Ok(match path {
        Some(p) => Codec::from_weight_bytes(&std::fs::read(p)?)?.build()?,
        None => Codec::default_model()?.build()?,
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let model = match args.first().map(String::as_str) {
        Some("--model") if args.len() > 1 => Some(args.drain(..2).nth(1).unwrap_or_default()),
        _ => None,
    };
    let (Some(candidates), files) = (args.first(), args.get(1..).unwrap_or_default()) else {
        return Err("usage: recode [--model M] W1[,W2...] FILE.hvq...".into());
    };
    let writer = codec(model.as_deref())?;
    let mut tokens = Vec::with_capacity(files.len());
    for f in files {
        tokens.push(writer.read_hvq(&std::fs::read(f)?)?.0);
    }
    if tokens.is_empty() {
        return Err("no .hvq files given".into());
    }
    for w in candidates.split(',') {
        let other = codec(Some(w))?;
        let mut prefix = vec![0f64; other.config().levels];
        for t in &tokens {
            for l in inspect(&other.tokens_to_hvq(t)?)?.levels {
                prefix[l.level] += l.prefix_bits_per_pixel / tokens.len() as f64;
            }
        }
        let shown: Vec<String> = prefix
            .iter()
            .enumerate()
            .rev()
            .map(|(l, b)| format!("L{l} {b:.4}"))
            .collect();
        println!("{w}: mean prefix bpp {}", shown.join(", "));
    }
    Ok(())
}
