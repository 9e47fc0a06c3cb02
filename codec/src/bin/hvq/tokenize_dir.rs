//! `hvq tokenize-dir`: a folder of images → sharded token arrays, resumable.
//!
//! Layout of OUT (also in `--help`):
//! - `manifest.json`: format tag, model fingerprint, levels, shard size, and the sorted list of
//!   input files (paths relative to DIR). Shards are fixed by this list, so a resumed run makes
//!   exactly the shards the first run would have.
//! - `shard-NNNNN/index.jsonl` + `shard-NNNNN/level<L>.npy`, written as `shard-NNNNN.tmp/` and
//!   renamed when complete: a shard folder exists only when all of it does.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use hvq_codec::{Codec, LevelSelection, RgbImage, Tokens};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::npy;

/// Extensions scanned for (lower-cased).
const IMAGE_EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"];
const MANIFEST: &str = "manifest.json";
const FORMAT_TAG: &str = "hvq-tokens-v1";

/// What the command was asked to do.
pub struct Options {
    pub dir: PathBuf,
    pub out: PathBuf,
    pub levels: LevelSelection,
    pub shard_size: usize,
    pub jobs: usize,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Manifest {
    format: String,
    fingerprint: String,
    levels: Vec<usize>,
    shard_size: usize,
    shards: usize,
    files: Vec<String>,
}

/// One line of a shard's `index.jsonl`.
#[derive(Debug, Serialize)]
struct IndexLine<'a> {
    file: &'a str,
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
    if files.is_empty() {
        bail!(
            "no images ({}) under `{}`",
            IMAGE_EXTENSIONS.join(", "),
            opts.dir.display()
        );
    }
    let manifest = Manifest {
        format: FORMAT_TAG.into(),
        fingerprint: hvq_spec::fingerprint_hex(&codec.fingerprint()),
        levels,
        shard_size: opts.shard_size,
        shards: files.len().div_ceil(opts.shard_size),
        files,
    };
    prepare_output(&opts.out, &manifest)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs)
        .build()
        .context("cannot start worker threads")?;
    let todo: Vec<usize> = (0..manifest.shards)
        .filter(|&s| !shard_dir(&opts.out, s).is_dir())
        .collect();
    let skipped = manifest.shards - todo.len();
    if skipped > 0 {
        eprintln!(
            "resuming: skipping {skipped} complete shard(s) of {}",
            manifest.shards
        );
    }
    let bar = progress_bar(&manifest, &todo);
    let mut failed = 0;
    for &shard in &todo {
        failed += pool.install(|| write_shard(codec, opts, &manifest, shard, &bar))?;
    }
    bar.finish_and_clear();
    eprintln!(
        "{}: {} images in {} shard(s) ({} written now, {skipped} already done, {failed} unreadable)",
        opts.out.display(),
        manifest.files.len(),
        manifest.shards,
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

/// Image files under `dir` (not under `out`), as sorted relative paths with `/` separators.
fn scan(dir: &Path, out: &Path) -> Result<Vec<String>> {
    let out = out.canonicalize().ok();
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).with_context(|| format!("cannot list `{}`", d.display()))?;
        for entry in entries {
            let path = entry
                .with_context(|| format!("cannot list `{}`", d.display()))?
                .path();
            if path.is_dir() {
                if out
                    .as_ref()
                    .is_none_or(|o| path.canonicalize().ok().as_ref() != Some(o))
                {
                    stack.push(path);
                }
            } else if is_image_name(&path) {
                let rel = path.strip_prefix(dir).unwrap_or(&path);
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                files.push(parts.join("/"));
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

/// Creates OUT and its manifest, or checks that an existing one was made with the same settings;
/// removes shards left half-written by an interrupted run.
fn prepare_output(out: &Path, manifest: &Manifest) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create `{}`", out.display()))?;
    let path = out.join(MANIFEST);
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read `{}`", path.display()))?;
        let old: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("`{}` is not an hvq manifest", path.display()))?;
        if old != *manifest {
            bail!(
                "`{}` was started with other settings, another model, or another file list; \
                 use a new output folder (or delete it to start over)",
                out.display()
            );
        }
    } else {
        let text = serde_json::to_string_pretty(manifest)?;
        crate::write_atomic(&path, text.as_bytes())?;
    }
    for shard in 0..manifest.shards {
        let tmp = tmp_dir(out, shard);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)
                .with_context(|| format!("cannot remove `{}`", tmp.display()))?;
        }
    }
    Ok(())
}

fn shard_dir(out: &Path, shard: usize) -> PathBuf {
    out.join(format!("shard-{shard:05}"))
}

fn tmp_dir(out: &Path, shard: usize) -> PathBuf {
    out.join(format!("shard-{shard:05}.tmp"))
}

fn progress_bar(manifest: &Manifest, todo: &[usize]) -> ProgressBar {
    let remaining: usize = todo.iter().map(|&s| shard_files(manifest, s).len()).sum();
    let bar = ProgressBar::new(remaining as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} images  {per_sec}  eta {eta}")
    {
        bar.set_style(style);
    }
    bar
}

fn shard_files(manifest: &Manifest, shard: usize) -> &[String] {
    let start = shard * manifest.shard_size;
    &manifest.files[start..(start + manifest.shard_size).min(manifest.files.len())]
}

/// Encodes one shard into its temporary folder, then renames it into place. Returns how many
/// images could not be read (they get an `error` line in the index and no tokens).
fn write_shard(
    codec: &Codec,
    opts: &Options,
    manifest: &Manifest,
    shard: usize,
    bar: &ProgressBar,
) -> Result<usize> {
    let files = shard_files(manifest, shard);
    let mut results: Vec<Result<Tokens, String>> = Vec::with_capacity(files.len());
    // Batches of a few images per worker keep memory bounded by the batch, not the shard.
    for batch in files.chunks(opts.jobs * 2) {
        let loaded: Vec<Result<RgbImage, String>> = batch
            .par_iter()
            .map(|f| load(codec, &opts.dir.join(f)))
            .collect();
        // Unreadable files keep their slot (with the error) so results stay in file order.
        let mut images = Vec::with_capacity(loaded.len());
        let slots: Vec<Result<(), String>> = loaded
            .into_iter()
            .map(|r| r.map(|img| images.push(img)))
            .collect();
        let mut encoded = codec
            .encode_batch(&images, manifest.levels.clone())
            .into_iter();
        for slot in slots {
            let next = slot.map(|()| {
                encoded
                    .next()
                    .expect("encode_batch gives one result per image")
            });
            results.push(next.and_then(|r| r.map_err(|e| hvq_error_chain(&e))));
            bar.inc(1);
        }
    }
    for (f, r) in files.iter().zip(&results) {
        if let Err(e) = r {
            bar.suspend(|| eprintln!("warning: skipping `{f}`: {e}"));
        }
    }
    let tmp = tmp_dir(&opts.out, shard);
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create `{}`", tmp.display()))?;
    write_shard_files(&tmp, files, &results, manifest, codec)?;
    let done = shard_dir(&opts.out, shard);
    std::fs::rename(&tmp, &done)
        .with_context(|| format!("cannot move `{}` into place", tmp.display()))?;
    Ok(results.iter().filter(|r| r.is_err()).count())
}

fn load(codec: &Codec, path: &Path) -> Result<RgbImage, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    RgbImage::decode(&bytes, codec.limits()).map_err(|e| hvq_error_chain(&e))
}

fn hvq_error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

fn write_shard_files(
    dir: &Path,
    files: &[String],
    results: &[Result<Tokens, String>],
    manifest: &Manifest,
    codec: &Codec,
) -> Result<()> {
    let mut index = Vec::new();
    let mut arrays: Vec<Vec<u32>> = vec![Vec::new(); manifest.levels.len()];
    for (file, result) in files.iter().zip(results) {
        let line = match result {
            Ok(t) => {
                let levels = manifest
                    .levels
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
                    .collect();
                IndexLine {
                    file,
                    width: Some(t.width),
                    height: Some(t.height),
                    levels,
                    error: None,
                }
            }
            Err(e) => IndexLine {
                file,
                width: None,
                height: None,
                levels: Vec::new(),
                error: Some(e.clone()),
            },
        };
        serde_json::to_writer(&mut index, &line)?;
        index.push(b'\n');
    }
    let dtype = npy::Dtype::for_codebook(codec.config().codebook_size);
    for (&level, array) in manifest.levels.iter().zip(&arrays) {
        let mut buf = Vec::new();
        npy::write(&mut buf, &[array.len()], dtype, array)?;
        let path = dir.join(format!("level{level}.npy"));
        std::fs::write(&path, buf).with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    let path = dir.join("index.jsonl");
    std::fs::write(&path, index).with_context(|| format!("cannot write `{}`", path.display()))
}
