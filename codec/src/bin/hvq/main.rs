//! `hvq`: encode images to scalable `.hvq` files and tokens, decode them back, tokenize datasets.

mod npy;
mod tokenize_dir;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use hvq_codec::{Backend, Codec, LevelSelection, Limits, RgbImage, Tokens};

/// Hierarchical VQ tokenizer and scalable image codec.
///
/// One model maps an image to token grids at several levels (level 0 is the finest); every
/// level decodes alone to a full-size image. A `.hvq` file stores the levels coarsest first, so
/// any prefix that ends on a level boundary is a smaller, lower-quality image.
#[derive(Debug, Parser)]
#[command(name = "hvq", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// Model weights (safetensors from `hvq-train export`). Default: the model embedded in this build.
    #[arg(long, short = 'm', global = true, value_name = "FILE")]
    model: Option<PathBuf>,
    /// Compute backend: `auto` uses a GPU through wgpu when one is found, else the CPU.
    #[arg(long, short = 'b', global = true, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    /// More log output on stderr (-v: backend choice and steps, -vv: debug).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BackendArg {
    /// wgpu when an adapter exists, otherwise the CPU.
    Auto,
    /// The wgpu backend (Vulkan, Metal, DX12); fails without an adapter.
    Wgpu,
    /// The pure-Rust CPU backend.
    Cpu,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Encode an image (PNG, JPEG, WebP, BMP, GIF, TIFF) to a `.hvq` file.
    Encode {
        /// The input image.
        input: PathBuf,
        /// The `.hvq` file to write.
        #[arg(long, short = 'o', value_name = "OUT.hvq")]
        output: PathBuf,
        /// Levels to store, comma-separated (0 = finest). Default: every level of the model.
        #[arg(long, short = 'l', value_delimiter = ',', value_name = "L,L,..")]
        levels: Vec<usize>,
    },
    /// Decode a `.hvq` file (or a prefix of one) to an image; the format follows OUT's extension.
    Decode {
        /// The `.hvq` file.
        input: PathBuf,
        /// The image to write (.png, .jpg, .webp, .bmp, .gif, .tif).
        #[arg(long, short = 'o', value_name = "OUT.png")]
        output: PathBuf,
        /// Level to decode. Default: the finest level present in the file.
        #[arg(long, short = 'l', value_name = "N")]
        level: Option<usize>,
    },
    /// Show a `.hvq` file's size, model fingerprint, and per level its grid, bytes and bits per pixel.
    Info {
        /// The `.hvq` file.
        input: PathBuf,
    },
    /// Print the token grids of an image (encoded now) or of a `.hvq` file, as JSON or NumPy `.npy`.
    Tokens {
        /// An image, or a `.hvq` file (recognised by its signature).
        input: PathBuf,
        /// Only this level. Default: every level for JSON, the finest for `.npy` (one array per file).
        #[arg(long, short = 'l', value_name = "N")]
        level: Option<usize>,
        /// Output format: `json` (grids as nested row arrays) or `npy` (a HEIGHT×WIDTH uint16/uint32 array).
        #[arg(long, short = 'f', value_enum, default_value_t = TokenFormat::Json)]
        format: TokenFormat,
        /// Write here instead of standard output.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Tokenize every image under a directory into sharded `.npy` files for training; resumable.
    ///
    /// OUT gets `manifest.json` and one folder per shard, `shard-NNNNN/`, holding `index.jsonl`
    /// (one line per image: file, size, and per level the offset and grid size in that level's
    /// array, or an error), `level<L>.npy` (the tokens of every image of the shard at level L,
    /// concatenated, one dimension) and `checksums.json` (size and SHA-256 of each). A shard
    /// folder appears only when complete (written under a temporary name, then renamed).
    ///
    /// manifest.json: {"format": "hvq-tokens-v2", "fingerprint", "levels", "shard_size",
    /// "shards": [{"first", "count"}], "files": [{"file"[, "file_hex"]}]}. Shard s holds
    /// files[first..first+count]. `file` is the path below DIR with `/` separators; a name that
    /// is not UTF-8 has U+FFFD in `file` and its exact bytes in `file_hex` (index lines too).
    ///
    /// Rerunning the same command resumes: finished shards are checked against their
    /// checksums and a damaged one is encoded again. New images under DIR are refused unless
    /// `--add` is given; images gone from DIR keep their tokens in finished shards. One bad image
    /// is an error line in its shard's index, never the end of the run.
    TokenizeDir {
        /// Folder to scan recursively for images (png, jpg, jpeg, webp, bmp, gif, tif, tiff).
        dir: PathBuf,
        /// Output folder (created if needed).
        #[arg(long, short = 'o', value_name = "OUT")]
        output: PathBuf,
        /// Levels to store, comma-separated. Default: every level of the model.
        #[arg(long, short = 'l', value_delimiter = ',', value_name = "L,L,..")]
        levels: Vec<usize>,
        /// Images per shard.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
        shard_size: u32,
        /// Images read and encoded at once. Default: the number of CPU threads.
        #[arg(long, short = 'j', value_parser = clap::value_parser!(u32).range(1..))]
        jobs: Option<u32>,
        /// Tokenize images that are not in OUT's manifest yet into new shards after the
        /// existing ones (existing shards are left as they are).
        #[arg(long)]
        add: bool,
        /// Memory the images in flight may take together (estimated from each image's header;
        /// K, M, G, T are powers of 1024). An image over it runs alone, so large photos are
        /// encoded one at a time whatever `-j` is.
        #[arg(long, value_name = "SIZE", default_value = tokenize_dir::DEFAULT_MEMORY_BUDGET,
              value_parser = tokenize_dir::parse_size)]
        memory_budget: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TokenFormat {
    /// JSON: `{"width", "height", "fingerprint", "levels": [{"level", "height", "width", "tokens": [[..]]}]}`.
    Json,
    /// NumPy `.npy` version 1.0, one level as a HEIGHT×WIDTH array.
    Npy,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hvq: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .format_timestamp(None)
        .parse_default_env()
        .init();
}

fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    match cli.command {
        Command::Encode {
            input,
            output,
            levels,
        } => encode(g, &input, &output, levels),
        Command::Decode {
            input,
            output,
            level,
        } => decode(g, &input, &output, level),
        Command::Info { input } => info(g, &input),
        Command::Tokens {
            input,
            level,
            format,
            output,
        } => tokens(g, &input, level, format, output.as_deref()),
        Command::TokenizeDir {
            dir,
            output,
            levels,
            shard_size,
            jobs,
            add,
            memory_budget,
        } => {
            let codec = load_codec(g)?;
            let jobs = jobs.map_or_else(rayon::current_num_threads, |j| j as usize);
            let opts = tokenize_dir::Options {
                dir,
                out: output,
                levels: selection(levels),
                shard_size: shard_size as usize,
                jobs,
                add,
                memory_budget,
            };
            tokenize_dir::run(&codec, &opts)
        }
    }
}

/// Loads the model named by `--model`, or the embedded default, on the chosen backend.
fn load_codec(g: &Global) -> Result<Codec> {
    let builder = match &g.model {
        Some(path) => {
            let bytes = read(path)?;
            Codec::from_weight_bytes(&bytes)
                .with_context(|| format!("cannot load model `{}`", path.display()))?
        }
        None => Codec::default_model().context("no --model given")?,
    };
    let backend = match g.backend {
        BackendArg::Auto => Backend::Auto,
        BackendArg::Wgpu => Backend::Wgpu,
        BackendArg::Cpu => Backend::Cpu,
    };
    let codec = builder
        .backend(backend)
        .build()
        .context("cannot start the model")?;
    log::info!(
        "model {} on the {} backend",
        &hvq_spec::fingerprint_hex(&codec.fingerprint())[..16],
        codec.backend()
    );
    Ok(codec)
}

fn selection(levels: Vec<usize>) -> LevelSelection {
    if levels.is_empty() {
        LevelSelection::All
    } else {
        LevelSelection::Only(levels)
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))
}

/// Reads and decodes an image file, checking its size before decoding pixels.
fn read_image(path: &Path, limits: &Limits) -> Result<RgbImage> {
    let bytes = read(path)?;
    RgbImage::decode(&bytes, limits)
        .with_context(|| format!("`{}` is not a usable image", path.display()))
}

/// Writes through a temporary file and a rename, so an interrupted run leaves no half file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".part");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write `{}`", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write `{}`", path.display()))
}

fn encode(g: &Global, input: &Path, output: &Path, levels: Vec<usize>) -> Result<()> {
    let codec = load_codec(g)?;
    let image = read_image(input, codec.limits())?;
    let bytes = codec
        .encode_to_hvq(&image, selection(levels))
        .with_context(|| format!("cannot encode `{}`", input.display()))?;
    write_atomic(output, &bytes)?;
    let bpp = bytes.len() as f64 * 8.0 / (f64::from(image.width()) * f64::from(image.height()));
    eprintln!(
        "{}: {}×{} → {} bytes ({bpp:.4} bpp)",
        output.display(),
        image.width(),
        image.height(),
        bytes.len()
    );
    Ok(())
}

fn decode(g: &Global, input: &Path, output: &Path, level: Option<usize>) -> Result<()> {
    let format = image::ImageFormat::from_path(output)
        .ok()
        .filter(|f| f.writing_enabled())
        .with_context(|| {
            format!(
                "cannot tell an image format this build writes from `{}`",
                output.display()
            )
        })?;
    let bytes = read(input)?;
    let codec = load_codec(g)?;
    let decoded = codec
        .decode_hvq(&bytes, level)
        .with_context(|| format!("cannot decode `{}`", input.display()))?;
    if decoded.truncated {
        eprintln!(
            "warning: `{}` is truncated; decoded level {}, the finest complete one",
            input.display(),
            decoded.level
        );
    }
    let encoded = decoded.image.encode_as(format)?;
    write_atomic(output, &encoded)?;
    eprintln!(
        "{}: level {}, {}×{}",
        output.display(),
        decoded.level,
        decoded.image.width(),
        decoded.image.height()
    );
    Ok(())
}

fn info(g: &Global, input: &Path) -> Result<()> {
    let bytes = read(input)?;
    let info =
        hvq_codec::inspect(&bytes).with_context(|| format!("cannot read `{}`", input.display()))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "file:        {}", input.display())?;
    writeln!(out, "image:       {}×{} pixels", info.width, info.height)?;
    writeln!(
        out,
        "model:       {} ({} levels, coarsest stride {})",
        info.fingerprint_hex(),
        info.model_levels,
        info.coarsest_stride
    )?;
    writeln!(
        out,
        "size:        {} bytes ({:.4} bpp)",
        info.total_bytes,
        bpp(info.total_bytes, &info)
    )?;
    writeln!(
        out,
        "level  grid        bytes      bpp   prefix bpp  coding"
    )?;
    for l in &info.levels {
        let coding = match l.same_as_parent {
            Some(share) => format!("parent ({:.1}% same)", share * 100.0),
            None => "plain".into(),
        };
        writeln!(
            out,
            "{:>5}  {:<10} {:>6} {:>8.4} {:>12.4}  {coding}",
            l.level,
            format!("{}×{}", l.grid_width, l.grid_height),
            l.bytes,
            l.bits_per_pixel,
            l.prefix_bits_per_pixel
        )?;
    }
    if info.trailing_bytes > 0 {
        writeln!(
            out,
            "truncated:   {} bytes of an incomplete chunk at the end",
            info.trailing_bytes
        )?;
    }
    check_info_model(g, &bytes, &info, &mut out)
}

/// Tells whether the loaded model matches the file, and validates every chunk when it does.
fn check_info_model(
    g: &Global,
    bytes: &[u8],
    info: &hvq_codec::FileInfo,
    out: &mut impl Write,
) -> Result<()> {
    // Without --model and without an embedded model there is nothing to compare against.
    if g.model.is_none() && !hvq_codec::has_default_model() {
        return Ok(());
    }
    let codec = load_codec(g)?;
    if codec.fingerprint() != info.fingerprint {
        writeln!(
            out,
            "loaded model: {} (does not match; this file needs its own model)",
            hvq_spec::fingerprint_hex(&codec.fingerprint())
        )?;
        return Ok(());
    }
    codec.info(bytes).context("the file does not validate")?;
    writeln!(out, "loaded model: matches; every complete chunk validates")?;
    Ok(())
}

fn bpp(bytes: usize, info: &hvq_codec::FileInfo) -> f64 {
    bytes as f64 * 8.0 / (f64::from(info.width) * f64::from(info.height))
}

fn tokens(
    g: &Global,
    input: &Path,
    level: Option<usize>,
    format: TokenFormat,
    output: Option<&Path>,
) -> Result<()> {
    let codec = load_codec(g)?;
    let bytes = read(input)?;
    let mut tokens = if hvq_codec::is_hvq(&bytes) {
        codec
            .read_hvq(&bytes)
            .with_context(|| format!("cannot read `{}`", input.display()))?
            .0
    } else {
        let image = RgbImage::decode(&bytes, codec.limits()).with_context(|| {
            format!(
                "`{}` is neither a .hvq file nor a usable image",
                input.display()
            )
        })?;
        let levels = level.map_or(LevelSelection::All, |l| LevelSelection::Only(vec![l]));
        codec.encode(&image, levels)?
    };
    let keep = match (level, format) {
        (Some(l), _) => Some(l),
        (None, TokenFormat::Npy) => tokens.finest().map(|g| g.level),
        (None, TokenFormat::Json) => None,
    };
    if let Some(l) = keep {
        if tokens.level(l).is_none() {
            bail!(
                "level {l} is not in `{}` (levels present: {:?})",
                input.display(),
                tokens.levels()
            );
        }
        tokens.grids.retain(|g| g.level == l);
    }
    let mut buf = Vec::new();
    match format {
        TokenFormat::Json => write_tokens_json(&mut buf, &tokens, &codec)?,
        TokenFormat::Npy => {
            let grid = &tokens.grids[0];
            npy::write(
                &mut buf,
                &[grid.height, grid.width],
                npy::Dtype::for_codebook(codec.config().codebook_size),
                &grid.tokens,
            )?;
        }
    }
    match output {
        Some(path) => write_atomic(path, &buf),
        None => std::io::stdout()
            .lock()
            .write_all(&buf)
            .context("cannot write to standard output"),
    }
}

fn write_tokens_json(out: &mut Vec<u8>, tokens: &Tokens, codec: &Codec) -> Result<()> {
    let levels: Vec<serde_json::Value> = tokens
        .grids
        .iter()
        .map(|g| {
            let rows: Vec<&[u32]> = g.tokens.chunks(g.width.max(1)).collect();
            serde_json::json!({ "level": g.level, "height": g.height, "width": g.width, "tokens": rows })
        })
        .collect();
    let doc = serde_json::json!({
        "width": tokens.width,
        "height": tokens.height,
        "fingerprint": hvq_spec::fingerprint_hex(&codec.fingerprint()),
        "codebook_size": codec.config().codebook_size,
        "levels": levels,
    });
    serde_json::to_writer(&mut *out, &doc)?;
    out.push(b'\n');
    Ok(())
}
