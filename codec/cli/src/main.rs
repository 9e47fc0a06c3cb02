//! `hvq`: encode images to scalable `.hvq` files and tokens, decode them back, tokenize datasets.

mod npy;
mod tokenize_dir;

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use hvq_codec::{Backend, Codec, DecodeOptions, LevelSelection, Limits, RgbImage, Tokens};

/// Exit status when standard output is closed before everything was written (`hvq … | head`):
/// 128 + SIGPIPE, what a shell reports for a program that a broken pipe ended, as `cat` does.
const EXIT_BROKEN_PIPE: u8 = 141;

/// Hierarchical VQ tokenizer and scalable image codec.
///
/// One model maps an image to token grids at several levels (level 0 is the finest); every
/// level decodes alone to a full-size image. A `.hvq` file stores the levels coarsest first, so
/// any prefix that ends on a level boundary is a smaller, lower-quality image.
#[derive(Debug, Parser)]
///
/// `-` as an input reads standard input, `-o -` writes standard output. `-l` names the level(s)
/// a command works on in every subcommand (`--levels` and `--level` are the same option).
#[command(
    name = "hvq",
    version,
    propagate_version = true,
    after_help = "Exit status: 0 success; 1 error (one line on stderr); 2 usage error; \
                  141 standard output closed early (a broken pipe, e.g. `| head`), with no message."
)]
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
    /// Images larger than 1.5 tiles run in tiles of about PIXELS a side, so memory stays
    /// bounded (about 0.6 GB with the default model at 512). 0 runs every image whole: memory
    /// then grows with the image (about 2 GB per megapixel).
    #[arg(long, global = true, value_name = "PIXELS", default_value_t = 512)]
    tile: u32,
    /// Precision of the wgpu kernels' activations: `f16` halves device memory and traffic
    /// (needs an adapter with shader-f16; a few tokens near a tie differ from f32's). The CPU
    /// backend always runs f32.
    #[arg(long, global = true, value_enum, default_value_t = PrecisionArg::F32)]
    precision: PrecisionArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PrecisionArg {
    /// f32 everywhere: the tokens of the CPU backend and libtorch.
    F32,
    /// f16 activations and weights on wgpu, f32 quantizer and accumulators.
    F16,
}

impl Global {
    fn tiling(&self) -> hvq_codec::Tiling {
        match self.tile {
            0 => hvq_codec::Tiling::never(),
            tile => hvq_codec::Tiling::with_tile(tile),
        }
    }
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
    ///
    /// The image is turned upright as its EXIF orientation says, and transparent pixels are
    /// composited over `--background`.
    Encode {
        /// The input image (`-`: standard input, up to the file-size limit of 256 MiB).
        input: PathBuf,
        /// The `.hvq` file to write (`-`: standard output). Written to a new temporary file in
        /// the same folder, then renamed, so an interrupted run leaves OUT as it was.
        #[arg(long, short = 'o', value_name = "OUT.hvq")]
        output: PathBuf,
        #[command(flatten)]
        levels: LevelsArg,
        /// Colour that transparent pixels are composited over, as hex RRGGBB. Default: white.
        #[arg(long, value_name = "RRGGBB", default_value = "ffffff", value_parser = parse_rgb)]
        background: [u8; 3],
        /// Rate–distortion weight: choose each token among the 16 codebook entries nearest to its
        /// latent by `distance + λ·bits` instead of the nearest one. 0 (the default) writes the
        /// model's own tokens; larger values write smaller files of slightly lower quality (with
        /// the embedded model on Kodak, 0.1: 18.6 % smaller, 0.07 dB lower PSNR at level 0). Any
        /// reader decodes the file.
        #[arg(long, value_name = "λ", default_value = "0", value_parser = parse_rd_lambda)]
        rd_lambda: f64,
    },
    /// Decode a `.hvq` file (or a prefix of one) to an image; the format follows OUT's extension.
    Decode {
        /// The `.hvq` file (`-`: standard input).
        input: PathBuf,
        /// The image to write (.png, .jpg, .webp, .bmp, .gif, .tif; `-`: standard output).
        #[arg(long, short = 'o', value_name = "OUT.png")]
        output: PathBuf,
        /// Level to decode. Default: the finest level present in the file.
        #[arg(long, short = 'l', visible_alias = "levels", value_name = "N")]
        level: Option<usize>,
        /// Image format to write. Default: from OUT's extension; PNG on standard output.
        #[arg(long, short = 'f', value_enum, value_name = "FORMAT")]
        format: Option<ImageFormatArg>,
    },
    /// Show a `.hvq` file's size, model fingerprint, and per level its grid, bytes and bits per pixel.
    Info {
        /// The `.hvq` file (`-`: standard input).
        input: PathBuf,
    },
    /// Print the token grids of an image (encoded now) or of a `.hvq` file, as JSON or NumPy `.npy`.
    Tokens {
        /// An image, or a `.hvq` file (recognised by its signature); `-`: standard input.
        input: PathBuf,
        /// Only this level. Default: every level for JSON, the finest for `.npy` (one array per file).
        #[arg(long, short = 'l', visible_alias = "levels", value_name = "N")]
        level: Option<usize>,
        /// Output format: `json` (grids as nested row arrays) or `npy` (a HEIGHT×WIDTH uint16/uint32 array).
        #[arg(long, short = 'f', value_enum, default_value_t = TokenFormat::Json)]
        format: TokenFormat,
        /// Write here instead of standard output (`-`: standard output too).
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
        /// Colour that transparent pixels of an image are composited over, as hex RRGGBB.
        /// Default: white.
        #[arg(long, value_name = "RRGGBB", default_value = "ffffff", value_parser = parse_rgb)]
        background: [u8; 3],
    },
    /// Tokenize every image under a directory into sharded `.npy` files for training; resumable.
    ///
    /// OUT gets `manifest.json` and one folder per shard, `shard-NNNNN/`, holding `index.jsonl`
    /// (one line per image: file, size, and per level the offset and grid size in that level's
    /// array, or an error), `level<L>.npy` (the tokens of every image of the shard at level L,
    /// concatenated, one dimension) and `checksums.json` (size and SHA-256 of each). A shard
    /// folder appears only when complete (written under a temporary name, then renamed).
    ///
    /// manifest.json: {"format": "hvq-tokens-v2", "fingerprint", "levels", "tiling", "background",
    /// "shard_size", "shards": [{"first", "count"}], "files": [{"file"[, "file_hex"]}]}. Shard s holds
    /// files[first..first+count]. `file` is the path below DIR with `/` separators; a name that
    /// is not UTF-8 has U+FFFD in `file` and its exact bytes in `file_hex` (index lines too).
    ///
    /// Rerunning the same command resumes: finished shards are checked against their
    /// checksums and a damaged one is encoded again; other settings (model, levels, --tile,
    /// --background, --shard-size) are refused. New images under DIR are refused unless
    /// `--add` is given; images gone from DIR keep their tokens in finished shards. One bad image
    /// is an error line in its shard's index, never the end of the run.
    TokenizeDir {
        /// Folder to scan recursively for images (png, jpg, jpeg, webp, bmp, gif, tif, tiff).
        dir: PathBuf,
        /// Output folder (created if needed).
        #[arg(long, short = 'o', value_name = "OUT")]
        output: PathBuf,
        #[command(flatten)]
        levels: LevelsArg,
        /// Images per shard.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
        shard_size: u32,
        /// Images read and encoded at once. Default: the number of CPU threads; on a GPU
        /// backend at least 32, since there the workers only decode and the device encodes
        /// the images they have ready together, up to `-j` per batch.
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
        /// Colour that transparent pixels are composited over, as hex RRGGBB. Default: white.
        #[arg(long, value_name = "RRGGBB", default_value = "ffffff", value_parser = parse_rgb)]
        background: [u8; 3],
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TokenFormat {
    /// JSON: `{"width", "height", "fingerprint", "levels": [{"level", "height", "width", "tokens": [[..]]}]}`.
    Json,
    /// NumPy `.npy` version 1.0, one level as a HEIGHT×WIDTH array.
    Npy,
}

/// An image format `decode` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ImageFormatArg {
    /// PNG (lossless).
    Png,
    /// JPEG (lossy, quality 75).
    #[value(alias = "jpg")]
    Jpeg,
    /// WebP (lossless).
    Webp,
    /// BMP.
    Bmp,
    /// GIF (256 colours).
    Gif,
    /// TIFF.
    #[value(alias = "tif")]
    Tiff,
}

impl From<ImageFormatArg> for image::ImageFormat {
    fn from(f: ImageFormatArg) -> Self {
        match f {
            ImageFormatArg::Png => image::ImageFormat::Png,
            ImageFormatArg::Jpeg => image::ImageFormat::Jpeg,
            ImageFormatArg::Webp => image::ImageFormat::WebP,
            ImageFormatArg::Bmp => image::ImageFormat::Bmp,
            ImageFormatArg::Gif => image::ImageFormat::Gif,
            ImageFormatArg::Tiff => image::ImageFormat::Tiff,
        }
    }
}

/// `RRGGBB` or `#RRGGBB` in hex.
/// `--rd-lambda`: a finite number ≥ 0.
fn parse_rd_lambda(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a finite number ≥ 0")),
    }
}

fn parse_rgb(s: &str) -> std::result::Result<[u8; 3], String> {
    let hex = s.strip_prefix('#').unwrap_or(s);
    let channel = |i: usize| {
        hex.get(i..i + 2)
            .and_then(|c| u8::from_str_radix(c, 16).ok())
    };
    match (hex.len(), channel(0), channel(2), channel(4)) {
        (6, Some(r), Some(g), Some(b)) => Ok([r, g, b]),
        _ => Err(format!(
            "`{s}` is not a colour: give six hex digits RRGGBB, e.g. ffffff for white"
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.verbose);
    if !matches!(cli.global.backend, BackendArg::Cpu) {
        quiet_vulkan_device_select();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::from(EXIT_BROKEN_PIPE),
        Err(e) => {
            eprintln!("hvq: error: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// Mesa's implicit Vulkan layer `VK_LAYER_MESA_device_select` connects to the Wayland and X11
/// displays while wgpu enumerates adapters, only to sort the GPU that drives the screen first;
/// without `XDG_RUNTIME_DIR` libwayland prints `error: XDG_RUNTIME_DIR is invalid or not set in
/// the environment.` to stderr, twice. hvq draws nothing on a screen (wgpu's high-performance
/// preference picks the adapter), so the layer is turned off the way it documents
/// (`NODEVICE_SELECT=1`), unless the user set it or chose a device through it.
fn quiet_vulkan_device_select() {
    if std::env::var_os("NODEVICE_SELECT").is_none()
        && std::env::var_os("MESA_VK_DEVICE_SELECT").is_none()
    {
        // SAFETY: called from `main` before any thread is started (the model, rayon's pool and
        // wgpu come later), so nothing reads or writes the environment concurrently.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
}

/// Whether the error is standard output closed under us: the reader has gone, so there is
/// nobody to tell and nothing left to do.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes on one line, `outer: inner: innermost`, leaving out a cause whose
/// text the line already holds (many errors repeat their source's message in their own).
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let text = text.trim_end_matches('.');
        if text.is_empty() || line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    line
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    if verbose == 0 {
        // Probing for GPUs is not the user's concern unless asked for with -v: wgpu warns about
        // drivers and adapters that `--backend auto` then simply does not use.
        builder
            .filter_module("wgpu_hal", log::LevelFilter::Error)
            .filter_module("wgpu_core", log::LevelFilter::Error)
            // A file that ends inside a chunk: `warn_incomplete` says so, naming the file.
            .filter_module("hvq_codec::file", log::LevelFilter::Error);
    }
    builder.format_timestamp(None).parse_default_env().init();
}

fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    match cli.command {
        Command::Encode {
            input,
            output,
            levels,
            background,
            rd_lambda,
        } => encode(g, &input, &output, levels, (background, rd_lambda)),
        Command::Decode {
            input,
            output,
            level,
            format,
        } => decode(g, &input, &output, level, format),
        Command::Info { input } => info(g, &input),
        Command::Tokens {
            input,
            level,
            format,
            output,
            background,
        } => {
            let output = output.unwrap_or_else(|| PathBuf::from("-"));
            tokens(g, &input, level, format, &output, background)
        }
        Command::TokenizeDir {
            dir,
            output,
            levels,
            shard_size,
            jobs,
            add,
            memory_budget,
            background,
        } => {
            let codec = load_codec(g)?;
            // On a GPU the workers only decode and a device batch holds at most -j images.
            let default_jobs = match codec.backend() {
                hvq_codec::BackendKind::Cpu => rayon::current_num_threads(),
                _ => rayon::current_num_threads().max(32),
            };
            let jobs = jobs.map_or(default_jobs, |j| j as usize);
            let opts = tokenize_dir::Options {
                dir,
                out: output,
                levels: selection(levels),
                shard_size: shard_size as usize,
                jobs,
                add,
                memory_budget,
                background,
            };
            tokenize_dir::run(&codec, &opts)
        }
    }
}

/// Loads the model named by `--model`, or the embedded default, on the chosen backend.
fn load_codec(g: &Global) -> Result<Codec> {
    load_codec_rd(g, 0.0)
}

/// [`load_codec`] whose encodes choose tokens by rate and distortion with weight `rd_lambda`.
fn load_codec_rd(g: &Global, rd_lambda: f64) -> Result<Codec> {
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
    if g.precision == PrecisionArg::F16 && matches!(g.backend, BackendArg::Cpu) {
        bail!("--precision f16 runs on the wgpu backend only; the CPU backend is always f32");
    }
    let codec = builder
        .backend(backend)
        .gpu_f16(g.precision == PrecisionArg::F16)
        .tiling(g.tiling())
        .rate_distortion(rd_lambda)
        .build()
        .context("cannot start the model")?;
    log::info!(
        "model {} on the {} backend",
        &hvq_spec::fingerprint_hex(&codec.fingerprint())[..16],
        codec.backend()
    );
    Ok(codec)
}

/// `-l/--levels L,L,..` of the commands that store several levels (encode, tokenize-dir).
#[derive(clap::Args, Debug)]
struct LevelsArg {
    /// Levels to store, comma-separated (0 = finest). Default: every level of the model.
    #[arg(
        long,
        short = 'l',
        visible_alias = "level",
        value_delimiter = ',',
        value_name = "L,L,.."
    )]
    levels: Vec<usize>,
}

fn selection(LevelsArg { levels }: LevelsArg) -> LevelSelection {
    if levels.is_empty() {
        LevelSelection::All
    } else {
        LevelSelection::Only(levels)
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))
}

/// `-`: standard input or output.
fn is_std(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// How messages name a path: `-` is standard input or output.
fn shown(path: &Path, std_name: &str) -> String {
    if is_std(path) {
        std_name.to_string()
    } else {
        format!("`{}`", path.display())
    }
}

/// How a summary line names a path (no quotes).
fn summary_name(path: &Path, std_name: &str) -> String {
    if is_std(path) {
        std_name.to_string()
    } else {
        path.display().to_string()
    }
}

/// Reads an input file, or standard input for `-`. Standard input is read up to the limit on
/// file sizes (its length is not known in advance); a file is read whole (its size is known).
fn read_input(path: &Path, limits: &Limits) -> Result<Vec<u8>> {
    if !is_std(path) {
        return read(path);
    }
    let limit = limits.max_file_bytes;
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .context("cannot read standard input")?;
    if bytes.len() as u64 > limit {
        bail!("standard input holds more than the limit of {limit} bytes");
    }
    Ok(bytes)
}

/// Reads and decodes an image file (or standard input), checking its size before decoding pixels.
fn read_image(path: &Path, limits: &Limits, options: &DecodeOptions) -> Result<RgbImage> {
    let bytes = read_input(path, limits)?;
    RgbImage::decode_with(&bytes, limits, options)
        .with_context(|| format!("{} is not a usable image", shown(path, "standard input")))
}

/// Fails early, before any work, when `output` would replace `input` (the same file by any
/// path: the same device and inode on unix), or when binary data would go to a terminal.
fn check_output(input: &Path, output: &Path, binary: bool) -> Result<()> {
    if is_std(output) {
        if binary && std::io::stdout().is_terminal() {
            bail!(
                "refusing to write binary data to a terminal: redirect standard output to a file \
                 or a pipe, or give a file name with -o"
            );
        }
        return Ok(());
    }
    if is_std(input) {
        return Ok(());
    }
    if let (Ok(a), Ok(b)) = (std::fs::metadata(input), std::fs::metadata(output))
        && same_file(input, &a, output, &b)
    {
        bail!(
            "refusing to overwrite the input `{}` with the output `{}`: choose another -o",
            input.display(),
            output.display()
        );
    }
    Ok(())
}

#[cfg(unix)]
fn same_file(_: &Path, a: &std::fs::Metadata, _: &Path, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(a: &Path, _: &std::fs::Metadata, b: &Path, _: &std::fs::Metadata) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
}

/// Writes `bytes` to `path`, or to standard output for `-`.
fn write_output(path: &Path, bytes: &[u8]) -> Result<()> {
    if !is_std(path) {
        return write_atomic(path, bytes);
    }
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .context("cannot write to standard output")
}

/// Writes `path` whole or not at all: the bytes go to a new temporary file in the same folder
/// (created with `create_new`, i.e. `O_EXCL`, under an unpredictable name, so it never follows
/// a symlink or opens a file that exists), are synced to disk, and the file is renamed over
/// `path`. A symlink at `path` is replaced, not written through. On any failure the temporary
/// file is removed and `path` is left as it was.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let fail = || format!("cannot write `{}`", path.display());
    let name = path
        .file_name()
        .with_context(|| format!("`{}` does not name a file", path.display()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let (tmp, mut file) = create_temp(dir, name).with_context(fail)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| {
            drop(file);
            std::fs::rename(&tmp.0, path)
        });
    written.with_context(fail)?;
    tmp.keep();
    // The rename is durable once the folder is synced; not every platform can open a folder.
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A temporary file that is removed when dropped, unless kept.
struct TempFile(PathBuf);

impl TempFile {
    /// It was renamed into place: nothing to remove.
    fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Creates `.NAME.RANDOM.tmp` in `dir`, new (never an existing file or symlink).
fn create_temp(dir: &Path, name: &std::ffi::OsStr) -> std::io::Result<(TempFile, File)> {
    use std::hash::{BuildHasher, Hasher};
    let mut attempt = 0u32;
    loop {
        // std's hasher keys are random per process; the pid, time and attempt make names
        // differ between calls. O_EXCL, not the name, is what makes this safe.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u32(attempt);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{:016x}.tmp", h.finish()));
        let tmp = dir.join(tmp_name);
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(file) => return Ok((TempFile(tmp), file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Warns about a `.hvq` file whose end is not a complete level.
fn warn_incomplete(input: &Path, level: usize) {
    eprintln!(
        "warning: {} is truncated or has data appended after its last complete level; using \
         level {level}, the finest complete one",
        shown(input, "standard input")
    );
}

fn encode(
    g: &Global,
    input: &Path,
    output: &Path,
    levels: LevelsArg,
    (background, rd_lambda): ([u8; 3], f64),
) -> Result<()> {
    check_output(input, output, true)?;
    let codec = load_codec_rd(g, rd_lambda)?;
    let options = DecodeOptions::default().background(background);
    let image = read_image(input, codec.limits(), &options)?;
    let bar = TileBar::new(&codec, image.width(), image.height(), "encoding");
    let bytes = codec
        .encode_to_hvq_with_progress(&image, selection(levels), |p| bar.set(p))
        .with_context(|| format!("cannot encode {}", shown(input, "standard input")))?;
    bar.finish();
    write_output(output, &bytes)?;
    let bpp = bytes.len() as f64 * 8.0 / (f64::from(image.width()) * f64::from(image.height()));
    eprintln!(
        "{}: {}×{} → {} bytes ({bpp:.4} bpp)",
        summary_name(output, "standard output"),
        image.width(),
        image.height(),
        bytes.len()
    );
    Ok(())
}

/// A progress bar over an image's tiles, on stderr when it is a terminal and the image runs in
/// more than one tile (a 48-megapixel photo takes minutes on a CPU); otherwise nothing.
struct TileBar(Option<indicatif::ProgressBar>);

impl TileBar {
    fn new(codec: &Codec, width: u32, height: u32, what: &str) -> Self {
        let tiles = codec.tiles_for(width, height);
        if tiles < 2 || !std::io::stderr().is_terminal() {
            return TileBar(None);
        }
        let bar = indicatif::ProgressBar::new(tiles as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {pos}/{len} tiles, {elapsed} (eta {eta})",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(format!("{what} {width}×{height}"));
        TileBar(Some(bar))
    }

    fn set(&self, p: hvq_codec::Progress) {
        if let Some(bar) = &self.0 {
            bar.set_position(p.done as u64);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// The image format of `decode`'s output: `--format`, else OUT's extension, else PNG for
/// standard output.
fn output_format(output: &Path, format: Option<ImageFormatArg>) -> Result<image::ImageFormat> {
    if let Some(f) = format {
        return Ok(f.into());
    }
    if is_std(output) {
        return Ok(image::ImageFormat::Png);
    }
    image::ImageFormat::from_path(output)
        .ok()
        .filter(|f| f.writing_enabled())
        .with_context(|| {
            format!(
                "cannot tell an image format this build writes from `{}`; name one with --format",
                output.display()
            )
        })
}

fn decode(
    g: &Global,
    input: &Path,
    output: &Path,
    level: Option<usize>,
    format: Option<ImageFormatArg>,
) -> Result<()> {
    let format = output_format(output, format)?;
    check_output(input, output, true)?;
    let bytes = read_input(input, &Limits::default())?;
    let codec = load_codec(g)?;
    let size = hvq_codec::inspect(&bytes).map_or((1, 1), |i| (i.width, i.height));
    let bar = TileBar::new(&codec, size.0, size.1, "decoding");
    let decoded = codec
        .decode_hvq_with_progress(&bytes, level, |p| bar.set(p))
        .with_context(|| format!("cannot decode {}", shown(input, "standard input")))?;
    bar.finish();
    if decoded.truncated {
        warn_incomplete(input, decoded.level);
    }
    let encoded = decoded.image.encode_as(format)?;
    write_output(output, &encoded)?;
    eprintln!(
        "{}: level {}, {}×{}",
        summary_name(output, "standard output"),
        decoded.level,
        decoded.image.width(),
        decoded.image.height()
    );
    Ok(())
}

fn info(g: &Global, input: &Path) -> Result<()> {
    let bytes = read_input(input, &Limits::default())?;
    let info = hvq_codec::inspect(&bytes)
        .with_context(|| format!("cannot read {}", shown(input, "standard input")))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "file:        {}",
        summary_name(input, "standard input")
    )?;
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
            None if l.context_coded => "context".into(),
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
    output: &Path,
    background: [u8; 3],
) -> Result<()> {
    check_output(input, output, format == TokenFormat::Npy)?;
    let codec = load_codec(g)?;
    let bytes = read_input(input, codec.limits())?;
    let mut tokens = if hvq_codec::is_hvq(&bytes) {
        let (tokens, truncated) = codec
            .read_hvq(&bytes)
            .with_context(|| format!("cannot read {}", shown(input, "standard input")))?;
        if truncated && let Some(finest) = tokens.finest() {
            warn_incomplete(input, finest.level);
        }
        tokens
    } else {
        let options = DecodeOptions::default().background(background);
        let image = RgbImage::decode_with(&bytes, codec.limits(), &options).with_context(|| {
            format!(
                "{} is neither a .hvq file nor a usable image",
                shown(input, "standard input")
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
                "level {l} is not in {} (levels present: {:?})",
                shown(input, "standard input"),
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
    write_output(output, &buf)
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
