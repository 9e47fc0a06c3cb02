//! Packed input shards: an image folder stored as a few large tar files in the WebDataset
//! layout, with an index that lets the loader read any image with one positioned read.
//!
//! ```no_run
//! use hvq_train::data::{DataConfig, Dataset};
//! use hvq_train::shards::{PackOptions, pack};
//! # fn main() -> Result<(), hvq_train::TrainError> {
//! let summary = pack("photos".as_ref(), "photos-shards".as_ref(), &PackOptions::default())?;
//! println!("{} images in {} shards", summary.images, summary.shards);
//! // The shard folder is a data folder like the one it was packed from: same split, same batches.
//! let ds = Dataset::open("photos-shards".as_ref(), &DataConfig::default())?;
//! assert!(ds.is_packed());
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! `shard-000000.tar`, `shard-000001.tar`, ...: POSIX ustar archives of regular files, one per
//! image, named by the image's path relative to the packed folder (`n01440764/x_1.JPEG`) and
//! holding its original encoded bytes (nothing is decoded or re-encoded). Headers carry mode
//! 0644, owner 0 and mtime 0, so packing the same folder twice gives the same bytes. A
//! WebDataset reader takes the name up to the first dot of its last component as the sample's
//! key and the rest as its extension (`n01440764/x_1` and `JPEG`); files whose names share that
//! key would form one sample there ([`PackSummary::shared_keys`] counts them; hvq's own reader
//! goes by the index and is not affected).
//!
//! [`INDEX_FILE`] beside the shards, JSON: `format` (`"hvq-shards"`), `version` (1), and per
//! shard its file name, length, SHA-256 and members, each as `[name, offset, size, crc32]`:
//! the byte offset of the member's data (after its header), its length and the CRC-32 of its
//! bytes. Members are listed in the folder's sorted order.
//!
//! # Trust
//!
//! [`open`] reads the index (at most [`MAX_INDEX_BYTES`]) and checks it against itself and the
//! file system without reading the shards: names stay inside the folder and are unique, every
//! member lies inside its shard, no member is over [`MAX_MEMBER_BYTES`] (so a read never
//! allocates more), and every shard has the length the index gives. Every read of a member
//! checks its CRC-32 (cheap beside decoding it). [`verify`] also reads every shard whole for its
//! SHA-256 and checks every member's tar header: the thorough check, for after a copy.
//!
//! # Writing
//!
//! [`pack`] writes every shard, then the index, each to a temporary file that is synced and
//! renamed ([`crate::export::write_atomic_with`]): a pack killed half-way leaves either the old
//! index or none, never an index naming shards that are not all there.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::TrainError;
use crate::data::{DataConfig, list_images};
use crate::export::write_atomic_with;
use crate::manifest::{absolute, relative};

/// The index file whose presence makes a folder a shard folder.
pub const INDEX_FILE: &str = "hvq-shards.json";
/// The largest index [`open`] reads (1 GiB: ImageNet's 1.28 M images take about 90 MB).
pub const MAX_INDEX_BYTES: u64 = 1 << 30;
/// The largest member [`pack`] stores and a read allocates (256 MiB; ImageNet's largest JPEG is
/// about 15 MB).
pub const MAX_MEMBER_BYTES: u64 = 256 << 20;
/// Images per shard unless [`PackOptions::images_per_shard`] says otherwise: about 110 MB of
/// ImageNet JPEGs.
pub const DEFAULT_IMAGES_PER_SHARD: usize = 1000;

const FORMAT: &str = "hvq-shards";
const VERSION: u32 = 1;
const BLOCK: u64 = 512;
/// The longest member name the index may hold (ustar's 155 + 1 + 100 bytes, with room).
const MAX_NAME_BYTES: usize = 4096;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Index {
    format: String,
    version: u32,
    shards: Vec<ShardEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShardEntry {
    /// File name inside the shard folder.
    file: String,
    /// Length in bytes.
    bytes: u64,
    /// SHA-256 of the whole file, lower-case hex.
    sha256: String,
    /// `(name, data offset, size, CRC-32)` of every member, in order.
    members: Vec<(String, u64, u64, u32)>,
}

/// One image of a shard folder: where its bytes are, as the index gives it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    /// `SHARD_DIR/<name>`: first, so that sorting members sorts them as the folder's files.
    path: PathBuf,
    shard: Arc<Path>,
    offset: u64,
    size: u64,
    crc32: u32,
}

impl Member {
    /// `SHARD_DIR/<member name>` (not a file; see [`crate::data::ImageRef::path`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The shard file holding the member.
    pub fn shard(&self) -> &Path {
        &self.shard
    }

    /// Byte offset and length of the member's data in its shard.
    pub fn range(&self) -> (u64, u64) {
        (self.offset, self.size)
    }

    /// The member's bytes, by one positioned read, checked against the index's CRC-32.
    ///
    /// Errors: [`TrainError::Io`] when the shard cannot be opened or read,
    /// [`TrainError::ShardDamaged`] when it ends before the member does or the bytes differ.
    pub fn read(&self) -> Result<Vec<u8>, TrainError> {
        let file = std::fs::File::open(&self.shard).map_err(|e| TrainError::io(&*self.shard, e))?;
        // `size` was checked against MAX_MEMBER_BYTES when the index was opened.
        let mut buf = vec![0u8; self.size as usize];
        read_at(&file, &mut buf, self.offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.damaged(
                    "end of the shard",
                    format!("{}", self.offset + self.size),
                    "earlier",
                )
            } else {
                TrainError::io(&*self.shard, e)
            }
        })?;
        let crc = crc32fast::hash(&buf);
        if crc != self.crc32 {
            return Err(self.damaged(
                "member CRC-32",
                format!("{:08x}", self.crc32),
                format!("{crc:08x}"),
            ));
        }
        Ok(buf)
    }

    fn damaged(&self, what: &'static str, expected: String, got: impl Into<String>) -> TrainError {
        TrainError::ShardDamaged {
            shard: self.shard.to_path_buf(),
            offset: Some(self.offset),
            what,
            expected,
            got: got.into(),
        }
    }
}

/// `read_exact_at`: a positioned read that leaves no shared file position, so one open file
/// could serve every worker.
#[cfg(unix)]
fn read_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
fn read_at(mut file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek};
    file.seek(std::io::SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

/// Whether `dir` holds a shard index (and is then read as a shard folder).
pub fn is_shard_folder(dir: &Path) -> bool {
    dir.join(INDEX_FILE).is_file()
}

/// The members of the shard folder `dir`, sorted by name as [`crate::data::Dataset::open`]
/// sorts a folder's files, after the checks of the module docs (not the SHA-256: see
/// [`verify`]).
///
/// Errors: [`TrainError::Io`] when the index cannot be read, [`TrainError::TooLarge`] when it is
/// over [`MAX_INDEX_BYTES`], [`TrainError::ShardIndex`] when it is not a valid index,
/// [`TrainError::ShardDamaged`] when a shard has another length.
pub fn open(dir: &Path) -> Result<Vec<Member>, TrainError> {
    let (index_path, index) = read_index(dir)?;
    checked_members(dir, &index_path, &index)
}

/// The members of `index` after the checks of [`open`].
fn checked_members(
    dir: &Path,
    index_path: &Path,
    index: &Index,
) -> Result<Vec<Member>, TrainError> {
    let bad = |reason: String| TrainError::ShardIndex {
        path: index_path.to_path_buf(),
        reason,
    };
    let mut seen = HashSet::new();
    let mut members = Vec::new();
    for entry in &index.shards {
        let shard = shard_path(dir, entry).ok_or_else(|| {
            bad(format!(
                "shard file name {:?} is not a plain file name",
                entry.file
            ))
        })?;
        check_length(&shard, entry.bytes)?;
        let shard: Arc<Path> = Arc::from(shard);
        for (name, offset, size, crc32) in &entry.members {
            check_member(entry, name, *offset, *size).map_err(&bad)?;
            if !seen.insert(name.as_str()) {
                return Err(bad(format!("member {name:?} is listed twice")));
            }
            let path = absolute(dir, name)
                .ok_or_else(|| bad(format!("member name {name:?} would leave the folder")))?;
            members.push(Member {
                path,
                shard: Arc::clone(&shard),
                offset: *offset,
                size: *size,
                crc32: *crc32,
            });
        }
    }
    members.sort();
    Ok(members)
}

/// Reads and parses `dir`'s index, refusing one over [`MAX_INDEX_BYTES`] before reading it.
fn read_index(dir: &Path) -> Result<(PathBuf, Index), TrainError> {
    use std::io::Read;
    let path = dir.join(INDEX_FILE);
    let file = std::fs::File::open(&path).map_err(|e| TrainError::io(&path, e))?;
    let len = file.metadata().map_err(|e| TrainError::io(&path, e))?.len();
    if len > MAX_INDEX_BYTES {
        return Err(TrainError::TooLarge {
            what: format!("shard index `{}`", path.display()),
            limit: MAX_INDEX_BYTES,
            got: len,
        });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // `take`: a file that grows after the check is still read no further than the cap.
    file.take(MAX_INDEX_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| TrainError::io(&path, e))?;
    let index: Index = serde_json::from_slice(&bytes).map_err(|e| TrainError::ShardIndex {
        path: path.clone(),
        reason: format!("not a shard index: {e}"),
    })?;
    if index.format != FORMAT || index.version != VERSION {
        return Err(TrainError::ShardIndex {
            path,
            reason: format!(
                "format {:?} version {}, expected {FORMAT:?} version {VERSION}",
                index.format, index.version
            ),
        });
    }
    Ok((path, index))
}

/// `dir/<file>` when `file` is one plain component (no folder, no `..`).
fn shard_path(dir: &Path, entry: &ShardEntry) -> Option<PathBuf> {
    let plain = !entry.file.contains('/') && entry.file != INDEX_FILE;
    plain.then(|| absolute(dir, &entry.file)).flatten()
}

fn check_length(shard: &Path, expected: u64) -> Result<(), TrainError> {
    let got = std::fs::metadata(shard)
        .map_err(|e| TrainError::io(shard, e))?
        .len();
    if got != expected {
        return Err(TrainError::ShardDamaged {
            shard: shard.to_path_buf(),
            offset: None,
            what: "length",
            expected: expected.to_string(),
            got: got.to_string(),
        });
    }
    Ok(())
}

/// A member's entry must lie after a header and inside its shard, and be within the caps.
fn check_member(entry: &ShardEntry, name: &str, offset: u64, size: u64) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(format!("member name of {} bytes", name.len()));
    }
    if size > MAX_MEMBER_BYTES {
        return Err(format!(
            "member {name:?} of {size} bytes is over the limit of {MAX_MEMBER_BYTES}"
        ));
    }
    let end = offset.checked_add(size);
    if offset < BLOCK || !offset.is_multiple_of(BLOCK) || end.is_none_or(|e| e > entry.bytes) {
        return Err(format!(
            "member {name:?} at bytes {offset}+{size} does not fit shard {:?} of {} bytes",
            entry.file, entry.bytes
        ));
    }
    Ok(())
}

/// What [`verify`] checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Shards whose SHA-256 and headers matched.
    pub shards: usize,
    /// Members whose headers matched.
    pub members: usize,
    /// Bytes read.
    pub bytes: u64,
}

/// Everything [`open`] checks, plus every shard's SHA-256 (reading it whole) and every member's
/// tar header (its checksum, name and size).
///
/// Errors: as [`open`]; [`TrainError::ShardDamaged`] for a SHA-256 or a header that differs.
pub fn verify(dir: &Path) -> Result<VerifyReport, TrainError> {
    let (index_path, index) = read_index(dir)?;
    checked_members(dir, &index_path, &index)?;
    let mut report = VerifyReport {
        shards: 0,
        members: 0,
        bytes: 0,
    };
    for entry in &index.shards {
        // Every file name was checked to be one plain component by `checked_members`.
        let shard = dir.join(&entry.file);
        let sha = sha256_file(&shard)?;
        if sha != entry.sha256 {
            return Err(TrainError::ShardDamaged {
                shard,
                offset: None,
                what: "SHA-256",
                expected: entry.sha256.clone(),
                got: sha,
            });
        }
        let file = std::fs::File::open(&shard).map_err(|e| TrainError::io(&shard, e))?;
        for (name, offset, size, _) in &entry.members {
            check_header(&file, &shard, name, *offset, *size)?;
        }
        report.shards += 1;
        report.members += entry.members.len();
        report.bytes += entry.bytes;
    }
    Ok(report)
}

fn sha256_file(path: &Path) -> Result<String, TrainError> {
    let mut file = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut sha = Sha256::new();
    std::io::copy(&mut file, &mut sha).map_err(|e| TrainError::io(path, e))?;
    Ok(hex(&sha.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks the ustar header in the block before `offset`: its checksum, and that it names
/// `name` as a regular file of `size` bytes.
fn check_header(
    file: &std::fs::File,
    shard: &Path,
    name: &str,
    offset: u64,
    size: u64,
) -> Result<(), TrainError> {
    let at = offset - BLOCK;
    let mut h = [0u8; BLOCK as usize];
    read_at(file, &mut h, at).map_err(|e| TrainError::io(shard, e))?;
    let damaged = |what, expected: String, got: String| TrainError::ShardDamaged {
        shard: shard.to_path_buf(),
        offset: Some(at),
        what,
        expected,
        got,
    };
    let stored = parse_octal(&h[148..156]);
    if stored != Some(u64::from(header_checksum(&h))) {
        return Err(damaged(
            "tar header checksum",
            format!("{}", header_checksum(&h)),
            format!("{stored:?}"),
        ));
    }
    let got_name = header_name(&h);
    if got_name != name.as_bytes() || h[156] != b'0' {
        let got = String::from_utf8_lossy(&got_name).into_owned();
        return Err(damaged("tar member name", name.to_string(), got));
    }
    let got_size = parse_octal(&h[124..136]);
    if got_size != Some(size) {
        return Err(damaged(
            "tar member size",
            size.to_string(),
            format!("{got_size:?}"),
        ));
    }
    Ok(())
}

/// `prefix/name` of a ustar header (just `name` when the prefix is empty).
fn header_name(h: &[u8]) -> Vec<u8> {
    let field = |f: &[u8]| f[..f.iter().position(|&b| b == 0).unwrap_or(f.len())].to_vec();
    let (name, prefix) = (field(&h[..100]), field(&h[345..500]));
    if prefix.is_empty() {
        name
    } else {
        [prefix, b"/".to_vec(), name].concat()
    }
}

/// An octal field, NUL- or space-terminated; `None` if it holds anything else.
fn parse_octal(field: &[u8]) -> Option<u64> {
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    let text = std::str::from_utf8(&digits).ok()?;
    u64::from_str_radix(text, 8).ok()
}

/// The header checksum: the byte sum with the checksum field taken as eight spaces.
fn header_checksum(h: &[u8]) -> u32 {
    h.iter()
        .enumerate()
        .map(|(i, &b)| u32::from(if (148..156).contains(&i) { b' ' } else { b }))
        .sum()
}

/// Writes `value` as zero-padded octal filling `field` but its last byte, which is NUL.
fn put_octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    debug_assert_eq!(
        text.len(),
        width,
        "{value} does not fit {width} octal digits"
    );
    field[..width].copy_from_slice(text.as_bytes());
    field[width] = 0;
}

/// `name` as ustar's (prefix, name) pair: the name alone when it fits 100 bytes, else split at
/// a `/` into at most 155 and 100 bytes.
fn split_name(name: &str) -> Option<(&str, &str)> {
    if name.len() <= 100 {
        return Some(("", name));
    }
    name.match_indices('/')
        .map(|(i, _)| (&name[..i], &name[i + 1..]))
        .find(|(prefix, base)| prefix.len() <= 155 && base.len() <= 100 && !base.is_empty())
}

/// The ustar header of a regular file `name` of `size` bytes (mode 0644, owner 0, mtime 0);
/// `None` when the name does not fit.
fn ustar_header(name: &str, size: u64) -> Option<[u8; BLOCK as usize]> {
    let (prefix, base) = split_name(name)?;
    let mut h = [0u8; BLOCK as usize];
    h[..base.len()].copy_from_slice(base.as_bytes());
    put_octal(&mut h[100..108], 0o644);
    put_octal(&mut h[108..116], 0);
    put_octal(&mut h[116..124], 0);
    put_octal(&mut h[124..136], size);
    put_octal(&mut h[136..148], 0);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    let sum = header_checksum(&h);
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Some(h)
}

/// How [`pack`] packs a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackOptions {
    /// Images per shard (the last shard holds the rest); 0 is taken as 1.
    pub images_per_shard: usize,
    /// Which files are images: as [`DataConfig::extensions`].
    pub extensions: Vec<String>,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            images_per_shard: DEFAULT_IMAGES_PER_SHARD,
            extensions: DataConfig::default().extensions,
        }
    }
}

/// What [`pack`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackSummary {
    /// Shard files written.
    pub shards: usize,
    /// Images packed.
    pub images: usize,
    /// Bytes of all shards.
    pub bytes: u64,
    /// Images whose WebDataset key (name up to the first dot of its file name) another image
    /// shares, so that a WebDataset reader would merge them into one sample.
    pub shared_keys: usize,
}

/// The file name of shard `k`.
pub fn shard_name(k: usize) -> String {
    format!("shard-{k:06}.tar")
}

/// Packs the images of folder `src` (walked as [`crate::data::Dataset::open`] walks it, no
/// manifest) into shards and an index in `out` (created if needed), in the folder's sorted
/// order, `opts.images_per_shard` per shard. Files are stored as they are: one that does not
/// decode is packed all the same and skipped at training time, as it is in the folder.
/// Shards are written in parallel.
///
/// Errors: [`TrainError::DataDirMissing`] / [`TrainError::NoImages`] for `src`;
/// [`TrainError::Unpackable`] for a path that is not UTF-8 or too long for ustar, or when `out`
/// is `src`; [`TrainError::TooLarge`] for a file over [`MAX_MEMBER_BYTES`]; I/O errors.
pub fn pack(src: &Path, out: &Path, opts: &PackOptions) -> Result<PackSummary, TrainError> {
    use rayon::prelude::*;
    let named = list_for_pack(src, out, &opts.extensions)?;
    let per = opts.images_per_shard.max(1);
    let shards = named
        .par_chunks(per)
        .enumerate()
        .map(|(k, chunk)| write_shard(&out.join(shard_name(k)), chunk))
        .collect::<Result<Vec<_>, _>>()?;
    let summary = PackSummary {
        shards: shards.len(),
        images: named.len(),
        bytes: shards.iter().map(|s| s.bytes).sum(),
        shared_keys: shared_keys(named.iter().map(|(_, n)| n.as_str())),
    };
    let index = Index {
        format: FORMAT.into(),
        version: VERSION,
        shards,
    };
    let text = serde_json::to_vec(&index).expect("an index always serialises");
    write_atomic_with(&out.join(INDEX_FILE), |w| w.write_all(&text))?;
    Ok(summary)
}

/// The images of `src` in sorted order with their member names, after the checks of [`pack`].
fn list_for_pack(
    src: &Path,
    out: &Path,
    extensions: &[String],
) -> Result<Vec<(PathBuf, String)>, TrainError> {
    if !src.is_dir() {
        return Err(TrainError::DataDirMissing {
            path: src.to_path_buf(),
        });
    }
    let same = |a: &Path, b: &Path| match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same(src, out) {
        return Err(TrainError::Unpackable {
            path: out.to_path_buf(),
            reason: "the shards would be written into the folder being packed",
        });
    }
    let files = list_images(src, extensions)?;
    if files.is_empty() {
        return Err(TrainError::NoImages {
            path: src.to_path_buf(),
            extensions: extensions.to_vec(),
        });
    }
    files
        .into_iter()
        .map(|f| match relative(src, &f) {
            Some(name) if split_name(&name).is_some() => Ok((f, name)),
            Some(_) => Err(TrainError::Unpackable {
                path: f,
                reason: "its relative path does not fit a ustar header (100 + 155 bytes)",
            }),
            None => Err(TrainError::Unpackable {
                path: f,
                reason: "its relative path is not UTF-8",
            }),
        })
        .collect()
}

/// A writer that hashes and counts what passes through it.
struct Hashing<'a, W: Write> {
    inner: &'a mut W,
    sha: Sha256,
    written: u64,
}

impl<W: Write> Write for Hashing<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Reads one source image, refusing one over [`MAX_MEMBER_BYTES`] before reading it.
fn read_source(path: &Path) -> Result<Vec<u8>, TrainError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
    let len = file.metadata().map_err(|e| TrainError::io(path, e))?.len();
    let too_large = |got| TrainError::TooLarge {
        what: format!("image file `{}`", path.display()),
        limit: MAX_MEMBER_BYTES,
        got,
    };
    if len > MAX_MEMBER_BYTES {
        return Err(too_large(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(MAX_MEMBER_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| TrainError::io(path, e))?;
    if bytes.len() as u64 > MAX_MEMBER_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Writes one shard of `images` atomically and returns its index entry.
fn write_shard(path: &Path, images: &[(PathBuf, String)]) -> Result<ShardEntry, TrainError> {
    let mut members = Vec::with_capacity(images.len());
    let mut failed = None;
    let sha = write_atomic_with(path, |w| {
        let mut w = Hashing {
            inner: w,
            sha: Sha256::new(),
            written: 0,
        };
        for (file, name) in images {
            let bytes = match read_source(file) {
                Ok(b) => b,
                Err(e) => {
                    // Kept aside: the closure may only fail with an io::Error.
                    failed = Some(e);
                    return Err(std::io::Error::other("source image unreadable"));
                }
            };
            let size = bytes.len() as u64;
            let header = ustar_header(name, size).expect("names checked by list_for_pack");
            w.write_all(&header)?;
            members.push((name.clone(), w.written, size, crc32fast::hash(&bytes)));
            w.write_all(&bytes)?;
            let pad = (BLOCK - size % BLOCK) % BLOCK;
            w.write_all(&vec![0u8; pad as usize])?;
        }
        // The end of an archive: two zero blocks.
        w.write_all(&[0u8; 2 * BLOCK as usize])?;
        Ok((hex(&w.sha.finalize_reset()), w.written))
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let (sha256, bytes) = sha?;
    let file = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("shard names are ASCII")
        .to_string();
    Ok(ShardEntry {
        file,
        bytes,
        sha256,
        members,
    })
}

/// How many names share their WebDataset key (folder + file name up to its first dot).
fn shared_keys<'a>(names: impl Iterator<Item = &'a str>) -> usize {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for name in names {
        let base_at = name.rfind('/').map_or(0, |i| i + 1);
        let key_end = name[base_at..]
            .find('.')
            .map_or(name.len(), |i| base_at + i);
        *count.entry(&name[..key_end]).or_default() += 1;
    }
    count.values().filter(|&&n| n > 1).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_follow_ustar_and_split_long_names() {
        let h = ustar_header("a/b.jpg", 1234).unwrap();
        assert_eq!(&h[257..263], b"ustar\0");
        assert_eq!(parse_octal(&h[124..136]), Some(1234));
        assert_eq!(
            parse_octal(&h[148..156]),
            Some(u64::from(header_checksum(&h)))
        );
        assert_eq!(header_name(&h), b"a/b.jpg");
        let long = format!("{}/{}.png", "d".repeat(120), "f".repeat(90));
        let h = ustar_header(&long, 1).unwrap();
        assert_eq!(header_name(&h), long.as_bytes());
        assert_eq!(split_name(&"x".repeat(101)), None);
        assert_eq!(split_name(&format!("{}/a", "p".repeat(156))), None);
    }

    #[test]
    fn webdataset_keys_that_collide_are_counted() {
        let names = [
            "a/x.jpg",
            "a/x.png",
            "a/y.v2.jpg",
            "a/y.v3.jpg",
            "b/x.jpg",
            "z.png",
        ];
        assert_eq!(shared_keys(names.into_iter()), 4);
    }

    #[test]
    fn octal_fields_round_trip() {
        let mut f = [0u8; 12];
        put_octal(&mut f, 0o7654321);
        assert_eq!(&f, b"00007654321\0");
        assert_eq!(parse_octal(&f), Some(0o7654321));
        assert_eq!(parse_octal(b"12x4\0"), None);
    }
}
