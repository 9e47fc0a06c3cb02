//! `hvq tokenize-dir`: a folder of images → sharded token arrays, resumable and appendable.
//!
//! # Layout of OUT
//!
//! - `manifest.json` (format `hvq-tokens-v2`):
//!   ```json
//!   { "format": "hvq-tokens-v2", "fingerprint": "<model, 64 hex digits>", "levels": [0, 1, 2],
//!     "tiling": {"whole_max_pixels": 393216, "tile": 512, "overlap": 32},
//!     "background": "ffffff", "shard_size": 1000,
//!     "shards": [{"first": 0, "count": 1000}, {"first": 1000, "count": 17}],
//!     "files": [{"file": "a/b.png"}, {"file": "caf\ufffd.png", "file_hex": "636166e92e706e67"}] }
//!   ```
//!   `files` lists the images relative to DIR with `/` between folders. `file` is the name as
//!   text; when the name is not UTF-8 (possible on unix), `file` has U+FFFD in place of the bad
//!   bytes and `file_hex` holds the exact bytes, which are what is read and compared. Shard `s`
//!   holds `files[first .. first + count]`. A first run lists the sorted files in shards of
//!   `shard_size`; each `--add` run appends its new files, sorted, in new shards after the
//!   existing ones (so the last shard of an earlier run may stay short).
//! - `shard-NNNNN/index.jsonl`: one line per file of the shard, in order:
//!   `{"file", ["file_hex"], "width", "height", "levels": [{"level", "offset", "height", "width"}]}`,
//!   or `{"file", ["file_hex"], "error": "<why>"}` for an image that could not be read, decoded
//!   or encoded (also printed as a warning; the run goes on).
//! - `shard-NNNNN/level<L>.npy`: the tokens of every image of the shard at level L, concatenated
//!   (one dimension, uint16 or uint32); `offset` in the index is where an image's grid starts.
//! - `shard-NNNNN/checksums.json`: `{"files": [{"name", "bytes", "sha256"}]}` for the index and
//!   every `.npy`. A shard is written as `shard-NNNNN.tmp/`, this record last, then renamed, so a
//!   shard folder exists only when complete.
//!
//! # Reruns
//!
//! The same command resumes: every finished shard is checked against its `checksums.json` (sizes,
//! then SHA-256; about 0.2 s for 256 MB, so always); a damaged one is removed and encoded again,
//! with a message. Other settings (model, levels, tiling, background, shard size) are refused. Images under DIR that are not in the manifest are
//! refused too unless `--add` is given, which tokenizes them into new shards. Images in the
//! manifest that are gone from DIR keep their tokens in finished shards; an unfinished shard
//! records them as errors (`cannot read`). Encoding is deterministic, so a run killed at any
//! point and rerun gives the same bytes as an uninterrupted one. `tiling` (`--tile`) and
//! `background` (`--background`) are settings too: they change the tokens of large or
//! transparent images.
//!
//! # Memory
//!
//! `-j` workers read and encode images, but an image starts only when its estimated memory
//! ([`budget::image_cost`]: its pixels, and the working memory of the whole image or, when it
//! runs in tiles, of one tile) fits `--memory-budget` beside the images in flight, in file order;
//! one larger than the budget runs alone. With the default budget (2 GiB) and tiles, a folder of
//! 48-megapixel photos (about 1 GB each) is encoded two at a time whatever `-j` is, while
//! training crops still run `-j` at a time.
//!
//! # On a GPU
//!
//! With the wgpu backend the workers only read and decode; one device thread takes every image
//! they have ready, runs those of one size together in device batches
//! ([`Codec::encode_batch`]), and hands the tokens back. Decoding the next images overlaps the
//! device's work on the last ones, and a batch holds at most `-j` images.

mod budget;
mod manifest;
mod verify;

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};

use anyhow::{Context, Result, bail};
use hvq_codec::{BackendKind, Codec, DecodeOptions, LevelSelection, RgbImage, Tokens};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;

use crate::npy;
pub use budget::parse_size;
use budget::{Budget, image_cost};
use manifest::{FileEntry, Manifest, RelPath, Settings};
use verify::{CHECKSUMS, FileSum};

/// Extensions scanned for (lower-cased).
const IMAGE_EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"];
const MANIFEST: &str = "manifest.json";
/// The default of `--memory-budget`.
pub const DEFAULT_MEMORY_BUDGET: &str = "2G";

/// What the command was asked to do.
pub struct Options {
    pub dir: PathBuf,
    pub out: PathBuf,
    pub levels: LevelSelection,
    pub shard_size: usize,
    pub jobs: usize,
    /// Tokenize images not yet in the manifest into new shards instead of refusing.
    pub add: bool,
    /// Bytes the images in flight may take together (estimated).
    pub memory_budget: u64,
    /// What transparent pixels are composited over (R, G, B).
    pub background: [u8; 3],
}

/// One line of a shard's `index.jsonl`.
#[derive(Debug, Serialize)]
struct IndexLine {
    #[serde(flatten)]
    file: FileEntry,
    #[serde(skip_serializing_if = "Option::is_none")]
    width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    height: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    levels: Vec<LevelEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Where one image's grid of one level lies in that level's shard array.
#[derive(Debug, Serialize)]
struct LevelEntry {
    level: usize,
    offset: usize,
    height: usize,
    width: usize,
}

pub fn run(codec: &Codec, opts: &Options) -> Result<()> {
    let levels = resolve_levels(codec, &opts.levels)?;
    let files = scan(&opts.dir, &opts.out)?;
    let wanted = Manifest::new(Settings {
        fingerprint: hvq_spec::fingerprint_hex(&codec.fingerprint()),
        levels,
        tiling: codec.tiling().into(),
        background: manifest::hex(&opts.background),
        shard_size: opts.shard_size,
    });
    let manifest = prepare_output(opts, wanted, files)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs)
        .build()
        .context("cannot start worker threads")?;
    let todo = pool.install(|| shards_to_do(&opts.out, &manifest))?;
    let skipped = manifest.shards.len() - todo.len();
    if skipped > 0 {
        eprintln!(
            "resuming: skipping {skipped} complete shard(s) of {} (checked)",
            manifest.shards.len()
        );
    }
    let failed = encode_shards(codec, opts, &manifest, &todo, &pool)?;
    eprintln!(
        "{}: {} images in {} shard(s) ({} written now, {skipped} already done, {failed} unreadable)",
        opts.out.display(),
        manifest.files.len(),
        manifest.shards.len(),
        todo.len()
    );
    Ok(())
}

fn resolve_levels(codec: &Codec, sel: &LevelSelection) -> Result<Vec<usize>> {
    let n = codec.config().levels;
    let mut levels = match sel {
        LevelSelection::All => (0..n).collect(),
        LevelSelection::Only(l) => l.clone(),
    };
    levels.sort_unstable();
    levels.dedup();
    if let Some(&bad) = levels.iter().find(|&&l| l >= n) {
        bail!(
            "level {bad} is not available: the model has levels 0..={}",
            n - 1
        );
    }
    Ok(levels)
}

/// Image files under `dir` (not under `out`), sorted by their raw names. Folders are entered
/// but not followed through symbolic links (a link to a parent would loop); links to files are
/// read.
fn scan(dir: &Path, out: &Path) -> Result<Vec<RelPath>> {
    let out = out.canonicalize().ok();
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).with_context(|| format!("cannot list `{}`", d.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list `{}`", d.display()))?;
            let path = entry.path();
            let kind = entry
                .file_type()
                .with_context(|| format!("cannot list `{}`", d.display()))?;
            if kind.is_dir() {
                if out
                    .as_ref()
                    .is_none_or(|o| path.canonicalize().ok().as_ref() != Some(o))
                {
                    stack.push(path);
                }
                continue;
            }
            let is_file = kind.is_file() || (kind.is_symlink() && path.is_file());
            if !is_file || !is_image_name(&path) {
                continue;
            }
            let rel = path.strip_prefix(dir).unwrap_or(&path);
            match RelPath::from_components(rel) {
                Some(r) => files.push(r),
                None => eprintln!(
                    "warning: skipping `{}`: its name is not Unicode, which this platform cannot record",
                    path.display()
                ),
            }
        }
    }
    files.sort();
    Ok(files)
}

fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Creates OUT and its manifest, or reads the existing one and checks it against this run
/// (settings; new files need `--add`, which appends them); removes shards left half-written.
fn prepare_output(opts: &Options, mut wanted: Manifest, files: Vec<RelPath>) -> Result<Manifest> {
    let out = &opts.out;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create `{}`", out.display()))?;
    let path = out.join(MANIFEST);
    let manifest = if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read `{}`", path.display()))?;
        let mut old = Manifest::from_json(&text, &path)?;
        if let Some(why) = old.settings_differ(&wanted.settings) {
            bail!(
                "`{}` was started with other settings: {why}; use the same settings, a new \
                 output folder, or delete it to start over",
                out.display()
            );
        }
        reconcile_files(opts, &mut old, files, &path)?;
        old
    } else {
        if files.is_empty() {
            bail!(
                "no images ({}) under `{}`",
                IMAGE_EXTENSIONS.join(", "),
                opts.dir.display()
            );
        }
        wanted.append(files);
        crate::write_atomic(&path, wanted.to_json()?.as_bytes())?;
        wanted
    };
    remove_leftovers(out, &manifest)?;
    Ok(manifest)
}

/// Removes what a killed run leaves: half-written shard folders, and temporary files of a
/// manifest write (`write_atomic` names them `.manifest.json.<random>.tmp`).
fn remove_leftovers(out: &Path, manifest: &Manifest) -> Result<()> {
    for shard in 0..manifest.shards.len() {
        let tmp = tmp_dir(out, shard);
        if tmp.symlink_metadata().is_ok() {
            remove_damaged(&tmp)?;
        }
    }
    let entries =
        std::fs::read_dir(out).with_context(|| format!("cannot list `{}`", out.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let manifest_tmp = name.starts_with(&format!(".{MANIFEST}.")) && name.ends_with(".tmp");
        if manifest_tmp && entry.file_type().is_ok_and(|t| t.is_file()) {
            remove_damaged(&entry.path())?;
        }
    }
    Ok(())
}

/// Compares the scanned files with the manifest's: new ones are appended with `--add` (and the
/// manifest rewritten before any of them is encoded) or refused; gone ones are reported.
fn reconcile_files(
    opts: &Options,
    manifest: &mut Manifest,
    scanned: Vec<RelPath>,
    path: &Path,
) -> Result<()> {
    let known: std::collections::HashSet<&RelPath> = manifest.files.iter().collect();
    let found: std::collections::HashSet<&RelPath> = scanned.iter().collect();
    let gone: Vec<&RelPath> = manifest
        .files
        .iter()
        .filter(|f| !found.contains(f))
        .collect();
    if let Some(first) = gone.first() {
        eprintln!(
            "warning: {} image(s) of the manifest are no longer under `{}` (first: `{}`); \
             finished shards keep their tokens, unfinished ones record them as errors",
            gone.len(),
            opts.dir.display(),
            first.lossy()
        );
    }
    let new: Vec<RelPath> = scanned
        .iter()
        .filter(|f| !known.contains(f))
        .cloned()
        .collect();
    if new.is_empty() {
        if opts.add {
            eprintln!("--add: no new images under `{}`", opts.dir.display());
        }
        return Ok(());
    }
    if !opts.add {
        bail!(
            "{} image(s) under `{}` are not in `{}` (first: `{}`); rerun with --add to \
             tokenize them into new shards after the existing ones, or use a new output folder",
            new.len(),
            opts.dir.display(),
            opts.out.display(),
            new[0].lossy()
        );
    }
    let before = manifest.shards.len();
    let count = new.len();
    manifest.append(new);
    crate::write_atomic(path, manifest.to_json()?.as_bytes())?;
    eprintln!(
        "--add: {count} new image(s) in {} new shard(s) after the {before} existing",
        manifest.shards.len() - before
    );
    Ok(())
}

/// Shards that are missing or fail their check; damaged ones are removed (with a message) so
/// they are encoded again.
fn shards_to_do(out: &Path, manifest: &Manifest) -> Result<Vec<usize>> {
    let expected = shard_file_names(manifest);
    let verdicts: Vec<Option<String>> = (0..manifest.shards.len())
        .into_par_iter()
        .map(|s| {
            let dir = shard_dir(out, s);
            if !dir.exists() {
                return Some(String::new());
            }
            verify::check(&dir, &expected).err()
        })
        .collect();
    let mut todo = Vec::new();
    for (s, verdict) in verdicts.into_iter().enumerate() {
        let Some(why) = verdict else { continue };
        if !why.is_empty() {
            let dir = shard_dir(out, s);
            eprintln!(
                "warning: `{}` is damaged ({why}); encoding it again",
                dir.display()
            );
            remove_damaged(&dir)?;
        }
        todo.push(s);
    }
    Ok(todo)
}

/// Removes a folder with its contents, or a file or symlink (never what a link points to).
fn remove_damaged(dir: &Path) -> Result<()> {
    let r = if dir.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        std::fs::remove_dir_all(dir)
    } else {
        std::fs::remove_file(dir)
    };
    r.with_context(|| format!("cannot remove `{}`", dir.display()))
}

/// The files a shard of `manifest` has besides `checksums.json`.
fn shard_file_names(manifest: &Manifest) -> Vec<String> {
    std::iter::once("index.jsonl".to_string())
        .chain(
            manifest
                .settings
                .levels
                .iter()
                .map(|l| format!("level{l}.npy")),
        )
        .collect()
}

fn shard_dir(out: &Path, shard: usize) -> PathBuf {
    out.join(format!("shard-{shard:05}"))
}

fn tmp_dir(out: &Path, shard: usize) -> PathBuf {
    out.join(format!("shard-{shard:05}.tmp"))
}

type Outcome = Result<Tokens, String>;

/// A decoded image waiting for the device, and where its tokens go.
struct DeviceJob {
    image: RgbImage,
    reply: Sender<Outcome>,
}

/// A shard being filled: one slot per file, and how many are still empty.
struct Pending {
    slots: Vec<Option<Outcome>>,
    remaining: usize,
}

/// What every worker shares.
struct Work<'a> {
    codec: &'a Codec,
    opts: &'a Options,
    manifest: &'a Manifest,
    pool: &'a rayon::ThreadPool,
    /// `(index into todo, slot in shard)` for every file to encode, in order.
    queue: Vec<(usize, usize)>,
    todo: &'a [usize],
    pending: Vec<Mutex<Pending>>,
    next: AtomicUsize,
    budget: Budget,
    /// On a GPU backend: where workers send decoded images for the device thread
    /// ([`device_loop`]). Taken (closed) once every worker is done, which ends that thread.
    device: Mutex<Option<Sender<DeviceJob>>>,
    stop: AtomicBool,
    error: Mutex<Option<anyhow::Error>>,
    failed: AtomicUsize,
    bar: ProgressBar,
}

/// Encodes the shards `todo` with `opts.jobs` workers under the memory budget; each shard is
/// written as soon as its last image is done. Returns how many images failed.
fn encode_shards(
    codec: &Codec,
    opts: &Options,
    manifest: &Manifest,
    todo: &[usize],
    pool: &rayon::ThreadPool,
) -> Result<usize> {
    let queue: Vec<(usize, usize)> = todo
        .iter()
        .enumerate()
        .flat_map(|(t, &s)| (0..manifest.shards[s].count).map(move |i| (t, i)))
        .collect();
    let pending = todo
        .iter()
        .map(|&s| {
            let n = manifest.shards[s].count;
            Mutex::new(Pending {
                slots: (0..n).map(|_| None).collect(),
                remaining: n,
            })
        })
        .collect();
    let bar = ProgressBar::new(queue.len() as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} images  {per_sec}  eta {eta}")
    {
        bar.set_style(style);
    }
    let work = Work {
        codec,
        opts,
        manifest,
        pool,
        queue,
        todo,
        pending,
        next: AtomicUsize::new(0),
        budget: Budget::new(opts.memory_budget),
        device: Mutex::new(None),
        stop: AtomicBool::new(false),
        error: Mutex::new(None),
        failed: AtomicUsize::new(0),
        bar,
    };
    let device_jobs = (codec.backend() != BackendKind::Cpu).then(|| {
        let (tx, rx) = channel();
        *lock(&work.device) = Some(tx);
        rx
    });
    std::thread::scope(|s| {
        if let Some(rx) = device_jobs {
            let w = &work;
            s.spawn(move || device_loop(w, &rx));
        }
        let workers: Vec<_> = (0..opts.jobs.min(work.queue.len()))
            .map(|_| s.spawn(|| worker(&work)))
            .collect();
        for h in workers {
            // A worker's panic is re-raised when the scope ends.
            let _ = h.join();
        }
        // Every worker's sender is gone; dropping the last ends the device thread.
        lock(&work.device).take();
    });
    work.bar.finish_and_clear();
    if let Some(e) = lock(&work.error).take() {
        return Err(e);
    }
    Ok(work.failed.load(Ordering::SeqCst))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn worker(w: &Work) {
    let device = lock(&w.device).clone();
    while !w.stop.load(Ordering::SeqCst) {
        let ticket = w.next.fetch_add(1, Ordering::SeqCst);
        let Some(&(t, slot)) = w.queue.get(ticket) else {
            return;
        };
        let shard = w.todo[t];
        let file = &w.manifest.shard_files(shard)[slot];
        let Some(outcome) = encode_one(w, device.as_ref(), ticket, file) else {
            return;
        };
        if let Err(e) = &outcome {
            w.failed.fetch_add(1, Ordering::SeqCst);
            w.bar
                .suspend(|| eprintln!("warning: skipping `{}`: {e}", file.lossy()));
        }
        w.bar.inc(1);
        let full = {
            let mut p = lock(&w.pending[t]);
            p.slots[slot] = Some(outcome);
            p.remaining -= 1;
            (p.remaining == 0).then(|| std::mem::take(&mut p.slots))
        };
        if let Some(slots) = full {
            let results: Vec<Outcome> = slots.into_iter().flatten().collect();
            if let Err(e) = write_shard(w, shard, &results) {
                lock(&w.error).get_or_insert(e);
                w.stop.store(true, Ordering::SeqCst);
                w.budget.stop();
                return;
            }
        }
    }
}

/// Reads, decodes and encodes one image under the budget (on the device thread when `device`
/// is given); `None` when the run was stopped. Every failure, a panic in the codec included,
/// is the image's error, not the run's.
fn encode_one(
    w: &Work,
    device: Option<&Sender<DeviceJob>>,
    ticket: usize,
    file: &RelPath,
) -> Option<Outcome> {
    let path = file.under(&w.opts.dir);
    let cost = match estimate(w.codec, &path) {
        Ok(c) => c,
        Err(e) => {
            // The ticket still has to pass, or every later image would wait for it.
            drop(w.budget.acquire(ticket, 0)?);
            return Some(Err(e));
        }
    };
    let _grant = w.budget.acquire(ticket, cost)?;
    let run = || -> Outcome {
        let bytes = read_bounded(&path, w.codec)?;
        let options = DecodeOptions::default().background(w.opts.background);
        let image = RgbImage::decode_with(&bytes, w.codec.limits(), &options)
            .map_err(|e| error_chain(&e))?;
        drop(bytes);
        if let Some(device) = device {
            let (reply, tokens) = channel();
            device
                .send(DeviceJob { image, reply })
                .map_err(|_| "the device thread has stopped".to_string())?;
            // The grant is held while the image waits: it is still in memory.
            return tokens
                .recv()
                .unwrap_or_else(|_| Err("the device thread has stopped".into()));
        }
        w.pool
            .install(|| w.codec.encode(&image, w.manifest.settings.levels.clone()))
            .map_err(|e| error_chain(&e))
    };
    Some(catch_unwind(AssertUnwindSafe(run)).unwrap_or_else(|panic| Err(panic_message(&*panic))))
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    format!("internal error in the codec: {msg}")
}

/// The device thread: takes every image the workers have ready (waiting for the first), encodes
/// them in one [`Codec::encode_batch`] call (which runs same-sized images together) and replies
/// to each. Ends when every sender is gone.
fn device_loop(w: &Work, jobs: &Receiver<DeviceJob>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        batch.extend(jobs.try_iter());
        let (images, replies): (Vec<RgbImage>, Vec<Sender<Outcome>>) =
            batch.into_iter().map(|j| (j.image, j.reply)).unzip();
        log::debug!("device batch: {} images", images.len());
        let levels = w.manifest.settings.levels.clone();
        let run = || w.codec.encode_batch(&images, levels);
        let outcomes: Vec<Outcome> = match catch_unwind(AssertUnwindSafe(run)) {
            Ok(results) => results
                .into_iter()
                .map(|r| r.map_err(|e| error_chain(&e)))
                .collect(),
            Err(panic) => {
                let msg = panic_message(&*panic);
                images.iter().map(|_| Err(msg.clone())).collect()
            }
        };
        drop(images);
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // A worker that is gone (the run stopped) no longer wants its tokens.
            let _ = reply.send(outcome);
        }
    }
}

/// The budget an image needs, from its file size and header (no pixels are decoded). A file
/// whose header does not parse, or whose size is over the limit, costs only its bytes: decoding
/// will refuse it before allocating pixels.
fn estimate(codec: &Codec, path: &Path) -> Result<u64, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        // A FIFO or a device would block or never end.
        return Err("not a regular file".into());
    }
    let limits = codec.limits();
    too_large(meta.len(), max_file_bytes(codec), limits.max_pixels)?;
    let header = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .ok()
        .and_then(|r| r.into_decoder().ok())
        .map(|d| {
            use image::ImageDecoder;
            let (w, h) = d.dimensions();
            (
                u64::from(w) * u64::from(h),
                d.color_type().bytes_per_pixel(),
            )
        });
    Ok(match header {
        Some((pixels, bpp)) if pixels <= limits.max_pixels => image_cost(
            codec.config(),
            codec.tiling(),
            meta.len(),
            pixels,
            bpp.into(),
        ),
        _ => meta.len(),
    })
}

/// The largest file an image within the pixel limit needs: 16 bytes a pixel (RGBA f32)
/// uncompressed, plus room for metadata.
fn max_file_bytes(codec: &Codec) -> u64 {
    codec
        .limits()
        .max_pixels
        .saturating_mul(16)
        .saturating_add(64 << 20)
}

fn too_large(len: u64, max: u64, max_pixels: u64) -> Result<(), String> {
    if len > max {
        return Err(format!(
            "the file is {len} bytes or more, more than any image within the limit of \
             {max_pixels} pixels needs"
        ));
    }
    Ok(())
}

/// Reads a file of at most [`max_file_bytes`] (it may have grown since it was measured).
fn read_bounded(path: &Path, codec: &Codec) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let max = max_file_bytes(codec);
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read: {e}"))?;
    too_large(bytes.len() as u64, max, codec.limits().max_pixels)?;
    Ok(bytes)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        // Some errors repeat their source's text in their own; say it once.
        if !s.ends_with(&c_text) {
            s.push_str(": ");
            s.push_str(&c_text);
        }
        cause = c.source();
    }
    s
}

/// Writes one shard into its temporary folder (the checksum record last) and renames it into
/// place.
fn write_shard(w: &Work, shard: usize, results: &[Outcome]) -> Result<()> {
    let files = w.manifest.shard_files(shard);
    let levels = &w.manifest.settings.levels;
    let mut index = Vec::new();
    let mut arrays: Vec<Vec<u32>> = vec![Vec::new(); levels.len()];
    for (file, result) in files.iter().zip(results) {
        let line = match result {
            Ok(t) => IndexLine {
                file: file.entry(),
                width: Some(t.width),
                height: Some(t.height),
                levels: levels
                    .iter()
                    .zip(arrays.iter_mut())
                    .filter_map(|(&l, array)| {
                        let g = t.level(l)?;
                        let entry = LevelEntry {
                            level: l,
                            offset: array.len(),
                            height: g.height,
                            width: g.width,
                        };
                        array.extend_from_slice(&g.tokens);
                        Some(entry)
                    })
                    .collect(),
                error: None,
            },
            Err(e) => IndexLine {
                file: file.entry(),
                width: None,
                height: None,
                levels: Vec::new(),
                error: Some(e.clone()),
            },
        };
        serde_json::to_writer(&mut index, &line)?;
        index.push(b'\n');
    }
    let mut contents = vec![("index.jsonl".to_string(), index)];
    let dtype = npy::Dtype::for_codebook(w.codec.config().codebook_size);
    for (&level, array) in levels.iter().zip(&arrays) {
        let mut buf = Vec::new();
        npy::write(&mut buf, &[array.len()], dtype, array)?;
        contents.push((format!("level{level}.npy"), buf));
    }
    let sums = contents.iter().map(|(n, d)| FileSum::of(n, d)).collect();
    contents.push((CHECKSUMS.to_string(), verify::record(sums)?));

    // Created new (the leftovers of earlier runs were removed at the start), so nothing is
    // written through a link someone left there.
    let tmp = tmp_dir(&w.opts.out, shard);
    std::fs::create_dir(&tmp).with_context(|| format!("cannot create `{}`", tmp.display()))?;
    for (name, data) in &contents {
        let path = tmp.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| f.write_all(data))
            .with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    let done = shard_dir(&w.opts.out, shard);
    std::fs::rename(&tmp, &done)
        .with_context(|| format!("cannot move `{}` into place", tmp.display()))
}
