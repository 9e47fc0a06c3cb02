//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in training, evaluation and export.
///
/// Split by whose fault it is: bad input (data, config, weight files), the environment
/// (I/O, missing device), and the libraries underneath (libtorch, the spec crate).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// Reading or writing a file failed.
    #[error("I/O error on `{path}`: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An image file could not be decoded (returned by the data loader, which skips it with a warning).
    #[error("cannot decode image `{path}`: {source}")]
    ImageDecode {
        /// The image file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: image::ImageError,
    },
    /// A data folder does not exist or holds no usable image.
    #[error("data folder `{path}` {reason}")]
    EmptyData {
        /// The folder.
        path: PathBuf,
        /// What is wrong ("does not exist", "holds no JPEG or PNG image", ...).
        reason: String,
    },
    /// A training/evaluation configuration value is invalid.
    #[error("bad config: field `{field}`: {reason}")]
    BadConfig {
        /// The offending field (dotted TOML path).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A TOML config file does not parse.
    #[error("config file `{path}` does not parse: {source}")]
    ConfigParse {
        /// The config file.
        path: PathBuf,
        /// The TOML error, with line and column.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// The LPIPS weight file is absent.
    #[error("LPIPS weights not found at `{path}` (see shared/data/README.md, or set `lpips_path`)")]
    MissingLpips {
        /// The path looked at.
        path: PathBuf,
    },
    /// libtorch reported an error.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A model config or weight file failed validation.
    #[error(transparent)]
    Spec(#[from] hvq_spec::SpecError),
    /// CUDA was asked for but is not usable here.
    #[error("CUDA requested but not available: {reason}")]
    CudaUnavailable {
        /// Why (library not found, no device, ...).
        reason: String,
    },
    /// A checkpoint does not belong to this run (different model, optimizer or shapes).
    #[error("checkpoint `{path}` does not match this run: {reason}")]
    CheckpointMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
    /// The data folder given to `Dataset::open` does not exist or is not a folder.
    #[error("data folder `{path}` does not exist or is not a folder")]
    DataDirMissing {
        /// The path looked at.
        path: PathBuf,
    },
    /// The data folder holds no file with an image extension (searched recursively).
    #[error(
        "data folder `{path}` holds no image file (extensions {extensions:?}, searched recursively)"
    )]
    NoImages {
        /// The folder.
        path: PathBuf,
        /// The extensions looked for.
        extensions: Vec<String>,
    },
    /// The data folder has too few images to hold out the validation set and still train.
    #[error(
        "data folder `{path}` has {found} images, not more than the {val_count} held out for validation"
    )]
    TooFewImages {
        /// The folder.
        path: PathBuf,
        /// Images found.
        found: usize,
        /// `data.val_count`.
        val_count: usize,
    },
    /// Not one of the loader's files could be decoded.
    #[error("none of the {count} image files could be decoded (while making batch {step})")]
    NoDecodableImages {
        /// Files tried.
        count: usize,
        /// The batch being made.
        step: u64,
    },
    /// A data loader thread stopped unexpectedly.
    #[error("data loader worker stopped before delivering batch {step}")]
    LoaderStopped {
        /// The batch that was awaited.
        step: u64,
    },
    /// An LPIPS weight file lacks a tensor or holds it with the wrong shape.
    #[error("LPIPS weights `{path}`: tensor `{tensor}` expected shape {expected:?}, found {got:?}")]
    LpipsTensor {
        /// The weight file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The shape it must have.
        expected: Vec<i64>,
        /// Its shape in the file, `None` when absent.
        got: Option<Vec<i64>>,
    },
    /// Two tensors compared by a metric or by LPIPS do not have the same, expected layout.
    #[error("{what}: shapes {a:?} and {b:?} do not match")]
    ShapeMismatch {
        /// What was being computed and the layout it needs.
        what: &'static str,
        /// Shape of the first tensor.
        a: Vec<i64>,
        /// Shape of the second tensor.
        b: Vec<i64>,
    },
    /// An image is too small for a metric (MS-SSIM needs 161 pixels a side, LPIPS-Alex 31, LPIPS-VGG 16).
    #[error("{what} needs images of at least {min}x{min} pixels, got {width}x{height}")]
    ImageTooSmall {
        /// The metric.
        what: &'static str,
        /// The smallest allowed side.
        min: i64,
        /// The image height.
        height: i64,
        /// The image width.
        width: i64,
    },
    /// A line of a JSON-lines training log does not parse.
    #[error("training log `{path}` line {line}: {source}")]
    LogParse {
        /// The log file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// None of the training logs given to `plot_losses` holds a per-level loss.
    #[error("no per-level loss values found in {paths:?}")]
    NoLossData {
        /// The logs read.
        paths: Vec<PathBuf>,
    },
    /// The plotting library failed to draw or write the figure.
    #[error("cannot draw plot `{path}`: {source}")]
    Plot {
        /// The output image.
        path: PathBuf,
        /// The plotting library's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The training loss became NaN or infinite (usually a learning rate too high for the
    /// batch, or an LPIPS file that does not hold the weights it claims). Nothing of that
    /// step was applied; the last checkpoint is intact.
    #[error(
        "the training loss became {loss} at step {step} (per-level totals {levels:?}); lower schedule.lr or check the data and LPIPS weights, then resume from the last checkpoint"
    )]
    NonFiniteLoss {
        /// The step (1-based) whose loss was not finite.
        step: u64,
        /// The summed loss.
        loss: f64,
        /// Each level's weighted loss, finest first.
        levels: Vec<f64>,
    },
    /// Statistics were asked of a trainer that has not taken a step.
    #[error("no training step has been taken yet, so there are no statistics")]
    NoStep,
    /// A launcher variable (`WORLD_SIZE`, `RANK`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`)
    /// needed for a multi-process run is not set (returned by `distributed::World::parse`).
    #[error(
        "environment variable {var} is not set (needed when WORLD_SIZE > 1; launch with torchrun)"
    )]
    LaunchEnvMissing {
        /// The variable.
        var: &'static str,
    },
    /// A launcher variable does not hold what it should (returned by `distributed::World::parse`).
    #[error("environment variable {var}={value:?} is not {expected}")]
    LaunchEnvGarbled {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What it should be ("a non-negative integer", "a port number", ...).
        expected: &'static str,
    },
    /// Two launcher variables contradict each other, e.g. `RANK` not below `WORLD_SIZE`
    /// (returned by `distributed::World::parse`).
    #[error("environment variable {var}={value} must be below {bound_var}={bound}")]
    LaunchEnvInconsistent {
        /// The variable out of range.
        var: &'static str,
        /// Its value.
        value: usize,
        /// The variable bounding it.
        bound_var: &'static str,
        /// Its value.
        bound: usize,
    },
    /// `libnccl.so.2` could not be loaded (returned by `distributed::Nccl::new`).
    #[error("libnccl.so.2 not found in {searched:?} (pip torch ships it under nvidia/nccl/lib){}", detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    NcclUnavailable {
        /// The folders and names tried.
        searched: Vec<PathBuf>,
        /// The dynamic loader's last message, if any.
        detail: Option<String>,
    },
    /// A symbol the NCCL or CUDA runtime API needs was not found in the loaded library.
    #[error("symbol {symbol} not found in {library}")]
    MissingSymbol {
        /// The C function.
        symbol: &'static str,
        /// The library searched.
        library: String,
    },
    /// An NCCL or CUDA runtime call failed (returned by the `distributed::Nccl` collectives).
    #[error("{call} failed with code {code}: {message}")]
    CollectiveCall {
        /// The C function.
        call: &'static str,
        /// Its result code.
        code: i32,
        /// `ncclGetErrorString` of the code.
        message: String,
    },
    /// A tensor handed to a collective is not one it can reduce (returned by the
    /// `distributed::Collective` operations).
    #[error("{op}: tensor of kind {kind:?} on {device:?} is not {expected}")]
    CollectiveTensor {
        /// The operation.
        op: &'static str,
        /// The tensor's kind.
        kind: tch::Kind,
        /// The tensor's device.
        device: tch::Device,
        /// What the operation accepts.
        expected: &'static str,
    },
    /// The ranks of a collective passed tensors of different kinds or sizes (returned by
    /// `distributed::LocalGroup`).
    #[error("{op}: rank {rank} passed {got} elements, rank 0 passed {expected} (or another kind)")]
    CollectiveMismatch {
        /// The operation.
        op: &'static str,
        /// The first rank that differs.
        rank: usize,
        /// Its element count.
        got: usize,
        /// Rank 0's element count.
        expected: usize,
    },
    /// Not every rank joined a collective in time (returned by `distributed::LocalGroup`, and
    /// by the NCCL rendezvous when rank 0 cannot be reached).
    #[error("{op}: not every rank arrived within {secs} s{}", addr.as_ref().map(|a| format!(" (at {a})")).unwrap_or_default())]
    CollectiveTimeout {
        /// The operation.
        op: &'static str,
        /// How long was waited.
        secs: u64,
        /// The rendezvous address, for the NCCL id exchange.
        addr: Option<String>,
    },
    /// The TCP exchange of the NCCL id failed (returned by `distributed::Nccl::new`).
    #[error("NCCL id exchange at {addr}: {source}")]
    Rendezvous {
        /// `MASTER_ADDR:port`.
        addr: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// A shard folder's index (`hvq-shards.json`) does not parse or describes impossible
    /// shards: another format, a member beyond the end of its shard, a name that would leave
    /// the folder, a name listed twice (returned by `data::Dataset::open` on a shard folder,
    /// `shards::open` and `shards::verify`).
    #[error("shard index `{path}`: {reason}")]
    ShardIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong, naming the shard or member.
        reason: String,
    },
    /// A shard does not hold what its index says (returned by `shards::open` for its length,
    /// `shards::verify` for its SHA-256 and tar headers, and by reads of a packed member for its
    /// CRC-32 or a short read; the loader skips such a member like an undecodable file).
    #[error("shard `{shard}`{}: {what} is {got}, the index says {expected}", offset.map(|o| format!(" at byte {o}")).unwrap_or_default())]
    ShardDamaged {
        /// The shard file.
        shard: PathBuf,
        /// The byte where the member or header in question starts, if it is one member's.
        offset: Option<u64>,
        /// What was checked ("length", "SHA-256", "member CRC-32", ...).
        what: &'static str,
        /// What the index says.
        expected: String,
        /// What the shard holds.
        got: String,
    },
    /// `shards::pack` cannot store a file under its relative path (not UTF-8, or too long for
    /// a ustar header), or would write its shards into the folder it packs.
    #[error("cannot pack `{path}`: {reason}")]
    Unpackable {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// An input is too large for the model (e.g. full attention over a big latent grid).
    #[error("{what}: {got} exceeds the limit of {limit}")]
    TooLarge {
        /// What was measured.
        what: String,
        /// The limit.
        limit: u64,
        /// The measured size.
        got: u64,
    },
}

impl TrainError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }

    /// A bad-config error.
    pub fn bad_config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        TrainError::BadConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
