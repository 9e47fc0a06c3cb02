//! The training data pipeline: an image folder (or a folder of packed shards, see
//! [`crate::shards`]), its fixed validation split, and a deterministic, prefetching batch loader.
//!
//! ```no_run
//! use hvq_train::data::{DataConfig, Dataset, Loader, LoaderOptions};
//! # fn main() -> Result<(), hvq_train::TrainError> {
//! let cfg = DataConfig::default();
//! let ds = Dataset::open("../shared/data/imagenet-sample".as_ref(), &cfg)?;
//! let loader = Loader::start(ds.train().to_vec(), &LoaderOptions::new(8, cfg.image_size, 42))?;
//! for batch in loader.take(2) {
//!     let batch = batch?;
//!     assert_eq!(batch.images.size(), [8, 3, 256, 256]);
//! }
//! # Ok(()) }
//! ```
//!
//! Determinism: batch `k` of a loader (which files, which crop, which flip) is a pure function
//! of `(seed, k)` and the file list, whatever the number of workers, so a run resumed at step
//! `k` sees exactly the data an uninterrupted run would have seen. A loader can make only one
//! rank's slice of every batch ([`LoaderSlice`]); the slices of all ranks, in rank order, are the
//! whole batch byte for byte. A shard folder packed from an image folder gives the same batches
//! as the folder itself.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};
use image::{RgbImage, imageops::FilterType};
use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::TrainError;
use crate::manifest;

/// Smallest and largest fraction of the source image's area a random crop covers.
pub const CROP_SCALE: (f64, f64) = (0.35, 1.0);
/// Smallest and largest aspect ratio (width / height) of a random crop.
pub const CROP_ASPECT: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);

/// How the training images are read. Part of the run's TOML config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Side of the square training crops, in pixels.
    pub image_size: u32,
    /// Number of images held out for validation (a fixed set, see [`Dataset::open`]).
    pub val_count: usize,
    /// Decoding threads (0 is taken as 1).
    pub workers: usize,
    /// Batches decoded ahead of the one the model is using.
    pub prefetch: usize,
    /// File extensions that count as images, compared case-insensitively, without the dot.
    pub extensions: Vec<String>,
    /// Folder for the cached file lists of data folders (see [`crate::manifest`]); relative
    /// to the working directory. Unset: `$HVQ_CACHE_DIR/manifests`, else
    /// `$XDG_CACHE_HOME/hvq/manifests`, else `$HOME/.cache/hvq/manifests`, else no caching.
    /// Nothing is ever written into the data folder itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_dir: Option<PathBuf>,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            image_size: 256,
            val_count: 50,
            workers: 2,
            prefetch: 4,
            extensions: ["jpg", "jpeg", "png"].map(String::from).to_vec(),
            manifest_dir: None,
        }
    }
}

/// Where one image's encoded bytes are: a file, or a byte range of a packed shard.
///
/// Both decode the same way ([`ImageRef::decode_rgb8`]): the format is guessed from the content
/// (the extension only as a fallback), through the `image` crate's default limits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ImageRef {
    /// An image file.
    File(PathBuf),
    /// A member of a packed shard folder ([`crate::shards`]).
    Packed(crate::shards::Member),
}

impl From<PathBuf> for ImageRef {
    fn from(path: PathBuf) -> Self {
        ImageRef::File(path)
    }
}

impl ImageRef {
    /// The file, or for a packed member `SHARD_DIR/<member name>` (a name, not a file: the
    /// path the image had below the folder it was packed from, under the shard folder). Used in
    /// messages and, relative to the data folder, for the validation split.
    pub fn path(&self) -> &Path {
        match self {
            ImageRef::File(p) => p,
            ImageRef::Packed(m) => m.path(),
        }
    }

    /// Decodes the image to RGB8.
    ///
    /// Errors: [`TrainError::Io`] when it cannot be read, [`TrainError::ImageDecode`] when it is
    /// not a decodable image, [`TrainError::ShardDamaged`] when a packed member's bytes do not
    /// match the index.
    pub fn decode_rgb8(&self) -> Result<RgbImage, TrainError> {
        match self {
            ImageRef::File(p) => decode_rgb8(p),
            ImageRef::Packed(m) => decode_bytes(m.path(), m.read()?),
        }
    }

    /// The whole image as an f32 tensor `[3, H, W]` in [0, 1] (as [`load_image_f32`]).
    ///
    /// Errors: as [`ImageRef::decode_rgb8`].
    pub fn load_f32(&self) -> Result<Tensor, TrainError> {
        Ok(to_tensor(&self.decode_rgb8()?))
    }

    /// The evaluation centre crop of [`load_center_crop`].
    ///
    /// Errors: as [`ImageRef::decode_rgb8`]; [`TrainError::BadConfig`] for `size == 0`.
    pub fn load_center_crop(&self, size: u32) -> Result<Tensor, TrainError> {
        check_crop_size(size)?;
        Ok(to_tensor(&center_crop(&self.decode_rgb8()?, size)))
    }
}

/// An image folder (or a packed shard folder) split into a training set and a fixed
/// validation set.
#[derive(Debug, Clone)]
pub struct Dataset {
    root: PathBuf,
    train: Vec<ImageRef>,
    val: Vec<ImageRef>,
    from_manifest: bool,
    packed: bool,
}

impl Dataset {
    /// Walks `dir` recursively for files whose extension is in `cfg.extensions` and splits them.
    ///
    /// The validation set is the `cfg.val_count` files whose relative paths have the smallest
    /// FNV-1a hash: fixed for a given folder, independent of the seed and of the walk order, and
    /// stable when files are added (a new file only enters it if its hash is among the smallest).
    /// Both lists are sorted by path.
    ///
    /// The walk's result is cached in a manifest in `cfg.manifest_dir` (or the default cache
    /// folder, see [`DataConfig::manifest_dir`]), never in `dir`, and reused while the folder is
    /// unchanged (see [`crate::manifest`]: one `stat` per folder instead of one per file); the
    /// lists are the same either way. Where the cache cannot be read or written, `dir` is walked
    /// at every call.
    ///
    /// A folder holding a shard index ([`crate::shards::INDEX_FILE`], written by
    /// [`crate::shards::pack`]) is read as packed shards instead: its members are the images,
    /// under their relative paths in the folder they were packed from, so the split, the order
    /// and hence every batch are those of that folder (members whose names lack one of
    /// `cfg.extensions` are left out, as the walk would). Nothing is walked or cached then.
    ///
    /// Errors: [`TrainError::DataDirMissing`] when `dir` is not a folder,
    /// [`TrainError::NoImages`] when it holds no matching file, [`TrainError::TooFewImages`] when
    /// there would be no training image left after the split, [`TrainError::Io`] on a walk error;
    /// for a shard folder [`TrainError::ShardIndex`] and [`TrainError::ShardDamaged`] (see
    /// [`crate::shards::open`]).
    pub fn open(dir: &Path, cfg: &DataConfig) -> Result<Dataset, TrainError> {
        if !dir.is_dir() {
            return Err(TrainError::DataDirMissing {
                path: dir.to_path_buf(),
            });
        }
        let packed = crate::shards::is_shard_folder(dir);
        let (images, from_manifest) = if packed {
            let members = crate::shards::open(dir)?;
            let images: Vec<ImageRef> = members
                .into_iter()
                .filter(|m| has_extension(m.path(), &cfg.extensions))
                .map(ImageRef::Packed)
                .collect();
            (images, false)
        } else {
            let (files, from_manifest) = list_cached(dir, cfg)?;
            (
                files.into_iter().map(ImageRef::File).collect(),
                from_manifest,
            )
        };
        if images.is_empty() {
            return Err(TrainError::NoImages {
                path: dir.to_path_buf(),
                extensions: cfg.extensions.clone(),
            });
        }
        if images.len() <= cfg.val_count {
            return Err(TrainError::TooFewImages {
                path: dir.to_path_buf(),
                found: images.len(),
                val_count: cfg.val_count,
            });
        }
        let (train, val) = split_validation(dir, images, cfg.val_count);
        Ok(Dataset {
            root: dir.to_path_buf(),
            train,
            val,
            from_manifest,
            packed,
        })
    }

    /// Whether the file list came from the cached manifest rather than a walk.
    pub fn from_manifest(&self) -> bool {
        self.from_manifest
    }

    /// Whether the images are members of packed shards rather than files.
    pub fn is_packed(&self) -> bool {
        self.packed
    }

    /// The folder the dataset was read from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Training images, sorted by path.
    pub fn train(&self) -> &[ImageRef] {
        &self.train
    }

    /// Validation images, sorted by path; disjoint from [`Dataset::train`].
    pub fn val(&self) -> &[ImageRef] {
        &self.val
    }
}

/// The sorted image files of `dir`, from its cached manifest when that is still valid, else
/// from a walk (which is then cached); and whether the manifest gave them.
fn list_cached(dir: &Path, cfg: &DataConfig) -> Result<(Vec<PathBuf>, bool), TrainError> {
    let is_image = |p: &Path| has_extension(p, &cfg.extensions);
    // Located before the walk: it notes the folder's mtime, which `store` checks again.
    let cache = manifest::Cache::locate(dir, cfg.manifest_dir.as_deref());
    let cached = cache
        .as_ref()
        .and_then(|c| c.load(dir, &cfg.extensions, &is_image));
    if let Some(files) = cached {
        return Ok((files, true));
    }
    let walk = walk_images(dir, &cfg.extensions)?;
    if let Some(c) = &cache {
        c.store(dir, &cfg.extensions, &walk, std::time::SystemTime::now());
    }
    Ok((walk.files, false))
}

/// Sorted list of the files under `dir` with one of `extensions` (case-insensitive).
pub(crate) fn list_images(dir: &Path, extensions: &[String]) -> Result<Vec<PathBuf>, TrainError> {
    walk_images(dir, extensions).map(|w| w.files)
}

/// Walks `dir` (following links) for the files of [`list_images`], also noting every sub-folder
/// and its mtime for the manifest.
fn walk_images(dir: &Path, extensions: &[String]) -> Result<manifest::Walk, TrainError> {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    for entry in walkdir::WalkDir::new(dir).follow_links(true) {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(dir).to_path_buf();
            TrainError::io(path, e.into())
        })?;
        if entry.file_type().is_file() && has_extension(entry.path(), extensions) {
            files.push(entry.into_path());
        } else if entry.file_type().is_dir() && entry.depth() > 0 {
            let mtime = entry.metadata().ok().and_then(|m| m.modified().ok());
            dirs.push((entry.into_path(), mtime));
        }
    }
    files.sort();
    Ok(manifest::Walk { files, dirs })
}

pub(crate) fn has_extension(path: &Path, extensions: &[String]) -> bool {
    let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
        return false;
    };
    extensions
        .iter()
        .any(|x| x.trim_start_matches('.').eq_ignore_ascii_case(ext))
}

/// Splits sorted `images` into (train, val) by the hash of each path relative to `root`.
fn split_validation(
    root: &Path,
    images: Vec<ImageRef>,
    val_count: usize,
) -> (Vec<ImageRef>, Vec<ImageRef>) {
    let mut keyed: Vec<(u64, usize)> = images
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let p = f.path();
            (path_hash(p.strip_prefix(root).unwrap_or(p)), i)
        })
        .collect();
    // Ties broken by the (sorted) index, so the split is total and fixed.
    keyed.sort_unstable();
    let val_idx: HashSet<usize> = keyed.iter().take(val_count).map(|&(_, i)| i).collect();
    let (mut val, mut train) = (Vec::new(), Vec::new());
    for (i, f) in images.into_iter().enumerate() {
        if val_idx.contains(&i) {
            val.push(f)
        } else {
            train.push(f)
        }
    }
    (train, val)
}

/// FNV-1a over the path's components joined by `/`: the same on every platform and Rust
/// version, unlike `std`'s `DefaultHasher`.
fn path_hash(rel: &Path) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, comp) in rel.components().enumerate() {
        let bytes = comp.as_os_str().to_string_lossy();
        let sep: &[u8] = if k > 0 { b"/" } else { b"" };
        for &b in sep.iter().chain(bytes.as_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Decodes an image file to RGB8 through the `image` crate's default limits (which cap the
/// allocation before decoding), guessing the format from the content, not the extension.
pub fn decode_rgb8(path: &Path) -> Result<RgbImage, TrainError> {
    let reader = image::ImageReader::open(path).map_err(|e| TrainError::io(path, e))?;
    decode_with(path, reader)
}

/// Decodes encoded image `bytes` read from `path` as [`decode_rgb8`] decodes a file: the format
/// from the content, else from the extension; the same limits.
fn decode_bytes(path: &Path, bytes: Vec<u8>) -> Result<RgbImage, TrainError> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes));
    if let Ok(format) = image::ImageFormat::from_path(path) {
        reader.set_format(format);
    }
    decode_with(path, reader)
}

/// The format guessed from the content (over the one the extension gave), then decoded to RGB8.
fn decode_with<R: std::io::BufRead + std::io::Seek>(
    path: &Path,
    reader: image::ImageReader<R>,
) -> Result<RgbImage, TrainError> {
    let reader = reader
        .with_guessed_format()
        .map_err(|e| TrainError::io(path, e))?;
    let img = reader.decode().map_err(|source| TrainError::ImageDecode {
        path: path.to_path_buf(),
        source,
    })?;
    // `into_rgb8` is free for the usual RGB8 JPEG; `to_rgb8` copied it.
    Ok(img.into_rgb8())
}

/// RGB8 to an f32 tensor `[3, H, W]` in [0, 1].
fn to_tensor(img: &RgbImage) -> Tensor {
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    Tensor::from_slice(&rgb_to_chw(img)).view([3, h, w])
}

fn check_crop_size(size: u32) -> Result<(), TrainError> {
    if size == 0 {
        return Err(TrainError::bad_config(
            "center crop",
            "size must be positive",
        ));
    }
    Ok(())
}

/// Loads a whole image (no crop, no resize) as an f32 tensor `[3, H, W]` with values in [0, 1].
///
/// Errors: [`TrainError::Io`] when the file cannot be read, [`TrainError::ImageDecode`] when it
/// is not a decodable image.
pub fn load_image_f32(path: &Path) -> Result<Tensor, TrainError> {
    Ok(to_tensor(&decode_rgb8(path)?))
}

/// Loads the central `size`×`size` square of an image, after resizing it (triangle filter,
/// antialiased) so that its shorter side is `size`: the usual evaluation crop (the seed paper
/// evaluates 256×256 centre crops). As an f32 tensor `[3, size, size]` in [0, 1].
///
/// Errors: as [`load_image_f32`]; [`TrainError::BadConfig`] for `size == 0`.
pub fn load_center_crop(path: &Path, size: u32) -> Result<Tensor, TrainError> {
    check_crop_size(size)?;
    Ok(to_tensor(&center_crop(&decode_rgb8(path)?, size)))
}

/// Resize so the shorter side is `size` (never below 1 pixel on the longer), then crop the centre.
fn center_crop(img: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let short = w.min(h).max(1);
    let scale = f64::from(size) / f64::from(short);
    let rw = ((f64::from(w) * scale).round() as u32).max(size);
    let rh = ((f64::from(h) * scale).round() as u32).max(size);
    let resized = image::imageops::resize(img, rw, rh, FilterType::Triangle);
    let (x, y) = ((rw - size) / 2, (rh - size) / 2);
    image::imageops::crop_imm(&resized, x, y, size, size).to_image()
}

/// RGB8 pixels to planar f32 in [0, 1] (channel-major, the tensor layout).
fn rgb_to_chw(img: &RgbImage) -> Vec<f32> {
    let plane = img.width() as usize * img.height() as usize;
    let mut out = vec![0f32; 3 * plane];
    for (p, px) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + p] = f32::from(px.0[c]) / 255.0;
        }
    }
    out
}

/// Interleaved RGB to planar `[3, H, W]` bytes.
fn rgb_to_chw_u8(img: &RgbImage) -> Vec<u8> {
    let plane = img.width() as usize * img.height() as usize;
    let mut out = vec![0u8; 3 * plane];
    for (p, px) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + p] = px.0[c];
        }
    }
    out
}

/// One training batch.
#[derive(Debug)]
pub struct Batch {
    /// The batch index (the training step it is meant for).
    pub step: u64,
    /// Images `[B, 3, S, S]` (`[B/w, 3, S, S]` for a [`LoaderSlice`] of `w` ranks), u8 in
    /// `0..=255`, on the CPU: a quarter of f32's bytes to copy and upload;
    /// [`crate::train::Trainer::advance`] converts them to `[0, 1]` on the device.
    pub images: Tensor,
}

/// What a worker hands over: batch `step` as planar u8, or why it could not be made.
type WorkerResult = Result<Vec<u8>, TrainError>;

/// Which part of every global batch a loader makes: rank `rank` of `world` makes samples
/// `[rank·B/world, (rank+1)·B/world)` of each global batch of `B`, the slice
/// [`crate::distributed::shard`] would cut from the whole batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderSlice {
    /// This rank, `0..world`.
    pub rank: usize,
    /// Number of ranks sharing every global batch.
    pub world: usize,
}

impl LoaderSlice {
    /// The whole batch (one rank of one).
    pub const WHOLE: LoaderSlice = LoaderSlice { rank: 0, world: 1 };

    /// The sample range `[first, first + len)` of a global batch of `batch` this slice makes.
    ///
    /// Errors: [`TrainError::BadConfig`] (`schedule.batch`) when `batch` is not divisible by
    /// `world`, or `world` is 0 or `rank` not below it.
    pub fn range(&self, batch: usize) -> Result<std::ops::Range<usize>, TrainError> {
        if self.world == 0 || self.rank >= self.world {
            return Err(TrainError::bad_config(
                "data slice",
                format!("rank {} of {} ranks", self.rank, self.world),
            ));
        }
        if !batch.is_multiple_of(self.world) {
            return Err(TrainError::bad_config(
                "schedule.batch",
                format!(
                    "the global batch of {batch} images must be divisible by the {} processes",
                    self.world
                ),
            ));
        }
        let local = batch / self.world;
        Ok(self.rank * local..(self.rank + 1) * local)
    }
}

/// How a [`Loader`] makes batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderOptions {
    /// Images per global batch (`schedule.batch`).
    pub batch: usize,
    /// Side of the square crops, in pixels.
    pub image_size: u32,
    /// The run's seed: with the step, it fixes every batch.
    pub seed: u64,
    /// The first batch delivered.
    pub start_step: u64,
    /// Decoding threads (0 is taken as 1).
    pub workers: usize,
    /// Batches decoded ahead (at least one per worker).
    pub prefetch: usize,
    /// The part of every global batch this loader makes.
    pub slice: LoaderSlice,
}

impl LoaderOptions {
    /// Whole batches of `batch` crops of `image_size`² from step 0, one worker, one batch ahead.
    pub fn new(batch: usize, image_size: u32, seed: u64) -> LoaderOptions {
        LoaderOptions {
            batch,
            image_size,
            seed,
            start_step: 0,
            workers: 1,
            prefetch: 1,
            slice: LoaderSlice::WHOLE,
        }
    }
}

/// Everything a worker needs to build any batch; shared read-only by all workers.
#[derive(Debug)]
struct BatchPlan {
    images: Vec<ImageRef>,
    /// The global batch size `B`.
    batch: usize,
    /// The samples of each global batch this loader makes.
    samples: std::ops::Range<usize>,
    image_size: u32,
    seed: u64,
    /// Indices of images that failed to decode: each warned about once, then skipped.
    bad: Mutex<HashSet<usize>>,
}

/// An endless iterator of training batches, decoded ahead by worker threads.
///
/// Sample `i` of batch `k` is entry `(k·B + i) mod n` of the permutation of epoch
/// `(k·B + i) div n`, itself drawn from `(seed, epoch)`; its crop and flip come from a ChaCha
/// RNG seeded from `(seed, k, i)`. Worker `w` makes batches `k ≡ w (mod workers)` and sends them
/// through its own bounded channel, which the iterator reads round-robin: delivery order is
/// always `start_step, start_step + 1, ...`, and at most `prefetch` batches wait in memory.
///
/// With a [`LoaderSlice`] the loader makes only samples `[r·B/w, (r+1)·B/w)` of each batch,
/// with the same `i`, so the ranks' slices in rank order are the whole batch byte for byte.
///
/// An image that cannot be decoded is reported once on stderr, counted ([`Loader::skipped`])
/// and replaced by the next decodable image of the same permutation. Which image replaces it
/// depends only on which images decode, not on what this loader met before (the set of bad
/// images only saves decoding them again), so every rank, and a resumed run, picks the same
/// replacement: slices never diverge, and a replacement can appear twice in a batch exactly
/// when it does in a single process. (An image that fails only sometimes, such as a read error
/// on a flaky network file system, breaks this, as it breaks resume.) Items are `Err` only
/// when no image at all can be decoded or a worker died; the iterator ends after such an error.
pub struct Loader {
    receivers: Vec<Receiver<WorkerResult>>,
    handles: Vec<JoinHandle<()>>,
    plan: Arc<BatchPlan>,
    /// The first step delivered: worker `w` makes steps `start_step + w + k·workers`.
    start_step: u64,
    next_step: u64,
    failed: bool,
}

impl Loader {
    /// Starts `workers` decoding threads that produce whole batches from `start_step` on:
    /// [`Loader::start`] of these files with [`LoaderSlice::WHOLE`].
    ///
    /// Errors: as [`Loader::start`].
    pub fn new(
        files: Vec<PathBuf>,
        batch: usize,
        image_size: u32,
        seed: u64,
        start_step: u64,
        workers: usize,
        prefetch: usize,
    ) -> Result<Loader, TrainError> {
        let opts = LoaderOptions {
            start_step,
            workers,
            prefetch,
            ..LoaderOptions::new(batch, image_size, seed)
        };
        Loader::start(files.into_iter().map(ImageRef::File).collect(), &opts)
    }

    /// Starts `opts.workers` decoding threads that produce batches (or this rank's slice of
    /// them, `opts.slice`) of `images` from `opts.start_step` on.
    ///
    /// Errors: [`TrainError::BadConfig`] when `images` is empty, `batch` or `image_size` is 0,
    /// or `batch` is not divisible by the slice's ranks ([`LoaderSlice::range`]);
    /// [`TrainError::Io`] when a thread cannot be spawned.
    pub fn start(images: Vec<ImageRef>, opts: &LoaderOptions) -> Result<Loader, TrainError> {
        if images.is_empty() {
            return Err(TrainError::bad_config(
                "data",
                "the loader was given no image files",
            ));
        }
        if opts.batch == 0 {
            return Err(TrainError::bad_config("batch_size", "must be at least 1"));
        }
        if opts.image_size == 0 {
            return Err(TrainError::bad_config(
                "data.image_size",
                "must be at least 1",
            ));
        }
        let plan = Arc::new(BatchPlan {
            images,
            batch: opts.batch,
            samples: opts.slice.range(opts.batch)?,
            image_size: opts.image_size,
            seed: opts.seed,
            bad: Mutex::new(HashSet::new()),
        });
        let workers = opts.workers.max(1);
        let depth = opts.prefetch.div_ceil(workers).max(1);
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = bounded(depth);
            let plan = Arc::clone(&plan);
            let first = opts.start_step + w as u64;
            let handle = std::thread::Builder::new()
                .name(format!("hvq-data-{w}"))
                .spawn(move || worker_loop(&plan, first, workers as u64, &tx))
                .map_err(|e| TrainError::io("<thread>", e))?;
            receivers.push(rx);
            handles.push(handle);
        }
        Ok(Loader {
            receivers,
            handles,
            plan,
            start_step: opts.start_step,
            next_step: opts.start_step,
            failed: false,
        })
    }

    /// Number of distinct images that failed to decode so far (each skipped and warned about once).
    pub fn skipped(&self) -> usize {
        self.plan.bad.lock().map_or(0, |b| b.len())
    }

    /// The step of the next batch this iterator will deliver.
    pub fn next_step(&self) -> u64 {
        self.next_step
    }

    /// Images per delivered batch: the global batch, or this rank's slice of it.
    pub fn images_per_batch(&self) -> usize {
        self.plan.samples.len()
    }
}

impl Iterator for Loader {
    type Item = Result<Batch, TrainError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let step = self.next_step;
        // Counted from the first step, not from 0: a resumed loader's step need not be a
        // multiple of the worker count (reading `step % workers` delivered the batches of a
        // run resumed at such a step in the wrong order, each labelled with the wrong step).
        let rx = &self.receivers[((step - self.start_step) % self.receivers.len() as u64) as usize];
        let result = match rx.recv() {
            Ok(Ok(data)) => {
                let s = i64::from(self.plan.image_size);
                let b = self.plan.samples.len() as i64;
                let images = Tensor::from_slice(&data).view([b, 3, s, s]);
                Ok(Batch { step, images })
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(TrainError::LoaderStopped { step }),
        };
        self.failed = result.is_err();
        self.next_step += 1;
        Some(result)
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Dropping the receivers makes every blocked or later `send` fail, which ends the workers.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn worker_loop(plan: &BatchPlan, first: u64, stride: u64, tx: &Sender<WorkerResult>) {
    let mut perm_cache: Option<(u64, Vec<usize>)> = None;
    let mut step = first;
    loop {
        let result = make_batch(plan, step, &mut perm_cache);
        let stop = result.is_err();
        if tx.send(result).is_err() || stop {
            return;
        }
        step += stride;
    }
}

/// The file order of one epoch: a permutation drawn from `(seed, epoch)` only.
fn epoch_permutation(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::from_seed(seed_bytes(&[seed, epoch, 0x000e_90c4_u64]));
    let mut perm: Vec<usize> = (0..n).collect();
    perm.shuffle(&mut rng);
    perm
}

/// A 32-byte ChaCha seed from a few words (little-endian, zero-padded): distinct word tuples give
/// distinct seeds, so each sample has its own independent stream.
fn seed_bytes(words: &[u64]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (chunk, w) in out.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// Builds this loader's samples of batch `step` as planar u8 `[b, 3, S, S]`.
fn make_batch(
    plan: &BatchPlan,
    step: u64,
    perm_cache: &mut Option<(u64, Vec<usize>)>,
) -> WorkerResult {
    let n = plan.images.len() as u64;
    let s = plan.image_size;
    let mut out = Vec::with_capacity(plan.samples.len() * 3 * (s as usize).pow(2));
    for i in plan.samples.clone() {
        // The sample's place in the global batch, whatever part of it this loader makes.
        let i = i as u64;
        let j = step * plan.batch as u64 + i;
        let epoch = j / n;
        if matches!(perm_cache, Some((e, _)) if *e != epoch) {
            *perm_cache = None;
        }
        let perm = &perm_cache
            .get_or_insert_with(|| (epoch, epoch_permutation(plan.seed, epoch, n as usize)))
            .1;
        let img = first_decodable(plan, perm, (j % n) as usize, step)?;
        let mut rng = ChaCha8Rng::from_seed(seed_bytes(&[plan.seed, step, i, 0x005a_3b1e]));
        out.extend(rgb_to_chw_u8(&random_resized_crop(&img, s, &mut rng)));
    }
    Ok(out)
}

/// Decodes `perm[pos]`, or the next decodable image of the permutation when it is unreadable.
fn first_decodable(
    plan: &BatchPlan,
    perm: &[usize],
    pos: usize,
    step: u64,
) -> Result<RgbImage, TrainError> {
    for off in 0..perm.len() {
        let idx = perm[(pos + off) % perm.len()];
        if plan.bad.lock().is_ok_and(|b| b.contains(&idx)) {
            continue;
        }
        match plan.images[idx].decode_rgb8() {
            Ok(img) if img.width() > 0 && img.height() > 0 => return Ok(img),
            Ok(_) => warn_skip(plan, idx, &"image has no pixels"),
            Err(e) => warn_skip(plan, idx, &e),
        }
    }
    Err(TrainError::NoDecodableImages {
        count: perm.len(),
        step,
    })
}

fn warn_skip(plan: &BatchPlan, idx: usize, why: &dyn std::fmt::Display) {
    let first_time = plan.bad.lock().map(|mut b| b.insert(idx)).unwrap_or(false);
    if first_time {
        eprintln!(
            "warning: skipping unreadable image `{}`: {why}",
            plan.images[idx].path().display()
        );
    }
}

/// The decoding path of the training pipeline, as the data benchmark reports it. Scaled JPEG
/// decoding (DCT 1/2, 1/4, 1/8) was measured and left out: `jpeg-decoder`, the Rust decoder
/// that has it, is slower at 1/2 scale than `zune-jpeg` at full size (4.5–5.5 against 3.2–4.3
/// ms per image with a short side of 512 or more, one core), and at 256² crops of ImageNet
/// only 2–3 % of crop windows are large enough for even the 1/2 scale.
const DECODE_PATH: &str = "image 0.25 (zune-jpeg / png), full size";
/// The resizing path of [`resize_window`], as the data benchmark reports it.
const RESIZE_PATH: &str = "fast_image_resize 6 Convolution(Bilinear) on a crop view";

/// Time spent by one core on each stage of the training input pipeline ([`time_pipeline`]).
#[derive(Debug, Clone, Serialize)]
pub struct PipelineTiming {
    /// Images that went through (files that failed to decode are left out).
    pub images: usize,
    /// Megapixels decoded.
    pub megapixels: f64,
    /// Seconds decoding files to RGB8.
    pub decode_s: f64,
    /// Seconds in the random resized crop (crop, resize, flip).
    pub crop_resize_s: f64,
    /// Seconds converting to planar f32.
    pub to_f32_s: f64,
    /// How files were decoded (the decoder, at which scale).
    pub decode_path: &'static str,
    /// How crops were resized (the library, filter and the SIMD level it picked on this CPU).
    pub resize_path: String,
}

impl PipelineTiming {
    /// Decoded-and-augmented images per second on one core.
    pub fn images_per_s(&self) -> f64 {
        self.images as f64 / (self.decode_s + self.crop_resize_s + self.to_f32_s)
    }
}

/// Runs `images` through what a loader worker does for each image (read, decode, random resized
/// crop to `size`², planar f32) on the calling thread, timing each stage: the data benchmark.
/// Reading the bytes (from a file or a shard) counts as decoding.
pub fn time_pipeline(images: &[ImageRef], size: u32, seed: u64) -> PipelineTiming {
    use std::time::Instant;
    let mut t = PipelineTiming {
        images: 0,
        megapixels: 0.0,
        decode_s: 0.0,
        crop_resize_s: 0.0,
        to_f32_s: 0.0,
        decode_path: DECODE_PATH,
        resize_path: format!(
            "{RESIZE_PATH}, {:?}",
            fast_image_resize::Resizer::new().cpu_extensions()
        ),
    };
    for (i, image) in images.iter().enumerate() {
        let start = Instant::now();
        let Ok(img) = image.decode_rgb8() else {
            continue;
        };
        if img.width() == 0 || img.height() == 0 {
            continue;
        }
        let decoded = Instant::now();
        let mut rng = ChaCha8Rng::from_seed(seed_bytes(&[seed, i as u64]));
        let crop = random_resized_crop(&img, size, &mut rng);
        let cropped = Instant::now();
        std::hint::black_box(rgb_to_chw(&crop));
        t.decode_s += (decoded - start).as_secs_f64();
        t.crop_resize_s += (cropped - decoded).as_secs_f64();
        t.to_f32_s += cropped.elapsed().as_secs_f64();
        t.megapixels += f64::from(img.width()) * f64::from(img.height()) / 1e6;
        t.images += 1;
    }
    t
}

/// A random crop covering `CROP_SCALE` of the area with aspect in `CROP_ASPECT`, flipped
/// horizontally with probability ½, resized to `size`² with a bilinear filter (antialiased when
/// shrinking, see [`resize_window`]). The RNG draws are the window, then the flip.
fn random_resized_crop(img: &RgbImage, size: u32, rng: &mut ChaCha8Rng) -> RgbImage {
    let (x, y, w, h) = crop_window(img.width(), img.height(), rng);
    let window = [x, y, w, h].map(f64::from);
    let mut out = resize_window(img, window, size);
    if rng.random_bool(0.5) {
        image::imageops::flip_horizontal_in_place(&mut out);
    }
    out
}

/// Resizes the window `[x, y, w, h]` of `img` (pixel units, fractions allowed) to `size`²,
/// reading the window in place (the crop is a view, not a copy).
///
/// The filter is `fast_image_resize`'s `Convolution(Bilinear)`: the triangle kernel of
/// `imageops::FilterType::Triangle`, which this replaced, widened by the scale factor when
/// shrinking, evaluated with integer SIMD (AVX2 / SSE4.1 / NEON, picked at run time; every level
/// gives the same bytes, `every_simd_level_of_the_resizer_gives_the_same_bytes`). Against the old
/// `imageops` path the output differs by rounding inside the crop, and on its outer rows and
/// columns, where the kernel now reads the real pixels beyond the window instead of repeating its
/// edge (`resize_matches_the_imageops_triangle_filter`).
///
/// Panics if the window is not inside `img` or is empty; callers draw it with [`crop_window`].
fn resize_window(img: &RgbImage, window: [f64; 4], size: u32) -> RgbImage {
    thread_local! {
        // Reused per thread for its scratch buffers; the result does not depend on its history.
        static RESIZER: std::cell::RefCell<fast_image_resize::Resizer> =
            std::cell::RefCell::new(fast_image_resize::Resizer::new());
    }
    RESIZER.with_borrow_mut(|r| resize_window_with(r, img, window, size))
}

/// [`resize_window`] with a given resizer (tests pin its SIMD level).
fn resize_window_with(
    resizer: &mut fast_image_resize::Resizer,
    img: &RgbImage,
    window: [f64; 4],
    size: u32,
) -> RgbImage {
    use fast_image_resize as fir;
    let src = fir::images::ImageRef::new(
        img.width(),
        img.height(),
        img.as_raw(),
        fir::PixelType::U8x3,
    )
    .expect("an RgbImage holds width·height·3 bytes, and u8 needs no alignment");
    let mut dst = fir::images::Image::new(size, size, fir::PixelType::U8x3);
    let [x, y, w, h] = window;
    let options = fir::ResizeOptions::new()
        .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Bilinear))
        .crop(x, y, w, h);
    resizer
        .resize(&src, &mut dst, &options)
        .expect("the crop window lies inside the image");
    RgbImage::from_raw(size, size, dst.into_vec()).expect("size²·3 bytes make a size² RGB image")
}

/// Picks the crop rectangle `(x, y, w, h)`: up to 10 tries at a random scale and aspect, then
/// the largest centred square (the torchvision `RandomResizedCrop` recipe).
fn crop_window(width: u32, height: u32, rng: &mut ChaCha8Rng) -> (u32, u32, u32, u32) {
    let area = f64::from(width) * f64::from(height);
    let (lo, hi) = (CROP_ASPECT.0.ln(), CROP_ASPECT.1.ln());
    for _ in 0..10 {
        let target = area * rng.random_range(CROP_SCALE.0..=CROP_SCALE.1);
        let aspect = rng.random_range(lo..=hi).exp();
        let w = (target * aspect).sqrt().round() as u32;
        let h = (target / aspect).sqrt().round() as u32;
        if (1..=width).contains(&w) && (1..=height).contains(&h) {
            let x = rng.random_range(0..=width - w);
            let y = rng.random_range(0..=height - h);
            return (x, y, w, h);
        }
    }
    let side = width.min(height);
    ((width - side) / 2, (height - side) / 2, side, side)
}

/// Writes a copy of the image folder `src` into `dst` with every image's shorter side reduced to
/// at most `short_side` pixels (triangle filter; smaller images are copied as they are decoded).
/// Relative paths and file names stay the same, so the copy has the same validation split;
/// JPEG files are re-encoded at `quality`, others as PNG. Used to fit a training folder into a
/// GPU machine's upload limit. Returns the number of images written.
///
/// Errors: [`TrainError::DataDirMissing`] / [`TrainError::NoImages`] for `src`, I/O errors,
/// and [`TrainError::ImageDecode`] naming the first file that does not decode.
pub fn shrink_folder(
    src: &Path,
    dst: &Path,
    short_side: u32,
    quality: u8,
) -> Result<usize, TrainError> {
    use rayon::prelude::*;
    if !src.is_dir() {
        return Err(TrainError::DataDirMissing {
            path: src.to_path_buf(),
        });
    }
    let cfg = DataConfig::default();
    let files = list_images(src, &cfg.extensions)?;
    if files.is_empty() {
        return Err(TrainError::NoImages {
            path: src.to_path_buf(),
            extensions: cfg.extensions,
        });
    }
    files.par_iter().try_for_each(|f| {
        let rel = f.strip_prefix(src).unwrap_or(f);
        let out = dst.join(rel);
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        }
        let img = decode_rgb8(f)?;
        let (w, h) = img.dimensions();
        let short = w.min(h);
        let img = if short > short_side.max(1) {
            let s = f64::from(short_side.max(1)) / f64::from(short);
            let (nw, nh) = (
                ((f64::from(w) * s).round() as u32).max(1),
                ((f64::from(h) * s).round() as u32).max(1),
            );
            image::imageops::resize(&img, nw, nh, FilterType::Triangle)
        } else {
            img
        };
        write_image(&out, &img, quality)
    })?;
    Ok(files.len())
}

fn write_image(path: &Path, img: &RgbImage, quality: u8) -> Result<(), TrainError> {
    let file = std::fs::File::create(path).map_err(|e| TrainError::io(path, e))?;
    let mut w = std::io::BufWriter::new(file);
    let is_jpeg = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"));
    let result = if is_jpeg {
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut w, quality.clamp(1, 100))
            .encode_image(img)
    } else {
        img.write_to(&mut w, image::ImageFormat::Png)
    };
    result.map_err(|source| TrainError::ImageDecode {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_window_stays_inside_the_image_and_in_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for (w, h) in [(500, 375), (1, 1), (3, 1000), (256, 256)] {
            for _ in 0..200 {
                let (x, y, cw, ch) = crop_window(w, h, &mut rng);
                assert!(
                    cw >= 1 && ch >= 1 && x + cw <= w && y + ch <= h,
                    "{w}x{h}: {x},{y},{cw},{ch}"
                );
            }
        }
    }

    /// A photo-like test image: smooth colour ramps, a sharp diagonal edge and mild noise.
    fn textured(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let noise = (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663)) % 24;
            let edge = if x * 3 > y * 2 + w / 2 { 60 } else { 0 };
            image::Rgb([
                ((x * 200 / w.max(1)) + noise) as u8,
                ((y * 180 / h.max(1)) + edge) as u8,
                (((x + y) * 90 / (w + h).max(1)) + noise + edge) as u8,
            ])
        })
    }

    /// The path [`resize_window`] replaced: copy the window out, then `imageops` triangle filter.
    fn imageops_crop_resize(
        img: &RgbImage,
        (x, y, w, h): (u32, u32, u32, u32),
        size: u32,
    ) -> RgbImage {
        let crop = image::imageops::crop_imm(img, x, y, w, h).to_image();
        image::imageops::resize(&crop, size, size, FilterType::Triangle)
    }

    fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
        assert_eq!(a.dimensions(), b.dimensions());
        let sum: u64 = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(&p, &q)| u64::from(p.abs_diff(q)))
            .sum();
        sum as f64 / a.as_raw().len() as f64
    }

    #[test]
    fn resize_matches_the_imageops_triangle_filter() {
        // (image, window, output side): strong and mild shrinking, enlarging, odd sizes, a
        // window touching the far corner, a 1×1 output.
        let cases = [
            ((500, 375), (40, 10, 400, 300), 256),
            ((500, 375), (0, 0, 500, 375), 64),
            ((333, 517), (17, 100, 301, 299), 256),
            ((120, 90), (30, 20, 60, 50), 256),
            ((257, 255), (1, 0, 256, 255), 255),
            ((64, 48), (63, 47, 1, 1), 3),
            ((64, 48), (0, 0, 64, 48), 1),
        ];
        for ((iw, ih), win @ (x, y, w, h), size) in cases {
            let img = textured(iw, ih);
            let old = imageops_crop_resize(&img, win, size);
            let new = resize_window(&img, [x, y, w, h].map(f64::from), size);
            let mad = mean_abs_diff(&old, &new);
            // Same kernel, same sample positions. Inside, what is left is `imageops`' f32
            // arithmetic against the fixed-point weights and 8-bit intermediate of
            // fast_image_resize: at most a few levels. On the outer rows and columns the new
            // path reads the real neighbours outside the window (it is a view) where the old
            // copy clamped at its edge, which can differ by tens of levels at an edge when
            // enlarging. Measured: mean 0.05–0.93, interior max 3.
            let margin = (2 * size).div_ceil(w.min(h)).max(1);
            let interior = (margin..size.saturating_sub(margin))
                .flat_map(|y| (margin..size.saturating_sub(margin)).map(move |x| (x, y)));
            for (px, py) in interior {
                let (a, b) = (old.get_pixel(px, py).0, new.get_pixel(px, py).0);
                let worst = (0..3).map(|c| a[c].abs_diff(b[c])).max().unwrap();
                assert!(
                    worst <= 4,
                    "{iw}x{ih} {win:?} -> {size} at ({px}, {py}): {a:?} vs {b:?}"
                );
            }
            assert!(
                mad < 1.0,
                "{iw}x{ih} {win:?} -> {size}: mean |diff| {mad:.3}"
            );
        }
    }

    #[test]
    fn every_simd_level_of_the_resizer_gives_the_same_bytes() {
        use fast_image_resize::{CpuExtensions, Resizer};
        // A resumed run may land on a machine with other SIMD: the crops must not change.
        let img = textured(333, 251);
        let reference = {
            let mut r = Resizer::new();
            // SAFETY: `None` is the portable scalar path, supported everywhere.
            unsafe { r.set_cpu_extensions(CpuExtensions::None) };
            resize_window_with(&mut r, &img, [5.0, 7.0, 300.0, 211.0], 97)
        };
        #[cfg(target_arch = "x86_64")]
        let levels = [CpuExtensions::Sse4_1, CpuExtensions::Avx2];
        #[cfg(target_arch = "aarch64")]
        let levels = [CpuExtensions::Neon];
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let levels: [CpuExtensions; 0] = [];
        for level in levels.into_iter().filter(CpuExtensions::is_supported) {
            let mut r = Resizer::new();
            // SAFETY: only levels this CPU reports as supported.
            unsafe { r.set_cpu_extensions(level) };
            let got = resize_window_with(&mut r, &img, [5.0, 7.0, 300.0, 211.0], 97);
            assert!(got == reference, "{level:?} differs from the scalar path");
        }
    }

    #[test]
    fn random_resized_crop_depends_only_on_the_rng_seed() {
        let img = textured(300, 200);
        let crop = |seed: u64| random_resized_crop(&img, 64, &mut ChaCha8Rng::seed_from_u64(seed));
        let first = crop(3);
        // Same thread after other sizes have dirtied the resizer's scratch buffers, and a fresh
        // thread with a new resizer: byte-identical.
        let _ = random_resized_crop(&textured(999, 17), 200, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(crop(3), first);
        let other_thread = std::thread::scope(|s| s.spawn(|| crop(3)).join().unwrap());
        assert_eq!(other_thread, first);
        assert_ne!(
            crop(4),
            first,
            "a different seed should give a different crop"
        );
    }

    #[test]
    fn the_data_benchmark_counts_what_decodes() {
        let dir = std::env::temp_dir().join(format!("hvq-bench-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files: Vec<PathBuf> = ["a.png", "b.png", "junk.png"]
            .iter()
            .map(|n| dir.join(n))
            .collect();
        let images: Vec<ImageRef> = files.iter().cloned().map(ImageRef::File).collect();
        RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8, y as u8, 7]))
            .save(&files[0])
            .unwrap();
        RgbImage::from_fn(30, 50, |x, y| image::Rgb([y as u8, x as u8, 9]))
            .save(&files[1])
            .unwrap();
        std::fs::write(&files[2], b"not an image").unwrap();
        let t = time_pipeline(&images, 16, 0);
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(t.images, 2);
        assert!((t.megapixels - (40.0 * 30.0 + 30.0 * 50.0) / 1e6).abs() < 1e-12);
        assert!(t.decode_s >= 0.0 && t.crop_resize_s >= 0.0 && t.images_per_s() > 0.0);
    }

    #[test]
    fn path_hash_is_fixed_fnv1a() {
        // FNV-1a 64 of "a" is the published test value 0xaf63dc4c8601ec8c.
        assert_eq!(path_hash(Path::new("a")), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            path_hash(Path::new("x/y.png")),
            path_hash(Path::new("x/y.png"))
        );
        assert_ne!(
            path_hash(Path::new("x/y.png")),
            path_hash(Path::new("y/x.png"))
        );
    }

    #[test]
    fn extensions_match_case_insensitively() {
        let ext = DataConfig::default().extensions;
        assert!(has_extension(Path::new("a/B.JPG"), &ext));
        assert!(has_extension(Path::new("c.Png"), &ext));
        assert!(!has_extension(Path::new("d.gif"), &ext));
        assert!(!has_extension(Path::new("noext"), &ext));
    }
}
