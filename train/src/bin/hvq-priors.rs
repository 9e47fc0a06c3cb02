//! `hvq-priors`: measures how often each codebook entry is used at each level on training images,
//! and stores those frequencies in a weight file's `hvq.priors` metadata, where the `.hvq` writer
//! reads them to entropy-code tokens below log2(N) bits each (DESIGN.md §5, `docs/format.md`).
//!
//! ```text
//! hvq-priors --weights W.safetensors --data ../shared/data/imagenet-sample --images 300 --out W2.safetensors --f16
//! ```
//! Only the training split is read (the fixed held-out validation photos are left out), never Kodak.
//!
//! With `--context-neighbours M` (default 128; 0 for none) it also fits the context model of coding 2
//! (`docs/format.md` §4.3) on the same tokens and stores it as `hvq.context`: every codebook entry's list of
//! `M` entries (its nearest in squared L2 on the codebook, then, with `--context-lists learned`, the
//! default, re-ordered by which entries follow it on the training tokens), how often a token sits at each
//! rank of its parent's and its left, up, up-left and up-right neighbours' lists, and the mixture weights.
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use hvq_spec::{StoreDtype, Weights, meta};
use hvq_train::{data, eval, export};
use tch::{Device, Kind};

#[derive(Parser)]
#[command(
    about = "Count token frequencies per level on training images and store them as entropy-coding priors"
)]
struct Args {
    /// The weight file to read.
    #[arg(long)]
    weights: PathBuf,
    /// Training image folder (its fixed validation split is skipped).
    #[arg(long)]
    data: PathBuf,
    /// How many training images to tokenize (evenly spaced over the sorted list; 0 = all).
    #[arg(long, default_value_t = 300)]
    images: usize,
    /// Output weight file (may equal --weights).
    #[arg(long)]
    out: PathBuf,
    /// Store tensors as f16.
    #[arg(long)]
    f16: bool,
    /// Neighbours per codebook entry in the context model (0: store no context model).
    #[arg(long, default_value_t = 128)]
    context_neighbours: usize,
    /// How the context model's neighbour lists are chosen.
    #[arg(long, value_enum, default_value_t = ContextLists::Learned)]
    context_lists: ContextLists,
    /// `learned` lists: pseudo-counts of the nearest-first order added to each entry's observed counts
    /// (larger: closer to `nearest` for entries seen rarely).
    #[arg(long, default_value_t = 1000.0)]
    context_prior: f64,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ContextLists {
    /// Each entry's nearest entries in squared L2 on the codebook, itself first.
    Nearest,
    /// The entries that most often follow each entry as a context on the training tokens, with the
    /// nearest-first order as a prior (`hvq_format::ContextFitter::learn_lists`).
    Learned,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !(args.context_prior.is_finite() && args.context_prior > 0.0) {
        bail!(
            "--context-prior must be a positive number of pseudo-counts, not {}",
            args.context_prior
        );
    }
    let weights = export::read_weights(&args.weights)?;
    let cfg = weights.config().clone();
    let dataset = data::Dataset::open(&args.data, &data::DataConfig::default())?;
    let files = dataset.train();
    let take = if args.images == 0 {
        files.len()
    } else {
        args.images.min(files.len())
    };
    if take == 0 {
        bail!("no training images in {}", args.data.display());
    }
    let (_vs, model) = eval::load_model(&weights, Device::Cpu)?;
    let mut counts = vec![vec![0u64; cfg.codebook_size]; cfg.levels];
    let m = args.context_neighbours;
    let mut fitter = match m {
        0 => None,
        m => {
            let nearest = neighbour_lists(model.codebook(), m)?;
            let f = hvq_format::ContextFitter::new(cfg.codebook_size, m, nearest, cfg.levels)?;
            Some(match args.context_lists {
                ContextLists::Nearest => f,
                ContextLists::Learned => f.learn_lists(args.context_prior)?,
            })
        }
    };
    let mut context_full = false;
    for i in 0..take {
        let image = &files[i * files.len() / take];
        let x = match image.load_f32() {
            Ok(x) => x.unsqueeze(0),
            Err(e) => {
                eprintln!("warning: skipping {}: {e}", image.path().display());
                continue;
            }
        };
        let mut grids = Vec::with_capacity(cfg.levels);
        for (level, tokens) in encode_tokens(&model, &x).iter().enumerate() {
            let t: Vec<i64> = Vec::try_from(tokens.flatten(0, -1).to_kind(Kind::Int64))?;
            for &v in &t {
                counts[level][v as usize] += 1;
            }
            let size = tokens.size();
            grids.push(hvq_spec::TokenGrid {
                level,
                height: size[size.len() - 2] as usize,
                width: size[size.len() - 1] as usize,
                tokens: t.into_iter().map(|v| v as u32).collect(),
            });
        }
        if let Some(f) = fitter.as_mut()
            && !f.add_image(&grids)
            && !context_full
        {
            context_full = true;
            eprintln!(
                "note: the context model is fitted on the images before this one ({} tokens at most); \
                 the priors count every image",
                hvq_format::MAX_FIT_TOKENS
            );
        }
        if (i + 1) % 50 == 0 {
            eprintln!("{}/{take} images", i + 1);
        }
    }
    for (level, c) in counts.iter().enumerate() {
        let used = c.iter().filter(|&&n| n > 0).count();
        let total: u64 = c.iter().sum();
        let entropy: f64 = c
            .iter()
            .filter(|&&n| n > 0)
            .map(|&n| {
                let p = n as f64 / total as f64;
                -p * p.log2()
            })
            .sum();
        println!(
            "level {level}: {total} tokens, {used} entries used, empirical entropy {entropy:.2} bits/token (raw {:.2})",
            (cfg.codebook_size as f64).log2()
        );
    }
    let priors = hvq_format::Priors::from_counts(counts).context("building priors")?;
    let mut metadata = weights.metadata().clone();
    metadata.insert(meta::PRIORS.to_string(), priors.to_metadata_string());
    metadata.remove(meta::CONTEXT);
    if let Some(f) = fitter {
        let context = f.finish(&priors).context("fitting the context model")?;
        for level in 0..cfg.levels {
            let w = context.weights(level).unwrap_or_default();
            let names = std::iter::once("unconditional").chain(hvq_format::CONTEXT_KINDS);
            let shown: Vec<String> = names.zip(&w).map(|(k, w)| format!("{k} {w:.3}")).collect();
            println!("level {level} context weights: {}", shown.join(", "));
        }
        metadata.insert(meta::CONTEXT.to_string(), context.to_metadata_string());
    }
    metadata.insert(
        "hvq.priors_source".to_string(),
        format!("{take} training images of {}", args.data.display()),
    );
    let tensors = weights
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let out = Weights::from_tensors(cfg, tensors, metadata)?;
    let dtype = if args.f16 {
        StoreDtype::F16
    } else {
        StoreDtype::F32
    };
    export::write_weights(&args.out, &out, dtype)?;
    println!(
        "wrote {} with priors (fingerprint {})",
        args.out.display(),
        hvq_spec::fingerprint_hex(&out.fingerprint())
    );
    Ok(())
}

/// Row `c`: the `m` codebook entries nearest to entry `c` in squared L2, itself first (its own distance
/// is set below every other, so duplicated entries cannot displace it).
fn neighbour_lists(codebook: &tch::Tensor, m: usize) -> Result<Vec<u32>> {
    let cb = tch::no_grad(|| codebook.to_device(Device::Cpu).to_kind(Kind::Float));
    let n = cb.size()[0];
    if m as i64 > n {
        bail!("--context-neighbours {m} is more than the codebook's {n} entries");
    }
    let sq = cb
        .pow_tensor_scalar(2)
        .sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    let mut out = Vec::with_capacity(n as usize * m);
    for start in (0..n).step_by(1024) {
        let len = 1024.min(n - start);
        let d = sq.narrow(0, start, len).unsqueeze(1)
            - cb.narrow(0, start, len).matmul(&cb.tr()) * 2.0
            + sq.unsqueeze(0);
        let own = tch::Tensor::arange_start(start, start + len, (Kind::Int64, Device::Cpu));
        let d = d.scatter_value(1, &own.unsqueeze(1), f64::NEG_INFINITY);
        let (_, top) = d.topk(m as i64, 1, false, true);
        let top: Vec<i64> = Vec::try_from(top.flatten(0, -1))?;
        out.extend(top.into_iter().map(|v| v as u32));
    }
    Ok(out)
}

/// Tokens of every level of `x01` `[1, 3, H, W]`, edge-padded like the codec does (no decoding).
fn encode_tokens(model: &hvq_train::model::Hvq, x01: &tch::Tensor) -> Vec<tch::Tensor> {
    tch::no_grad(|| {
        let (h, w) = (x01.size()[2], x01.size()[3]);
        let s = model.config().coarsest_stride() as i64;
        let xp = x01.replication_pad2d([0, (w + s - 1) / s * s - w, 0, (h + s - 1) / s * s - h]);
        model
            .level_latents(&model.normalize(&xp))
            .iter()
            .map(|z| model.nearest(&model.project(z)))
            .collect()
    })
}
